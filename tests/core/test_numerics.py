"""Missing-region masks, Fourier helpers, resampling and the translation prior against their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft as sfft
from scipy.spatial.transform import Rotation

from napari_mltomo.core.estep_inputs import translation_log_prior
from napari_mltomo.core.fourier import (
    fourier_rescale,
    fsc,
    fsc_crossing,
    half_grid_weights,
    parseval_norms,
    resolution_from_fsc,
    resolution_masks,
    shell_index,
)
from napari_mltomo.core.geometry import (
    backproject,
    centred_coordinates,
    euler_to_matrix,
    flatten_outside_sphere,
    fourier_stencil,
    oversampled_shape,
    oversampled_spectra,
    rotate_volumes,
    sphere_mask,
)
from napari_mltomo.core.missing import MissingRegion, observed_masks, region_masks

N = 16
WEDGE = MissingRegion(kind="wedge_y", theta_y0_deg=-60.0, theta_yf_deg=60.0)


def _everything(size: int = N) -> np.ndarray:
    return np.ones((size, size, size // 2 + 1), dtype=bool)


def _at(mask: np.ndarray, kx: int, ky: int, kz: int) -> bool:
    """Value of a half-grid mask at signed frequency (kx >= 0)."""
    return bool(mask[kz % N, ky % N, kx])


# (region, (kx, ky, kz), observed?) checked by hand against ALGORITHM.md section 2.
HAND_CHECKED = [
    (WEDGE, (5, 0, 1), True),  # 11 degrees from x: inside the measured +-60 tilt range
    (WEDGE, (1, 0, 5), False),  # 11 degrees from z: in the missing wedge
    (WEDGE, (3, 4, 5), True),  # atan2(5, 3) = 59 degrees from x: just inside the +-60 range
    (WEDGE, (2, 4, 5), False),  # atan2(5, 2) = 68 degrees from x: missing
    (WEDGE, (5, 2, 3), True),  # atan2(3, 5) = 31 degrees from x: observed
    (WEDGE, (0, 6, 0), True),  # on the tilt axis
    (WEDGE, (0, 0, 6), False),  # the beam direction
    (MissingRegion(kind="wedge_y", theta_y0_deg=-30.0, theta_yf_deg=60.0), (3, 0, 3), False),
    (MissingRegion(kind="wedge_y", theta_y0_deg=-30.0, theta_yf_deg=60.0), (3, 0, -3), True),
    (MissingRegion(kind="wedge_x", theta_x0_deg=-60.0, theta_xf_deg=60.0), (0, 5, 1), True),
    (MissingRegion(kind="wedge_x", theta_x0_deg=-60.0, theta_xf_deg=60.0), (0, 1, 5), False),
    (MissingRegion(kind="wedge_x", theta_x0_deg=-60.0, theta_xf_deg=60.0), (5, 0, 1), False),
    (
        MissingRegion(kind="pyramid", theta_y0_deg=-60, theta_yf_deg=60, theta_x0_deg=-60, theta_xf_deg=60),
        (5, 0, 1),
        True,
    ),
    (
        MissingRegion(kind="pyramid", theta_y0_deg=-60, theta_yf_deg=60, theta_x0_deg=-60, theta_xf_deg=60),
        (1, 1, 6),
        False,
    ),
    (
        MissingRegion(kind="cone", theta_y0_deg=45.0),
        (4, 0, 3),
        True,
    ),  # 53 degrees from z: outside the 45-degree cone
    (MissingRegion(kind="cone", theta_y0_deg=45.0), (2, 1, 5), False),  # 24 degrees from z: in the cone
]


@pytest.mark.parametrize(("region", "frequency", "observed"), HAND_CHECKED)
def test_mask_matches_rule_at_hand_checked_points(region, frequency, observed) -> None:
    mask = observed_masks(region, N, _everything())[0]
    assert _at(mask, *frequency) is observed


def test_wedge_matches_angle_form() -> None:
    """The inequality rule equals 'observed iff the xz-angle lies in [-thetaF, -theta0]' (folded)."""
    region = MissingRegion(kind="wedge_y", theta_y0_deg=-50.0, theta_yf_deg=40.0)
    mask = observed_masks(region, N, _everything())[0]
    full = np.where(np.arange(N) <= (N - 1) // 2, np.arange(N), np.arange(N) - N)
    kz, kx = full[:, None], full[None, : N // 2 + 1]
    phi = np.rad2deg(np.arctan2(kz, kx))
    phi = np.where(phi > 90, phi - 180, np.where(phi <= -90, phi + 180, phi))
    expected = ((phi >= -40.0) & (phi <= 50.0)) | (kz == 0)
    np.testing.assert_array_equal(mask[:, 3, :], np.broadcast_to(expected, mask[:, 3, :].shape))


def test_rotated_mask_is_mask_of_rotated_frequency() -> None:
    """M_A(k) = M_I(A^T k): check at every voxel against a direct evaluation."""
    matrix = euler_to_matrix(20.0, 70.0, -35.0)
    rotated = observed_masks(WEDGE, N, _everything(), matrix[None])[0]
    tg0, tgf = WEDGE.slopes()[:2]
    full = np.where(np.arange(N) <= (N - 1) // 2, np.arange(N), np.arange(N) - N)
    kz, ky, kx = np.meshgrid(full, full, full[: N // 2 + 1], indexing="ij")
    k = np.stack([kx, ky, kz], axis=-1).astype(float)
    p = k @ matrix  # rows: (A^T k)^T
    px, pz = p[..., 0], p[..., 2]
    expected = np.where(pz >= 0, (px <= tg0 * pz) | (px >= tgf * pz), (px <= tgf * pz) | (px >= tg0 * pz))
    np.testing.assert_array_equal(rotated, expected)


def test_masks_exclude_components_outside_resolution() -> None:
    _, within = resolution_masks(N, 0.25)
    mask = region_masks((WEDGE,), N, within)[0, 0]
    assert not mask[0, 0, 0]  # DC
    assert not mask[0, 0, 5]  # |k| = 5 > 0.25 * 16
    assert mask[0, 0, 3]


def test_no_regions_means_one_full_region() -> None:
    _, within = resolution_masks(N, 0.5)
    masks = region_masks((), N, within, euler_to_matrix(10, 20, 30)[None])
    assert masks.shape == (1, 1, N, N, N // 2 + 1)
    np.testing.assert_array_equal(masks[0, 0], within)


def test_resolution_masks_follow_definition() -> None:
    soft, within = resolution_masks(32, 0.25)  # r_max = 8
    assert soft[0, 0, 6] == 1.0 and soft[0, 0, 0] == 0.0
    assert soft[0, 0, 7] == pytest.approx(0.5 * (1 + np.cos(np.pi * 1 / 2)))
    assert soft[0, 0, 8] == 0.0 and not within[0, 0, 8] and within[0, 0, 7]


def test_parseval_norm_equals_real_space_sum() -> None:
    volumes = np.random.default_rng(0).normal(size=(3, 15, 15, 15))
    for size, vols in ((15, volumes), (16, np.random.default_rng(1).normal(size=(2, 16, 16, 16)))):
        spectra = sfft.rfftn(vols, axes=(-3, -2, -1))
        np.testing.assert_allclose(parseval_norms(spectra, size), np.sum(vols**2, axis=(1, 2, 3)))
    assert half_grid_weights(16)[[0, 1, 8]].tolist() == [1.0, 2.0, 1.0]


def test_fourier_rescale_keeps_mean_and_pad_then_crop_is_identity() -> None:
    volume = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32) + 3.0
    padded = fourier_rescale(volume, 24)
    assert padded.shape == (24, 24, 24)
    assert padded.mean() == pytest.approx(volume.mean(), rel=1e-5)
    np.testing.assert_allclose(fourier_rescale(padded, 16), volume, atol=1e-4)
    with pytest.raises(ValueError, match="parity"):
        fourier_rescale(volume, 15)


def test_fsc_of_identical_maps_is_one_and_of_independent_noise_is_small() -> None:
    rng = np.random.default_rng(3)
    a = sfft.rfftn(rng.normal(size=(32, 32, 32)))
    b = sfft.rfftn(rng.normal(size=(32, 32, 32)))
    np.testing.assert_allclose(fsc(a, a, 32)[1:], 1.0)
    assert np.abs(fsc(a, b, 32)[3:]).max() < 0.3
    assert resolution_from_fsc(np.array([1.0, 0.9, 0.8, 0.6, 0.4, 0.7])) == 3
    assert resolution_from_fsc(np.array([1.0, 0.2, 0.1])) == 1
    assert fsc_crossing(np.array([1.0, 0.9, 0.8, 0.6, 0.4, 0.7])) == pytest.approx(3.5)
    assert fsc_crossing(np.array([1.0, 0.9, 0.8])) == 2.0  # never below 0.5
    assert fsc_crossing(np.array([0.0, 0.0, 0.0])) == 0.0  # nothing correlates


def _blobs(centres: np.ndarray, size: int) -> np.ndarray:
    """Sum of unit-width Gaussians at ``(x, y, z)`` centres, sampled on the centred grid."""
    squared = ((centred_coordinates(size)[:, None, :] - centres[None]) ** 2).sum(axis=-1)
    return np.exp(-squared / 2.0).sum(axis=1).reshape(size, size, size)


def _shell_sums(values: np.ndarray, size: int) -> np.ndarray:
    shells = shell_index(size)
    inside = shells >= 0
    weighted = np.broadcast_to(half_grid_weights(size), shells.shape) * values
    return np.bincount(shells[inside], weighted[inside], size // 2 + 1)


@pytest.mark.parametrize("size", [32, 33])
def test_rotation_keeps_the_power_of_every_shell(size: int) -> None:
    """One rotation of a detailed density keeps >= 0.97 of each shell's power and signal up to 3/4
    Nyquist (trilinear resampling keeps 0.67 at half Nyquist), compared with the exact rotation."""
    rng = np.random.default_rng(1)
    centres = rng.uniform(-1, 1, size=(400, 3))
    centres = centres[np.linalg.norm(centres, axis=1) < 1][:150] * 0.34 * size
    matrix = Rotation.from_euler("zyz", [37, 71, 113], degrees=True).as_matrix()
    rotated = sfft.rfftn(rotate_volumes(_blobs(centres, size), matrix))
    exact = sfft.rfftn(_blobs(centres @ matrix.T, size))  # Rot[M] f(r) = f(M^T r) moves c to M c
    exact_power = _shell_sums(np.abs(exact) ** 2, size)
    power_kept = _shell_sums(np.abs(rotated) ** 2, size) / exact_power
    signal_kept = _shell_sums((rotated * exact.conj()).real, size) / exact_power
    shells = slice(1, 3 * size // 8 + 1)
    assert np.all(power_kept[shells] >= 0.97), power_kept
    assert np.all(np.abs(signal_kept[shells] - 1.0) <= 0.03), signal_kept


def test_rotation_is_active() -> None:
    """Rotating a point mass at +x by 90 degrees about z (Rz active) puts it at +y."""
    volume = np.zeros((N, N, N))
    volume[N // 2, N // 2, N // 2 + 4] = 1.0  # x = +4
    rz90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rotated = rotate_volumes(volume, rz90)
    assert np.unravel_index(rotated.argmax(), rotated.shape) == (N // 2, N // 2 + 4, N // 2)


@pytest.mark.parametrize("size", [16, 17])
def test_backprojection_is_the_exact_transpose_of_the_bank_rotation(size: int) -> None:
    """``<F u, y> = <u, F^T y>`` for the bank's rotation ``F`` (volumes inside the ball -> half-grid
    spectra, real-space inner products) and its spread-and-backproject transpose; the transpose lives
    inside the ball, so nothing from the corners of a particle's box reaches a reference."""
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(size,) * 3)
    volume[~sphere_mask(size)] = 0.0
    stencil = fourier_stencil(euler_to_matrix(30.0, 40.0, 50.0), size)
    forward = stencil.apply(oversampled_spectra(volume))
    spectra = rng.normal(size=forward.shape) + 1j * rng.normal(size=forward.shape)
    spread = np.zeros(oversampled_shape(size), dtype=np.complex128)
    stencil.spread(spectra, spread)
    transposed = backproject(spread, size)
    lhs = np.sum(half_grid_weights(size) * (forward.conj() * spectra).real) / size**3
    assert np.sum(volume * transposed) == pytest.approx(lhs, rel=1e-9)
    assert not np.any(transposed[~sphere_mask(size)])


def test_flatten_outside_sphere_sets_outside_mean() -> None:
    volume = np.random.default_rng(5).normal(size=(N, N, N))
    flat = flatten_outside_sphere(volume)
    outside = ~sphere_mask(N)
    np.testing.assert_allclose(flat[outside], volume[outside].mean())
    np.testing.assert_array_equal(flat[~outside], volume[~outside])


@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_translation_prior_is_gaussian_in_its_window(sigma: float) -> None:
    log_prior, shift_sq = translation_log_prior(N, sigma)
    assert shift_sq[0, 0, 1] == 1.0 and shift_sq[0, 0, N - 1] == 1.0 and shift_sq[N // 2, 0, 0] == 64.0
    expected = -1.5 * np.log(2 * np.pi * sigma**2) - 2.0 / (2 * sigma**2)
    assert log_prior[0, 1, 1] == pytest.approx(expected, rel=1e-6)
    width = min(N, 2 * int(np.ceil(6 * sigma)) + 1)
    assert np.isinf(log_prior[0, 0, width // 2 + 1]) == (width < N)


def test_translation_prior_limit_and_delta() -> None:
    log_prior, _ = translation_log_prior(N, 3.0, limit_px=2.0)
    assert np.exp(log_prior.astype(np.float64)).sum() == pytest.approx(1.0, rel=1e-5)
    assert np.isinf(log_prior[0, 0, 3]) and np.isfinite(log_prior[0, 1, 1])
    delta, _ = translation_log_prior(N, 0.0)
    assert np.isfinite(delta).sum() == 1 and delta[0, 0, 0] == 0.0
