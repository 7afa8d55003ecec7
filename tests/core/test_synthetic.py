"""Synthetic data: near-symmetric phantoms, tilt-series particles, and the per-class orientation scores."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import pytest
import scipy.fft as sfft
from scipy import ndimage
from scipy.optimize import minimize
from scipy.spatial.transform import Rotation

from napari_mltomo.core.fourier import fourier_rescale, resolution_masks, shell_index, signed_frequencies
from napari_mltomo.core.geometry import centred_coordinates, euler_to_matrix, matrix_to_euler
from napari_mltomo.core.missing import MissingRegion, observed_masks
from napari_mltomo.core.synthetic import (
    SyntheticDataset,
    class_orientation_errors_deg,
    make_dataset,
    make_near_symmetric_phantoms,
    make_phantoms,
    orientation_errors_deg,
    tilt_angles_deg,
)

N = 32
AXES3 = (-3, -2, -1)


@lru_cache(maxsize=4)
def _near_symmetric(seed: int) -> tuple[np.ndarray, np.ndarray]:
    phantoms, axes = make_near_symmetric_phantoms(3, N, seed)
    return phantoms.astype(np.float64), axes


def _turned(volume: np.ndarray, matrix: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """``volume(M (r + s))`` on the centred grid, cubic splines, zero outside the box (independent of the
    module's own resampling)."""
    size = volume.shape[-1]
    source = (centred_coordinates(size) + (0.0 if shift is None else shift)) @ matrix.T
    index = source[:, ::-1].T + size // 2
    return ndimage.map_coordinates(volume, index, order=3, mode="grid-constant").reshape(volume.shape)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _band16(volume: np.ndarray) -> np.ndarray:
    """What a 16-voxel internal box keeps of a 32-voxel box: frequencies up to 0.25 cycles/voxel."""
    return fourier_rescale(volume, N // 2)


def _two_fold(axis: np.ndarray) -> np.ndarray:
    return 2.0 * np.outer(axis, axis) - np.eye(3)


# --------------------------------------------------------------------------- near-symmetric phantoms


@pytest.mark.parametrize("size", [16, 32])
def test_near_symmetric_phantoms_are_centred_float32_with_maximum_one(size: int) -> None:
    phantoms, axes = make_near_symmetric_phantoms(3, size, seed=5)
    assert phantoms.shape == (3, size, size, size) and phantoms.dtype == np.float32
    np.testing.assert_allclose(phantoms.max(axis=(1, 2, 3)), 1.0)
    np.testing.assert_allclose(np.linalg.norm(axes, axis=1), 1.0)
    for phantom in phantoms:
        centre = np.array(ndimage.center_of_mass(phantom))
        np.testing.assert_allclose(centre, size // 2, atol=0.1 * size / 32)


def test_near_symmetric_phantoms_are_seeded() -> None:
    first, axes = make_near_symmetric_phantoms(2, 16, seed=3)
    again, axes_again = make_near_symmetric_phantoms(2, 16, seed=3)
    other, _ = make_near_symmetric_phantoms(2, 16, seed=4)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(axes, axes_again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize(("seed", "label"), list(itertools.product([0, 1, 2], [0, 1, 2])))
def test_near_symmetric_phantom_is_two_fold_at_the_internal_band_only(seed: int, label: int) -> None:
    """Turned by its 2-fold, a phantom correlates >= 0.97 with itself up to 0.25 cycles/voxel; near the
    2-fold no rotation of 150-180 degrees brings the full band above 0.93."""
    phantoms, axes = _near_symmetric(seed)
    phantom, axis = phantoms[label], axes[label]
    assert _correlation(_band16(phantom), _band16(_turned(phantom, _two_fold(axis)))) >= 0.97

    def full_band(rotation_vector: np.ndarray) -> float:
        return _correlation(phantom, _turned(phantom, Rotation.from_rotvec(rotation_vector).as_matrix()))

    start = np.pi * axis
    simplex = start + np.vstack([np.zeros(3), 0.05 * np.eye(3)])  # about 3 degrees
    search = minimize(lambda x: -full_band(x), start, method="Nelder-Mead",
                      options={"maxfev": 40, "initial_simplex": simplex})  # fmt: skip
    assert 150.0 <= np.rad2deg(Rotation.from_rotvec(search.x).magnitude()) <= 180.0
    assert -search.fun <= 0.93


@pytest.mark.parametrize(("seed", "pair"), list(itertools.product([0, 1, 2], [(0, 1), (0, 2), (1, 2)])))
def test_near_symmetric_classes_have_different_bodies(seed: int, pair: tuple[int, int]) -> None:
    """With their 2-fold axes aligned (either way) and one turned about it in 30-degree steps, two
    classes correlate below 0.9 up to 0.25 cycles/voxel (each correlates ~0.98 with its own 2-fold)."""
    phantoms, axes = _near_symmetric(seed)
    j, k = pair
    target = _band16(phantoms[j])
    best = -1.0
    for sign, spin in itertools.product((1.0, -1.0), np.deg2rad(np.arange(0.0, 360.0, 30.0))):
        onto_axis, _ = Rotation.align_vectors([axes[j]], [sign * axes[k]])
        matrix = (Rotation.from_rotvec(spin * axes[j]) * onto_axis).as_matrix()  # axis k -> axis j
        best = max(best, _correlation(target, _band16(_turned(phantoms[k], matrix.T))))
    assert best < 0.9


def test_make_dataset_uses_the_chosen_phantoms() -> None:
    data = make_dataset(1, 2, 16, phantoms="near_symmetric", seed=2)
    expected, _ = make_near_symmetric_phantoms(2, 16, seed=2)
    scale = data.phantoms.max() / expected.max()
    np.testing.assert_allclose(data.phantoms, expected * scale, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="phantoms must be"):
        make_dataset(1, 1, 16, phantoms="round")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reconstruction must be"):
        make_dataset(1, 1, 16, reconstruction="sirt")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- particles


def _observed(region: MissingRegion, size: int) -> np.ndarray:
    _, everything = resolution_masks(size, 0.5)
    everything[0, 0, 0] = True
    return observed_masks(region, size, everything)[0]


@lru_cache(maxsize=4)
def _noise_free(reconstruction: str) -> SyntheticDataset:
    return make_dataset(2, 2, N, snr=1e8, phantoms="near_symmetric", reconstruction=reconstruction, seed=3)


@pytest.mark.parametrize(("reconstruction", "least"), [("wedge", 0.999), ("tilt_series", 0.7)])
def test_particle_is_the_template_turned_and_shifted_by_the_truth(reconstruction: str, least: float) -> None:
    """A noise-free particle matches ``template(A (q + s))`` seen through the wedge, clearly better than
    ``template(A^T (q + s))`` or ``template(A (q - s))``; the tilt series also carries the CTF, hence the
    lower bound."""
    data = _noise_free(reconstruction)
    observed = _observed(data.region, N)

    def seen(label: int, matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
        posed = _turned(data.phantoms[label], matrix, shift)
        return sfft.irfftn(sfft.rfftn(posed) * observed, s=(N,) * 3)

    for particle, label, angles, shift in zip(
        data.volumes, data.classes, data.angles_deg, data.shifts_px, strict=True
    ):
        matrix = euler_to_matrix(*angles)
        right = _correlation(particle, seen(label, matrix, shift))
        assert right >= least
        assert _correlation(particle, seen(label, matrix.T, shift)) < right - 0.1
        assert _correlation(particle, seen(label, matrix, -shift)) < right - 0.1


@pytest.mark.parametrize(
    ("reconstruction", "low", "high"), [("wedge", 0.0, 1e-8), ("tilt_series", 1e-4, 0.1)]
)
def test_noise_free_particles_have_the_missing_wedge(reconstruction: str, low: float, high: float) -> None:
    """Mean power per Fourier component beyond +-65 degrees over that within +-55 degrees: exactly 0 for
    the wedge filter, small but not 0 for a back-projected tilt series."""
    data = _noise_free(reconstruction)
    power = np.abs(sfft.rfftn(data.volumes, axes=AXES3)) ** 2
    _, within = resolution_masks(N, 0.5)
    inside = observed_masks(MissingRegion(kind="wedge_y", theta_y0_deg=-55, theta_yf_deg=55), N, within)[0]
    wide = observed_masks(MissingRegion(kind="wedge_y", theta_y0_deg=-65, theta_yf_deg=65), N, within)[0]
    missing = within & ~wide
    ratio = power[:, missing].mean() / power[:, inside].mean()
    assert low <= ratio <= high


@pytest.mark.parametrize("snr", [0.5, 2.0])
def test_tilt_series_snr_is_measured_in_the_reconstructed_box(snr: float) -> None:
    """Same seed, so the same noise: a nearly noise-free set gives the signal, the difference the noise."""
    raw = make_phantoms(2, N, seed=1)
    noisy = make_dataset(5, 2, N, snr=snr, reconstruction="tilt_series", seed=1)
    clean = make_dataset(5, 2, N, snr=1e8, reconstruction="tilt_series", seed=1)
    signal = clean.volumes * (raw.max() / clean.phantoms.max())
    total = noisy.volumes * (raw.max() / noisy.phantoms.max())
    measured = signal.var() / (total - signal).var()
    assert measured == pytest.approx(snr, rel=0.1)


def test_tilt_series_particles_carry_the_ctf_on_the_phantoms_scale() -> None:
    """Shell by shell, a noise-free particle over the posed template (both within the wedge) is ``|CTF|``:
    about 0.1 at the lowest shell (amplitude contrast 0.07), about 1 at its peak (same scale as the
    phantoms), and a dip at the first zero near 0.25 cycles/pixel."""
    data = _noise_free("tilt_series")
    observed = _observed(data.region, N)
    shells = shell_index(N)
    matrix = euler_to_matrix(*data.angles_deg[0])
    template = _turned(data.phantoms[data.classes[0]], matrix, data.shifts_px[0])
    particle, expected = sfft.rfftn(data.volumes[0]), sfft.rfftn(template)
    amplitude = np.array(
        [
            np.sqrt(np.sum(np.abs(particle[mask]) ** 2) / np.sum(np.abs(expected[mask]) ** 2))
            for mask in (observed & (shells == shell) for shell in range(1, N // 2))
        ]
    )  # amplitude[s - 1] is shell s, at s / 32 cycles/pixel
    assert amplitude[0] < 0.3
    assert 0.8 <= amplitude[3:6].max() <= 1.2
    assert amplitude[6:9].min() < 0.6 * amplitude[3:6].max()


@pytest.mark.parametrize(
    ("tilt", "step", "count"), [(60.0, 3.0, 41), (45.0, 2.0, 45), (50.0, 3.0, 33), (60.0, 15.0, 9)]
)
def test_tilt_angles_are_symmetric_multiples_of_the_step(tilt: float, step: float, count: int) -> None:
    tilts = tilt_angles_deg(tilt, step)
    assert len(tilts) == count
    np.testing.assert_allclose(np.diff(tilts), step)
    np.testing.assert_allclose(tilts, -tilts[::-1])
    assert np.abs(tilts).max() <= tilt


@pytest.mark.parametrize(("step", "low", "high"), [(3.0, 0.0, 2.0), (15.0, 4.0, np.inf)])
def test_tilt_step_shows_in_the_noise_spectrum(step: float, low: float, high: float) -> None:
    """Noise back-projected from every tilt lies on the tilt planes: in the xz plane of Fourier space, far
    from the origin, on the 15-degree directions over midway between them, it is much larger for 15-degree
    steps (gaps between the planes) than for 3-degree steps."""
    data = make_dataset(2, 1, 16, snr=1e-8, reconstruction="tilt_series", tilt_step_deg=step, seed=0)
    size = data.volumes.shape[-1]
    power = (np.abs(sfft.rfftn(data.volumes, axes=AXES3)) ** 2).mean(axis=0)
    kz, ky, kx = (np.broadcast_to(k, power.shape) for k in signed_frequencies(size))
    direction = np.rad2deg(np.arctan2(kz, kx))
    plane = (ky == 0) & (np.hypot(kx, kz) >= 0.3 * size) & (np.abs(direction) <= 45.0)
    on = plane & (np.abs((direction + 7.5) % 15.0 - 7.5) <= 2.5)
    between = plane & (np.abs(direction % 15.0 - 7.5) <= 2.5)
    assert low <= power[on].mean() / power[between].mean() <= high


# --------------------------------------------------------------------------- scores


def test_class_orientation_errors_are_gauge_free_per_class() -> None:
    """Class 1: estimates are the truth up to one global rotation -> all 0. Class 2: one of three
    particles flipped by 180 degrees -> two of its three pairs are 180 degrees off, median 180."""
    true = np.array(
        [[10, 20, 30], [50, 60, 70], [-40, 100, 15], [80, 35, -60], [5, 150, 90], [-120, 75, 200]]
    )
    classes = np.array([1, 2, 1, 1, 2, 2])
    global_turn = euler_to_matrix(33.0, 44.0, 55.0)
    flip = euler_to_matrix(0.0, 180.0, 0.0)
    estimated = global_turn @ euler_to_matrix(*true.T)
    estimated[1] = estimated[1] @ flip
    per_class = class_orientation_errors_deg(matrix_to_euler(estimated), true, classes)
    assert list(per_class) == [1, 2]
    np.testing.assert_allclose(per_class[1], 0.0, atol=1e-5)
    assert len(per_class[1]) == 3
    np.testing.assert_allclose(np.sort(per_class[2]), [0.0, 180.0, 180.0], atol=1e-5)
    assert np.median(per_class[2]) == pytest.approx(180.0)
    together = orientation_errors_deg(matrix_to_euler(estimated), true, classes)
    np.testing.assert_array_equal(together, np.concatenate([per_class[1], per_class[2]]))
