"""Small plots for the dock widgets: named curves on one or more panels, drawn with pyqtgraph (a redraw
takes milliseconds, so plotting never holds up the viewer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from numpy.typing import ArrayLike
from qtpy.QtCore import Qt

__all__ = ["CurvePlot"]

#: Colours of successive curves on a panel (class 1, 2, ...).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class CurvePlot(pg.GraphicsLayoutWidget):
    """Panels side by side, each showing named curves.

    Parameters
    ----------
    titles : sequence of str
        One panel per title; :meth:`show_series` fills them by title.
    xlabel : str
        Label of every panel's x axis.
    """

    def __init__(self, titles: Sequence[str], xlabel: str = "iteration") -> None:
        super().__init__()
        self.setMinimumHeight(200)
        self.panels: dict[str, pg.PlotItem] = {}
        for title in titles:
            panel = self.addPlot(title=title)
            panel.setLabel("bottom", xlabel)
            panel.addLegend(offset=(-5, 5))
            self.panels[title] = panel
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
            self.series[title] = curves
