"""Synthetic subtomograms with ground truth, and the scores that compare a result with it.

Used by ``ml_tomo demo``, the napari sample data, the tests and the benchmarks. Everything is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray
from scipy.special import comb

from .fourier import AXES3, resolution_masks
from .geometry import centred_coordinates, euler_to_matrix, rotate_volumes
from .missing import MissingRegion, region_masks
from .sampling import random_orientations

__all__ = [
    "SyntheticDataset",
    "adjusted_rand_index",
    "make_dataset",
    "make_phantoms",
    "orientation_errors_deg",
]


@dataclass(frozen=True)
class SyntheticDataset:
    """Particles made from known phantoms.

    Attributes
    ----------
    volumes : (n, N, N, N) ndarray of float32
        The particles, scaled to unit variance over the whole data set.
    phantoms : (K, N, N, N) ndarray of float32
        The noise-free class templates (reference frame), on the particles' scale.
    classes : (n,) ndarray of int
        True class of each particle (0-based).
    angles_deg : (n, 3) ndarray
        True Xmipp ``(rot, tilt, psi)`` mapping each particle onto its template.
    shifts_px : (n, 3) ndarray
        True ``(x, y, z)`` shift: ``particle(q) = template(A (q + s))``.
    region : MissingRegion
        The missing region shared by all particles.
    """

    volumes: NDArray[np.float32]
    phantoms: NDArray[np.float32]
    classes: NDArray[np.intp]
    angles_deg: NDArray[np.float64]
    shifts_px: NDArray[np.float64]
    region: MissingRegion


def make_phantoms(n_classes: int, size: int, seed: int = 0) -> NDArray[np.float32]:
    """Distinct asymmetric phantoms: a central body with 3, 4 or 5 lobes of different sizes.

    Class ``k`` has ``3 + k % 3`` lobes (a different selection of sizes for each class) in random
    directions at least 72 degrees apart, so no phantom has even an approximate rotational symmetry.
    Each phantom is centred on its centre of mass, as picked subtomograms are.

    Parameters
    ----------
    n_classes : int
    size : int
        Box size ``N`` (at least 16); the lobes sit 7 to 9 voxels from the centre of a 32-voxel box.
    seed : int

    Returns
    -------
    (n_classes, N, N, N) ndarray of float32
        Maximum about 1.
    """
    rng = np.random.default_rng([seed, 17])
    coords = centred_coordinates(size).reshape(size, size, size, 3)
    scale = size / 32.0
    phantoms = np.zeros((n_classes, size, size, size), dtype=np.float64)
    for k in range(n_classes):
        lobes = np.roll(_LOBES, -k, axis=0)[: 3 + k % 3]
        directions = _spread_directions(rng, len(lobes))
        centres = np.vstack([np.zeros(3), directions * lobes[:, :1]])
        widths = np.concatenate([[_BODY_WIDTH_PX], lobes[:, 1]])
        centres -= np.average(centres, axis=0, weights=widths**3)
        for centre, width in zip(centres * scale, widths * scale, strict=True):
            phantoms[k] += np.exp(-np.sum((coords - centre) ** 2, axis=-1) / (2 * width**2))
    return phantoms.astype(np.float32)


_BODY_WIDTH_PX = 4.0
#: (distance from the body, width) of each lobe, in voxels of a 32-voxel box.
_LOBES = np.array([(8.0, 3.6), (9.0, 3.0), (7.0, 2.4), (8.0, 2.8), (9.0, 2.2)])


def _spread_directions(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """``n`` random unit vectors whose pairwise cosines are below 0.3 (angles above ~72 degrees)."""
    directions = np.zeros((0, 3))
    while len(directions) < n:
        candidate = rng.normal(size=3)
        candidate /= np.linalg.norm(candidate)
        if np.all(directions @ candidate < 0.3):
            directions = np.vstack([directions, candidate])
    return directions


def make_dataset(
    n_per_class: int = 30,
    n_classes: int = 3,
    size: int = 32,
    *,
    snr: float = 0.5,
    max_shift_px: int = 2,
    tilt_deg: float = 60.0,
    seed: int = 0,
) -> SyntheticDataset:
    """Particles of randomly rotated and shifted phantoms with white noise and a missing wedge.

    Parameters
    ----------
    n_per_class, n_classes, size : int
        Particles per class, number of classes and box size ``N``.
    snr : float
        Signal variance over noise variance inside the box.
    max_shift_px : int
        Integer shifts are drawn uniformly from ``[-max_shift_px, max_shift_px]`` on each axis.
    tilt_deg : float
        The tilt series covers ``[-tilt_deg, tilt_deg]`` about y (a ``wedge_y`` region).
    seed : int

    Returns
    -------
    SyntheticDataset
    """
    rng = np.random.default_rng([seed, 23])
    phantoms = make_phantoms(n_classes, size, seed)
    n = n_per_class * n_classes
    classes = rng.permutation(np.repeat(np.arange(n_classes), n_per_class))
    angles = random_orientations(rng, n)
    shifts = rng.integers(-max_shift_px, max_shift_px + 1, size=(n, 3)).astype(np.float64)
    region = MissingRegion(kind="wedge_y", theta_y0_deg=-tilt_deg, theta_yf_deg=tilt_deg)
    _, everything = resolution_masks(size, 0.5)
    everything[0, 0, 0] = True
    observed = region_masks((region,), size, everything)[0, 0]
    noise_sigma = np.sqrt(phantoms.var() / snr)
    volumes = np.empty((n, size, size, size), dtype=np.float32)
    for i in range(n):
        matrix = euler_to_matrix(*angles[i])
        particle = rotate_volumes(phantoms[classes[i]], matrix.T, fill=0.0)  # template(A r)
        particle = np.roll(particle, tuple(-shifts[i, ::-1].astype(int)), axis=(0, 1, 2))
        particle = particle + rng.normal(scale=noise_sigma, size=particle.shape)
        particle = sfft.irfftn(sfft.rfftn(particle, axes=AXES3) * observed, s=(size,) * 3, axes=AXES3)
        volumes[i] = particle
    scale = 1.0 / volumes.std()  # unit variance over the data set, as users normalise their particles
    return SyntheticDataset(volumes * scale, phantoms * scale, classes, angles, shifts, region)


def adjusted_rand_index(labels_true: NDArray[np.integer], labels_pred: NDArray[np.integer]) -> float:
    """Adjusted Rand index of two partitions (1 = identical up to relabelling, ~0 = chance)."""
    _, true_codes = np.unique(labels_true, return_inverse=True)
    _, pred_codes = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((true_codes.max() + 1, pred_codes.max() + 1))
    np.add.at(table, (true_codes, pred_codes), 1)
    pairs = comb(table, 2).sum()
    rows, cols = comb(table.sum(axis=1), 2).sum(), comb(table.sum(axis=0), 2).sum()
    expected = rows * cols / comb(len(true_codes), 2)
    maximum = 0.5 * (rows + cols)
    if maximum == expected:
        return 1.0
    return float((pairs - expected) / (maximum - expected))


def orientation_errors_deg(
    estimated_deg: NDArray[np.floating],
    true_deg: NDArray[np.floating],
    classes: NDArray[np.integer],
) -> NDArray[np.float64]:
    """Gauge-free orientation errors over all pairs of particles of the same true class.

    For a pair ``(i, j)`` the error is the rotation angle of ``(A_i^T A_j)^T (R_i^T R_j)`` where ``A``
    are the estimated and ``R`` the true Xmipp matrices; a global rotation of the result cancels.

    Parameters
    ----------
    estimated_deg, true_deg : (n, 3) array of float
        ``(rot, tilt, psi)`` in degrees.
    classes : (n,) array of int
        True classes.

    Returns
    -------
    (n_pairs,) ndarray of float64
        Errors in degrees.
    """
    estimated = euler_to_matrix(*np.moveaxis(np.asarray(estimated_deg), -1, 0))
    true = euler_to_matrix(*np.moveaxis(np.asarray(true_deg), -1, 0))
    errors = []
    for label in np.unique(classes):
        members = np.nonzero(classes == label)[0]
        i, j = np.triu_indices(len(members), k=1)
        a_rel = np.swapaxes(estimated[members[i]], 1, 2) @ estimated[members[j]]
        r_rel = np.swapaxes(true[members[i]], 1, 2) @ true[members[j]]
        difference = np.swapaxes(a_rel, 1, 2) @ r_rel
        cosine = (np.trace(difference, axis1=1, axis2=2) - 1.0) / 2.0
        errors.append(np.rad2deg(np.arccos(np.clip(cosine, -1.0, 1.0))))
    return np.concatenate(errors) if errors else np.zeros(0)
