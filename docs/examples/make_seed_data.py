"""Write a synthetic data set under the file names of the original ml_tomo documentation's examples.

The files, in OUTPUT_DIR:

* ``particles/part_NNNNNN.vol``: the subtomograms (Spider volumes), near-symmetric dimer-like proteins in
  3 classes, randomly turned and shifted, reconstructed from a +-64 degree tilt series with CTF and noise
  (signal-to-noise ratio 0.5);
* ``images.sel``: an Xmipp 2 selfile (``path 1`` per particle);
* ``images.doc``: an Xmipp 2 docfile (``rot tilt psi Xoff Yoff Zoff Ref Wedge``: zero angles and shifts,
  class 1, missing region 1);
* ``wedges.doc``: the missing region as a headerless row, ``1 wedge_y -64 64``;
* ``myreference.vol``: the true protein of class 1 on another grey scale (times 7, plus 3);
* ``interesting.msk``: a soft sphere in [0, 1] around the part of the box where the 3 proteins differ most
  (in the frame of the true proteins, that of ``myreference.vol``);
* ``truth.xmd``: the true class (``ref``), angles and shifts of every particle (STAR), to score a run.

Only the package and numpy are used; nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.demo import truth_columns
from napari_mltomo.io import MetaData, write_star, write_volume

N_CLASSES = 3
SNR = 0.5
TILT_DEG = 64.0
#: ``myreference.vol`` is the class-1 protein times ``REFERENCE_SCALE`` plus ``REFERENCE_OFFSET``.
REFERENCE_SCALE, REFERENCE_OFFSET = 7.0, 3.0
#: Columns of ``images.doc`` (Xmipp 2 names).
DOC_COLUMNS = ("rot", "tilt", "psi", "Xoff", "Yoff", "Zoff", "Ref", "Wedge")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path, help="folder to write (created if needed)")
    parser.add_argument(
        "--particles", type=int, default=24, help="number of particles, a multiple of 3 (default: 24)"
    )
    parser.add_argument("--size", type=int, default=32, help="box size in voxels, at least 16 (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    if args.particles < N_CLASSES or args.particles % N_CLASSES:
        parser.error(f"--particles must be a positive multiple of {N_CLASSES}, got {args.particles}")
    if args.size < 16:
        parser.error(f"--size must be at least 16, got {args.size}")
    write_seed_data(args.output_dir, args.particles, args.size, args.seed)


def write_seed_data(folder: Path, n_particles: int, size: int, seed: int) -> None:
    """Write the data set described in the module docstring into ``folder``."""
    dataset = make_dataset(
        n_particles // N_CLASSES,
        N_CLASSES,
        size,
        snr=SNR,
        tilt_deg=TILT_DEG,
        phantoms="near_symmetric",
        reconstruction="tilt_series",
        seed=seed,
    )
    pixel_size = 6.0 * 32 / size  # the synthetic tilt series' pixel size
    (folder / "particles").mkdir(parents=True, exist_ok=True)
    names = [f"particles/part_{i:06d}.vol" for i in range(1, n_particles + 1)]
    for name, volume in zip(names, dataset.volumes, strict=True):
        write_volume(folder / name, volume, pixel_size_A=pixel_size)

    (folder / "images.sel").write_text("".join(f"{name} 1\n" for name in names))

    header = " ; Headerinfo columns: " + " , ".join(
        f"{label} ({i})" for i, label in enumerate(DOC_COLUMNS, 1)
    )
    lines = [header]
    for key, name in enumerate(names, start=1):
        values = [0.0] * 6 + [1.0, 1.0]  # angles, shifts, Ref, Wedge
        lines += [f" ; {name}", f"{key:6d} {len(values):2d} " + " ".join(f"{v:10.5f}" for v in values)]
    (folder / "images.doc").write_text("\n".join(lines) + "\n")

    region = dataset.region
    first, last = f"{region.theta_y0_deg:g}", f"{region.theta_yf_deg:g}"
    (folder / "wedges.doc").write_text(f" # Wedgeinfo\n   1  {region.kind}  {first}  {last}\n")

    reference = REFERENCE_SCALE * dataset.phantoms[0] + REFERENCE_OFFSET
    write_volume(folder / "myreference.vol", reference, pixel_size_A=pixel_size)
    write_volume(folder / "interesting.msk", difference_mask(dataset.phantoms), pixel_size_A=pixel_size)

    truth = MetaData({"image": np.array(names, dtype=object), **truth_columns(dataset)})
    write_star(folder / "truth.xmd", truth, "ground truth: class and the transform of each particle onto it")
    print(f"wrote {n_particles} particles of {size}^3 in {N_CLASSES} classes, and the metadata, to {folder}")


def difference_mask(phantoms: NDArray[np.float32]) -> NDArray[np.float32]:
    """A sphere (radius ``N / 5``, raised-cosine edge 2 voxels wide) around where the phantoms differ most.

    The centre is the maximum of the voxelwise standard deviation across the phantoms, smoothed with a
    Gaussian of sigma ``N / 16``, searched within ``N / 4`` of the box centre so the sphere stays inside.
    """
    size = phantoms.shape[-1]
    spread = phantoms.astype(np.float64).std(axis=0)
    frequency = np.fft.fftfreq(size)
    k2 = frequency[:, None, None] ** 2 + frequency[None, :, None] ** 2 + frequency[None, None, :] ** 2
    sigma = size / 16.0
    smooth = np.fft.ifftn(np.fft.fftn(spread) * np.exp(-2.0 * (np.pi * sigma) ** 2 * k2)).real
    grid = np.indices((size,) * 3, dtype=np.float64)
    distance_to_middle = np.sqrt(((grid - size // 2) ** 2).sum(axis=0))
    smooth[distance_to_middle > size / 4.0] = -np.inf
    centre = np.array(np.unravel_index(np.argmax(smooth), smooth.shape), dtype=np.float64)
    radius, edge = size / 5.0, 2.0
    distance = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))
    ramp = np.clip((distance - radius) / edge, 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


if __name__ == "__main__":
    main()
