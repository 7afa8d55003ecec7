"""Numerics of the result viewers: particles in the reference frame, pMax order, Fourier masks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mltomo.core.geometry import euler_to_matrix
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.core.views import (
    align_to_reference,
    class_members,
    missing_fraction,
    order_by_pmax,
    region_mask_volume,
    rotated_region_mask,
    shift_volumes,
)

WEDGE_60 = MissingRegion(kind="wedge_y", theta_y0_deg=-60.0, theta_yf_deg=60.0)


def _centred_frequencies(size: int) -> np.ndarray:
    """``(3, N, N, N)`` centred ``(kx, ky, kz)`` of every voxel of an ``[z, y, x]`` grid."""
    axis = np.arange(size) - size // 2
    kz, ky, kx = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([kx, ky, kz]).astype(np.float64)


def _mean_correlation(volumes: np.ndarray, references: np.ndarray) -> float:
    pairs = zip(volumes, references, strict=True)
    return float(np.mean([np.corrcoef(v.ravel(), r.ravel())[0, 1] for v, r in pairs]))


def test_aligned_particles_match_their_phantom_far_better_than_raw_ones() -> None:
    data = make_dataset(4, 2, 16, snr=5.0, seed=3)
    phantoms = data.phantoms[data.classes]
    aligned = align_to_reference(data.volumes, data.angles_deg, data.shifts_px)
    wrong_shift = align_to_reference(data.volumes, data.angles_deg, -data.shifts_px)
    score = [_mean_correlation(stack, phantoms) for stack in (aligned, data.volumes, wrong_shift)]
    assert aligned.shape == data.volumes.shape and aligned.dtype == np.float32
    assert score[0] > 0.75
    assert score[0] > score[1] + 0.25 and score[0] > score[2] + 0.25


def test_shift_moves_a_point_to_r_plus_s() -> None:
    volume = np.zeros((1, 8, 8, 8))
    volume[0, 4, 4, 4] = 1.0
    moved = shift_volumes(volume, [[1.0, -2.0, 3.0]])[0]
    assert np.unravel_index(np.argmax(moved), moved.shape) == (7, 2, 5)  # z, y, x


def test_order_by_pmax_and_class_members() -> None:
    pmax = np.array([0.2, 0.9, 0.5, 0.9, 0.1])
    refs = np.array([1, 2, 1, 1, 2])
    np.testing.assert_array_equal(order_by_pmax(pmax), [1, 3, 2, 0, 4])
    np.testing.assert_array_equal(class_members(refs, pmax, 1), [3, 2, 0])
    np.testing.assert_array_equal(class_members(refs, pmax, 2), [1, 4])
    assert class_members(refs, pmax, 3).size == 0


@pytest.mark.parametrize("size", [16, 32, 64])
def test_a_60_degree_wedge_misses_a_third_of_the_ball(size: int) -> None:
    # Directions are uniform in their azimuth about the tilt axis y; the wedge misses 2 x 60 of 360 deg.
    mask = region_mask_volume(WEDGE_60, size)
    assert mask.shape == (size,) * 3
    assert missing_fraction(mask) == pytest.approx(1.0 / 3.0, abs=0.01 if size > 16 else 0.02)
    assert mask[size // 2, size // 2, :].all()  # kx axis observed
    assert not mask[size // 2 + 1 :, size // 2, size // 2].any()  # kz axis missing


def test_masks_are_even_in_k() -> None:
    mask = region_mask_volume(MissingRegion(kind="pyramid", theta_y0_deg=-50, theta_yf_deg=65,
                                            theta_x0_deg=-40, theta_xf_deg=60), 16)  # fmt: skip
    inner = mask[1:, 1:, 1:]
    np.testing.assert_array_equal(inner, inner[::-1, ::-1, ::-1])


def test_a_quarter_turn_about_z_turns_a_y_wedge_into_an_x_wedge() -> None:
    wedge_x = MissingRegion(kind="wedge_x", theta_x0_deg=-60.0, theta_xf_deg=60.0)
    np.testing.assert_array_equal(rotated_region_mask(WEDGE_60, (90.0, 0.0, 0.0), 16),
                                  region_mask_volume(wedge_x, 16))  # fmt: skip


@pytest.mark.parametrize("angles", [(30.0, 50.0, -70.0), (-150.0, 120.0, 10.0), (0.0, 90.0, 0.0)])
def test_the_reference_frame_mask_is_the_wedge_seen_through_the_rotation(angles: tuple) -> None:
    """``M_ref(k) = M(A^T k)``: missing where ``p = A^T k`` has ``|p_x| < tan(30 deg) |p_z|``."""
    size = 16
    matrix = euler_to_matrix(*angles)
    p = np.einsum("ij,i...->j...", matrix, _centred_frequencies(size))  # p_j = (A^T k)_j
    margin = np.abs(p[0]) - np.tan(np.radians(30.0)) * np.abs(p[2])
    clear = np.abs(margin) > 1e-6
    mask = rotated_region_mask(WEDGE_60, angles, size, ball=False)
    np.testing.assert_array_equal(mask[clear] > 0.5, margin[clear] > 0)


def _principal_axes(mask: np.ndarray) -> np.ndarray:
    """Eigenvectors (columns, ascending eigenvalue) of the second moments of the missing frequencies."""
    k = _centred_frequencies(mask.shape[-1]).reshape(3, -1)[:, mask.ravel() < 0.5]
    return np.linalg.eigh(k @ k.T)[1]


@pytest.mark.parametrize("angles", [(30.0, 50.0, -70.0), (-150.0, 120.0, 10.0), (0.0, 90.0, 0.0)])
def test_missing_regions_point_where_the_rotation_sends_them(angles: tuple) -> None:
    """In the reference frame a cone's axis is ``A e_z`` and a y-wedge's thin direction ``A e_x``."""
    matrix = euler_to_matrix(*angles)
    cone = MissingRegion(kind="cone", theta_y0_deg=50.0)
    assert abs(_principal_axes(rotated_region_mask(cone, angles, 32))[:, -1] @ matrix[:, 2]) > 0.98
    assert abs(_principal_axes(rotated_region_mask(WEDGE_60, angles, 32))[:, 0] @ matrix[:, 0]) > 0.98
