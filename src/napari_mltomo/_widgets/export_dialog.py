"""The Results browser's *Export…*: the particles of the iteration shown, for RELION or Dynamo, written in a
worker thread by :func:`napari_mltomo.export.export_run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QFileDialog, QWidget

from napari_mltomo.export import ExportFormat, export_run

__all__ = ["FILTERS", "ask_export_target", "export_worker"]

#: The file dialog's choices and the format each writes.
FILTERS: dict[str, ExportFormat] = {
    "RELION 3.1 to 5 particles (*.star)": "relion",
    "RELION 3.0 subtomograms, for Warp/M (*.star)": "relion30",
    "Dynamo table and data folder (*.tbl)": "dynamo",
}


def ask_export_target(parent: QWidget, start: str) -> tuple[Path, ExportFormat] | None:
    """Ask where to export and in which format; None if the user cancels."""
    path, chosen = QFileDialog.getSaveFileName(parent, "Export the particles", start, ";;".join(FILTERS))
    if not path:
        return None
    to = FILTERS.get(chosen, "relion")
    suffix = ".tbl" if to == "dynamo" else ".star"
    return Path(path).with_suffix(suffix), to


@thread_worker(start_thread=False)
def export_worker(run: Path, to: ExportFormat, target: Path, iteration: int) -> list[Path]:
    """In a worker thread: export `iteration` of `run`; a Dynamo table gets its particles in
    ``<stem>_data/`` beside it."""
    data: Any = target.with_name(f"{target.stem}_data") if to == "dynamo" else None
    return export_run(run, to, target, iteration=iteration, dynamo_data=data)
