"""The Refinement widget: every ``ml_tomo`` option, a missing-region editor, Run and Cancel, live results.

The option fields are generated from :data:`napari_mltomo.options.OPTIONS`, as the command line is,
so both have the same options and defaults. A run reads its inputs with
:func:`napari_mltomo.inputs.read_inputs` (the command's checks and messages) and refines with
:func:`napari_mltomo.runner.refine_events` (the command's stream of events) in a ``thread_worker``; the
widget only shows what it yields.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, LineEdit, SpinBox
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import thread_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from napari_mltomo._layers import prepare_image_layers, reference_layers, show_layer
from napari_mltomo._widgets._common import report_errors
from napari_mltomo._widgets.missing_viewer import MissingRegionViewer
from napari_mltomo._widgets.paced import Paced
from napari_mltomo._widgets.plots import CurvePlot
from napari_mltomo.argv import command_line, option_values
from napari_mltomo.core.params import ParameterError
from napari_mltomo.core.refine import ChunkProgress, MLState
from napari_mltomo.core.stages import last_iteration
from napari_mltomo.inputs import RunInputs, error_text, read_inputs
from napari_mltomo.io import read_missing_regions, write_missing_regions
from napari_mltomo.io.run import RunPaths
from napari_mltomo.options import GROUPS, OPTIONS, Option
from napari_mltomo.runner import RunEnd, RunEvent, refine_events

if TYPE_CHECKING:
    import napari

__all__ = ["RefinementWidget", "option_fields"]

_INT_RANGE = 2**31 - 1
#: Options the widget shows (``--quiet`` is a command-line matter).
WIDGET_OPTIONS: tuple[Option, ...] = tuple(option for option in OPTIONS if option.widget)


def option_fields() -> dict[str, ValueWidget]:
    """One magicgui field per widget option, named as the option, holding its default."""
    return {option.name: _field(option) for option in WIDGET_OPTIONS}


def _field(option: Option) -> ValueWidget:
    label, tooltip = option.flags[-1], option.help_text
    if option.kind is bool:
        field = CheckBox(name=option.name, label=label, value=option.default, tooltip=tooltip)
    elif option.path is not None:
        mode = "r" if option.path == "r" else "w"
        field = FileEdit(name=option.name, label=label, mode=mode, tooltip=tooltip)
        field.line_edit.value = "" if option.default is None else str(option.default)
    elif option.kind is int and option.default is not None:
        field = SpinBox(
            name=option.name, label=label, value=option.default, min=-1, max=_INT_RANGE, tooltip=tooltip
        )
    else:
        text = "" if option.default is None else str(option.default)
        field = LineEdit(name=option.name, label=label, value=text, tooltip=tooltip)
    return field


def field_words(option: Option, field: ValueWidget) -> list[str]:
    """The ``ml_tomo`` words a field stands for: none for a switch that is off or an empty optional
    field, the bare flag for an empty field that needs a value (the parser then says so)."""
    value = field.line_edit.value if isinstance(field, FileEdit) else field.value
    flag = option.flags[-1]
    if option.kind is bool:
        return [flag] if value else []
    text = str(value).strip()
    if not text:
        return [] if option.default is None else [flag]
    return [f"{flag}={text}"]


class RefinementWidget(QWidget):
    """Set up, run, watch and cancel a refinement.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        Class references appear in it as layers ``class 1`` ... and are updated in place each iteration.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.fields = option_fields()
        self.worker: Any = None
        self.history: list[MLState] = []
        self.last_logged: int | None = None  # the newest iteration (0: the starting model) with a log
        self.inputs: RunInputs | None = None
        self.outcome = ""
        self._stop = threading.Event()
        self._bars: dict[str, progress] = {}
        self._paced = Paced(self)
        self._build()
        prepare_image_layers()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        tabs = QTabWidget()
        for group in GROUPS:
            container = Container(widgets=[f for o, f in self._option_items() if o.group == group])
            tabs.addTab(_scrolled(container.native), group.split(" (")[0])
        self.region_editor = MissingRegionViewer(self.viewer, live=False)
        save = QPushButton("Use as --missing file…")
        save.clicked.connect(self._save_regions)
        editor = QWidget()
        editor_layout = QVBoxLayout(editor)
        editor_layout.addWidget(self.region_editor)
        editor_layout.addWidget(save)
        editor_tab = tabs.addTab(_scrolled(editor), "Missing region")
        tabs.currentChanged.connect(lambda index: self._show_editor(index == editor_tab))
        self.fields["missing"].changed.connect(self._load_regions)

        self.run_button, self.cancel_button = QPushButton("Run"), QPushButton("Cancel")
        self.copy_button = QPushButton("Copy command line")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.copy_button.clicked.connect(self.copy_command_line)
        buttons = QHBoxLayout()
        for button in (self.run_button, self.cancel_button, self.copy_button):
            buttons.addWidget(button)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.chunk_bar = QProgressBar()
        self.plot = CurvePlot(
            ("log-likelihood", "class fractions", "resolution (Å)"), y_floors={"class fractions": (0.0, 1.0)}
        )
        layout = QVBoxLayout(self)
        layout.addWidget(tabs, stretch=3)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.chunk_bar)
        layout.addWidget(self.plot, stretch=2)

    def _option_items(self) -> Iterator[tuple[Option, ValueWidget]]:
        for option in WIDGET_OPTIONS:
            yield option, self.fields[option.name]

    # ------------------------------------------------------------------ values

    def values(self) -> dict[str, Any]:
        """Option name -> value as the fields hold them, parsed as the command line parses them (a value
        it would refuse raises its message as :class:`~napari_mltomo.argv.UsageError`)."""
        words = [word for option, field in self._option_items() for word in field_words(option, field)]
        parsed = option_values(words)
        return {option.name: parsed[option.name] for option in WIDGET_OPTIONS}

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Fill fields from option values (names as in the option table)."""
        for name, value in values.items():
            field = self.fields[name]
            if isinstance(field, FileEdit):
                field.line_edit.value = "" if value is None else str(value)
            elif isinstance(field, LineEdit):
                field.value = "" if value is None else str(value)
            else:
                field.value = value

    def command_line(self) -> str:
        """The ``ml_tomo`` command with the fields' values (options at their default left out)."""
        return command_line(self.values())

    @report_errors
    def copy_command_line(self) -> str:
        """Put the equivalent command on the clipboard (and return it)."""
        command = self.command_line()
        QApplication.clipboard().setText(command)
        show_info(f"copied: {command}")
        return command

    # ------------------------------------------------------------------ missing regions

    def _show_editor(self, shown: bool) -> None:
        """The editor's mask layers appear once its tab is opened, and then follow every change."""
        if shown and not self.region_editor.live:
            self.region_editor.live = True
            self.region_editor.refresh()

    @report_errors
    def _load_regions(self, *_: Any) -> None:
        path = str(self.fields["missing"].line_edit.value).strip()
        if path and Path(path).is_file():
            regions = read_missing_regions(path)
            self.region_editor.set_region(regions[0])

    @report_errors
    def _save_regions(self) -> None:
        default = Path(self.fields["oroot"].line_edit.value or "mltomo").parent / "missing_region.xmd"
        path = write_missing_regions(default, [self.region_editor.region()])
        self.fields["missing"].line_edit.value = str(path)
        show_info(f"wrote {path}; each particle's missingRegionNumber must be 1")

    # ------------------------------------------------------------------ running

    @report_errors
    def start(self) -> Any:
        """Refine with the fields' options: a worker thread reads and checks the inputs (as the command
        does), the class layers are made, then a second worker runs the refinement; returns the first."""
        if self.worker is not None:
            raise ParameterError("a run is going; cancel it first")
        values = self.values()
        self.inputs, self.history, self.outcome, self.last_logged = None, [], "", None
        self._stop.clear()
        self.worker = self._read(values, command_line(values))
        self.worker.returned.connect(self._on_read)
        self.worker.errored.connect(lambda _: self._on_finished())
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("reading and checking the inputs…")
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Stop the run after the chunk of particles being computed; finished iterations stay on disk.
        The worker ends once the engine has stopped, so a new run cannot overlap it."""
        self._stop.set()
        self.status.setText("cancelling after this chunk…")

    @thread_worker(start_thread=False)
    def _read(self, values: dict[str, Any], command: str) -> RunInputs | str:
        """In a worker thread: the checked inputs, or why they were refused."""
        try:
            return read_inputs(values, command)
        except (OSError, ValueError) as err:
            return f"failed: {error_text(err)}"

    def _on_read(self, inputs: RunInputs | str) -> None:
        """Make the class layers (paced), then start the refinement: napari sets a new layer up in the GUI
        thread, which is quicker before the refinement takes the processors; no thread waits for it."""
        if isinstance(inputs, str):
            self._on_returned(inputs)
            self._on_finished()
            return
        self.inputs = inputs
        params = inputs.params
        self.status.setText(f"starting: {len(inputs.images)} particles, {params.n_classes} classes")
        total = last_iteration(params) - params.istart + 1
        self._bars["iterations"] = progress(total=total, desc="ml_tomo iterations")
        self._prepare_layers(inputs)
        self._paced.add(self._run)

    def _run(self) -> None:
        """Start the refinement worker, unless the run was cancelled while its layers were made."""
        if self._stop.is_set():
            self._on_returned("cancelled")
            self._on_finished()
            return
        assert self.inputs is not None
        self.worker = self._refine(self.inputs)
        self.worker.yielded.connect(self._on_yield)
        self.worker.returned.connect(self._on_returned)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    @thread_worker(start_thread=False)
    def _refine(self, inputs: RunInputs) -> Iterator[RunEvent]:
        """In a worker thread: the run's events; returns the outcome."""
        try:
            for event in refine_events(inputs, self._stop):
                yield event
                if isinstance(event, RunEnd):
                    return "done" if event.complete else "cancelled"
        except (OSError, ValueError) as err:
            return f"failed: {error_text(err)}"
        return "cancelled"

    def _on_chunk(self, event: ChunkProgress) -> None:
        self.chunk_bar.setRange(0, event.total)
        self.chunk_bar.setValue(event.done)
        self.chunk_bar.setFormat(f"{event.stage}: %v/%m chunks")
        bar = self._bars.get("chunks")
        if bar is None or bar.total != event.total or event.done == 1:
            if bar is not None:
                bar.close()
            bar = self._bars["chunks"] = progress(total=event.total, desc=event.stage)
        bar.n = event.done
        bar.refresh()

    def _on_yield(self, item: RunEvent) -> None:
        if isinstance(item, ChunkProgress):
            self._on_chunk(item)
        elif isinstance(item, MLState):
            self._on_state(item)

    def _prepare_layers(self, inputs: RunInputs) -> None:
        """Make (or keep) the class layers, empty, one per turn of the event loop."""
        for data, kwargs, kind in reference_layers(
            np.zeros((inputs.params.n_classes, *(inputs.size,) * 3)), inputs.pixel_size_at(inputs.size), 0
        ):
            if kwargs["name"] not in self.viewer.layers:
                self._paced.add(functools.partial(show_layer, self.viewer, (data, kwargs, kind)))

    def _on_state(self, state: MLState) -> None:
        inputs = self.inputs
        assert inputs is not None
        pixel = inputs.pixel_size_at(state.size)
        for layer_data in reference_layers(state.references, pixel, state.iteration):
            self._paced.add(functools.partial(show_layer, self.viewer, layer_data))
        if state.startup_step:
            self.status.setText(f"start-up step {state.startup_step} (box {state.size})")
            return
        self.last_logged = state.iteration  # its files are on disk by the end of the run, stopped or not
        if state.stats is None:
            self.status.setText("starting references ready")
            return
        self.history.append(state)
        escaped = f"; {state.escape_note}" if state.escape_note else ""
        step = f" (step {state.stage.step_deg:g} deg)" if state.stage is not None else ""
        self.status.setText(
            f"iteration {state.iteration}{step}: LL {state.log_likelihood:.6g}, pMax {state.mean_pmax:.3f}"
            f"{escaped}"
        )
        self._paced.add(functools.partial(self._plot_history, inputs))
        self._bars["iterations"].update(1)  # last: napari's progress bar processes pending events

    def _plot_history(self, inputs: RunInputs) -> None:
        iterations = np.array([state.iteration for state in self.history], dtype=float)
        resolved = [state.resolution_shell for state in self.history if state.resolution_shell is not None]
        series = {
            "log-likelihood": {"LL": np.array([state.log_likelihood for state in self.history])},
            "class fractions": {
                f"class {k + 1}": np.array([state.fractions[k] for state in self.history])
                for k in range(inputs.params.n_classes)
            },
            "resolution (Å)": {
                f"class {k + 1}": np.array([inputs.resolution_A(int(shells[k])) for shells in resolved])
                for k in range(inputs.params.n_classes)
            },
        }
        self.plot.show_series(iterations, series)

    def _on_returned(self, outcome: str) -> None:
        self.outcome = outcome
        if outcome.startswith("failed: "):
            show_error(outcome.removeprefix("failed: "))

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.chunk_bar.reset()
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        self.status.setText(self._outcome_text())

    def _outcome_text(self) -> str:
        """What became of the run, and what to do next."""
        if self.outcome.startswith("failed: ") or self.inputs is None:
            return self.outcome or "stopped"
        root = self.inputs.oroot
        if self.outcome == "done":
            last = self.history[-1].iteration if self.history else None
            return f"done: iteration {last}; results in {root}_img.xmd and {root}_ref.xmd"
        last = self.last_logged
        if last is None:
            return "cancelled before the starting model was ready; nothing to restart"
        log = str(RunPaths(root).log(last))
        self.set_values({"restart": log})
        return f"cancelled after iteration {last}; --restart is set to {log}: Run continues from it"


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(widget)
    return area
