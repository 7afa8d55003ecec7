"""E-step speed as ratios measured in one run.

Prints, for each of two problems, (a) 64 particles, 3 classes, ``--ang 20`` (1656 orientations) and a
32-voxel box, and (b) 16 particles, 3 classes, ``--ang 20`` and a 64-voxel box:

* the E-step time (every chunk, each rotating the references into every orientation itself) as a
  multiple of its FFT floor: particles x classes x orientations inverse real FFTs of the box, timed
  here with the same library and precision, batched as the engine batches them (timed on as many
  batches as fit in ``--budget`` seconds, then scaled), before and after the 1-thread E-step, whose
  ratio is to the mean of the two, so that a machine slowing down or speeding up during the run shows
  (on the shared 2-core machine, runs minutes apart timed the floor at 74 and 98 s). Target: at most 2;
* the time one chunk spends rotating the references (``ReferenceBank.rotated`` over every
  orientation, sampled the same way), for information: it is part of the E-step time;
* 2 threads against 1, the particles chunked as a refinement chunks them (``min(64, ceil(particles /
  threads))`` per chunk);
* for (a) only, a local dask.distributed cluster of 2 single-threaded worker processes against one of
  1 (target: at least 1.7 x the throughput), on the chunks of the 2-thread run, each receiving only the
  references' ``ReferenceBank``; and whether the summed statistics of every run match (every run adds
  its chunks in the engine's pairwise order, so the same chunks give the same bits; other chunks agree
  to rounding);
* a naive per-(particle, orientation, class) loop that rotates and transforms the reference for every
  particle (the original program's structure), extrapolated from a sample;
* the peak resident memory of this process (``ru_maxrss``; dask workers not included).

Usage: ``python benchmarks/estep.py [--particles P --classes K --ang A --size N] [--chunk C]
[--budget 20] [--quick]``; giving any of the first four runs that one problem,
the others taken from (a).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import operator
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from napari_mltomo.compute import local_cluster
from napari_mltomo.core.chunks import MAX_AUTO_CHUNK, pairwise_sum
from napari_mltomo.core.correlation_maps import BATCH_BYTES
from napari_mltomo.core.estep import estep_chunk
from napari_mltomo.core.estep_inputs import EStepModel, ParticleChunk, ReferenceBank, translation_log_prior
from napari_mltomo.core.fourier import resolution_masks
from napari_mltomo.core.geometry import rotate_volumes
from napari_mltomo.core.sampling import orientation_grid
from napari_mltomo.core.stats import SufficientStats
from napari_mltomo.core.synthetic import make_dataset

AXES = (-3, -2, -1)
#: Largest relative difference of the statistics counted as the same result.
TOLERANCE = 1e-12
FLOOR_TARGET = 2.0
WORKERS_TARGET = 1.7


@dataclass(frozen=True)
class Config:
    """One problem, and whether to time the dask clusters on it."""

    particles: int
    classes: int
    ang: float
    size: int
    clusters: bool


CONFIGS = {"a": Config(64, 3, 20.0, 32, True), "b": Config(16, 3, 20.0, 64, False)}
QUICK = {"a": Config(8, 2, 42.0, 16, True), "b": Config(4, 2, 42.0, 24, False)}


@dataclass(frozen=True)
class Problem:
    """References, orientations, model and masked particle spectra of one E-step."""

    references: NDArray[np.float64]
    matrices: NDArray[np.float64]
    model: EStepModel
    spectra: NDArray[np.complex64]

    def bank(self) -> ReferenceBank:
        """The references' bank, as a refinement builds it once per iteration."""
        return ReferenceBank(self.references, self.matrices, self.model.region_masks)

    @property
    def n_maps(self) -> int:
        """Correlation maps of the E-step: particles x classes x orientations."""
        return len(self.spectra) * len(self.references) * len(self.matrices)


def make_problem(n_particles: int, n_classes: int, ang: float, size: int) -> Problem:
    """A synthetic E-step: true phantoms as references, a single missing wedge, white noise of 1.

    Parameters
    ----------
    n_particles, n_classes : int
    ang : float
        Angular step of the orientation grid (degrees).
    size : int
        Box size ``N``.
    """
    per_class = -(-n_particles // n_classes)
    data = make_dataset(per_class, n_classes, size, snr=1.0, seed=0)
    _, within = resolution_masks(size, 0.5)
    log_prior, shift_sq = translation_log_prior(size, 3.0)
    model = EStepModel(
        log_fractions=np.log(np.full(n_classes, 1 / n_classes)),
        sigma_noise=1.0,
        log_prior=log_prior,
        shift_sq=shift_sq,
        regions=(data.region,),
        within_resolution=within,
    )
    volumes = data.volumes[:n_particles]
    spectra = (sfft.rfftn(volumes, axes=AXES) * model.region_masks[0]).astype(np.complex64)
    matrices = orientation_grid(ang).matrices
    return Problem(data.phantoms.astype(np.float64), matrices, model, spectra)


def particle_chunks(spectra: NDArray[np.complex64], chunk: int) -> list[ParticleChunk]:
    """The particles in chunks of ``chunk``, all in missing region 0, half sets alternating."""
    n = len(spectra)
    halves = np.arange(n) % 2
    return [
        ParticleChunk(
            np.arange(s, min(s + chunk, n)),
            spectra[s : s + chunk],
            np.zeros(min(chunk, n - s), int),
            halves[s : s + chunk],
        )
        for s in range(0, n, chunk)
    ]


def _refinement_chunk(n_particles: int, threads: int) -> int:
    """Particles per chunk of a refinement without ``--chunk``."""
    return max(1, min(MAX_AUTO_CHUNK, -(-n_particles // threads)))


def _estep_threads(problem: Problem, threads: int, chunk: int) -> tuple[float, SufficientStats]:
    """E-step seconds on ``threads`` local threads, and the summed statistics."""
    start = time.perf_counter()
    bank = problem.bank()
    tasks = [
        dask.delayed(estep_chunk)(piece, bank, problem.model)
        for piece in particle_chunks(problem.spectra, chunk)
    ]
    results = dask.compute(*tasks, scheduler="threads", num_workers=threads)
    total = pairwise_sum(list(results), operator.add)
    return time.perf_counter() - start, total


def _estep_cluster(problem: Problem, workers: int, chunk: int) -> tuple[float, SufficientStats]:
    """E-step seconds on a local cluster of ``workers`` single-threaded processes (start-up and imports
    excluded), and the summed statistics."""
    from distributed import Client

    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.run(importlib.import_module, "napari_mltomo.core.estep")
        start = time.perf_counter()
        bank = client.scatter(problem.bank(), broadcast=True)
        model = client.scatter(problem.model, broadcast=True)
        futures = client.map(estep_chunk, particle_chunks(problem.spectra, chunk), bank=bank, model=model)
        total = pairwise_sum(client.gather(futures), operator.add)
        return time.perf_counter() - start, total


def _extrapolated(unit: Callable[[int], None], total: float, budget_s: float) -> tuple[float, float]:
    """Seconds for ``total`` units of work, ``unit(i)`` doing unit ``i``, timed on as many units as fit
    in ``budget_s`` (at least one) and scaled; and the fraction of the work timed."""
    start = time.perf_counter()
    done = 0
    while done < total and (done == 0 or time.perf_counter() - start < budget_s):
        unit(done)
        done += 1
    return (time.perf_counter() - start) * total / done, min(1.0, done / total)


def _fft_floor(problem: Problem, budget_s: float) -> tuple[float, float, int]:
    """Seconds for the E-step's inverse real FFTs, in batches of the engine's size; the fraction timed
    and the batch size."""
    size, n_classes = problem.references.shape[-1], len(problem.references)
    batch = np.repeat(problem.spectra[:1], max(n_classes, BATCH_BYTES // (4 * size**3)), axis=0)

    def unit(_: int) -> None:
        sfft.irfftn(batch, s=(size,) * 3, axes=AXES)

    seconds, fraction = _extrapolated(unit, problem.n_maps / len(batch), budget_s)
    return seconds, fraction, len(batch)


def _rotation_seconds(problem: Problem, budget_s: float) -> tuple[float, float]:
    """Seconds one chunk spends rotating the references into every orientation, and the fraction
    timed."""
    bank = problem.bank()
    return _extrapolated(lambda a: bank.rotated(slice(a, a + 1)), len(bank), budget_s)


def _naive_seconds(problem: Problem, budget_s: float) -> tuple[float, float]:
    """Seconds of a loop that rotates and transforms the reference for every (particle, orientation,
    class), and the fraction timed."""
    size = problem.references.shape[-1]

    def unit(i: int) -> None:
        matrix = problem.matrices[i % len(problem.matrices)]
        spectrum = sfft.rfftn(rotate_volumes(problem.references[0], matrix.T))
        correlation = sfft.irfftn(problem.spectra[0] * spectrum.conj(), s=(size,) * 3)
        np.exp(correlation - correlation.max()).sum()

    return _extrapolated(unit, problem.n_maps, budget_s)


def _max_relative_difference(a: Any, b: Any) -> float:
    """Largest difference between two results, field by field relative to the field's largest magnitude
    in ``b`` (0 if bitwise identical)."""
    if dataclasses.is_dataclass(a):
        return max(
            _max_relative_difference(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    x, y = np.asarray(a), np.asarray(b)
    if np.array_equal(x, y):
        return 0.0
    if x.shape != y.shape:
        return math.inf
    scale = float(np.abs(y).max())
    return float(np.abs(x - y).max()) / scale if scale > 0 else math.inf


def _agreement(difference: float) -> str:
    """``identical``, or the largest relative difference."""
    return "identical" if difference == 0 else f"within {difference:.1e}"


def _check(name: str, value: float, target: float, *, at_most: bool) -> str:
    """``name value (target ...: met)``."""
    met = value <= target if at_most else value >= target
    return f"{name} {value:.2f} (target {'<=' if at_most else '>='} {target}: {'met' if met else 'NOT MET'})"


def _line(label: str, seconds: float, note: str) -> None:
    """Print one timed figure."""
    print(f"{label:<30} {seconds:8.1f} s  {note}", flush=True)


def _run(name: str, config: Config, args: argparse.Namespace) -> list[str]:
    """Time one problem and print its figures; return its checks against the targets."""
    problem = make_problem(config.particles, config.classes, config.ang, config.size)
    chunk_1, chunk_2 = (args.chunk or _refinement_chunk(config.particles, threads) for threads in (1, 2))
    print(
        f"({name}) E-step: {config.particles} particles x {config.classes} classes x {len(problem.matrices)} "
        f"orientations, box {config.size} ({problem.n_maps} correlation maps); chunks of {chunk_1} "
        f"particles on 1 thread, {chunk_2} on 2"
    )
    floor, fraction, batch = _fft_floor(problem, args.budget)
    _line("FFT floor (1 thread)", floor, f"(batches of {batch} maps; timed on {fraction:.0%}, scaled)")
    rotation, fraction = _rotation_seconds(problem, args.budget)
    _line(
        "references rotated per chunk",
        rotation,
        f"= {rotation / floor:5.2f} x floor (timed on {fraction:.0%}, scaled; part of the E-step)",
    )
    time_1, stats_1 = _estep_threads(problem, 1, chunk_1)
    floor_after, _, _ = _fft_floor(problem, args.budget)
    _line(
        "FFT floor again (1 thread)",
        floor_after,
        f"= {floor_after / floor:5.2f} x the first (the machine's drift)",
    )
    floor = (floor + floor_after) / 2
    _line("E-step, 1 thread", time_1, f"= {time_1 / floor:5.2f} x floor (the mean of the two timings)")
    time_2, stats_2 = _estep_threads(problem, 2, chunk_2)
    _line("E-step, 2 threads", time_2, f"= {time_2 / floor:5.2f} x floor, speed-up {time_1 / time_2:.2f}")
    checks = [_check("E-step / FFT floor", time_1 / floor, FLOOR_TARGET, at_most=True)]
    differences = {"2 threads against 1": _max_relative_difference(stats_2, stats_1)}
    if config.clusters:
        gain, cluster_differences = _run_clusters(problem, chunk_2, floor, time_2, stats_2)
        differences |= cluster_differences
        checks.append(_check("--workers 2 / --workers 1 throughput", gain, WORKERS_TARGET, at_most=False))
    print(
        f"{'statistics':<30} "
        + ", ".join(f"{label}: {_agreement(difference)}" for label, difference in differences.items())
    )
    agreed = max(differences.values()) <= TOLERANCE
    checks.append(f"statistics {'within' if agreed else 'NOT within'} {TOLERANCE:g} of each other")
    naive, fraction = _naive_seconds(problem, args.budget)
    _line(
        "naive per-triple loop (est.)",
        naive,
        f"= {naive / time_1:5.1f} x the E-step, 1 thread (timed on {fraction:.1%}, scaled)",
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'peak resident memory':<30} {peak_mb:8.0f} MB of this process so far (ru_maxrss; not the workers')"
    )
    return checks


def _run_clusters(
    problem: Problem, chunk: int, floor: float, time_2: float, stats_2: SufficientStats
) -> tuple[float, dict[str, float]]:
    """Time the clusters of 2 and 1 workers on chunks of ``chunk`` (those of the 2-thread run) and print
    their lines; return the throughput of 2 workers relative to 1, and the largest relative differences
    of their statistics from the 2-thread run's ``stats_2``."""
    note = f"({-(-len(problem.spectra) // chunk)} chunks of {chunk})"
    cluster_2, stats_cluster_2 = _estep_cluster(problem, 2, chunk)
    _line(
        "E-step, dask cluster 2 x 1",
        cluster_2,
        f"= {cluster_2 / floor:5.2f} x floor, {cluster_2 / time_2:.2f} x the 2-thread time {note}",
    )
    cluster_1, stats_1_worker = _estep_cluster(problem, 1, chunk)
    gain = cluster_1 / cluster_2
    _line(
        "E-step, dask cluster 1 x 1",
        cluster_1,
        f"= {cluster_1 / floor:5.2f} x floor {note}; --workers 2: {gain:.2f} x the throughput of 1",
    )
    differences = {
        "cluster 2 x 1 against 2 threads": _max_relative_difference(stats_cluster_2, stats_2),
        "cluster 1 x 1 against 2 threads": _max_relative_difference(stats_1_worker, stats_2),
    }
    return gain, differences


def _configs(args: argparse.Namespace) -> dict[str, Config]:
    """The problems to run: the two defaults (tiny ones with ``--quick``), or the one given."""
    defaults = QUICK if args.quick else CONFIGS
    given = {name: getattr(args, name) for name in ("particles", "classes", "ang", "size")}
    given = {name: value for name, value in given.items() if value is not None}
    return {"custom": dataclasses.replace(defaults["a"], **given)} if given else defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int)
    parser.add_argument("--classes", type=int)
    parser.add_argument("--ang", type=float)
    parser.add_argument("--size", type=int)
    parser.add_argument("--chunk", type=int, help="particles per chunk on threads (default: as a refinement)")
    parser.add_argument("--budget", type=float, help="seconds to time each sampled figure on (default 20)")
    parser.add_argument("--quick", action="store_true", help="tiny problems, for a smoke test")
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 0.5 if args.quick else 20.0
    start = time.perf_counter()
    checks = {}
    for name, config in _configs(args).items():
        checks[name] = _run(name, config, args)
        print()
    for name, lines in checks.items():
        print(f"({name}) " + "; ".join(lines))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
