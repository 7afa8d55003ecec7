"""Rigid moves and their search: the rotation about the box centre and the shift that best map one volume
onto another (:func:`superposition`), or a volume onto itself turned by at least 90 degrees
(:func:`near_symmetry`).

A rotation is scored by the normalised cross-correlation at its best translation, found to a fraction of a
voxel; grid rotations are scored on a small box, the best few hill-climbed there and the winner refined at
full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from .fourier import AXES3, fourier_rescale, shift_phases
from .geometry import (
    fourier_stencil,
    oversampled_masks,
    oversampled_spectra,
    rotate_masks,
    zero_outside_sphere,
)

__all__ = [
    "RigidMove",
    "near_symmetry",
    "refined_superposition",
    "rotation_angle_deg",
    "superposition",
]

#: Box at which candidate near-symmetries are scored: the low-resolution shape is what traps.
SEARCH_SIZE = 16
#: Best coarse candidates refined at that box before the winner is refined at full size.
SEARCH_STARTS = 4
#: Rotations closer than this to the identity are not candidate near-symmetries.
MIN_SYMMETRY_ANGLE_DEG = 90.0


def rotation_angle_deg(matrices: NDArray[np.float64]) -> NDArray[np.float64]:
    """Angle of each ``(..., 3, 3)`` rotation matrix, in degrees."""
    cosine = (np.trace(matrices, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


@dataclass(frozen=True)
class RigidMove:
    """A rotation about the box centre followed by a translation: ``f -> Rot[M] f`` shifted by ``-t``.

    ``Rot[M] f (r) = f(M^T r)``, so the moved volume is ``g(r) = f(M^T (r + t))``.
    """

    matrix: NDArray[np.float64]  # (3, 3)
    shift_px: NDArray[np.float64]  # (3,) x, y, z

    def spectra(self, volumes: NDArray[np.floating]) -> NDArray[np.complex128]:
        """``rfftn`` spectra of ``(..., N, N, N)`` volumes (zero outside the ball) after the move."""
        return self.apply(oversampled_spectra(volumes), volumes.shape[-1])

    def apply(self, oversampled: NDArray[np.complexfloating], size: int) -> NDArray[np.complex128]:
        """:meth:`spectra` from the volumes' :func:`oversampled_spectra` (size ``N``)."""
        rotated = fourier_stencil(self.matrix, size).apply(oversampled)
        return rotated * shift_phases(-self.shift_px, size)

    def masks(self, masks: NDArray[np.floating]) -> NDArray[np.float64]:
        """Observed-region masks ``(..., N, N, N//2+1)`` after the move (the shift leaves them alone)."""
        size = masks.shape[-2]
        return rotate_masks(
            oversampled_masks(np.asarray(masks, dtype=np.float64)), fourier_stencil(self.matrix, size)
        )


def near_symmetry(
    references: NDArray[np.float64], matrices: NDArray[np.float64], step_deg: float
) -> list[RigidMove]:
    """Per reference, the move turning it by at least 90 degrees that best maps it onto itself.

    A reference need not be centred, so every rotation is scored at its best translation. The candidates
    of ``matrices`` are scored at a box of at most ``SEARCH_SIZE``; the ``SEARCH_STARTS`` best are refined
    there by local searches down to a quarter of ``step_deg``, and the best of those at full size down to
    an eighth.

    Parameters
    ----------
    references : (K, N, N, N) ndarray
    matrices : (n, 3, 3) ndarray
        Candidate rotations (the orientation grid).
    step_deg : float
        Angular spacing of ``matrices``.

    Returns
    -------
    list of RigidMove
        One per reference.
    """
    candidates = matrices[rotation_angle_deg(matrices) >= MIN_SYMMETRY_ANGLE_DEG]
    coarse = _Correlation(fourier_rescale(references, min(references.shape[-1], SEARCH_SIZE)))
    return _search_moves(coarse, _Correlation(references), candidates, step_deg)


def superposition(
    fixed: NDArray[np.float64], moving: NDArray[np.float64], matrices: NDArray[np.float64], step_deg: float
) -> RigidMove:
    """The move that best maps volume ``moving`` onto volume ``fixed`` (both ``(N, N, N)``), searched as
    :func:`near_symmetry` searches, over all the rotations of ``matrices``."""
    size = min(fixed.shape[-1], SEARCH_SIZE)
    coarse = _Correlation(fourier_rescale(fixed[None], size), fourier_rescale(moving[None], size))
    return _search_moves(coarse, _Correlation(fixed[None], moving[None]), matrices, step_deg)[0]


def refined_superposition(
    fixed: NDArray[np.float64], moving: NDArray[np.float64], matrix: NDArray[np.float64], step_deg: float
) -> RigidMove:
    """The move that best maps volume ``moving`` onto volume ``fixed`` (both ``(N, N, N)``), hill-climbed
    from rotation ``matrix`` in steps of a half, a quarter and an eighth of ``step_deg``."""
    correlation = _Correlation(fixed[None], moving[None])
    return _best_move(correlation, 0, _refine_locally(correlation, 0, matrix, step_deg, (2, 4, 8))[0])


def _search_moves(
    coarse: _Correlation, fine: _Correlation, candidates: NDArray[np.float64], step_deg: float
) -> list[RigidMove]:
    """Per volume pair of the correlations, the best move: every candidate scored by ``coarse``, the
    ``SEARCH_STARTS`` best hill-climbed there, the winner refined by ``fine``."""
    scores = np.array([coarse(matrix)[0] for matrix in candidates])  # (n, K)
    found = []
    for k in range(scores.shape[1]):
        starts = candidates[np.argsort(scores[:, k])[::-1][:SEARCH_STARTS]]
        climbed = [_refine_locally(coarse, k, start, step_deg, (1, 2, 4)) for start in starts]
        best = max(climbed, key=lambda pair: pair[1])[0]
        found.append(_best_move(fine, k, _refine_locally(fine, k, best, step_deg, (4, 8))[0]))
    return found


class _Correlation:
    """Normalised cross-correlation of ``K`` fixed volumes with ``K`` moving volumes (by default the
    fixed ones) rotated by a given matrix, at the best translation."""

    def __init__(self, fixed: NDArray[np.floating], moving: NDArray[np.floating] | None = None) -> None:
        inside, _ = zero_outside_sphere(np.asarray(fixed, dtype=np.float64))
        self.size = inside.shape[-1]
        self.spectra = sfft.rfftn(inside, axes=AXES3)
        norm = np.sqrt(np.sum(inside**2, axis=AXES3))
        if moving is not None:
            inside, _ = zero_outside_sphere(np.asarray(moving, dtype=np.float64))
        self.moving = oversampled_spectra(inside)
        self.norm = norm * np.sqrt(np.sum(inside**2, axis=AXES3))

    def __call__(self, matrix: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Scores ``(K,)`` and the shifts ``(K, 3)`` (x, y, z pixels) of the moves that reach them."""
        rotated = RigidMove(matrix, np.zeros(3)).apply(self.moving, self.size)
        maps = sfft.irfftn(self.spectra.conj() * rotated, s=(self.size,) * 3, axes=AXES3)
        peaks, offsets = zip(*(_subvoxel_peak(m) for m in maps), strict=True)
        return np.array(peaks) / self.norm, np.array(offsets)[:, ::-1]


def _subvoxel_peak(cyclic: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
    """Height and signed ``(z, y, x)`` position of the maximum of a cyclic map, refined by a parabola
    through the peak and its two neighbours along each axis."""
    size = cyclic.shape[0]
    index = np.array(np.unravel_index(cyclic.argmax(), cyclic.shape))
    height = cyclic[tuple(index)]
    position = np.where(index > size // 2, index - size, index).astype(np.float64)
    for axis in range(3):
        step = np.eye(3, dtype=int)[axis]
        below, above = cyclic[tuple((index - step) % size)], cyclic[tuple((index + step) % size)]
        curvature = below - 2 * height + above
        if curvature < 0:
            offset = 0.5 * (below - above) / curvature
            position[axis] += offset
            height -= 0.25 * (below - above) * offset
    return float(height), position


def _best_move(correlation: _Correlation, k: int, matrix: NDArray[np.float64]) -> RigidMove:
    """The move of rotation ``matrix`` whose result best matches volume ``k``."""
    return RigidMove(matrix, correlation(matrix)[1][k])


#: Axes of the local moves of :func:`_refine_locally`: turns about x, y and z, either way.
_NUDGE_DIRECTIONS = np.concatenate([np.eye(3), -np.eye(3)])


def _refine_locally(
    correlation: _Correlation,
    k: int,
    matrix: NDArray[np.float64],
    step_deg: float,
    levels: tuple[int, ...],
) -> tuple[NDArray[np.float64], float]:
    """Hill-climb ``matrix`` over rotations of ``step_deg / level`` for each level in turn."""
    best = float(correlation(matrix)[0][k])
    for level in levels:
        nudges = Rotation.from_rotvec(_NUDGE_DIRECTIONS * np.radians(step_deg / level)).as_matrix()
        improved = True
        while improved:
            improved = False
            for nudge in nudges:
                score = float(correlation(nudge @ matrix)[0][k])
                if score > best:
                    best, matrix, improved = score, nudge @ matrix, True
    return matrix, best
