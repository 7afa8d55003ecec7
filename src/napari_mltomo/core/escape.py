"""Escape from approximate-symmetry traps: re-pose the particles a class's near-symmetry has turned.

A protein that looks almost the same after a rigid move (a pseudo 2-fold at low resolution, say) can be
aligned with some of its particles in pose ``B`` and the others in ``B`` composed with that move. Their
average is then nearly symmetric, every particle keeps matching the pose it was given, and EM sees a fixed
point. Seen in the reference frame, a particle ``y`` of the second group, moved, looks like the first group;
the two groups differ in ``y - move(y)``, which is ``+d`` for one and ``-d`` for the other.

:func:`~napari_mltomo.core.rigid.near_symmetry` finds the move of each class, :func:`flip_groups` proposes
which particles to move, and :func:`held_out_gain` decides whether moving them explains particles held out of
that choice better (:func:`turned_proposal` does the last two for one class). This module holds the per-class
analysis, and the comparisons the regrouping shares (:func:`signal_weights`, :func:`matched_fit`); the moves
and their search are in :mod:`napari_mltomo.core.rigid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .fourier import AXES3, frequency_radius, fsc, half_grid_weights, shell_index
from .geometry import ball_volumes
from .rigid import RigidMove, refined_superposition

__all__ = [
    "AlignedClass",
    "flip_groups",
    "fourier_band",
    "held_out_gain",
    "signal_weights",
    "turned_proposal",
]

#: Lowest frequency, as a fraction of the box, at which particles are compared (:func:`signal_weights`):
#: below, near-symmetric proteins look the same in both poses and the differences are misalignment.
SIGNAL_LOW = 0.1
#: The band of the second comparison of :func:`turned_proposal`, as a fraction of the box: from a fifth of
#: it to Nyquist, every component alike. Phantoms that differ from their turned copy only in fine detail
#: have little weight there on their signal weights (on the demo data one class of three was re-posed
#: only on this band).
SPLIT_BAND = 0.2
#: Folds of the cross-validation that decides whether to move particles (:func:`held_out_gain`).
HELD_OUT_FOLDS = 5
#: Repeats of that cross-validation, with different folds, whose mean decides.
HELD_OUT_REPEATS = 4
#: Passes of the leave-one-out reassignment that follows the principal-component split.
FLIP_ROUNDS = 8


@dataclass(frozen=True)
class AlignedClass:
    """A class's particles in the reference frame, each as posed and as moved by the near-symmetry.

    Attributes
    ----------
    spectra, turned : (n, N, N, N//2+1) complex ndarray
        Each particle's observed spectrum in the reference frame, ``y``, and ``y`` after the move.
    coverage, turned_coverage : (n, N, N, N//2+1) ndarray
        The matching observed-region masks (fractional at the edges).
    weights : (N, N, N//2+1) ndarray
        How much each component counts when particles are compared (:func:`signal_weights`).
    move : RigidMove or None
        The move that made ``turned``; None when each particle was turned by its own rotation
        (:meth:`turn_each`).
    """

    spectra: NDArray[np.complexfloating]
    turned: NDArray[np.complexfloating]
    coverage: NDArray[np.floating]
    turned_coverage: NDArray[np.floating]
    weights: NDArray[np.floating]
    move: RigidMove | None

    @classmethod
    def turn(
        cls,
        spectra: NDArray[np.complexfloating],
        coverage: NDArray[np.floating],
        move: RigidMove,
        weights: NDArray[np.floating] | None = None,
    ) -> AlignedClass:
        """The particles (zeroed outside the ball, as the moved copies are) and their moved copies,
        compared with ``weights`` (by default :func:`signal_weights` of the particles)."""
        if weights is None:
            weights = signal_weights(spectra, coverage)
        inside = ball_volumes(spectra)
        spectra = sfft.rfftn(inside, axes=AXES3).astype(spectra.dtype)
        turned = move.spectra(inside).astype(spectra.dtype)
        return cls(spectra, turned, coverage, move.masks(coverage), weights, move)

    @classmethod
    def turn_each(
        cls,
        spectra: NDArray[np.complexfloating],
        coverage: NDArray[np.floating],
        matrices: NDArray[np.float64],
        weights: NDArray[np.floating],
    ) -> AlignedClass:
        """:meth:`turn` with particle ``i`` turned by ``Rot[matrices[i]]`` about the centre."""
        inside = ball_volumes(spectra)
        moves = [RigidMove(matrix, np.zeros(3)) for matrix in matrices]  # one stencil per particle
        turned = np.concatenate(
            [move.spectra(volume[None]) for move, volume in zip(moves, inside, strict=True)]
        )
        masks = np.concatenate([move.masks(mask[None]) for move, mask in zip(moves, coverage, strict=True)])
        spectra_inside = sfft.rfftn(inside, axes=AXES3).astype(spectra.dtype)
        return cls(spectra_inside, turned.astype(spectra.dtype), coverage, masks, weights, None)

    @property
    def band(self) -> NDArray[np.bool_]:
        """``(N, N, N//2+1)``: the components compared (of non-zero weight)."""
        return self.weights > 0

    @property
    def compared(self) -> NDArray[np.bool_]:
        """``(n, band size)``: the band components each particle observes in both of its poses."""
        return (self.coverage[:, self.band] > 0.5) & (self.turned_coverage[:, self.band] > 0.5)

    def subset(self, rows: NDArray[np.bool_]) -> AlignedClass:
        """The given particles only."""
        return replace(
            self,
            spectra=self.spectra[rows],
            turned=self.turned[rows],
            coverage=self.coverage[rows],
            turned_coverage=self.turned_coverage[rows],
        )

    def sums(self, flipped: NDArray[np.bool_]) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
        """Sums of the full spectra and of the coverage, the particles of ``flipped`` moved."""
        pick = flipped[:, None, None, None]
        spectra = np.where(pick, self.turned, self.spectra).sum(axis=0, dtype=np.complex128)
        return spectra, np.where(pick, self.turned_coverage, self.coverage).sum(axis=0, dtype=np.float64)

    def posed(self, flipped: NDArray[np.bool_]) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
        """Band components of the particles with those of ``flipped`` moved, and their coverage."""
        pick = flipped[:, None]
        spectra = np.where(pick, self.turned[:, self.band], self.spectra[:, self.band])
        coverage = np.where(pick, self.turned_coverage[:, self.band], self.coverage[:, self.band])
        return spectra.astype(np.complex128), np.clip(coverage, 0.0, 1.0)


def held_out_gain(aligned: AlignedClass, rng: np.random.Generator) -> float:
    """How much moving some particles helps explain particles that did not choose them.

    The particles are split in ``HELD_OUT_FOLDS`` random folds. Without each fold in turn,
    :func:`flip_groups` chooses the particles to move, and the average of the others with and without
    the move is compared with every particle of the fold, each in whichever of its two poses it fits
    better (so a particle's own freedom to take either pose favours neither average; :func:`_fits`).
    Nothing tested took part in the choice, so the gain of noise is zero on average.

    Returns
    -------
    float
        The summed fit with the move minus that without it, relative to the power of the particles
        tested: positive if the move makes a sharper, more consistent class average.
    """
    n = len(aligned.spectra)
    folds = rng.permutation(n) % HELD_OUT_FOLDS
    fit = np.zeros(2)
    for fold in range(HELD_OUT_FOLDS):
        tested = folds == fold
        flipped = np.zeros(n, dtype=bool)
        flipped[~tested] = flip_groups(aligned.subset(~tested))
        for column, moved in enumerate((np.zeros(n, dtype=bool), flipped)):
            spectra, coverage = aligned.posed(moved)
            average = band_average(spectra[~tested].sum(axis=0), coverage[~tested].sum(axis=0))
            fit[column] += np.maximum(
                _fits(aligned, np.zeros(n, dtype=bool), average)[tested],
                _fits(aligned, np.ones(n, dtype=bool), average)[tested],
            ).sum()
    power = np.sum(np.abs(aligned.posed(np.zeros(n, dtype=bool))[0]) ** 2 * _compared_weights(aligned))
    return float((fit[1] - fit[0]) / power)


def _fits(
    aligned: AlignedClass, moved: NDArray[np.bool_], average: NDArray[np.complex128]
) -> NDArray[np.float64]:
    """Per particle ``y`` (moved where ``moved``), how much a band ``average`` ``a`` (one, or one per
    particle) explains of it: ``2 Re<y, c a> - |c a|**2``, with ``c`` its coverage.

    That is its squared residual without ``a`` minus that with ``a``; ``|y|**2`` itself, which differs
    between a particle's two poses only by noise, does not enter.
    """
    spectra, coverage = aligned.posed(moved)
    return matched_fit(spectra, coverage, average, _compared_weights(aligned))


def matched_fit(
    spectra: NDArray[np.complexfloating],
    coverage: NDArray[np.floating],
    average: NDArray[np.complexfloating],
    weights: NDArray[np.floating],
) -> NDArray[np.float64]:
    """Per particle (row), ``sum weights (2 Re<y, c a> - |c a|**2)``: its squared residual without the
    ``average`` ``a`` minus that with it, ``c`` its coverage."""
    model = coverage * average
    fit = 2.0 * (spectra.conj() * model).real - np.abs(model) ** 2
    return np.sum(fit * weights, axis=1)


def fourier_band(size: int, low: float) -> NDArray[np.float64]:
    """``(N, N, N//2+1)``: weight 1 on the half-grid components from ``low`` times the box to Nyquist, 0
    elsewhere."""
    radius = frequency_radius(size)
    return ((radius >= low * size) & (radius < size / 2)).astype(np.float64)


def signal_weights(
    spectra: NDArray[np.complexfloating], coverage: NDArray[np.floating]
) -> NDArray[np.float64]:
    """How much each component of a class's particles tells about its structure: per shell, the
    reliability of the class average over the particles' noise power.

    The reliability is ``2 FSC / (1 + FSC)`` (clipped to [0, 1]) of the averages of two halves of the
    particles (drawn by a fixed permutation, so that no pattern of the order decides them),
    which estimates the correlation of the whole average with the truth; the noise power is the mean of
    ``|y - c a|**2`` over the components each particle observes, ``a`` the class average. Shells below
    ``SIGNAL_LOW`` of the box and from Nyquist up weigh 0. On tilt-series data the phase-flipped CTF and
    the dose leave little signal beyond the first CTF zero, so a fixed band misses where particles differ.

    Parameters
    ----------
    spectra, coverage : (n, N, N, N//2+1) ndarray
        Particles in the reference frame and their observed-region masks (n at least 2).

    Returns
    -------
    (N, N, N//2+1) ndarray of float64
        Largest weight 1 (all 0 if no shell holds signal).
    """
    size = spectra.shape[-2]
    observed = np.clip(coverage, 0.0, 1.0)
    first = np.random.default_rng(0).permutation(len(spectra)) % 2 == 0  # halves unrelated to the order
    sums = [spectra[half].sum(axis=0, dtype=np.complex128) for half in (first, ~first)]
    counts = [observed[half].sum(axis=0, dtype=np.float64) for half in (first, ~first)]
    curve = fsc(counts[1] * sums[0], counts[0] * sums[1], size)
    reliability = np.clip(2.0 * curve / (1.0 + np.abs(curve)), 0.0, 1.0)
    average = band_average(sums[0] + sums[1], counts[0] + counts[1])
    residual = np.abs(spectra - observed * average) ** 2 * (observed > 0.5)
    shells = shell_index(size)
    inside = shells >= 0
    n_shells = size // 2 + 1
    power = np.bincount(shells[inside], residual.sum(axis=0)[inside], n_shells)
    seen = np.bincount(shells[inside], (observed > 0.5).sum(axis=0)[inside], n_shells)
    per_shell = np.where(power > 0, reliability * seen / np.maximum(power, 1e-300), 0.0)
    per_shell[: int(np.ceil(SIGNAL_LOW * size))] = 0.0
    per_shell[size // 2 :] = 0.0
    if per_shell.max() > 0:
        per_shell /= per_shell.max()
    return np.where(inside, per_shell[shells], 0.0)


def _compared_weights(aligned: AlignedClass) -> NDArray[np.float64]:
    """``(n, band size)``: the signal weights (times Parseval's) of the band components each particle
    observes in both poses, 0 elsewhere (a particle's two poses are compared on the same components)."""
    band = aligned.band
    weight = (np.broadcast_to(half_grid_weights(band.shape[0]), band.shape) * aligned.weights)[band]
    return weight * aligned.compared


def band_average(sums: NDArray[np.complexfloating], weights: NDArray[np.floating]) -> NDArray[np.complex128]:
    """``sums / weights`` where at least half a particle observed the component, else 0."""
    return np.where(weights > 0.5, sums / np.maximum(weights, 0.5), 0.0)


def _left_out_averages(aligned: AlignedClass, flipped: NDArray[np.bool_]) -> NDArray[np.complex128]:
    """Per particle, the band average of the others, those of ``flipped`` moved."""
    spectra, coverage = aligned.posed(flipped)
    return band_average(spectra.sum(axis=0) - spectra, coverage.sum(axis=0) - coverage)


def flip_groups(aligned: AlignedClass, start: NDArray[np.bool_] | None = None) -> NDArray[np.bool_]:
    """Propose which particles to turn by the near-symmetry so that the class agrees with itself.

    ``start`` (by default :func:`_principal_split`) is corrected by passes of leave-one-out
    reassignment: each particle takes the pose that fits the average of the others better. The smaller
    group is returned: turning the other one instead only turns the whole class.
    """
    flipped = _principal_split(aligned) if start is None else start
    for _ in range(FLIP_ROUNDS):
        averages = _left_out_averages(aligned, flipped)
        better_turned = _fits(aligned, ~flipped, averages) > _fits(aligned, flipped, averages)
        if not better_turned.any():
            break
        flipped = flipped ^ better_turned
    return ~flipped if 2 * flipped.sum() > len(flipped) else flipped


def refine_symmetry(aligned: AlignedClass, flipped: NDArray[np.bool_], step_deg: float) -> RigidMove:
    """``aligned.move`` refined locally so that the average of the ``flipped`` particles, moved, best matches
    the average of the others (the class average's own near-symmetry is blurred by the blend)."""
    averages = []
    for group in (~flipped, flipped):
        spectrum = band_average(aligned.spectra[group].sum(axis=0), aligned.coverage[group].sum(axis=0))
        averages.append(sfft.irfftn(spectrum, s=(aligned.band.shape[0],) * 3, axes=AXES3))
    return refined_superposition(averages[0], averages[1], aligned.move.matrix, step_deg)


def _principal_split(aligned: AlignedClass) -> NDArray[np.bool_]:
    """The sign of the leading principal component of ``y - move(y)`` over the band components that each
    particle observes in both poses."""
    n = len(aligned.spectra)
    difference = aligned.posed(np.zeros(n, dtype=bool))[0] - aligned.posed(np.ones(n, dtype=bool))[0]
    rows = difference * np.sqrt(_compared_weights(aligned))
    rows = rows - rows.mean(axis=0)
    gram = (rows @ rows.conj().T).real  # the leading eigenvector of the Gram matrix: the first PC's scores
    return np.linalg.eigh(gram)[1][:, -1] > 0


def turned_proposal(
    spectra: NDArray[np.complexfloating],
    coverage: NDArray[np.floating],
    weightings: Sequence[NDArray[np.floating]],
    move: RigidMove,
    step_deg: float,
    rng: np.random.Generator,
) -> tuple[NDArray[np.bool_], AlignedClass] | None:
    """Which of a class's aligned particles to turn, and by what, if that fits the class better.

    Parameters
    ----------
    spectra, coverage : (n, N, N, N//2+1) ndarray
        The particles in the reference frame and their observed-region masks.
    weightings : sequence of (N, N, N//2+1) ndarray
        How to compare the particles (:func:`signal_weights`, :func:`fourier_band`), tried in turn until
        one gives a proposal.
    move : RigidMove
        The class's near-symmetry (:func:`~napari_mltomo.core.rigid.near_symmetry`).
    step_deg : float
        The angular step; the move is refined below it (:func:`refine_symmetry`).
    rng : numpy.random.Generator
        Draws the folds of :func:`held_out_gain`.

    Returns
    -------
    (flipped, aligned) or None
        None unless moving the ``flipped`` particles has a positive :func:`held_out_gain` on one of the
        weightings; ``aligned`` holds the particles moved by the refined move (``aligned.move``).
    """
    for weights in weightings:
        proposal = _weighted_proposal(spectra, coverage, weights, move, step_deg, rng)
        if proposal is not None:
            return proposal
    return None


def _weighted_proposal(
    spectra: NDArray[np.complexfloating],
    coverage: NDArray[np.floating],
    weights: NDArray[np.floating],
    move: RigidMove,
    step_deg: float,
    rng: np.random.Generator,
) -> tuple[NDArray[np.bool_], AlignedClass] | None:
    """:func:`turned_proposal` on one weighting."""
    aligned = AlignedClass.turn(spectra, coverage, move, weights)
    flipped = flip_groups(aligned)
    if not flipped.any():
        return None
    aligned = AlignedClass.turn(spectra, coverage, refine_symmetry(aligned, flipped, step_deg), weights)
    flipped = flip_groups(aligned, flipped)
    if not flipped.any():
        return None
    gain = np.mean([held_out_gain(aligned, rng) for _ in range(HELD_OUT_REPEATS)])
    return (flipped, aligned) if gain > 0 else None
