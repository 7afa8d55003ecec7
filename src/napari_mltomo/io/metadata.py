"""Xmipp metadata tables: STAR (``.xmd``), Xmipp 2 selfiles and docfiles, and headerless rows.

Every reader returns a `MetaData`: one 1-D numpy array per label (int64, float64, or object
arrays of ``str``), in file order. Every malformed input raises `MetadataError`, whose message
names the file and, where it applies, the 1-based line number.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.volumes import volume_shape

__all__ = [
    "ANGLE_LABELS",
    "FLOAT_LABELS",
    "IMAGE_COLUMNS",
    "INT_LABELS",
    "MISSING_REGION_COLUMNS",
    "SHIFT_LABELS",
    "STRING_LABELS",
    "MetaData",
    "MetadataError",
    "checked_volume_shape",
    "image_key",
    "particle_box",
    "read_images",
    "read_metadata",
    "read_missing_regions",
    "read_star",
    "read_star_blocks",
    "voxels_text",
    "write_missing_regions",
    "write_star",
]

#: Xmipp Euler angle and shift columns of a particle's transform, in this order.
ANGLE_LABELS = ("angleRot", "angleTilt", "anglePsi")
SHIFT_LABELS = ("shiftX", "shiftY", "shiftZ")
INT_LABELS = frozenset({"ref", "missingRegionNumber", "enabled", "itemId", "iterationNumber"})
FLOAT_LABELS = frozenset(
    {
        "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ",
        "logLikelihood", "pMax", "weight", "signalChange", "sigmaNoise", "sigmaOffset",
        "resolution", "resolutionFreqFourier", "resolutionFRC",
        "missingRegionThetaY0", "missingRegionThetaYF",
        "missingRegionThetaX0", "missingRegionThetaXF",
    }
)  # fmt: skip
STRING_LABELS = frozenset({"image", "missingRegionType", "imageMetaData", "referenceMetaData"})

#: Positional labels of a headerless images file (the seed's ``-i`` example).
IMAGE_COLUMNS: tuple[str, ...] = (
    "image", "missingRegionNumber", "angleRot", "angleTilt", "anglePsi",
    "shiftX", "shiftY", "shiftZ", "ref", "logLikelihood",
)  # fmt: skip
#: Positional labels of a headerless missing-region file (the seed's ``--missing`` example).
MISSING_REGION_COLUMNS: tuple[str, ...] = (
    "missingRegionNumber", "missingRegionType", "missingRegionThetaY0",
    "missingRegionThetaYF", "missingRegionThetaX0", "missingRegionThetaXF",
)  # fmt: skip

_XMIPP2_ALIASES = {
    "rot": "angleRot", "tilt": "angleTilt", "psi": "anglePsi",
    "Xoff": "shiftX", "Yoff": "shiftY", "Zoff": "shiftZ",
    "Ref": "ref", "Wedge": "missingRegionNumber", "LL": "logLikelihood",
    "Pmax": "pMax", "sumP": "pMax", "Weight": "weight",
}  # fmt: skip
_REGION_ANGLE_FIELDS = {
    "missingRegionThetaY0": "theta_y0_deg",
    "missingRegionThetaYF": "theta_yf_deg",
    "missingRegionThetaX0": "theta_x0_deg",
    "missingRegionThetaXF": "theta_xf_deg",
}
_REGION_REQUIRED_ANGLES = {
    "wedge_y": ("missingRegionThetaY0", "missingRegionThetaYF"),
    "wedge_x": ("missingRegionThetaX0", "missingRegionThetaXF"),
    "pyramid": tuple(_REGION_ANGLE_FIELDS),
    "cone": ("missingRegionThetaY0",),
}
_STAR_MAGIC = "# XMIPP_STAR_1 * "
_COMMENT_WIDTH = 70
_TOKEN = re.compile(r"""'([^']*)'(?=\s|$)|"([^"]*)"(?=\s|$)|(\S+)""")
_SELFILE_ROW = re.compile(r"\S+\s+-?\d+")
_DATA_LINE = re.compile(r"data_\S*")
_STACK_PREFIX = re.compile(r"(\d+@)(.+)")


class MetadataError(ValueError):
    """A metadata file could not be read; the message names the file and line."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        self.detail = message
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[MetadataError], tuple[str, str, int | None]]:
        return (type(self), (self.path, self.detail, self.line))


@dataclass(frozen=True, eq=False)
class MetaData:
    """A metadata table: one 1-D column per label, all of the same length.

    Columns are normalised on construction: integers become int64, floats float64, and
    anything else (strings) an object array. Label order is insertion order. Methods return
    new tables and never modify this one.

    Parameters
    ----------
    columns : dict of str to (n,) array
        Label -> column values.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        columns = {label: _as_column(label, values) for label, values in self.columns.items()}
        lengths = {label: len(values) for label, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"all columns must have the same length, got {lengths}")
        object.__setattr__(self, "columns", columns)

    @classmethod
    def from_rows(cls, labels: Sequence[str], rows: Iterable[Sequence[object]]) -> MetaData:
        """Build a table from row tuples whose values follow `labels`."""
        table = [tuple(row) for row in rows]
        for number, row in enumerate(table):
            if len(row) != len(labels):
                raise ValueError(f"row {number} has {len(row)} values, expected {len(labels)}")
        return cls({label: [row[i] for row in table] for i, label in enumerate(labels)})

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    @property
    def labels(self) -> tuple[str, ...]:
        """Column labels, in order."""
        return tuple(self.columns)

    def __contains__(self, label: object) -> bool:
        return label in self.columns

    def __getitem__(self, label: str) -> np.ndarray:
        try:
            return self.columns[label]
        except KeyError:
            raise KeyError(f"no column {label!r}; labels are {', '.join(self.labels)}") from None

    def with_columns(self, **arrays: ArrayLike) -> MetaData:
        """Return a new table with columns added or replaced; scalars are broadcast."""
        n_rows = len(self)
        new = {
            label: np.full(n_rows, values) if np.ndim(values) == 0 else values
            for label, values in arrays.items()
        }
        return MetaData({**self.columns, **new})

    def take(self, indices: ArrayLike) -> MetaData:
        """Return the rows at `indices` (integer positions or a boolean mask), in that order."""
        return MetaData({label: values[indices] for label, values in self.columns.items()})

    def float_columns(self, labels: Sequence[str]) -> NDArray[np.float64] | None:
        """``(n, len(labels))`` float columns, or None if any is absent or not numeric."""
        if not all(label in self for label in labels):
            return None
        try:
            return np.stack([np.asarray(self[label], dtype=np.float64) for label in labels], axis=1)
        except (TypeError, ValueError):
            return None


def particle_box(images: MetaData, input_path: str | os.PathLike[str]) -> int:
    """Check that every image of ``images`` exists and all are cubes of one size (headers only).

    Returns
    -------
    int
        The box size.

    Raises
    ------
    MetadataError
        Naming ``input_path`` and the image, if the table is empty or an image is not a cube of the
        first image's size.
    FileNotFoundError
        If an image file is missing.
    """
    first = None
    for name in images["image"]:
        shape = checked_volume_shape(str(name), f"-i {input_path}")
        if shape[0] != shape[1] or shape[1] != shape[2]:
            raise MetadataError(input_path, f"image {name} is {voxels_text(shape)}; particles must be cubes")
        if first is None:
            first = (name, shape)
        elif shape != first[1]:
            raise MetadataError(
                input_path,
                f"image {name} is {voxels_text(shape)} but {first[0]} is {voxels_text(first[1])}; "
                "all particles must have the same box",
            )
    if first is None:
        raise MetadataError(input_path, "lists no images")
    return first[1][0]


def checked_volume_shape(name: str, what: str) -> tuple[int, int, int]:
    """``(z, y, x)`` of the volume ``name`` (an ``N@`` stack prefix allowed); a missing file raises
    ``FileNotFoundError`` naming it and ``what`` asked for it."""
    match = _STACK_PREFIX.fullmatch(name)
    if not Path(match[2] if match else name).is_file():
        raise FileNotFoundError(2, f"{what}: no such file", name)
    return volume_shape(name)


def voxels_text(shape: tuple[int, int, int]) -> str:
    """``"XxYxZ voxels"`` for a ``(z, y, x)`` shape."""
    z, y, x = shape
    return f"{x}x{y}x{z} voxels"


def image_key(name: str) -> str:
    """A file name normalised for matching (absolute, no ``..``), keeping an ``N@`` stack prefix."""
    match = _STACK_PREFIX.fullmatch(name)
    prefix, file = (match[1], match[2]) if match else ("", name)
    return prefix + os.path.normpath(os.path.abspath(file))


def _as_column(label: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"column {label!r} must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind in "biu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        return array.astype(np.float64, copy=False)
    return array.astype(object, copy=False)


# --------------------------------------------------------------------------- parsing


@dataclass
class _Rows:
    """Raw text cells of one table, with the 1-based line of each row."""

    source: Path
    labels: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    label_lines: list[int] = field(default_factory=list)
    layout: str | None = None  # "loop" or "row" for STAR blocks


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank, non-``#`` line."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _split_values(source: Path, number: int, line: str) -> list[str]:
    values = []
    for match in _TOKEN.finditer(line):
        single, double, bare = match.groups()
        if bare is not None and bare[0] in "'\"":
            raise MetadataError(source, f"unterminated quote in {bare!r}", number)
        values.append(next(v for v in (single, double, bare) if v is not None))
    return values


def _parse_star(source: Path, text: str) -> dict[str, _Rows]:
    blocks: dict[str, _Rows] = {}
    block: _Rows | None = None
    for number, line in _content_lines(text):
        if _DATA_LINE.fullmatch(line):
            name = line[len("data_") :]
            if name in blocks:
                raise MetadataError(source, f"block data_{name} appears twice", number)
            block = blocks[name] = _Rows(source)
        elif block is None:
            raise MetadataError(source, f"expected a data_ line before {line[:40]!r}", number)
        else:
            _parse_star_line(block, number, line)
    return blocks


def _parse_star_line(block: _Rows, number: int, line: str) -> None:
    source = block.source
    if line == "loop_":
        if block.layout is not None:
            raise MetadataError(source, "a second loop_ in one data_ block", number)
        block.layout = "loop"
    elif line.startswith("_"):
        if block.layout == "loop" and block.rows:
            raise MetadataError(source, f"label {line.split()[0]} after the data rows", number)
        block.layout = block.layout or "row"
        values = _split_values(source, number, line)
        _add_label(block, number, values[0][1:])
        if block.layout == "row":
            block.rows = block.rows or [[]]
            block.rows[0].append(_row_format_value(source, number, values))
    elif block.layout == "loop":
        values = _split_values(source, number, line)
        if len(values) != len(block.labels):
            raise MetadataError(
                source,
                f"row has {len(values)} values but the loop declares {len(block.labels)} labels",
                number,
            )
        block.rows.append(values)
        block.lines.append(number)
    else:
        raise MetadataError(source, f"expected loop_ or a ' _label' line, got {line[:40]!r}", number)


def _add_label(block: _Rows, number: int, label: str) -> None:
    if not label:
        raise MetadataError(block.source, "empty label '_'", number)
    if label in block.labels:
        raise MetadataError(block.source, f"label _{label} appears twice in one block", number)
    block.labels.append(label)
    block.label_lines.append(number)


def _row_format_value(source: Path, number: int, values: list[str]) -> str:
    if len(values) < 2:
        raise MetadataError(source, f"label {values[0]} has no value", number)
    if len(values) > 2 and not values[2].startswith("#"):
        raise MetadataError(source, f"label {values[0]} has {len(values) - 1} values", number)
    return values[1]


def _parse_docfile(source: Path, text: str) -> _Rows:
    lines = text.splitlines()
    table = _Rows(source, labels=["image", *_docfile_labels(source, lines[0])])
    image: str | None = None
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(";"):
            image = line[1:].strip()
            continue
        if image is None:
            raise MetadataError(source, "data line without a '; <filename>' line before it", number)
        values = line.split()
        n_columns = len(table.labels) - 1
        if len(values) - 2 != n_columns:
            raise MetadataError(
                source,
                f"data line has {len(values) - 2} values after the key and count, "
                f"but the header declares {n_columns} columns",
                number,
            )
        table.rows.append([image, *values[2:]])
        table.lines.append(number)
        image = None
    return table


def _docfile_labels(source: Path, header: str) -> list[str]:
    _, found, names = header.partition("Headerinfo columns:")
    tokens = [t for t in re.split(r"[\s,]+", names) if t and "(" not in t and ")" not in t]
    if not found or not tokens:
        raise MetadataError(source, "expected 'Headerinfo columns: name (1), ...'", 1)
    labels = [_XMIPP2_ALIASES.get(token, token) for token in tokens]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise MetadataError(source, f"header names column(s) {', '.join(duplicates)} twice", 1)
    return labels


def _parse_selfile(source: Path, text: str) -> _Rows:
    table = _Rows(source, labels=["image", "enabled"])
    for number, line in _content_lines(text):
        table.rows.append(line.split())
        table.lines.append(number)
    return table


def _parse_headerless(
    source: Path, text: str, labels: Sequence[str], *, min_values: int, ragged: bool
) -> _Rows:
    """Rows of whitespace-separated values, labelled by position.

    With ``ragged`` short rows are padded with ``nan``; otherwise all rows need the same length.
    """
    table = _Rows(source)
    for number, line in _content_lines(text):
        values = _split_values(source, number, line)
        if not min_values <= len(values) <= len(labels):
            raise MetadataError(
                source,
                f"row has {len(values)} values; a file without a STAR header needs "
                f"{min_values} to {len(labels)} values per row ({' '.join(labels)})",
                number,
            )
        if not ragged and table.rows and len(values) != len(table.rows[0]):
            raise MetadataError(
                source,
                f"row has {len(values)} values but line {table.lines[0]} has {len(table.rows[0])}",
                number,
            )
        table.rows.append(values)
        table.lines.append(number)
    width = max((len(row) for row in table.rows), default=0)
    table.labels = list(labels[:width])
    table.rows = [row + ["nan"] * (width - len(row)) for row in table.rows]
    return table


def _typed_column(source: Path, label: str, cells: list[str], lines: list[int]) -> np.ndarray:
    if label in STRING_LABELS:
        return np.array(cells, dtype=object)
    if label in INT_LABELS:
        ints = [_parse_int(source, label, cell, n) for cell, n in zip(cells, lines, strict=True)]
        return np.array(ints, dtype=np.int64)
    if label in FLOAT_LABELS:
        floats = [_parse_float(source, label, cell, n) for cell, n in zip(cells, lines, strict=True)]
        return np.array(floats, dtype=np.float64)
    return _inferred_column(cells)


def _parse_int(source: Path, label: str, cell: str, number: int) -> int:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        return math.trunc(float(cell))
    except (ValueError, OverflowError):
        raise MetadataError(source, f"{label} must be an integer, got {cell!r}", number) from None


def _parse_float(source: Path, label: str, cell: str, number: int) -> float:
    try:
        return float(cell)
    except ValueError:
        raise MetadataError(source, f"{label} must be a number, got {cell!r}", number) from None


def _inferred_column(cells: list[str]) -> np.ndarray:
    """int64 if every cell is an integer, float64 if every cell is a number, else strings."""
    for convert, dtype in ((int, np.int64), (float, np.float64)):
        try:
            return np.array([convert(cell) for cell in cells], dtype=dtype)
        except (ValueError, OverflowError):
            continue
    return np.array(cells, dtype=object)


def _to_table(raw: _Rows) -> MetaData:
    columns = {}
    for i, label in enumerate(raw.labels):
        lines = [raw.label_lines[i]] if raw.layout == "row" else raw.lines
        cells = [row[i] for row in raw.rows]
        columns[label] = _typed_column(raw.source, label, cells, lines)
    return MetaData(columns)


# --------------------------------------------------------------------------- dispatch


def _split_block_name(path: str | os.PathLike[str]) -> tuple[str | None, Path]:
    """Split Xmipp's ``block@file`` syntax, unless the whole string names an existing file."""
    text = os.fspath(path)
    name, at, rest = text.partition("@")
    if at and rest and "/" not in name and os.sep not in name and not Path(text).exists():
        return name, Path(rest)
    return None, Path(text)


def _read_text(source: Path) -> str:
    try:
        return source.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MetadataError(source, "not a text file (invalid UTF-8); expected metadata") from err


def _detect_format(source: Path, text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line), "")
    if (
        "XMIPP_STAR_1" in first
        or source.suffix.lower() in {".xmd", ".star"}
        or any(_DATA_LINE.fullmatch(line) for line in lines)
    ):
        return "star"
    if lines and "Headerinfo" in lines[0]:
        return "docfile"
    content = [line for _, line in _content_lines(text)]
    if content and all(_SELFILE_ROW.fullmatch(line) for line in content):
        return "selfile"
    return "headerless"


def _select_block(source: Path, blocks: dict[str, _Rows], name: str | None) -> _Rows:
    if not blocks:
        raise MetadataError(source, "no data_ block found")
    if name is None:
        return next(iter(blocks.values()))
    if name not in blocks:
        available = ", ".join(f"data_{block}" for block in blocks)
        raise MetadataError(source, f"no block data_{name}; the file has {available}")
    return blocks[name]


def _read_rows(
    path: str | os.PathLike[str],
    positional: Sequence[str],
    *,
    min_values: int = 1,
    ragged: bool = False,
) -> _Rows:
    """Read any supported metadata file; headerless rows get the `positional` labels."""
    block, source = _split_block_name(path)
    text = _read_text(source)
    kind = _detect_format(source, text)
    if block is not None and kind != "star":
        raise MetadataError(source, f"block {block!r} requested, but this is not a STAR file")
    if kind == "star":
        return _select_block(source, _parse_star(source, text), block)
    if kind == "docfile":
        return _parse_docfile(source, text)
    if kind == "selfile":
        return _parse_selfile(source, text)
    return _parse_headerless(source, text, positional, min_values=min_values, ragged=ragged)


# --------------------------------------------------------------------------- public readers


def read_star_blocks(path: str | os.PathLike[str]) -> dict[str, MetaData]:
    """Read every block of an Xmipp STAR file.

    Parameters
    ----------
    path : str or os.PathLike
        The file. With ``name@file`` only block ``name`` is returned.

    Returns
    -------
    dict of str to MetaData
        Block name (without ``data_``) -> table, in file order.

    Raises
    ------
    MetadataError
        If the file is malformed or the named block does not exist.
    """
    block, source = _split_block_name(path)
    blocks = _parse_star(source, _read_text(source))
    if block is not None:
        blocks = {block: _select_block(source, blocks, block)}
    return {name: _to_table(raw) for name, raw in blocks.items()}


def read_star(path: str | os.PathLike[str], block: str | None = None) -> MetaData:
    """Read one block of an Xmipp STAR file (loop or row format).

    Parameters
    ----------
    path : str or os.PathLike
        The file, optionally as ``name@file`` to select block ``data_name``.
    block : str, optional
        Block name without ``data_``. Default: the block named in `path`, else the first one.

    Returns
    -------
    MetaData
        The block's table. Known integer labels (``ref``, ``missingRegionNumber``, ...) are
        int64, known float labels float64, and other labels are inferred.

    Raises
    ------
    MetadataError
        If the file is malformed, or the block does not exist.
    """
    named, source = _split_block_name(path)
    if named is not None and block is not None and named != block:
        raise MetadataError(source, f"block given twice: {named!r} in the path and {block!r}")
    raw = _select_block(source, _parse_star(source, _read_text(source)), block or named)
    return _to_table(raw)


def read_metadata(path: str | os.PathLike[str]) -> MetaData:
    """Read a metadata file, recognising its format from its content.

    * Xmipp STAR if the first non-blank line contains ``XMIPP_STAR_1``, the extension is
      ``.xmd``/``.star``, or a ``data_`` line appears (``name@file`` selects a block);
    * Xmipp 2 docfile if line 1 contains ``Headerinfo`` (aliases such as ``rot`` become
      ``angleRot``; the ``; <filename>`` lines become ``image``);
    * Xmipp 2 selfile if every line is ``<filename> <int flag>`` (columns ``image enabled``);
    * otherwise headerless rows labelled by position with `IMAGE_COLUMNS`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    MetaData
        All rows, including disabled ones.

    Raises
    ------
    MetadataError
        If the file is malformed; the message names the file and line.
    """
    return _to_table(_read_rows(path, IMAGE_COLUMNS))


def read_images(path: str | os.PathLike[str]) -> MetaData:
    """Read an images metadata file: enabled rows only, with image paths resolved.

    A relative image path is kept if it exists relative to the current directory, and is
    otherwise taken relative to the metadata file's folder (Xmipp's rule). A ``N@`` stack
    prefix is kept.

    Parameters
    ----------
    path : str or os.PathLike
        Any format `read_metadata` accepts.

    Returns
    -------
    MetaData
        The rows with ``enabled > 0`` (all rows if there is no ``enabled`` column).

    Raises
    ------
    MetadataError
        If the file is malformed or has no ``image`` column.
    """
    raw = _read_rows(path, IMAGE_COLUMNS)
    table = _to_table(raw)
    if "image" not in table:
        labels = ", ".join(table.labels) or "none"
        raise MetadataError(
            raw.source, f"no 'image' column (labels: {labels}); add one with the volume files"
        )
    if "enabled" in table:
        table = table.take(np.flatnonzero(table["enabled"] > 0))
    images = [_resolve_image(str(name), raw.source.parent) for name in table["image"]]
    return table.with_columns(image=np.array(images, dtype=object))


def _resolve_image(name: str, folder: Path) -> str:
    match = _STACK_PREFIX.fullmatch(name)
    prefix, file = (match[1], match[2]) if match else ("", name)
    if not file or os.path.isabs(file) or os.path.exists(file):
        return name
    return prefix + str(folder / file)


def read_missing_regions(path: str | os.PathLike[str]) -> list[MissingRegion]:
    """Read missing-region definitions; region ``k`` (1-based) is the row whose ``missingRegionNumber`` is
    ``k``, or the ``k``-th row in a STAR file without that column.

    STAR files use the labels ``missingRegionNumber``, ``missingRegionType`` and
    ``missingRegionThetaY0/YF/X0/XF``. Files without a STAR header hold rows
    ``number type thetaY0 thetaYF [thetaX0 thetaXF]``, e.g. ``1 wedge_y -64 64``.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``name@file`` selects a STAR block).

    Returns
    -------
    list of MissingRegion
        Region ``k`` at position ``k - 1``; angles in degrees.

    Raises
    ------
    MetadataError
        If the file is malformed, a type is unknown, a needed angle is absent, the angles are out
        of range or the numbers are not ``1..R`` once each; the message names the file and line.
    """
    raw = _read_rows(path, MISSING_REGION_COLUMNS, min_values=3, ragged=True)
    table = _to_table(raw)
    if "missingRegionType" not in table:
        raise MetadataError(raw.source, "no missingRegionType column")
    if len(table) == 0:
        raise MetadataError(raw.source, "no missing-region rows")
    regions = [_missing_region(raw.source, table, row, line) for row, line in enumerate(raw.lines)]
    if "missingRegionNumber" not in table:
        return regions
    numbers = np.asarray(table["missingRegionNumber"])
    for row, line in enumerate(raw.lines):
        if not 1 <= numbers[row] <= len(regions) or np.count_nonzero(numbers == numbers[row]) > 1:
            raise MetadataError(
                raw.source,
                f"missingRegionNumber {numbers[row]}: the rows must be numbered 1..{len(regions)}, once each",
                line,
            )
    return [regions[row] for row in np.argsort(numbers)]


def _missing_region(source: Path, table: MetaData, row: int, line: int) -> MissingRegion:
    kind = str(table["missingRegionType"][row])
    if kind not in _REGION_REQUIRED_ANGLES:
        expected = ", ".join(_REGION_REQUIRED_ANGLES)
        raise MetadataError(source, f"unknown missingRegionType {kind!r}; use {expected}", line)
    angles = {}
    for label, name in _REGION_ANGLE_FIELDS.items():
        value = float(table[label][row]) if label in table else math.nan
        if math.isnan(value) and label in _REGION_REQUIRED_ANGLES[kind]:
            raise MetadataError(source, f"a {kind} region needs {label}", line)
        angles[name] = 0.0 if math.isnan(value) else value
    try:
        return MissingRegion(kind=kind, **angles)  # type: ignore[arg-type]  # kind checked above
    except ValueError as err:
        raise MetadataError(source, str(err), line) from err


# --------------------------------------------------------------------------- writing


def write_missing_regions(path: str | os.PathLike[str], regions: Sequence[MissingRegion]) -> Path:
    """Write missing-region definitions (region ``k`` on row ``k``), as :func:`read_missing_regions` reads
    them, atomically. Returns the file written."""
    rows = [
        (number, region.kind, *(getattr(region, name) for name in _REGION_ANGLE_FIELDS.values()))
        for number, region in enumerate(regions, start=1)
    ]
    labels = ("missingRegionNumber", "missingRegionType", *_REGION_ANGLE_FIELDS)
    return write_star(path, MetaData.from_rows(labels, rows), "missing regions")


def write_star(
    path: str | os.PathLike[str],
    blocks: MetaData | Mapping[str, MetaData],
    comment: str = "",
    *,
    row_format: bool = False,
) -> Path:
    """Write tables as an Xmipp STAR file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced in one step (written to a temporary file, then renamed).
    blocks : MetaData or mapping of str to MetaData
        One table (written as block ``data_noname``) or block name -> table.
    comment : str
        Header comment, wrapped at 70 characters; an empty comment still writes ``# ``.
    row_format : bool
        Write `` _label value`` lines instead of a loop; each table must have one row.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        For a block or label name with whitespace, a row-format table without exactly one
        row, or a string value that cannot be quoted (line breaks, or both quote characters).
    """
    named = {"noname": blocks} if isinstance(blocks, MetaData) else dict(blocks)
    text = _star_text(named, comment, row_format=row_format)
    target = Path(path)
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return target


def _star_text(blocks: Mapping[str, MetaData], comment: str, *, row_format: bool) -> str:
    wrapped = textwrap.wrap(comment, _COMMENT_WIDTH, break_long_words=False, break_on_hyphens=False) or [""]
    lines = [_STAR_MAGIC, *(f"# {part}" for part in wrapped)]
    for number, (name, table) in enumerate(blocks.items()):
        if not re.fullmatch(r"\S*", name):
            raise ValueError(f"block name must not contain whitespace, got {name!r}")
        if number:
            lines.append("")
        lines.append(f"data_{name}")
        lines += _row_lines(name, table) if row_format else _loop_lines(table)
    return "\n".join(lines) + "\n"


def _checked_labels(table: MetaData) -> tuple[str, ...]:
    for label in table.labels:
        if not re.fullmatch(r"\S+", label):
            raise ValueError(f"labels must be non-empty without whitespace, got {label!r}")
    return table.labels


def _loop_lines(table: MetaData) -> list[str]:
    labels = _checked_labels(table)
    cells = [_format_column(table[label]) for label in labels]
    rows = ["".join(f"{value} " for value in row) for row in zip(*cells, strict=True)]
    return ["loop_", *(f" _{label}" for label in labels), *rows]


def _row_lines(name: str, table: MetaData) -> list[str]:
    if len(table) != 1:
        raise ValueError(f"row format needs exactly one row; block {name!r} has {len(table)}")
    labels = _checked_labels(table)
    return [f" _{label} {_format_column(table[label])[0].strip()}" for label in labels]


def _format_column(values: NDArray[np.generic]) -> list[str]:
    if values.dtype.kind == "i":
        return [f"{value:20d}" for value in values.tolist()]
    if values.dtype.kind == "f":
        return [_format_float(value) for value in values.tolist()]
    return [_format_string(str(value)) for value in values.tolist()]


def _format_float(value: float) -> str:
    return f"{value:12.6e}" if 0 < abs(value) < 0.001 else f"{value:12.6f}"


def _format_string(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"a STAR value cannot contain a line break, got {value!r}")
    needs_quotes = (
        not value
        or any(char.isspace() for char in value)
        or value[0] in "_#'\""
        or value.startswith(("data_", "loop_"))
    )
    if not needs_quotes:
        return value
    quote = '"' if "'" in value else "'"
    if quote in value:
        raise ValueError(f"a STAR value cannot hold both quote characters, got {value!r}")
    return f"{quote}{value}{quote}"
