"""The dock widgets' curve plots: the class-fraction axis."""

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
