"""Reference-free alignment and classification of subtomograms of real protein structures, per class,
against an oracle bound, measured in one run.

For each test set of ``napari_mltomo.protein_sets.PROTEIN_SETS`` (particles made from PDB structures of
``mdanalysistests``; data seed 0), it runs in-process, with the ``MLParams`` that ``ml_tomo`` builds from
the options users type:

* the **oracle**: ``ml_tomo -i ... --missing ... --ref <true averages> --iter 6 --ang 20 --thr 2 --seed 1``,
  started from the averages of the particles at their true poses and classes (what ``--only_average``
  writes from the true metadata), which ``--ref`` prepares as it prepares any map; so it shows the error
  that the data and the 20-degree grid allow;
* **reference-free**, the defaults: ``ml_tomo -i ... --missing ... --nref K --iter 6 --ang 20 --thr 2
  --seed S`` for every seed asked for.

For every run it prints the adjusted Rand index of the classes and, per true class, the median pair error
(gauge-free) and the particles beyond 90 degrees of the class's consensus, then whether the reference-free
runs meet the bound: every class's median at most the angular step and at most 1.25 times the oracle's,
at most 10 % of a class beyond 90 degrees, and an adjusted Rand index of at least 0.95 where the oracle
reaches it. A run takes 5 to 9 minutes on the 2-core reference machine (80 or 90 particles), so every set
with the oracle and two seeds takes about two and a half hours (estimated from those runs, not timed
whole); ``--sets`` and ``--seeds`` choose.

Usage: ``python benchmarks/accuracy/proteins.py [--sets three-tilt,...] [--seeds 1,2] [--no-oracle]``
(``make accuracy`` runs every set with seeds 1 and 2).
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_mltomo.argv import option_values
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import StartModel, SubtomogramSet, internal_size, iter_refine
from napari_mltomo.core.synthetic import SyntheticDataset, adjusted_rand_index
from napari_mltomo.options import params_from_options
from napari_mltomo.protein_sets import PROTEIN_SETS, ClassScore, score_classes, true_averages

#: The options of every run (the defaults otherwise); reference-free runs add ``--nref K --seed S``.
OPTIONS = ["--iter", "6", "--ang", "20", "--thr", "2"]
ORACLE_SEED = 1
BOUND_RATIO = 1.25
MAX_TURNED = 0.10
MIN_ARI = 0.95


@dataclass(frozen=True)
class Run:
    """The scores of one refinement."""

    ari: float
    classes: dict[int, ClassScore]
    seconds: float

    def line(self) -> str:
        """``ARI 1.00 | 14.2 (0)  15.1 (2)``: ARI and, per true class, median error (particles turned)."""
        per_class = "  ".join(f"{s.median_error_deg:5.1f} ({s.beyond_90})" for s in self.classes.values())
        return f"ARI {self.ari:.2f} | {per_class}  [{self.seconds:.0f} s]"


def params_for(argv: Sequence[str], **fixed: object) -> MLParams:
    """The ``MLParams`` that ``ml_tomo`` builds from ``argv`` (``fixed`` as the inputs would decide)."""
    return params_from_options(option_values(argv), **fixed)


def subtomograms(data: SyntheticDataset) -> SubtomogramSet:
    """The particles with their one missing region."""
    return data.subtomograms()


def refine(data: SyntheticDataset, params: MLParams, start: StartModel | None) -> Run:
    """Run a refinement to its end and score it against the truth."""
    began = time.perf_counter()
    *_, state = iter_refine(subtomograms(data), params, start)
    seconds = time.perf_counter() - began
    assert state.stats is not None and state.grid is not None
    particles = state.stats.particles
    order = np.argsort(particles.indices, kind="stable")
    angles = state.grid.angles_deg[particles.orientations[order]]
    ari = adjusted_rand_index(data.classes, particles.classes[order])
    return Run(ari, score_classes(angles, data.angles_deg, data.classes), seconds)


def oracle(data: SyntheticDataset) -> Run:
    """The run started with ``--ref`` from the averages at the true poses (``--ref`` turns ``--escape``
    off, as ``ml_tomo`` does)."""
    n_classes = len(data.phantoms)
    params = params_for([*OPTIONS, "--seed", str(ORACLE_SEED)], n_classes=n_classes, escape=0)
    size = internal_size(data.volumes.shape[-1], params.dim)
    start = StartModel(references=true_averages(data, size), iteration=params.istart - 1)
    return refine(data, params, start)


def meets_bound(run: Run, bound: Run | None) -> list[str]:
    """What ``run`` misses of the criteria (empty if it meets them all)."""
    step = float(OPTIONS[OPTIONS.index("--ang") + 1])
    missed = []
    for label, score in run.classes.items():
        limit = step if bound is None else min(step, BOUND_RATIO * bound.classes[label].median_error_deg)
        if score.median_error_deg > limit:
            missed.append(f"class {label + 1} median {score.median_error_deg:.1f} > {limit:.1f}")
        if score.beyond_90 > MAX_TURNED * score.size:
            missed.append(f"class {label + 1} has {score.beyond_90} of {score.size} turned")
    if (bound is None or bound.ari >= MIN_ARI) and run.ari < MIN_ARI:
        missed.append(f"ARI {run.ari:.2f} < {MIN_ARI}")
    return missed


def measure(name: str, seeds: Sequence[int], with_oracle: bool) -> bool:
    """Print the oracle and reference-free runs of one set; return whether every run meets the bound."""
    spec = PROTEIN_SETS[name]
    data = spec.make(seed=0)
    n_classes = len(spec.structures)
    print(f"\n{name}: {spec.notes}; {', '.join(spec.structures)}")
    print(f"  {len(data.volumes)} particles of {spec.size}^3, {spec.pixel_size_a:.2f} A/pixel, data seed 0")
    bound = None
    if with_oracle:
        bound = oracle(data)
        print(f"  oracle (--ref true averages)     {bound.line()}", flush=True)
    passed = True
    for seed in seeds:
        argv = ["--nref", str(n_classes), *OPTIONS, "--seed", str(seed)]
        run = refine(data, params_for(argv, n_classes=n_classes), None)
        missed = meets_bound(run, bound)
        passed &= not missed
        verdict = "PASS" if not missed else "FAIL: " + "; ".join(missed)
        print(f"  ml_tomo {shlex.join(argv)}\n  {'reference-free':33s}{run.line()}  {verdict}", flush=True)
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(PROTEIN_SETS), help="comma-separated set names")
    parser.add_argument("--seeds", default="1,2", help="comma-separated --seed values")
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle runs")
    args = parser.parse_args()
    began = time.perf_counter()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results = [measure(name, seeds, not args.no_oracle) for name in args.sets.split(",")]
    print(f"\nsets meeting the bound: {sum(results)} of {len(results)} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
