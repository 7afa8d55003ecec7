"""Runs killed (SIGKILL) or stopped (SIGTERM, SIGINT, SIGHUP) at any moment: every file they leave parses, and
``--restart`` from the newest log (before the first log: the command again) ends with files identical, to the
last bit, to those of a run that was never stopped (docs/reliability.md).

The moments are the points of :func:`napari_mltomo.io._atomic.fault_point` (before a written file takes its
name, after each chunk of particles): ``NAPARI_MLTOMO_PAUSE`` makes ``ml_tomo`` pause there, so that each kill
falls exactly where it was drawn and the test is deterministic. Each stopped run is ``ml_tomo``'s ``main`` in
a process of its own, forked from a server that imported the package once (``forkserver``: no process spends
seconds on imports); the restarts run in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import shlex
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import napari_mltomo.cli as cli
import napari_mltomo.io._atomic as atomic
import napari_mltomo.runner as runner
from napari_mltomo.cli import main
from napari_mltomo.io import read_star_blocks
from napari_mltomo.io.run import RunWriter
from napari_mltomo.io.run_paths import RunPaths

#: The tiny data (internal box 8) at 2 iterations after a one-step start-up; iteration 1 checks class 2
#: for traps (with this seed class 2 has the 10 particles a check needs).
OPTIONS = (
    "--nref", "2", "--ang", "40", "--iter", "2", "--dim", "8", "--escape", "1", "--seed", "6",
    "--chunk", "4", "--quiet",
)  # fmt: skip
KILLS = 10
#: Before the first final copy takes its name: after the last log, before any final file.
FIRST_FINAL = "rename run_ref000001.mrc"
_LOG_RENAME = re.compile(r"rename run_it(\d{6})_log\.xmd")
#: How long a run stopped by a signal pauses (the signal comes meanwhile).
SIGNAL_PAUSE_S = 2.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PROCESSES = multiprocessing.get_context("forkserver")
_PROCESSES.set_forkserver_preload(["napari_mltomo.cli"])


def _argv(data: Path, root: Path) -> list[str]:
    """The command of every run, writing to `root`."""
    inputs = ["-i", str(data / "images.xmd"), "--missing", str(data / "wedges.xmd")]
    return [*inputs, "--oroot", str(root), *OPTIONS]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> tuple[Path, list[str]]:
    """A run never stopped: its root, and the points it passed, in order."""
    root = tmp_path_factory.mktemp("uninterrupted") / "run"
    points: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for module in (atomic, runner):
            patch.setattr(module, "fault_point", points.append)
        assert main(_argv(tiny_data, root)) == 0
    return root, points


def _phase(point: str) -> str:
    """The phase of a run that `point` falls in."""
    if point == FIRST_FINAL:
        return "between the last log and the final copies"
    if re.fullmatch(r"rename run_it000000\S+", point):
        return "starting model files"
    if _LOG_RENAME.fullmatch(point):
        return "iteration log"
    if point.startswith("rename run_it"):
        return "iteration files"
    if point.startswith("rename"):
        return "final copies"
    found = re.fullmatch(r"iteration \d+ chunk (\d+)/(\d+)", point)
    if found:
        return "M-step" if found[1] == found[2] else "E-step"  # after the last chunk comes the M-step
    return "trap check" if point.startswith("trap check") else "start-up"


def _kill_points(points: list[str]) -> list[str]:
    """One point drawn (seeded) in each phase of the run, the others drawn among the rest, KILLS in all."""
    rng = random.Random(0)
    phases: dict[str, list[str]] = {}
    for point in points:
        phases.setdefault(_phase(point), []).append(point)
    drawn = [rng.choice(group) for group in phases.values()]
    return drawn + rng.sample([point for point in points if point not in drawn], KILLS - len(drawn))


def _ml_tomo(argv: list[str], pause: str, stderr: Path) -> None:
    """The process of :func:`_paused`: ``ml_tomo`` pausing at a point, its stderr in a file."""
    os.environ[atomic.PAUSE_VARIABLE] = pause
    os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), sys.stderr.fileno())
    sys.exit(main(argv))


def _paused(argv: list[str], point: str, stderr: Path, seconds: float = 600.0) -> BaseProcess:
    """``ml_tomo`` in a process of its own (stderr in the file `stderr`), once it has paused at `point`
    for `seconds`."""
    process = _PROCESSES.Process(target=_ml_tomo, args=(argv, f"{point}@{seconds}", stderr))
    process.start()
    while process.is_alive() and not (stderr.is_file() and stderr.read_text()):
        time.sleep(0.02)
    said = stderr.read_text() if stderr.is_file() else ""
    if said != f"ml_tomo: paused at {point}\n":
        process.kill()
        pytest.fail(f"ml_tomo did not pause at {point!r}: {said}")
    return process


def _assert_outputs_parse(folder: Path) -> None:
    """Every file in `folder` but the temporary ones (``.*``) and the run lock a kill leaves behind (the
    restart takes it over) reads with the package's readers or mrcfile."""
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.name.startswith(".") or path.suffix == ".lock":
            continue
        if path.suffix == ".mrc":
            with mrcfile.open(path, permissive=False) as volume:
                assert volume.data.shape == (16, 16, 16), path.name
        elif path.suffix == ".npz":
            with np.load(path) as model:
                assert model["references"].shape == (2, 8, 8, 8), path.name
        else:
            assert read_star_blocks(path), path.name


def _contents(folder: Path) -> dict[str, object]:
    """File name -> voxels (maps), arrays (models) or block -> label -> values (tables; file names by their
    last part, as the runs are in different folders)."""
    contents: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".mrc":
            with mrcfile.open(path) as volume:
                contents[path.name] = np.array(volume.data)
        elif path.suffix == ".npz":
            with np.load(path) as model:
                contents[path.name] = dict(model)
        else:
            contents[path.name] = {
                block: {label: _comparable(table[label]) for label in table.labels}
                for block, table in read_star_blocks(path).items()
            }
    return contents


def _comparable(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "OU":
        return np.array([os.path.basename(str(value)) for value in values])
    return values


def _assert_same_run(root: Path, reference: Path) -> None:
    """The folders of the two runs hold the same files with the same values, to the last bit."""
    restarted, uninterrupted = _contents(root.parent), _contents(reference.parent)
    assert list(restarted) == list(uninterrupted)
    for name, expected in uninterrupted.items():
        np.testing.assert_equal(restarted[name], expected, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("draw", range(KILLS))
def test_a_killed_run_restarts_to_the_same_result(
    draw: int, uninterrupted: tuple[Path, list[str]], tiny_data: Path, tmp_path: Path
) -> None:
    reference, points = uninterrupted
    point = _kill_points(points)[draw]
    root = tmp_path / "killed" / "run"
    process = _paused(_argv(tiny_data, root), point, tmp_path / "stderr")
    process.kill()
    process.join()
    assert process.exitcode == -signal.SIGKILL
    _assert_outputs_parse(root.parent)
    before = points[: points.index(point)]
    logged = RunPaths(root).logged_iterations()
    assert logged == tuple(int(found[1]) for found in map(_LOG_RENAME.fullmatch, before) if found), point
    if point.startswith("rename "):  # killed before the file took its name: its temporary file is there
        left = [atomic.temporary_target(path) for path in root.parent.iterdir()]
        assert root.parent / point.removeprefix("rename ") in left
    argv = ["--restart", str(RunPaths(root).log(logged[-1]))] if logged else _argv(tiny_data, root)
    assert main(argv) == 0, point
    _assert_same_run(root, reference)


def test_the_kills_fall_in_every_phase(uninterrupted: tuple[Path, list[str]]) -> None:
    _, points = uninterrupted
    drawn = _kill_points(points)
    assert len(set(drawn)) == KILLS
    assert {_phase(point) for point in drawn} == {
        "start-up", "starting model files", "E-step", "M-step", "trap check", "iteration files",
        "iteration log", "between the last log and the final copies", "final copies",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "point", "complete"),
    [
        ("SIGTERM", "iteration 1 chunk 2/3", "the starting model (iteration 0)"),
        ("SIGINT", "iteration 2 chunk 2/3", "iteration 1 of 2"),
    ],
)
def test_a_stopped_run_says_how_to_continue(
    name: str,
    point: str,
    complete: str,
    uninterrupted: tuple[Path, list[str]],
    tiny_data: Path,
    tmp_path: Path,
) -> None:
    """The run stops after the chunk, says what is complete and the command that continues it, which does."""
    root, stderr = tmp_path / "stopped" / "run", tmp_path / "stderr"
    process = _paused(_argv(tiny_data, root), point, stderr, SIGNAL_PAUSE_S)
    number = getattr(signal, name)
    os.kill(process.pid, number)
    process.join()
    assert process.exitcode == 128 + number
    _, line = stderr.read_text().splitlines()  # the pause, then the one line of the stop
    log = RunPaths(root).log(RunPaths(root).logged_iterations()[-1])
    command = shlex.join(["ml_tomo", "--restart", str(log)])
    assert line == f"ml_tomo: stopped by {name}; {complete} is complete; continue with: {command}"
    assert main(shlex.split(command)[1:]) == 0
    _assert_same_run(root, uninterrupted[0])


@pytest.mark.slow
def test_sighup_before_the_first_restart_point(tiny_data: Path, tmp_path: Path) -> None:
    root, stderr = tmp_path / "stopped" / "run", tmp_path / "stderr"
    process = _paused(_argv(tiny_data, root), "start-up step 1 chunk 1/3", stderr, SIGNAL_PAUSE_S)
    os.kill(process.pid, signal.SIGHUP)
    process.join()
    assert process.exitcode == 129
    line = stderr.read_text().splitlines()[-1]
    assert line == "ml_tomo: stopped by SIGHUP; nothing is complete yet; run the command again"
    assert not RunPaths(root).logged_iterations()


def test_the_handlers_are_set_around_a_run_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set by ``main`` for the run and restored after it; a signal the process ignores (``nohup``) stays
    ignored."""
    during: dict[int, object] = {}
    monkeypatch.setattr(cli, "parse_command", lambda argv: None)
    monkeypatch.setattr(
        cli, "run", lambda inputs, stop: during.update({n: signal.getsignal(n) for n in _SIGNALS})
    )
    ignored = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        before = {number: signal.getsignal(number) for number in _SIGNALS}
        assert main(["-i", "images.xmd"]) == 0
        assert {number: signal.getsignal(number) for number in _SIGNALS} == before
    finally:
        signal.signal(signal.SIGHUP, ignored)
    assert during[signal.SIGHUP] is signal.SIG_IGN
    assert during[signal.SIGINT] is during[signal.SIGTERM]
    assert callable(during[signal.SIGTERM]) and during[signal.SIGINT] is not signal.default_int_handler


def test_sigterm_stops_a_run_after_the_chunk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_data: Path, tmp_path: Path
) -> None:
    """A SIGTERM to this process as the starting model is written: the run stops in iteration 1."""
    write_iteration = RunWriter.write_iteration

    def written_then_terminated(writer: RunWriter, state: object) -> list[Path]:
        files = write_iteration(writer, state)
        os.kill(os.getpid(), signal.SIGTERM)
        return files

    monkeypatch.setattr(RunWriter, "write_iteration", written_then_terminated)
    root = tmp_path / "run"
    assert main(_argv(tiny_data, root)) == 143
    command = shlex.join(["ml_tomo", "--restart", f"{root}_it000000_log.xmd"])
    expected = (
        f"ml_tomo: stopped by SIGTERM; the starting model (iteration 0) is complete; continue with: {command}"
    )
    assert capsys.readouterr().err.splitlines() == [expected]
    assert RunPaths(root).logged_iterations() == (0,)
