"""The dock widgets' curve plots: the class-fraction axis, and panels that fit the dock's width."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

ITERATIONS = np.arange(1.0, 9.0)


def test_constant_class_fractions_are_drawn_on_at_least_0_to_1(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-mltomo", "Refinement")
    fractions = {f"class {k}": 1.0 / 3.0 + 1e-12 * np.sin(k * ITERATIONS) for k in (1, 2, 3)}
    widget.plot.show_series(ITERATIONS, {"class fractions": fractions})
    panel = widget.plot.panels["class fractions"]
    panel.getViewBox().updateAutoRange()  # as pyqtgraph does before it paints
    low, high = panel.viewRange()[1]
    assert low <= 0.0 and high >= 1.0  # not the rounding noise of 1/3


def test_panels_wrap_onto_more_rows_in_a_narrow_dock(qtbot) -> None:
    from napari_mltomo._widgets.plots import PANEL_MIN_WIDTH, CurvePlot

    plot = CurvePlot(("log-likelihood", "class fractions", "resolution (Å)"))
    qtbot.addWidget(plot)
    plot.show_series(ITERATIONS, {"log-likelihood": {"LL": -ITERATIONS}})
    plot.show()
    for width, rows in (
        (3 * PANEL_MIN_WIDTH + 20, 1),
        (2 * PANEL_MIN_WIDTH + 20, 2),
        (PANEL_MIN_WIDTH + 20, 3),
    ):
        plot.resize(width, 600)
        qtbot.waitUntil(lambda width=width: plot.columns == min(3, width // PANEL_MIN_WIDTH))
        qtbot.wait(50)
        boxes = [panel.geometry() for panel in plot.panels.values()]
        assert all(box.right() <= plot.width() and box.width() >= 0.9 * PANEL_MIN_WIDTH for box in boxes)
        assert len({round(box.top()) for box in boxes}) == rows
