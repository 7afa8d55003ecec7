"""The results browser and the missing-region viewer, in a real viewer, on a tiny run made here."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import starfile
from qtpy.QtCore import Qt

import napari_mltomo._aligned as aligned_module
from conftest import TINY_BOX, TINY_CLASSES, TINY_PARTICLES
from napari_mltomo._aligned import AlignedParticles
from napari_mltomo._layers import ALIGNED_NAME, MASK_NAME, ROTATED_MASK_NAME
from napari_mltomo._widgets.particle_table import ROW_ROLE
from napari_mltomo.core.views import align_to_reference, class_members, region_mask_volume
from napari_mltomo.inputs import run_missing_regions
from napari_mltomo.io import ANGLE_LABELS, SHIFT_LABELS, read_volume
from napari_mltomo.io.results import open_run, read_particles

N_CLASSES, N_PARTICLES, BOX = TINY_CLASSES, TINY_PARTICLES, TINY_BOX


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


def _largest_class(root: Path):
    """The class of iteration 2 with the most particles, and its rows of the table by decreasing pMax."""
    particles = open_run(root).read_iteration(2).particles
    ref = int(np.argmax(np.bincount(particles["ref"])))
    return ref, particles.take(class_members(particles["ref"], particles["pMax"], ref))


def _eager_alignment(members) -> np.ndarray:
    """The particles of `members` aligned all at once, as the browser once did on the GUI thread."""
    angles, shifts = members.float_columns(ANGLE_LABELS), members.float_columns(SHIFT_LABELS)
    return align_to_reference(read_particles(members), angles, shifts)


def test_the_aligned_stack_reads_a_particle_only_when_its_block_is_computed(
    tiny_run: Path, monkeypatch
) -> None:
    _, members = _largest_class(tiny_run)
    assert len(members) > 2
    read = []
    monkeypatch.setattr(aligned_module, "read_volume", lambda name: read.append(name) or read_volume(name))
    particles = AlignedParticles(members, BOX)
    assert isinstance(particles.stack, da.Array) and particles.stack.dtype == np.float32
    assert particles.stack.shape == (len(members), BOX, BOX, BOX)
    assert particles.stack.chunksize == (1, BOX, BOX, BOX)
    assert read == []  # nothing is read until a slice is computed

    last = len(members) - 1
    plane = np.asarray(particles.stack[last, BOX // 2])
    assert read == [str(members["image"][last])]
    np.testing.assert_allclose(plane, _eager_alignment(members)[last, BOX // 2], rtol=1e-6, atol=1e-6)
    assert particles.is_aligned(last) and not particles.is_aligned(0)
    np.asarray(particles.stack[last, 0])
    assert len(read) == 1  # kept


def test_a_deferring_stack_computes_a_particle_not_yet_aligned_as_zeros(tiny_run: Path) -> None:
    _, members = _largest_class(tiny_run)
    particles = AlignedParticles(members, BOX, defer=True)
    last = len(members) - 1
    assert not np.any(np.asarray(particles.stack[last]))
    assert particles.deferred == {last} and not particles.is_aligned(last)
    particles.particle(last)
    np.testing.assert_allclose(
        np.asarray(particles.stack[last]), _eager_alignment(members)[last], rtol=1e-6, atol=1e-6
    )


def test_the_particles_near_a_position_come_forward_first(tiny_run: Path) -> None:
    particles = AlignedParticles(_largest_class(tiny_run)[1], BOX)
    n = len(particles)
    assert list(particles.around(0, ahead=4)) == list(range(1, min(5, n)))
    assert list(particles.around(n - 1, ahead=4)) == [n - 2, n - 3][: n - 1]


def _shows(viewer, browser, iteration: int, ref: int) -> bool:
    """Whether the browser shows class `ref` of `iteration` (it reads and aligns in a worker thread, then
    updates the layers one per turn of the event loop, the aligned particles last)."""
    if browser.results is None or browser.results.iteration != iteration or browser.current_class != ref:
        return False
    if browser.stack_rows.size == 0:
        return "class 1" in viewer.layers and viewer.layers["class 1"].metadata["iteration"] == iteration
    meta = viewer.layers[ALIGNED_NAME].metadata if ALIGNED_NAME in viewer.layers else {}
    return meta.get("iteration") == iteration and meta.get("ref") == ref


@pytest.mark.gui
def test_browser_shows_a_run_and_steps_iterations_in_place(make_napari_viewer, qtbot, tiny_run: Path) -> None:
    from napari_mltomo._widgets.browser import ResultsBrowser

    viewer = make_napari_viewer()
    browser = ResultsBrowser(viewer)
    viewer.window.add_dock_widget(browser)
    browser.load(f"{tiny_run}_img.xmd")
    qtbot.waitUntil(lambda: _shows(viewer, browser, 2, 1))
    class_layers = [layer for layer in viewer.layers if layer.name in ("class 1", "class 2")]
    assert len(class_layers) == N_CLASSES
    assert browser.table.model().rowCount() == N_PARTICLES
    assert sorted(browser.fsc_plot.series["FSC"]) == ["class 1", "class 2"]
    assert browser.results.iteration == 2

    maps = {layer.name: layer for layer in viewer.layers if layer.name.startswith("class ")}
    assert len(maps) == 2 * N_CLASSES  # references and coverage
    browser.iteration_slider.setValue(1)
    qtbot.waitUntil(lambda: _shows(viewer, browser, 1, 1))
    assert all(maps[name] is viewer.layers[name] for name in maps)  # updated in place
    np.testing.assert_array_equal(
        viewer.layers["class 1"].data, read_volume(f"{tiny_run}_it000001_ref000001.mrc")
    )
    browser.iteration_slider.setValue(2)
    qtbot.waitUntil(lambda: _shows(viewer, browser, 2, 1))

    # The aligned particles of a class correlate with its reference better than the raw ones.
    results = browser.results
    checked = 0
    for ref in (1, 2):
        browser.show_class(ref)
        qtbot.waitUntil(lambda ref=ref: _shows(viewer, browser, 2, ref))
        rows = browser.stack_rows
        if rows.size == 0:
            continue
        checked += 1
        stack = viewer.layers[ALIGNED_NAME].data  # deferring: a particle napari has not drawn may be blank
        aligned = np.stack([browser._view.stack.particle(i) for i in range(stack.shape[0])])
        raw = np.stack([read_volume(str(name)) for name in results.particles["image"][rows]])
        reference = viewer.layers[f"class {ref}"].data
        assert aligned.shape == raw.shape
        assert _mean_correlation(aligned, reference) > _mean_correlation(raw, reference) + 0.1
    assert checked >= 1

    # Selecting a table row shows that particle of the aligned stack.
    model = browser.table.model()
    line = model.rowCount() - 1
    browser.table.selectRow(line)
    row = int(model.index(line, 0).data(Qt.ItemDataRole.UserRole))
    assert browser.current_class == results.particles["ref"][row]
    qtbot.waitUntil(lambda: viewer.dims.current_step[0] == int(np.flatnonzero(browser.stack_rows == row)[0]))


@pytest.mark.gui
def test_browser_reads_and_aligns_off_the_gui_thread(
    make_napari_viewer, qtbot, tiny_run: Path, monkeypatch
) -> None:
    from napari_mltomo._widgets.browser import ResultsBrowser

    on_gui_thread = []

    def align(*args: object) -> np.ndarray:
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        return align_to_reference(*args)

    monkeypatch.setattr(aligned_module, "align_to_reference", align)
    monkeypatch.setitem(dask.config.config, "scheduler", "synchronous")  # napari's slicing computes here
    viewer = make_napari_viewer()
    browser = ResultsBrowser(viewer)
    viewer.window.add_dock_widget(browser)
    browser.load(tiny_run)
    qtbot.waitUntil(lambda: _shows(viewer, browser, 2, 1))
    model = browser.table.model()
    model.sort(5, Qt.SortOrder.DescendingOrder)  # by pMax, best first
    pmax = [float(model.index(line, 5).data()) for line in range(model.rowCount())]
    assert pmax == sorted(pmax, reverse=True)

    # Picking the worst particle of the largest class shows that class and moves there once it is aligned.
    ref, members = _largest_class(tiny_run)
    worst = int(
        np.flatnonzero(open_run(tiny_run).read_iteration(2).particles["image"] == members["image"][-1])[0]
    )
    line = next(line for line in range(model.rowCount()) if model.index(line, 0).data(ROW_ROLE) == worst)
    browser.table.selectRow(line)
    qtbot.waitUntil(
        lambda: _shows(viewer, browser, 2, ref) and viewer.dims.current_step[0] == len(members) - 1
    )

    layer = viewer.layers[ALIGNED_NAME]
    assert isinstance(layer.data, da.Array) and layer.data.shape == (len(members), BOX, BOX, BOX)
    z = viewer.dims.current_step[1]
    shown = layer._slice.image.view  # the plane napari computed from the lazy stack
    np.testing.assert_allclose(shown, _eager_alignment(members)[-1, z], rtol=1e-6, atol=1e-6)
    assert on_gui_thread and not any(on_gui_thread)


@pytest.mark.gui
def test_a_particle_the_slider_jumps_to_is_drawn_blank_then_aligned_off_the_gui_thread(
    make_napari_viewer, qtbot, tiny_run: Path, monkeypatch
) -> None:
    from napari_mltomo._widgets.browser import ResultsBrowser

    on_gui_thread, release = [], threading.Event()

    def align(*args: object) -> np.ndarray:
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        if not on_gui_thread[-1]:
            release.wait(30)
        return align_to_reference(*args)

    monkeypatch.setattr(AlignedParticles, "around", lambda self, index, ahead=16: iter(()))  # no read-ahead
    monkeypatch.setitem(dask.config.config, "scheduler", "synchronous")
    viewer = make_napari_viewer()
    browser = ResultsBrowser(viewer)
    viewer.window.add_dock_widget(browser)
    release.set()
    browser.load(tiny_run)
    qtbot.waitUntil(lambda: _shows(viewer, browser, 2, 1))
    ref, members = _largest_class(tiny_run)
    browser.show_class(ref)
    qtbot.waitUntil(lambda: _shows(viewer, browser, 2, ref))
    layer = viewer.layers[ALIGNED_NAME]
    last = len(members) - 1
    assert last > 0 and viewer.dims.current_step[0] == 0
    monkeypatch.setattr(aligned_module, "align_to_reference", align)

    release.clear()
    viewer.dims.set_current_step(0, last)
    assert not np.any(layer._slice.image.view)  # drawn blank at once: nothing aligned on the GUI thread
    release.set()
    z = viewer.dims.current_step[1]
    qtbot.waitUntil(lambda: bool(np.any(layer._slice.image.view)))
    expected = _eager_alignment(members)[last, z]
    np.testing.assert_allclose(layer._slice.image.view, expected, rtol=1e-6, atol=1e-6)
    assert on_gui_thread and not any(on_gui_thread)


@pytest.mark.gui
def test_export_writes_the_iteration_shown_for_relion(
    make_napari_viewer, qtbot, tiny_run: Path, tmp_path: Path, monkeypatch
) -> None:
    from napari_mltomo._widgets import export_dialog
    from napari_mltomo._widgets.browser import ResultsBrowser

    relion = next(text for text, to in export_dialog.FILTERS.items() if to == "relion")
    answer = (str(tmp_path / "particles"), relion)
    monkeypatch.setattr(export_dialog.QFileDialog, "getSaveFileName", lambda *args: answer)
    viewer = make_napari_viewer()
    browser = ResultsBrowser(viewer)
    viewer.window.add_dock_widget(browser)
    assert not browser.export_button.isEnabled()
    browser.load(tiny_run)
    qtbot.waitUntil(lambda: _shows(viewer, browser, 2, 1))
    browser.iteration_slider.setValue(1)  # iteration 1, not the last
    qtbot.waitUntil(lambda: _shows(viewer, browser, 1, 1))
    browser.export_button.click()
    star = tmp_path / "particles.star"
    qtbot.waitUntil(star.is_file, timeout=20000)
    particles = starfile.read(star)["particles"]
    table = open_run(tiny_run).read_iteration(1).particles
    assert len(particles) == N_PARTICLES
    np.testing.assert_array_equal(particles["rlnClassNumber"], table["ref"])


@pytest.mark.gui
def test_browser_reports_a_bad_root_in_one_line(make_napari_viewer, tmp_path: Path, monkeypatch) -> None:
    from napari_mltomo._widgets.browser import ResultsBrowser

    shown = []
    monkeypatch.setattr("napari_mltomo._widgets._common.show_error", shown.append)
    browser = ResultsBrowser(make_napari_viewer())
    browser.load(tmp_path / "nothing")
    assert len(shown) == 1 and str(tmp_path / "nothing") in shown[0] and "\n" not in shown[0]


@pytest.mark.gui
def test_missing_viewer_shows_a_60_degree_wedge_as_central_sections(make_napari_viewer) -> None:
    from napari_mltomo._widgets.missing_viewer import MissingRegionViewer

    viewer = make_napari_viewer()
    widget = MissingRegionViewer(viewer)
    viewer.window.add_dock_widget(widget)
    widget.kind_combo.setCurrentText("wedge_y")
    widget.angle_boxes["theta_y0_deg"].setValue(-60.0)
    widget.angle_boxes["theta_yf_deg"].setValue(60.0)
    widget.size_box.setValue(32)
    # Directions are uniform in azimuth about the tilt axis: 2 x 60 of 360 degrees are missing, 1/3.
    assert float(re.search(r"([\d.]+)%", widget.fraction_label.text())[1]) == pytest.approx(100 / 3, abs=1)

    # A 2D image of the sections kz = 0, ky = 0 and kx = 0, 4 pixels apart, read in the 2D view.
    layer = viewer.layers[MASK_NAME]
    mask = region_mask_volume(widget.region(), 32)
    assert layer.ndim == 2 and viewer.dims.ndisplay == 2 and layer.data.shape == (32, 3 * 32 + 2 * 4)
    for index, section in enumerate((mask[16], mask[:, 16], mask[:, :, 16])):
        np.testing.assert_array_equal(layer.data[:, index * 36 : index * 36 + 32], section)
    assert np.all(layer.data[:, 32:36] == 0)

    widget.rotate_check.setChecked(True)
    widget.euler_boxes[1].setValue(90.0)  # tilt 90: the missing z axis turns onto x
    rotated = viewer.layers[ROTATED_MASK_NAME]
    assert rotated.data.shape == (32, 104) and tuple(rotated.translate) == (36.0, 0.0)  # a row below
    assert rotated.data[16, 16 + 10] == 0.0 and layer.data[16, 16 + 10] == 1.0  # k = (0, 0, 10) in kz = 0
    same = viewer.layers[MASK_NAME]
    widget.size_box.setValue(16)
    assert viewer.layers[MASK_NAME] is same and same.data.shape == (16, 3 * 16 + 2 * 2)
    assert tuple(viewer.layers[ROTATED_MASK_NAME].translate) == (18.0, 0.0)
