"""E-step speed as ratios measured in one run.

Prints, for 64 particles, 3 classes, ``--ang 20`` (1656 orientations) and a 32-voxel box:

* the E-step time (reference bank + all chunks) as a multiple of its FFT floor: particles x classes x
  orientations inverse real FFTs of the box, timed here with the same library and precision;
* the same against a naive per-(particle, orientation, class) loop that rotates and transforms the
  reference for every particle (the original program's structure), extrapolated from a sample;
* 2 threads against 1 and against a local dask.distributed cluster of 2 single-threaded processes,
  and peak memory.

Usage: ``python benchmarks/estep.py [--particles 64] [--classes 3] [--ang 20] [--size 32]``.
"""

from __future__ import annotations

import argparse
import functools
import operator
import resource
import time

import dask
import numpy as np
import scipy.fft as sfft

from napari_mltomo.compute import local_cluster
from napari_mltomo.core.estep import (
    EStepModel,
    ParticleChunk,
    ReferenceBank,
    estep_chunk,
    translation_log_prior,
)
from napari_mltomo.core.fourier import resolution_masks
from napari_mltomo.core.geometry import rotate_volumes
from napari_mltomo.core.sampling import orientation_grid
from napari_mltomo.core.synthetic import make_dataset

AXES = (-3, -2, -1)


def _problem(n_particles: int, n_classes: int, ang: float, size: int) -> tuple:
    per_class = -(-n_particles // n_classes)
    data = make_dataset(per_class, n_classes, size, snr=1.0, seed=0)
    volumes = data.volumes[:n_particles]
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
    grid = orientation_grid(ang)
    spectra = (sfft.rfftn(volumes, axes=AXES) * model.region_masks[0]).astype(np.complex64)
    return data.phantoms.astype(np.float64), grid, model, spectra


def _chunks(spectra, chunk: int) -> list[ParticleChunk]:
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


def _estep(references, grid, model, spectra, threads: int, chunk: int) -> tuple[float, float]:
    start = time.perf_counter()
    bank = ReferenceBank(references, grid.matrices, model.region_masks, threads=threads)
    bank_time = time.perf_counter() - start
    tasks = [dask.delayed(estep_chunk)(piece, bank, model) for piece in _chunks(spectra, chunk)]
    functools.reduce(operator.add, dask.compute(*tasks, scheduler="threads", num_workers=threads))
    return bank_time, time.perf_counter() - start


def _estep_cluster(references, grid, model, spectra, chunk: int) -> float:
    """E-step seconds on a local cluster of 2 single-threaded worker processes (start-up excluded)."""
    from distributed import Client

    with local_cluster(2) as cluster, Client(cluster) as client:
        start = time.perf_counter()
        bank = client.scatter(
            ReferenceBank(references, grid.matrices, model.region_masks, threads=2), broadcast=True
        )
        shared_model = client.scatter(model, broadcast=True)
        futures = client.map(estep_chunk, _chunks(spectra, chunk), bank=bank, model=shared_model)
        functools.reduce(operator.add, client.gather(futures))
        return time.perf_counter() - start


def _fft_floor(spectra, n_maps: int, size: int) -> float:
    """Seconds for ``n_maps`` inverse real FFTs of the box, batched as the engine batches them."""
    batch = np.repeat(spectra[:1], 192, axis=0)
    start = time.perf_counter()
    repeats = max(1, n_maps // len(batch))
    for _ in range(repeats):
        sfft.irfftn(batch, s=(size,) * 3, axes=AXES)
    return (time.perf_counter() - start) * n_maps / (repeats * len(batch))


def _naive_per_triple(references, grid, spectra, size: int, samples: int = 60) -> float:
    """Seconds per (particle, orientation, class) of a loop that rotates the reference every time."""
    start = time.perf_counter()
    for a in range(samples):
        matrix = grid.matrices[a]
        rotated = rotate_volumes(references[0], matrix.T)
        spectrum = sfft.rfftn(rotated)
        correlation = sfft.irfftn(spectra[0] * spectrum.conj(), s=(size,) * 3)
        np.exp(correlation - correlation.max()).sum()
    return (time.perf_counter() - start) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--ang", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=16)
    args = parser.parse_args()
    references, grid, model, spectra = _problem(args.particles, args.classes, args.ang, args.size)
    n_maps = args.particles * args.classes * len(grid)
    print(
        f"E-step: {args.particles} particles x {args.classes} classes x {len(grid)} orientations, "
        f"box {args.size} ({n_maps} correlation maps)"
    )
    floor = _fft_floor(spectra, n_maps, args.size)
    bank_1, total_1 = _estep(references, grid, model, spectra, threads=1, chunk=args.chunk)
    _, total_2 = _estep(references, grid, model, spectra, threads=2, chunk=args.chunk)
    cluster = _estep_cluster(references, grid, model, spectra, chunk=args.chunk)
    naive = _naive_per_triple(references, grid, spectra, args.size) * n_maps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"FFT floor (1 thread)           {floor:8.1f} s")
    print(
        f"E-step, 1 thread               {total_1:8.1f} s  = {total_1 / floor:5.2f} x floor "
        f"(reference bank {bank_1:.1f} s)"
    )
    print(
        f"E-step, 2 threads              {total_2:8.1f} s  = {total_2 / floor:5.2f} x floor, "
        f"speed-up {total_1 / total_2:.2f} over 1 thread"
    )
    print(
        f"E-step, dask cluster 2 x 1     {cluster:8.1f} s  = {cluster / floor:5.2f} x floor, "
        f"{cluster / total_2:.2f} x the 2-thread time"
    )
    print(f"naive per-triple loop (est.)   {naive:8.1f} s  = {naive / total_1:5.1f} x the E-step (1 thread)")
    print(f"peak resident memory           {peak_mb:8.0f} MB (this process)")


if __name__ == "__main__":
    main()
