"""Numerics behind the result viewers: particles in the reference frame, pMax order, Fourier masks.

A particle with angles ``(rot, tilt, psi)`` and shift ``s`` satisfies ``particle(q) = ref(A (q + s))``
with ``A = euler_to_matrix(rot, tilt, psi)``; in the reference frame it is ``particle(A^T p - s)``, and
its observed Fourier region ``M(A^T k)``. Masks here are full grids, centred (fftshifted: zero frequency
at ``N//2``), ``1`` where the component is observed.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray

from .fourier import AXES3, shift_phases
from .geometry import euler_to_matrix, rotate_volumes, sphere_mask
from .missing import MissingRegion, observed_masks

__all__ = [
    "align_to_reference",
    "class_members",
    "missing_fraction",
    "order_by_pmax",
    "region_mask_volume",
    "rotated_region_mask",
    "shift_volumes",
]


def shift_volumes(volumes: NDArray[np.floating], shifts_px: ArrayLike) -> NDArray[np.float64]:
    """Translate volumes periodically by ``s``: ``out(r) = volume(r - s)`` (sub-pixel, Fourier space).

    Parameters
    ----------
    volumes : (n, N, N, N) ndarray
    shifts_px : (n, 3) array_like
        ``(x, y, z)`` shifts in pixels.

    Returns
    -------
    (n, N, N, N) ndarray of float64
    """
    size = volumes.shape[-1]
    phases = shift_phases(np.asarray(shifts_px).reshape(-1, 3), size)
    spectra = sfft.rfftn(np.asarray(volumes, dtype=np.float64), axes=AXES3) * phases
    return sfft.irfftn(spectra, s=(size,) * 3, axes=AXES3)


def align_to_reference(
    volumes: NDArray[np.floating], angles_deg: ArrayLike, shifts_px: ArrayLike
) -> NDArray[np.float32]:
    """Bring particles into the reference frame: ``aligned(p) = particle(A^T p - s)``.

    Parameters
    ----------
    volumes : (n, N, N, N) ndarray
        The particles.
    angles_deg : (n, 3) array_like
        Xmipp ``(rot, tilt, psi)`` of each particle, degrees.
    shifts_px : (n, 3) array_like
        ``(x, y, z)`` shifts of each particle, pixels.

    Returns
    -------
    (n, N, N, N) ndarray of float32
        Each particle shifted, then rotated by its ``A`` in Fourier space
        (:func:`~napari_mltomo.core.geometry.rotate_volumes`, flat outside the ball).
    """
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3)
    shifted = shift_volumes(volumes, shifts_px)
    matrices = euler_to_matrix(*angles.T)
    aligned = np.empty(shifted.shape, dtype=np.float32)
    for i, (volume, matrix) in enumerate(zip(shifted, matrices, strict=True)):
        aligned[i] = rotate_volumes(volume, matrix)
    return aligned


def order_by_pmax(pmax: ArrayLike) -> NDArray[np.intp]:
    """Indices sorting particles by decreasing ``pMax`` (ties keep table order)."""
    return np.argsort(-np.asarray(pmax, dtype=np.float64), kind="stable")


def class_members(refs: ArrayLike, pmax: ArrayLike, ref: int) -> NDArray[np.intp]:
    """Rows of class ``ref`` (1-based, as in the ``ref`` column), by decreasing ``pMax``."""
    pmax = np.asarray(pmax, dtype=np.float64)
    rows = np.flatnonzero(np.asarray(refs) == ref)
    return rows[order_by_pmax(pmax[rows])]


def region_mask_volume(region: MissingRegion, size: int, *, ball: bool = True) -> NDArray[np.float32]:
    """The observed region of ``region`` on the full centred ``N``-grid (the particle's own frame).

    Parameters
    ----------
    region : MissingRegion
    size : int
        Box size ``N``.
    ball : bool
        Zero beyond the Nyquist sphere ``|k| > N//2`` (as in a run's coverage maps).

    Returns
    -------
    (N, N, N) ndarray of float32
        ``1`` observed, ``0`` missing; zero frequency at ``[N//2, N//2, N//2]``.
    """
    return _centred_mask(region, size, None, ball)


def rotated_region_mask(
    region: MissingRegion, angles_deg: ArrayLike, size: int, *, ball: bool = True
) -> NDArray[np.float32]:
    """The observed region of a particle with angles ``(rot, tilt, psi)`` in the reference frame.

    It is ``M(A^T k)``, where ``M`` is :func:`region_mask_volume` and ``A`` the particle's matrix: the
    missing region of the aligned particle. Its missing axis (``z`` for a wedge) points along ``A e_z``.

    Returns
    -------
    (N, N, N) ndarray of float32
        As :func:`region_mask_volume`.
    """
    matrix = euler_to_matrix(*np.asarray(angles_deg, dtype=np.float64).reshape(3))
    return _centred_mask(region, size, matrix[None], ball)


def missing_fraction(mask: NDArray[np.floating]) -> float:
    """Fraction of the Nyquist ball ``|k| <= N//2`` of a centred mask that is missing (``mask < 0.5``)."""
    size = mask.shape[-1]
    inside = sphere_mask(size)
    return float(np.mean(mask[inside] < 0.5))


def _centred_mask(
    region: MissingRegion, size: int, matrices: NDArray[np.float64] | None, ball: bool
) -> NDArray[np.float32]:
    """:func:`observed_masks` gathered onto the full centred ``N``-grid.

    The rules are even in ``k``, so a frequency with ``kx < 0`` takes the value at ``-k``. The half grid
    is computed for ``N + 2``, whose signed range holds every ``-k`` (``+N/2`` included) without wrapping
    onto the Nyquist plane (a rotated mask is not even on that plane of an ``N`` grid).
    """
    grid = size + 2
    half = observed_masks(region, grid, np.ones((grid, grid, grid // 2 + 1), dtype=bool), matrices)[0]
    axis = np.arange(size) - size // 2
    kz, ky, kx = np.meshgrid(axis, axis, axis, indexing="ij")
    sign = np.where(kx < 0, -1, 1)
    full = half[(sign * kz) % grid, (sign * ky) % grid, sign * kx].astype(np.float32)
    if ball:
        full[~sphere_mask(size)] = 0.0
    return full
