"""Peak memory of an ``ml_tomo`` run against the number of particles, as a ratio measured in one run.

For each particle count it writes a synthetic data set: particles of a 32-voxel box in 3 classes (the
near-symmetric phantoms of ``napari_mltomo.core.synthetic``, a +-60 degree wedge, SNR 0.5), as one MRC
stack, listed as ``N@particles.mrcs`` in an Xmipp STAR table with the true angles perturbed by a few degrees,
the true shifts and missing region 1. It then runs one iteration of a local search on it, as a user would:

    ml_tomo -i images.xmd --missing wedges.xmd --nref 3 --ang 10 --ang_search 10 --iter 1 --thr 2 --oroot ...

and prints, per count, the seconds spent writing the data set, the wall time of the run and the peak
anonymous resident memory (``RssAnon``) of the run's whole process tree, sampled every 0.2 s (file-backed
pages, such as the memory-mapped particle stack, do not count); then the ratio of the largest count's peak
to the smallest's. Target: at most 2 GB for 20,000 particles, and within 20 % of the figure for 2,000.
The 20,000-particle stack takes 2.6 GB of disk.

Usage: ``python benchmarks/memory.py [--particles 2000 20000] [--size 32] [--workdir DIR] [--keep]
[--extra "--workers 2"]``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import psutil
import scipy.fft as sfft
from numpy.typing import NDArray

from napari_mltomo.core.fourier import resolution_masks
from napari_mltomo.core.missing import observed_masks
from napari_mltomo.core.synthetic import SyntheticDataset, make_dataset
from napari_mltomo.io import ANGLE_LABELS, SHIFT_LABELS, MetaData, write_missing_regions, write_star

N_CLASSES = 3
#: Distinct clean particles per class; every particle written is one of them plus fresh noise.
POOL_PER_CLASS = 100
SNR = 0.5
ANGLE_JITTER_DEG = 3.0
#: Particles generated and written at a time.
BLOCK = 500
POLL_S = 0.2
STACK_NAME = "particles.mrcs"
RUN_OPTIONS = ["--nref", str(N_CLASSES), "--ang", "10", "--ang_search", "10", "--iter", "1", "--thr", "2"]
AXES = (-3, -2, -1)
SEED = 0


@dataclass(frozen=True)
class Measurement:
    """One data set's figures."""

    particles: int
    write_s: float
    run_s: float
    peak_mb: float


def make_pool(size: int) -> SyntheticDataset:
    """Noise-free particles (unit variance, wedge applied) with their true poses."""
    return make_dataset(POOL_PER_CLASS, N_CLASSES, size, snr=1e9, phantoms="near_symmetric", seed=SEED)


def observed_mask(pool: SyntheticDataset) -> NDArray[np.bool_]:
    """Half-grid mask of the Fourier components the pool's missing region keeps (DC included)."""
    size = pool.volumes.shape[-1]
    _, within = resolution_masks(size, 0.5)
    within[0, 0, 0] = True
    return observed_masks(pool.region, size, within)[0]


def noisy_block(
    clean: NDArray[np.float32], observed: NDArray[np.bool_], rng: np.random.Generator
) -> NDArray[np.float32]:
    """``clean`` (unit variance) plus Gaussian noise, filtered by the missing region, of variance 1 / SNR."""
    size = clean.shape[-1]
    white = rng.standard_normal(clean.shape, dtype=np.float32)
    noise = sfft.irfftn(sfft.rfftn(white, axes=AXES, workers=-1) * observed, s=(size,) * 3, axes=AXES)
    return clean + noise * np.float32(1.0 / np.sqrt(SNR) / noise.std())


def write_stack(
    path: Path, pool: SyntheticDataset, picks: NDArray[np.intp], rng: np.random.Generator
) -> None:
    """Write pool particles ``picks`` with fresh noise as one float32 MRC volume stack, a block at a time."""
    size = pool.volumes.shape[-1]
    observed = observed_mask(pool)
    with mrcfile.new_mmap(path, shape=(len(picks), size, size, size), mrc_mode=2) as mrc:
        for start in range(0, len(picks), BLOCK):
            stop = min(start + BLOCK, len(picks))
            mrc.data[start:stop] = noisy_block(pool.volumes[picks[start:stop]], observed, rng)


def particle_table(pool: SyntheticDataset, picks: NDArray[np.intp], rng: np.random.Generator) -> MetaData:
    """The ``-i`` rows: stack images, perturbed true angles, true shifts, missing region 1."""
    n = len(picks)
    angles = pool.angles_deg[picks] + rng.normal(scale=ANGLE_JITTER_DEG, size=(n, 3))
    shifts = pool.shifts_px[picks]
    return MetaData(
        {
            "image": np.array([f"{i}@{STACK_NAME}" for i in range(1, n + 1)], dtype=object),
            "missingRegionNumber": np.ones(n, dtype=np.int64),
            **dict(zip(ANGLE_LABELS, angles.T, strict=True)),
            **dict(zip(SHIFT_LABELS, shifts.T, strict=True)),
        }
    )


def write_dataset(folder: Path, pool: SyntheticDataset, n: int) -> None:
    """Write ``particles.mrcs``, ``images.xmd`` and ``wedges.xmd`` of ``n`` particles into ``folder``."""
    rng = np.random.default_rng([SEED, n])
    picks = rng.integers(len(pool.volumes), size=n)
    write_stack(folder / STACK_NAME, pool, picks, rng)
    write_star(folder / "images.xmd", particle_table(pool, picks, rng), f"{n} synthetic particles")
    write_missing_regions(folder / "wedges.xmd", [pool.region])


def anon_rss_kb(pid: int) -> int:
    """``RssAnon`` of one process in kB; 0 once it has gone (or for a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree_anon_rss_kb(root: psutil.Process) -> int:
    """``RssAnon`` summed over ``root`` and all its descendants, in kB."""
    try:
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    return sum(anon_rss_kb(member.pid) for member in members)


def run_watched(command: list[str], folder: Path) -> tuple[float, float]:
    """Run ``command`` in ``folder``, polling its process tree; return wall seconds and peak ``RssAnon`` MB.

    A failed run prints the tail of its stderr and exits with status 1.
    """
    log = folder / "ml_tomo.log"
    peak_kb = 0
    start = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=stderr)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            peak_kb = max(peak_kb, tree_anon_rss_kb(root))
            time.sleep(POLL_S)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        print(f"ml_tomo exited with status {process.returncode}; end of its stderr:\n{tail}", file=sys.stderr)
        raise SystemExit(1)
    return seconds, peak_kb / 1024


def measure(folder: Path, pool: SyntheticDataset, n: int, extra: list[str]) -> Measurement:
    """Write the data set of ``n`` particles into ``folder`` and measure one run on it."""
    start = time.perf_counter()
    write_dataset(folder, pool, n)
    write_s = time.perf_counter() - start
    command = [
        str(Path(sys.executable).with_name("ml_tomo")),
        *("-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd")),
        *RUN_OPTIONS,
        *("--oroot", str(folder / "run" / "run")),
        *extra,
    ]
    run_s, peak_mb = run_watched(command, folder)
    return Measurement(n, write_s, run_s, peak_mb)


def print_ratio(results: list[Measurement]) -> None:
    """The largest count's peak over the smallest's."""
    low, high = min(results, key=lambda r: r.particles), max(results, key=lambda r: r.particles)
    print(
        f"peak at {high.particles} / peak at {low.particles} particles: {high.peak_mb / low.peak_mb:.2f} "
        "(target for 20000 / 2000: at most 1.20, and at most 2048 MB at 20000)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument(
        "--workdir", type=Path, help="folder for the data sets (default: a new temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data sets and runs")
    parser.add_argument(
        "--extra",
        default="",
        help='options added to ml_tomo, e.g. "--workers 2" (one option alone: --extra=--quiet)',
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mltomo-memory-"))
    extra = shlex.split(args.extra)
    print(
        "peak memory: RssAnon (anonymous resident memory, from /proc/<pid>/status) summed over ml_tomo and "
        f"all its descendant processes, sampled every {POLL_S} s;"
    )
    print("file-backed pages (the memory-mapped particle stack, shared libraries) do not count")
    print(f"run: ml_tomo -i images.xmd --missing wedges.xmd {shlex.join(RUN_OPTIONS + extra)} --oroot ...")
    folders: list[Path] = []
    try:
        start = time.perf_counter()
        pool = make_pool(args.size)
        print(f"pool of {len(pool.volumes)} clean particles made in {time.perf_counter() - start:.1f} s")
        print(f"{'particles':>9} {'write s':>8} {'run s':>8} {'peak RssAnon MB':>16}", flush=True)
        results = []
        for n in args.particles:
            folder = workdir / f"n{n}"
            folder.mkdir(parents=True)
            folders.append(folder)
            result = measure(folder, pool, n, extra)
            results.append(result)
            print(f"{n:9d} {result.write_s:8.1f} {result.run_s:8.1f} {result.peak_mb:16.0f}", flush=True)
        if len(results) > 1:
            print_ratio(results)
    finally:
        if args.keep:
            print(f"kept in {workdir}")
        else:
            for folder in folders:
                shutil.rmtree(folder)
            if args.workdir is None:
                workdir.rmdir()


if __name__ == "__main__":
    main()
