"""Synthetic subtomograms with ground truth, and the scores that compare a result with it.

Used by ``ml_tomo demo``, the napari sample data, the tests and the benchmarks. Everything is seeded.

Two phantom families (:func:`make_phantoms`, :func:`make_near_symmetric_phantoms`, in ``core.phantoms``)
and maps of real atoms (``render_atoms``), and two ways of making particles from them
(:func:`make_dataset`, :func:`make_protein_dataset`): a rotated phantom with white noise and an exact
missing wedge, or the reconstruction of a simulated tilt series (CTF, noise per tilt, weighted
back-projection; ``core.tilt_series``). The scores are in ``core.scores``; this module re-exports every
public name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray
from scipy import ndimage

from .fourier import AXES3, resolution_masks
from .geometry import euler_to_matrix
from .missing import MissingRegion, region_masks
from .phantoms import Atoms, make_near_symmetric_phantoms, make_phantoms, render_atoms
from .sampling import random_orientations
from .scores import adjusted_rand_index, class_orientation_errors_deg, orientation_errors_deg
from .state import SubtomogramSet
from .tilt_series import PIXEL_SIZE_A_AT_32, Acquisition, tilt_angles_deg, tilt_series_particles

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

    def subtomograms(self, with_poses: bool = False) -> SubtomogramSet:
        """The particles as the engine takes them, all with :attr:`region`; with ``with_poses`` the true
        angles and shifts come as their metadata."""
        angles, shifts = (self.angles_deg, self.shifts_px) if with_poses else (None, None)
        return SubtomogramSet(self.volumes, (self.region,), angles_deg=angles, shifts_px=shifts)


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
    acquisition = Acquisition(tilt_deg, tilt_step_deg, PIXEL_SIZE_A_AT_32 * 32.0 / size)
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
    acquisition = Acquisition(tilt_deg, tilt_step_deg, pixel_size_a, dose_per_tilt)
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


def _reconstructed(
    posed: NDArray[np.floating],
    templates: NDArray[np.floating],
    classes: NDArray[np.intp],
    angles: NDArray[np.float64],
    shifts: NDArray[np.float64],
    reconstruction: ReconstructionKind,
    snr: float,
    acquisition: Acquisition,
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
        volumes = tilt_series_particles(posed, acquisition, snr, rng)
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
