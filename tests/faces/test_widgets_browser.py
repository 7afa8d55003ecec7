"""The results browser and the missing-region viewer, in a real viewer, on a tiny run made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from conftest import TINY_BOX, TINY_CLASSES, TINY_OPTIONS, TINY_PARTICLES
from napari_mltomo._layers import ALIGNED_NAME, MASK_NAME, ROTATED_MASK_NAME
from napari_mltomo.cli import main
from napari_mltomo.core.views import missing_fraction
from napari_mltomo.inputs import run_missing_regions
from napari_mltomo.io import read_volume
from napari_mltomo.io.results import open_run

N_CLASSES, N_PARTICLES, BOX = TINY_CLASSES, TINY_PARTICLES, TINY_BOX


@pytest.fixture(scope="module")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-iteration, 2-class run of the tiny data set; its root."""
    root = tmp_path_factory.mktemp("run") / "r"
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    assert main([*inputs, "--oroot", str(root), *TINY_OPTIONS, "--quiet"]) == 0
    return root


def _mean_correlation(volumes: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(volume.ravel(), reference.ravel())[0, 1] for volume in volumes]))


def test_open_run_lists_iterations_and_reads_them(tiny_run: Path) -> None:
    run = open_run(f"{tiny_run}_it000001_log.xmd")
    assert run.root == tiny_run and run.iterations == (0, 1, 2)
    start, last = run.read_iteration(0), run.read_iteration(2)
    assert start.particles is None and start.coverage is None and start.fsc == {}
    assert last.references.shape == (N_CLASSES, BOX, BOX, BOX) and last.pixel_size_A == pytest.approx(4.0)
    assert last.coverage is not None and last.coverage.shape == last.references.shape
    assert len(last.particles) == N_PARTICLES and sorted(last.fsc) == [1, 2]
    assert run_missing_regions(run)[0].kind == "wedge_y"


def test_a_bad_root_gives_one_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        open_run(tmp_path / "nothing")


@pytest.mark.gui
def test_browser_shows_a_run_and_steps_iterations_in_place(make_napari_viewer, tiny_run: Path) -> None:
    from napari_mltomo._widgets.browser import ResultsBrowser

    viewer = make_napari_viewer()
    browser = ResultsBrowser(viewer)
    viewer.window.add_dock_widget(browser)
    browser.load(f"{tiny_run}_img.xmd")
    class_layers = [layer for layer in viewer.layers if layer.name in ("class 1", "class 2")]
    assert len(class_layers) == N_CLASSES
    assert browser.table.rowCount() == N_PARTICLES
    assert sorted(browser.fsc_plot.series["FSC"]) == ["class 1", "class 2"]
    assert browser.results.iteration == 2

    maps = {layer.name: layer for layer in viewer.layers if layer.name.startswith("class ")}
    assert len(maps) == 2 * N_CLASSES  # references and coverage
    browser.iteration_slider.setValue(1)
    assert browser.results.iteration == 1
    assert all(maps[name] is viewer.layers[name] for name in maps)  # updated in place
    np.testing.assert_array_equal(
        viewer.layers["class 1"].data, read_volume(f"{tiny_run}_it000001_ref000001.mrc")
    )
    browser.iteration_slider.setValue(2)

    # The aligned particles of a class correlate with its reference better than the raw ones.
    results = browser.results
    checked = 0
    for ref in (1, 2):
        browser.show_class(ref)
        rows = browser.stack_rows
        if rows.size == 0:
            continue
        checked += 1
        aligned = viewer.layers[ALIGNED_NAME].data
        raw = np.stack([read_volume(str(name)) for name in results.particles["image"][rows]])
        reference = viewer.layers[f"class {ref}"].data
        assert aligned.shape == raw.shape
        assert _mean_correlation(aligned, reference) > _mean_correlation(raw, reference) + 0.1
    assert checked >= 1

    # Selecting a table row shows that particle of the aligned stack.
    line = browser.table.rowCount() - 1
    browser.table.selectRow(line)
    row = int(browser.table.item(line, 0).data(Qt.ItemDataRole.UserRole))
    assert browser.current_class == results.particles["ref"][row]
    assert viewer.dims.current_step[0] == int(np.flatnonzero(browser.stack_rows == row)[0])


@pytest.mark.gui
def test_browser_reports_a_bad_root_in_one_line(make_napari_viewer, tmp_path: Path, monkeypatch) -> None:
    from napari_mltomo._widgets.browser import ResultsBrowser

    shown = []
    monkeypatch.setattr("napari_mltomo._widgets._common.show_error", shown.append)
    browser = ResultsBrowser(make_napari_viewer())
    browser.load(tmp_path / "nothing")
    assert len(shown) == 1 and str(tmp_path / "nothing") in shown[0] and "\n" not in shown[0]


@pytest.mark.gui
def test_missing_viewer_shows_a_60_degree_wedge(make_napari_viewer) -> None:
    from napari_mltomo._widgets.missing_viewer import MissingRegionViewer

    viewer = make_napari_viewer()
    widget = MissingRegionViewer(viewer)
    viewer.window.add_dock_widget(widget)
    widget.kind_combo.setCurrentText("wedge_y")
    widget.angle_boxes["theta_y0_deg"].setValue(-60.0)
    widget.angle_boxes["theta_yf_deg"].setValue(60.0)
    widget.size_box.setValue(32)
    layer = viewer.layers[MASK_NAME]
    assert layer.data.shape == (32, 32, 32)
    # Directions are uniform in azimuth about the tilt axis: 2 x 60 of 360 degrees are missing, 1/3.
    assert missing_fraction(layer.data) == pytest.approx(1.0 / 3.0, abs=0.01)

    widget.rotate_check.setChecked(True)
    widget.euler_boxes[1].setValue(90.0)  # tilt 90: the missing z axis turns onto x
    rotated = viewer.layers[ROTATED_MASK_NAME]
    assert rotated.data.shape == (32, 32, 32)
    assert missing_fraction(rotated.data) == pytest.approx(1.0 / 3.0, abs=0.01)
    assert rotated.data[16, 16, 16 + 10] == 0.0 and layer.data[16, 16, 16 + 10] == 1.0
    same = viewer.layers[MASK_NAME]
    widget.size_box.setValue(16)
    assert viewer.layers[MASK_NAME] is same and same.data.shape == (16, 16, 16)
