"""The catalogue of inputs through ``ml_tomo``: each bad one ends with exit status 2 and one line naming the
file (and line) or the option, and changes no file; each odd but valid one runs.

Every case starts from a copy of the tiny data set (``data/``: ``images.xmd``, ``wedges.xmd`` and 12
particles ``pNNN.mrc`` of 16^3) and runs with ``--oroot out/r`` from the working directory ``cwd/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_mltomo.cli import main
from napari_mltomo.io import read_star, read_volume, write_volume

#: A tiny refinement: one class, one iteration, a 16-voxel box, a coarse grid, no start-up.
RUN = ("--nref", "1", "--iter", "1", "--dim", "16", "--ang", "30", "--escape", "0", "--quiet")
N_PARTICLES = 12

Case = Callable[[Path], list[str]]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def data(tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny data set in ``tmp_path/data``; the working directory is ``tmp_path/cwd``."""
    folder = tmp_path / "data"
    shutil.copytree(tiny_data, folder)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return folder


def _argv(folder: Path, *extra: str) -> list[str]:
    """The tiny run of the data in `folder`, writing ``out/r`` beside it, with `extra` options last."""
    inputs = ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd")]
    return [*inputs, "--oroot", str(folder.parent / "out" / "r"), *RUN, *extra]


def _options(*extra: str) -> Case:
    return lambda folder: _argv(folder, *extra)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _particle(i: int) -> str:
    return f"p{i:03d}.mrc"


def _star(labels: tuple[str, ...], rows: list[str]) -> str:
    """A STAR table: ``data_`` on line 1, ``loop_`` on 2, the labels, then one row per line."""
    return "\n".join(["data_", "loop_", *(f"_{label}" for label in labels), *rows]) + "\n"


def _images(rows: list[str] | None = None, labels: tuple[str, ...] = ("image", "missingRegionNumber")) -> str:
    """The particle table as STAR text; the row of particle ``i`` is on line ``3 + len(labels) + i``."""
    return _star(labels, rows if rows is not None else [f"{_particle(i)} 1" for i in range(N_PARTICLES)])


def _with_images(text: str, *extra: str) -> Case:
    """``-i`` replaced by a table with `text`."""

    def case(folder: Path) -> list[str]:
        _write(folder / "images.xmd", text)
        return _argv(folder, *extra)

    return case


def _with_wedges(text: str) -> Case:
    def case(folder: Path) -> list[str]:
        _write(folder / "wedges.xmd", text)
        return _argv(folder)

    return case


def _with_particle(i: int, make: Callable[[Path], object]) -> Case:
    """Particle ``i`` replaced by what `make` writes at its path."""

    def case(folder: Path) -> list[str]:
        make(folder / _particle(i))
        return _argv(folder)

    return case


def _with_file(name: str, make: Callable[[Path], object], *extra: str) -> Case:
    """A file `name` of the data folder made by `make`; ``{name}`` in `extra` is its path."""

    def case(folder: Path) -> list[str]:
        make(folder / name)
        return _argv(folder, *(word.replace("{name}", str(folder / name)) for word in extra))

    return case


def _masked(name: str, make: Callable[[Path], object]) -> Case:
    """``--mask`` (a file `name` made by `make`, unless None) with ``--dont_align`` and angles (``--doc``)."""

    def case(folder: Path) -> list[str]:
        rows = [f"{_particle(i)} 1 0 0 0" for i in range(N_PARTICLES)]
        _write(folder / "angles.xmd", _star(_ANGLES, rows))
        make(folder / name)
        return _argv(
            folder, "--doc", str(folder / "angles.xmd"), "--dont_align", "--mask", str(folder / name)
        )

    return case


def _volume(shape: tuple[int, int, int], value: float = 0.0) -> Callable[[Path], object]:
    return lambda path: write_volume(path, np.full(shape, value, np.float32))


def _text(content: str) -> Callable[[Path], object]:
    return lambda path: _write(path, content)


def _truncated(path: Path) -> None:
    write_volume(path, np.zeros((16, 16, 16), np.float32))
    path.write_bytes(path.read_bytes()[:5000])


def _hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` -> the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ml_tomo: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- cases needing a run


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A finished one-iteration run of the tiny data set (two classes); returns its folder."""
    folder = tmp_path_factory.mktemp("previous")
    argv = _argv(tiny_data, "--nref", "2")
    argv[argv.index("--oroot") + 1] = str(folder / "r")
    assert main(argv) == 0
    return folder


def _restart(edit: Callable[[Path], object] | None = None, *extra: str) -> Callable[[Path, Path], list[str]]:
    """``--restart`` of a copy (``data/previous``) of the previous run's iteration-1 log, after `edit`."""

    def case(folder: Path, previous: Path) -> list[str]:
        copy = folder / "previous"
        shutil.copytree(previous, copy)
        log = copy / "r_it000001_log.xmd"
        if edit is not None:
            edit(copy)
        return _argv(folder, "--nref", "2", "--restart", str(log), *extra)

    return case


# --------------------------------------------------------------------------- new refusals


def _over_input(option: str, name: str, make: Callable[[Path], object], *extra: str) -> Case:
    """A file the run reads (``option``) named as one of the run's outputs of ``data/r``."""

    def case(folder: Path) -> list[str]:
        make(folder / name)
        argv = _argv(folder, *extra, *((option, str(folder / name)) if option else ()))
        argv[argv.index("--oroot") + 1] = str(folder / "r")
        return argv

    return case


def _images_over_output(folder: Path) -> list[str]:
    """``-i data/r_img.xmd --oroot data/sub/../r``: another spelling of the same folder."""
    (folder / "sub").mkdir()
    shutil.copy(folder / "images.xmd", folder / "r_img.xmd")
    argv = _argv(folder)
    argv[argv.index("-i") + 1] = str(folder / "r_img.xmd")
    argv[argv.index("--oroot") + 1] = str(folder / "sub" / ".." / "r")
    return argv


def _particle_over_output(folder: Path) -> list[str]:
    os.replace(folder / _particle(0), folder / "r_it000001_ref000001.mrc")
    text = (folder / "images.xmd").read_text().replace(_particle(0), "r_it000001_ref000001.mrc")
    _write(folder / "images.xmd", text)
    argv = _argv(folder)
    argv[argv.index("--oroot") + 1] = str(folder / "r")
    return argv


def _over_mask(folder: Path) -> list[str]:
    argv = _masked("r_it000000_ref000001.mrc", _volume((16, 16, 16), 1.0))(folder)
    argv[argv.index("--oroot") + 1] = str(folder / "r")
    return argv


def _locked(text: Callable[[], str]) -> Case:
    """The output root ``out/r`` locked by ``out/r.lock`` holding `text`."""

    def case(folder: Path) -> list[str]:
        (folder.parent / "out").mkdir()
        _write(folder.parent / "out" / "r.lock", text())
        return _argv(folder)

    return case


def _this_host() -> str:
    return f"host {socket.gethostname()}\npid {os.getpid()}\nstarted 2025-01-01T00:00:00+00:00\n"


def _oroot_under_a_file(folder: Path) -> list[str]:
    argv = _argv(folder)
    argv[argv.index("--oroot") + 1] = str(folder / "images.xmd" / "r")
    return argv


# --------------------------------------------------------------------------- the bad inputs

_REF = ("--ref", "{name}", "--nref", "0")
_ANGLES = ("image", "missingRegionNumber", "angleRot", "angleTilt", "anglePsi")
_REGION_LABELS = ("missingRegionNumber", "missingRegionType", "missingRegionThetaY0", "missingRegionThetaYF")

#: Case -> (how to make it, what the error line names).
BAD: dict[str, tuple[Case, tuple[str, ...]]] = {
    # options: bad values
    "unknown option": (_options("--bogus"), ("--bogus",)),
    "--ang not a number": (_options("--ang", "ten"), ("--ang",)),
    "--ang without its value": (_options("--ang"), ("--ang",)),
    "--ang above 42": (_options("--ang", "50"), ("--ang",)),
    "--ang zero": (_options("--ang", "0"), ("--ang",)),
    "--iter negative": (_options("--iter", "-1"), ("--iter",)),
    "--iter not an integer": (_options("--iter", "1.5"), ("--iter",)),
    "--nref zero without --ref": (_options("--nref", "0"), ("--nref",)),
    "--nref negative": (_options("--nref", "-2"), ("--nref",)),
    "--dim above the box": (_options("--dim", "40"), ("--dim",)),
    "--dim below 8": (_options("--dim", "4"), ("--dim",)),
    "--maxres above 0.5": (_options("--maxres", "0.8"), ("--maxres",)),
    "--istart zero": (_options("--istart", "0"), ("--istart",)),
    "--reg_steps zero": (_options("--reg_steps", "0"), ("--reg_steps",)),
    "--impute_iter zero": (_options("--impute_iter", "0"), ("--impute_iter",)),
    "--noise zero": (_options("--noise", "0"), ("--noise",)),
    "--offset negative": (_options("--offset", "-1"), ("--offset",)),
    "--eps negative": (_options("--eps", "-1"), ("--eps",)),
    "--pixel_size negative": (_options("--pixel_size", "-1"), ("--pixel_size",)),
    "--thr zero": (_options("--thr", "0"), ("--thr",)),
    "--escape negative": (_options("--escape", "-1"), ("--escape",)),
    "--workers zero": (_options("--workers", "0"), ("--workers",)),
    "--psi_sampling above 360": (_options("--psi_sampling", "400"), ("--psi_sampling",)),
    "--tilt0 negative": (_options("--tilt0", "-5"), ("--tilt0",)),
    "--sym unknown": (_options("--sym", "c0"), ("--sym c0",)),
    "--sym with a mirror": (_options("--sym", "d2h"), ("--sym d2h",)),
    # options: bad combinations
    "no -i": (lambda folder: ["--nref", "1"], ("-i",)),
    "--tilt0 above --tiltF": (_options("--tilt0", "120", "--tiltF", "60"), ("--tilt0/--tiltF",)),
    "--regF above --reg0": (_options("--regF", "2"), ("--regF",)),
    "--ang_search below --ang": (_options("--ang_search", "10"), ("--ang_search",)),
    "--workers with --scheduler": (_options("--workers", "2", "--scheduler", "x:1"), ("--workers",)),
    "--keep_angles without angles": (_options("--keep_angles"), ("--keep_angles",)),
    "--frac of another class count": (_options("--nref", "2", "--frac", "0.1,0.2,0.7"), ("--frac",)),
    "--frac not numbers": (_options("--nref", "2", "--frac", "a,b"), ("--frac",)),
    "--mask without --dont_align": (
        _with_file("mask.mrc", _volume((16, 16, 16), 1.0), "--mask", "{name}"),
        ("--mask",),
    ),
    "--nref and --ref disagree": (
        _with_file("start.mrc", _volume((16, 16, 16)), "--ref", "{name}", "--nref", "2"),
        ("--nref 2", "start.mrc"),
    ),
    # metadata files
    "-i missing": (lambda folder: _argv(folder / "nowhere"), ("nowhere/images.xmd",)),
    "-i empty": (_with_images(""), ("images.xmd",)),
    "-i every row disabled": (
        _with_images(
            _images(
                [f"{_particle(i)} 1 -1" for i in range(N_PARTICLES)],
                ("image", "missingRegionNumber", "enabled"),
            )
        ),
        ("images.xmd", "no enabled images"),
    ),
    "-i row with an extra value": (
        _with_images(_images([*(f"{_particle(i)} 1" for i in range(3)), "p003.mrc 1 99"])),
        ("images.xmd", "line 8"),
    ),
    "-i without an image column": (
        _with_images(_star(("missingRegionNumber",), ["1"] * N_PARTICLES)),
        ("images.xmd", "image"),
    ),
    "-i region number not a number": (
        _with_images(_images(["p000.mrc 1", "p001.mrc one"])),
        ("images.xmd", "line 6", "missingRegionNumber"),
    ),
    "-i unterminated quote": (_with_images(_images(["p000.mrc 1", "'p001.mrc 1"])), ("images.xmd", "line 6")),
    "-i region number out of range": (
        _with_images(_images(["p000.mrc 1", "p001.mrc 3"])),
        ("images.xmd", "missingRegionNumber 3"),
    ),
    "-i region number zero": (_with_images(_images(["p000.mrc 0"])), ("images.xmd", "missingRegionNumber 0")),
    "-i without region numbers": (
        _with_images(_star(("image",), [_particle(i) for i in range(N_PARTICLES)])),
        ("images.xmd", "missingRegionNumber"),
    ),
    "-i headerless rows of different lengths": (
        _with_file("rows.txt", _text("p000.mrc 1\np001.mrc 1 10\n"), "-i", "{name}"),
        ("rows.txt", "line 2"),
    ),
    "-i naming a missing block": (
        lambda folder: _argv(folder, "-i", f"nosuch@{folder / 'images.xmd'}"),
        ("images.xmd", "nosuch"),
    ),
    "--doc missing": (_options("--doc", "nodoc.xmd"), ("nodoc.xmd",)),
    "--doc without a row for an image": (
        _with_file("short.doc", _text(_images(["p000.mrc 1"])), "--doc", "{name}"),
        ("short.doc", "p001.mrc"),
    ),
    "--doc angle not a number": (
        _with_file(
            "angles.xmd",
            _text(
                _star(_ANGLES, [f"{_particle(i)} 1 0 {'x' if i == 4 else 0} 0" for i in range(N_PARTICLES)])
            ),
            "--doc",
            "{name}",
        ),
        ("angles.xmd", "line 12", "angleTilt"),
    ),
    # missing-region files
    "--missing missing": (_options("--missing", "nowhere.xmd"), ("nowhere.xmd",)),
    "--missing empty": (_with_wedges(""), ("wedges.xmd",)),
    "--missing unknown type": (
        _with_wedges(_star(_REGION_LABELS, ["1 wedge_q -60 60"])),
        ("wedges.xmd", "line 7", "wedge_q"),
    ),
    "--missing angle not a number": (
        _with_wedges(_star(_REGION_LABELS, ["1 wedge_y -60 sixty"])),
        ("wedges.xmd", "line 7"),
    ),
    "--missing without a needed angle": (
        _with_wedges(_star(_REGION_LABELS[:3], ["1 wedge_y -60"])),
        ("wedges.xmd", "missingRegionThetaYF"),
    ),
    "--missing region numbered twice": (
        _with_wedges(_star(_REGION_LABELS, ["1 wedge_y -60 60", "1 wedge_y -50 50"])),
        ("wedges.xmd", "line 7"),
    ),
    # particle volumes
    "particle missing": (_with_particle(3, Path.unlink), ("p003.mrc",)),
    "particle not a volume": (_with_particle(4, _text("not a volume\n")), ("p004.mrc",)),
    "particle of another box": (_with_particle(5, _volume((12, 12, 12))), ("p005.mrc", "12x12x12")),
    "particle not a cube": (_with_particle(6, _volume((12, 16, 16))), ("p006.mrc",)),
    "particle truncated": (_with_particle(7, _truncated), ("p007.mrc", "truncated")),
    "particle empty file": (_with_particle(8, _text("")), ("p008.mrc",)),
    "particle a 2-D image": (_with_particle(9, _volume((1, 16, 16))), ("p009.mrc",)),
    # references and masks
    "--ref missing": (_options("--ref", "noref.mrc", "--nref", "0"), ("noref.mrc",)),
    "--ref not a volume": (_with_file("start.mrc", _text("no map\n"), *_REF), ("start.mrc",)),
    "--ref of another box": (_with_file("start.mrc", _volume((20, 20, 20)), *_REF), ("--ref", "start.mrc")),
    "--ref not a cube": (_with_file("start.mrc", _volume((16, 16, 12)), *_REF), ("--ref", "start.mrc")),
    "--ref truncated": (_with_file("start.mrc", _truncated, *_REF), ("start.mrc", "truncated")),
    "--ref table with every row disabled": (
        _with_file("refs.xmd", _text(_star(("image", "enabled"), ["p000.mrc -1"])), *_REF),
        ("refs.xmd",),
    ),
    "--ref table naming a missing map": (
        _with_file("refs.xmd", _text(_star(("image",), ["gone.mrc"])), *_REF),
        ("gone.mrc",),
    ),
    "--mask of another box": (_masked("mask.mrc", _volume((12, 12, 12), 1.0)), ("--mask", "mask.mrc")),
    "--mask values above 1": (_masked("mask.mrc", _volume((16, 16, 16), 2.0)), ("--mask", "mask.mrc")),
    "--mask missing": (_masked("nomask.mrc", lambda path: None), ("nomask.mrc",)),
    # the new refusals: outputs over inputs, locks, the output folder
    "--oroot over -i": (_images_over_output, ("--oroot", "r_img.xmd")),
    "--oroot over --doc": (
        _over_input("--doc", "r_it000001.doc", lambda path: shutil.copy(path.parent / "images.xmd", path)),
        ("--oroot", "r_it000001.doc"),
    ),
    "--oroot over --ref": (
        _over_input("--ref", "r_ref000001.mrc", _volume((16, 16, 16)), "--nref", "0"),
        ("--oroot", "r_ref000001.mrc"),
    ),
    "--oroot over --missing": (
        _over_input("--missing", "r_ref.xmd", lambda path: shutil.copy(path.parent / "wedges.xmd", path)),
        ("--oroot", "r_ref.xmd"),
    ),
    "--oroot over --mask": (_over_mask, ("--oroot", "r_it000000_ref000001.mrc")),
    "--oroot over --frac": (
        _over_input("--frac", "r.fsc", _text(_star(("ref", "weight"), ["1 1.0"]))),
        ("--oroot", "r.fsc"),
    ),
    "--oroot over a particle": (_particle_over_output, ("--oroot", "r_it000001_ref000001.mrc")),
    "lock of a run of this host": (
        _locked(_this_host),
        ("--oroot", f"pid {os.getpid()}", socket.gethostname()),
    ),
    "lock of a run of another host": (
        _locked(lambda: "host elsewhere\npid 4242\nstarted 2025-01-01T00:00:00+00:00\n"),
        ("--oroot", "pid 4242 on host elsewhere"),
    ),
    "lock naming no run": (_locked(lambda: ""), ("--oroot", "r.lock")),
    "--oroot under a file": (_oroot_under_a_file, ("--oroot", "images.xmd")),
}

#: Cases restarting from a copy of the previous run: (how to make it, what the error line names).
BAD_RESTARTS: dict[str, tuple[Callable[[Path, Path], list[str]], tuple[str, ...]]] = {
    "--restart missing": (lambda folder, previous: _argv(folder, "--restart", "nolog.xmd"), ("nolog.xmd",)),
    "--restart not a log": (
        lambda folder, previous: _argv(folder, "--restart", str(folder / "images.xmd")),
        ("images.xmd", "not an ml_tomo iteration log"),
    ),
    "--restart malformed": (
        _restart(lambda copy: _write(copy / "r_it000001_log.xmd", "data_\nloop_\n_pMax\n0.5 0.7\n")),
        ("r_it000001_log.xmd", "line 4"),
    ),
    "--restart past the last iteration": (_restart(None, "--iter", "0"), ("--restart",)),
    "--restart with another class count": (
        _restart(None, "--nref", "3", "--iter", "2"),
        ("--restart", "3 classes"),
    ),
}


def _check_refused(argv: list[str], expected: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit status 2, one line naming `expected`, and no file under the test's folder changed or added."""
    top = Path.cwd().parent
    before = _hashes(top)
    assert main(argv) == 2
    line = _error_line(capsys)
    for part in expected:
        assert part in line, (part, line)
    assert _hashes(top) == before


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_and_changes_nothing(
    data: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    make, expected = BAD[case]
    _check_refused(make(data), expected, capsys)


@pytest.mark.parametrize("case", BAD_RESTARTS)
def test_bad_restart_is_refused_and_changes_nothing(
    data: Path, previous_run: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    make, expected = BAD_RESTARTS[case]
    _check_refused(make(data, previous_run), expected, capsys)


# --------------------------------------------------------------------------- odd but valid inputs

Valid = Callable[[Path], tuple[list[str], Path]]


def _valid(*extra: str) -> Valid:
    """The tiny run with `extra` options last; its root is ``out/r``."""
    return lambda folder: (_argv(folder, *extra), folder.parent / "out" / "r")


def _moved(name: str, oroot: str) -> Valid:
    """The data folder moved to `name` and the outputs written to `oroot` (both beside it)."""

    def case(folder: Path) -> tuple[list[str], Path]:
        moved = folder.rename(folder.parent / name)
        root = folder.parent / oroot
        argv = _argv(moved)
        argv[argv.index("--oroot") + 1] = str(root)
        return argv, root

    return case


def _relative(folder: Path) -> tuple[list[str], Path]:
    """Relative paths from the working directory ``cwd/`` (the table's names relative to its folder)."""
    argv = ["-i", "../data/images.xmd", "--missing", "../data/wedges.xmd", "--oroot", "../out/r", *RUN]
    return argv, folder.parent / "out" / "r"


def _spelled(make_argv: Callable[[Path, Path], list[str]]) -> Valid:
    """Options spelled by `make_argv(data folder, root)`; the root is ``out/r``."""

    def case(folder: Path) -> tuple[list[str], Path]:
        root = folder.parent / "out" / "r"
        return make_argv(folder, root), root

    return case


def _single_dash(folder: Path, root: Path) -> list[str]:
    words = ["-i", str(folder / "images.xmd"), "-missing", str(folder / "wedges.xmd"), "-oroot", str(root)]
    return [*words, *(word.replace("--", "-") for word in RUN)]


def _equals(folder: Path, root: Path) -> list[str]:
    pairs = ["--nref=1", "--iter=1", "--dim=16", "--ang=30", "--escape=0", "--quiet"]
    return ["-i", str(folder / "images.xmd"), f"--missing={folder / 'wedges.xmd'}", f"--oroot={root}", *pairs]


def _short_oroot_in_new_folders(folder: Path) -> tuple[list[str], Path]:
    root = folder.parent / "out" / "a" / "b" / "r"
    argv = ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd"), "-o", str(root), *RUN]
    return argv, root


def _default_oroot(folder: Path) -> tuple[list[str], Path]:
    return ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd"), *RUN], Path("mltomo")


def _table(text: Callable[[list[str]], str], name: str = "images.xmd", *extra: str) -> Valid:
    """``-i`` a file `name` holding ``text(particle names)``."""

    def case(folder: Path) -> tuple[list[str], Path]:
        _write(folder / name, text([_particle(i) for i in range(N_PARTICLES)]))
        argv = _argv(folder, *extra)
        argv[argv.index("-i") + 1] = str(folder / name)
        return argv, folder.parent / "out" / "r"

    return case


def _with_extra_columns(names: list[str]) -> str:
    rows = [f"{name} 1 'a note' {i * 0.5} {i}" for i, name in enumerate(names)]
    return _star(("image", "missingRegionNumber", "comment", "zScore", "micrographId"), rows)


def _with_disabled_rows(names: list[str]) -> str:
    rows = [f"{name} 1 {-1 if i % 4 == 0 else 1}" for i, name in enumerate(names)]
    return _star(("image", "missingRegionNumber", "enabled"), [*rows, "gone.mrc 1 0"])


def _with_comments(names: list[str]) -> str:
    lines = _images([f"  {name}\t1  " for name in names]).splitlines()
    return "\n".join(["# a comment", "", *lines[:4], "# another", "", *lines[4:], ""]) + "\n"


def _selfile(folder: Path) -> tuple[list[str], Path]:
    """``-i`` an Xmipp 2 selfile (``name flag`` rows), without missing regions."""
    _write(folder / "images.sel", "".join(f"{_particle(i)} 1\n" for i in range(N_PARTICLES)))
    argv = ["-i", str(folder / "images.sel"), "--oroot", str(folder.parent / "out" / "r"), *RUN]
    return argv, folder.parent / "out" / "r"


def _block(folder: Path) -> tuple[list[str], Path]:
    """``-i images@two.xmd``: one block of a STAR file with two."""
    text = _images().replace("data_", "data_images")
    _write(folder / "two.xmd", f"data_other\nloop_\n_image\nnone.mrc\n\n{text}")
    argv = _argv(folder)
    argv[argv.index("-i") + 1] = f"images@{folder / 'two.xmd'}"
    return argv, folder.parent / "out" / "r"


def _legacy_doc(folder: Path) -> tuple[list[str], Path]:
    """``--doc`` an Xmipp 2 docfile (``; Headerinfo``, a ``; name`` line above each row)."""
    header = (
        " ; Headerinfo columns: rot (1) , tilt (2), psi (3), Xoff (4), Yoff (5), Zoff (6), Ref (7), Wedge (8)"
    )
    lines = [header]
    for i in range(N_PARTICLES):
        lines += [f" ; {_particle(i)}", f"    {i + 1} 8 {10.0 * i} 20.0 30.0 1.0 0.0 -1.0 1 1"]
    _write(folder / "images.doc", "\n".join(lines) + "\n")
    return _argv(folder, "--doc", str(folder / "images.doc")), folder.parent / "out" / "r"


def _quoted_name_with_a_space(folder: Path) -> tuple[list[str], Path]:
    os.replace(folder / _particle(0), folder / "p 000.mrc")
    rows = ["'p 000.mrc' 1", *(f"{_particle(i)} 1" for i in range(1, N_PARTICLES))]
    _write(folder / "images.xmd", _images(rows))
    return _argv(folder), folder.parent / "out" / "r"


def _absolute_names(folder: Path) -> tuple[list[str], Path]:
    _write(folder / "images.xmd", _images([f"{folder / _particle(i)} 1" for i in range(N_PARTICLES)]))
    return _argv(folder), folder.parent / "out" / "r"


def _reference_table(folder: Path) -> tuple[list[str], Path]:
    """``--ref`` a table in ``refs/`` naming a map relative to its own folder, with a weight."""
    (folder / "refs").mkdir()
    shutil.copy(folder / _particle(0), folder / "refs" / "start.mrc")
    _write(folder / "refs" / "refs.xmd", _star(("image", "weight"), ["start.mrc 1.0"]))
    return _argv(
        folder, "--nref", "0", "--ref", str(folder / "refs" / "refs.xmd")
    ), folder.parent / "out" / "r"


def _fractions_file(folder: Path) -> tuple[list[str], Path]:
    _write(folder / "fractions.xmd", _star(("ref", "weight"), ["1 0.4", "2 0.6"]))
    return _argv(folder, "--nref", "2", "--frac", str(folder / "fractions.xmd")), folder.parent / "out" / "r"


def _reformatted(name: Callable[[int], str], write: Callable[[Path, np.ndarray], object]) -> Valid:
    """Each particle ``i`` rewritten by `write` as ``name(i)``, and ``images.xmd`` naming them."""

    def case(folder: Path) -> tuple[list[str], Path]:
        names = []
        for i in range(N_PARTICLES):
            volume = read_volume(folder / _particle(i))
            (folder / _particle(i)).unlink()
            names.append(name(i))
            write(folder / names[-1], volume)
        _write(folder / "images.xmd", _images([f"{name} 1" for name in names]))
        return _argv(folder), folder.parent / "out" / "r"

    return case


def _mrc(dtype: str, scale: float = 1.0, offset: float = 0.0, extended: bool = False) -> Callable[..., None]:
    """An MRC writer of voxels ``volume * scale + offset`` in `dtype` (``>f4``: big-endian), with an
    extended header of 64 float32 numbers if `extended`."""

    def write(path: Path, volume: np.ndarray) -> None:
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(
                np.round(volume * scale + offset).astype(dtype) if scale != 1 else volume.astype(dtype)
            )
            if extended:
                mrc.set_extended_header(np.arange(64, dtype=np.float32))
                mrc.header.exttyp = b"MRCO"
            mrc.voxel_size = 4.0

    return write


def _em_float64(path: Path, volume: np.ndarray) -> None:
    """An EM file of float64 voxels (data type code 9, PC byte order)."""
    nz, ny, nx = volume.shape
    head = bytes([6, 0, 0, 9]) + np.array([nx, ny, nz], dtype="<i4").tobytes()
    path.write_bytes(head.ljust(512, b"\0") + volume.astype("<f8").tobytes())


def _mixed(i: int) -> str:
    return (_particle(i), f"p{i:03d}.spi", f"p{i:03d}.em", f"p{i:03d}.map")[i % 4]


def _volume_stack(folder: Path) -> tuple[list[str], Path]:
    """The particles as the volumes of one MRC stack, named ``N@stack.mrc``."""
    volumes = [read_volume(folder / _particle(i)) for i in range(N_PARTICLES)]
    with mrcfile.new(folder / "stack.mrc") as mrc:
        mrc.set_data(np.stack(volumes))
        mrc.voxel_size = 4.0
    _write(folder / "images.xmd", _images([f"{i}@stack.mrc 1" for i in range(1, N_PARTICLES + 1)]))
    return _argv(folder), folder.parent / "out" / "r"


def _write_as_is(path: Path, volume: np.ndarray) -> None:
    write_volume(path, volume, pixel_size_A=4.0)


#: Case -> how to make it (its arguments and output root).
VALID: dict[str, Valid] = {
    "paths with spaces": _moved("my data", "my out/run 1"),
    "non-ASCII paths": _moved("données ß", "résultats/α"),
    "relative paths from another working directory": _relative,
    "single-dash long options": _spelled(_single_dash),
    "--opt=value forms": _spelled(_equals),
    "-o, in folders that do not exist yet": _short_oroot_in_new_folders,
    "the default --oroot in the working directory": _default_oroot,
    "extra columns": _table(_with_extra_columns),
    "disabled rows, one naming a missing file": _table(_with_disabled_rows),
    "comments, blank lines and tabs": _table(_with_comments),
    "headerless rows": _table(lambda names: "".join(f"{name} 1 0 0 0\n" for name in names), "rows.txt"),
    "an Xmipp 2 selfile, no --missing": _selfile,
    "an Xmipp 2 docfile as --doc": _legacy_doc,
    "one block of a STAR file, block@file": _block,
    "a quoted name with a space": _quoted_name_with_a_space,
    "absolute names": _absolute_names,
    "--ref table relative to its folder": _reference_table,
    "--frac from a file": _fractions_file,
    "MRC with an extended header": _reformatted(_particle, _mrc("f4", extended=True)),
    "big-endian MRC": _reformatted(_particle, _mrc(">f4")),
    "MRC mode 0 (int8)": _reformatted(_particle, _mrc("i1", scale=20.0)),
    "MRC mode 1 (int16)": _reformatted(_particle, _mrc("i2", scale=1000.0)),
    "MRC mode 6 (uint16)": _reformatted(_particle, _mrc("u2", scale=1000.0, offset=30000.0)),
    "MRC mode 12 (float16)": _reformatted(_particle, _mrc("f2")),
    "Spider particles": _reformatted(lambda i: f"p{i:03d}.spi", _write_as_is),
    "EM particles": _reformatted(lambda i: f"p{i:03d}.em", _write_as_is),
    "EM particles of float64": _reformatted(lambda i: f"p{i:03d}.em", _em_float64),
    "MRC particles named .dat (told from the header)": _reformatted(lambda i: f"p{i:03d}.dat", _mrc("f4")),
    "MRC, Spider and EM mixed": _reformatted(_mixed, _write_as_is),
    "one MRC volume stack, N@file": _volume_stack,
}


@pytest.mark.parametrize("case", VALID)
def test_odd_but_valid_input_runs(data: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    argv, root = VALID[case](data)
    inputs = _hashes(Path.cwd().parent)
    assert main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr() == ("", "")
    table = read_star(f"{root}_img.xmd")
    assert len(table) in (N_PARTICLES, N_PARTICLES * 3 // 4)  # the disabled rows are left out
    assert not Path(f"{root}.lock").exists()
    after = _hashes(Path.cwd().parent)
    assert {name: after.get(name) for name in inputs} == inputs
