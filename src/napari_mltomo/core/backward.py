"""Pass 2 of the E-step, the backward pass: the weighted, shifted particle sums of each significant
(orientation, class) pair, added per (orientation, class, missing region, half set) in Fourier space and
spread into the reference frame once per group, by the exact adjoint of the rotation that built the bank; with
them, the references as the particles saw them, the rotated coverage and the class weights. The weights come
from the caller (:data:`WeightMaps`): the posteriors, or the best poses of ``--maxCC``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .correlation_maps import rows_per_block
from .estep_inputs import EStepModel, ParticleChunk, ReferenceBank, RotatedReferences
from .fourier import AXES3
from .geometry import FourierStencil, backproject, fourier_stencil, oversampled_shape, rotate_masks

__all__ = ["WeightMaps", "backward_pass"]

#: ``weights_at(rows, rotated)``: the translation weights of particles ``rows`` against the references
#: ``rotated`` into one orientation, ``(len(rows), K, N, N, N)`` float32.
WeightMaps = Callable[[NDArray[np.intp], RotatedReferences], NDArray[np.float32]]


def backward_pass(
    chunk: ParticleChunk,
    bank: ReferenceBank,
    model: EStepModel,
    significant: NDArray[np.bool_],
    weights_at: WeightMaps,
) -> tuple[NDArray[np.complex128], NDArray[np.complex128], NDArray[np.float64], NDArray[np.float64]]:
    """Pass 2: weighted, shifted particle sums per group, spread into the reference frame once.

    Returns the sums and the model sums (see :class:`~napari_mltomo.core.stats.SufficientStats`), the
    coverage and the class weights.
    """
    n_classes = bank.n_classes
    n_regions = len(model.region_masks)
    half = model.region_masks.shape[1:]
    fine = oversampled_shape(bank.size)
    data_spread = np.zeros((2, n_classes, *fine), dtype=np.complex128)
    model_spread = np.zeros((n_classes, *fine), dtype=np.complex128)
    coverage = np.zeros((2, n_classes, *half))
    class_weights = np.zeros(n_classes)
    group = chunk.regions * 2 + chunk.halves  # (n,) -> (region, half) pair
    one_hot = np.zeros((2 * n_regions, len(chunk)))
    one_hot[group, np.arange(len(chunk))] = 1.0
    block = rows_per_block(n_classes, bank.size)
    for a in np.nonzero(significant.any(axis=(0, 2)))[0]:
        members = np.nonzero(significant[:, a].any(axis=1))[0]
        forward = bank.forward(bank.matrices[a])
        rotated = bank.rotated_by(forward)
        grouped = np.zeros((2 * n_regions, n_classes, *half), dtype=np.complex128)
        masses = np.zeros((2 * n_regions, n_classes))
        for start in range(0, len(members), block):  # a few maps at a time, however many particles
            rows = members[start : start + block]
            weights = weights_at(rows, rotated)
            weights *= significant[rows, a][..., None, None, None]
            weight_spectra = sfft.rfftn(weights, axes=AXES3)
            shifted = chunk.spectra[rows, None] * weight_spectra.conj()  # (r, K, half)
            grouped += np.einsum("gr,rk...->gk...", one_hot[:, rows], shifted.astype(np.complex128))
            masses += one_hot[:, rows] @ weights.sum(axis=(2, 3, 4), dtype=np.float64)  # (2R, K)
        class_weights += masses.sum(axis=0)
        _spread_orientation(
            data_spread, model_spread, grouped, masses, rotated.conjugate_spectra[0], forward, model
        )
        _add_coverage(coverage, masses, fourier_stencil(bank.matrices[a], bank.size), model)
    sums = sfft.rfftn(backproject(data_spread, bank.size), axes=AXES3)
    model_sums = sfft.rfftn(backproject(model_spread, bank.size), axes=AXES3)
    return sums, model_sums, coverage, class_weights


def _spread_orientation(
    data_spread: NDArray[np.complex128],
    model_spread: NDArray[np.complex128],
    grouped: NDArray[np.complex128],
    masses: NDArray[np.float64],
    conjugate_references: NDArray[np.complex64],
    forward: FourierStencil,
    model: EStepModel,
) -> None:
    """Spread one orientation's (region, half) particle sums, and the references as the particles see
    them (``sum_i w_i M_i A_a``), into the reference frame by the adjoint of the bank's rotation.

    ``grouped`` is ``(2R, K, N, N, N//2+1)``, indexed by ``2 * region + half``; ``masses`` ``(2R, K)``.
    """
    for g in np.nonzero(masses.any(axis=1))[0]:
        forward.spread(grouped[g], data_spread[g % 2])
    region_mass = masses.reshape(-1, 2, masses.shape[1]).sum(axis=1)  # (R, K)
    seen = np.einsum("mk,mzyx->kzyx", region_mass, model.region_masks.astype(np.float64))
    forward.spread(seen * np.conj(conjugate_references), model_spread)


def _add_coverage(
    coverage: NDArray[np.float64], masses: NDArray[np.float64], stencil: FourierStencil, model: EStepModel
) -> None:
    """Add one orientation's observed-region masks, weighted by the groups' masses, in the reference frame
    (``stencil`` rotates from the particle's frame to the reference's).

    The masks are rotated by the same Fourier-space interpolation as the references, so the coverage
    matches the data at the edges of each missing region.
    """
    live = np.nonzero(masses.any(axis=1))[0]
    present = np.unique(live // 2)
    rotated = dict(
        zip(present.tolist(), rotate_masks(model.oversampled_region_masks[present], stencil), strict=True)
    )
    for g in live:
        region, half = divmod(int(g), 2)
        coverage[half] += masses[g][:, None, None, None] * rotated[region]
