"""Synthetic subtomograms with ground truth, and the scores that compare a result with it.

Used by ``ml_tomo demo``, the napari sample data, the tests and the benchmarks. Everything is seeded.

Two phantom families (:func:`make_phantoms`, :func:`make_near_symmetric_phantoms`) and two ways of making
particles from them (:func:`make_dataset`): a rotated phantom with white noise and an exact missing wedge,
or the reconstruction of a simulated tilt series (CTF, noise per tilt, weighted back-projection).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray
from scipy import ndimage
from scipy.special import comb

from .fourier import AXES3, frequency_radius, resolution_masks
from .geometry import centred_coordinates, euler_to_matrix
from .missing import MissingRegion, region_masks
from .sampling import random_orientations

__all__ = [
    "Atoms",
    "PhantomKind",
    "ReconstructionKind",
    "SyntheticDataset",
    "adjusted_rand_index",
    "class_orientation_errors_deg",
    "make_dataset",
    "make_near_symmetric_phantoms",
    "make_phantoms",
    "make_protein_dataset",
    "orientation_errors_deg",
    "render_atoms",
    "tilt_angles_deg",
]

PhantomKind = Literal["distinct", "near_symmetric"]
ReconstructionKind = Literal["wedge", "tilt_series"]


@dataclass(frozen=True)
class SyntheticDataset:
    """Particles made from known phantoms.

    Attributes
    ----------
    volumes : (n, N, N, N) ndarray of float32
        The particles, scaled to unit variance over the whole data set.
    phantoms : (K, N, N, N) ndarray of float32
        The noise-free class templates (reference frame, not CTF-filtered), on the particles' scale.
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


# --------------------------------------------------------------------------- phantoms


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


# --------------------------------------------------------------------------- particles


def make_dataset(
    n_per_class: int = 30,
    n_classes: int = 3,
    size: int = 32,
    *,
    snr: float = 0.5,
    max_shift_px: int = 2,
    tilt_deg: float = 60.0,
    tilt_step_deg: float = 3.0,
    phantoms: PhantomKind = "distinct",
    reconstruction: ReconstructionKind = "wedge",
    seed: int = 0,
) -> SyntheticDataset:
    """Particles of randomly rotated and shifted phantoms, with noise and a missing wedge.

    ``reconstruction="wedge"``: the posed phantom plus white noise of variance ``var(phantoms) / snr``,
    then every Fourier component outside the ``wedge_y`` region or beyond Nyquist set to exactly 0. As
    that filter keeps about 70 % of the signal's power but 35 % of the white noise, the signal-to-noise
    ratio measured in the particles is about ``1.9 snr``.

    ``reconstruction="tilt_series"``: as real subtomograms are made. The posed phantom is projected
    along z at the tilts of :func:`tilt_angles_deg` about y (the spectrum of a projection is the
    volume's Fourier transform on the tilted central plane, evaluated without interpolation); each
    projection's spectrum is multiplied by the phase-flipped CTF ``|CTF|`` (300 kV, Cs 2.7 mm, amplitude
    contrast 0.07, defocus 3 um drawn uniformly within +-0.5 um per particle, pixel size ``6 * 32 / N``
    angstrom, so the first zero is at 0.23 to 0.27 cycles/pixel); white noise is added to every
    projection; and the particle is the weighted (ramp ``|k|`` across the tilt axis) back-projection.
    The missing wedge then holds a little leaked power and the noise is coloured. The per-tilt noise is
    scaled so that the signal-to-noise ratio measured in the particles is ``snr``: over the data set,
    the variance of the noise-free reconstructions over that of the noise-only ones.

    The default (``"distinct"`` phantoms, ``"wedge"``) turns the phantoms with trilinear interpolation and
    periodic integer shifts, which keeps its particles as they always were; every other combination
    samples ``template(A (q + s))`` with cubic splines (zero outside the box).

    Parameters
    ----------
    n_per_class, n_classes, size : int
        Particles per class, number of classes and box size ``N``.
    snr : float
        Signal variance over noise variance (see above for what each reconstruction measures).
    max_shift_px : int
        Integer shifts are drawn uniformly from ``[-max_shift_px, max_shift_px]`` on each axis.
    tilt_deg : float
        The tilt series covers ``[-tilt_deg, tilt_deg]`` about y (a ``wedge_y`` region).
    tilt_step_deg : float
        Tilt increment of ``"tilt_series"`` particles, in degrees.
    phantoms : {"distinct", "near_symmetric"}
        :func:`make_phantoms` or :func:`make_near_symmetric_phantoms` (same ``seed``).
    reconstruction : {"wedge", "tilt_series"}
    seed : int

    Returns
    -------
    SyntheticDataset
    """
    _check_reconstruction(reconstruction)
    templates = _templates(phantoms, n_classes, size, seed)
    rng = np.random.default_rng([seed, 23])
    classes, angles, shifts = _draw_poses(rng, n_classes, n_per_class, max_shift_px)
    if phantoms == "distinct" and reconstruction == "wedge":
        posed = _posed_trilinear(templates, classes, angles, shifts)
    else:
        posed = _posed_cubic(templates, classes, angles, shifts)
    acquisition = _Acquisition(tilt_deg, tilt_step_deg, _PIXEL_SIZE_A_AT_32 * 32.0 / size)
    return _reconstructed(posed, templates, classes, angles, shifts, reconstruction, snr, acquisition, rng)


def make_protein_dataset(
    structures: Sequence[Atoms],
    n_per_class: int = 30,
    size: int = 32,
    *,
    pixel_size_a: float,
    snr: float = 0.5,
    max_shift_px: int = 2,
    tilt_deg: float = 60.0,
    tilt_step_deg: float = 3.0,
    dose_per_tilt: float = 3.0,
    reconstruction: ReconstructionKind = "tilt_series",
    seed: int = 0,
) -> SyntheticDataset:
    """Particles of randomly posed atomic structures, one class per structure, made as :func:`make_dataset`
    makes them.

    Each particle is rendered from the structure's atoms turned and shifted exactly
    (:func:`render_atoms`), so no resampling blurs it. With ``reconstruction="tilt_series"`` the tilts
    are taken in a dose-symmetric order (0, then alternately further either way), each adding
    ``dose_per_tilt`` electrons per square angstrom, and each projection is attenuated by the exposure
    it has had (``exp(-D / 2 De(k))`` with the critical exposure ``De(k) = 0.245 k**-1.665 + 2.81``,
    ``k`` in 1/angstrom, of Grant and Grigorieff 2015), as well as by the CTF at the real pixel size.

    Parameters
    ----------
    structures : sequence of Atoms
        One per class, centred (:meth:`Atoms.centred`).
    n_per_class, size : int
        Particles per class and box size ``N``.
    pixel_size_a : float
        Angstrom per voxel.
    snr, max_shift_px, tilt_deg, tilt_step_deg, reconstruction, seed
        As for :func:`make_dataset`.
    dose_per_tilt : float
        Electrons per square angstrom per tilt (``"tilt_series"`` only).

    Returns
    -------
    SyntheticDataset
        Its ``phantoms`` are the structures rendered in the reference frame.
    """
    _check_reconstruction(reconstruction)
    rng = np.random.default_rng([seed, 31])
    classes, angles, shifts = _draw_poses(rng, len(structures), n_per_class, max_shift_px)
    matrices = euler_to_matrix(*angles.T)
    templates = np.stack([render_atoms(atoms, size, pixel_size_a) for atoms in structures])
    posed = np.stack(
        [
            render_atoms(structures[label], size, pixel_size_a, matrix, shift)
            for label, matrix, shift in zip(classes, matrices, shifts, strict=True)
        ]
    )
    acquisition = _Acquisition(tilt_deg, tilt_step_deg, pixel_size_a, dose_per_tilt)
    return _reconstructed(posed, templates, classes, angles, shifts, reconstruction, snr, acquisition, rng)


def _check_reconstruction(reconstruction: str) -> None:
    if reconstruction not in ("wedge", "tilt_series"):
        raise ValueError(f"reconstruction must be 'wedge' or 'tilt_series'; got {reconstruction!r}")


def _draw_poses(
    rng: np.random.Generator, n_classes: int, n_per_class: int, max_shift_px: int
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """Classes in random order, random orientations and integer shifts of ``n_classes * n_per_class``
    particles."""
    n = n_per_class * n_classes
    classes = rng.permutation(np.repeat(np.arange(n_classes), n_per_class))
    angles = random_orientations(rng, n)
    shifts = rng.integers(-max_shift_px, max_shift_px + 1, size=(n, 3)).astype(np.float64)
    return classes, angles, shifts


@dataclass(frozen=True)
class _Acquisition:
    """The tilt range and step (degrees), the pixel size (angstrom) and the exposure per tilt."""

    tilt_deg: float
    step_deg: float
    pixel_a: float
    dose_per_tilt: float = 0.0


def _reconstructed(
    posed: NDArray[np.floating],
    templates: NDArray[np.floating],
    classes: NDArray[np.intp],
    angles: NDArray[np.float64],
    shifts: NDArray[np.float64],
    reconstruction: ReconstructionKind,
    snr: float,
    acquisition: _Acquisition,
    rng: np.random.Generator,
) -> SyntheticDataset:
    """The data set of the ``posed`` templates, seen through a wedge or reconstructed from a tilt series,
    scaled to unit variance."""
    region = MissingRegion(
        kind="wedge_y", theta_y0_deg=-acquisition.tilt_deg, theta_yf_deg=acquisition.tilt_deg
    )
    posed = np.asarray(posed, dtype=np.float32)
    templates = np.asarray(templates, dtype=np.float32)
    if reconstruction == "wedge":
        volumes = _wedge_particles(posed, region, np.sqrt(templates.var() / snr), rng)
    else:
        volumes = _tilt_series_particles(posed, acquisition, snr, rng)
    scale = 1.0 / volumes.std()  # unit variance over the data set, as users normalise their particles
    return SyntheticDataset(volumes * scale, templates * scale, classes, angles, shifts, region)


def _templates(kind: PhantomKind, n_classes: int, size: int, seed: int) -> NDArray[np.float32]:
    """The ``(K, N, N, N)`` phantoms of one family."""
    if kind == "distinct":
        return make_phantoms(n_classes, size, seed)
    if kind == "near_symmetric":
        return make_near_symmetric_phantoms(n_classes, size, seed)[0]
    raise ValueError(f"phantoms must be 'distinct' or 'near_symmetric'; got {kind!r}")


def _posed_trilinear(
    templates: NDArray[np.float32],
    classes: NDArray[np.intp],
    angles: NDArray[np.float64],
    shifts: NDArray[np.float64],
) -> NDArray[np.float32]:
    """``template(A (q + s))`` by a trilinear rotation (zero where ``A q`` is outside the box) and a
    periodic integer shift, ``(n, N, N, N)``."""
    size = templates.shape[-1]
    centre = np.full(3, size // 2, dtype=np.float64)
    posed = np.empty((len(classes), size, size, size), dtype=np.float32)
    for i, (label, angle, shift) in enumerate(zip(classes, angles, shifts, strict=True)):
        matrix = euler_to_matrix(*angle)[::-1, ::-1]  # acting on (z, y, x)
        rotated = ndimage.affine_transform(
            templates[label], matrix, centre - matrix @ centre, order=1, mode="constant", cval=0.0
        )
        posed[i] = np.roll(rotated, tuple(-shift[::-1].astype(int)), axis=(0, 1, 2))
    return posed


def _posed_cubic(
    templates: NDArray[np.float32],
    classes: NDArray[np.intp],
    angles: NDArray[np.float64],
    shifts: NDArray[np.float64],
) -> NDArray[np.float32]:
    """``template(A (q + s))`` sampled with cubic splines, zero outside the box, ``(n, N, N, N)``."""
    size = templates.shape[-1]
    centre = np.full(3, size // 2, dtype=np.float64)
    posed = np.empty((len(classes), size, size, size), dtype=np.float32)
    for i, (label, angle, shift) in enumerate(zip(classes, angles, shifts, strict=True)):
        matrix = euler_to_matrix(*angle)[::-1, ::-1]  # acting on (z, y, x)
        offset = centre + matrix @ (shift[::-1] - centre)
        posed[i] = ndimage.affine_transform(
            templates[label], matrix, offset, order=3, mode="grid-constant", cval=0.0
        )
    return posed


def _wedge_particles(
    posed: NDArray[np.float32], region: MissingRegion, noise_sigma: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Posed phantoms plus white noise of standard deviation ``noise_sigma``, outside the wedge zeroed."""
    size = posed.shape[-1]
    _, everything = resolution_masks(size, 0.5)
    everything[0, 0, 0] = True
    observed = region_masks((region,), size, everything)[0, 0]
    volumes = np.empty_like(posed)
    for i, particle in enumerate(posed):
        noisy = particle + rng.normal(scale=noise_sigma, size=particle.shape)
        volumes[i] = sfft.irfftn(sfft.rfftn(noisy, axes=AXES3) * observed, s=(size,) * 3, axes=AXES3)
    return volumes


# --------------------------------------------------------------------------- tilt series


def tilt_angles_deg(tilt_deg: float, step_deg: float) -> NDArray[np.float64]:
    """The tilts of a symmetric tilt series: every multiple of ``step_deg`` within ``[-tilt_deg, tilt_deg]``.

    Returns
    -------
    (2m + 1,) ndarray of float64
        Ascending tilts in degrees, 0 included (41 tilts for 60 and 3).
    """
    count = int(np.floor(tilt_deg / step_deg + 1e-9))
    return step_deg * np.arange(-count, count + 1, dtype=np.float64)


_VOLTAGE_V = 300e3
_WAVELENGTH_A = 12.2643 / np.sqrt(_VOLTAGE_V * (1.0 + 0.978466e-6 * _VOLTAGE_V))  # relativistic electrons
_CS_A = 2.7e7  # spherical aberration, 2.7 mm
_AMPLITUDE_CONTRAST = 0.07
_DEFOCUS_A = 3.0e4
_DEFOCUS_JITTER_A = 0.5e4
_PIXEL_SIZE_A_AT_32 = 6.0  # pixel size of a 32-voxel box of phantoms; scaled so they keep their physical size


@dataclass(frozen=True)
class _TiltGeometry:
    """Fourier-slice projection and weighted back-projection of ``N``-cubes at a list of tilts about y.

    A projection at tilt ``t`` is stored as its 1-D spectrum along the detector axis ``x' = x cos t +
    z sin t`` for every detector row ``y``: ``P[t, m, y] = sum_{x, z} v(x, y, z) exp(-2 pi i m x' / N)``.
    """

    kernel: NDArray[np.complex64]  # (T*N, N*N): rows (tilt, m), columns (z, x)
    ramp: NDArray[np.float64]  # (T*N, 1): back-projection weight of each row
    frequency_a: NDArray[np.float64]  # (N, N): |(m, ky)| of each projection component, 1/angstrom
    exposure: NDArray[np.float64]  # (T,): electrons per square angstrom before each tilt's own half
    size: int

    @classmethod
    def build(cls, size: int, acquisition: _Acquisition) -> _TiltGeometry:
        """The geometry of an ``N``-box at the tilts ``tilt_angles_deg(tilt_deg, step_deg)``."""
        tilts_deg = tilt_angles_deg(acquisition.tilt_deg, acquisition.step_deg)
        tilts = np.deg2rad(tilts_deg)[:, None, None, None]
        m = sfft.fftfreq(size, 1.0 / size)  # signed integer frequencies
        axis = np.arange(size, dtype=np.float64) - size // 2
        detector = axis[None, None, None, :] * np.cos(tilts) + axis[None, None, :, None] * np.sin(tilts)
        phase = (-2.0 * np.pi / size * m[None, :, None, None] * detector).astype(np.float32)
        kernel = np.exp(1j * phase)  # (T, N, N, N) complex64: [tilt, m, z, x]
        # The area each sample stands for in the (kx, kz) plane: |m| step, and a quarter step at m = 0.
        ramp = np.where(m == 0, 0.25, np.abs(m)) * np.deg2rad(acquisition.step_deg) / size**2
        frequency = np.hypot(m[:, None], m[None, :]) / (size * acquisition.pixel_a)
        # dose-symmetric order: 0, then alternately further either way; exposure at mid-tilt
        order = np.lexsort((tilts_deg < 0, np.abs(tilts_deg)))
        exposure = np.empty(len(tilts_deg))
        exposure[order] = (np.arange(len(tilts_deg)) + 0.5) * acquisition.dose_per_tilt
        return cls(
            kernel.reshape(len(tilts_deg) * size, size * size),
            np.tile(ramp, len(tilts_deg))[:, None],
            frequency,
            exposure,
            size,
        )

    @property
    def n_tilts(self) -> int:
        return self.kernel.shape[0] // self.size

    def project(self, volume: NDArray[np.floating]) -> NDArray[np.complex64]:
        """Projection spectra ``(T, N, N)`` indexed ``[tilt, m, y]`` of a ``[z, y, x]`` volume."""
        n = self.size
        columns = np.transpose(volume, (0, 2, 1)).reshape(n * n, n).astype(np.complex64)
        return (self.kernel @ columns).reshape(self.n_tilts, n, n)

    def backproject(self, spectra: NDArray[np.complexfloating]) -> NDArray[np.float32]:
        """Ramp-weighted back-projection of ``(T, N, N)`` spectra ``[tilt, m, y]``, a ``[z, y, x]`` volume."""
        n = self.size
        weighted = (spectra.reshape(-1, n) * self.ramp).astype(np.complex64)
        volume = (self.kernel.conj().T @ weighted).real.reshape(n, n, n)  # [z, x, y]
        return np.ascontiguousarray(np.transpose(volume, (0, 2, 1)), dtype=np.float32)

    def microscope(self, spectra: NDArray[np.complex64], defocus_a: float) -> NDArray[np.complex64]:
        """Multiply every projection's 2-D spectrum by the phase-flipped CTF ``|CTF|`` and, with an
        exposure, by the attenuation of radiation damage."""
        filtered = sfft.fft(spectra, axis=-1) * _ctf_amplitude(self.frequency_a, defocus_a)  # [t, m, ky]
        if self.exposure.any():
            filtered *= _exposure_attenuation(self.frequency_a, self.exposure)
        return sfft.ifft(filtered, axis=-1).astype(np.complex64)

    def noise(self, rng: np.random.Generator) -> NDArray[np.complex128]:
        """Spectra ``[tilt, m, y]`` of unit white noise on every ``N x N`` projection."""
        images = rng.normal(size=(self.n_tilts, self.size, self.size))  # [tilt, y, x']
        return np.swapaxes(sfft.fft(images, axis=-1), 1, 2)


def _ctf_amplitude(frequency_per_a: NDArray[np.float64], defocus_a: float) -> NDArray[np.float64]:
    """``|CTF|`` of an underfocus ``defocus_a`` at spatial frequencies in 1/angstrom."""
    k2 = frequency_per_a**2
    chi = np.pi * _WAVELENGTH_A * defocus_a * k2 - 0.5 * np.pi * _CS_A * _WAVELENGTH_A**3 * k2**2
    contrast = np.sqrt(1.0 - _AMPLITUDE_CONTRAST**2) * np.sin(chi) + _AMPLITUDE_CONTRAST * np.cos(chi)
    return np.abs(contrast)


def _exposure_attenuation(frequency_per_a: NDArray[np.float64], exposure: NDArray[np.float64]) -> NDArray:
    """``(T, N, N)``: ``exp(-D / 2 De(k))`` per tilt exposure ``D`` (Grant and Grigorieff's critical
    exposure ``De``; 1 at ``k = 0``)."""
    with np.errstate(divide="ignore"):
        critical = 0.245 * frequency_per_a**-1.665 + 2.81
    return np.exp(-exposure[:, None, None] / (2.0 * critical[None]))


def _tilt_series_particles(
    posed: NDArray[np.float32], acquisition: _Acquisition, snr: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Weighted back-projections of CTF-filtered noisy tilt series of the posed phantoms, ``(n, N, N, N)``."""
    geometry = _TiltGeometry.build(posed.shape[-1], acquisition)
    defocus = _DEFOCUS_A + rng.uniform(-_DEFOCUS_JITTER_A, _DEFOCUS_JITTER_A, size=len(posed))
    signal = np.empty_like(posed)
    noise = np.empty_like(posed)
    for i, particle in enumerate(posed):
        signal[i] = geometry.backproject(geometry.microscope(geometry.project(particle), defocus[i]))
        noise[i] = geometry.backproject(geometry.noise(rng))
    noise_scale = np.sqrt(signal.var(dtype=np.float64) / (snr * noise.var(dtype=np.float64)))
    return signal + np.float32(noise_scale) * noise


# --------------------------------------------------------------------------- scores


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


def class_orientation_errors_deg(
    estimated_deg: NDArray[np.floating],
    true_deg: NDArray[np.floating],
    classes: NDArray[np.integer],
) -> dict[int, NDArray[np.float64]]:
    """Gauge-free orientation errors over the pairs of particles of each true class.

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
    dict of int to (n_k (n_k - 1) / 2,) ndarray of float64
        True class -> errors in degrees of its ``n_k`` particles' pairs, in ascending class order.
    """
    estimated = euler_to_matrix(*np.moveaxis(np.asarray(estimated_deg), -1, 0))
    true = euler_to_matrix(*np.moveaxis(np.asarray(true_deg), -1, 0))
    labels = np.asarray(classes)
    return {
        int(label): _pair_errors_deg(estimated[labels == label], true[labels == label])
        for label in np.unique(labels)
    }


def _pair_errors_deg(estimated: NDArray[np.float64], true: NDArray[np.float64]) -> NDArray[np.float64]:
    """Errors in degrees of all pairs ``i < j`` of ``(m, 3, 3)`` estimated and true matrices."""
    i, j = np.triu_indices(len(estimated), k=1)
    a_rel = np.swapaxes(estimated[i], 1, 2) @ estimated[j]
    r_rel = np.swapaxes(true[i], 1, 2) @ true[j]
    difference = np.swapaxes(a_rel, 1, 2) @ r_rel
    cosine = (np.trace(difference, axis1=1, axis2=2) - 1.0) / 2.0
    return np.rad2deg(np.arccos(np.clip(cosine, -1.0, 1.0)))


def orientation_errors_deg(
    estimated_deg: NDArray[np.floating],
    true_deg: NDArray[np.floating],
    classes: NDArray[np.integer],
) -> NDArray[np.float64]:
    """Gauge-free orientation errors over all pairs of particles of the same true class.

    The errors of :func:`class_orientation_errors_deg`, class after class in ascending order.

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
    per_class = class_orientation_errors_deg(estimated_deg, true_deg, classes)
    return np.concatenate(list(per_class.values())) if per_class else np.zeros(0)
