"""Shared pytest configuration and fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from napari_mltomo.io import read_volume


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse to start a ``gui`` test without an X display.

    pytest-xvfb starts Xvfb and sets ``DISPLAY`` when Xvfb is installed. Without a display Qt aborts
    the whole pytest process, so a ``gui`` test is skipped instead on a developer machine, and
    fails cleanly on CI (``CI`` set), where a missing Xvfb is a broken set-up, not a reason to skip.
    This hook runs before any fixture, so no ``QApplication`` has been created yet.
    """
    if item.get_closest_marker("gui") is None or os.environ.get("DISPLAY"):
        return
    message = "no X display for a gui test: install xvfb (see .ci/run) so pytest-xvfb can start it"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _folder_contents(folder: Path) -> dict[str, object]:
    """File name -> voxels (MRC, whose header holds a time stamp) or bytes (anything else)."""
    return {
        path.name: read_volume(path) if path.suffix == ".mrc" else path.read_bytes()
        for path in folder.iterdir()
        if path.is_file()
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, object]]:
    """A function giving a folder's files, to check that a failed write changed nothing."""
    return _folder_contents
