"""Re-pose a class from its particles' pairwise alignments, synchronised.

A small protein that looks nearly the same under a family of rotations at low resolution (turns about the
long axis of an elongated protein, a near 2-fold across it) can leave its class's particles scattered over
that family. The reference is then a blend; each particle fits the blend in the pose it has, and no single
move re-poses them (the pose check of ``core.escape`` looks for one). Particles compared with each other
instead of with the blend still show how each pair is related. :func:`synchronised_corrections` aligns
every pair of a sample of the class's particles over the rotations under which the reference looks the
same at low resolution (:func:`look_alike_rotations`, :func:`pairwise_rotations`), then finds the one
rotation per particle that agrees with most pairs (:func:`synchronise`): the three leading eigenvectors of
the matrix of pairwise rotations, computed again on the pairs that agree with the last answer.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .fourier import AXES3, frequency_radius
from .geometry import (
    fourier_stencil,
    frequency_major,
    masks_of_rotated,
    oversampled_masks,
    oversampled_spectra,
    zero_outside_sphere,
)
from .rigid import rotation_angle_deg
from .sampling import orientation_grid

__all__ = [
    "look_alike_rotations",
    "pairwise_rotations",
    "synchronise",
    "synchronised_corrections",
]

#: At most this many particles of a class are aligned in pairs (drawn at random).
SYNC_SAMPLE = 40
#: Angular step of the rotations tried for each pair, degrees.
SYNC_STEP_DEG = 15.0
#: The reference is compared with itself turned on the shells up to this fraction of the box.
SYNC_LOW = 0.125
#: A rotation is tried if the turned reference correlates there at least this fraction of the best.
SYNC_LIKENESS = 0.9
#: At most this many rotations are tried (the most alike).
SYNC_CANDIDATES = 300
#: Particles are compared on the shells between these fractions of the box.
SYNC_BAND = (0.125, 0.375)
#: The first synchronisation weighs the pairs that correlate best, this fraction of them.
SYNC_FIRST_PAIRS = 0.3
#: A pair agrees with the particles' rotations if its own rotation is within this angle of theirs.
SYNC_AGREE_DEG = 30.0
#: Rounds of synchronisation on the pairs that agree with the previous round.
SYNC_ROUNDS = 5
#: Particles are re-posed only if at least this fraction of the sample turns by more than
#: ``SYNC_AGREE_DEG`` (an aligned class's particles move within the step).
SYNC_MIN_MOVED = 0.1


def look_alike_rotations(
    reference: NDArray[np.floating], matrices: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The rotations of ``matrices`` under which ``reference`` looks most like itself at low resolution.

    Returns
    -------
    (m, 3, 3) ndarray
        Those whose turned reference correlates with the reference on the shells up to ``SYNC_LOW`` of
        the box at least ``SYNC_LIKENESS`` of the best, at most ``SYNC_CANDIDATES`` of them.
    """
    size = reference.shape[-1]
    inside = zero_outside_sphere(np.asarray(reference, dtype=np.float64)[None])[0]
    radius = frequency_radius(size)
    low = (radius > 0) & (radius <= SYNC_LOW * size)
    spectrum = sfft.rfftn(inside, axes=AXES3)[0][low]
    over = oversampled_spectra(inside)
    turned = np.stack([fourier_stencil(matrix, size).apply(over)[0][low] for matrix in matrices])
    likeness = np.real(turned.conj() @ spectrum) / np.sqrt(
        np.sum(np.abs(turned) ** 2, axis=1) * np.sum(np.abs(spectrum) ** 2)
    )
    order = np.argsort(-likeness, kind="stable")[:SYNC_CANDIDATES]
    return matrices[order[likeness[order] >= SYNC_LIKENESS * likeness[order[0]]]]


def pairwise_rotations(
    spectra: NDArray[np.complexfloating], coverage: NDArray[np.floating], candidates: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """For every pair of particles, the candidate rotation ``h`` that best maps the second onto the first.

    Particles are compared by normalised cross-correlation on the shells of ``SYNC_BAND``, over the
    components both observe.

    Parameters
    ----------
    spectra, coverage : (n, N, N, N//2+1) ndarray
        The particles in the reference frame (zero outside the ball) and their observed-region masks.
    candidates : (m, 3, 3) ndarray

    Returns
    -------
    scores : (n, n) ndarray
        The best correlation of particle ``i`` with particle ``j`` turned.
    rotations : (n, n, 3, 3) ndarray
        The rotation that gives it: ``y_i ~ Rot[h_ij] y_j``.
    """
    size = spectra.shape[-2]
    radius = frequency_radius(size)
    band = (radius >= SYNC_BAND[0] * size) & (radius <= SYNC_BAND[1] * size)
    posed, observed = spectra[:, band], np.clip(coverage[:, band], 0.0, 1.0)
    n = len(spectra)
    # spectra and masks in one layout, made once for every candidate
    columns = frequency_major(
        np.concatenate(
            [
                oversampled_spectra(sfft.irfftn(spectra, s=(size,) * 3, axes=AXES3)),
                oversampled_masks(np.asarray(coverage, dtype=np.float64)),
            ]
        )
    )
    scores = np.full((n, n), -np.inf)
    best = np.zeros((n, n), dtype=np.intp)
    for index, matrix in enumerate(candidates):
        rotated = fourier_stencil(matrix, size).apply_columns(columns)
        turned, turned_observed = rotated[:n, band], np.clip(masks_of_rotated(rotated[n:])[:, band], 0.0, 1.0)
        power = (np.abs(posed) ** 2) @ turned_observed.T * (observed @ (np.abs(turned) ** 2).T)
        correlation = np.real(posed @ turned.conj().T) / np.sqrt(np.maximum(power, 1e-300))
        better = correlation > scores
        scores[better], best[better] = correlation[better], index
    return scores, candidates[best]


def synchronise(rotations: NDArray[np.float64], weights: NDArray[np.floating]) -> NDArray[np.float64]:
    """Rotations ``O_i`` with ``O_i O_j^T`` closest to the weighted pairwise ``h_ij`` (spectral method).

    Parameters
    ----------
    rotations : (n, n, 3, 3) ndarray
        ``h_ij``; only ``i < j`` is read (``h_ji = h_ij^T``).
    weights : (n, n) ndarray
        Symmetric, non-negative.

    Returns
    -------
    (n, 3, 3) ndarray
        Up to one rotation of them all, chosen so that the largest group of them within
        ``SYNC_AGREE_DEG`` of each other is on average closest to the identity (their frame is kept).
    """
    n = len(rotations)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)[:, :, None, None]
    pairs = np.where(upper, rotations, np.swapaxes(rotations, -1, -2).transpose(1, 0, 2, 3))
    matrix = np.einsum("ij,ijab->iajb", weights, pairs).reshape(3 * n, 3 * n)
    matrix += np.eye(3 * n) * max(float(weights.max()), 1e-12)
    leading = np.linalg.eigh(matrix)[1][:, -3:].reshape(n, 3, 3)
    if np.mean(np.linalg.det(leading)) < 0:
        leading[:, :, 0] *= -1.0
    found = _nearest_rotations(leading)
    near = rotation_angle_deg(found[:, None] @ np.swapaxes(found, -1, -2)[None]) <= SYNC_AGREE_DEG
    largest = near[np.argmax(near.sum(axis=1))]
    return found @ _nearest_rotations(found[largest].sum(axis=0)).T


def _nearest_rotations(matrices: NDArray[np.float64]) -> NDArray[np.float64]:
    """The rotation nearest each ``(..., 3, 3)`` matrix (Frobenius norm)."""
    u, _, vt = np.linalg.svd(matrices)
    flip = np.ones(matrices.shape[:-1])
    flip[..., -1] = np.sign(np.linalg.det(u @ vt))
    return (u * flip[..., None, :]) @ vt


def _agreeing(rotations: NDArray[np.float64], found: NDArray[np.float64]) -> NDArray[np.bool_]:
    """``(n, n)``: pairs ``i < j`` whose ``h_ij`` is within ``SYNC_AGREE_DEG`` of ``O_i O_j^T``."""
    implied = found[:, None] @ np.swapaxes(found, -1, -2)[None]
    angles = rotation_angle_deg(np.swapaxes(rotations, -1, -2) @ implied)
    return np.triu(angles <= SYNC_AGREE_DEG, 1)


def synchronised_corrections(
    spectra: NDArray[np.complexfloating],
    coverage: NDArray[np.floating],
    reference: NDArray[np.floating],
) -> NDArray[np.float64] | None:
    """Rotations that bring a class's particles into one frame, if they agree with more pairs of them
    than the present poses do and turn at least ``SYNC_MIN_MOVED`` of them by more than
    ``SYNC_AGREE_DEG``.

    Parameters
    ----------
    spectra, coverage : (n, N, N, N//2+1) ndarray
        The particles in the reference frame (zero outside the ball,
        :func:`~napari_mltomo.core.geometry.ball_volumes`) and their observed-region masks.
    reference : (N, N, N) ndarray
        The class reference.

    Returns
    -------
    (n, 3, 3) ndarray or None
        ``C_i``: particle ``i`` in the reference frame should be turned by ``Rot[C_i]``.
    """
    candidates = look_alike_rotations(reference, orientation_grid(SYNC_STEP_DEG).matrices)
    scores, rotations = pairwise_rotations(spectra, coverage, candidates)
    found, agree = _synchronised(scores, rotations)
    moved = np.count_nonzero(rotation_angle_deg(found) > SYNC_AGREE_DEG)
    present = _agreeing(rotations, np.broadcast_to(np.eye(3), found.shape)).sum()
    if moved < SYNC_MIN_MOVED * len(found) or agree.sum() <= present:
        return None
    return np.swapaxes(found, -1, -2)


def _synchronised(
    scores: NDArray[np.float64], rotations: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """:func:`synchronise` on the best ``SYNC_FIRST_PAIRS`` of the pairs, then ``SYNC_ROUNDS`` times on
    those that agree with the last answer (weighted by their scores); the rotations, and the pairs
    that agree with them (:func:`_agreeing`)."""
    upper = np.triu(np.ones(scores.shape, dtype=bool), 1)
    weights = upper & (scores >= np.quantile(scores[upper], 1.0 - SYNC_FIRST_PAIRS))
    for _ in range(SYNC_ROUNDS):
        found = synchronise(rotations, _symmetric(weights))
        agree = _agreeing(rotations, found)
        weights = agree * np.maximum(scores, 0.0)
    return found, agree


def _symmetric(upper: NDArray[np.floating]) -> NDArray[np.float64]:
    """A symmetric matrix from its strict upper triangle."""
    upper = np.triu(np.asarray(upper, dtype=np.float64), 1)
    return upper + upper.T
