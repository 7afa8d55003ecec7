"""Regroup classes: split a class that holds two proteins, and merge two classes that hold one.

From nearly featureless random references, the start-up can give one protein two classes and leave two
proteins that look alike at low resolution in a third. EM keeps that state: every particle fits its class
best, and no class is free to take the second protein. Seen in its reference frame, a class that holds
two proteins varies along one direction, their difference, more than noise does: the leading principal
component of its particles' residuals stands out and its sign sorts them (measured on 30 + 30
near-symmetric particles of a 32 box at SNR 0.5 after iteration 1: eigenvalue 0.048 of the total
against 0.024 for the next, 60 of 60 sorted).

:func:`split_gain` measures, on particles held out of the split, how much better two averages explain a
class than one; :func:`merge_loss` how much worse one average explains two classes than their own. A
class is split when its gain exceeds the loss of the cheapest merge (``core.traps._regroup``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from .escape import HELD_OUT_FOLDS, band_average, matched_fit, signal_weights
from .fourier import half_grid_weights

__all__ = ["ClassSample", "merge_loss", "split_gain", "split_groups"]

#: Passes of the leave-one-out reassignment that follows the principal-component split.
SPLIT_ROUNDS = 8


@dataclass(frozen=True)
class ClassSample:
    """Particles of one class in one reference frame, on the components their signal weights keep.

    Attributes
    ----------
    spectra : (n, M) complex ndarray
        The particles' band components.
    coverage : (n, M) ndarray
        Their observed-region masks, clipped to [0, 1].
    weights : (n, M) ndarray
        Signal weights (``core.escape.signal_weights``) times Parseval's on the components each particle
        observes, 0 elsewhere.
    scale : float
        Particles of the class per particle of the sample: turns sample sums into class sums.
    """

    spectra: NDArray[np.complexfloating]
    coverage: NDArray[np.floating]
    weights: NDArray[np.floating]
    scale: float = 1.0

    @classmethod
    def of(
        cls,
        spectra: NDArray[np.complexfloating],
        coverage: NDArray[np.floating],
        class_size: int,
        signal: NDArray[np.floating] | None = None,
    ) -> ClassSample:
        """The sample of ``(n, N, N, N//2+1)`` spectra and coverage, from a class of ``class_size``, on the
        components of non-zero ``signal`` weight (by default the particles' ``signal_weights``)."""
        if signal is None:
            signal = signal_weights(spectra, coverage)
        band = signal > 0
        observed = np.clip(coverage[:, band], 0.0, 1.0)
        parseval = np.broadcast_to(half_grid_weights(band.shape[0]), band.shape)
        weights = (parseval * signal)[band] * (observed > 0.5)
        return cls(spectra[:, band].astype(np.complex128), observed, weights, class_size / len(spectra))

    def __len__(self) -> int:
        return len(self.spectra)

    def subset(self, rows: NDArray[np.bool_]) -> ClassSample:
        """The given particles only."""
        return replace(
            self, spectra=self.spectra[rows], coverage=self.coverage[rows], weights=self.weights[rows]
        )

    def joined(self, other: ClassSample) -> ClassSample:
        """Both samples' particles (``scale`` of the first)."""
        return replace(
            self,
            spectra=np.concatenate([self.spectra, other.spectra]),
            coverage=np.concatenate([self.coverage, other.coverage]),
            weights=np.concatenate([self.weights, other.weights]),
        )

    def average(self, rows: NDArray[np.bool_] | None = None) -> NDArray[np.complex128]:
        """The band average of the given particles (all by default)."""
        rows = np.ones(len(self), dtype=bool) if rows is None else rows
        return band_average(self.spectra[rows].sum(axis=0), self.coverage[rows].sum(axis=0))

    def fits(self, average: NDArray[np.complexfloating]) -> NDArray[np.float64]:
        """Per particle, how much ``average`` (one, or one per particle) explains of it (``matched_fit``)."""
        return matched_fit(self.spectra, self.coverage, average, self.weights)


def split_groups(sample: ClassSample) -> NDArray[np.bool_]:
    """Two groups of the class: the sign of the leading principal component of the particles' residuals
    from the class average (0 where unobserved), corrected by passes of leave-one-out reassignment to the
    group whose average fits better."""
    residuals = (sample.spectra - sample.coverage * sample.average()) * np.sqrt(sample.weights)
    gram = (residuals @ residuals.conj().T).real
    groups = np.linalg.eigh(gram)[1][:, -1] > 0
    for _ in range(SPLIT_ROUNDS):
        own, other = _group_averages(sample, groups)
        moved = sample.fits(other) > sample.fits(own)
        if not moved.any():
            break
        groups = groups ^ moved
    return groups


def _group_averages(
    sample: ClassSample, groups: NDArray[np.bool_]
) -> tuple[NDArray[np.complex128], NDArray[np.complex128]]:
    """Per particle, the average of its group without it and the average of the other group."""
    sums = np.stack([sample.spectra[~groups].sum(axis=0), sample.spectra[groups].sum(axis=0)])
    weights = np.stack([sample.coverage[~groups].sum(axis=0), sample.coverage[groups].sum(axis=0)])
    index = groups.astype(int)
    own = band_average(sums[index] - sample.spectra, weights[index] - sample.coverage)
    other = band_average(sums[1 - index], weights[1 - index])
    return own, other


def split_gain(sample: ClassSample, rng: np.random.Generator) -> float:
    """How much better two averages explain the class than one, on particles held out of the split.

    In each of ``HELD_OUT_FOLDS`` random folds, the other particles are split (:func:`split_groups`);
    each particle of the fold is scored against the better of the two group averages and against the
    average of all. Noise alone loses: a group average has twice the noise of the whole's.

    Returns
    -------
    float
        The summed fit with two averages minus that with one, scaled to the whole class.
    """
    folds = rng.permutation(len(sample)) % HELD_OUT_FOLDS
    gain = 0.0
    for fold in range(HELD_OUT_FOLDS):
        tested, training = sample.subset(folds == fold), sample.subset(folds != fold)
        groups = split_groups(training)
        single = tested.fits(training.average())
        if 0 < groups.sum() < len(groups):
            split = np.maximum(tested.fits(training.average(groups)), tested.fits(training.average(~groups)))
            gain += float(np.sum(split - single))
    return gain * sample.scale


def merge_loss(first: ClassSample, second: ClassSample, rng: np.random.Generator) -> float:
    """How much worse one average explains two classes (``second`` in ``first``'s frame) than their own
    averages do, on particles held out of the averages, in ``HELD_OUT_FOLDS`` random folds.

    Returns
    -------
    float
        The summed fit with their own averages minus that with the joint one, each class's sum scaled to
        the whole class; about 0 or below for two classes of one protein.
    """
    loss = 0.0
    for sample, partner in ((first, second), (second, first)):
        folds = rng.permutation(len(sample)) % HELD_OUT_FOLDS
        for fold in range(HELD_OUT_FOLDS):
            tested, training = sample.subset(folds == fold), sample.subset(folds != fold)
            joint = training.joined(partner)
            own = tested.fits(training.average())
            loss += float(np.sum(own - tested.fits(joint.average()))) * sample.scale
    return loss
