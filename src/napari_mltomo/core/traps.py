"""Checks for approximate-symmetry traps after the first iterations: regroup classes (``core.regroup``),
re-pose a class whose particles scatter over its look-alike rotations (``core.synchronise``), and re-pose
particles turned by a class's near-symmetry (``core.rigid``, ``core.escape``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .chunks import Dispatch, map_chunks
from .escape import SPLIT_BAND, AlignedClass, fourier_band, signal_weights, turned_proposal
from .fourier import AXES3
from .geometry import ball_volumes
from .params import MLParams
from .regroup import ClassSample, merge_loss, split_gain, split_groups
from .rigid import RigidMove, near_symmetry, superposition
from .setup import Setup, seeded_rng
from .startup import spread_particles, weighted_average
from .state import MLState, SubtomogramSet
from .synchronise import SYNC_SAMPLE, synchronised_corrections

__all__ = ["ESCAPE_CHECKS", "ESCAPE_MIN_PARTICLES", "ESCAPE_SAMPLE", "escape_traps"]


#: Iterations (from the first) after which every class is checked for approximate-symmetry traps: the
#: near-symmetry test re-poses an aligned class of a few dozen particles about as often as not (its
#: held-out gain is noise), so checking every class after every iteration moved aligned classes again
#: until the last. Later checks look only at the classes the last one changed (``escape_traps``).
ESCAPE_CHECKS = 2
#: Classes with fewer particles than this are not checked.
ESCAPE_MIN_PARTICLES = 10
#: At most this many particles of a class (drawn at random) decide whether to re-pose it and make its
#: new reference; the next E-step re-poses all of them against it.
ESCAPE_SAMPLE = 200


def escape_traps(
    data: SubtomogramSet,
    params: MLParams,
    setup: Setup,
    state: MLState,
    dispatch: Dispatch,
    classes: Sequence[int] | None = None,
) -> MLState:
    """Split a class that holds two proteins if two others hold one (``core.regroup``), then re-pose the
    other classes whose particles scatter over the rotations under which the class looks alike
    (``core.synchronise``) or that are caught between poses related by their near-symmetry (``core.escape``).

    Every class of at least ``ESCAPE_MIN_PARTICLES`` is sampled in its particles' best poses. A split
    (:func:`_regroup`) gives two classes new references, which the next check sees in their new poses.
    Each other class is first re-posed from its particles' pairwise alignments
    (:func:`_synchronised_proposal`); if that changes nothing, from the class's near-symmetry: if moving
    one group of its particles by it explains held-out particles better (:func:`turned_proposal`, on the
    class's :func:`signal_weights`, then on the band from ``SPLIT_BAND`` to Nyquist). Either way the
    reference changes by the sample's average turned less its average as posed (the rest of the
    reference, the M-step's, is kept), and the returned state is not converged.

    With ``classes`` (a second look at what the last check changed), only those classes are checked,
    and only by the pairwise alignments: the near-symmetry test's held-out gain is noise on an aligned
    class of a few dozen particles, so it would turn one about as often as not.
    """
    samples = _class_samples(data, params, setup, state, dispatch, classes)
    regrouped = _regroup(state, samples, params) if classes is None else None
    if regrouped is not None:
        state = _apply_regroup(state, samples, regrouped, params, setup)
    moves = near_symmetry(state.references, state.grid.matrices, params.ang_deg)
    references = np.array(state.references, copy=True)
    escaped = []
    split_band = fourier_band(state.references.shape[-1], SPLIT_BAND)
    for k, sample in samples.items():
        if regrouped is not None and k in regrouped[:2]:
            continue  # new references: the next check sees their poses
        proposal = _synchronised_proposal(
            sample, state.references[k], seeded_rng(params, state.iteration, 4, k)
        )
        if proposal is None and classes is None:
            proposal = turned_proposal(
                sample.spectra,
                sample.coverage,
                (sample.signal, split_band),
                moves[k],
                params.ang_deg,
                sample.rng,
            )
        if proposal is not None:
            flipped, aligned = proposal
            references[k] += weighted_average(*aligned.sums(flipped), params, setup) - weighted_average(
                *aligned.sums(np.zeros_like(flipped)), params, setup
            )
            escaped.append(k)
    if not escaped and regrouped is None:
        return state
    return replace(state, references=references, escaped_classes=tuple(escaped), converged=False)


def _synchronised_proposal(
    sample: _Members, reference: NDArray[np.float64], rng: np.random.Generator
) -> tuple[NDArray[np.bool_], AlignedClass] | None:
    """``SYNC_SAMPLE`` of the sampled particles, each turned by :func:`synchronised_corrections` (all
    of them ``flipped``), or None."""
    rows = np.sort(rng.permutation(len(sample.spectra))[:SYNC_SAMPLE])
    spectra, coverage = sample.spectra[rows], sample.coverage[rows]
    posed = sfft.rfftn(ball_volumes(spectra), axes=AXES3)
    corrections = synchronised_corrections(posed, coverage, reference)
    if corrections is None:
        return None
    return np.ones(len(rows), dtype=bool), AlignedClass.turn_each(
        spectra, coverage, corrections, sample.signal
    )


@dataclass(frozen=True)
class _Members:
    """At most ``ESCAPE_SAMPLE`` particles of a class in its reference frame (spectra and coverage), their
    signal weights, the class's size, and the generator its check goes on drawing from."""

    spectra: NDArray[np.complex64]
    coverage: NDArray[np.float32]
    signal: NDArray[np.float64]
    class_size: int
    rng: np.random.Generator

    def band_sample(
        self, move: RigidMove | None = None, signal: NDArray[np.float64] | None = None
    ) -> ClassSample:
        """The particles on the components of their signal weights (or of ``signal``), moved by ``move``
        if given."""
        signal = self.signal if signal is None else signal
        if move is None:
            return ClassSample.of(self.spectra, self.coverage, self.class_size, signal)
        moved = AlignedClass.turn(self.spectra, self.coverage, move, signal)
        return ClassSample.of(moved.turned, moved.turned_coverage, self.class_size, signal)


def _class_samples(
    data: SubtomogramSet,
    params: MLParams,
    setup: Setup,
    state: MLState,
    dispatch: Dispatch,
    classes: Sequence[int] | None,
) -> dict[int, _Members]:
    """The :class:`_Members` of every class (or of ``classes``) of at least ``ESCAPE_MIN_PARTICLES``."""
    particles = state.stats.particles
    poses = state.grid.matrices[particles.orientations]
    samples = {}
    for k in range(state.n_classes) if classes is None else classes:
        rng = seeded_rng(params, state.iteration, 3, k)
        members = np.flatnonzero(particles.classes == k)
        if len(members) < ESCAPE_MIN_PARTICLES:
            continue
        class_size = len(members)
        if len(members) > ESCAPE_SAMPLE:
            members = np.sort(rng.choice(members, ESCAPE_SAMPLE, replace=False))
        subset = SubtomogramSet(data.volumes[members], data.regions, data.region_index[members])
        shared = [poses[members], particles.shifts_px[members], subset.region_index, setup]
        parts = map_chunks(spread_particles, subset, params, shared, dispatch, f"trap check, class {k + 1}")
        spectra = np.concatenate([part[0].astype(np.complex64) for part in parts])
        coverage = np.concatenate([part[1].astype(np.float32) for part in parts])
        samples[k] = _Members(spectra, coverage, signal_weights(spectra, coverage), class_size, rng)
    return samples


def _regroup(state: MLState, samples: dict[int, _Members], params: MLParams) -> tuple[int, int, int] | None:
    """``(split, spare, kept)`` if splitting class ``split`` gains more, on held-out particles, than
    merging ``spare`` into ``kept`` loses (a class too small to check costs nothing to merge), else None."""
    if state.n_classes < 3:
        return None
    rng = seeded_rng(params, state.iteration, 4)
    gains = {k: split_gain(sample.band_sample(), rng) for k, sample in samples.items()}
    split = max(gains, key=gains.__getitem__, default=None)
    if split is None or gains[split] <= 0:
        return None
    small = [k for k in range(state.n_classes) if k not in samples]
    if small:
        return split, small[0], small[0]
    losses = {}
    for kept, spare in combinations([k for k in samples if k != split], 2):
        move = superposition(
            state.references[kept], state.references[spare], state.grid.matrices, params.ang_deg
        )
        # the kept class's particles go through the same resampling, by the identity, and both classes
        # are compared on the same components
        identity = RigidMove(np.eye(3), np.zeros(3))
        signal = (samples[kept].signal + samples[spare].signal) / 2
        first, second = samples[kept].band_sample(identity, signal), samples[spare].band_sample(move, signal)
        losses[kept, spare] = merge_loss(first, second, rng)
    kept, spare = min(losses, key=losses.__getitem__)
    if losses[kept, spare] >= gains[split]:
        return None
    if samples[spare].class_size > samples[kept].class_size:
        kept, spare = spare, kept
    return split, spare, kept


def _apply_regroup(
    state: MLState,
    samples: dict[int, _Members],
    regrouped: tuple[int, int, int],
    params: MLParams,
    setup: Setup,
) -> MLState:
    """Class ``split`` and ``spare`` take the averages of ``split``'s two groups and share its fraction;
    ``kept`` takes ``spare``'s fraction (the next E-step gives it ``spare``'s particles)."""
    split, spare, kept = regrouped
    spectra, coverage = samples[split].spectra, samples[split].coverage
    groups = split_groups(samples[split].band_sample())
    references = np.array(state.references, copy=True)
    for target, rows in ((split, ~groups), (spare, groups)):
        sums = spectra[rows].sum(axis=0, dtype=np.complex128), coverage[rows].sum(axis=0, dtype=np.float64)
        references[target] = weighted_average(*sums, params, setup)
    fractions = np.array(state.fractions, copy=True)
    if kept != spare:
        fractions[kept] += fractions[spare]
    fractions[[split, spare]] = fractions[split] / 2
    return replace(state, references=references, fractions=fractions / fractions.sum(), regrouped=regrouped)
