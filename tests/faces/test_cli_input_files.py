"""Input files through ``ml_tomo``: volumes that cannot be refined end with one line naming the file and leave
no output; text in any dress (byte order mark, CRLF or CR line ends, tabs) reads as plain text."""

from __future__ import annotations

import re
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_BOX
from napari_mltomo.cli import main, parse_command
from napari_mltomo.inputs import RunInputs
from napari_mltomo.io import MetaData, read_images, read_volume, write_star, write_volume

RUN = ("--ang", "40", "--dim", "16", "--seed", "0", "--quiet", "--iter", "1", "--escape", "0")


@pytest.fixture
def data(tiny_data: Path, tmp_path: Path) -> Path:
    """A copy of the tiny data set (12 particles of 16^3, ``images.xmd``, ``wedges.xmd``) to spoil."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def _run(data: Path, *extra: str) -> list[str]:
    return ["-i", str(data / "images.xmd"), "--missing", str(data / "wedges.xmd"), *RUN, *extra]


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], root: Path) -> str:
    """Run ``argv`` with ``--oroot root``: exit status 2, one line ``ml_tomo: error: ...``, no output."""
    assert main([*argv, "--oroot", str(root)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ml_tomo: error: "), err
    assert "Traceback" not in err
    assert not list(root.parent.glob("*")), "a refused run wrote files"
    return err.strip()


def _particles(data: Path) -> list[Path]:
    return [Path(name) for name in read_images(data / "images.xmd")["image"]]


def _add_angles(data: Path) -> None:
    images = read_images(data / "images.xmd")
    write_star(data / "images.xmd", images.with_columns(angleRot=0.0, angleTilt=0.0, anglePsi=0.0))


def _with_bad_voxel(path: Path, value: float) -> Path:
    volume = read_volume(path)
    volume[2, 3, 4] = value
    write_volume(path, volume)
    return path


def _nan_ref(data: Path) -> list[str]:
    ref = _with_bad_voxel(Path(shutil.copy(_particles(data)[0], data / "ref.mrc")), np.nan)
    return ["--ref", str(ref)]


def _inf_in_a_ref_list(data: Path) -> list[str]:
    good, bad = (Path(shutil.copy(_particles(data)[k], data / f"ref{k}.mrc")) for k in (0, 1))
    _with_bad_voxel(bad, -np.inf)
    write_star(data / "refs.xmd", MetaData({"image": np.array([good.name, bad.name], dtype=object)}))
    return ["--ref", str(data / "refs.xmd")]


def _nan_mask(data: Path) -> list[str]:
    mask = np.ones((TINY_BOX,) * 3, np.float32)
    mask[2, 3, 4] = np.nan
    write_volume(data / "mask.mrc", mask)
    _add_angles(data)
    return ["--nref", "2", "--dont_align", "--mask", str(data / "mask.mrc")]


AT = "has NaN or Inf voxels (the first at x=4 y=3 z=2)"
NON_FINITE_MAPS = {
    "--ref": (_nan_ref, f"ref.mrc: {AT}; --ref maps must be finite"),
    "--ref list": (_inf_in_a_ref_list, f"ref1.mrc: {AT}; --ref maps must be finite"),
    "--mask": (_nan_mask, f"mask.mrc: {AT}; --mask needs values in [0, 1]"),
}


@pytest.mark.parametrize("case", NON_FINITE_MAPS)
def test_non_finite_maps_are_refused_before_the_run(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    snapshot: Callable[[Path], dict[str, object]],
    case: str,
) -> None:
    make_args, expected = NON_FINITE_MAPS[case]
    argv = _run(data, *make_args(data))
    before = snapshot(data)
    assert expected in _refused(capsys, argv, tmp_path / "out" / "run")
    after = snapshot(data)
    assert after.keys() == before.keys()
    for name, content in before.items():
        np.testing.assert_array_equal(after[name], content, err_msg=name)  # NaN equals NaN here


def _zero_every_particle(data: Path) -> None:
    for path in _particles(data):
        write_volume(path, np.zeros((TINY_BOX,) * 3, np.float32))


STARTS = {
    "random subsets": ("--nref", "2"),
    "annealed start-up": ("--nref", "1", "--escape", "2"),  # the last --escape counts
    "--ref": ("--ref", "ref.mrc"),
    "--only_average": ("--only_average", "--nref", "1"),
}


@pytest.mark.parametrize("start", STARTS)
def test_constant_particles_are_refused_on_the_first_pass(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str
) -> None:
    ref = shutil.copy(_particles(data)[0], data / "ref.mrc")  # a map with signal, for the --ref start
    _zero_every_particle(data)
    _add_angles(data)
    argv = _run(data, *(str(ref) if word == "ref.mrc" else word for word in STARTS[start]))
    line = _refused(capsys, argv, tmp_path / "out" / "run")
    assert re.search(r"p000\.mrc: constant \(one value in every voxel\), like all 12 particles", line), line


def test_a_particle_with_nan_leaves_no_file_when_the_run_starts_from_a_map(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The starting references are written only once a pass has checked the particles."""
    ref = shutil.copy(_particles(data)[0], data / "ref.mrc")
    _with_bad_voxel(_particles(data)[5], np.nan)
    line = _refused(capsys, _run(data, "--ref", str(ref)), tmp_path / "out" / "run")
    assert "p005.mrc: has NaN or Inf voxels" in line


def test_a_corrupt_extended_header_is_refused_from_the_header(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    particle = _particles(data)[3]
    content = bytearray(particle.read_bytes())
    content[92:96] = (2**31 - 1).to_bytes(4, "little")  # NSYMBT
    particle.write_bytes(content)
    tracemalloc.start()
    try:
        line = _refused(capsys, _run(data, "--nref", "1"), tmp_path / "out" / "run")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{particle}: bad extended header size NSYMBT=2147483647 for a file of {len(content)}" in line
    assert peak < 4 * 2**20  # reading the metadata and headers, not the 2 GiB the header claims


# --------------------------------------------------------------------------- text in any dress


def _dressed(path: Path, text: str) -> None:
    """Write ``text`` with a byte order mark, CRLF line ends and tabs between values."""
    path.write_bytes(("\ufeff" + text.replace(" ", "\t").replace("\n", "\r\n")).encode())


def _seed_like_inputs(folder: Path, names: list[str], dress: bool) -> list[str]:
    """A selfile, a docfile of angles, a headerless wedge file, a reference list and a --frac file, in
    ``folder``; the arguments that name them."""
    folder.mkdir()
    write = _dressed if dress else Path.write_text
    write(folder / "images.sel", "".join(f"{name} 1\n" for name in names))
    doc = " ; Headerinfo columns: rot (1), tilt (2), psi (3), Wedge (4)\n" + "".join(
        f" ; {name}\n {i + 1} 4 {10 * i} 20 30 1\n" for i, name in enumerate(names)
    )
    write(folder / "images.doc", doc)
    write(folder / "wedges.txt", "# Wedgeinfo\n1 wedge_y -60 60\n")
    write(folder / "refs.xmd", f"data_\nloop_\n _image\n _enabled\n{names[0]} 1\n{names[1]} 1\n")
    write(folder / "frac.xmd", "data_\nloop_\n _weight\n0.25\n0.75\n")
    return [
        "-i", str(folder / "images.sel"), "--doc", str(folder / "images.doc"),
        "--missing", str(folder / "wedges.txt"), "--ref", str(folder / "refs.xmd"),
        "--frac", str(folder / "frac.xmd"), "--keep_angles",
    ]  # fmt: skip


def _summary(inputs: RunInputs) -> dict[str, object]:
    images = {label: inputs.images[label].tolist() for label in inputs.images.labels}
    return {
        "images": images, "regions": inputs.regions, "fractions": inputs.params.fractions,
        "references": inputs.reference_files, "box": inputs.box_size,
    }  # fmt: skip


def test_bom_crlf_and_tabs_in_every_text_input(data: Path) -> None:
    names = [str(path) for path in _particles(data)]
    plain = parse_command(_seed_like_inputs(data / "plain", names, dress=False))
    dressed = parse_command(_seed_like_inputs(data / "dressed", names, dress=True))
    assert _summary(dressed) == _summary(plain)
    assert plain.params.fractions == (0.25, 0.75) and len(plain.regions) == 1
    assert plain.images["angleRot"].tolist() == [10.0 * i for i in range(len(names))]
