"""The results browser: a run's class references, coverage, FSC and particles, iteration by iteration.

The widget only arranges and displays: files are read by :mod:`napari_mltomo.io.results`, particles are
aligned by :mod:`napari_mltomo.core.views`, and layers are built by :mod:`napari_mltomo._layers`. Every
failure becomes one notification line (:func:`napari.utils.notifications.show_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_mltomo._layers import (
    ALIGNED_NAME,
    aligned_stack_layer,
    coverage_layers,
    reference_layers,
    remove_layers,
    show_layer,
)
from napari_mltomo._widgets._common import report_errors
from napari_mltomo._widgets.plots import CurvePlot
from napari_mltomo.core.views import align_to_reference, class_members
from napari_mltomo.io import ANGLE_LABELS, SHIFT_LABELS, MetaData
from napari_mltomo.io.results import IterationResults, RunResults, open_run, read_particles

if TYPE_CHECKING:
    import napari

__all__ = ["ResultsBrowser"]

#: Particle table columns: header and the metadata label shown.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "image"), ("class", "ref"), ("rot", "angleRot"), ("tilt", "angleTilt"), ("psi", "anglePsi"),
    ("pMax", "pMax"), ("logL", "logLikelihood"),
)  # fmt: skip
_ROW = Qt.ItemDataRole.UserRole  # the particle's row in the iteration's table
_VALUE = Qt.ItemDataRole.UserRole + 1  # the number a cell sorts by
_RESIZE_LIMIT = 2000  # fit the columns to their contents for tables up to this many rows


class _NumberItem(QTableWidgetItem):
    """A table cell showing a formatted number and sorting by its value."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.setData(_VALUE, float(value))
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(_VALUE), other.data(_VALUE)
        if mine is None or theirs is None:
            return super().__lt__(other)
        return mine < theirs


class ResultsBrowser(QWidget):
    """Browse a refinement: class references, coverage maps, FSC and the aligned particles of a class.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose layers are added, and updated in place when stepping iterations.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._run: RunResults | None = None
        self._results: IterationResults | None = None
        self._stack_rows = np.zeros(0, dtype=np.intp)
        self._volumes: dict[str, NDArray[np.float32]] = {}
        self._owned: set[str] = set()
        self._build()
        self._connect()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.root_edit = QLineEdit()
        self.root_edit.setPlaceholderText("run root, or any file of the run (…_log.xmd, …_img.xmd)")
        self.browse_button = QPushButton("Browse…")
        self.open_button = QPushButton("Open")
        self.info_label = QLabel("no run open")
        self.info_label.setWordWrap(True)
        self.iteration_slider = QSlider(Qt.Orientation.Horizontal)
        self.iteration_slider.setTracking(False)
        self.iteration_slider.setPageStep(1)
        self.iteration_label = QLabel("iteration –")
        self.class_combo = QComboBox()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([header for header, _ in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        # Rows are filled by class, then by decreasing pMax; a stable sort by class keeps that order.
        self.table.horizontalHeader().setSortIndicator(1, Qt.SortOrder.AscendingOrder)
        self.fsc_plot = CurvePlot(("FSC",), xlabel="frequency (1/Å)")

        picker = QHBoxLayout()
        for widget in (self.root_edit, self.browse_button, self.open_button):
            picker.addWidget(widget)
        stepper = QHBoxLayout()
        stepper.addWidget(self.iteration_slider)
        stepper.addWidget(self.iteration_label)
        form = QFormLayout()
        form.addRow("Run", picker)
        form.addRow("", self.info_label)
        form.addRow("Iteration", stepper)
        form.addRow("Class", self.class_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table, stretch=2)
        layout.addWidget(self.fsc_plot, stretch=1)

    def _connect(self) -> None:
        self.open_button.clicked.connect(lambda: self.load(self.root_edit.text()))
        self.root_edit.returnPressed.connect(lambda: self.load(self.root_edit.text()))
        self.browse_button.clicked.connect(self._browse)
        self.iteration_slider.valueChanged.connect(self._on_slider)
        self.class_combo.currentIndexChanged.connect(lambda _: self.show_class(self.current_class))
        self.table.itemSelectionChanged.connect(self._on_selection)

    # ------------------------------------------------------------------ state

    @property
    def run(self) -> RunResults | None:
        """The open run."""
        return self._run

    @property
    def results(self) -> IterationResults | None:
        """The iteration shown."""
        return self._results

    @property
    def current_class(self) -> int:
        """The class selected (1-based; 0 when none)."""
        ref = self.class_combo.currentData()
        return int(ref) if ref is not None else 0

    @property
    def stack_rows(self) -> NDArray[np.intp]:
        """Rows of the iteration's particle table in the order of the aligned stack."""
        return self._stack_rows.copy()

    # ------------------------------------------------------------------ actions

    @report_errors
    def load(self, path: str | Path) -> RunResults | None:
        """Open a run (its root or any of its files) and show its last iteration."""
        if not str(path).strip():
            raise ValueError("give a run's root or one of its files (…_log.xmd, …_img.xmd)")
        run = open_run(path)
        if self._run is None or run.root != self._run.root:
            self._volumes.clear()
        self._run = run
        self.root_edit.setText(str(run.root))
        self.info_label.setText(f"{run.root.name}: iterations {run.iterations[0]} to {run.iterations[-1]}")
        self.info_label.setToolTip(run.command_line())
        self.iteration_slider.blockSignals(True)
        self.iteration_slider.setRange(0, len(run.iterations) - 1)
        self.iteration_slider.setValue(len(run.iterations) - 1)
        self.iteration_slider.blockSignals(False)
        self.show_iteration(run.iterations[-1])
        return run

    @report_errors
    def show_iteration(self, iteration: int) -> None:
        """Show one iteration: references, coverage, particle table, FSC and the aligned class stack."""
        if self._run is None:
            raise ValueError("open a run first")
        results = self._run.read_iteration(iteration)
        self._results = results
        self.iteration_label.setText(f"iteration {iteration}")
        slider_index = self._run.iterations.index(iteration)
        if self.iteration_slider.value() != slider_index:
            self.iteration_slider.blockSignals(True)
            self.iteration_slider.setValue(slider_index)
            self.iteration_slider.blockSignals(False)
        shown = self._show_maps(results)
        self._fill_classes(results)
        self._fill_table(results.particles)
        self._plot_fsc(self.current_class)
        shown |= self._show_stack()
        remove_layers(self.viewer, self._owned - shown)
        self._owned = shown

    @report_errors
    def show_class(self, ref: int) -> None:
        """Show the aligned particles of class `ref` (1-based)."""
        if self._results is None or ref < 1:
            return
        if self.current_class != ref:
            index = self.class_combo.findData(ref)
            if index < 0:
                raise ValueError(f"iteration {self._results.iteration} has no class {ref}")
            self.class_combo.blockSignals(True)
            self.class_combo.setCurrentIndex(index)
            self.class_combo.blockSignals(False)
        self._plot_fsc(ref)
        shown = self._show_stack()
        if not shown:
            remove_layers(self.viewer, {ALIGNED_NAME})
        self._owned = (self._owned - {ALIGNED_NAME}) | shown

    @report_errors
    def select_particle(self, row: int) -> None:
        """Move the viewer to particle `row` (of the iteration's table) in the aligned stack."""
        if self._results is None or self._results.particles is None:
            return
        ref = int(self._results.particles["ref"][row])
        if ref != self.current_class:
            self.show_class(ref)
        position = np.flatnonzero(self._stack_rows == row)
        if position.size and ALIGNED_NAME in self.viewer.layers:
            axis = self.viewer.dims.ndim - 4
            self.viewer.dims.set_current_step(axis, int(position[0]))

    # ------------------------------------------------------------------ pieces

    def _plot_fsc(self, highlight: int) -> None:
        """The FSC of every class against frequency, `highlight` thicker, 0.5 dashed."""
        fsc = self._results.fsc if self._results is not None else {}
        frequencies = {f"class {ref}": frequency for ref, (frequency, _) in fsc.items()}
        curves = {f"class {ref}": values for ref, (_, values) in fsc.items()}
        self.fsc_plot.show_series(frequencies, {"FSC": curves}, highlight=f"class {highlight}", guide=0.5)

    def _show_maps(self, results: IterationResults) -> set[str]:
        layers = reference_layers(results.references, results.pixel_size_A, results.iteration)
        if results.coverage is not None:
            layers += coverage_layers(results.coverage, results.pixel_size_A, results.iteration)
        for layer_data in layers:
            show_layer(self.viewer, layer_data)
        return {kwargs["name"] for _, kwargs, _ in layers}

    def _show_stack(self) -> set[str]:
        """Align and show the particles of the selected class; the layer names shown."""
        results, ref = self._results, self.current_class
        self._stack_rows = np.zeros(0, dtype=np.intp)
        if results is None or results.particles is None or ref < 1:
            return set()
        particles = results.particles
        rows = class_members(particles["ref"], particles["pMax"], ref)
        if rows.size == 0:
            return set()
        members = particles.take(rows)
        angles, shifts = members.float_columns(ANGLE_LABELS), members.float_columns(SHIFT_LABELS)
        if angles is None or shifts is None:
            raise ValueError(f"{self._run.root}: the particle table has no angles or shifts")
        aligned = align_to_reference(self._particle_volumes(members), angles, shifts)
        show_layer(
            self.viewer, aligned_stack_layer(aligned, members, ref, results.pixel_size_A, results.iteration)
        )
        self._stack_rows = rows
        return {ALIGNED_NAME}

    def _particle_volumes(self, members: MetaData) -> NDArray[np.float32]:
        """The particles of `members`, read once per run and kept."""
        names = [str(name) for name in members["image"]]
        unread = [i for i, name in enumerate(names) if name not in self._volumes]
        if unread:
            volumes = read_particles(members.take(np.asarray(unread, dtype=np.intp)))
            self._volumes.update({names[i]: volume for i, volume in zip(unread, volumes, strict=True)})
        return np.stack([self._volumes[name] for name in names])

    def _fill_classes(self, results: IterationResults) -> None:
        previous = self.current_class
        counts = (
            np.bincount(results.particles["ref"], minlength=results.n_classes + 1)
            if results.particles is not None
            else None
        )
        self.class_combo.blockSignals(True)
        self.class_combo.clear()
        for ref in range(1, results.n_classes + 1):
            label = f"class {ref}" if counts is None else f"class {ref} ({counts[ref]} particles)"
            self.class_combo.addItem(label, ref)
        self.class_combo.setCurrentIndex(max(0, self.class_combo.findData(previous)))
        self.class_combo.blockSignals(False)

    def _fill_table(self, particles: MetaData | None) -> None:
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.clearContents()
        if particles is None:
            self.table.setRowCount(0)
            self.table.blockSignals(False)
            return
        order = np.lexsort((-np.asarray(particles["pMax"], dtype=np.float64), particles["ref"]))
        self.table.setRowCount(len(order))
        for line, row in enumerate(order):
            for column, (_, label) in enumerate(COLUMNS):
                item = self._cell(particles, label, int(row))
                item.setData(_ROW, int(row))
                self.table.setItem(line, column, item)
        self.table.setSortingEnabled(True)
        if len(order) <= _RESIZE_LIMIT:
            self.table.resizeColumnsToContents()
        self.table.blockSignals(False)

    @staticmethod
    def _cell(particles: MetaData, label: str, row: int) -> QTableWidgetItem:
        if label not in particles:
            return QTableWidgetItem("")
        value = particles[label][row]
        if label == "image":
            item = QTableWidgetItem(Path(str(value)).name)
            item.setToolTip(str(value))
            return item
        if label == "ref":
            return _NumberItem(value, str(int(value)))
        digits = 4 if label == "pMax" else 1 if label == "logLikelihood" else 2
        return _NumberItem(value, f"{float(value):.{digits}f}")

    # ------------------------------------------------------------------ slots

    def _on_slider(self, index: int) -> None:
        if self._run is not None and 0 <= index < len(self._run.iterations):
            self.show_iteration(self._run.iterations[index])

    def _on_selection(self) -> None:
        items = self.table.selectedItems()
        if items:
            self.select_particle(int(items[0].data(_ROW)))

    def _browse(self) -> None:
        start = str(Path(self.root_edit.text()).parent) if self.root_edit.text() else ""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open an ml_tomo run",
            start,
            "ml_tomo run files (*_log.xmd *_img.xmd *_ref.xmd *.doc);;All files (*)",
        )
        if path:
            self.load(path)
