"""Pose synchronisation: one rotation per particle from the rotations between pairs of them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft as sfft
from scipy.spatial.transform import Rotation

from napari_mltomo.core.geometry import centred_coordinates, rotate_volumes, zero_outside_sphere
from napari_mltomo.core.phantoms import make_near_symmetric_phantoms
from napari_mltomo.core.rigid import rotation_angle_deg
from napari_mltomo.core.sampling import orientation_grid
from napari_mltomo.core.synchronise import look_alike_rotations, synchronise, synchronised_corrections

SIZE = 24


def _relative_errors_deg(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per pair ``i < j``, the angle between ``O_i O_j^T`` found and true (independent of the gauge)."""
    found_pairs = found[:, None] @ np.swapaxes(found, -1, -2)[None]
    true_pairs = true[:, None] @ np.swapaxes(true, -1, -2)[None]
    angles = rotation_angle_deg(np.swapaxes(found_pairs, -1, -2) @ true_pairs)
    return angles[np.triu_indices(len(true), 1)]


def test_exact_pairs_give_the_rotations_up_to_one_rotation_of_them_all() -> None:
    true = Rotation.random(12, random_state=3).as_matrix()
    pairs = true[:, None] @ np.swapaxes(true, -1, -2)[None]
    found = synchronise(pairs, np.ones((12, 12)) - np.eye(12))
    np.testing.assert_allclose(np.linalg.det(found), 1.0, atol=1e-9)
    assert _relative_errors_deg(found, true).max() < 1e-5


def test_the_largest_group_keeps_its_frame() -> None:
    """Eight rotations within a few degrees of the identity and four far from it: the eight stay there, turned
    at most by the small rotation that centres them on the identity."""
    near = Rotation.from_rotvec(np.random.default_rng(8).normal(0.0, 0.05, (8, 3))).as_matrix()
    true = np.concatenate([near, Rotation.random(4, random_state=9).as_matrix()])
    pairs = true[:, None] @ np.swapaxes(true, -1, -2)[None]
    found = synchronise(pairs, np.ones((12, 12)) - np.eye(12))
    offset = rotation_angle_deg(np.swapaxes(found[:8], -1, -2) @ near)  # one rotation of them all, small
    np.testing.assert_allclose(offset, offset[0], atol=1e-6)
    assert offset[0] < 2.0


def test_pairs_of_noise_weigh_nothing_and_many_of_them_do_little_harm() -> None:
    """A third of the pairs replaced by random rotations: weighted 0 they change nothing; weighted as the
    others, the rotations are still found within a few degrees of each other (a random pair is far from the
    consistent answer in every direction, so it averages out of the leading eigenvectors)."""
    n = 30
    true = Rotation.random(n, random_state=4).as_matrix()
    pairs = true[:, None] @ np.swapaxes(true, -1, -2)[None]
    rng = np.random.default_rng(5)
    noise = np.triu(rng.random((n, n)) < 1 / 3, 1)
    pairs[noise] = Rotation.random(int(noise.sum()), random_state=6).as_matrix()
    weights = np.triu(np.ones((n, n)), 1)
    clean = synchronise(pairs, (weights * ~noise) + (weights * ~noise).T)
    assert _relative_errors_deg(clean, true).max() < 1e-5
    everything = synchronise(pairs, weights + weights.T)
    assert np.median(_relative_errors_deg(everything, true)) < 10.0


def test_an_elongated_reference_looks_alike_turned_about_its_long_axis_or_end_over_end() -> None:
    """A prolate blob along z (a little asymmetric, as proteins are): the look-alike rotations turn z
    into +-z, and include turns about z by any angle."""
    x, y, z = centred_coordinates(24).T.reshape(3, 24, 24, 24)
    blob = np.exp(-(x**2 + y**2) / (2 * 2.5**2) - z**2 / (2 * 6.0**2)) * (1.0 + 0.05 * x / 10)
    candidates = look_alike_rotations(blob, orientation_grid(15.0).matrices)
    axes = candidates @ np.array([0.0, 0.0, 1.0])
    assert np.all(np.abs(axes[:, 2]) > np.cos(np.radians(30.0)))
    turns = rotation_angle_deg(candidates)
    assert np.any(turns > 150.0) and np.any((turns > 60.0) & (np.abs(axes[:, 2]) > 0.99))


def _posed_copies(turns: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies (SNR 0.5) of a near-2-fold phantom in the reference frame, copy ``i`` turned by
    ``turns[i]``, as spectra zero outside the ball, with full coverage."""
    phantom = make_near_symmetric_phantoms(1, SIZE, seed=2)[0][0].astype(np.float64)
    copies = np.stack([rotate_volumes(phantom, turn) for turn in turns])
    copies += np.random.default_rng(seed).normal(0.0, np.sqrt(phantom.var() / 0.5), copies.shape)
    spectra = sfft.rfftn(zero_outside_sphere(copies)[0], axes=(1, 2, 3))
    return spectra, np.ones(spectra.shape)


@pytest.mark.parametrize("trapped", [False, True])
def test_synchronised_corrections_turn_a_half_turned_class_and_leave_an_aligned_one(trapped: bool) -> None:
    """Copies within about the angular step of the reference frame are left as posed (their synchronised
    rotations agree with more pairs, but stay within the agreement angle: turned by them, these copies
    would only move within the step); with half of them turned by the phantom's near 2-fold, the
    corrections bring all of them into one frame."""
    n = 16
    axis = make_near_symmetric_phantoms(1, SIZE, seed=2)[1][0]
    jitter = Rotation.from_rotvec(np.random.default_rng(2).normal(0.0, np.radians(10.0), (n, 3))).as_matrix()
    turns = jitter.copy()
    if trapped:
        turns[1::2] = Rotation.from_rotvec(np.pi * axis).as_matrix() @ jitter[1::2]
    spectra, coverage = _posed_copies(turns, seed=12)
    reference = np.mean([rotate_volumes(copy, turn.T) for copy, turn in zip(
        sfft.irfftn(spectra, s=(SIZE,) * 3, axes=(1, 2, 3)), jitter, strict=True)], axis=0)  # fmt: skip
    corrections = synchronised_corrections(spectra, coverage, reference)
    if not trapped:
        assert corrections is None
        return
    assert corrections is not None
    frames = corrections @ turns  # copy i, turned, is the phantom turned by frames[i]
    assert np.median(_relative_errors_deg(frames, np.broadcast_to(np.eye(3), frames.shape))) < 15.0
