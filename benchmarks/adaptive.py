"""``--adaptive`` against the exhaustive search, on accuracy and time, measured in one run.

Prints, for two synthetic data sets, a table of a full refinement with the exhaustive search and one with
``--adaptive``, run in-process (``napari_mltomo.core.iter_refine``, which ``run_refine`` wraps) with the
``MLParams`` that ``ml_tomo`` builds from the options users type:

    ml_tomo -i ... --missing ... --nref 3 --ang 20 --iter 6 --thr 2 --seed 1 [--adaptive]

(``napari_mltomo.demo.DEMO_ARGS``, the defaults otherwise, so random starting references, the annealed
start-up and the trap checks). Data set A is the demo's (``DEMO_DATASET``: 24 particles per class, 3
near-symmetric classes, 24-voxel box, tilt series at SNR 0.5, seed 0); data set B is the same with seed 1
and 32 particles per class. Each table gives the adjusted Rand index of the classes, the median pairwise
orientation error of each true class (gauge-free, as the demo scores it), the wall time, split into the
start-up (random starting averages and annealed steps) and each iteration (with its trap check, after
iterations 1 and 2), and whether adaptive passes: ARI at least the exhaustive one - 0.02, and every class's
median error at most the exhaustive one + 2 degrees.

Then one E-step on data set A at ``--ang 10`` (13032 orientations), exhaustive and adaptive, from the same
model (the exhaustive refinement's final references, fractions, noise and offset): one iteration of
``iter_refine`` from that ``StartModel`` (``--iter 1 --escape 0 --thr 2``), timed from the starting state
to the last chunk of the iteration (the M-step excluded; the reference bank included). It prints both
times, their ratio (target: at least 5) and the orientations each particle was scored against per class
(adaptive: the coarse grid, plus the mean over particles of the fine ones near its coarse peaks, counted
in a separate untimed pass).

The whole run takes 18 to 20 minutes on an idle 2-core machine (estimated from the demo's 236 s for the
exhaustive refinement of data set A); ``--quick`` runs every step on 4 particles per class of a 16-voxel
box, 2 iterations and the E-step at ``--ang 20`` in about 4 minutes, to check that the script works.

Usage: ``python benchmarks/adaptive.py [--per-class-b 32] [--quick]``.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from napari_mltomo.argv import option_values
from napari_mltomo.core.estep_inputs import EStepModel, ParticleChunk, translation_log_prior
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import MLState, StartModel, SubtomogramSet, iter_refine
from napari_mltomo.core.search import AdaptiveSearch, iteration_search
from napari_mltomo.core.setup import make_setup
from napari_mltomo.core.synthetic import (
    SyntheticDataset,
    adjusted_rand_index,
    class_orientation_errors_deg,
    make_dataset,
)
from napari_mltomo.demo import DEMO_ARGS, DEMO_DATASET
from napari_mltomo.options import params_from_options

ARI_MARGIN = 0.02
ERROR_MARGIN_DEG = 2.0
SPEED_TARGET = 5.0
SPEED_ANG = 10.0
#: ``--quick``: a smoke run of the whole script (its figures mean nothing).
QUICK = {"n_per_class": 4, "size": 16, "iter": 2, "speed_ang": 20.0}
AXES = (-3, -2, -1)
#: The two searches compared, and the option each adds.
SEARCHES = (("exhaustive", ()), ("adaptive", ("--adaptive",)))


@dataclass(frozen=True)
class Refinement:
    """The scores and times of one refinement."""

    ari: float
    medians_deg: NDArray[np.float64]  # per true class
    wall_s: float
    startup_s: float
    iteration_s: list[float]
    state: MLState


def with_options(argv: Sequence[str], values: dict[str, str]) -> list[str]:
    """``argv`` with the value of each flag of ``values`` replaced (appended if the flag is absent)."""
    argv = list(argv)
    for flag, value in values.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def params_for(argv: Sequence[str]) -> MLParams:
    """The ``MLParams`` that ``ml_tomo`` builds from these options (``--nref`` classes, no ``--ref``)."""
    values = option_values(argv)
    return params_from_options(values, n_classes=values["nref"])


def subtomograms(data: SyntheticDataset) -> SubtomogramSet:
    """The particles with their one missing region."""
    return data.subtomograms()


def scores(state: MLState, data: SyntheticDataset) -> tuple[float, NDArray[np.float64]]:
    """Adjusted Rand index of the classes and median pairwise orientation error of each true class."""
    assert state.stats is not None and state.grid is not None
    particles = state.stats.particles
    order = np.argsort(particles.indices, kind="stable")
    angles = state.grid.angles_deg[particles.orientations[order]]
    errors = class_orientation_errors_deg(angles, data.angles_deg, data.classes)
    medians = np.array([np.median(errors[label]) for label in sorted(errors)])
    return adjusted_rand_index(data.classes, particles.classes[order]), medians


def refine(data: SyntheticDataset, params: MLParams) -> Refinement:
    """Run a refinement, timing the start-up and each iteration (the time up to each yielded state)."""
    start = last = time.perf_counter()
    startup_s = 0.0
    iteration_s: list[float] = []
    state: MLState | None = None
    for state in iter_refine(subtomograms(data), params):
        now = time.perf_counter()
        if state.startup_step or state.stats is None:
            startup_s += now - last
        else:
            iteration_s.append(now - last)
        last = now
    assert state is not None
    ari, medians = scores(state, data)
    return Refinement(ari, medians, last - start, startup_s, iteration_s, state)


def verdict(ok: bool) -> str:
    """``PASS`` or ``FAIL``."""
    return "PASS" if ok else "FAIL"


def print_accuracy(runs: dict[str, Refinement]) -> bool:
    """Print the exhaustive and adaptive refinements side by side; return whether adaptive passes."""
    exhaustive, adaptive = runs["exhaustive"], runs["adaptive"]
    rows = [("adjusted Rand index", f"{exhaustive.ari:.3f}", f"{adaptive.ari:.3f}")]
    for k, (one, other) in enumerate(zip(exhaustive.medians_deg, adaptive.medians_deg, strict=True), 1):
        rows.append((f"class {k} median error (deg)", f"{one:.1f}", f"{other:.1f}"))
    rows.append(("wall time (s)", f"{exhaustive.wall_s:.1f}", f"{adaptive.wall_s:.1f}"))
    rows.append(("  start-up (s)", f"{exhaustive.startup_s:.1f}", f"{adaptive.startup_s:.1f}"))
    for i in range(max(len(exhaustive.iteration_s), len(adaptive.iteration_s))):
        times = [f"{run.iteration_s[i]:.1f}" if i < len(run.iteration_s) else "-" for run in runs.values()]
        rows.append((f"  iteration {i + 1} (s)", *times))
    print(f"{'':30s} {'exhaustive':>10s} {'adaptive':>10s}")
    for label, one, other in rows:
        print(f"{label:30s} {one:>10s} {other:>10s}")
    ari_ok = adaptive.ari >= exhaustive.ari - ARI_MARGIN
    errors_ok = bool(np.all(adaptive.medians_deg <= exhaustive.medians_deg + ERROR_MARGIN_DEG))
    print(f"adaptive ARI >= exhaustive - {ARI_MARGIN}: {verdict(ari_ok)}")
    print(
        f"every class: adaptive median error <= exhaustive + {ERROR_MARGIN_DEG:g} deg: {verdict(errors_ok)}"
    )
    return ari_ok and errors_ok


def compare_accuracy(
    name: str, kwargs: dict[str, Any], argv: Sequence[str]
) -> tuple[bool, SyntheticDataset, MLState]:
    """Refine data set ``make_dataset(**kwargs)`` with each search and print the table; return whether
    adaptive passes, the data and the exhaustive refinement's final state."""
    data = make_dataset(**kwargs)
    print(f"\ndata set {name}: make_dataset({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    print(f"ml_tomo {shlex.join(argv)} [--adaptive]", flush=True)
    runs = {search: refine(data, params_for([*argv, *extra])) for search, extra in SEARCHES}
    return print_accuracy(runs), data, runs["exhaustive"].state


def start_from(state: MLState) -> StartModel:
    """The model of ``state``, to start another run from."""
    return StartModel(
        references=state.references,
        fractions=state.fractions,
        sigma_noise=state.sigma_noise,
        sigma_offset_px=state.sigma_offset_px,
    )


def time_estep(data: SyntheticDataset, params: MLParams, start: StartModel) -> tuple[float, MLState]:
    """Seconds of iteration 1's E-step from ``start`` (from the starting state to the last chunk done),
    and the state after the iteration."""
    chunk_times: list[float] = []
    states = iter_refine(
        subtomograms(data), params, start, on_chunk=lambda _: chunk_times.append(time.perf_counter())
    )
    next(states)  # the starting state: nothing computed yet
    begin = time.perf_counter()
    *_, state = states
    return chunk_times[-1] - begin, state


def adaptive_orientations(data: SyntheticDataset, params: MLParams, start: StartModel) -> float:
    """Orientations each particle is scored against per class in an adaptive E-step from ``start``: the
    coarse grid plus the mean over particles of the fine orientations near its coarse peaks."""
    subtomos = subtomograms(data)
    setup = make_setup(subtomos, params)
    _, search = iteration_search(subtomos, params, setup, start.references, 1)
    assert isinstance(search, AdaptiveSearch)
    assert start.fractions is not None and start.sigma_noise is not None and start.sigma_offset_px is not None
    model = EStepModel(
        np.log(start.fractions),
        start.sigma_noise,
        *translation_log_prior(setup.size, start.sigma_offset_px),
        subtomos.regions,
        setup.within_resolution,
        params.significance,
    )
    spectra = (sfft.rfftn(data.volumes, axes=AXES) * setup.masks[0]).astype(np.complex64)
    chunks = [
        ParticleChunk(rows, spectra[rows], np.zeros(len(rows), dtype=np.intp), rows % 2)
        for rows in np.array_split(np.arange(len(spectra)), params.threads)
    ]
    with ThreadPoolExecutor(params.threads) as pool:
        counts = list(pool.map(lambda chunk: search.allowed(chunk, setup.masks, model).sum(axis=1), chunks))
    return len(search.coarse) + float(np.concatenate(counts).mean())


def print_speed(data: SyntheticDataset, start: StartModel, argv: Sequence[str]) -> bool:
    """Time one E-step of each search from ``start``; print the times, their ratio and the orientations
    scored; return whether the ratio reaches the target."""
    seconds: dict[str, float] = {}
    counts: dict[str, float] = {}
    for name, extra in SEARCHES:
        params = params_for([*argv, *extra])
        seconds[name], state = time_estep(data, params, start)
        assert state.grid is not None
        counts[name] = adaptive_orientations(data, params, start) if params.adaptive else len(state.grid)
    ratio = seconds["exhaustive"] / seconds["adaptive"]
    print(f"{'':12s} {'E-step (s)':>10s} {'orientations scored per particle and class':>44s}")
    for name in seconds:
        print(f"{name:12s} {seconds[name]:10.1f} {counts[name]:44.0f}")
    print(f"speed-up {ratio:.2f} (target >= {SPEED_TARGET:g}): {verdict(ratio >= SPEED_TARGET)}")
    return ratio >= SPEED_TARGET


def data_sets(per_class_b: int, quick: bool) -> dict[str, dict[str, Any]]:
    """``make_dataset`` arguments of data sets A (the demo's) and B."""
    sets = {"A": dict(DEMO_DATASET), "B": {**DEMO_DATASET, "seed": 1, "n_per_class": per_class_b}}
    if quick:
        return {
            name: {**kwargs, "n_per_class": QUICK["n_per_class"], "size": QUICK["size"]}
            for name, kwargs in sets.items()
        }
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class-b", type=int, default=32, help="particles per class of data set B")
    parser.add_argument("--quick", action="store_true", help=f"a tiny smoke run: {QUICK}")
    args = parser.parse_args()
    began = time.perf_counter()
    argv = with_options(DEMO_ARGS, {"--iter": str(QUICK["iter"])}) if args.quick else list(DEMO_ARGS)
    sets = data_sets(args.per_class_b, args.quick)
    results = {name: compare_accuracy(name, kwargs, argv) for name, kwargs in sets.items()}
    passed = [ok for ok, _, _ in results.values()]
    _, data, state = results["A"]
    ang = QUICK["speed_ang"] if args.quick else SPEED_ANG
    speed_argv = with_options(argv, {"--ang": f"{ang:g}", "--iter": "1", "--escape": "0"})
    print("\none E-step on data set A from the exhaustive run's final model")
    print(f"ml_tomo {shlex.join(speed_argv)} [--adaptive]", flush=True)
    passed.append(print_speed(data, start_from(state), speed_argv))
    print(f"\nall criteria: {verdict(all(passed))} (total {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
