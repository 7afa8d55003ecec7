"""Phantoms with ground truth: blobs, proteins that are nearly 2-fold symmetric at low resolution, and
maps rendered from atoms (for ``core.synthetic``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .fourier import frequency_radius
from .geometry import centred_coordinates

__all__ = ["Atoms", "make_near_symmetric_phantoms", "make_phantoms", "render_atoms"]


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
    scale = size / 32.0
    phantoms = np.zeros((n_classes, size, size, size), dtype=np.float64)
    for k in range(n_classes):
        lobes = np.roll(_LOBES, -k, axis=0)[: 3 + k % 3]
        directions = _spread_directions(rng, len(lobes))
        centres = np.vstack([np.zeros(3), directions * lobes[:, :1]])
        widths = np.concatenate([[_BODY_WIDTH_PX], lobes[:, 1]])
        centres -= np.average(centres, axis=0, weights=widths**3)
        phantoms[k] = _render_blobs(centres * scale, widths * scale, np.ones(len(widths)), size)
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


def _render_blobs(
    centres: NDArray[np.float64], widths: NDArray[np.float64], amplitudes: NDArray[np.float64], size: int
) -> NDArray[np.float64]:
    """Sum of Gaussians ``a exp(-|r - c|**2 / (2 w**2))`` on the centred grid of an ``N``-cube.

    Parameters
    ----------
    centres : (m, 3) ndarray
        Centred ``(x, y, z)`` positions in voxels.
    widths, amplitudes : (m,) ndarray
        Standard deviations in voxels, and peak values.
    size : int
        Box size ``N``.

    Returns
    -------
    (N, N, N) ndarray of float64
    """
    coords = centred_coordinates(size).reshape(size, size, size, 3)
    volume = np.zeros((size, size, size))
    for centre, width, amplitude in zip(centres, widths, amplitudes, strict=True):
        volume += amplitude * np.exp(-np.sum((coords - centre) ** 2, axis=-1) / (2 * width**2))
    return volume


def make_near_symmetric_phantoms(
    n_classes: int, size: int, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Dimer-like phantoms, 2-fold symmetric at low resolution, with fine features that break the symmetry.

    Each class is a body of two copies of a three-lobed protomer related by a 2-fold rotation about a
    random axis through the centre of mass (class ``k`` uses protomer design ``k % 3``: a propeller, an
    arch or a small hook, lobes jittered by 0.4 voxel, so the bodies differ in shape and size), plus
    48 narrow features (Gaussians of FWHM 1 to 1.25 voxels in a 32-voxel box, each in a moat of 1.5 times
    its width that carries its mass away, so they hold little low-frequency power) placed at random
    in the body. The features carry 13 % of the body's power (sum of squares). Up to 0.25 cycles/voxel
    (the band a 16-voxel internal box keeps of a 32-voxel box) a phantom and its copy turned by the
    2-fold correlate at about 0.98; over the full band at about 0.9, so the data still fix the pose.

    Parameters
    ----------
    n_classes : int
    size : int
        Box size ``N`` (at least 16); every length scales with ``N / 32``. The lobes lie within 9 voxels
        of the centre of a 32-voxel box.
    seed : int

    Returns
    -------
    phantoms : (n_classes, N, N, N) ndarray of float32
        Centred on their centre of mass; maximum 1.
    axes : (n_classes, 3) ndarray of float64
        The unit ``(x, y, z)`` 2-fold axis of each body, through the centre voxel.
    """
    rng = np.random.default_rng([seed, 29])
    scale = size / 32.0
    phantoms = np.empty((n_classes, size, size, size), dtype=np.float32)
    axes = np.empty((n_classes, 3))
    for k in range(n_classes):
        axes[k] = _unit(rng.normal(size=3))
        centres, widths = _dimer(rng, _PROTOMERS[k % len(_PROTOMERS)], axes[k])
        body = _render_blobs(centres * scale, widths * scale, np.ones(len(widths)), size)
        features = _fine_features(rng, centres, widths, size)
        amplitude = np.sqrt(_FEATURE_POWER * np.sum(body**2) / np.sum(features**2))
        phantom = body + amplitude * features
        phantoms[k] = phantom / phantom.max()
    return phantoms, axes


#: Protomer designs: one lobe per row, ``(v, u, w, width)`` in voxels of a 32-voxel box, where ``u`` is
#: the 2-fold axis and ``(v, u, w)`` a right-handed frame. Three lobes that are not in line, so the
#: dimer has no second approximate symmetry.
_PROTOMERS = (
    np.array([(4.0, -1.0, 0.0, 2.6), (3.0, 4.0, 3.0, 2.2), (8.0, -2.0, -2.0, 2.0)]),  # propeller
    np.array([(3.0, -2.5, 0.0, 2.4), (5.5, 1.0, 1.5, 2.6), (6.0, 5.0, -1.0, 2.2)]),  # arch
    np.array([(2.5, -2.0, 0.0, 2.2), (5.0, -4.0, 2.0, 2.0), (4.0, 2.5, -2.0, 2.0)]),  # small hook
)
_PROTOMER_JITTER_PX = 0.4
_FEATURES = 48
_FEATURE_FWHM_PX = (1.0, 1.25)
_FEATURE_MOAT = 1.5  # width of a feature's moat over the feature's own width
_FEATURE_POWER = 0.13  # sum of squares of the features over that of the body
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _unit(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    return vector / np.linalg.norm(vector)


def _dimer(
    rng: np.random.Generator, design: NDArray[np.float64], axis: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lobes of a protomer and of its copy turned by 180 degrees about ``axis``, centred on their mass.

    Returns
    -------
    centres : (2m, 3) ndarray
        ``(x, y, z)`` in voxels of a 32-voxel box; the centre of mass (weights ``width**3``) is 0.
    widths : (2m,) ndarray
    """
    v = _unit(np.cross(axis, rng.normal(size=3)))
    frame = np.stack([v, axis, np.cross(v, axis)])  # rows: v, u, w in (x, y, z)
    local = design[:, :3] + rng.normal(scale=_PROTOMER_JITTER_PX, size=(len(design), 3))
    widths = design[:, 3] * rng.uniform(0.9, 1.1, size=len(design))
    protomer = local @ frame
    two_fold = 2.0 * np.outer(axis, axis) - np.eye(3)
    centres = np.vstack([protomer, protomer @ two_fold.T])
    widths = np.concatenate([widths, widths])
    return centres - np.average(centres, axis=0, weights=widths**3), widths


def _fine_features(
    rng: np.random.Generator, centres: NDArray[np.float64], widths: NDArray[np.float64], size: int
) -> NDArray[np.float64]:
    """Narrow zero-mass features at random points of a body of Gaussian lobes (32-voxel units).

    Returns
    -------
    (N, N, N) ndarray of float64
        Peak of a single feature before the moat: 1.
    """
    lobe = rng.choice(len(widths), size=_FEATURES, p=widths**3 / np.sum(widths**3))
    positions = centres[lobe] + rng.normal(size=(_FEATURES, 3)) * 0.8 * widths[lobe, None]
    sigma = rng.uniform(*_FEATURE_FWHM_PX, size=_FEATURES) / _FWHM_PER_SIGMA
    scale = size / 32.0
    return _render_blobs(
        np.vstack([positions, positions]) * scale,
        np.concatenate([sigma, _FEATURE_MOAT * sigma]) * scale,
        np.concatenate([np.ones(_FEATURES), np.full(_FEATURES, -(_FEATURE_MOAT**-3))]),
        size,
    )


@dataclass(frozen=True)
class Atoms:
    """An atomic structure as weighted points.

    Attributes
    ----------
    positions_a : (m, 3) ndarray of float64
        ``(x, y, z)`` in angstrom.
    weights : (m,) ndarray of float64
        Scattering weight of each atom (its atomic number, say).
    """

    positions_a: NDArray[np.float64]
    weights: NDArray[np.float64]

    def centred(self) -> Atoms:
        """The structure moved so that its weighted centre is at the origin."""
        centre = np.average(self.positions_a, axis=0, weights=self.weights)
        return Atoms(self.positions_a - centre, self.weights)

    @property
    def radius_a(self) -> float:
        """Distance of the furthest atom from the origin, in angstrom."""
        return float(np.linalg.norm(self.positions_a, axis=1).max())


def render_atoms(
    atoms: Atoms,
    size: int,
    pixel_size_a: float,
    matrix: NDArray[np.float64] | None = None,
    shift_px: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """The density of ``atoms`` on an ``N``-cube, posed as ``template(M (q + s))``.

    Each atom is spread over its 8 nearest voxels (trilinear weights) and the sum blurred by a Gaussian
    of one voxel (applied in Fourier space, so the density holds under 1 % of its amplitude at Nyquist).
    Atoms that land outside the box are dropped.

    Parameters
    ----------
    atoms : Atoms
        Positions about the reference frame's origin, the box centre.
    size : int
        Box size ``N``.
    pixel_size_a : float
        Angstrom per voxel.
    matrix : (3, 3) ndarray, optional
        ``M``: an atom at ``x`` lands at ``q = M^T x / pixel - s``. Identity by default.
    shift_px : (3,) ndarray, optional
        ``s``, ``(x, y, z)`` voxels. Zero by default.

    Returns
    -------
    (N, N, N) ndarray of float64
        Indexed ``[z, y, x]``.
    """
    matrix = np.eye(3) if matrix is None else matrix
    shift = np.zeros(3) if shift_px is None else shift_px
    position = atoms.positions_a @ matrix / pixel_size_a - shift + size // 2  # rows: (M^T x)^T
    low = np.floor(position).astype(np.intp)
    fraction = position - low
    density = np.zeros((size, size, size))
    for corner in itertools.product((0, 1), repeat=3):
        offset = np.array(corner)
        index = low + offset
        weight = atoms.weights * np.prod(np.where(offset, fraction, 1.0 - fraction), axis=1)
        inside = np.all((index >= 0) & (index < size), axis=1)
        np.add.at(density, (index[inside, 2], index[inside, 1], index[inside, 0]), weight[inside])
    radius = frequency_radius(size) / size  # cycles per voxel
    blurred = sfft.rfftn(density) * np.exp(-2.0 * np.pi**2 * radius**2)
    return sfft.irfftn(blurred, s=density.shape)
