"""Escape from approximate-symmetry traps: a class's near-symmetry, the split of its particles, the decision
to re-pose them and the re-posed reference."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.fft as sfft
from scipy.spatial.transform import Rotation

import napari_mltomo.core.refine as refine_module
from napari_mltomo.core.chunks import Dispatch
from napari_mltomo.core.escape import AlignedClass, flip_groups, signal_weights, turned_proposal
from napari_mltomo.core.fourier import frequency_radius, shift_phases
from napari_mltomo.core.geometry import matrix_to_euler, rotate_volumes
from napari_mltomo.core.missing import MissingRegion, region_masks
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import MLState, StartModel, SubtomogramSet, iter_refine
from napari_mltomo.core.regroup import ClassSample, merge_loss, split_gain, split_groups
from napari_mltomo.core.rigid import RigidMove, near_symmetry, rotation_angle_deg
from napari_mltomo.core.sampling import OrientationGrid, orientation_grid
from napari_mltomo.core.setup import make_setup
from napari_mltomo.core.stats import ParticleResults
from napari_mltomo.core.synthetic import make_dataset, make_near_symmetric_phantoms
from napari_mltomo.core.traps import escape_traps

SIZE = 24
GRID = orientation_grid(20.0, 20.0, 0.0, 180.0, False)


def _two_fold(axis: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(np.pi * axis).as_matrix()


def _shifted(volume: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """``volume`` translated by ``shift_px`` (x, y, z)."""
    spectrum = sfft.rfftn(volume) * shift_phases(shift_px, volume.shape[-1])
    return sfft.irfftn(spectrum, s=volume.shape)


def _fine_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Correlation over the shells where near-symmetric phantoms are not symmetric and rotations keep."""
    radius = frequency_radius(first.shape[-1]) / first.shape[-1]
    band = (radius >= 0.2) & (radius < 0.35)
    a, b = sfft.rfftn(first)[band], sfft.rfftn(second)[band]
    return float(np.real(np.vdot(a, b)) / np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real))


@pytest.mark.parametrize("offset", [(0.0, 0.0, 0.0), (2.0, -1.0, 1.0)])
def test_near_symmetry_finds_the_two_fold_of_a_phantom_off_the_box_centre(offset: tuple) -> None:
    """A reference need not be centred: the move found is the phantom's 2-fold about its own centre, so
    applying it maps the reference onto itself."""
    phantoms, axes = make_near_symmetric_phantoms(2, SIZE, seed=0)
    references = np.stack([_shifted(p.astype(np.float64), np.array(offset)) for p in phantoms])
    moves = near_symmetry(references, GRID.matrices, 20.0)
    for move, axis, reference in zip(moves, axes, references, strict=True):
        # Rot[M] f (r) = f(M^T r): M^T, the map of r, is the 2-fold (its own transpose). The fine
        # features break the symmetry: the best self-match (0.89 for the designed 2-fold) can be a
        # grid step away from it.
        assert rotation_angle_deg(move.matrix.T @ _two_fold(axis).T) <= 20.0
        moved = sfft.irfftn(move.spectra(reference), s=reference.shape)
        assert np.corrcoef(moved.ravel(), reference.ravel())[0, 1] >= 0.85
        if any(offset):
            # the rotation about the box centre moves the phantom's centre: the shift brings it back
            assert np.linalg.norm(move.shift_px) >= 1.0


def _noisy_copies(turned_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy copies (SNR 0.5) of a near-symmetric phantom, turned by its pseudo 2-fold where ``turned_mask``;
    with the phantom and the 2-fold."""
    phantoms, axes = make_near_symmetric_phantoms(1, SIZE, seed=1)
    phantom = phantoms[0].astype(np.float64)
    two_fold = _two_fold(axes[0])
    turned = rotate_volumes(phantom, two_fold)
    shape = (len(turned_mask), *phantom.shape)
    noise = np.random.default_rng(4).normal(0.0, np.sqrt(phantom.var() / 0.5), shape)
    return np.where(turned_mask[:, None, None, None], turned, phantom) + noise, phantom, two_fold


def test_flip_groups_separates_particles_posed_a_two_fold_apart() -> None:
    truth = np.repeat([False, True], 8)
    volumes, _, two_fold = _noisy_copies(truth)
    spectra = sfft.rfftn(volumes, axes=(1, 2, 3))
    flipped = flip_groups(
        AlignedClass.turn(spectra, np.ones(spectra.shape), RigidMove(two_fold, np.zeros(3)))
    )
    assert flipped.sum() <= 8
    assert np.array_equal(flipped, truth) or np.array_equal(flipped, ~truth)


@pytest.mark.parametrize("trapped", [True, False])
def test_turned_proposal_accepts_a_trapped_class_and_refuses_an_aligned_one(trapped: bool) -> None:
    """Particles in one pose, or every other pair turned by the 2-fold: re-posing is proposed for the
    second only, with the right particles. The move given is 10 degrees off; it is refined."""
    truth = np.tile([False, False, trapped, trapped], 5)
    volumes, _, two_fold = _noisy_copies(truth)
    spectra = sfft.rfftn(volumes, axes=(1, 2, 3))
    off = Rotation.from_rotvec(np.radians(10.0) * np.array([0.6, 0.8, 0.0])).as_matrix() @ two_fold
    coverage = np.ones(spectra.shape)
    signal = signal_weights(spectra, coverage)
    proposal = turned_proposal(
        spectra, coverage, (signal,), RigidMove(off, np.zeros(3)), 20.0, np.random.default_rng(0)
    )
    if not trapped:
        assert proposal is None
        return
    assert proposal is not None
    flipped, aligned = proposal
    assert np.array_equal(flipped, truth) or np.array_equal(flipped, ~truth)
    assert rotation_angle_deg(aligned.move.matrix @ two_fold.T) <= 5.0


def _state_with_poses(
    given: np.ndarray, references: np.ndarray, classes: np.ndarray | None = None
) -> MLState:
    """An MLState whose particles have the poses ``given`` and the ``classes`` (by default all 0), with
    ``references`` (what the escape reads)."""
    n = len(given)
    classes = np.zeros(n, dtype=np.intp) if classes is None else classes
    grid = OrientationGrid(
        np.concatenate([GRID.angles_deg, matrix_to_euler(given)]), np.concatenate([GRID.matrices, given])
    )
    particles = ParticleResults(
        indices=np.arange(n),
        classes=classes,
        orientations=len(GRID) + np.arange(n),
        shifts_px=np.zeros((n, 3)),
        pmax=np.ones(n),
        log_likelihood=np.zeros(n),
    )
    stats = SimpleNamespace(particles=particles)  # all the escape reads of the E-step's statistics
    fractions = np.full(len(references), 1.0 / len(references))
    return MLState(1, references, fractions, 1.0, 1.0, 1.0, grid=grid, stats=stats)


@pytest.mark.parametrize("trapped", [True, False])
def test_escape_reposes_a_trapped_class_and_leaves_an_aligned_one(trapped: bool) -> None:
    """Particles in random orientations given the right pose or, for half of them, the pose turned by
    the 2-fold: the escape replaces their near-symmetric average by one close to the phantom, and
    leaves a class that is already aligned alone."""
    phantoms, axes = make_near_symmetric_phantoms(1, SIZE, seed=2)
    phantom = phantoms[0].astype(np.float64)
    two_fold = _two_fold(axes[0])
    poses = Rotation.random(20, random_state=6).as_matrix()
    volumes = np.stack([rotate_volumes(phantom, pose.T) for pose in poses])  # particle(q) = phantom(B q)
    volumes += np.random.default_rng(5).normal(0.0, np.sqrt(phantom.var() / 0.5), volumes.shape)
    given = poses.copy()
    if trapped:
        given[1::2] = two_fold @ poses[1::2]
    average = np.mean([rotate_volumes(v, b) for v, b in zip(volumes, given, strict=True)], axis=0)
    data = SubtomogramSet(volumes.astype(np.float32))
    params = MLParams(n_classes=1, ang_deg=20.0, threads=1)
    escaped = escape_traps(
        data, params, make_setup(data, params), _state_with_poses(given, average[None]), Dispatch()
    )
    assert escaped.escaped_classes == ((0,) if trapped else ())
    if trapped:
        both = (phantom, rotate_volumes(phantom, two_fold))
        before = max(_fine_correlation(average, p) for p in both)
        after = max(_fine_correlation(escaped.references[0], p) for p in both)
        assert after > before + 0.05, (before, after)


def test_a_run_restarted_between_checks_continues_as_an_uninterrupted_one() -> None:
    """The checks after iterations 1 and 2 draw their randomness from the seed and the iteration only, so
    a run restarted from iteration 1 checks and re-poses exactly as a run that was never stopped."""
    made = make_dataset(12, 1, 16, snr=1.0, phantoms="near_symmetric", seed=1)
    data = made.subtomograms()
    params = MLParams(n_classes=1, max_iter=3, ang_deg=40.0, escape=2, eps=0.0, seed=1)
    states = [s for s in iter_refine(data, params) if not s.startup_step]
    first = states[1]
    start = StartModel(
        references=first.references,
        fractions=first.fractions,
        sigma_noise=first.sigma_noise,
        sigma_offset_px=first.sigma_offset_px,
        iteration=first.iteration,
    )
    restarted = list(iter_refine(data, params, start))
    assert [s.iteration for s in restarted] == [1, 2, 3]
    for again, once in zip(restarted[1:], states[2:], strict=True):
        assert again.escaped_classes == once.escaped_classes
        np.testing.assert_allclose(again.references, once.references, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("changing", "looked"),
    [
        (0, [(1, None), (2, None)]),
        (3, [(1, None), (2, None), (3, (0,)), (4, (0,))]),
        (9, [(1, None), (2, None), (3, (0,)), (4, (0,)), (5, (0,))]),
    ],
)
def test_a_check_that_changed_a_class_is_followed_by_another_on_that_class(
    changing: int, looked: list[tuple[int, tuple[int, ...] | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every class is checked after iterations 1 and 2; then a class the last check changed is checked
    again after the next iteration, until a check leaves it (never after the last iteration); a run
    restarted from an iteration whose check changed a class looks at it again."""
    calls = []

    def check(data, params, setup, state, dispatch, classes=None):
        calls.append((state.iteration, classes))
        return replace(state, escaped_classes=(0,), converged=False) if state.iteration <= changing else state

    monkeypatch.setattr(refine_module, "escape_traps", check)
    data = make_dataset(10, 1, 16, snr=1.0, seed=2).subtomograms()
    params = MLParams(n_classes=1, max_iter=6, ang_deg=40.0, escape=2, eps=0.0, seed=1)
    states = [s for s in iter_refine(data, params) if not s.startup_step]
    assert calls == looked
    assert [s.converged for s in states[1:] if s.escaped_classes] == [False] * min(changing, 5)
    if changing < 3:
        return
    calls.clear()
    third = states[3]
    start = StartModel(
        third.references, third.fractions, third.sigma_noise, third.sigma_offset_px, 3, exact=True,
        escaped_classes=third.escaped_classes,
    )  # fmt: skip
    list(iter_refine(data, params, start))
    assert calls == [call for call in looked if call[0] > 3]


def _copies_in_frame(phantom: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` noisy copies (SNR 0.5) of ``phantom`` as spectra, seen through a +-60 degree wedge."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, np.sqrt(phantom.var() / 0.5), (n, *phantom.shape))
    wedge = region_masks(
        (MissingRegion(kind="wedge_y", theta_y0_deg=-60.0, theta_yf_deg=60.0),),
        SIZE,
        np.ones((SIZE, SIZE, SIZE // 2 + 1), bool),
    )[0, 0]
    return sfft.rfftn(phantom + noise, axes=(1, 2, 3)) * wedge, np.broadcast_to(wedge, (n, *wedge.shape))


def _sample(*phantoms_and_counts: tuple[np.ndarray, int], seed: int = 0) -> tuple[ClassSample, np.ndarray]:
    """A class sample of noisy copies of the phantoms, and which phantom each copy is."""
    parts = [_copies_in_frame(p, n, seed + i) for i, (p, n) in enumerate(phantoms_and_counts)]
    spectra = np.concatenate([part[0] for part in parts])
    coverage = np.concatenate([part[1] for part in parts])
    truth = np.repeat(np.arange(len(parts)), [n for _, n in phantoms_and_counts])
    return ClassSample.of(spectra, coverage, len(spectra)), truth


NEAR_SYMMETRIC = make_near_symmetric_phantoms(3, SIZE, seed=3)[0].astype(np.float64)


def test_split_groups_sorts_the_two_proteins_of_a_class() -> None:
    sample, truth = _sample((NEAR_SYMMETRIC[0], 12), (NEAR_SYMMETRIC[1], 12))
    groups = split_groups(sample)
    assert np.array_equal(groups, truth == 1) or np.array_equal(groups, truth == 0)


@pytest.mark.parametrize("proteins", [1, 2])
def test_split_gain_is_positive_for_two_proteins_only(proteins: int) -> None:
    """Held-out particles: two averages beat one only if the class holds two proteins."""
    sample, _ = _sample((NEAR_SYMMETRIC[0], 12), (NEAR_SYMMETRIC[proteins - 1], 12))
    gain = split_gain(sample, np.random.default_rng(0))
    assert (gain > 0) == (proteins == 2), gain


@pytest.mark.parametrize("proteins", [1, 2])
def test_merge_loss_is_positive_for_two_proteins_only(proteins: int) -> None:
    first, _ = _sample((NEAR_SYMMETRIC[0], 12))
    second, _ = _sample((NEAR_SYMMETRIC[proteins - 1], 12), seed=5)
    loss = merge_loss(first, second, np.random.default_rng(0))
    assert (loss > 0) == (proteins == 2), loss


@pytest.mark.parametrize("sorted_classes", [False, True])
def test_escape_splits_a_class_of_two_proteins_when_two_classes_share_one(sorted_classes: bool) -> None:
    """Proteins A and B in class 3 and C in classes 1 and 2 (the start-up's failure): class 3 is split into
    A and B, one of classes 1 and 2 taking the second of them; classes that are already sorted are left."""
    poses = Rotation.random(44, random_state=7).as_matrix()
    proteins = np.repeat([0, 1, 2], [12, 12, 20])
    volumes = np.stack(
        [rotate_volumes(NEAR_SYMMETRIC[p], pose.T) for p, pose in zip(proteins, poses, strict=True)]
    )
    volumes += np.random.default_rng(8).normal(0.0, np.sqrt(NEAR_SYMMETRIC.var() / 0.5), volumes.shape)
    classes = proteins.copy() if sorted_classes else np.repeat([2, 2, 0, 1], [12, 12, 10, 10])
    aligned = np.stack([rotate_volumes(v, b) for v, b in zip(volumes, poses, strict=True)])
    references = np.stack([aligned[classes == k].mean(axis=0) for k in range(3)])
    data = SubtomogramSet(volumes.astype(np.float32))
    params = MLParams(n_classes=3, ang_deg=20.0, threads=1)
    state = _state_with_poses(poses, references, classes)
    after = escape_traps(data, params, make_setup(data, params), state, Dispatch())
    if sorted_classes:
        assert after.regrouped is None
        return
    assert after.regrouped is not None
    split, spare, kept = after.regrouped
    assert split == 2 and {spare, kept} == {0, 1}
    mixed = max(_fine_correlation(references[2], NEAR_SYMMETRIC[p]) for p in (0, 1))
    for p in (0, 1):
        best = max(_fine_correlation(after.references[k], NEAR_SYMMETRIC[p]) for k in (split, spare))
        assert best > mixed + 0.05, (p, best, mixed)
    assert "split class 3 into 3 and" in after.escape_note
