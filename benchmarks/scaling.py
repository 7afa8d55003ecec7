"""Scaling exponents of one E-step against particles, classes and orientations, measured in one run.

Times one E-step (``estep_chunk`` on one chunk holding every particle, in this one thread; best of
``--repeats``) in a 24-voxel box for particles n in (8, 16, 32), classes K in (1, 2, 4) and the
orientations of ``--ang`` 30, 20 and 15 (504, 1656 and 3888), varying each with the other two at their
middle value (16 particles, 2 classes, ``--ang 20``). Prints the table and the exponent of the time
against each: the least-squares slope of log time against log value over the 3 points. The ideal is 1;
a chunk rotates the references into every orientation once whatever its number of particles, so the
exponent against particles may be below 1.

Each row also gives the peak memory that ``tracemalloc`` traces during a separate run of the same
E-step, the part of it the per-(particle, orientation, class) summaries take (5 float64 or int64
numbers each, 40 bytes) and the rest, with the exponents of both against each variable: a rest that
stays flat against the orientations shows that nothing else is held per orientation.

Problems are built as ``benchmarks/estep.py`` builds them.

Usage: ``python benchmarks/scaling.py [--size 24] [--repeats 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from estep import make_problem, particle_chunks
from napari_mltomo.core.estep import estep_chunk

#: Bytes of the pass-1 summaries per (particle, orientation, class): 4 float64 and 1 int64.
SUMMARY_BYTES = 5 * 8
#: The three values of each variable (particles, classes, ``--ang``); the middle one is held fixed.
VALUES = {"particles": (8, 16, 32), "classes": (1, 2, 4), "orientations": (30.0, 20.0, 15.0)}
QUICK_VALUES = {"particles": (2, 4, 8), "classes": (1, 2, 4), "orientations": (42.0, 30.0, 20.0)}
QUICK_SIZE = 12
MB = 2**20


@dataclass(frozen=True)
class Row:
    """One E-step's size, best time and traced peak memory."""

    particles: int
    classes: int
    orientations: int
    seconds: float
    peak_bytes: int

    @property
    def summary_bytes(self) -> int:
        """Bytes of the per-(particle, orientation, class) summaries."""
        return SUMMARY_BYTES * self.particles * self.classes * self.orientations

    def value(self, variable: str) -> int:
        """The row's particles, classes or orientations."""
        return getattr(self, variable)


def measure(particles: int, classes: int, ang: float, size: int, repeats: int) -> Row:
    """Time one E-step on every particle as one chunk (best of ``repeats``), then trace one more run."""
    problem = make_problem(particles, classes, ang, size)
    bank = problem.bank()
    (chunk,) = particle_chunks(problem.spectra, particles)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        estep_chunk(chunk, bank, problem.model)
        seconds.append(time.perf_counter() - start)
    tracemalloc.start()
    estep_chunk(chunk, bank, problem.model)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return Row(particles, classes, len(bank), min(seconds), peak)


def exponent(rows: list[Row], variable: str, quantity: list[float]) -> float:
    """Least-squares slope of ``log quantity`` against ``log`` of ``variable`` over ``rows``."""
    x = np.log([row.value(variable) for row in rows])
    return float(np.polyfit(x, np.log(quantity), 1)[0])


def _series(values: dict[str, tuple], size: int, repeats: int) -> dict[str, list[Row]]:
    """The rows of each variable's series, the shared middle point measured once."""
    middle = {name: series[1] for name, series in values.items()}
    measured: dict[tuple, Row] = {}
    series = {}
    for variable, points in values.items():
        series[variable] = []
        for point in points:
            setting = {**middle, variable: point}
            key = (setting["particles"], setting["classes"], setting["orientations"])
            if key not in measured:
                measured[key] = measure(*key, size, repeats)
                _print_row(measured[key])
            series[variable].append(measured[key])
    return series


def _print_row(row: Row) -> None:
    beyond = (row.peak_bytes - row.summary_bytes) / MB
    print(
        f"{row.particles:9d} {row.classes:7d} {row.orientations:12d} {row.seconds:9.2f} "
        f"{row.peak_bytes / MB:14.1f} {row.summary_bytes / MB:12.1f} {beyond:17.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, help="box size (default 24)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per point (the best is kept)")
    parser.add_argument("--quick", action="store_true", help="tiny problems, for a smoke test")
    args = parser.parse_args()
    values = QUICK_VALUES if args.quick else VALUES
    size = args.size or (QUICK_SIZE if args.quick else 24)
    start = time.perf_counter()
    print(f"one E-step, box {size}, 1 thread, best of {args.repeats}; memory traced in a further run (MB)")
    print("particles classes orientations   seconds    peak traced    summaries  beyond summaries")
    series = _series(values, size, args.repeats)
    print("\nexponent against    time   peak traced   beyond summaries")
    for variable, rows in series.items():
        times = exponent(rows, variable, [row.seconds for row in rows])
        peaks = exponent(rows, variable, [row.peak_bytes for row in rows])
        beyond = exponent(rows, variable, [row.peak_bytes - row.summary_bytes for row in rows])
        print(f"{variable:<16} {times:7.2f} {peaks:13.2f} {beyond:18.2f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
