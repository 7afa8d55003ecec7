"""Small matplotlib plots for the dock widgets: named curves on one or more panels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = ["CurvePlot"]


class CurvePlot(FigureCanvasQTAgg):
    """Panels side by side, each showing named curves against a shared x.

    Parameters
    ----------
    titles : sequence of str
        One panel per title; :meth:`show_series` fills them by title.
    xlabel : str
        Label of every panel's x axis.
    """

    def __init__(self, titles: Sequence[str], xlabel: str = "iteration") -> None:
        figure = Figure(figsize=(2.6 * len(titles), 2.2), layout="constrained")
        super().__init__(figure)
        self.setMinimumHeight(170)
        self.xlabel = xlabel
        self.panels = dict(zip(titles, figure.subplots(1, len(titles), squeeze=False)[0], strict=True))
        self.series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self.show_series([], {})

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
        for title, axes in self.panels.items():
            axes.clear()
            axes.set_title(title, fontsize=9)
            axes.set_xlabel(self.xlabel, fontsize=8)
            axes.tick_params(labelsize=7)
            curves = {}
            for name, values in series.get(title, {}).items():
                y = np.asarray(values, dtype=np.float64)
                if not y.size:
                    continue
                xs = np.asarray(x[name] if isinstance(x, Mapping) else x, dtype=np.float64)[-len(y) :]
                curves[name] = (xs, y)
                axes.plot(xs, y, marker=".", label=name, linewidth=2.5 if name == highlight else 1.2)
            if guide is not None and curves:
                axes.axhline(guide, linestyle="--", linewidth=0.8, color="grey")
            if len(curves) > 1:
                axes.legend(fontsize=7)
            if not curves:
                axes.text(0.5, 0.5, "nothing yet", ha="center", va="center", transform=axes.transAxes)
            self.series[title] = curves
        self.draw_idle()
