"""The output root's guards: what a run writes and its size, outputs over inputs, the folder, the lock."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import napari_mltomo.io.outputs as outputs_module
from napari_mltomo.io.outputs import (
    LockHolder,
    OutputError,
    OutputWarning,
    RunLock,
    RunOutputs,
    check_not_inputs,
    check_output_folder,
    lock_file,
    size_text,
)


def _outputs(root: Path, iterations: range = range(0, 3), n_classes: int = 2) -> RunOutputs:
    return RunOutputs(
        root=root, iterations=iterations, n_classes=n_classes, box_size=16, n_particles=12, row_bytes=300,
        regularised=True, coverage=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- what a run writes


def test_estimate_counts_maps_tables_and_final_copies(tmp_path: Path) -> None:
    outputs = _outputs(tmp_path / "r", range(0, 25), n_classes=3)
    outputs = RunOutputs(**{**vars(outputs), "box_size": 200, "n_particles": 10_000})
    maps = 3 * 3 * (1024 + 4 * 200**3)  # references, oriref and wedge maps
    per_iteration = maps + 8 * 3 * 200**3 + 10_000 * 300  # the maps, the exact model, a table
    assert 25 * per_iteration < outputs.estimated_bytes() < 26 * per_iteration
    assert outputs.needs_text() == (
        f"about {size_text(outputs.estimated_bytes())} (25 iteration(s) of 3 class(es) at 200x200x200 "
        "voxels, 10000 particles)"
    )


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [(512, "512 B"), (1500, "1.5 kB"), (2.5e6, "2.5 MB"), (7.25e9, "7.2 GB"), (3e15, "3000.0 TB")],
)
def test_size_text(n_bytes: float, text: str) -> None:
    assert size_text(n_bytes) == text


# --------------------------------------------------------------------------- outputs over inputs


@pytest.mark.parametrize(
    "name",
    ["r_img.xmd", "r_it000002.doc", "r_it000000_ref000001.mrc", "r_it000001_wedge000002.mrc", "r.fsc",
     "r_it000002_log.xmd", "r_ref000002.mrc", "r.lock", "r_it000001_oriref000001.mrc",
     "r_it000002_any_other_file.txt"],
)  # fmt: skip
def test_an_input_named_as_an_output_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(
        OutputError, match=rf"^--oroot {tmp_path / 'r'}: its output .* would replace .*{name}"
    ):
        check_not_inputs(_outputs(tmp_path / "r"), [tmp_path / "data.xmd", tmp_path / name])


@pytest.mark.parametrize("prefix", ["3@", "classes@"])
def test_the_file_of_a_stack_image_or_a_block_is_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    with pytest.raises(OutputError, match=rf"its output r_ref\.xmd would replace {prefix}{tmp_path}"):
        check_not_inputs(_outputs(tmp_path / "r"), [f"{prefix}{tmp_path}/r_ref.xmd"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=rf"would replace {prefix}r_ref\.xmd"):
        check_not_inputs(_outputs(Path("r")), [f"{prefix}r_ref.xmd"])


@pytest.mark.parametrize(
    "name",
    ["r_it000003.doc", "r_ref000003.mrc", "r_ref000000.mrc", "rr_img.xmd", "r_img.xmd.bak", "r_it1.doc"],
)
def test_names_the_run_does_not_write_pass(tmp_path: Path, name: str) -> None:
    check_not_inputs(_outputs(tmp_path / "r"), [tmp_path / name, tmp_path / "other" / "r_img.xmd"])


def test_paths_are_compared_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    outputs = _outputs(Path("r"))
    for spelling in ("r_img.xmd", "./r_img.xmd", "../run/r_img.xmd", f"{tmp_path}/link/r_img.xmd"):
        with pytest.raises(OutputError, match="would replace"):
            check_not_inputs(outputs, [spelling])
    with pytest.raises(OutputError, match="would replace"):
        check_not_inputs(_outputs(tmp_path / "link" / "x" / ".." / "r"), [tmp_path / "run" / "r_img.xmd"])


# --------------------------------------------------------------------------- the folder


def test_a_missing_folder_is_made(tmp_path: Path) -> None:
    check_output_folder(_outputs(tmp_path / "a" / "b" / "r"))
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())  # the probe is gone


def test_a_file_in_the_way_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a file")
    with pytest.raises(
        OutputError, match=rf"^--oroot {tmp_path}/a/b/r: cannot make the folder {tmp_path}/a/b"
    ):
        check_output_folder(_outputs(tmp_path / "a" / "b" / "r"))


def test_a_folder_that_cannot_be_written_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path, exist_ok: bool = True) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "touch", refuse)
    with pytest.raises(
        OutputError, match=rf"^--oroot {tmp_path}/r: cannot write in {tmp_path}: Permission denied$"
    ):
        check_output_folder(_outputs(tmp_path / "r"))


def test_too_little_free_space_is_refused_with_the_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = _outputs(tmp_path / "r")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=outputs.estimated_bytes() - 1))
    with pytest.raises(OutputError) as refused:
        check_output_folder(outputs)
    estimate, free = size_text(outputs.estimated_bytes()), size_text(outputs.estimated_bytes() - 1)
    assert str(refused.value) == (
        f"--oroot {tmp_path}/r: the run writes about {estimate} (3 iteration(s) of 2 class(es) at 16x16x16 "
        f"voxels, 12 particles) but {tmp_path} has {free} free; free some space or give another --oroot"
    )
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=outputs.estimated_bytes()))
    check_output_folder(outputs)


# --------------------------------------------------------------------------- the lock


def test_the_lock_names_this_run_and_goes_on_release(tmp_path: Path) -> None:
    lock = RunLock.acquire(tmp_path / "r")
    assert lock.path == lock_file(tmp_path / "r") == tmp_path / "r.lock"
    holder = LockHolder.parse(lock.path.read_text())
    assert holder == lock.holder and (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
    lock.release()
    assert not lock.path.exists()
    lock.release()  # twice is harmless


def test_a_second_run_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = RunLock.acquire(tmp_path / "r")
    with pytest.raises(OutputError) as refused:
        RunLock.acquire(tmp_path / "r")
    assert str(refused.value) == (
        f"--oroot {tmp_path}/r: another run is writing it (pid {os.getpid()} on host {socket.gethostname()}, "
        f"started {first.holder.started}); wait for it to end or give another --oroot (remove "
        f"{tmp_path}/r.lock if that run is gone)"
    )
    assert LockHolder.parse(first.path.read_text()) == first.holder
    RunLock.acquire(tmp_path / "other").release()  # another root of the same folder is free


def test_a_lock_of_another_host_is_respected(tmp_path: Path) -> None:
    text = "host elsewhere\npid 1\nstarted 2025-01-01T00:00:00+00:00\n"
    lock_file(tmp_path / "r").write_text(text)
    with pytest.raises(
        OutputError, match=r"another run is writing it \(pid 1 on host elsewhere, started 2025"
    ):
        RunLock.acquire(tmp_path / "r")
    assert lock_file(tmp_path / "r").read_text() == text


@pytest.mark.parametrize("text", ["", "pid twelve\n", "random words\n"])
def test_a_lock_naming_no_run_is_respected(tmp_path: Path, text: str) -> None:
    lock_file(tmp_path / "r").write_text(text)
    with pytest.raises(OutputError, match=r"r\.lock exists but names no run; remove it if no run is writing"):
        RunLock.acquire(tmp_path / "r")


def test_a_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = LockHolder(socket.gethostname(), dead.pid, "2025-01-01T00:00:00+00:00")
    lock_file(tmp_path / "r").write_text(stale.text())
    with pytest.warns(
        OutputWarning, match=rf"took over {tmp_path}/r\.lock of pid {dead.pid} on host .*no longer"
    ):
        lock = RunLock.acquire(tmp_path / "r")
    assert LockHolder.parse(lock.path.read_text()) == lock.holder
    lock.release()


def test_release_leaves_a_lock_taken_by_another_run(tmp_path: Path) -> None:
    lock = RunLock.acquire(tmp_path / "r")
    lock.path.write_text(LockHolder("elsewhere", 1, "now").text())
    lock.release()
    assert lock.path.exists()


def test_a_lock_cannot_be_made_in_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"cannot create .*nowhere/r\.lock: No such file or directory"):
        RunLock.acquire(tmp_path / "nowhere" / "r")


def test_a_killed_run_leaves_a_stale_lock_that_the_next_takes_over(tmp_path: Path) -> None:
    """SIGKILL runs no clean-up: the lock stays, names a process that is gone, and is taken over."""
    code = (
        "import sys, time\nfrom napari_mltomo.io.outputs import RunLock\n"
        f"RunLock.acquire({str(tmp_path / 'r')!r})\nprint('locked', flush=True)\ntime.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputError, match=f"pid {holder.pid} on host"):
            RunLock.acquire(tmp_path / "r")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert LockHolder.parse(lock_file(tmp_path / "r").read_text()).pid == holder.pid
    with pytest.warns(OutputWarning, match=f"pid {holder.pid}"):
        RunLock.acquire(tmp_path / "r").release()


def test_gone_asks_the_process_table_only_on_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr(outputs_module.psutil, "pid_exists", lambda pid: asked.append(pid) or False)
    assert not LockHolder("elsewhere", 5, "t").gone() and asked == []
    assert LockHolder(socket.gethostname(), 5, "t").gone() and asked == [5]
