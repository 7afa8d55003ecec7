"""Metadata readers and writers, checked against files written by hand from the format notes."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io import (
    MetaData,
    MetadataError,
    atomic_path,
    read_images,
    read_metadata,
    read_missing_regions,
    read_star,
    read_star_blocks,
    write_star,
)
from napari_mltomo.io.metadata import IMAGE_COLUMNS

# Xmipp 3 STAR, written by hand: header, comments, quoted strings, labels in a shuffled order,
# ints written as floats, unknown labels.
STAR_LOOP = """\
# XMIPP_STAR_1 *
# a free comment
data_noname
loop_
 _shiftX
 _image
 _ref
 _enabled
 _angleRot
 _comment
 _micrograph
 _defocusGroup
# a comment between rows
   1.500000 'my dir/particle 1.vol'   2.00   1  10.000000 "two words" mic_1 3
  -2.000000 particle2.vol 1 -1 2.5e-04 'x' mic_2 4
"""

STAR_BLOCKS = """\
# XMIPP_STAR_1 *
#
data_noname
 _logLikelihood -1234.500000
 _iterationNumber 3.0
 _imageMetaData 'run one/it3.doc'

data_classes
loop_
 _image
 _ref
 _weight
run_ref000001.mrc 1 0.250000
run_ref000002.mrc 2 0.750000

data_class000002_images
loop_
 _ref
 _image
2 b.vol
2 a.vol
"""

# The seed's images example (xmipp_ml_tomo_v3.0.txt, "Input images file").
SEED_IMAGES = """\
   32_000001.scl  1.00 0.000000 0.000  0.000  0.000000     0.000000  0    0.000000 1
   32_000002.scl  1.00 0.000000 0.000  0.000  0.000000     0.000000  0    0.000000 1
"""

# The seed's missing-region example ("Input missing regions file").
SEED_WEDGES = """\
 # Wedgeinfo
   1  wedge_y  -64  64
"""

# Xmipp 2 docfile in the ml_tomo v2 column layout.
DOCFILE = """\
 ; Headerinfo columns: rot (1) , tilt (2), psi (3), Xoff (4), Yoff (5), Zoff (6), \
Ref (7), Wedge (8), Pmax/sumP (9), LL (10)
 ; img/32_000001.scl
    1 10  10.0 20.0 30.0 1.0 2.0 3.0 2.0 1.0 0.5 -1234.5
 ; img/32_000002.scl
    2 10  -10.0 -20.0 -30.0 0.0 0.0 0.0 1.0 2.0 0.25 -99.0
"""

SELFILE = """\
particles/a.vol 1
particles/b.vol -1
particles/c.vol 0
particles/d.vol 1
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- MetaData


def test_metadata_normalises_column_types() -> None:
    table = MetaData({"n": [1, 2], "x": np.array([1, 2], np.float32), "s": ["a", "bc"]})
    assert table.labels == ("n", "x", "s")
    assert (table["n"].dtype, table["x"].dtype, table["s"].dtype) == (
        np.int64,
        np.float64,
        object,
    )
    assert len(table) == 2
    assert "s" in table
    assert "t" not in table


def test_metadata_with_columns_returns_new_table() -> None:
    table = MetaData({"ref": [1, 2, 3]})
    wider = table.with_columns(enabled=1, angleRot=[0.0, 10.0, 20.0], ref=[3, 2, 1])
    assert table.labels == ("ref",)
    np.testing.assert_array_equal(table["ref"], [1, 2, 3])
    assert wider.labels == ("ref", "enabled", "angleRot")
    np.testing.assert_array_equal(wider["enabled"], [1, 1, 1])
    np.testing.assert_array_equal(wider["ref"], [3, 2, 1])


@pytest.mark.parametrize(
    ("indices", "expected"),
    [([2, 0], ["c", "a"]), (np.array([True, False, True]), ["a", "c"]), ([], [])],
)
def test_metadata_take(indices: object, expected: list[str]) -> None:
    table = MetaData({"image": ["a", "b", "c"], "ref": [1, 2, 3]})
    taken = table.take(indices)
    assert list(taken["image"]) == expected
    assert len(taken) == len(expected)


def test_metadata_from_rows() -> None:
    table = MetaData.from_rows(["image", "ref"], [("a.vol", 1), ("b.vol", 2)])
    assert list(table["image"]) == ["a.vol", "b.vol"]
    assert table["ref"].dtype == np.int64


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: MetaData({"a": [1, 2], "b": [1]}), ValueError, "same length"),
        (lambda: MetaData({"a": [[1, 2]]}), ValueError, "one-dimensional"),
        (lambda: MetaData.from_rows(["a", "b"], [(1,)]), ValueError, "row 0 has 1 values"),
        (lambda: MetaData({"a": [1]})["b"], KeyError, "no column 'b'"),
    ],
)
def test_metadata_rejects_bad_input(build: Callable[[], object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def test_metadata_error_names_file_and_line_and_pickles() -> None:
    error = MetadataError("images.xmd", "row has 3 values but the loop declares 5 labels", 7)
    assert str(error) == "images.xmd, line 7: row has 3 values but the loop declares 5 labels"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert isinstance(error, ValueError)


# --------------------------------------------------------------------------- STAR reading


def test_read_star_loop_with_comments_quotes_and_shuffled_labels(tmp_path: Path) -> None:
    table = read_star(_write(tmp_path, "images.xmd", STAR_LOOP))
    assert table.labels == (
        "shiftX",
        "image",
        "ref",
        "enabled",
        "angleRot",
        "comment",
        "micrograph",
        "defocusGroup",
    )
    assert list(table["image"]) == ["my dir/particle 1.vol", "particle2.vol"]
    np.testing.assert_array_equal(table["ref"], [2, 1])
    assert table["ref"].dtype == np.int64
    np.testing.assert_array_equal(table["enabled"], [1, -1])
    np.testing.assert_allclose(table["angleRot"], [10.0, 2.5e-4])
    np.testing.assert_allclose(table["shiftX"], [1.5, -2.0])
    assert list(table["comment"]) == ["two words", "x"]
    assert list(table["micrograph"]) == ["mic_1", "mic_2"]
    assert table["defocusGroup"].dtype == np.int64


def test_read_star_blocks_keeps_every_block_in_order(tmp_path: Path) -> None:
    blocks = read_star_blocks(_write(tmp_path, "run_ref.xmd", STAR_BLOCKS))
    assert list(blocks) == ["noname", "classes", "class000002_images"]
    log = blocks["noname"]
    assert len(log) == 1
    assert log["logLikelihood"][0] == -1234.5
    assert log["iterationNumber"][0] == 3
    assert log["imageMetaData"][0] == "run one/it3.doc"
    np.testing.assert_allclose(blocks["classes"]["weight"], [0.25, 0.75])


@pytest.mark.parametrize(
    ("spec", "block", "expected_labels"),
    [
        ("{path}", None, ("logLikelihood", "iterationNumber", "imageMetaData")),
        ("{path}", "classes", ("image", "ref", "weight")),
        ("class000002_images@{path}", None, ("ref", "image")),
        ("classes@{path}", "classes", ("image", "ref", "weight")),
    ],
)
def test_read_star_selects_block(
    tmp_path: Path, spec: str, block: str | None, expected_labels: tuple[str, ...]
) -> None:
    path = _write(tmp_path, "run_ref.xmd", STAR_BLOCKS)
    table = read_star(spec.format(path=path), block=block)
    assert table.labels == expected_labels


def test_read_star_blocks_with_block_prefix(tmp_path: Path) -> None:
    path = _write(tmp_path, "run_ref.xmd", STAR_BLOCKS)
    blocks = read_star_blocks(f"classes@{path}")
    assert list(blocks) == ["classes"]
    assert list(blocks["classes"]["image"]) == ["run_ref000001.mrc", "run_ref000002.mrc"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "# XMIPP_STAR_1 *\ndata_noname\nloop_\n _a\n _b\n _c\n _d\n _e\n1 2 3 4 5\n1 2 3\n",
            r"images\.xmd, line 10: row has 3 values but the loop declares 5 labels",
        ),
        (
            "data_noname\nloop_\n _image\n _ref\na.vol 1\nb.vol abc\n",
            r"images\.xmd, line 6: ref must be an integer, got 'abc'",
        ),
        (
            "data_noname\nloop_\n _image\n _angleRot\na.vol x1\n",
            r"images\.xmd, line 5: angleRot must be a number",
        ),
        (
            "data_noname\nloop_\n _image\n'a b.vol\n",
            r"images\.xmd, line 4: unterminated quote",
        ),
        ("# XMIPP_STAR_1 *\n _image a.vol\n", r"images\.xmd, line 2: expected a data_ line"),
        ("data_a\n _x 1\ndata_a\n _x 2\n", r"images\.xmd, line 3: block data_a appears twice"),
        (
            "data_\nloop_\n _image\na.vol\n _ref\n",
            r"images\.xmd, line 5: label _ref after the data rows",
        ),
        ("data_\n _image\n", r"images\.xmd, line 2: label _image has no value"),
        ("data_\n _image a b\n", r"images\.xmd, line 2: label _image has 2 values"),
        ("data_\nloop_\n _x\n _x\n", r"images\.xmd, line 4: label _x appears twice"),
        ("data_\nloop_\n _x\nloop_\n", r"images\.xmd, line 4: a second loop_"),
        ("data_\na.vol 1\n", r"images\.xmd, line 2: expected loop_ or a ' _label' line"),
        ("# only a comment\n", r"images\.xmd: no data_ block found"),
    ],
)
def test_read_star_errors_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, "images.xmd", text)
    with pytest.raises(MetadataError, match=match):
        read_star(path)


def test_read_star_unknown_block_lists_available(tmp_path: Path) -> None:
    path = _write(tmp_path, "run_ref.xmd", STAR_BLOCKS)
    with pytest.raises(MetadataError, match=r"run_ref\.xmd: no block data_nope; the file has"):
        read_star(f"nope@{path}")
    with pytest.raises(MetadataError, match="block given twice"):
        read_star(f"classes@{path}", block="noname")


# --------------------------------------------------------------------------- STAR writing


def _round_trip_table(n_rows: int) -> MetaData:
    rows = [
        ("my dir/a 1.vol", 1, -1234.567891, 2.5e-05, "", "_under"),
        ("b.vol", 20, 0.0, -3.5, "it's", "data_x"),
        ("2@c.stk", -3, 1e6, 1.0, "#hash", 'say "hi"'),
    ]
    labels = ["image", "ref", "logLikelihood", "shiftX", "note", "tag"]
    return MetaData.from_rows(labels, rows[:n_rows])


@pytest.mark.parametrize(("row_format", "n_rows"), [(False, 3), (False, 0), (True, 1)])
def test_write_star_round_trip(tmp_path: Path, row_format: bool, n_rows: int) -> None:
    table = _round_trip_table(n_rows)
    path = write_star(tmp_path / "out.xmd", table, "round trip", row_format=row_format)
    back = read_star(path)
    assert back.labels == table.labels
    for label in ("image", "note", "tag"):
        assert list(back[label]) == list(table[label])
    np.testing.assert_array_equal(back["ref"], table["ref"])
    np.testing.assert_allclose(back["logLikelihood"], table["logLikelihood"], atol=1e-6)
    np.testing.assert_allclose(back["shiftX"], table["shiftX"], rtol=1e-6)


def test_write_star_several_blocks_round_trip(tmp_path: Path) -> None:
    classes = MetaData({"image": ["r1.mrc", "r2.mrc"], "ref": [1, 2], "weight": [0.4, 0.6]})
    images = _round_trip_table(2)
    path = write_star(tmp_path / "run_ref.xmd", {"classes": classes, "class000001_images": images})
    blocks = read_star_blocks(path)
    assert list(blocks) == ["classes", "class000001_images"]
    assert list(blocks["class000001_images"]["image"]) == list(images["image"])
    np.testing.assert_allclose(blocks["classes"]["weight"], [0.4, 0.6])


def test_write_star_layout(tmp_path: Path) -> None:
    table = MetaData({"ref": [3], "angleRot": [1.5], "pMax": [0.0001], "image": ["a b"]})
    lines = write_star(tmp_path / "a.xmd", table).read_text().splitlines()
    assert lines == [
        "# XMIPP_STAR_1 * ",
        "# ",
        "data_noname",
        "loop_",
        " _ref",
        " _angleRot",
        " _pMax",
        " _image",
        f"{3:20d}     1.500000 1.000000e-04 'a b' ",
    ]


def test_write_star_row_format_layout(tmp_path: Path) -> None:
    table = MetaData({"logLikelihood": [-5.25], "iterationNumber": [2], "imageMetaData": ["x"]})
    lines = write_star(tmp_path / "log.xmd", table, row_format=True).read_text().splitlines()
    assert lines[2:] == [
        "data_noname",
        " _logLikelihood -5.250000",
        " _iterationNumber 2",
        " _imageMetaData x",
    ]


def test_write_star_wraps_comment_at_70_characters(tmp_path: Path) -> None:
    words = " ".join(f"--option{i} value{i}" for i in range(20))
    lines = write_star(tmp_path / "a.xmd", MetaData({"a": [1]}), words).read_text().splitlines()
    comment = [line[2:] for line in lines[1:] if line.startswith("# ")]
    assert len(comment) > 1
    assert all(len(part) <= 70 for part in comment)
    assert " ".join(comment) == words


@pytest.mark.parametrize(
    ("blocks", "row_format", "match"),
    [
        (MetaData({"image": ["a\nb"]}), False, "line break"),
        (MetaData({"image": ["'a\" b"]}), False, "both quote characters"),
        (MetaData({"ref": [1, 2]}), True, "exactly one row"),
        ({"bad name": MetaData({"ref": [1]})}, False, "whitespace"),
        (MetaData({"bad label": [1]}), False, "without whitespace"),
    ],
)
def test_write_star_rejects_unwritable_tables(
    tmp_path: Path, blocks: MetaData | dict[str, MetaData], row_format: bool, match: str
) -> None:
    path = tmp_path / "out.xmd"
    with pytest.raises(ValueError, match=match):
        write_star(path, blocks, row_format=row_format)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success_and_keeps_target_on_error(tmp_path: Path) -> None:
    target = tmp_path / "run_it000001.doc"
    target.write_text("old")
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.suffix == ".doc"
        assert not temporary.exists()
        temporary.write_text("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "new"
    assert list(tmp_path.iterdir()) == [target]


# --------------------------------------------------------------------------- Xmipp 2 and headerless


def test_read_selfile(tmp_path: Path) -> None:
    table = read_metadata(_write(tmp_path, "images.sel", SELFILE))
    assert table.labels == ("image", "enabled")
    np.testing.assert_array_equal(table["enabled"], [1, -1, 0, 1])
    assert table["image"][3] == "particles/d.vol"


def test_read_docfile_maps_xmipp2_names(tmp_path: Path) -> None:
    table = read_metadata(_write(tmp_path, "images.doc", DOCFILE))
    assert table.labels == (
        "image",
        "angleRot",
        "angleTilt",
        "anglePsi",
        "shiftX",
        "shiftY",
        "shiftZ",
        "ref",
        "missingRegionNumber",
        "Pmax/sumP",
        "logLikelihood",
    )
    assert list(table["image"]) == ["img/32_000001.scl", "img/32_000002.scl"]
    np.testing.assert_array_equal(table["ref"], [2, 1])
    np.testing.assert_array_equal(table["missingRegionNumber"], [1, 2])
    np.testing.assert_allclose(table["angleRot"], [10.0, -10.0])
    np.testing.assert_allclose(table["Pmax/sumP"], [0.5, 0.25])
    np.testing.assert_allclose(table["logLikelihood"], [-1234.5, -99.0])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Pmax (1), Weight (2)", ("image", "pMax", "weight")),
        ("sumP (1),Xoff (2)", ("image", "pMax", "shiftX")),
        ("defocus (1), LL (2)", ("image", "defocus", "logLikelihood")),
    ],
)
def test_docfile_aliases(tmp_path: Path, header: str, expected: tuple[str, ...]) -> None:
    text = f" ; Headerinfo columns: {header}\n ; a.vol\n 1 2 0.5 7\n"
    assert read_metadata(_write(tmp_path, "a.doc", text)).labels == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (" ; Headerinfo columns: rot (1)\n 1 1 5.0\n", r"a\.doc, line 2: data line without"),
        (
            " ; Headerinfo columns: rot (1), tilt (2)\n ; a.vol\n 1 2 5.0\n",
            r"a\.doc, line 3: data line has 1 values after the key and count, but the header "
            r"declares 2 columns",
        ),
        (" ; Headerinfo nothing\n", r"a\.doc, line 1: expected 'Headerinfo columns:"),
        (
            " ; Headerinfo columns: Pmax (1), sumP (2)\n",
            r"a\.doc, line 1: header names column\(s\) pMax twice",
        ),
        (
            " ; Headerinfo columns: Ref (1)\n ; a.vol\n 1 1 x\n",
            r"a\.doc, line 3: ref must be an integer",
        ),
    ],
)
def test_docfile_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        read_metadata(_write(tmp_path, "a.doc", text))


def test_read_seed_headerless_images(tmp_path: Path) -> None:
    table = read_metadata(_write(tmp_path, "images.txt", SEED_IMAGES))
    assert table.labels == IMAGE_COLUMNS
    assert list(table["image"]) == ["32_000001.scl", "32_000002.scl"]
    np.testing.assert_array_equal(table["missingRegionNumber"], [1, 1])
    assert table["missingRegionNumber"].dtype == np.int64
    np.testing.assert_array_equal(table["ref"], [0, 0])
    np.testing.assert_allclose(table["logLikelihood"], [1.0, 1.0])


def test_headerless_rows_take_as_many_columns_as_present(tmp_path: Path) -> None:
    table = read_metadata(_write(tmp_path, "images.txt", "a.vol 1 10 20 30\nb.vol 2 0 0 0\n"))
    assert table.labels == IMAGE_COLUMNS[:5]
    np.testing.assert_allclose(table["anglePsi"], [30.0, 0.0])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "a.vol 1 10 20 30\nb.vol 2 0\n",
            r"images\.txt, line 2: row has 3 values but line 1 has 5",
        ),
        ("a.vol " + "1 " * 10 + "\n", r"images\.txt, line 1: row has 11 values"),
        ("a.vol x 1 2\n", r"images\.txt, line 1: missingRegionNumber must be an integer"),
    ],
)
def test_headerless_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        read_metadata(_write(tmp_path, "images.txt", text))


@pytest.mark.parametrize(
    ("name", "text", "labels"),
    [
        ("a.txt", "# XMIPP_STAR_1 *\ndata_\nloop_\n _image\na.vol\n", ("image",)),
        ("a.txt", "data_images\nloop_\n _ref\n1\n", ("ref",)),
        ("a.star", "# no header\ndata_\n _ref 1\n", ("ref",)),
        ("a.txt", " ; Headerinfo columns: rot (1)\n ; a.vol\n 1 1 5.0\n", ("image", "angleRot")),
        ("a.txt", "a.vol 1\n# comment\nb.vol -1\n", ("image", "enabled")),
        ("a.txt", "a.vol 1 5.0\n", ("image", "missingRegionNumber", "angleRot")),
    ],
)
def test_read_metadata_detects_format(tmp_path: Path, name: str, text: str, labels: tuple[str, ...]) -> None:
    assert read_metadata(_write(tmp_path, name, text)).labels == labels


def test_read_metadata_treats_xmd_extension_as_star(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match=r"list\.xmd, line 1: expected a data_ line"):
        read_metadata(_write(tmp_path, "list.xmd", "a.vol 1\n"))


def test_read_metadata_rejects_binary_and_block_on_non_star(tmp_path: Path) -> None:
    binary = tmp_path / "vol.xmd"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(MetadataError, match=r"vol\.xmd: not a text file"):
        read_metadata(binary)
    selfile = _write(tmp_path, "images.sel", SELFILE)
    with pytest.raises(MetadataError, match="not a STAR file"):
        read_metadata(f"noname@{selfile}")


# --------------------------------------------------------------------------- read_images


def test_read_images_drops_disabled_rows_and_resolves_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project" / "lists"
    (folder / "particles").mkdir(parents=True)
    (tmp_path / "here.vol").write_bytes(b"")
    (folder / "particles" / "a.vol").write_bytes(b"")
    text = (
        "# XMIPP_STAR_1 *\ndata_noname\nloop_\n _image\n _enabled\n"
        "particles/a.vol 1\nparticles/b.vol 0\nhere.vol 1.00\n3@particles/s.stk 1\n"
        f"{tmp_path / 'abs.vol'} 1\nparticles/off.vol -1\n"
    )
    path = _write(folder, "images.xmd", text)
    monkeypatch.chdir(tmp_path)
    table = read_images(path)
    assert list(table["image"]) == [
        str(folder / "particles" / "a.vol"),
        "here.vol",
        f"3@{folder / 'particles' / 's.stk'}",
        str(tmp_path / "abs.vol"),
    ]
    np.testing.assert_array_equal(table["enabled"], [1, 1, 1, 1])


def test_read_images_from_selfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = read_images(_write(tmp_path, "images.sel", SELFILE))
    assert list(table["image"]) == [
        str(tmp_path / "particles" / "a.vol"),
        str(tmp_path / "particles" / "d.vol"),
    ]


def test_read_images_requires_image_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "refs.xmd", "data_\nloop_\n _ref\n 1\n")
    with pytest.raises(MetadataError, match=r"refs\.xmd: no 'image' column \(labels: ref\)"):
        read_images(path)


# --------------------------------------------------------------------------- missing regions


def test_read_seed_missing_region_example(tmp_path: Path) -> None:
    regions = read_missing_regions(_write(tmp_path, "wedges.doc", SEED_WEDGES))
    assert regions == [MissingRegion(kind="wedge_y", theta_y0_deg=-64.0, theta_yf_deg=64.0)]


def test_read_missing_regions_headerless_mixed_kinds(tmp_path: Path) -> None:
    text = "# Wedgeinfo\n1 wedge_y -60 60\n2 pyramid -50 55 -40 45\n3 cone 30\n4 wedge_x 0 0 -70 65\n"
    regions = read_missing_regions(_write(tmp_path, "wedges.txt", text))
    assert regions == [
        MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60),
        MissingRegion(kind="pyramid", theta_y0_deg=-50, theta_yf_deg=55, theta_x0_deg=-40, theta_xf_deg=45),
        MissingRegion(kind="cone", theta_y0_deg=30),
        MissingRegion(kind="wedge_x", theta_x0_deg=-70, theta_xf_deg=65),
    ]


def test_read_missing_regions_are_numbered_by_their_number_column(tmp_path: Path) -> None:
    """The original numbered the regions by row and ignored the number; here the number decides."""
    text = (
        "# XMIPP_STAR_1 *\n# Wedgeinfo\ndata_noname\nloop_\n"
        " _missingRegionThetaXF\n _missingRegionType\n _missingRegionNumber\n"
        " _missingRegionThetaX0\n"
        "  45.0 wedge_x 2 -45.0\n  70.0 wedge_x 1 -70.0\n"
    )
    regions = read_missing_regions(_write(tmp_path, "wedges.xmd", text))
    assert [region.theta_xf_deg for region in regions] == [70.0, 45.0]
    assert all(region.kind == "wedge_x" for region in regions)
    unnumbered = (
        text.replace(" _missingRegionNumber\n", "").replace(" 2 -45", " -45").replace(" 1 -70", " -70")
    )
    assert [r.theta_xf_deg for r in read_missing_regions(_write(tmp_path, "rows.xmd", unnumbered))] == [
        45.0,
        70.0,
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1 wedge_y -64 64\n2 wedge_z -64 64\n", r"w\.txt, line 2: unknown missingRegionType"),
        ("# Wedgeinfo\n1 wedge_y 64 -64\n", r"w\.txt, line 2: missing region wedge_y: need"),
        ("1 wedge_x -64 64\n", r"w\.txt, line 1: a wedge_x region needs missingRegionThetaX0"),
        ("1 wedge_y\n", r"w\.txt, line 1: row has 2 values"),
        ("1 wedge_y -64 sixty\n", r"w\.txt, line 1: missingRegionThetaYF must be a number"),
        ("# nothing\n", r"w\.txt: no missingRegionType column"),
        (
            "1 wedge_y -64 64\n1 wedge_y -60 60\n",
            r"w\.txt, line 1: missingRegionNumber 1: the rows must be num",
        ),
        ("2 wedge_y -64 64\n", r"w\.txt, line 1: missingRegionNumber 2: the rows must be numbered 1\.\.1"),
        ("data_\nloop_\n _missingRegionType\n", r"w\.txt: no missing-region rows"),
    ],
)
def test_read_missing_regions_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        read_missing_regions(_write(tmp_path, "w.txt", text))


@pytest.mark.parametrize(
    "text",
    [
        "data_\nloop_\n",
        "data_\n _a",
        "'",
        '"a b',
        "data_\nloop_\n _a\n''\n",
        "data_\nloop_\n _image\n _ref\na.vol\n",
        "data_noname\n _image a.vol\n _enabled x\n",
    ],
)
def test_malformed_files_raise_metadata_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "images.txt", text)
    with pytest.raises(MetadataError, match=f"^{re.escape(str(path))}"):
        read_images(path)


# --------------------------------------------------------------------------- byte order mark, line ends, tabs

STAR_WEDGES = """\
# XMIPP_STAR_1 *
data_noname
loop_
 _missingRegionNumber
 _missingRegionType
 _missingRegionThetaY0
 _missingRegionThetaYF
 _missingRegionThetaX0
 _missingRegionThetaXF
2 pyramid -50 55 -40 45
1 wedge_y -60.5 60 0 0
"""
STAR_WEIGHTS = "data_\nloop_\n _ref\n _weight\n1 0.25\n2 0.75\n"  # a --frac file

_PLAIN_TEXT = {
    "star loop": ("images.xmd", STAR_LOOP, read_metadata),
    "star blocks": ("run_ref.xmd", STAR_BLOCKS, read_star_blocks),
    "docfile": ("images.doc", DOCFILE, read_metadata),
    "selfile": ("images.sel", SELFILE, read_metadata),
    "headerless images": ("images.txt", SEED_IMAGES, read_metadata),
    "headerless wedges": ("wedges.doc", SEED_WEDGES, read_missing_regions),
    "star wedges": ("wedges.xmd", STAR_WEDGES, read_missing_regions),
    "frac weights": ("weights.xmd", STAR_WEIGHTS, read_metadata),
}

_UNQUOTED_SPACE = re.compile(r"""('[^']*'|"[^"]*")| """)


def _tabs(text: str) -> str:
    """``text`` with every space outside quotes a tab."""
    return _UNQUOTED_SPACE.sub(lambda match: match[1] or "\t", text)


_DRESSINGS = {
    "byte order mark": lambda text: "\ufeff" + text,
    "CRLF": lambda text: text.replace("\n", "\r\n"),
    "CR": lambda text: text.replace("\n", "\r"),
    "tabs": _tabs,
    "all at once": lambda text: "\ufeff" + _tabs(text).replace("\n", "\r\n"),
}


def _comparable(read: object) -> object:
    """A reader's result as plain Python values (tables as label -> list)."""
    if isinstance(read, MetaData):
        return {label: read[label].tolist() for label in read.labels}
    if isinstance(read, dict):
        return {name: _comparable(table) for name, table in read.items()}
    return read


@pytest.mark.parametrize("dressing", _DRESSINGS)
@pytest.mark.parametrize("kind", _PLAIN_TEXT)
def test_bom_line_ends_and_tabs_read_as_plain_text(tmp_path: Path, kind: str, dressing: str) -> None:
    name, text, read = _PLAIN_TEXT[kind]
    plain = _write(tmp_path / "plain", name, text)
    dressed = tmp_path / "dressed" / name
    dressed.parent.mkdir()
    dressed.write_bytes(_DRESSINGS[dressing](text).encode("utf-8"))  # bytes: no newline translation
    assert _comparable(read(dressed)) == _comparable(read(plain))


def test_errors_in_dressed_text_give_the_line_an_editor_shows(tmp_path: Path) -> None:
    path = tmp_path / "images.xmd"
    path.write_bytes("\ufeffdata_\r\nloop_\r\n\t_image\r\n\t_ref\r\na.vol\tx\r\n".encode())
    with pytest.raises(MetadataError, match=r"images\.xmd, line 5: ref must be an integer, got 'x'$"):
        read_metadata(path)


@pytest.mark.parametrize("value", ["99999999999999999999", "-9223372036854775809", "1e300"])
def test_integers_beyond_64_bits_name_the_line(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, "images.xmd", f"data_\nloop_\n _image\n _ref\na.vol 1\nb.vol {value}\n")
    expected = rf"images\.xmd, line 6: ref must be a 64-bit integer, got '{value}'"
    with pytest.raises(MetadataError, match=expected):
        read_metadata(path)


def test_non_ascii_and_spaces_in_paths_and_image_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "données été" / "liste ü"
    text = (
        "# XMIPP_STAR_1 *\ndata_noname\nloop_\n _image\n _enabled\n _ref\n _extra\n"
        "'particules/π 1.vol' 1 2 x\n\"particules/été 2.vol\" 1 1 y\nparticules/Ωmega.vol 0 1 z\n"
    )
    path = _write(folder, "imagés.xmd", text)
    monkeypatch.chdir(tmp_path)
    table = read_images(path)
    assert list(table["image"]) == [str(folder / "particules" / name) for name in ("π 1.vol", "été 2.vol")]
    np.testing.assert_array_equal(table["ref"], [2, 1])
    assert list(table["extra"]) == ["x", "y"]
