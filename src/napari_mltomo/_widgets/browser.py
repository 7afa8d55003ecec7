"""The results browser: a run's class references, coverage, FSC and particles, iteration by iteration.

The widget only arranges and displays: files are read by :mod:`napari_mltomo.io.results`, particles are
aligned by :mod:`napari_mltomo.core.views` through the lazy stack of :mod:`napari_mltomo._aligned`, and
layers are built by :mod:`napari_mltomo._layers`. Reading an iteration and aligning particles happen in a
worker thread: the GUI thread shows an iteration, a class or a particle once the particle to show is
aligned, a layer or plot per turn of the event loop, and the worker then aligns the particles near it, so
that napari, which computes the slice shown from the lazy stack, finds them ready. While the viewer moves
through the planes of a particle the worker waits, leaving the processor to napari. Every failure becomes
one notification line (:func:`napari.utils.notifications.show_error`).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info
from numpy.typing import NDArray
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from napari_mltomo._aligned import AlignedParticles, ClassRequest, ClassView, align_near
from napari_mltomo._layers import (
    ALIGNED_NAME,
    LayerData,
    aligned_stack_layer,
    coverage_layers,
    prepare_image_layers,
    reference_layers,
    remove_layers,
    show_layer,
)
from napari_mltomo._widgets._common import notify_error, report_errors
from napari_mltomo._widgets.export_dialog import ask_export_target, export_worker
from napari_mltomo._widgets.paced import Paced
from napari_mltomo._widgets.particle_table import ParticleTable
from napari_mltomo._widgets.plots import CurvePlot
from napari_mltomo.core.views import class_members
from napari_mltomo.io.results import IterationResults, RunResults, open_run

if TYPE_CHECKING:
    import napari

__all__ = ["ResultsBrowser"]

#: How long the viewer rests on a particle before the worker aligns more (ms): while a user moves
#: through the planes of a particle, napari has the processor to itself.
_REST_MS = 300


@thread_worker(start_thread=False)
def _prepare(request: ClassRequest, go: threading.Event) -> Iterator[ClassView | int | Exception | None]:
    """In a worker thread: the view the request asks for, then the particles near it aligned (whenever
    `go` is set)."""
    try:
        view = request.view()
        yield view
        if view.stack is not None:
            yield from align_near(view.stack, view.position, go)
    except (OSError, ValueError) as err:
        yield err  # the GUI thread reports it in one line


@thread_worker(start_thread=False)
def _prefetch(
    stack: AlignedParticles, position: int, go: threading.Event
) -> Iterator[int | Exception | None]:
    """In a worker thread: align the particles near `position` (whenever `go` is set)."""
    try:
        yield from align_near(stack, position, go)
    except (OSError, ValueError) as err:
        yield err


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
        self._view: ClassView | None = None  # what is shown
        self._asked: ClassRequest | None = None  # what was asked for last
        self._pending = False  # whether the worker is still making `_asked` ready
        self._worker: Any = None
        self._centre = 0  # the stack position the worker aligns around
        self._shown_results: IterationResults | None = None  # whose maps and table are shown
        self._shown_stack: AlignedParticles | None = None  # the stack the aligned layer shows
        self._owned: set[str] = set()
        self._exporting: Any = None  # the export worker running, if any
        self._paced = Paced(self)
        self._go = threading.Event()  # set: the worker may align particles ahead
        self._go.set()
        self._rest = QTimer(self)
        self._rest.setSingleShot(True)
        self._rest.timeout.connect(self._go.set)
        self._build()
        self._connect()
        prepare_image_layers()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.root_edit = QLineEdit()
        self.root_edit.setPlaceholderText("run root, or any file of the run (…_log.xmd, …_img.xmd)")
        self.browse_button = QPushButton("Browse…")
        self.open_button = QPushButton("Open")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("The particles of the iteration shown, for RELION or Dynamo")
        self.export_button.setEnabled(False)
        self.info_label = QLabel("no run open")
        self.info_label.setWordWrap(True)
        self.iteration_slider = QSlider(Qt.Orientation.Horizontal)
        self.iteration_slider.setTracking(False)
        self.iteration_slider.setPageStep(1)
        self.iteration_label = QLabel("iteration –")
        self.class_combo = QComboBox()
        self.table = ParticleTable()
        self.fsc_plot = CurvePlot(("FSC",), xlabel="frequency (1/Å)")

        picker = QHBoxLayout()
        for widget in (self.root_edit, self.browse_button, self.open_button, self.export_button):
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
        self.export_button.clicked.connect(self._export)
        self.iteration_slider.valueChanged.connect(self._on_slider)
        self.class_combo.currentIndexChanged.connect(lambda _: self.show_class(self.current_class))
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.viewer.dims.events.current_step.connect(self._on_step)

    # ------------------------------------------------------------------ state

    @property
    def run(self) -> RunResults | None:
        """The open run."""
        return self._run

    @property
    def results(self) -> IterationResults | None:
        """The iteration shown."""
        return self._view.results if self._view is not None else None

    @property
    def current_class(self) -> int:
        """The class selected (1-based; 0 when none)."""
        ref = self.class_combo.currentData()
        return int(ref) if ref is not None else 0

    @property
    def stack_rows(self) -> NDArray[np.intp]:
        """Rows of the iteration's particle table in the order of the aligned stack."""
        return self._view.rows.copy() if self._view is not None else np.zeros(0, dtype=np.intp)

    # ------------------------------------------------------------------ actions

    @report_errors
    def load(self, path: str | Path) -> RunResults | None:
        """Open a run (its root or any of its files) and show its last iteration."""
        if not str(path).strip():
            raise ValueError("give a run's root or one of its files (…_log.xmd, …_img.xmd)")
        run = open_run(path)
        self._run = run
        self.root_edit.setText(str(run.root))
        self.info_label.setText(f"{run.root.name}: iterations {run.iterations[0]} to {run.iterations[-1]}")
        self.info_label.setToolTip(run.command_line())
        self.export_button.setEnabled(True)
        self.iteration_slider.blockSignals(True)
        self.iteration_slider.setRange(0, len(run.iterations) - 1)
        self.iteration_slider.setValue(len(run.iterations) - 1)
        self.iteration_slider.blockSignals(False)
        self.show_iteration(run.iterations[-1])
        return run

    @report_errors
    def show_iteration(self, iteration: int) -> None:
        """Show one iteration: references, coverage, particle table, FSC and the aligned class stack.

        The iteration is read in a worker thread and shown when the particle to show is aligned.
        """
        if self._run is None:
            raise ValueError("open a run first")
        self._ask(ClassRequest(self._run, iteration, self.current_class, self._position()))

    @report_errors
    def show_class(self, ref: int) -> None:
        """Show the aligned particles of class `ref` (1-based), once the particle to show is aligned."""
        if self._view is None or ref < 1:
            return
        self._select_class(ref)
        self._ask(self._again(ref, self._position(), move=False))

    @report_errors
    def select_particle(self, row: int) -> None:
        """Move the viewer to particle `row` (of the iteration's table) in the aligned stack, at once if it
        is aligned, else once the worker has aligned it."""
        view = self._view
        if view is None or view.results.particles is None:
            return
        particles = view.results.particles
        ref = int(particles["ref"][row])
        rows = view.rows if ref == view.ref else class_members(particles["ref"], particles["pMax"], ref)
        position = int(np.flatnonzero(rows == row)[0])
        if ref == view.ref and self._ready(position):
            self.viewer.dims.set_current_step(self.viewer.dims.ndim - 4, position)
            return
        self._select_class(ref)
        self._ask(self._again(ref, position, move=True))

    # ------------------------------------------------------------------ the worker

    def _again(self, ref: int, position: int, move: bool) -> ClassRequest:
        """A request for class `ref` of the iteration asked for last (reusing it if it is shown)."""
        if self._pending or self._view is None:
            return dataclasses.replace(self._asked, ref=ref, position=position, move=move)
        return ClassRequest(self._run, self._view.results.iteration, ref, position, move, self._view)

    def _ask(self, request: ClassRequest) -> None:
        """Have the worker make `request` ready (replacing any earlier request); it is shown then."""
        self._asked, self._pending = request, True
        self._start(_prepare(request, self._go))

    def _start(self, worker: Any) -> None:
        """Run `worker` in place of the one running (which stops at its next particle)."""
        if self._worker is not None:
            self._worker.quit()
        self._worker = worker
        worker.yielded.connect(functools.partial(self._on_yielded, worker))
        worker.finished.connect(functools.partial(self._on_finished, worker))
        worker.start()

    def _on_yielded(self, worker: Any, value: ClassView | int | Exception) -> None:
        if worker is not self._worker:
            return  # an answer to a request replaced since
        if isinstance(value, Exception):
            notify_error(value)
        elif isinstance(value, ClassView):
            self._show(value)
        elif isinstance(value, int):
            self._redraw(value)

    def _redraw(self, index: int) -> None:
        """Draw the particle at stack position `index` again if napari drew it before it was aligned."""
        stack = self._shown_stack
        if stack is None or index not in stack.deferred or ALIGNED_NAME not in self.viewer.layers:
            return
        stack.deferred.discard(index)
        if index == self._position():
            self.viewer.layers[ALIGNED_NAME].refresh()

    def _on_finished(self, worker: Any) -> None:
        if worker is self._worker:
            self._worker, self._pending = None, False

    def _on_step(self, _event: Any = None) -> None:
        """When the viewer moves to another particle, align the ones near it; while it moves through the
        planes of one, hold the worker back until it rests."""
        if not self._follow() and not self._pending:
            self._go.clear()
            self._rest.start(_REST_MS)

    def _follow(self) -> bool:
        """Align around the particle the viewer shows if it is not the one aligned around; whether so."""
        view = self._view
        if self._pending or view is None or view.stack is None or ALIGNED_NAME not in self.viewer.layers:
            return False
        position = self._position()
        if position == self._centre:
            return False
        self._centre = position
        self._go.set()
        self._start(_prefetch(view.stack, position, self._go))
        return True

    def _position(self) -> int:
        """The stack position the viewer shows (0 without the aligned stack)."""
        if ALIGNED_NAME not in self.viewer.layers or self.viewer.dims.ndim < 4:
            return 0
        return int(self.viewer.dims.current_step[self.viewer.dims.ndim - 4])

    def _ready(self, position: int) -> bool:
        """Whether the viewer can move to `position` at once: nothing is on its way, the aligned layer shows
        the stack of the class shown and that particle is aligned."""
        stack = self._shown_stack
        if self._pending or self._paced.busy or stack is None or stack is not self._view.stack:
            return False
        return ALIGNED_NAME in self.viewer.layers and stack.is_aligned(position)

    # ------------------------------------------------------------------ showing

    def _show(self, view: ClassView) -> None:
        """Show what the worker made ready, a layer or plot per turn of the event loop (nothing here reads
        or aligns); updates of an earlier view still waiting are dropped."""
        self._view, self._pending, self._centre = view, False, view.position
        self._paced.clear()
        fresh = view.results is not self._shown_results
        if fresh:
            self._show_iteration_widgets(view)
        self._select_class(view.ref)
        self._paced.add(functools.partial(self._plot_fsc, view))
        maps = self._map_layers(view.results)
        for layer_data in maps if fresh else []:
            self._paced.add(functools.partial(show_layer, self.viewer, layer_data))
        self._paced.add(functools.partial(self._show_stack, view, {kwargs["name"] for _, kwargs, _ in maps}))

    def _show_iteration_widgets(self, view: ClassView) -> None:
        """The iteration's label, slider position, class list and particle table."""
        results = view.results
        self.iteration_label.setText(f"iteration {results.iteration}")
        slider_index = view.run.iterations.index(results.iteration)
        if self.iteration_slider.value() != slider_index:
            self.iteration_slider.blockSignals(True)
            self.iteration_slider.setValue(slider_index)
            self.iteration_slider.blockSignals(False)
        self._fill_classes(results)
        self.table.set_particles(results.particles)

    def _show_stack(self, view: ClassView, map_names: set[str]) -> None:
        """The last step of showing `view`: its aligned stack, other layers of the browser removed, and
        the viewer moved to the particle asked for."""
        shown = set(map_names)
        if view.stack is not None:
            if view.stack is not self._shown_stack or ALIGNED_NAME not in self.viewer.layers:
                results = view.results
                layer = aligned_stack_layer(
                    view.stack.stack, view.members, view.ref, results.pixel_size_A, results.iteration,
                    view.contrast_limits,
                )  # fmt: skip
                show_layer(self.viewer, layer)
            shown.add(ALIGNED_NAME)
        remove_layers(self.viewer, self._owned - shown)
        self._owned, self._shown_results, self._shown_stack = shown, view.results, view.stack
        if view.move:
            self.viewer.dims.set_current_step(self.viewer.dims.ndim - 4, view.position)
        self._follow()  # the viewer may have moved while the worker was busy

    def _select_class(self, ref: int) -> None:
        """Pick class `ref` in the list (without showing it)."""
        if self.current_class != ref:
            index = self.class_combo.findData(ref)
            if index < 0:
                raise ValueError(f"iteration {self._view.results.iteration} has no class {ref}")
            self.class_combo.blockSignals(True)
            self.class_combo.setCurrentIndex(index)
            self.class_combo.blockSignals(False)

    def _plot_fsc(self, view: ClassView) -> None:
        """The FSC of every class of `view` against frequency, its class thicker, 0.5 dashed."""
        fsc = view.results.fsc
        frequencies = {f"class {ref}": frequency for ref, (frequency, _) in fsc.items()}
        curves = {f"class {ref}": values for ref, (_, values) in fsc.items()}
        self.fsc_plot.show_series(frequencies, {"FSC": curves}, highlight=f"class {view.ref}", guide=0.5)

    @staticmethod
    def _map_layers(results: IterationResults) -> list[LayerData]:
        """The references and coverage maps of an iteration as layer data."""
        layers = reference_layers(results.references, results.pixel_size_A, results.iteration)
        if results.coverage is not None:
            layers += coverage_layers(results.coverage, results.pixel_size_A, results.iteration)
        return layers

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

    # ------------------------------------------------------------------ slots

    def _on_slider(self, index: int) -> None:
        if self._run is not None and 0 <= index < len(self._run.iterations):
            self.show_iteration(self._run.iterations[index])

    def _on_selection(self, *_: Any) -> None:
        row = self.table.selected_row()
        if row is not None:
            self.select_particle(row)

    def _export(self) -> None:
        """Ask where, then export the iteration shown in a worker thread; report the files or the error."""
        if self._run is None or self._view is None:
            return
        target = ask_export_target(self, str(self._run.root.parent))
        if target is None:
            return
        path, to = target
        worker = export_worker(self._run.root, to, path, self._view.results.iteration)
        worker.returned.connect(lambda files: show_info(f"exported to {files[0]} ({len(files)} files)"))
        worker.errored.connect(notify_error)
        self._exporting = worker  # kept until it ends
        worker.start()

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
