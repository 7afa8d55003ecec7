"""Shared pytest configuration and fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.io import MetaData, read_volume, write_missing_regions, write_star, write_volume

#: The tiny data set of the widget tests: particles, classes, box.
TINY_PARTICLES, TINY_CLASSES, TINY_BOX = 12, 2, 16
#: Fast options for refinements of the tiny data set.
TINY_OPTIONS = ("--nref", "2", "--ang", "30", "--iter", "2", "--dim", "16", "--escape", "0", "--seed", "0")


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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``images.xmd`` and ``wedges.xmd``: 12 synthetic particles of 16^3 in 2 classes, a
    +-60 degree wedge, 4 A pixels."""
    folder = tmp_path_factory.mktemp("tiny")
    data = make_dataset(TINY_PARTICLES // TINY_CLASSES, TINY_CLASSES, TINY_BOX, snr=2.0, seed=0)
    names = [f"p{i:03d}.mrc" for i in range(len(data.volumes))]
    for name, volume in zip(names, data.volumes, strict=True):
        write_volume(folder / name, volume, pixel_size_A=4.0)
    ones = np.ones(len(names), dtype=np.int64)
    images = MetaData({"image": np.array(names, dtype=object), "missingRegionNumber": ones})
    write_star(folder / "images.xmd", images)
    write_missing_regions(
        folder / "wedges.xmd", [MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60)]
    )
    return folder


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-iteration, 2-class run of the tiny data set (``TINY_OPTIONS``, the +-60 wedge); its root. Tests
    only read it."""
    from napari_mltomo.cli import main

    root = tmp_path_factory.mktemp("run") / "r"
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    assert main([*inputs, "--oroot", str(root), *TINY_OPTIONS, "--quiet"]) == 0
    return root
