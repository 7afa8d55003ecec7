"""Coarse-to-fine refinement (``--refine_to``) against the run at ``--ang`` alone, on subtomograms of real
protein structures with known poses, measured in one run per seed.

A run of ``ml_tomo --nref K --iter 6 --ang 20 --thr 2 --seed S --refine_to 5`` does exactly what the default
run (without ``--refine_to``) does up to iteration 6, then the local steps; so one run gives both. For
every state it prints the time, the step, the adjusted Rand index and each true class's median pair error
(gauge-free) with its particles beyond 90 degrees of the class consensus, and the time of each iteration
per (particle, class, orientation) scored. At the end: the start-up against the first iteration, the
whole run against the run at ``--ang`` alone, and the orientations a global search at the final step
would score against those at ``--ang``.

Usage: ``python benchmarks/accuracy/coarse_to_fine.py [--sets three-wedge,three-tilt] [--seeds 1,2,3]
[--refine_to 5]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from proteins import OPTIONS, params_for, subtomograms

from napari_mltomo.core.refine import MLState, iter_refine
from napari_mltomo.core.sampling import local_neighbourhoods, orientation_grid
from napari_mltomo.core.stages import STAGE_REACH, best_poses
from napari_mltomo.core.synthetic import SyntheticDataset, adjusted_rand_index
from napari_mltomo.protein_sets import PROTEIN_SETS, score_classes


def scored_orientations(state: MLState, previous: np.ndarray | None, ang_deg: float) -> int:
    """Orientations scored per particle and class in the iteration that made `state`, summed over the
    particles: the whole grid at ``--ang``, the local neighbourhoods at a finer step."""
    assert state.grid is not None
    step = ang_deg if state.stage is None else state.stage.step_deg
    if step == ang_deg or previous is None:
        return len(state.grid) * state.stats.n_particles
    near = local_neighbourhoods(state.grid.angles_deg, previous, STAGE_REACH * step)
    return int(near.sum())


def state_line(state: MLState, data: SyntheticDataset, seconds: float, pairs: int) -> str:
    """``iteration 7  step 10  ARI 1.00 | 9.1 (0)  8.7 (0)  [31.0 s, 0.41 us]`` (time per particle, class
    and orientation scored)."""
    poses = best_poses(state)
    assert poses is not None and state.stats is not None
    order = np.argsort(state.stats.particles.indices, kind="stable")
    ari = adjusted_rand_index(data.classes, state.stats.particles.classes[order])
    scores = score_classes(poses, data.angles_deg, data.classes)
    per_class = "  ".join(f"{s.median_error_deg:5.1f} ({s.beyond_90})" for s in scores.values())
    step = "" if state.stage is None else f"  step {state.stage.step_deg:g}"
    unit = seconds / (pairs * state.n_classes) * 1e6
    return f"iteration {state.iteration}{step}  ARI {ari:.2f} | {per_class}  [{seconds:.1f} s, {unit:.2f} us]"


def measure(name: str, seed: int, refine_to: float) -> None:
    """One run of set `name` with ``--refine_to``; prints every state and the summary."""
    spec = PROTEIN_SETS[name]
    data = spec.make(seed=0)
    n_classes = len(spec.structures)
    argv = ["--nref", str(n_classes), *OPTIONS, "--seed", str(seed), "--refine_to", f"{refine_to:g}"]
    params = params_for(argv, n_classes=n_classes)
    print(f"\n{name} ({spec.notes}): ml_tomo {' '.join(argv)}", flush=True)
    began = last = time.perf_counter()
    startup = first = at_ang = 0.0
    previous = None
    for state in iter_refine(subtomograms(data), params):
        now = time.perf_counter()
        seconds, last = now - last, now
        if state.startup_step:
            startup += seconds
            continue
        if state.stats is None:
            startup += seconds
            continue
        pairs = scored_orientations(state, previous, params.ang_deg)
        print("  " + state_line(state, data, seconds, pairs), flush=True)
        first = first or seconds
        if state.stage is None or state.stage.step_deg == params.ang_deg:
            at_ang = now - began
        previous = best_poses(state)
    total = time.perf_counter() - began
    fine = len(orientation_grid(refine_to)) / len(orientation_grid(params.ang_deg))
    print(
        f"  start-up {startup:.1f} s = {startup / first:.2f} x iteration 1; run at --ang {at_ang:.0f} s, "
        f"with --refine_to {total:.0f} s = {total / at_ang:.2f} x; a global search at {refine_to:g} deg "
        f"scores {fine:.0f} x the orientations of --ang {params.ang_deg:g}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="three-wedge,three-tilt", help="comma-separated set names")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated --seed values")
    parser.add_argument("--refine_to", type=float, default=5.0, help="the finest step, degrees")
    args = parser.parse_args()
    for name in args.sets.split(","):
        for seed in args.seeds.split(","):
            measure(name, int(seed), args.refine_to)


if __name__ == "__main__":
    main()
