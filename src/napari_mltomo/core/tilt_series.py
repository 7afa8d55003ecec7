"""A simulated acquisition: tilt series with CTF, dose and noise per tilt, and weighted back-projection
(for ``core.synthetic``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

__all__ = ["PIXEL_SIZE_A_AT_32", "Acquisition", "tilt_angles_deg", "tilt_series_particles"]


@dataclass(frozen=True)
class Acquisition:
    """The tilt range and step (degrees), the pixel size (angstrom) and the exposure per tilt."""

    tilt_deg: float
    step_deg: float
    pixel_a: float
    dose_per_tilt: float = 0.0


def tilt_angles_deg(tilt_deg: float, step_deg: float) -> NDArray[np.float64]:
    """The tilts of a symmetric tilt series: every multiple of ``step_deg`` within ``[-tilt_deg, tilt_deg]``.

    Returns
    -------
    (2m + 1,) ndarray of float64
        Ascending tilts in degrees, 0 included (41 tilts for 60 and 3).
    """
    count = int(np.floor(tilt_deg / step_deg + 1e-9))
    return step_deg * np.arange(-count, count + 1, dtype=np.float64)


_VOLTAGE_V = 300e3
_WAVELENGTH_A = 12.2643 / np.sqrt(_VOLTAGE_V * (1.0 + 0.978466e-6 * _VOLTAGE_V))  # relativistic electrons
_CS_A = 2.7e7  # spherical aberration, 2.7 mm
_AMPLITUDE_CONTRAST = 0.07
_DEFOCUS_A = 3.0e4
_DEFOCUS_JITTER_A = 0.5e4
PIXEL_SIZE_A_AT_32 = 6.0  # pixel size of a 32-voxel box of phantoms; scaled so they keep their physical size


@dataclass(frozen=True)
class _TiltGeometry:
    """Fourier-slice projection and weighted back-projection of ``N``-cubes at a list of tilts about y.

    A projection at tilt ``t`` is stored as its 1-D spectrum along the detector axis ``x' = x cos t +
    z sin t`` for every detector row ``y``: ``P[t, m, y] = sum_{x, z} v(x, y, z) exp(-2 pi i m x' / N)``.
    """

    kernel: NDArray[np.complex64]  # (T*N, N*N): rows (tilt, m), columns (z, x)
    ramp: NDArray[np.float64]  # (T*N, 1): back-projection weight of each row
    frequency_a: NDArray[np.float64]  # (N, N): |(m, ky)| of each projection component, 1/angstrom
    exposure: NDArray[np.float64]  # (T,): electrons per square angstrom before each tilt's own half
    size: int

    @classmethod
    def build(cls, size: int, acquisition: Acquisition) -> _TiltGeometry:
        """The geometry of an ``N``-box at the tilts ``tilt_angles_deg(tilt_deg, step_deg)``."""
        tilts_deg = tilt_angles_deg(acquisition.tilt_deg, acquisition.step_deg)
        tilts = np.deg2rad(tilts_deg)[:, None, None, None]
        m = sfft.fftfreq(size, 1.0 / size)  # signed integer frequencies
        axis = np.arange(size, dtype=np.float64) - size // 2
        detector = axis[None, None, None, :] * np.cos(tilts) + axis[None, None, :, None] * np.sin(tilts)
        phase = (-2.0 * np.pi / size * m[None, :, None, None] * detector).astype(np.float32)
        kernel = np.exp(1j * phase)  # (T, N, N, N) complex64: [tilt, m, z, x]
        # The area each sample stands for in the (kx, kz) plane: |m| step, and a quarter step at m = 0.
        ramp = np.where(m == 0, 0.25, np.abs(m)) * np.deg2rad(acquisition.step_deg) / size**2
        frequency = np.hypot(m[:, None], m[None, :]) / (size * acquisition.pixel_a)
        # dose-symmetric order: 0, then alternately further either way; exposure at mid-tilt
        order = np.lexsort((tilts_deg < 0, np.abs(tilts_deg)))
        exposure = np.empty(len(tilts_deg))
        exposure[order] = (np.arange(len(tilts_deg)) + 0.5) * acquisition.dose_per_tilt
        return cls(
            kernel.reshape(len(tilts_deg) * size, size * size),
            np.tile(ramp, len(tilts_deg))[:, None],
            frequency,
            exposure,
            size,
        )

    @property
    def n_tilts(self) -> int:
        return self.kernel.shape[0] // self.size

    def project(self, volume: NDArray[np.floating]) -> NDArray[np.complex64]:
        """Projection spectra ``(T, N, N)`` indexed ``[tilt, m, y]`` of a ``[z, y, x]`` volume."""
        n = self.size
        columns = np.transpose(volume, (0, 2, 1)).reshape(n * n, n).astype(np.complex64)
        return (self.kernel @ columns).reshape(self.n_tilts, n, n)

    def backproject(self, spectra: NDArray[np.complexfloating]) -> NDArray[np.float32]:
        """Ramp-weighted back-projection of ``(T, N, N)`` spectra ``[tilt, m, y]``, a ``[z, y, x]`` volume."""
        n = self.size
        weighted = (spectra.reshape(-1, n) * self.ramp).astype(np.complex64)
        volume = (self.kernel.conj().T @ weighted).real.reshape(n, n, n)  # [z, x, y]
        return np.ascontiguousarray(np.transpose(volume, (0, 2, 1)), dtype=np.float32)

    def microscope(self, spectra: NDArray[np.complex64], defocus_a: float) -> NDArray[np.complex64]:
        """Multiply every projection's 2-D spectrum by the phase-flipped CTF ``|CTF|`` and, with an
        exposure, by the attenuation of radiation damage."""
        filtered = sfft.fft(spectra, axis=-1) * _ctf_amplitude(self.frequency_a, defocus_a)  # [t, m, ky]
        if self.exposure.any():
            filtered *= _exposure_attenuation(self.frequency_a, self.exposure)
        return sfft.ifft(filtered, axis=-1).astype(np.complex64)

    def noise(self, rng: np.random.Generator) -> NDArray[np.complex128]:
        """Spectra ``[tilt, m, y]`` of unit white noise on every ``N x N`` projection."""
        images = rng.normal(size=(self.n_tilts, self.size, self.size))  # [tilt, y, x']
        return np.swapaxes(sfft.fft(images, axis=-1), 1, 2)


def _ctf_amplitude(frequency_per_a: NDArray[np.float64], defocus_a: float) -> NDArray[np.float64]:
    """``|CTF|`` of an underfocus ``defocus_a`` at spatial frequencies in 1/angstrom."""
    k2 = frequency_per_a**2
    chi = np.pi * _WAVELENGTH_A * defocus_a * k2 - 0.5 * np.pi * _CS_A * _WAVELENGTH_A**3 * k2**2
    contrast = np.sqrt(1.0 - _AMPLITUDE_CONTRAST**2) * np.sin(chi) + _AMPLITUDE_CONTRAST * np.cos(chi)
    return np.abs(contrast)


def _exposure_attenuation(frequency_per_a: NDArray[np.float64], exposure: NDArray[np.float64]) -> NDArray:
    """``(T, N, N)``: ``exp(-D / 2 De(k))`` per tilt exposure ``D`` (Grant and Grigorieff's critical
    exposure ``De``; 1 at ``k = 0``)."""
    with np.errstate(divide="ignore"):
        critical = 0.245 * frequency_per_a**-1.665 + 2.81
    return np.exp(-exposure[:, None, None] / (2.0 * critical[None]))


def tilt_series_particles(
    posed: NDArray[np.float32], acquisition: Acquisition, snr: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Weighted back-projections of CTF-filtered noisy tilt series of the posed phantoms, ``(n, N, N, N)``."""
    geometry = _TiltGeometry.build(posed.shape[-1], acquisition)
    defocus = _DEFOCUS_A + rng.uniform(-_DEFOCUS_JITTER_A, _DEFOCUS_JITTER_A, size=len(posed))
    signal = np.empty_like(posed)
    noise = np.empty_like(posed)
    for i, particle in enumerate(posed):
        signal[i] = geometry.backproject(geometry.microscope(geometry.project(particle), defocus[i]))
        noise[i] = geometry.backproject(geometry.noise(rng))
    noise_scale = np.sqrt(signal.var(dtype=np.float64) / (snr * noise.var(dtype=np.float64)))
    return signal + np.float32(noise_scale) * noise
