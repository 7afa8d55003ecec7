"""Icosahedral direction grid, orientation grids, perturbations and random orientations."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from napari_mltomo.core.geometry import euler_to_matrix
from napari_mltomo.core.sampling import (
    OrientationGrid,
    orientation_grid,
    perturb_grid,
    perturbation_matrix,
    random_orientations,
    sphere_directions,
)

# --ang: (directions, psi steps, N_ang), ALGORITHM.md section 6.1.
COUNTS = {
    20.0: (92, 18, 1656),
    15.0: (162, 24, 3888),
    10.0: (362, 36, 13032),
    5.0: (1692, 72, 121824),
}
ANGLES = list(COUNTS)

# Rows of Xmipp's 3-degree reference file resources/test/sampling/ref_sampling.xmd
# (I2PC/scipion): 1-based row, rot, tilt, x, y, z. They cover poles, both edge lists and interiors.
XMIPP_3DEG_ROWS = np.array(
    [
        [1, 0.000000, 180.000000, 0.000000, 0.000000, -1.000000],
        [2, 0.000000, 0.000000, 0.000000, 0.000000, 1.000000],
        [3, -36.000000, 3.020713, 0.042633, -0.030974, 0.998611],
        [23, -36.000000, 63.434965, 0.723607, -0.525731, 0.447213],
        [24, -1.944670, 114.108138, 0.912250, -0.030974, -0.408460],
        [43, -34.055330, 65.891862, 0.756232, -0.511148, 0.408460],
        [147, -145.944670, 114.108138, -0.756232, -0.511148, -0.408460],
        [372, -72.000000, 176.979287, 0.016284, -0.050118, -0.998611],
        [412, -70.055330, 114.108138, 0.311359, -0.858030, -0.408460],
        [413, 0.000000, 4.893874, 0.085310, 0.000000, 0.996354],
        [420, -8.205883, 12.440321, 0.213217, -0.030747, 0.976521],
        [493, -21.763869, 38.392265, 0.576774, -0.230271, 0.783777],
        [4412, -66.788503, 114.891359, 0.357515, -0.833683, -0.420899],
    ]
)


def _icosahedron_vertices() -> np.ndarray:
    polar = 1.107149  # rad, Xmipp's angle between neighbouring vertices
    upper = [(polar, math.radians(-36.0 + 72.0 * k)) for k in range(5)]
    lower = [(math.pi - polar, math.radians(72.0 * k)) for k in range(5)]
    ring = [(math.sin(t) * math.cos(a), math.sin(t) * math.sin(a), math.cos(t)) for t, a in upper + lower]
    return np.array([(0.0, 0.0, 1.0), *ring, (0.0, 0.0, -1.0)])


def _angular_distances_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(a @ b.T, -1.0, 1.0)))


@pytest.mark.parametrize("ang", ANGLES)
def test_direction_count(ang: float) -> None:
    directions = sphere_directions(ang)
    assert directions.shape == (COUNTS[ang][0], 3)


@pytest.mark.parametrize("ang", ANGLES)
def test_orientation_count(ang: float) -> None:
    grid = orientation_grid(ang)
    assert len(grid) == COUNTS[ang][2]
    assert grid.angles_deg.shape == (COUNTS[ang][2], 3)
    assert grid.matrices.shape == (COUNTS[ang][2], 3, 3)


@pytest.mark.parametrize("ang", ANGLES)
def test_directions_are_unit_vectors(ang: float) -> None:
    np.testing.assert_allclose(np.linalg.norm(sphere_directions(ang), axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("ang", ANGLES)
def test_first_directions_are_south_then_north_pole(ang: float) -> None:
    np.testing.assert_array_equal(sphere_directions(ang)[:2], [[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("ang", ANGLES)
def test_icosahedron_vertices_present(ang: float) -> None:
    distances = _angular_distances_deg(_icosahedron_vertices(), sphere_directions(ang))
    np.testing.assert_array_less(distances.min(axis=1), 1e-5)


@pytest.mark.parametrize("ang", ANGLES)
def test_nearest_neighbour_spacing(ang: float) -> None:
    directions = sphere_directions(ang)
    distances = _angular_distances_deg(directions, directions)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    assert 0.9 * ang <= nearest.min()
    assert nearest.max() <= 1.25 * ang


def test_reproduces_xmipp_reference_file() -> None:
    rows = XMIPP_3DEG_ROWS[:, 0].astype(int) - 1
    np.testing.assert_allclose(sphere_directions(3.0)[rows], XMIPP_3DEG_ROWS[:, 3:], atol=1e-6)
    grid = orientation_grid(3.0, psi_sampling_deg=360.0, small_angle=False)
    np.testing.assert_allclose(grid.angles_deg[rows, :2], XMIPP_3DEG_ROWS[:, 1:3], atol=1e-5)
    np.testing.assert_array_equal(grid.angles_deg[:, 2], 0.0)


@pytest.mark.parametrize("ang", [45.0, 60.0, 90.0])
def test_too_coarse_ang_raises(ang: float) -> None:
    with pytest.raises(ValueError, match="--ang"):
        sphere_directions(ang)


def test_coarsest_usable_ang() -> None:
    assert len(sphere_directions(42.0)) == 42


@pytest.mark.parametrize("ang", [0.0, -5.0])
def test_non_positive_ang_raises(ang: float) -> None:
    with pytest.raises(ValueError, match="--ang"):
        orientation_grid(ang)


@pytest.mark.parametrize("ang", [20.0, 10.0])
def test_orientation_order_direction_then_psi(ang: float) -> None:
    n_directions, n_psi, _ = COUNTS[ang]
    grid = orientation_grid(ang)
    angles = grid.angles_deg.reshape(n_directions, n_psi, 3)
    np.testing.assert_array_equal(angles[:, :, :2], np.broadcast_to(angles[:, :1, :2], angles[..., :2].shape))
    # The third row of E(rot, tilt, psi) is the direction (x, y, z).
    rows = grid.matrices[:, 2, :].reshape(n_directions, n_psi, 3)
    expected = np.broadcast_to(sphere_directions(ang)[:, None, :], rows.shape)
    np.testing.assert_allclose(rows, expected, atol=1e-12)


@pytest.mark.parametrize("ang", ANGLES)
def test_psi_starts_at_small_angle_with_regular_steps(ang: float) -> None:
    n_psi = COUNTS[ang][1]
    psi = orientation_grid(ang).angles_deg[:n_psi, 2]
    np.testing.assert_allclose(psi, 2.75 + np.arange(n_psi) * 360.0 / n_psi)


def test_psi_without_small_angle_starts_at_zero() -> None:
    psi = orientation_grid(15.0, small_angle=False).angles_deg[:24, 2]
    np.testing.assert_allclose(psi, np.arange(24) * 15.0)


@pytest.mark.parametrize(("psi_sampling", "n_psi"), [(7.0, 52), (7.2, 50), (360.0, 1), (400.0, 1)])
def test_psi_sampling_sets_number_of_steps(psi_sampling: float, n_psi: int) -> None:
    grid = orientation_grid(20.0, psi_sampling_deg=psi_sampling)
    assert len(grid) == 92 * n_psi
    np.testing.assert_allclose(grid.angles_deg[:n_psi, 2], 2.75 + np.arange(n_psi) * 360.0 / n_psi)


@pytest.mark.parametrize("psi_sampling", [0.0, -10.0])
def test_non_positive_psi_sampling_raises(psi_sampling: float) -> None:
    with pytest.raises(ValueError, match="--psi_sampling"):
        orientation_grid(20.0, psi_sampling_deg=psi_sampling)


def _tilt_deg(directions: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(directions[:, 2]))


@pytest.mark.parametrize(
    ("tilt0", "tiltF", "keep"),
    [
        (0.0, 180.0, lambda d: np.ones(len(d), dtype=bool)),
        (0.0, 90.0, lambda d: d[:, 2] >= 0.0),
        (90.0, 180.0, lambda d: d[:, 2] <= 0.0),
        (90.0, 90.0, lambda d: d[:, 2] == 0.0),
        (30.0, 60.0, lambda d: (_tilt_deg(d) >= 30.0 - 1e-6) & (_tilt_deg(d) <= 60.0 + 1e-6)),
        (100.0, 180.0, lambda d: _tilt_deg(d) >= 100.0 - 1e-6),
    ],
)
def test_tilt_window_keeps_matching_directions(
    tilt0: float, tiltF: float, keep: Callable[[np.ndarray], np.ndarray]
) -> None:
    directions = sphere_directions(10.0)
    expected = directions[keep(directions)]
    grid = orientation_grid(10.0, tilt0_deg=tilt0, tiltF_deg=tiltF)
    assert len(grid) == 36 * len(expected)
    np.testing.assert_allclose(grid.matrices[::36, 2, :], expected, atol=1e-12)
    assert np.all((grid.angles_deg[:, 1] >= tilt0 - 1e-6) & (grid.angles_deg[:, 1] <= tiltF + 1e-6))


def test_equator_points_exist_at_ang_10() -> None:
    assert np.count_nonzero(sphere_directions(10.0)[:, 2] == 0.0) > 0


@pytest.mark.parametrize(("tilt0", "tiltF"), [(100.0, 50.0), (-1.0, 90.0), (0.0, 181.0)])
def test_invalid_tilt_window_raises(tilt0: float, tiltF: float) -> None:
    with pytest.raises(ValueError, match="--tilt0"):
        orientation_grid(20.0, tilt0_deg=tilt0, tiltF_deg=tiltF)


@pytest.mark.parametrize("ang", [20.0, 5.0])
def test_angles_round_trip_to_matrices(ang: float) -> None:
    grid = orientation_grid(ang)
    np.testing.assert_allclose(euler_to_matrix(*grid.angles_deg.T), grid.matrices, atol=1e-12)


def test_orientation_grid_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="OrientationGrid"):
        OrientationGrid(np.zeros((4, 3)), np.zeros((5, 3, 3)))


def test_perturbation_matrix_uses_normal_euler_angles() -> None:
    draws = np.random.default_rng(7).normal(0.0, 10.0 / 3.0, size=3)
    rotation = perturbation_matrix(np.random.default_rng(7), 10.0)
    np.testing.assert_allclose(rotation, euler_to_matrix(*draws), atol=1e-12)


def test_perturb_grid_applies_rotation_on_the_right() -> None:
    grid = orientation_grid(20.0)
    rotation = perturbation_matrix(np.random.default_rng(3), 20.0)
    perturbed = perturb_grid(grid, rotation)
    assert len(perturbed) == len(grid)
    np.testing.assert_allclose(perturbed.matrices, grid.matrices @ rotation, atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(*perturbed.angles_deg.T), perturbed.matrices, atol=1e-9)


def test_perturb_grid_keeps_relative_geometry() -> None:
    grid = orientation_grid(20.0)
    rotation = perturbation_matrix(np.random.default_rng(11), 20.0)
    before = grid.matrices[::37]
    after = perturb_grid(grid, rotation).matrices[::37]
    # A' = A R leaves every A_i A_j^T, and so every angle between two orientations, unchanged.
    np.testing.assert_allclose(
        np.einsum("iab,jcb->ijac", after, after),
        np.einsum("iab,jcb->ijac", before, before),
        atol=1e-12,
    )
    # A_i^T A_j itself is only conjugated by R, which keeps its trace (rotation angle).
    np.testing.assert_allclose(
        np.einsum("iba,jba->ij", after, after), np.einsum("iba,jba->ij", before, before), atol=1e-12
    )


def test_random_orientations_ranges_and_seed() -> None:
    angles = random_orientations(np.random.default_rng(5), 1000)
    assert angles.shape == (1000, 3)
    assert angles.min() >= 0.0
    assert angles[:, [0, 2]].max() < 360.0
    assert angles[:, 1].max() <= 180.0
    np.testing.assert_array_equal(angles, random_orientations(np.random.default_rng(5), 1000))


def test_random_orientations_are_uniform_on_so3() -> None:
    angles = random_orientations(np.random.default_rng(0), 20_000)
    matrices = euler_to_matrix(*angles.T)
    # Haar measure: every matrix element has mean 0 (standard error 1/sqrt(3 n) ~ 0.004).
    np.testing.assert_allclose(matrices.mean(axis=0), 0.0, atol=0.02)
    # and cos(tilt) is uniform on [-1, 1]: mean 0, variance 1/3.
    cos_tilt = np.cos(np.radians(angles[:, 1]))
    assert abs(cos_tilt.mean()) < 0.02
    assert abs(cos_tilt.var() - 1.0 / 3.0) < 0.02
