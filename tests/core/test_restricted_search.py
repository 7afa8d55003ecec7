"""Searches restricted per particle: --ang_search around the metadata angles, --dont_rotate, --dont_align."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_mltomo.core.fourier import fourier_rescale
from napari_mltomo.core.geometry import centred_coordinates, euler_to_matrix, rotate_volumes
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import StartModel, SubtomogramSet, iter_refine, run_refine
from napari_mltomo.core.sampling import local_neighbourhoods, orientation_grid, random_orientations
from napari_mltomo.core.synthetic import (
    adjusted_rand_index,
    make_dataset,
    make_phantoms,
    orientation_errors_deg,
)

SIZE = 16


@pytest.fixture(scope="module")
def posed():
    """30 particles of 3 classes, box 32, +-60 wedge, shifts up to 2 voxels, SNR 1."""
    return make_dataset(10, 3, 32, snr=1.0, max_shift_px=2, seed=5)


def _subtomograms(data, angles=None, shifts=None) -> SubtomogramSet:
    return SubtomogramSet(data.volumes, (data.region,), angles_deg=angles, shifts_px=shifts)


def _posed_angles(state) -> np.ndarray:
    return state.grid.angles_deg[state.stats.particles.orientations]


def test_dont_align_keeps_the_metadata_poses_and_only_classifies(posed) -> None:
    data = posed
    params = MLParams(n_classes=3, max_iter=8, dont_align=True, threads=2, chunk_size=8, seed=1)
    state = run_refine(data.subtomograms(with_poses=True), params)
    particles = state.stats.particles
    np.testing.assert_allclose(_posed_angles(state), data.angles_deg)
    np.testing.assert_allclose(particles.shifts_px / state.scale, data.shifts_px)
    assert adjusted_rand_index(data.classes, particles.classes) == 1.0  # from random subsets


def test_dont_rotate_keeps_the_metadata_angles_and_finds_the_shifts(posed) -> None:
    data = posed
    references = fourier_rescale(data.phantoms, 32).astype(np.float64)
    params = MLParams(n_classes=3, max_iter=1, dont_rotate=True, offset_sigma_px=2.0, threads=2, seed=1)
    start = StartModel(references=references)
    state = run_refine(_subtomograms(data, data.angles_deg, np.zeros_like(data.shifts_px)), params, start)
    particles = state.stats.particles
    np.testing.assert_allclose(_posed_angles(state), data.angles_deg)
    assert np.mean(np.all(particles.shifts_px == data.shifts_px, axis=1)) >= 0.9
    assert adjusted_rand_index(data.classes, particles.classes) == 1.0


def test_neighbourhoods_keep_directions_and_psi_within_the_range_away_from_the_poles() -> None:
    grid = orientation_grid(10.0)
    centres = np.array([[30.0, 70.0, 100.0], [0.0, 3.0, 50.0], [-120.0, 178.0, -170.0]])
    allowed = local_neighbourhoods(grid.angles_deg, centres, 20.0)
    directions = euler_to_matrix(*grid.angles_deg.T)[:, 2]  # third rows
    centre_directions = euler_to_matrix(*centres.T)[:, 2]
    gap = np.degrees(np.arccos(np.clip(centre_directions @ directions.T, -1, 1)))
    np.testing.assert_array_equal(allowed[0], (gap[0] < 20.0) & (_psi_gap(grid, 100.0) <= 20.0))
    for polar in (1, 2):  # near a pole every psi of a near direction is taken
        np.testing.assert_array_equal(allowed[polar], gap[polar] < 20.0)
    free = local_neighbourhoods(grid.angles_deg, centres[:1], 20.0, limit_psi=False)
    np.testing.assert_array_equal(free[0], gap[0] < 20.0)
    assert 0 < allowed[0].sum() < free[0].sum()


def _psi_gap(grid, psi: float) -> np.ndarray:
    return np.abs((grid.angles_deg[:, 2] - psi + 180.0) % 360.0 - 180.0)


def test_local_search_stays_near_the_input_and_refines_a_coarse_run(posed) -> None:
    data = posed
    rng = np.random.default_rng(0)
    references = fourier_rescale(data.phantoms, SIZE).astype(np.float64)
    references += rng.normal(scale=0.25 * references.std(), size=references.shape)
    coarse = MLParams(n_classes=3, max_iter=2, ang_deg=20.0, dim=SIZE, threads=2, chunk_size=8, seed=1)
    first = run_refine(_subtomograms(data), coarse, StartModel(references=references))
    angles = _posed_angles(first)
    shifts = first.stats.particles.shifts_px / first.scale
    local = MLParams(
        n_classes=3, max_iter=2, ang_deg=10.0, ang_search_deg=20.0, dim=SIZE, threads=2, chunk_size=8, seed=1
    )
    second = run_refine(_subtomograms(data, angles, shifts), local, StartModel(references=first.references))
    refined = _posed_angles(second)
    assert local_neighbourhoods(refined, angles, 20.0).diagonal().all()
    before = np.median(orientation_errors_deg(angles, data.angles_deg, data.classes))
    after = np.median(orientation_errors_deg(refined, data.angles_deg, data.classes))
    assert after < before - 2.0, (before, after)
    assert adjusted_rand_index(data.classes, second.stats.particles.classes) == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ang_search_deg": 5.0, "ang_deg": 10.0}, "--ang_search must be at least --ang"),
        ({"dont_align": True}, "--dont_align needs the particles' angles"),
        ({"ang_search_deg": 20.0}, "--ang_search needs the particles' angles"),
    ],
)
def test_restricted_searches_refuse_what_they_cannot_do(posed, fields: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        run_refine(_subtomograms(posed), MLParams(max_iter=1, **fields))


def _blob(centre: np.ndarray, width: float, size: int) -> np.ndarray:
    coords = centred_coordinates(size).reshape(size, size, size, 3)
    return np.exp(-np.sum((coords - centre) ** 2, axis=-1) / (2 * width**2))


def test_mask_focuses_the_classification_on_the_masked_difference() -> None:
    """Two classes differ by a feature inside the mask; a larger feature elsewhere comes and goes at
    random. With the mask the classes are found; without, the run sorts the other feature."""
    size, n = 24, 40
    rng = np.random.default_rng(0)
    base = make_phantoms(1, size, seed=3)[0].astype(np.float64)
    site = np.array([0.0, 0.0, -6.0])
    feature, nuisance = 0.8 * _blob(site, 1.8, size), 1.2 * _blob(-site, 2.5, size)
    classes = rng.permutation(np.repeat([0, 1], n // 2))
    extra = rng.integers(0, 2, n)
    angles = random_orientations(rng, n)
    volumes = np.stack(
        [
            rotate_volumes((base + c * feature + e * nuisance)[None], euler_to_matrix(*a).T)[0]
            for c, e, a in zip(classes, extra, angles, strict=True)
        ]
    )
    volumes += rng.normal(scale=1.5 * base.std(), size=volumes.shape)
    mask = (np.sum((centred_coordinates(size) - site) ** 2, axis=-1) <= 25.0).reshape((size,) * 3)
    params = MLParams(n_classes=2, max_iter=10, dont_align=True, threads=2, seed=1)
    scores = {}
    for name, focus in (("masked", mask.astype(float)), ("unmasked", None)):
        data = SubtomogramSet(volumes, angles_deg=angles, shifts_px=np.zeros((n, 3)), focus_mask=focus)
        scores[name] = adjusted_rand_index(classes, run_refine(data, params).stats.particles.classes)
    assert scores["masked"] >= 0.9 and scores["masked"] >= scores["unmasked"] + 0.3, scores
    with pytest.raises(ParameterError, match="--mask works only with --dont_align"):
        run_refine(replace(data, focus_mask=mask), replace(params, dont_align=False, dont_rotate=True))


def test_mask_scales_the_starting_noise_by_its_rms_and_sym_applies_with_dont_align(posed) -> None:
    """--mask: the starting sigma is the particles' noise inside the mask (the original multiplied sigma
    by V / sum(mask)); --sym with --dont_align symmetrises the references (the original ignored it)."""
    data = posed
    mask = np.zeros((32,) * 3)
    mask[8:24, 8:24, 8:24] = 1.0  # 1/8 of the box, inside the sphere
    subtomograms = data.subtomograms(with_poses=True)
    params = MLParams(n_classes=1, max_iter=1, dont_align=True, noise_sigma=2.0, symmetry="c4", seed=1)
    start, first = list(iter_refine(replace(subtomograms, focus_mask=mask), params))
    assert start.sigma_noise == pytest.approx(2.0 * np.sqrt(1 / 8))
    quarter = euler_to_matrix(90.0, 0.0, 0.0)
    for state in (start, first):
        turned = rotate_volumes(state.references, quarter)
        inside = np.abs(state.references).max()
        assert np.abs(turned - state.references).max() < 0.05 * inside


def test_fixed_orientations_win_over_a_local_search_and_every_particle_has_a_neighbour(posed) -> None:
    data = posed
    params = MLParams(n_classes=3, max_iter=1, dont_rotate=True, ang_search_deg=30.0, threads=2, seed=1)
    start = StartModel(references=fourier_rescale(data.phantoms, 32).astype(np.float64))
    state = run_refine(data.subtomograms(with_poses=True), params, start)
    np.testing.assert_allclose(_posed_angles(state), data.angles_deg)
    window = orientation_grid(10.0, tiltF_deg=60.0)
    outside = local_neighbourhoods(window.angles_deg, np.array([[20.0, 90.0, 40.0]]), 10.0)
    assert outside.sum() == 1  # no orientation within range: the nearest one
    nearest = np.argmax(np.einsum("aij,ij->a", window.matrices, euler_to_matrix(20.0, 90.0, 40.0)))
    assert outside[0, nearest]
