"""Regenerate docs/images/*.png from a real run in napari: ``make screenshots`` (under Xvfb).

Writes the demo data set to a temporary folder, refines it from the Refinement widget with the demo's
options, and grabs the window: the Refinement widget mid-run (``refinement.png``), the Results browser
on the finished run with the aligned particles of class 1 and its Fourier coverage (``browser.png``),
and the Missing region viewer with a particle's mask turned into the reference frame
(``missing_region.png``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_mltomo import demo
from napari_mltomo.argv import option_values

IMAGES = Path(__file__).parent / "images"
WINDOW = (1920, 1080)
#: Width of the plugin's dock in the pictures (pixels).
DOCK_WIDTH = 640


def _wait(condition: Callable[[], bool], timeout_s: float = 900.0) -> None:
    """Process Qt events until `condition` holds."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the run did not get there in time")
        QApplication.processEvents()
        time.sleep(0.02)


def _settle(seconds: float = 1.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _dock(viewer: napari.Viewer, name: str) -> tuple[Any, Any]:
    """Add one of the plugin's widgets, docked at :data:`DOCK_WIDTH`."""
    dock, widget = viewer.window.add_plugin_dock_widget("napari-mltomo", name)
    viewer.window._qt_window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    return dock, widget


def _shows_class(viewer: napari.Viewer, ref: int) -> bool:
    """Whether the Results browser shows the aligned particles of class `ref`."""
    name = "aligned particles"
    return name in viewer.layers and viewer.layers[name].metadata["ref"] == ref


def _grab(viewer: napari.Viewer, name: str) -> None:
    _settle()
    viewer.reset_view()
    _settle(0.5)
    path = IMAGES / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"wrote {path}")


def main(folder: Path) -> None:
    IMAGES.mkdir(exist_ok=True)
    demo.write_demo_data(folder)
    root = folder / "run" / "demo"
    argv = ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd"), "--oroot", str(root)]
    values = option_values([*argv, *demo.DEMO_ARGS])
    values.pop("quiet")

    viewer = napari.Viewer(title="napari-mltomo")
    viewer.window._qt_window.resize(*WINDOW)
    dock, refinement = _dock(viewer, "Refinement")
    refinement.set_values(values)
    worker = refinement.start()
    _wait(lambda: len(refinement.history) >= 3)
    viewer.dims.ndisplay = 3
    viewer.grid.enabled = True
    viewer.grid.shape = (1, -1)
    _grab(viewer, "refinement.png")
    _wait(lambda: refinement.worker is None)
    viewer.window.remove_dock_widget(dock)
    del worker

    viewer.layers.clear()
    viewer.dims.ndisplay = 2
    _, browser = _dock(viewer, "Results browser")
    browser.load(root)
    _wait(lambda: _shows_class(viewer, 1))  # the browser reads and aligns in a worker thread
    browser.table.selectRow(3)
    row = browser.table.model().index(3, 0).data(Qt.ItemDataRole.UserRole)
    _wait(lambda: _shows_class(viewer, int(browser.results.particles["ref"][row])))
    viewer.layers["class 1 coverage"].visible = True
    for layer in viewer.layers:
        layer.visible = layer.name in {"class 1", "class 1 coverage", "aligned particles"}
    viewer.grid.enabled = True
    _grab(viewer, "browser.png")

    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.grid.enabled = False  # the masks' sections are laid out in rows of one image
    _, regions = _dock(viewer, "Missing region viewer")
    regions.use_particle(root, 5)
    _grab(viewer, "missing_region.png")
    viewer.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch))
