"""Fourier helpers: half-grid frequencies, Parseval norms, crop/pad rescaling, resolution masks, FSC.

The forward transform is unnormalised (``scipy.fft.rfftn``), so for a real volume ``f`` of ``V``
voxels with half-grid spectrum ``F``: ``sum_r f(r)**2 = half_grid_weights(N) . |F|**2 / V``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "centred_coverage",
    "fourier_rescale",
    "fsc",
    "fsc_crossing",
    "half_grid_weights",
    "parseval_norms",
    "resolution_from_fsc",
    "resolution_masks",
    "shell_index",
    "shift_phases",
    "signed_frequencies",
]

AXES3 = (-3, -2, -1)


@lru_cache(maxsize=16)
def signed_frequencies(size: int) -> tuple[NDArray[np.float64], ...]:
    """Signed integer frequencies ``(kz, ky, kx)`` of the half grid, broadcastable to its shape.

    Index ``i`` maps to ``i`` if ``i <= (N - 1)//2`` and to ``i - N`` otherwise (the even-N Nyquist
    plane is at ``-N/2``), the convention of the missing-region rules.
    """
    full = np.arange(size, dtype=np.float64)
    full = np.where(full <= (size - 1) // 2, full, full - size)
    kx = full[: size // 2 + 1]
    return full[:, None, None], full[None, :, None], kx[None, None, :]


@lru_cache(maxsize=16)
def frequency_radius(size: int) -> NDArray[np.float64]:
    """Integer-unit frequency radius ``|k|`` on the half grid, shape ``(N, N, N//2+1)``."""
    kz, ky, kx = signed_frequencies(size)
    return np.sqrt(kz**2 + ky**2 + kx**2)


@lru_cache(maxsize=16)
def half_grid_weights(size: int) -> NDArray[np.float64]:
    """Hermitian multiplicity of each half-grid column: 1 for ``kx = 0`` and the even-N Nyquist, else 2.

    Returns
    -------
    (N//2 + 1,) ndarray of float64
        Broadcasts against the last axis of a half-grid spectrum.
    """
    weights = np.full(size // 2 + 1, 2.0)
    weights[0] = 1.0
    if size % 2 == 0:
        weights[-1] = 1.0
    return weights


def parseval_norms(spectra: NDArray[np.complexfloating], size: int) -> NDArray[np.float64]:
    """Real-space sums of squares ``sum_r f(r)**2`` from unnormalised half-grid spectra.

    Parameters
    ----------
    spectra : (..., N, N, N//2+1) complex ndarray
        ``scipy.fft.rfftn`` of real ``N``-cubes.
    size : int
        The box size ``N``.

    Returns
    -------
    (...) ndarray of float64
    """
    power = spectra.real.astype(np.float64) ** 2 + spectra.imag.astype(np.float64) ** 2
    return np.einsum("...zyx,x->...", power, half_grid_weights(size)) / size**3


def resolution_masks(size: int, maxres: float) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Soft low-pass mask and the binary "within maxres, not DC" mask on the half grid.

    Parameters
    ----------
    size : int
        Box size ``N``.
    maxres : float
        Maximum resolution in 1/pixel (``--maxres``, at most 0.5).

    Returns
    -------
    soft : (N, N, N//2+1) ndarray of float64
        1 up to ``r_max - 2``, a raised-cosine edge to ``r_max = min(N//2, floor(maxres N))``, 0 beyond;
        0 at DC.
    observed : (N, N, N//2+1) ndarray of bool
        ``soft > 0``.
    """
    r_max = min(size // 2, int(np.floor(maxres * size)))
    radius = frequency_radius(size)
    edge = 0.5 * (1.0 + np.cos(np.pi * (radius - r_max + 2.0) / 2.0))
    soft = np.where(radius <= r_max - 2, 1.0, np.where(radius < r_max, edge, 0.0))
    soft[0, 0, 0] = 0.0
    return soft, soft > 0


def fourier_rescale(volumes: NDArray[np.floating], size: int) -> NDArray[np.float32]:
    """Crop or zero-pad the centred full spectrum of cubes to a new box size, keeping the mean.

    Parameters
    ----------
    volumes : (..., N0, N0, N0) real ndarray
    size : int
        The new box size ``N``; ``N`` and ``N0`` must have the same parity.

    Returns
    -------
    (..., N, N, N) ndarray of float32
    """
    old = volumes.shape[-1]
    if size == old:
        return np.asarray(volumes, dtype=np.float32)
    if (size - old) % 2:
        raise ValueError(f"box sizes {old} and {size} differ in parity")
    spectrum = sfft.fftshift(sfft.fftn(volumes, axes=AXES3), axes=AXES3)
    lead = spectrum.shape[:-3]
    if size < old:
        window = _cropped_spectrum(spectrum, size)
    else:
        window = np.zeros((*lead, size, size, size), dtype=spectrum.dtype)
        start = size // 2 - old // 2
        window[..., start : start + old, start : start + old, start : start + old] = spectrum
    out = sfft.ifftn(sfft.ifftshift(window, axes=AXES3), axes=AXES3).real
    return (out * (size**3 / old**3)).astype(np.float32)


def _cropped_spectrum(spectrum: NDArray[np.complexfloating], size: int) -> NDArray[np.complexfloating]:
    """Centred crop of an fftshifted full spectrum; for even ``size`` the ``+N/2`` plane is added onto
    the ``-N/2`` plane (zero-padding splits a Nyquist coefficient between the two, so pad then crop
    is the identity)."""
    start = spectrum.shape[-1] // 2 - size // 2
    window = slice(start, start + size + 1 - size % 2)
    cropped = spectrum[..., window, window, window]
    if size % 2 == 0:
        for axis in AXES3:
            moved = np.moveaxis(cropped, axis, 0)
            folded = moved[:-1].copy()
            folded[0] += moved[-1]
            cropped = np.moveaxis(folded, 0, axis)
    return cropped


@lru_cache(maxsize=16)
def shell_index(size: int) -> NDArray[np.int64]:
    """Shell number ``round(|k|)`` of each half-grid voxel (Nyquist at +N/2), ``-1`` beyond N/2."""
    full = np.arange(size, dtype=np.float64)
    full = np.where(full <= size // 2, full, full - size)
    kx = full[: size // 2 + 1]
    radius = np.sqrt(full[:, None, None] ** 2 + full[None, :, None] ** 2 + kx[None, None, :] ** 2)
    shells = np.rint(radius).astype(np.int64)
    shells[radius > size / 2] = -1
    return shells


def fsc(
    half1: NDArray[np.complexfloating],
    half2: NDArray[np.complexfloating],
    size: int,
) -> NDArray[np.float64]:
    """Fourier shell correlation of two half-grid spectra.

    Parameters
    ----------
    half1, half2 : (N, N, N//2+1) complex ndarray
        Spectra of the two half-set reconstructions (already cross-weighted if missing data are used).
    size : int
        Box size ``N``.

    Returns
    -------
    (N//2 + 1,) ndarray of float64
        FSC of shells 0..N//2; 0 where the cross term is 0.
    """
    shells = shell_index(size)
    inside = shells >= 0
    weights = np.broadcast_to(half_grid_weights(size), shells.shape)[inside]
    labels = shells[inside]
    a, b = half1[inside], half2[inside]
    n_shells = size // 2 + 1
    cross = np.bincount(labels, weights * (a.real * b.real + a.imag * b.imag), n_shells)
    power1 = np.bincount(labels, weights * np.abs(a) ** 2, n_shells)
    power2 = np.bincount(labels, weights * np.abs(b) ** 2, n_shells)
    denominator = np.sqrt(power1 * power2)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(cross != 0, cross / denominator, 0.0)
    return np.nan_to_num(curve)


def fsc_crossing(curve: NDArray[np.float64]) -> float:
    """Where the FSC first drops below 0.5 beyond shell 0, in shells, interpolated linearly between the
    shells on either side (the last shell if it never does)."""
    below = np.nonzero(curve[1:] < 0.5)[0]
    if below.size == 0:
        return float(len(curve) - 1)
    shell = int(below[0]) + 1
    inside, outside = curve[shell - 1], curve[shell]
    return shell - 1 + (float((inside - 0.5) / (inside - outside)) if inside > 0.5 else 0.0)


def resolution_from_fsc(curve: NDArray[np.float64]) -> int:
    """Last shell before the FSC first drops below 0.5 (at least 1), as a shell number."""
    return max(1, int(fsc_crossing(curve)))


def centred_coverage(half: NDArray[np.float64], box_size: int) -> NDArray[np.float32]:
    """Half-grid maps ``(K, N, N, N//2+1)`` of a real, even quantity (Fourier coverage) -> full grids
    ``(K, N0, N0, N0)``, fftshifted (zero frequency at ``N0//2``), zero-padded to ``box_size`` ``N0``.

    The full grid follows from Hermitian symmetry. Frequencies beyond the internal Nyquist are not
    observed, so padding with zeros puts the map on the input box.
    """
    size = half.shape[1]
    mirror = (-np.arange(size)) % size
    upper = np.arange(half.shape[-1], size)
    reflected = half[:, mirror][:, :, mirror][..., size - upper]
    full = np.fft.fftshift(np.concatenate([half, reflected], axis=-1), axes=(1, 2, 3))
    start = box_size // 2 - size // 2
    window = slice(start, start + size)
    padded = np.zeros((len(half), box_size, box_size, box_size), dtype=np.float32)
    padded[:, window, window, window] = full
    return padded


def shift_phases(shift_px: ArrayLike, size: int) -> NDArray[np.complex128]:
    """Half-grid phase factors ``(..., N, N, N//2+1)`` that translate volumes by ``shift_px`` =
    ``(..., 3)`` ``(x, y, z)`` pixels when multiplied into their ``rfftn``: ``f(r) -> f(r - s)``."""
    shift = np.asarray(shift_px, dtype=np.float64)
    x, y, z = (shift[..., axis, None, None, None] for axis in range(3))
    full = np.fft.fftfreq(size)
    kz, ky, kx = full[:, None, None], full[None, :, None], np.fft.rfftfreq(size)[None, None, :]
    return np.exp(-2j * np.pi * (kx * x + ky * y + kz * z))
