"""The Refinement widget's runs claim their output root as the command's do: a locked root is refused."""

from __future__ import annotations

import os

import pytest

from conftest import TINY_OPTIONS
from napari_mltomo.argv import option_values
from napari_mltomo.io.outputs import LockHolder, RunLock, lock_file

pytestmark = pytest.mark.gui


def test_a_locked_root_fails_the_widgets_run_and_keeps_the_lock(
    make_napari_viewer, qtbot, tiny_data, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[str] = []
    monkeypatch.setattr("napari_mltomo._widgets.refinement.show_error", shown.append)
    _, widget = make_napari_viewer().window.add_plugin_dock_widget("napari-mltomo", "Refinement")
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    values = option_values([*inputs, "--oroot", str(tmp_path / "r"), *TINY_OPTIONS])
    values.pop("quiet")
    widget.set_values(values)
    other = RunLock.acquire(tmp_path / "r")
    assert widget.start() is not None
    qtbot.waitUntil(lambda: widget.worker is None and bool(widget.outcome), timeout=60_000)
    assert len(shown) == 1 and shown[0].startswith(f"--oroot {tmp_path / 'r'}: another run is writing it")
    assert f"pid {os.getpid()}" in shown[0] and widget.status.text() == f"failed: {shown[0]}"
    assert [path.name for path in tmp_path.iterdir()] == ["r.lock"]
    assert LockHolder.parse(lock_file(tmp_path / "r").read_text()) == other.holder
    other.release()
