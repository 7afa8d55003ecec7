"""A run claims its output root before any work, on the path the command and the widget share: what it
writes is named and estimated, a locked root is refused, the lock goes however the run ends, and a failed
write names its file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_mltomo.io.volumes as volumes_module
from conftest import TINY_OPTIONS
from napari_mltomo.argv import option_values
from napari_mltomo.cli import main
from napari_mltomo.core.refine import MLState
from napari_mltomo.inputs import RunInputs, read_inputs
from napari_mltomo.io import MetaData, write_star
from napari_mltomo.io.outputs import LockHolder, OutputError, RunLock, check_not_inputs, lock_file
from napari_mltomo.io.run import RunWriter
from napari_mltomo.output_guard import read_files, run_outputs
from napari_mltomo.runner import RunEnd, refine_events

QUICK = ("--iter", "1", "--quiet")


def _argv(tiny_data: Path, root: Path, *extra: str) -> list[str]:
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    return [*inputs, "--oroot", str(root), *TINY_OPTIONS, *extra]


def _inputs(tiny_data: Path, root: Path, *extra: str) -> RunInputs:
    return read_inputs(option_values(_argv(tiny_data, root, *extra)), "ml_tomo test")


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ml_tomo: error: ") and "Traceback" not in err, err
    return err.strip()


def test_every_file_a_run_writes_is_named_and_the_estimate_covers_them(
    tiny_data: Path, tmp_path: Path
) -> None:
    inputs = _inputs(tiny_data, tmp_path / "r", "--reg0", "2", "--reg_steps", "1", *QUICK)
    for event in refine_events(inputs):
        if isinstance(event, MLState):
            assert lock_file(tmp_path / "r").is_file()  # held while the run goes
    assert isinstance(event, RunEnd) and event.complete and not lock_file(tmp_path / "r").exists()
    written = {path.name: path.stat().st_size for path in tmp_path.iterdir()}
    outputs = run_outputs(inputs)
    assert outputs.iterations == range(0, 2)
    assert all(outputs.replaces(name) for name in written)
    assert {name for name in written if "oriref" in name} and {name for name in written if "wedge" in name}
    assert sum(written.values()) <= outputs.estimated_bytes() <= 2 * sum(written.values())


def test_a_restart_writes_only_the_iterations_after_its_log(tiny_data: Path, tmp_path: Path) -> None:
    """So a restart on its own root replaces none of the files it restores from."""
    log = write_star(tmp_path / "r_it000001_log.xmd", MetaData({"iterationNumber": [1]}))
    restart = _inputs(tiny_data, tmp_path / "r", "--iter", "3", "--restart", str(log))
    assert run_outputs(restart).iterations == range(2, 4)
    assert str(log) in read_files(restart)
    check_not_inputs(run_outputs(restart), read_files(restart))


def test_the_files_read_are_the_options_the_particles_and_the_references(
    tiny_data: Path, tmp_path: Path
) -> None:
    shutil.copy(tiny_data / "p000.mrc", tmp_path / "start.mrc")
    inputs = _inputs(tiny_data, tmp_path / "r", "--nref", "0", "--ref", str(tmp_path / "start.mrc"))
    names = read_files(inputs)
    assert names[:3] == [
        str(tiny_data / "images.xmd"),
        str(tiny_data / "wedges.xmd"),
        str(tmp_path / "start.mrc"),
    ]
    assert names[3:-1] == [str(tiny_data / f"p{i:03d}.mrc") for i in range(12)] and names[-1] == names[2]


def test_the_shared_path_refuses_a_locked_root(tiny_data: Path, tmp_path: Path) -> None:
    """The Refinement widget runs ``refine_events`` too: its runs are refused the same way."""
    other = RunLock.acquire(tmp_path / "r")
    with pytest.raises(OutputError, match=f"another run is writing it .pid {os.getpid()} on host"):
        next(refine_events(_inputs(tiny_data, tmp_path / "r")))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.lock"]
    assert LockHolder.parse(other.path.read_text()) == other.holder
    other.release()


def test_the_lock_goes_when_a_run_is_stopped(tiny_data: Path, tmp_path: Path) -> None:
    events = refine_events(_inputs(tiny_data, tmp_path / "r"))
    next(events)
    assert lock_file(tmp_path / "r").is_file()
    events.close()
    assert not lock_file(tmp_path / "r").exists()


def test_the_lock_goes_when_a_run_fails_or_is_interrupted(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(RunWriter, "write_iteration", lambda *args: _raise(KeyboardInterrupt()))
    assert main(_argv(tiny_data, tmp_path / "r", *QUICK)) == 130
    assert not lock_file(tmp_path / "r").exists()
    monkeypatch.setattr(RunWriter, "write_iteration", lambda *args: _raise(OSError(5, "I/O error", "x.mrc")))
    assert main(_argv(tiny_data, tmp_path / "r", *QUICK)) == 1
    assert "x.mrc: I/O error" in capsys.readouterr().err.splitlines()[-1]
    assert not lock_file(tmp_path / "r").exists()


def _raise(error: BaseException) -> None:
    raise error


def test_a_stale_lock_is_taken_over_with_one_warning_line(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file(tmp_path / "r").write_text(LockHolder(socket.gethostname(), dead.pid, "yesterday").text())
    assert main(_argv(tiny_data, tmp_path / "r", *QUICK)) == 0
    assert capsys.readouterr().err == (
        f"ml_tomo: warning: --oroot {tmp_path}/r: took over {tmp_path}/r.lock of pid {dead.pid} on host "
        f"{socket.gethostname()}, started yesterday, which no longer runs\n"
    )
    assert not lock_file(tmp_path / "r").exists() and Path(f"{tmp_path}/r_img.xmd").is_file()


def test_too_little_space_is_refused_before_any_work(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10_000))
    assert main(_argv(tiny_data, tmp_path / "out" / "r")) == 2
    line = _error_line(capsys)
    assert line.startswith(f"ml_tomo: error: --oroot {tmp_path}/out/r: the run writes about ")
    assert line.endswith(f"but {tmp_path}/out has 10.0 kB free; free some space or give another --oroot")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("fails", ["map", "table"])
def test_a_failed_write_names_the_file(
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fails: str,
) -> None:
    """A folder made read-only after the check (a map fails), a disk that fills up (a table fails): the line
    names the file being written, not its temporary name."""
    if fails == "map":

        def refuse(target: Path, volume: np.ndarray, pixel_size_A: float) -> None:
            raise PermissionError(13, "Permission denied", str(target))

        monkeypatch.setattr(volumes_module, "write_mrc", refuse)
        expected = f"{tmp_path}/r_it000000_ref000001.mrc: Permission denied"
    else:
        write_text = Path.write_text

        def fill_up(path: Path, *args: object, **kwargs: object) -> int:
            if path.name.startswith(".r_it"):
                path.write_bytes(b"partial")
                raise OSError(28, "No space left on device")
            return write_text(path, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", fill_up)
        expected = f"{tmp_path}/r_it000000_ref.xmd: No space left on device"
    assert main(_argv(tiny_data, tmp_path / "r", *QUICK)) == 1
    assert _error_line(capsys) == f"ml_tomo: error: {expected}"
    assert not [path for path in tmp_path.iterdir() if ".tmp" in path.name or path.suffix == ".lock"]
