"""Small plots for the dock widgets: named curves on one or more panels, drawn with pyqtgraph (a redraw
takes milliseconds, so plotting never holds up the viewer)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from numpy.typing import ArrayLike
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QResizeEvent

__all__ = ["PANEL_MIN_HEIGHT", "PANEL_MIN_WIDTH", "CurvePlot"]

#: Colours of successive curves on a panel (class 1, 2, ...).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Narrowest width a panel is given (pixels): a plot narrower than its panels side by side puts them on
#: more rows.
PANEL_MIN_WIDTH = 200
#: Height of a row of panels (pixels).
PANEL_MIN_HEIGHT = 180


class CurvePlot(pg.GraphicsLayoutWidget):
    """Panels side by side, as many per row as the width allows, each showing named curves.

    Parameters
    ----------
    titles : sequence of str
        One panel per title; :meth:`show_series` fills them by title.
    xlabel : str
        Label of every panel's x axis.
    y_floors : mapping of str to (float, float), optional
        Panel title -> y range the panel always shows at least (e.g. ``(0, 1)`` for fractions, which would
        otherwise be scaled to their rounding noise when constant).
    """

    def __init__(
        self,
        titles: Sequence[str],
        xlabel: str = "iteration",
        y_floors: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__()
        self.y_floors = dict(y_floors or {})
        self.panels: dict[str, pg.PlotItem] = {}
        for title in titles:
            panel = self.addPlot(title=title)
            panel.setLabel("bottom", xlabel)
            panel.addLegend(offset=(-5, 5))
            self.panels[title] = panel
        self.columns = len(self.panels)
        self.setMinimumHeight(PANEL_MIN_HEIGHT)
        self._relayout = QTimer(self)
        self._relayout.setSingleShot(True)
        self._relayout.timeout.connect(self._arrange)
        self.series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def show_series(
        self,
        x: ArrayLike | Mapping[str, ArrayLike],
        series: Mapping[str, Mapping[str, ArrayLike]],
        *,
        highlight: str | None = None,
        guide: float | None = None,
    ) -> None:
        """Redraw: ``series[title][name]`` are the y values of one curve on the panel ``title``.

        `x` is shared by every curve, or given per curve name; a curve shorter than `x` is drawn against
        its last values. The curve `highlight` is drawn thicker; `guide` draws a dashed horizontal line.
        """
        self.series = {}
        for title, panel in self.panels.items():
            panel.clear()
            curves = {}
            for index, (name, values) in enumerate(series.get(title, {}).items()):
                y = np.asarray(values, dtype=np.float64)
                if not y.size:
                    continue
                xs = np.asarray(x[name] if isinstance(x, Mapping) else x, dtype=np.float64)[-len(y) :]
                pen = pg.mkPen(COLOURS[index % len(COLOURS)], width=3 if name == highlight else 1.5)
                panel.plot(xs, y, pen=pen, name=name, symbol="o", symbolSize=5, symbolBrush=pen.color())
                curves[name] = (xs, y)
            if guide is not None and curves:
                dashed = pg.mkPen("grey", style=Qt.PenStyle.DashLine)
                panel.addItem(pg.InfiniteLine(pos=guide, angle=0, pen=dashed))
            if title in self.y_floors:
                self._floor_y(panel, self.y_floors[title], [y for _, y in curves.values()])
            self.series[title] = curves

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        """Rearrange the panels once the resize is done (pyqtgraph calls this before they exist)."""
        super().resizeEvent(event)
        if hasattr(self, "_relayout"):
            self._relayout.start(0)

    def _arrange(self) -> None:
        """Put as many panels on a row as fit at :data:`PANEL_MIN_WIDTH` (rows as needed)."""
        columns = max(1, min(len(self.panels), self.width() // PANEL_MIN_WIDTH))
        if columns == self.columns:
            return
        self.columns = columns
        for panel in self.panels.values():
            self.ci.removeItem(panel)
        for index, panel in enumerate(self.panels.values()):
            self.ci.addItem(panel, row=index // columns, col=index % columns)
        self.setMinimumHeight(PANEL_MIN_HEIGHT * math.ceil(len(self.panels) / columns))
        super().resizeEvent(None)  # fit the layout to the view again (it was held at its old minimum)

    @staticmethod
    def _floor_y(panel: pg.PlotItem, floor: tuple[float, float], curves: list[np.ndarray]) -> None:
        """Show at least `floor` on the y axis, and every value of `curves`."""
        finite = [y[np.isfinite(y)] for y in curves]
        values = np.concatenate([*finite, np.asarray(floor, dtype=np.float64)])
        panel.setYRange(float(values.min()), float(values.max()))
