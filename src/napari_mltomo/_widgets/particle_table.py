"""The particle table of the results browser: a view on an iteration's table whose cells are formatted
when Qt draws them, so that showing thousands of particles costs no more than showing ten."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt
from qtpy.QtWidgets import QAbstractItemView, QTableView, QWidget

from napari_mltomo.io import MetaData

__all__ = ["COLUMNS", "ROW_ROLE", "ParticleTable", "ParticleTableModel"]

#: Table columns: header and the metadata label shown.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "image"), ("class", "ref"), ("rot", "angleRot"), ("tilt", "angleTilt"), ("psi", "anglePsi"),
    ("pMax", "pMax"), ("logL", "logLikelihood"),
)  # fmt: skip
#: Data role of every cell holding the particle's row in the iteration's table.
ROW_ROLE = Qt.ItemDataRole.UserRole
#: Decimals shown per label (labels not listed: 2).
_DIGITS = {"pMax": 4, "logLikelihood": 1}
#: The roles a cell answers (Qt asks for many more, many times).
_ROLES = {int(role) for role in (
    Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.TextAlignmentRole, ROW_ROLE,
)}  # fmt: skip


class ParticleTableModel(QAbstractTableModel):
    """The rows of a particle table, first by class then by decreasing pMax; sorting is stable."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._particles: MetaData | None = None
        self._order = np.zeros(0, dtype=np.intp)
        self._sorted_by: tuple[int, Qt.SortOrder] | None = None

    def set_particles(self, particles: MetaData | None) -> None:
        """Show `particles` (None: no rows), in the last sort order asked for."""
        self.beginResetModel()
        self._particles = particles
        if particles is None:
            self._order = np.zeros(0, dtype=np.intp)
        else:
            pmax = -np.asarray(particles["pMax"], dtype=np.float64)
            self._order = np.lexsort((pmax, particles["ref"]))
        self.endResetModel()
        if self._sorted_by is not None:
            self.sort(*self._sorted_by)

    def table_row(self, line: int) -> int:
        """The row of the iteration's table shown on `line`."""
        return int(self._order[line])

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._order)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if int(role) not in _ROLES or not index.isValid() or self._particles is None:
            return None
        row, label = self.table_row(index.row()), COLUMNS[index.column()][1]
        if role == ROW_ROLE:
            return row
        if label not in self._particles:
            return "" if role == Qt.ItemDataRole.DisplayRole else None
        value = self._particles[label][row]
        if role == Qt.ItemDataRole.DisplayRole:
            return _text(label, value)
        if role == Qt.ItemDataRole.ToolTipRole and label == "image":
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and label != "image":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Order the rows by `column`, keeping the present order among equal values."""
        self._sorted_by = (column, order)
        label = COLUMNS[column][1]
        if self._particles is None or label not in self._particles:
            return
        self.layoutAboutToBeChanged.emit()
        keys = _sort_keys(self._particles[label])[self._order]
        if order == Qt.SortOrder.AscendingOrder:
            self._order = self._order[np.argsort(keys, kind="stable")]
        else:  # stable descending: sort the reversed keys, then read the result backwards
            last = len(keys) - 1
            self._order = self._order[last - np.argsort(keys[::-1], kind="stable")[::-1]]
        self.layoutChanged.emit()


class ParticleTable(QTableView):
    """A sortable, read-only table of particles, one row selected at a time."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setModel(ParticleTableModel(self))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setResizeContentsPrecision(0)  # columns fit the rows in view
        self.horizontalHeader().setSortIndicator(1, Qt.SortOrder.AscendingOrder)
        self.setSortingEnabled(True)

    def set_particles(self, particles: MetaData | None) -> None:
        """Show `particles` (an iteration's table; None: empty)."""
        self.clearSelection()
        self.model().set_particles(particles)
        self.resizeColumnsToContents()

    def selected_row(self) -> int | None:
        """The row (of the iteration's table) of the line selected, or None."""
        lines = self.selectionModel().selectedRows()
        return self.model().table_row(lines[0].row()) if lines else None


def _text(label: str, value: Any) -> str:
    if label == "image":
        return Path(str(value)).name
    if label == "ref":
        return str(int(value))
    return f"{float(value):.{_DIGITS.get(label, 2)}f}"


def _sort_keys(values: NDArray[Any]) -> NDArray[Any]:
    """Numbers sort by value, anything else by its text."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray(values, dtype=str)
