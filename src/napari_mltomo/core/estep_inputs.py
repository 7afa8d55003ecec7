"""What the E-step consumes: the references rotated into each orientation (:class:`ReferenceBank`), the
model of one iteration with its translation prior (:class:`EStepModel`, :func:`translation_log_prior`) and a
chunk of prepared particles (:class:`ParticleChunk`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import EllipsisType

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from .fourier import half_grid_weights, parseval_norms
from .geometry import (
    FourierStencil,
    fourier_stencil,
    frequency_major,
    oversampled_masks,
    oversampled_spectra,
    zero_outside_sphere,
)
from .missing import MissingRegion, region_masks

__all__ = [
    "EStepModel",
    "ParticleChunk",
    "ReferenceBank",
    "RotatedReferences",
    "TranslationWindow",
    "translation_log_prior",
]


@dataclass(frozen=True)
class RotatedReferences:
    """The references in a batch of orientations: ``(b, K, N, N, N//2+1)`` conjugate spectra and
    ``(b, K, R)`` squared norms inside each missing region."""

    conjugate_spectra: NDArray[np.complex64]
    norms: NDArray[np.float64]


@dataclass(frozen=True)
class ReferenceBank:
    """References rotated into each orientation of a list, as half-grid spectra, built on demand.

    ``rotated(batch).conjugate_spectra[a, k]`` is the complex conjugate of the spectrum of
    ``Rot[A_a^T] A_k``, rotated in Fourier space on a 2x oversampled grid
    (:func:`~napari_mltomo.core.geometry.fourier_stencil`); ``norms[a, k, m]`` is its squared real-space
    norm inside missing region ``m`` (Parseval). Only the oversampled spectra of the ``K`` references
    are kept, frequency-major (each interpolation corner is read for every class at once), so a bank
    costs the same whatever the number of orientations, and a chunk of particles holds one batch of
    rotated references at a time.

    Parameters
    ----------
    references : (K, N, N, N) ndarray of float
    matrices : (n_ang, 3, 3) ndarray
        The orientations ``A_a`` (particle -> reference).
    region_masks : (R, N, N, N//2+1) ndarray of bool
        Observed components of each missing region in the particle's own frame.
    """

    references: NDArray[np.float64]
    matrices: NDArray[np.float64]
    region_masks: NDArray[np.bool_]
    columns: NDArray[np.complex64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inside, _ = zero_outside_sphere(self.references)
        spectra = oversampled_spectra(inside.astype(np.float32))
        object.__setattr__(self, "columns", frequency_major(spectra))

    def rotated(self, orientations: slice) -> RotatedReferences:
        """The references in orientations ``orientations``."""
        matrices = self.matrices[orientations]
        spectra = np.empty((len(matrices), self.n_classes, *self.region_masks.shape[1:]), np.complex64)
        for a, matrix in enumerate(matrices):
            spectra[a] = self.forward(matrix).apply_columns(self.columns, conjugate=True)
        return RotatedReferences(spectra, _masked_norms(spectra, self.region_masks, self.size))

    def rotated_by(self, forward: FourierStencil) -> RotatedReferences:
        """The references in the one orientation whose stencil (:meth:`forward`) is ``forward``."""
        spectra = forward.apply_columns(self.columns, conjugate=True)[None]
        return RotatedReferences(spectra, _masked_norms(spectra, self.region_masks, self.size))

    def forward(self, matrix: NDArray[np.float64]) -> FourierStencil:
        """The stencil that turns the references into orientation ``matrix``: ``Rot[matrix^T]``."""
        return fourier_stencil(matrix.T, self.size)

    @property
    def size(self) -> int:
        """Box size ``N``."""
        return int(self.references.shape[-1])

    @property
    def n_classes(self) -> int:
        """Number of references ``K``."""
        return int(self.references.shape[0])

    def __len__(self) -> int:
        return len(self.matrices)


def _masked_norms(spectra: NDArray, masks: NDArray[np.bool_], size: int) -> NDArray[np.float64]:
    """``norms[a, k, m] = sum_r (F^-1[M_m F_ak])**2`` by Parseval on the half grid."""
    weighted = (masks * half_grid_weights(size)).reshape(len(masks), -1) / size**3
    power = spectra.real.astype(np.float64) ** 2 + spectra.imag.astype(np.float64) ** 2
    return (power.reshape(-1, weighted.shape[1]) @ weighted.T).reshape(*spectra.shape[:2], -1)


@dataclass(frozen=True)
class TranslationWindow:
    """The translations a prior allows, as a box of correlation maps centred on the zero translation
    (index ``N//2``, as :func:`~napari_mltomo.core.correlation_maps.centred_spectra` gives them): the only
    part of a map the passes read.

    With the default prior (standard deviation 3 pixels, 6 of them each way) a 64-voxel map is read on
    a 37-voxel box, a fifth of it; a smaller box or a wider prior is read whole.

    Attributes
    ----------
    box : tuple
        The box as an index of ``(..., N, N, N)`` arrays: ``(..., z, y, x)`` slices.
    log_prior, shift_sq : ndarray of float32
        ``log P(t)`` and ``|t|**2`` on the box.
    circular_index : (box size,) ndarray of int
        Flat index of each box voxel (C order) in the circular maps of :attr:`EStepModel.log_prior`.
    """

    box: tuple[EllipsisType, slice, slice, slice]
    log_prior: NDArray[np.float32]
    shift_sq: NDArray[np.float32]
    circular_index: NDArray[np.intp]

    @classmethod
    def of(cls, log_prior: NDArray[np.float32], shift_sq: NDArray[np.float32]) -> TranslationWindow:
        """The window of a circular prior and its ``|t|**2`` (:func:`translation_log_prior`)."""
        centred = np.fft.fftshift(log_prior)
        allowed = np.isfinite(centred)
        box = (
            ...,
            *(
                slice(int(inside[0]), int(inside[-1]) + 1)
                for inside in (np.nonzero(allowed.any(axis=other))[0] for other in ((1, 2), (0, 2), (0, 1)))
            ),
        )
        circular_index = np.fft.fftshift(np.arange(log_prior.size).reshape(log_prior.shape))
        return cls(box, centred[box], np.fft.fftshift(shift_sq)[box], circular_index[box].ravel())


@dataclass(frozen=True)
class EStepModel:
    """Model parameters the E-step needs, fixed for one iteration.

    Attributes
    ----------
    log_fractions : (K,) ndarray
        ``log alpha_k`` (``-inf`` for empty classes).
    sigma_noise : float
        White-noise standard deviation per voxel (real-space units).
    log_prior : (N, N, N) ndarray of float32
        ``log P(t)`` of the circular translation at each index of a correlation map (``-inf`` where
        excluded).
    shift_sq : (N, N, N) ndarray of float32
        ``|t|**2`` at each index.
    regions : tuple of MissingRegion
        The missing regions; empty if the data have none.
    within_resolution : (N, N, N//2+1) ndarray of bool
        Components used at all: within ``--maxres``, DC excluded.
    significance : float
        Relative weight below which an (orientation, class) pair is skipped in the backward pass.
    max_cc : bool
        Constrained cross-correlation (``--maxCC``) instead of ML: each particle goes, with weight 1,
        to its (orientation, class, shift) of highest normalised correlation, over the shifts the
        translation prior allows (unweighted).
    """

    log_fractions: NDArray[np.float64]
    sigma_noise: float
    log_prior: NDArray[np.float32]
    shift_sq: NDArray[np.float32]
    regions: tuple[MissingRegion, ...]
    within_resolution: NDArray[np.bool_]
    significance: float = 1e-8
    max_cc: bool = False

    @cached_property
    def translations(self) -> TranslationWindow:
        """The box of translations the prior allows (:class:`TranslationWindow`)."""
        return TranslationWindow.of(self.log_prior, self.shift_sq)

    @cached_property
    def region_masks(self) -> NDArray[np.bool_]:
        """Observed components of each region in the particle's own frame, ``(R, N, N, N//2+1)``."""
        size = self.within_resolution.shape[0]
        return region_masks(self.regions, size, self.within_resolution)[0]

    @cached_property
    def oversampled_region_masks(self) -> NDArray[np.complexfloating]:
        """:func:`~napari_mltomo.core.geometry.oversampled_masks` of each region, ``(R, 2N, 2N, N+1)``."""
        return oversampled_masks(self.region_masks.astype(np.float64))

    @cached_property
    def observed_counts(self) -> NDArray[np.float64]:
        """Number of observed components of each region on the full grid, ``(R,)``."""
        size = self.region_masks.shape[1]
        return np.einsum("mzyx,x->m", self.region_masks.astype(np.float64), half_grid_weights(size))


@dataclass(frozen=True)
class ParticleChunk:
    """Prepared particles: observed half-grid spectra and bookkeeping.

    Attributes
    ----------
    indices : (n,) ndarray of int
        Positions of the particles in the data set.
    spectra : (n, N, N, N//2+1) ndarray of complex64
        ``rfftn`` of each particle times its missing-region mask.
    regions : (n,) ndarray of int
        0-based missing-region index of each particle.
    halves : (n,) ndarray of int
        Random half-set (0 or 1) of each particle for this iteration.
    allowed : (n, n_ang) ndarray of bool, optional
        The orientations of the bank each particle is scored against (local searches, fixed
        orientations, the fine pass of an adaptive search); every orientation if omitted.
    orientation_count : (n,) ndarray of float, optional
        The number of orientations each particle's uniform orientation prior spreads over:
        ``allowed[i].sum()`` if omitted. An adaptive search gives the whole grid, so that the
        orientations it does not score keep their share of the prior.
    """

    indices: NDArray[np.intp]
    spectra: NDArray[np.complex64]
    regions: NDArray[np.intp]
    halves: NDArray[np.intp]
    allowed: NDArray[np.bool_] | None = None
    orientation_count: NDArray[np.float64] | None = None

    def allowed_in(self, bank: ReferenceBank) -> NDArray[np.bool_]:
        """``allowed``, or every orientation of ``bank``: ``(n, len(bank))``."""
        if self.allowed is None:
            return np.ones((len(self), len(bank)), dtype=bool)
        if self.allowed.shape != (len(self), len(bank)) or not self.allowed.any(axis=1).all():
            raise ValueError(f"allowed must be ({len(self)}, {len(bank)}) with a True in every row")
        return self.allowed

    def log_orientation_counts(self, allowed: NDArray[np.bool_]) -> NDArray[np.float64]:
        """``log`` of :attr:`orientation_count` (of ``allowed[i].sum()`` by default), ``(n,)``."""
        count = allowed.sum(axis=1) if self.orientation_count is None else self.orientation_count
        return np.log(count)

    @cached_property
    def power(self) -> NDArray[np.float64]:
        """``xi_i``: squared real-space norm of each observed particle, ``(n,)``."""
        return parseval_norms(self.spectra, self.spectra.shape[-2])

    def __len__(self) -> int:
        return len(self.indices)


def translation_log_prior(
    size: int, sigma_px: float, limit_px: float = -1.0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Log of the Gaussian translation prior at each index of a circular correlation map.

    Parameters
    ----------
    size : int
        Box size ``N``; index ``j`` of an axis is the translation ``((j + N//2) mod N) - N//2``.
    sigma_px : float
        Standard deviation of the isotropic 3D Gaussian prior (internal pixels); ``<= 1e-6`` means
        no translation.
    limit_px : float
        If ``>= 0``, translations longer than this are excluded and the prior is renormalised.

    Returns
    -------
    log_prior, shift_sq : (N, N, N) ndarray of float32
        ``log P(t)`` (``-inf`` where excluded) and ``|t|**2``.
    """
    axis = (np.arange(size) + size // 2) % size - size // 2
    tz, ty, tx = np.meshgrid(axis, axis, axis, indexing="ij")
    shift_sq = (tx**2 + ty**2 + tz**2).astype(np.float64)
    if sigma_px <= 1e-6:
        log_prior = np.where(shift_sq == 0, 0.0, -np.inf)
        return log_prior.astype(np.float32), shift_sq.astype(np.float32)
    width = min(size, 2 * int(np.ceil(6 * sigma_px)) + 1)
    low, high = -(width // 2), width - 1 - width // 2
    inside = np.all([(t >= low) & (t <= high) for t in (tx, ty, tz)], axis=0)
    log_prior = -1.5 * np.log(2 * np.pi * sigma_px**2) - shift_sq / (2 * sigma_px**2)
    if limit_px >= 0:
        inside &= shift_sq <= limit_px**2
        log_prior -= logsumexp(log_prior[inside])
    log_prior = np.where(inside, log_prior, -np.inf)
    return log_prior.astype(np.float32), shift_sq.astype(np.float32)
