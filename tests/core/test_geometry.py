"""Xmipp ZYZ Euler angles <-> rotation matrices."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from napari_mltomo.core.geometry import euler_to_matrix, matrix_to_euler

ANGLES_DEG = [
    (0.0, 0.0, 0.0),
    (90.0, 0.0, 0.0),
    (0.0, 90.0, 0.0),
    (0.0, 0.0, 90.0),
    (30.0, 50.0, -70.0),
    (-150.0, 120.0, 10.0),
    (200.0, 175.0, 359.0),
    (12.5, 180.0, -33.0),
]


def _rz(angle_deg: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(angle_deg: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _explicit_formula(rot: float, tilt: float, psi: float) -> NDArray[np.float64]:
    """ALGORITHM.md section 7, written out element by element."""
    cr, sr = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    ct, st = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
    cp, sp = np.cos(np.radians(psi)), np.sin(np.radians(psi))
    return np.array(
        [
            [cp * ct * cr - sp * sr, cp * ct * sr + sp * cr, -cp * st],
            [-sp * ct * cr - cp * sr, -sp * ct * sr + cp * cr, sp * st],
            [st * cr, st * sr, ct],
        ]
    )


@pytest.mark.parametrize("angles", ANGLES_DEG)
def test_matches_explicit_formula(angles: tuple[float, float, float]) -> None:
    np.testing.assert_allclose(euler_to_matrix(*angles), _explicit_formula(*angles), atol=1e-12)


@pytest.mark.parametrize("angles", ANGLES_DEG)
def test_transpose_is_active_zyz(angles: tuple[float, float, float]) -> None:
    rot, tilt, psi = angles
    np.testing.assert_allclose(euler_to_matrix(*angles).T, _rz(rot) @ _ry(tilt) @ _rz(psi), atol=1e-12)


@pytest.mark.parametrize("angles", ANGLES_DEG)
def test_matches_scipy_intrinsic_zyz_transposed(angles: tuple[float, float, float]) -> None:
    expected = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().T
    np.testing.assert_allclose(euler_to_matrix(*angles), expected, atol=1e-12)


def test_known_rotation_about_z() -> None:
    # E(90, 0, 0) = Rz(-90): it maps +x to -y.
    mapped = euler_to_matrix(90.0, 0.0, 0.0) @ [1.0, 0.0, 0.0]
    np.testing.assert_allclose(mapped, [0.0, -1.0, 0.0], atol=1e-12)


def test_third_row_is_projection_direction() -> None:
    rot, tilt = np.radians(40.0), np.radians(70.0)
    direction = [np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)]
    np.testing.assert_allclose(euler_to_matrix(40.0, 70.0, 123.0)[2], direction, atol=1e-12)


def test_broadcasts_and_is_proper_rotation() -> None:
    rng = np.random.default_rng(0)
    rot, psi = rng.uniform(-180.0, 180.0, size=(2, 4, 5))
    tilt = rng.uniform(0.0, 180.0, size=(4, 1))
    matrices = euler_to_matrix(rot, tilt, psi)
    assert matrices.shape == (4, 5, 3, 3)
    identity = np.broadcast_to(np.eye(3), matrices.shape)
    np.testing.assert_allclose(matrices @ np.swapaxes(matrices, -1, -2), identity, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(matrices), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    "angles", [(30.0, 50.0, -70.0), (-150.0, 120.0, 10.0), (179.0, 1.0, -179.0), (0.0, 90.0, 0.0)]
)
def test_matrix_to_euler_recovers_regular_angles(angles: tuple[float, float, float]) -> None:
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(*angles)), angles, atol=1e-9)


@pytest.mark.parametrize(
    "angles",
    [
        (0.0, 0.0, 0.0),
        (40.0, 0.0, 25.0),
        (-100.0, 0.0, 170.0),
        (40.0, 1e-7, 25.0),
        (200.0, 175.0, 359.0),
        (40.0, 180.0, 25.0),
        (-100.0, 180.0, -170.0),
        (40.0, 180.0 - 1e-7, 25.0),
    ],
)
def test_matrix_to_euler_round_trips_matrices(angles: tuple[float, float, float]) -> None:
    matrix = euler_to_matrix(*angles)
    recovered = matrix_to_euler(matrix)
    assert 0.0 <= recovered[1] <= 180.0
    # Within sin(tilt) < 1e-6 of a pole matrix_to_euler sets psi = 0, an O(1e-6) approximation.
    np.testing.assert_allclose(euler_to_matrix(*recovered), matrix, atol=1e-6)


def test_matrix_to_euler_round_trips_random_batch() -> None:
    matrices = Rotation.random(500, random_state=1).as_matrix()
    angles = matrix_to_euler(matrices)
    assert angles.shape == (500, 3)
    np.testing.assert_allclose(euler_to_matrix(*np.moveaxis(angles, -1, 0)), matrices, atol=1e-9)
