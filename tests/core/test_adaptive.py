"""``--adaptive``: a coarse pass at twice the angular step, then the fine grid near the coarse peaks only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.fft as sfft

from napari_mltomo.core.estep import estep_chunk
from napari_mltomo.core.estep_inputs import EStepModel, ParticleChunk, translation_log_prior
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import StartModel, run_refine
from napari_mltomo.core.search import adaptive_reach, grids, holding_mass, iteration_search
from napari_mltomo.core.setup import make_setup
from napari_mltomo.core.symmetry import orientation_copies
from napari_mltomo.core.synthetic import (
    adjusted_rand_index,
    class_orientation_errors_deg,
    make_dataset,
)

SIZE = 16


def test_the_fewest_orientations_holding_the_mass_are_kept() -> None:
    posterior = np.array([[0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    held = holding_mass(posterior, 0.85)
    np.testing.assert_array_equal(held[0], [False, True, True, False])
    assert held[1].sum() == 4  # three quarters are not enough
    np.testing.assert_array_equal(held[2], [True, False, False, False])


@pytest.mark.parametrize(
    "options",
    [
        {"ang_deg": 15.0},
        {"ang_deg": 10.0, "symmetry": "c4"},
        {"ang_deg": 15.0, "symmetry": "d2"},
        {"ang_deg": 10.0, "psi_sampling_deg": 30.0},
    ],
)
def test_every_fine_orientation_is_refined_around_its_nearest_coarse_one(options: dict) -> None:
    """Whichever fine orientation is best, the coarse orientation nearest it (under the point group) brings
    it into the fine pass; and each coarse orientation brings only a few."""
    params = MLParams(n_classes=1, adaptive=True, **options)
    reach = adaptive_reach(params).toarray() > 0
    (_, fine), (_, coarse) = grids(params, 0), grids(params, 0, 2.0)
    copies = orientation_copies(coarse.matrices, params.symmetry_group)
    closeness = np.einsum("cgij,fij->fcg", copies, fine.matrices).max(axis=2)  # trace(C^T F)
    nearest = closeness >= closeness.max(axis=1, keepdims=True) - 1e-9  # (fine, coarse); ties between psi
    assert (nearest & reach.T).any(axis=1).all()
    assert reach.sum(axis=1).mean() < 0.02 * len(fine) + 40


@pytest.fixture(scope="module")
def two_classes():
    made = make_dataset(6, 2, SIZE, snr=2.0, max_shift_px=1, seed=3)
    data = made.subtomograms()
    return made, data


def _model(made, setup) -> EStepModel:
    log_prior, shift_sq = translation_log_prior(SIZE, 1.5)
    sigma = float(np.std(made.volumes - made.volumes.mean()))
    return EStepModel(np.log([0.5, 0.5]), sigma, log_prior, shift_sq, (made.region,), setup.within_resolution)


def test_the_adaptive_estep_gives_the_exhaustive_posteriors_from_a_tenth_of_the_orientations(
    two_classes,
) -> None:
    made, data = two_classes
    params = MLParams(n_classes=2, ang_deg=15.0, adaptive=True, seed=0)
    setup = make_setup(data, params)
    references = made.phantoms.astype(np.float64)
    model = _model(made, setup)
    spectra = (sfft.rfftn(made.volumes, axes=(-3, -2, -1)) * setup.masks[0]).astype(np.complex64)
    n = len(made.volumes)
    chunk = ParticleChunk(np.arange(n), spectra, np.zeros(n, dtype=np.intp), np.arange(n) % 2)
    grid, adaptive = iteration_search(data, params, setup, references, 1)
    same_grid, bank = iteration_search(data, replace(params, adaptive=False), setup, references, 1)
    np.testing.assert_array_equal(grid.matrices, same_grid.matrices)
    allowed = adaptive.allowed(chunk, setup.masks, model)
    exhaustive, fast = estep_chunk(chunk, bank, model), adaptive.estep(chunk, setup.masks, model)
    assert allowed.sum(axis=1).max() < 0.1 * len(grid)
    assert allowed[np.arange(n), exhaustive.particles.orientations].all()
    np.testing.assert_array_equal(fast.particles.orientations, exhaustive.particles.orientations)
    np.testing.assert_array_equal(fast.particles.classes, exhaustive.particles.classes)
    np.testing.assert_allclose(fast.particles.log_likelihood, exhaustive.particles.log_likelihood, atol=0.01)
    np.testing.assert_allclose(fast.sums, exhaustive.sums, atol=0.01 * np.abs(exhaustive.sums).max())
    np.testing.assert_allclose(fast.class_weights, exhaustive.class_weights, rtol=0.01)


def test_an_adaptive_refinement_finds_the_classes_and_poses_of_the_exhaustive_one(two_classes) -> None:
    """Two iterations from noisy true references, with the grid perturbed (``--perturb``)."""
    made, data = two_classes
    rng = np.random.default_rng(0)
    references = made.phantoms + rng.normal(scale=0.25 * made.phantoms.std(), size=made.phantoms.shape)
    params = MLParams(n_classes=2, max_iter=2, ang_deg=20.0, threads=2, seed=1, perturb=True)
    start = StartModel(references=references.astype(np.float64))
    scores = {}
    for adaptive in (False, True):
        state = run_refine(data, replace(params, adaptive=adaptive), start)
        particles = state.stats.particles
        angles = state.grid.angles_deg[particles.orientations]
        errors = class_orientation_errors_deg(angles, made.angles_deg, made.classes)
        medians = np.array([np.median(errors[k]) for k in sorted(errors)])
        scores[adaptive] = adjusted_rand_index(made.classes, particles.classes), medians
    (ari, medians), (adaptive_ari, adaptive_medians) = scores[False], scores[True]
    assert ari == adaptive_ari == 1.0
    assert np.all(medians <= 30.0)  # poses found (a flip would be near 180): the comparison means something
    assert np.all(adaptive_medians <= medians + 2.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ang_search_deg": 20.0}, "needs a global ML search"),
        ({"max_cc": True}, "needs a global ML search"),
        ({"ang_deg": 25.0}, "needs --ang 21 or less"),
    ],
)
def test_adaptive_is_refused_where_it_cannot_work(changes: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        MLParams(n_classes=1, adaptive=True, **changes)
