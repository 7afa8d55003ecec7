"""--only_average and --maxCC: plain averages at given or best-correlated poses, no ML."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft as sfft

from napari_mltomo.core.fourier import AXES3, fourier_rescale, resolution_masks
from napari_mltomo.core.geometry import euler_to_matrix, rotate_volumes, sphere_mask
from napari_mltomo.core.mstep import postprocess
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import StartModel, SubtomogramSet, iter_refine, run_refine
from napari_mltomo.core.sampling import random_orientations
from napari_mltomo.core.synthetic import (
    adjusted_rand_index,
    make_dataset,
    make_phantoms,
    orientation_errors_deg,
)


def _posed(phantom: np.ndarray, angles: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``particle(q) = phantom(A (q + s))`` for an integer shift: rotate by A^T, then shift by -s."""
    turned = rotate_volumes(phantom[None].astype(np.float64), euler_to_matrix(*angles).T)[0]
    return np.roll(turned, tuple(-shift[::-1].astype(int)), axis=(0, 1, 2))


def _aligned(particle: np.ndarray, angles: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The particle in the reference frame: shifted by s, then rotated by A."""
    shifted = np.roll(particle, tuple(shift[::-1].astype(int)), axis=(0, 1, 2))
    return rotate_volumes(shifted[None], euler_to_matrix(*angles))[0]


def _relative_error(estimate: np.ndarray, expected: np.ndarray) -> float:
    """Relative RMS difference inside the sphere, each map's mean there removed (the engine flattens
    the solvent outside the sphere)."""
    inside = sphere_mask(expected.shape[-1])
    a, b = estimate[inside] - estimate[inside].mean(), expected[inside] - expected[inside].mean()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_only_average_reproduces_the_hand_computed_average_per_metadata_class() -> None:
    rng = np.random.default_rng(7)
    phantoms = make_phantoms(2, 24, seed=7)
    classes = np.array([0, 1, 0, 1, 0, 1, 1])
    angles = random_orientations(rng, len(classes))
    shifts = rng.integers(-2, 3, size=(len(classes), 3)).astype(np.float64)
    volumes = np.stack([_posed(phantoms[k], a, s) for k, a, s in zip(classes, angles, shifts, strict=True)])
    volumes += rng.normal(scale=phantoms.std(), size=volumes.shape)
    subtomograms = SubtomogramSet(volumes, angles_deg=angles, shifts_px=shifts, classes=classes)
    state = run_refine(subtomograms, MLParams(n_classes=2, only_average=True, max_iter=5))
    assert state.iteration == 1 and state.converged
    soft, _ = resolution_masks(24, 0.5)

    def average(members: np.ndarray) -> np.ndarray:
        aligned = np.mean([_aligned(volumes[i], angles[i], shifts[i]) for i in members], axis=0)
        return postprocess(sfft.rfftn(aligned[None], axes=AXES3), soft)[0]

    for k in range(2):
        members = np.nonzero(classes == k)[0]
        error = _relative_error(state.references[k], average(members))
        assert error < 0.08, (k, error)
        assert _relative_error(state.references[k], average(members[:-1])) > 1.5 * error
    np.testing.assert_array_equal(state.stats.particles.classes, classes)
    np.testing.assert_allclose(state.fractions, [3 / 7, 4 / 7])


def test_only_average_sums_the_observed_regions_of_all_particles() -> None:
    """The original kept only the last particle's mask; the coverage must count every particle."""
    data = make_dataset(4, 1, 16, snr=1e6, max_shift_px=0, seed=8)

    def coverage(n: int) -> float:
        subtomograms = SubtomogramSet(data.volumes[:n], (data.region,), np.zeros(n, int), data.angles_deg[:n])
        return float(run_refine(subtomograms, MLParams(only_average=True)).stats.coverage.sum())

    assert coverage(4) == pytest.approx(4 * coverage(1), rel=0.02)


def test_max_cc_aligns_and_classifies_a_high_snr_set_against_references_on_another_grey_scale() -> None:
    data = make_dataset(8, 2, 32, snr=5.0, max_shift_px=2, seed=9)
    subtomograms = data.subtomograms()
    references = 7.0 * fourier_rescale(data.phantoms, 16).astype(np.float64) + 3.0
    params = MLParams(n_classes=2, max_iter=1, ang_deg=20.0, dim=16, max_cc=True, threads=2, seed=1)
    state = run_refine(subtomograms, params, StartModel(references=references))
    particles = state.stats.particles
    assert adjusted_rand_index(data.classes, particles.classes) == 1.0
    angles = state.grid.angles_deg[particles.orientations]
    assert np.median(orientation_errors_deg(angles, data.angles_deg, data.classes)) < 20.0
    assert np.all((particles.pmax > 0.3) & (particles.pmax <= 1.0))  # normalised correlations
    assert state.sigma_noise == params.noise_sigma * 0.5**1.5  # not re-estimated
    assert state.stats.class_weights.sum() == 16  # weight 1 per particle


def test_max_cc_from_random_subsets_skips_the_ml_start_up_and_only_average_checks_the_classes() -> None:
    data = make_dataset(3, 2, 16, snr=5.0, max_shift_px=0, seed=10)
    subtomograms = SubtomogramSet(data.volumes, angles_deg=data.angles_deg, classes=data.classes)
    states = list(iter_refine(subtomograms, MLParams(n_classes=2, max_iter=1, ang_deg=30.0, max_cc=True)))
    assert [state.iteration for state in states] == [0, 1] and states[0].startup_step == 0
    with pytest.raises(ParameterError, match="--only_average: the metadata name classes above 1"):
        run_refine(subtomograms, MLParams(n_classes=1, only_average=True))


def test_max_cc_sends_no_particle_to_an_empty_reference() -> None:
    """A class left without particles has a zero reference; its correlation is undefined, not the best."""
    data = make_dataset(3, 1, 16, snr=5.0, max_shift_px=0, seed=11)
    references = np.stack([data.phantoms[0].astype(np.float64), np.zeros((16,) * 3)])
    params = MLParams(n_classes=2, max_iter=1, ang_deg=30.0, max_cc=True)
    state = run_refine(SubtomogramSet(data.volumes), params, StartModel(references=references))
    assert np.all(state.stats.particles.classes == 0) and np.all(np.isfinite(state.stats.particles.pmax))
