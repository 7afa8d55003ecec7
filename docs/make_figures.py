"""Draw docs/demo.png from a finished ``ml_tomo demo DIR`` run: ``python docs/make_figures.py DIR``.

One row per class: central xy, xz and yz sections of the recovered reference (aligned onto its true
phantom for the picture), the same sections of the true phantom, and the central xz section of the
class's Fourier coverage (the particles' rotated missing-wedge masks summed: an even grey up to the
``--dim`` resolution limit means every direction was measured by some particle).
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from napari_mltomo.core.geometry import rotate_volumes
from napari_mltomo.core.sampling import orientation_grid
from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.io import read_star, read_volume

ZOOM = 4


def _sections(volume: np.ndarray) -> list[np.ndarray]:
    centre = volume.shape[0] // 2
    return [volume[centre], volume[:, centre], volume[:, :, centre]]


def _normalised(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99.5])
    return np.clip((image - low) / max(high - low, 1e-12), 0, 1)


def _aligned(reference: np.ndarray, phantom: np.ndarray) -> np.ndarray:
    """The rotation of ``reference`` (over a 15-degree grid, then centred) that best matches ``phantom``."""
    best, best_score = reference, -np.inf
    for matrix in orientation_grid(15.0).matrices:
        rotated = rotate_volumes(reference, matrix)
        score = np.corrcoef(rotated.ravel(), phantom.ravel())[0, 1]
        if score > best_score:
            best, best_score = rotated, score
    shift = np.array(ndimage.center_of_mass(np.clip(phantom, 0, None))) - ndimage.center_of_mass(
        np.clip(best, 0, None)
    )
    return ndimage.shift(best, shift, order=1)


def main(folder: str) -> None:
    """Write ``docs/demo.png`` for the demo run in ``folder``."""
    from napari_mltomo.demo import DEMO_DATASET

    phantoms = make_dataset(**DEMO_DATASET).phantoms
    classes = read_star(Path(folder) / "run" / "demo_ref.xmd", "classes")
    rows = []
    truth_by_class = _match_classes(folder, len(classes))
    for k in range(len(classes)):
        reference = read_volume(Path(folder) / "run" / f"demo_ref{k + 1:06d}.mrc")
        phantom = phantoms[truth_by_class[k]]
        wedge_files = sorted((Path(folder) / "run").glob(f"demo_it*_wedge{k + 1:06d}.mrc"))
        coverage = read_volume(wedge_files[-1])
        panels = [_normalised(s) for s in _sections(_aligned(reference, phantom))]
        panels += [_normalised(s) for s in _sections(phantom)]
        panels.append(_normalised(coverage[:, coverage.shape[1] // 2]))
        rows.append(np.hstack([np.pad(p, 1, constant_values=1) for p in panels]))
    picture = np.kron(np.vstack(rows), np.ones((ZOOM, ZOOM)))
    target = Path(__file__).with_name("demo.png")
    iio.imwrite(target, (picture * 255).astype(np.uint8))
    print(f"wrote {target}")


def _match_classes(folder: str, n_classes: int) -> list[int]:
    """For each recovered class, the true class most of its particles come from."""
    truth = read_star(Path(folder) / "truth.xmd")
    found = read_star(Path(folder) / "run" / "demo_img.xmd")
    true_of = {Path(image).name: ref for image, ref in zip(truth["image"], truth["ref"], strict=True)}
    votes = np.zeros((n_classes, n_classes), dtype=int)
    for image, ref in zip(found["image"], found["ref"], strict=True):
        votes[ref - 1, true_of[Path(image).name] - 1] += 1
    return list(votes.argmax(axis=1))


if __name__ == "__main__":
    main(sys.argv[1])
