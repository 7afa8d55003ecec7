"""Xmipp ZYZ Euler angles, rotation matrices and volume resampling.

Conventions (see ``docs/conventions.md``): arrays are indexed ``[z, y, x]``; the logical, centred
coordinates of voxel ``[k, i, j]`` of an ``N``-box are ``(x, y, z) = (j - N//2, i - N//2, k - N//2)``.
``E(rot, tilt, psi)`` is Xmipp's matrix; the angles written for a particle map it onto its reference,
``particle(q) = reference(E (q + s))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "TrilinearStencil",
    "euler_to_matrix",
    "flatten_outside_sphere",
    "matrix_to_euler",
    "rotate_volumes",
    "rotation_stencil",
    "sphere_mask",
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


@dataclass(frozen=True)
class TrilinearStencil:
    """Precomputed trilinear resampling of an ``N``-cube: 8 source voxels and weights per output voxel.

    One stencil serves every volume rotated by the same matrix, so the coordinate work is done once.
    """

    indices: NDArray[np.intp]  # (8, N**3) flat source indices
    weights: NDArray[np.float32]  # (8, N**3)
    outside: NDArray[np.bool_]  # (N**3,) source point outside the box
    size: int

    def apply(self, volumes: NDArray[np.floating], fill: NDArray[np.floating] | float) -> NDArray:
        """Resample ``(..., N, N, N)`` volumes; voxels whose source is outside take ``fill`` (per volume)."""
        lead = volumes.shape[:-3]
        flat = volumes.reshape(*lead, -1)
        out = np.zeros((*lead, self.size**3), dtype=np.result_type(volumes.dtype, np.float32))
        for corner in range(8):
            out += self.weights[corner] * np.take(flat, self.indices[corner], axis=-1)
        fill_values = np.broadcast_to(np.asarray(fill, dtype=out.dtype), lead)
        out[..., self.outside] = fill_values[..., None]
        return out.reshape(volumes.shape)


def rotation_stencil(matrix: ArrayLike, size: int) -> TrilinearStencil:
    """Stencil of ``Rot[M] f (r) = f(M^T r)``: the active rotation of a density by ``M``.

    Parameters
    ----------
    matrix : (3, 3) array_like
        Rotation acting on centred ``(x, y, z)`` coordinates.
    size : int
        Box size ``N``; a source point outside ``[-N//2, N-1-N//2]`` on any axis is "outside".
    """
    source = centred_coordinates(size) @ np.asarray(matrix, dtype=np.float64)  # rows: (M^T r)^T
    index = source[:, ::-1].T + size // 2  # (3, N**3): z, y, x array indices
    outside = np.any((index < -1e-9) | (index > size - 1 + 1e-9), axis=0)
    np.clip(index, 0.0, size - 1, out=index)
    low = np.minimum(np.floor(index), size - 2)
    frac = (index - low).astype(np.float32)
    base = (low[0] * size * size + low[1] * size + low[2]).astype(np.intp)
    indices, weights = [], []
    for dz, dy, dx in np.ndindex(2, 2, 2):
        indices.append(base + (dz * size * size + dy * size + dx))
        weights.append(
            (frac[0] if dz else 1 - frac[0])
            * (frac[1] if dy else 1 - frac[1])
            * (frac[2] if dx else 1 - frac[2])
        )
    return TrilinearStencil(np.stack(indices), np.stack(weights), outside, size)


def rotate_volumes(
    volumes: NDArray[np.floating],
    matrix: ArrayLike,
    fill: NDArray[np.floating] | float | None = None,
) -> NDArray:
    """Rotate ``(..., N, N, N)`` volumes by ``matrix`` with trilinear interpolation.

    ``fill`` defaults to each volume's corner voxel ``f[0, 0, 0]``, the convention for references.
    """
    fill_values = volumes[..., 0, 0, 0] if fill is None else fill
    return rotation_stencil(matrix, volumes.shape[-1]).apply(volumes, fill_values)


@lru_cache(maxsize=16)
def sphere_mask(size: int) -> NDArray[np.bool_]:
    """Ball ``|r|**2 <= (N//2)**2`` touching the faces of an ``N``-cube, shape ``(N, N, N)``."""
    radius2 = np.sum(centred_coordinates(size) ** 2, axis=1).reshape(size, size, size)
    return radius2 <= (size // 2) ** 2


def flatten_outside_sphere(volumes: NDArray[np.floating]) -> NDArray:
    """Set every voxel outside the ball to the mean of those voxels (per volume, ``(..., N, N, N)``)."""
    outside = ~sphere_mask(volumes.shape[-1])
    out = np.array(volumes, copy=True)
    out[..., outside] = out[..., outside].mean(axis=-1, keepdims=True)
    return out
