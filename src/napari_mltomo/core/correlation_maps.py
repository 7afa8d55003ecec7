"""Correlation maps of a chunk of particles against the references in a batch of orientations, computed
in blocks of about ``BATCH_BYTES`` (:func:`rotated_blocks`, :func:`correlations`): what both passes of the
E-step (:mod:`napari_mltomo.core.estep`, :mod:`napari_mltomo.core.backward`) are built on."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .estep_inputs import EStepModel, ParticleChunk, ReferenceBank, RotatedReferences
from .fourier import AXES3
from .geometry import centre_phase

__all__ = ["BATCH_BYTES", "centred_spectra", "correlations", "rotated_blocks", "rows_per_block"]

#: Bytes of correlation maps handled together in one batched FFT: small enough that a block stays in
#: cache through the reductions that follow (at N = 32, 24 maps ran 1.4x faster than 192).
BATCH_BYTES = 3 * 2**20


def _maps_per_batch(n_classes: int, size: int) -> int:
    """Correlation maps in about ``BATCH_BYTES`` (at least one per class)."""
    return max(n_classes, BATCH_BYTES // (4 * size**3))


def rows_per_block(n_classes: int, size: int) -> int:
    """Particles whose maps of every class fit in about ``BATCH_BYTES`` (at least one)."""
    return max(1, _maps_per_batch(n_classes, size) // n_classes)


def _map_batches(
    allowed: NDArray[np.bool_], n_classes: int, size: int
) -> list[tuple[NDArray[np.intp], slice]]:
    """(particles, orientations) blocks of about ``BATCH_BYTES`` of correlation maps, orientation-major.

    A block holds only the particles allowed some orientation of its batch; with every orientation
    allowed, a batch spans several orientations when the chunk is small.
    """
    n_particles, n_orientations = allowed.shape
    step = max(1, _maps_per_batch(n_classes, size) // (n_particles * n_classes))
    group = max(1, rows_per_block(n_classes, size) // step)
    blocks = []
    for a in range(0, n_orientations, step):
        batch = slice(a, min(a + step, n_orientations))
        rows = np.nonzero(allowed[:, batch].any(axis=1))[0]
        blocks += [(rows[i : i + group], batch) for i in range(0, len(rows), group)]
    return blocks


def rotated_blocks(
    bank: ReferenceBank, allowed: NDArray[np.bool_]
) -> Iterator[tuple[NDArray[np.intp], slice, RotatedReferences]]:
    """The blocks of :func:`_map_batches` with their orientation batch's references, each batch
    rotated once."""
    current: tuple[slice, RotatedReferences] | None = None
    for rows, batch in _map_batches(allowed, bank.n_classes, bank.size):
        if current is None or current[0] != batch:
            current = (batch, bank.rotated(batch))
        yield rows, batch, current[1]


def correlations(
    spectra: NDArray[np.complex64], conjugate_references: NDArray[np.complex64], size: int
) -> NDArray[np.float32]:
    """``CC[i, a, k](t) = sum_r x_i(r + t) b_ak(r)`` for all circular t: ``(n, b, K, N, N, N)``, indexed as
    :attr:`~napari_mltomo.core.estep_inputs.EStepModel.log_prior` is, or centred on ``t = 0`` for
    :func:`centred_spectra`."""
    product = spectra[:, None, None] * conjugate_references[None]
    return sfft.irfftn(product, s=(size,) * 3, axes=AXES3, overwrite_x=True)


def centred_spectra(chunk: ParticleChunk, model: EStepModel, size: int) -> NDArray[np.complex64]:
    """The particles' spectra over ``sigma**2``, phase-shifted so that their correlation maps come out
    centred on the zero translation (index ``N//2``): the maps are then log-weights up to the prior and
    a constant, and the prior's :class:`~napari_mltomo.core.estep_inputs.TranslationWindow` is one box of
    them."""
    return chunk.spectra * (centre_phase(size) / np.float32(model.sigma_noise**2))
