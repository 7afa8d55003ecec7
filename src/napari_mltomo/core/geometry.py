"""Xmipp ZYZ Euler angles, rotation matrices and volume resampling.

Conventions (see ``docs/conventions.md``): arrays are indexed ``[z, y, x]``; the logical, centred
coordinates of voxel ``[k, i, j]`` of an ``N``-box are ``(x, y, z) = (j - N//2, i - N//2, k - N//2)``.
``E(rot, tilt, psi)`` is Xmipp's matrix; the angles written for a particle map it onto its reference,
``particle(q) = reference(E (q + s))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from .fourier import half_grid_weights, signed_frequencies

__all__ = [
    "OVERSAMPLING",
    "FourierStencil",
    "backproject",
    "ball_volumes",
    "centre_phase",
    "euler_to_matrix",
    "flatten_outside_sphere",
    "fourier_stencil",
    "frequency_major",
    "masks_of_rotated",
    "matrix_to_euler",
    "oversampled_masks",
    "oversampled_shape",
    "oversampled_spectra",
    "rotate_masks",
    "rotate_volumes",
    "sphere_mask",
    "zero_outside_sphere",
]


def euler_to_matrix(rot_deg: ArrayLike, tilt_deg: ArrayLike, psi_deg: ArrayLike) -> NDArray[np.float64]:
    """Xmipp ZYZ rotation matrices ``E(rot, tilt, psi) = Rz(-psi) Ry(-tilt) Rz(-rot)``.

    Parameters
    ----------
    rot_deg, tilt_deg, psi_deg : array_like of float
        Euler angles in degrees; broadcast against each other.

    Returns
    -------
    (..., 3, 3) ndarray of float64
        Matrices acting on ``(x, y, z)`` column vectors.
    """
    rot, tilt, psi = (np.deg2rad(np.asarray(a, dtype=np.float64)) for a in (rot_deg, tilt_deg, psi_deg))
    rot, tilt, psi = np.broadcast_arrays(rot, tilt, psi)
    cr, sr = np.cos(rot), np.sin(rot)
    ct, st = np.cos(tilt), np.sin(tilt)
    cp, sp = np.cos(psi), np.sin(psi)
    rows = [
        [cp * ct * cr - sp * sr, cp * ct * sr + sp * cr, -cp * st],
        [-sp * ct * cr - cp * sr, -sp * ct * sr + cp * cr, sp * st],
        [st * cr, st * sr, ct],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_euler(matrices: ArrayLike) -> NDArray[np.float64]:
    """Xmipp ZYZ Euler angles of rotation matrices, the inverse of :func:`euler_to_matrix`.

    Parameters
    ----------
    matrices : (..., 3, 3) array_like
        Proper rotation matrices.

    Returns
    -------
    (..., 3) ndarray of float64
        ``(rot, tilt, psi)`` in degrees with ``tilt`` in [0, 180]. At the poles (``sin tilt ~ 0``)
        ``psi`` is set to 0 and the whole in-plane angle is carried by ``rot``.
    """
    m = np.asarray(matrices, dtype=np.float64)
    tilt = np.arccos(np.clip(m[..., 2, 2], -1.0, 1.0))
    sin_tilt = np.sqrt(m[..., 0, 2] ** 2 + m[..., 1, 2] ** 2)
    regular = sin_tilt > 1e-6
    rot = np.where(regular, np.arctan2(m[..., 2, 1], m[..., 2, 0]), 0.0)
    psi = np.where(regular, np.arctan2(m[..., 1, 2], -m[..., 0, 2]), 0.0)
    # At tilt 0, E = Rz(-(rot + psi)); at tilt 180 the first row is -(cos, sin)(rot - psi).
    # Put the whole angle in rot with psi = 0.
    sign = np.where(m[..., 2, 2] > 0, 1.0, -1.0)
    pole_rot = np.arctan2(sign * m[..., 0, 1], sign * m[..., 0, 0])
    rot = np.where(regular, rot, pole_rot)
    return np.rad2deg(np.stack([rot, tilt, psi], axis=-1))


@lru_cache(maxsize=16)
def centred_coordinates(size: int) -> NDArray[np.float64]:
    """Centred ``(x, y, z)`` coordinates of every voxel of an ``N``-cube, shape ``(N**3, 3)``.

    Rows follow the C order of a ``[z, y, x]`` array. The array is cached: do not modify it.
    """
    axis = np.arange(size, dtype=np.float64) - size // 2
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    coordinates = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    coordinates.flags.writeable = False
    return coordinates


#: Zero-padding factor of the spectra that rotations sample: a 2x oversampled grid keeps trilinear
#: interpolation in Fourier space within about 1% of the exact power in every shell up to Nyquist.
OVERSAMPLING = 2


@dataclass(frozen=True)
class FourierStencil:
    """Trilinear sampling of a 2x oversampled half-grid spectrum at the rotated frequencies of an
    ``N``-box, inside the Nyquist sphere: a sparse ``(P, F)`` matrix with 8 weights per output frequency.

    Built once per rotation and applied to every volume rotated by it (all classes, half sets, regions).
    """

    sampling: sparse.csr_array  # (P, F) float32: the 8 corners of each rotated frequency
    conjugate: NDArray[np.bool_]  # (P,) sampled at the Hermitian mirror point
    targets: NDArray[np.intp]  # (P,) flat indices into the (N, N, N//2+1) half grid
    size: int

    def apply(self, oversampled: NDArray[np.complexfloating]) -> NDArray[np.complexfloating]:
        """Rotated ``rfftn`` spectra ``(..., N, N, N//2+1)`` from :func:`oversampled_spectra` output,
        in the precision of the input."""
        lead = oversampled.shape[:-3]
        return self.apply_columns(frequency_major(oversampled)).reshape(*lead, *self._half_shape)

    def apply_columns(
        self, columns: NDArray[np.complexfloating], *, conjugate: bool = False
    ) -> NDArray[np.complexfloating]:
        """:meth:`apply` for spectra in :func:`frequency_major` layout ``(F, L)``, where the 8 corners
        of a frequency are read for all ``L`` volumes at once; ``(L, N, N, N//2+1)``, or their complex
        conjugates with ``conjugate``."""
        real = columns.view(columns.real.dtype)  # (F, 2L): real and imaginary parts side by side
        values = (self.sampling @ real).astype(real.dtype, copy=False).view(columns.dtype)  # (P, L)
        phase = centre_phase(self.size).ravel()[self.targets]
        mirrored = self.conjugate != conjugate  # conj(conj(v) p) = v conj(p)
        np.conjugate(values, out=values, where=mirrored[:, None])
        values *= (phase.conj() if conjugate else phase)[:, None]
        out = np.zeros((columns.shape[1], int(np.prod(self._half_shape))), dtype=columns.dtype)
        out[:, self.targets] = values.T
        return out.reshape(-1, *self._half_shape)

    def spread(self, spectra: NDArray[np.complexfloating], out: NDArray[np.complex128]) -> None:
        """Add the adjoint of :meth:`apply` to ``out``, the ``(..., 2N, 2N, N+1)`` oversampled half grid.

        ``spectra`` are ``(..., N, N, N//2+1)`` half-grid spectra; the adjoint is taken for the real
        inner product of the volumes they stand for (Parseval: half-grid multiplicity over ``N**3``),
        so that :func:`backproject` of ``out`` is the exact transpose of the forward rotation.
        """
        lead = spectra.shape[:-3]
        scale = (half_grid_weights(self.size).astype(np.float64) / self.size**3)[None, None, :]
        weighted = spectra.reshape(*lead, -1)[..., self.targets] * np.conj(
            (centre_phase(self.size) * scale).ravel()[self.targets]
        )
        np.conjugate(weighted, out=weighted, where=self.conjugate)
        if not out.flags.c_contiguous:
            raise ValueError("spread needs a C-contiguous out array to add into")
        adjoint = self._adjoint
        flat = out.reshape(-1, out.shape[-3] * out.shape[-2] * out.shape[-1])
        rows = np.ascontiguousarray(weighted.reshape(-1, weighted.shape[-1]))
        for volume, values in zip(flat, rows, strict=True):
            volume += (adjoint @ values.view(np.float64).reshape(-1, 2)).view(np.complex128)[:, 0]

    @cached_property
    def _adjoint(self) -> sparse.csc_array:
        """The transpose of :attr:`sampling` in float64, ``(F, P)``, built once per stencil."""
        return self.sampling.T.astype(np.float64)

    @property
    def _half_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.size // 2 + 1)


def frequency_major(oversampled: NDArray[np.complexfloating]) -> NDArray[np.complexfloating]:
    """``(..., 2N, 2N, N+1)`` oversampled spectra as ``(F, L)`` columns, ``L`` the number of volumes,
    for :meth:`FourierStencil.apply_columns` (a copy unless there is one volume)."""
    flat = oversampled.reshape(-1, int(np.prod(oversampled.shape[-3:])))
    return np.ascontiguousarray(flat.T)


def fourier_stencil(matrix: ArrayLike, size: int) -> FourierStencil:
    """Stencil of the rotation ``Rot[M] f (r) = f(M^T r)`` in Fourier space: ``F'(k) = F(M^T k)``.

    Parameters
    ----------
    matrix : (3, 3) array_like
        Rotation acting on centred ``(x, y, z)`` coordinates.
    size : int
        Box size ``N``. Frequencies on or beyond the Nyquist sphere ``|k| >= N/2`` are set to zero.
    """
    targets, frequencies = _frequencies_inside(size)
    points = np.asarray(matrix, dtype=np.float64).T @ frequencies  # (3, P): x, y, z on the fine grid
    conjugate = points[0] < 0
    points *= np.where(conjugate, -1.0, 1.0)  # F(-p) = conj(F(p)) for a real volume
    fine = OVERSAMPLING * size
    low = np.floor(points)
    np.minimum(low[0], fine // 2 - 1, out=low[0])  # x = fine/2 is the last column of the half grid
    frac = (points - low).astype(np.float32)
    low = low.astype(np.int32)
    columns = fine // 2 + 1
    x = np.stack([low[0], low[0] + 1])
    y = _wrapped_neighbours(low[1], fine) * columns
    z = _wrapped_neighbours(low[2], fine) * (fine * columns)
    wx, wy, wz = (np.stack([1 - f, f]) for f in frac)
    # The 8 corners of each point in (dz, dy, dx) order, dx fastest, then point-major for the matrix.
    indices = ((z[:, None, None] + y[None, :, None]) + x[None, None]).reshape(8, -1).T
    weights = ((wz[:, None] * wy[None, :])[:, :, None] * wx[None, None]).reshape(8, -1).T
    pointers = np.arange(0, indices.size + 1, 8, dtype=np.int32)
    sampling = sparse.csr_array(
        (weights.ravel(), indices.ravel(), pointers), shape=(len(targets), fine * fine * columns)
    )
    return FourierStencil(sampling, conjugate, targets, size)


def _wrapped_neighbours(low: NDArray[np.int32], fine: int) -> NDArray[np.int32]:
    """The two grid neighbours ``low, low + 1`` of coordinates in ``(-fine/2, fine/2)`` as indices of a
    ``fine``-periodic axis, ``(2, P)``."""
    pair = np.stack([low, low + 1])
    pair += np.where(pair < 0, np.int32(fine), np.int32(0))
    return pair


@lru_cache(maxsize=16)
def _frequencies_inside(size: int) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """The half-grid indices inside the Nyquist sphere ``|k| < N/2`` and their ``(x, y, z)`` frequencies
    on the oversampled grid, ``(3, P)``. Cached: do not modify."""
    kz, ky, kx = (np.broadcast_to(c, (size, size, size // 2 + 1)) for c in signed_frequencies(size))
    targets = np.nonzero((kx**2 + ky**2 + kz**2 < (size / 2) ** 2).ravel())[0]
    frequencies = OVERSAMPLING * np.stack([kx.ravel()[targets], ky.ravel()[targets], kz.ravel()[targets]])
    targets.flags.writeable = frequencies.flags.writeable = False
    return targets, frequencies


def oversampled_shape(size: int) -> tuple[int, int, int]:
    """Shape ``(2N, 2N, N+1)`` of the oversampled half grid of an ``N``-box."""
    fine = OVERSAMPLING * size
    return fine, fine, fine // 2 + 1


def oversampled_spectra(volumes: NDArray[np.floating]) -> NDArray[np.complexfloating]:
    """Spectra of ``(..., N, N, N)`` volumes zero-padded to ``2N``, ready for :class:`FourierStencil`.

    The volumes should vanish outside the ball (see :func:`zero_outside_sphere`), so that no rotation
    moves density out of the box. They are divided by the Fourier transform of the trilinear kernel
    (``sinc**2`` per axis) so that the interpolation in Fourier space does not attenuate the edges, and
    the phase origin is put on the centre voxel ``N//2``.

    Returns
    -------
    (..., 2N, 2N, N+1) complex ndarray
        Half-grid spectra on the oversampled grid; complex64 for float32 input, else complex128.
    """
    size = volumes.shape[-1]
    fine = OVERSAMPLING * size
    corrected = volumes * _gridding_correction(size)
    spectra = sfft.rfft(corrected, n=fine, axis=-1)
    spectra = sfft.fft(spectra, n=fine, axis=-2)
    spectra = sfft.fft(spectra, n=fine, axis=-3)
    phase = np.exp(2j * np.pi * (size // 2) * np.fft.fftfreq(fine)).astype(spectra.dtype)
    spectra *= phase[:, None, None] * phase[None, :, None] * phase[None, None, : fine // 2 + 1]
    return spectra


def backproject(oversampled: NDArray[np.complexfloating], size: int) -> NDArray[np.float64]:
    """Volumes ``(..., N, N, N)`` from spread spectra: the transpose of :func:`oversampled_spectra`.

    Together with :meth:`FourierStencil.spread` this is the exact adjoint of the rotation that builds
    the reference bank, which keeps the reference update an ascent step of the likelihood.
    """
    fine = OVERSAMPLING * size
    full = np.zeros((*oversampled.shape[:-1], fine), dtype=np.complex128)
    full[..., : fine // 2 + 1] = oversampled
    phase = np.exp(-2j * np.pi * (size // 2) * np.fft.fftfreq(fine))
    full *= phase[:, None, None] * phase[None, :, None] * phase[None, None, :]
    volumes = sfft.ifftn(full, axes=(-3, -2, -1), norm="forward")[..., :size, :size, :size].real
    volumes = volumes * _gridding_correction(size)
    volumes[..., ~sphere_mask(size)] = 0.0
    return volumes


@lru_cache(maxsize=16)
def centre_phase(size: int) -> NDArray[np.complex64]:
    """``exp(-2 pi i k . c / N)`` with ``c = N//2``: spectra about the centre voxel -> ``rfftn``'s."""
    kz, ky, kx = signed_frequencies(size)
    return np.exp(-2j * np.pi * (size // 2) * (kx + ky + kz) / size).astype(np.complex64)


@lru_cache(maxsize=16)
def _gridding_correction(size: int) -> NDArray[np.float32]:
    """``1 / (sinc**2(x / 2N) sinc**2(y / 2N) sinc**2(z / 2N))`` on the centred ``N``-box."""
    axis = 1.0 / np.sinc((np.arange(size) - size // 2) / (OVERSAMPLING * size)) ** 2
    return (axis[:, None, None] * axis[None, :, None] * axis[None, None, :]).astype(np.float32)


def oversampled_masks(masks: NDArray[np.floating]) -> NDArray[np.complexfloating]:
    """Oversampled spectra of ``(..., N, N, N//2+1)`` Fourier masks for :func:`rotate_masks`.

    A mask is treated as the spectrum of a point-spread function at the centre voxel (the whole box
    kept), so that it is interpolated by the same stencil as the spectra it multiplies; the ratio of a
    rotated masked spectrum to its rotated mask is then unbiased at the mask's edges.
    """
    size = masks.shape[-2]
    return oversampled_spectra(sfft.irfftn(masks * centre_phase(size), s=(size,) * 3, axes=(-3, -2, -1)))


def rotate_masks(oversampled: NDArray[np.complexfloating], stencil: FourierStencil) -> NDArray[np.float64]:
    """Rotated Fourier masks ``(..., N, N, N//2+1)`` from :func:`oversampled_masks` output (real,
    fractional at the edges)."""
    return masks_of_rotated(stencil.apply(oversampled))


def masks_of_rotated(rotated: NDArray[np.complexfloating]) -> NDArray[np.float64]:
    """The Fourier masks ``(..., N, N, N//2+1)`` that a stencil's output stands for, when its input was
    :func:`oversampled_masks` output (:func:`rotate_masks` without the stencil)."""
    return (rotated * centre_phase(rotated.shape[-2]).conj()).real.astype(np.float64)


def rotate_volumes(volumes: NDArray[np.floating], matrix: ArrayLike) -> NDArray[np.float64]:
    """Rotate ``(..., N, N, N)`` volumes by ``matrix`` (``Rot[M] f (r) = f(M^T r)``) in Fourier space.

    Each volume is first flattened outside the ball (:func:`flatten_outside_sphere`); that outside
    value fills the rotated volume outside the ball, as it does for references. Frequencies beyond the
    Nyquist sphere are removed.

    Returns
    -------
    (..., N, N, N) ndarray of float64
    """
    size = volumes.shape[-1]
    inside, outside_value = zero_outside_sphere(volumes)
    spectra = fourier_stencil(matrix, size).apply(oversampled_spectra(inside))
    rotated = sfft.irfftn(spectra, s=(size,) * 3, axes=(-3, -2, -1)).astype(np.float64)
    rotated[..., ~sphere_mask(size)] = 0.0
    return rotated + outside_value[..., None, None, None]


@lru_cache(maxsize=16)
def sphere_mask(size: int) -> NDArray[np.bool_]:
    """Ball ``|r|**2 <= (N//2)**2`` touching the faces of an ``N``-cube, shape ``(N, N, N)``."""
    radius2 = np.sum(centred_coordinates(size) ** 2, axis=1).reshape(size, size, size)
    return radius2 <= (size // 2) ** 2


def zero_outside_sphere(
    volumes: NDArray[np.floating],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Subtract from ``(..., N, N, N)`` volumes the mean outside the ball, and zero them there.

    Returns
    -------
    inside : (..., N, N, N) ndarray of float64
        Zero outside the ball; ``inside + outside_value`` is :func:`flatten_outside_sphere`'s result.
    outside_value : (...) ndarray of float64
        The mean of each volume outside the ball.
    """
    outside = ~sphere_mask(volumes.shape[-1])
    outside_value = np.asarray(volumes, dtype=np.float64)[..., outside].mean(axis=-1)
    inside = np.array(volumes, dtype=np.float64, copy=True) - outside_value[..., None, None, None]
    inside[..., outside] = 0.0
    return inside, outside_value


def ball_volumes(spectra: NDArray[np.complexfloating]) -> NDArray[np.float64]:
    """The ``(..., N, N, N)`` volumes of half spectra ``(..., N, N, N//2+1)``, zeroed outside the ball
    (:func:`zero_outside_sphere`), as rotated copies of them are."""
    size = spectra.shape[-2]
    return zero_outside_sphere(sfft.irfftn(spectra, s=(size,) * 3, axes=(-3, -2, -1)))[0]


def flatten_outside_sphere(volumes: NDArray[np.floating]) -> NDArray:
    """Set every voxel outside the ball to the mean of those voxels (per volume, ``(..., N, N, N)``)."""
    outside = ~sphere_mask(volumes.shape[-1])
    out = np.array(volumes, copy=True)
    out[..., outside] = out[..., outside].mean(axis=-1, keepdims=True)
    return out
