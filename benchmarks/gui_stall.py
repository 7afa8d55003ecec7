"""How long the napari event loop stalls while the Refinement widget refines the demo data set, and while
the Results browser shows a run with classes of 2,000 particles.

A 10 ms QTimer runs on the GUI thread (under Xvfb when there is no display: ``make bench`` arranges it).
Its longest gap between two ticks, less the 10 ms period, is the longest time the viewer could not respond.

* Refinement: the demo data set and options, from the widget, for the whole refinement. Target: under
  250 ms. It is given for the whole run, and from the moment the class layers exist (napari sets up a new
  image layer and compiles its shaders the first time it is drawn, in the GUI thread, which no plugin can
  spread).
* Results browser: a synthetic run written here (2 iterations, 2 classes of ``--particles`` particles of
  ``--size``³, the particle files symbolic links to a few synthetic particles), opened in the browser, which
  then moves through the z slices of a particle, steps through particles as a user pressing a key 4 times
  a second does, switches class and iteration, jumps to the last particle from the table, and jumps the
  viewer's slider to a particle the browser has not aligned yet (napari draws it blank, the browser's worker
  aligns it and has it drawn again). Target: under 100 ms once the run is open. Opening it is given apart,
  with napari's own cost of adding an image layer to a viewer, measured alone on a fresh viewer.

Usage: ``python benchmarks/gui_stall.py [--part refinement|browser|both] [--particles 2000] [--size 64]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import napari
import numpy as np
from qtpy.QtCore import Qt, QThreadPool, QTimer
from qtpy.QtWidgets import QApplication

from napari_mltomo import demo
from napari_mltomo.argv import option_values
from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.io import MetaData, write_star, write_volume

PERIOD_MS = 10
#: Distinct particle files per class of the browser's run; the table lists links to them.
DISTINCT_PER_CLASS = 4
ALIGNED = "aligned particles"
#: Seconds of events after each phase of a measurement (a stall it caused ends within them).
SETTLE_S = 0.5


class Ticks:
    """A timer ticking every :data:`PERIOD_MS` on the GUI thread, and the phases of a measurement."""

    def __init__(self) -> None:
        self.times: list[float] = [time.perf_counter()]
        self.phases: list[tuple[str, float, float, float]] = []
        self._timer = QTimer()
        self._timer.timeout.connect(lambda: self.times.append(time.perf_counter()))
        self._timer.start(PERIOD_MS)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Record a phase `name`: its start, when the block is done, and its end :data:`SETTLE_S` later."""
        start = time.perf_counter()
        yield
        done = time.perf_counter()
        pump_for(SETTLE_S)
        self.phases.append((name, start, done, time.perf_counter()))

    def longest(self, start: float, end: float) -> float:
        """The longest stall (ms) that began between `start` and `end`.

        A stall begins at the last tick before it, which comes at most a period or two before the action
        that stalls: the span is taken two periods early, so that back-to-back spans share no stall.
        """
        times = np.asarray(self.times)
        gaps = np.diff(times) * 1000.0 - PERIOD_MS
        early = 2 * PERIOD_MS / 1000.0
        began = (times[:-1] >= start - early) & (times[:-1] < end - early)
        return float(gaps[began].max()) if began.any() else 0.0

    def stop(self) -> None:
        """Stop ticking."""
        self._timer.stop()


def pump(condition: Callable[[], bool], timeout_s: float = 600.0) -> None:
    """Process Qt events until `condition` holds."""
    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the viewer did not get there in time")
        QApplication.processEvents()
        time.sleep(0.002)


def pump_for(seconds: float) -> None:
    """Process Qt events for `seconds`."""
    end = time.perf_counter() + seconds
    pump(lambda: time.perf_counter() >= end)


def measure_refinement(folder: Path) -> None:
    """Refine the demo data set from the Refinement widget and print the stalls."""
    demo.write_demo_data(folder)
    argv = ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd")]
    values = option_values([*argv, "--oroot", str(folder / "run" / "demo"), *demo.DEMO_ARGS])
    values.pop("quiet")
    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-mltomo", "Refinement")
    widget.set_values(values)
    layers_ready: list[float] = []
    n_classes = int(values["nref"])
    viewer.layers.events.inserted.connect(
        lambda _: layers_ready.append(time.perf_counter()) if len(viewer.layers) == n_classes else None
    )
    ticks = Ticks()
    started = time.perf_counter()
    widget.start()
    pump(lambda: widget.worker is None, timeout_s=3600.0)
    wall = time.perf_counter() - started
    ticks.stop()
    times = np.asarray(ticks.times)
    gaps = np.diff(times) * 1000.0 - PERIOD_MS
    settled = gaps[times[1:] > layers_ready[0] + 1.0]
    iterations = len(widget.history)
    print(
        f"refinement of the demo data set from the Refinement widget: {iterations} iterations, {wall:.1f} s"
    )
    print(f"event-loop ticks: {len(ticks.times)} (one per {PERIOD_MS} ms timer period)")
    worst, typical = gaps.max(), np.percentile(gaps, 99)
    print(f"longest stall: {worst:.0f} ms; 99th percentile {typical:.0f} ms (target < 250 ms)")
    print(f"longest stall once the {n_classes} class layers exist: {settled.max():.0f} ms")
    viewer.close()


def write_browser_run(folder: Path, n_per_class: int, size: int) -> Path:
    """A finished 2-iteration, 2-class run with `n_per_class` particles per class; its root.

    Iteration 2 deals the particles to the classes anew, so that switching iteration changes the stacks.
    """
    data = make_dataset(DISTINCT_PER_CLASS, 2, size, snr=2.0, seed=0)
    (folder / "particles").mkdir(parents=True)
    sources = [
        write_volume(folder / f"source{i:03d}.mrc", volume, pixel_size_A=4.0)
        for i, volume in enumerate(data.volumes)
    ]
    which = np.arange(2 * n_per_class) % len(sources)
    names = []
    for i, source in enumerate(which):
        os.symlink(sources[source], folder / "particles" / f"p{i:05d}.mrc")
        names.append(f"../particles/p{i:05d}.mrc")
    root = folder / "run" / "r"
    root.parent.mkdir()
    rng = np.random.default_rng(0)
    for iteration in (1, 2):
        refs = data.classes[which] + 1 if iteration == 1 else rng.permutation(data.classes[which] + 1)
        columns = {
            "image": np.array(names, dtype=object),
            **dict(zip(("angleRot", "angleTilt", "anglePsi"), data.angles_deg[which].T, strict=True)),
            **dict(zip(("shiftX", "shiftY", "shiftZ"), data.shifts_px[which].T, strict=True)),
            "ref": refs,
            "logLikelihood": rng.normal(-1.0e5, 10.0, len(which)),
            "pMax": rng.uniform(0.0, 1.0, len(which)),
        }
        _write_iteration(f"{root}_it{iteration:06d}", MetaData(columns), data.phantoms, iteration)
    return root


def _write_iteration(prefix: str, particles: MetaData, references: np.ndarray, iteration: int) -> None:
    """The files of one iteration as the results browser reads them (``io/run.py`` describes them)."""
    maps = [
        write_volume(f"{prefix}_ref{k:06d}.mrc", volume, pixel_size_A=4.0)
        for k, volume in enumerate(references, start=1)
    ]
    n_classes, size = len(references), references.shape[-1]
    classes = {
        "image": np.array([path.name for path in maps], dtype=object),
        "enabled": np.ones(n_classes, dtype=np.int64),
        "ref": np.arange(1, n_classes + 1),
        "weight": np.full(n_classes, 1.0 / n_classes),
    }
    write_star(f"{prefix}_ref.xmd", {"classes": MetaData(classes)})
    write_star(f"{prefix}.doc", particles)
    frequency = np.arange(1, size // 2) / (size * 4.0)
    fsc = MetaData({"resolutionFreqFourier": frequency, "resolutionFRC": np.exp(-20.0 * frequency)})
    write_star(f"{prefix}.fsc", {f"class_{k:06d}": fsc for k in range(1, n_classes + 1)})
    log = MetaData({"iterationNumber": [iteration]})
    write_star(f"{prefix}_log.xmd", log, "ml_tomo -i images.xmd --oroot run/r", row_format=True)


def _shows(viewer: napari.Viewer, iteration: int, ref: int) -> bool:
    """Whether the aligned-particles layer shows class `ref` of `iteration`."""
    if ALIGNED not in viewer.layers:
        return False
    meta = viewer.layers[ALIGNED].metadata
    return meta.get("iteration") == iteration and meta.get("ref") == ref


def _at(viewer: napari.Viewer, stack_rows: np.ndarray, row: int) -> bool:
    """Whether the viewer shows the particle of table row `row` (`stack_rows`: rows in stack order)."""
    position = np.flatnonzero(stack_rows == row)
    return bool(position.size) and viewer.dims.current_step[0] == position[0]


def browse(
    viewer: napari.Viewer, browser: Any, root: Path, ticks: Ticks, n_per_class: int, size: int
) -> None:
    """Open the run and do what a user does, each step a phase of `ticks`; the last is a jump of the
    viewer's slider to a particle the browser has had no reason to align yet."""
    with ticks.phase("open the run (iteration 2, class 1)"):
        browser.load(root)
        pump(lambda: _shows(viewer, 2, 1))
    with ticks.phase(f"the {size} z slices of the particle shown, one per 30 ms"):
        for z in range(size):
            viewer.dims.set_current_step(1, z)
            pump_for(0.03)
    with ticks.phase("the next 16 particles, one per 250 ms"):
        for position in range(1, 17):
            viewer.dims.set_current_step(0, position)
            pump_for(0.25)
    with ticks.phase("class 2"):
        browser.class_combo.setCurrentIndex(1)
        pump(lambda: _shows(viewer, 2, 2))
    with ticks.phase("iteration 1"):
        browser.iteration_slider.setValue(0)
        pump(lambda: _shows(viewer, 1, 2))
    with ticks.phase("the last particle of the table"):
        model = browser.table.model()
        line = model.rowCount() - 1
        row = int(model.index(line, 0).data(Qt.ItemDataRole.UserRole))
        browser.table.selectRow(line)
        pump(lambda: _at(viewer, browser.stack_rows, row))
    with ticks.phase(f"the viewer's slider jumps to particle {n_per_class // 2}, shown once aligned"):
        viewer.dims.set_current_step(0, n_per_class // 2)
        layer = viewer.layers[ALIGNED]
        pump(lambda: bool(np.any(layer.data[n_per_class // 2, viewer.dims.current_step[1]].compute())))


def measure_browser(folder: Path, n_per_class: int, size: int) -> None:
    """Browse a run with classes of `n_per_class` particles and print the stalls of each step."""
    started = time.perf_counter()
    root = write_browser_run(folder, n_per_class, size)
    print(
        f"\nresults browser: a run with 2 classes of {n_per_class} particles of {size}³, 2 iterations "
        f"(written in {time.perf_counter() - started:.1f} s)"
    )
    viewer = napari.Viewer(show=True)
    _, browser = viewer.window.add_plugin_dock_widget("napari-mltomo", "Results browser")
    pump_for(1.0)
    ticks = Ticks()
    browse(viewer, browser, root, ticks, n_per_class, size)
    ticks.stop()
    stalls = [ticks.longest(start, end) for _, start, _, end in ticks.phases]
    for (name, start, done, _), stall in zip(ticks.phases, stalls, strict=True):
        print(f"  {name}: done in {done - start:.2f} s, longest stall {stall:.0f} ms")
    print(f"longest stall opening the run (napari makes its first layers): {stalls[0]:.0f} ms")
    print(f"longest stall once the run is open: {max(stalls[1:]):.0f} ms (target < 100 ms)")
    pump(lambda: QThreadPool.globalInstance().activeThreadCount() == 0)  # the browser's worker thread
    viewer.close()
    print(f"napari alone, one image layer of {size}³ added to a fresh viewer: {add_image_ms(size):.0f} ms")


def add_image_ms(size: int) -> float:
    """Milliseconds napari takes to add one image layer of ``size``³ to a new viewer and draw it."""
    viewer = napari.Viewer(show=True)
    pump_for(1.0)
    started = time.perf_counter()
    viewer.add_image(np.random.default_rng(0).random((size,) * 3, dtype=np.float32))
    QApplication.processEvents()
    elapsed = time.perf_counter() - started
    viewer.close()
    return 1000.0 * elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("refinement", "browser", "both"), default="both")
    parser.add_argument("--particles", type=int, default=2000, help="particles per class of the browsed run")
    parser.add_argument("--size", type=int, default=64, help="box size of the browsed run's particles")
    args = parser.parse_args()
    if args.part in ("refinement", "both"):
        with tempfile.TemporaryDirectory() as scratch:
            measure_refinement(Path(scratch))
    if args.part in ("browser", "both"):
        with tempfile.TemporaryDirectory() as scratch:
            measure_browser(Path(scratch), args.particles, args.size)


if __name__ == "__main__":
    main()
