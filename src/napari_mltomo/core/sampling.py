"""Orientation grids: Xmipp's icosahedral direction grid, in-plane angles, perturbations.

Directions are unit ``(x, y, z)`` vectors. Every orientation is the matrix ``A`` of a particle
(Xmipp ZYZ, see :mod:`napari_mltomo.core.geometry`) with its ``(rot, tilt, psi)`` in degrees.
:func:`local_neighbourhoods` restricts a grid to the neighbourhood of each particle's input angles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .geometry import euler_to_matrix, matrix_to_euler
from .symmetry import asymmetric_unit

__all__ = [
    "SMALL_ANGLE_DEG",
    "OrientationGrid",
    "local_neighbourhoods",
    "orientation_grid",
    "orientation_order",
    "perturb_grid",
    "perturbation_matrix",
    "random_orientations",
    "sphere_directions",
]

SMALL_ANGLE_DEG = 2.75
"""Offset added to every psi so that no orientation is exactly grid aligned (Xmipp SMALLANGLE)."""

_ICOSAHEDRON_EDGE_RAD = 1.107149  # angle between adjacent icosahedron vertices (63.435 deg)
_ROUNDING_TOLERANCE = 1e-9  # keeps points on tilt limits (e.g. z = 0) and makes 360/7.2 -> 50 psi

# (p, q, r) triples of the side lists S and E (ALGORITHM.md section 6.1): path p -> q <- r.
_S_TRIPLES = (
    (0, 1, 6), (0, 2, 7), (0, 3, 8), (0, 4, 9), (0, 5, 10),
    (11, 10, 5), (11, 9, 4), (11, 8, 3), (11, 7, 2), (11, 6, 1),
)  # fmt: skip
_E_TRIPLES = (
    (0, 2, 6), (0, 3, 7), (0, 4, 8), (0, 5, 9), (0, 1, 10),
    (11, 9, 5), (11, 8, 4), (11, 7, 3), (11, 6, 2), (11, 10, 1),
)  # fmt: skip


@dataclass(frozen=True)
class OrientationGrid:
    """A list of particle orientations.

    Attributes
    ----------
    angles_deg : (n, 3) ndarray of float64
        ``(rot, tilt, psi)`` of each matrix in degrees, Xmipp ZYZ convention.
    matrices : (n, 3, 3) ndarray of float64
        ``A = E(rot, tilt, psi)``, acting on ``(x, y, z)`` column vectors.
    """

    angles_deg: NDArray[np.float64]
    matrices: NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.angles_deg)
        if self.angles_deg.shape != (n, 3) or self.matrices.shape != (n, 3, 3):
            raise ValueError(
                "OrientationGrid needs angles_deg of shape (n, 3) and matrices of shape (n, 3, 3), "
                f"got {self.angles_deg.shape} and {self.matrices.shape}"
            )

    def __len__(self) -> int:
        return len(self.angles_deg)


def sphere_directions(ang_deg: float) -> NDArray[np.float64]:
    """Xmipp's icosahedral geodesic grid of directions covering the whole sphere.

    Parameters
    ----------
    ang_deg : float
        Angular sampling ``--ang`` in degrees, ``0 < ang_deg <~ 42``.

    Returns
    -------
    (n, 3) ndarray of float64
        Unit ``(x, y, z)`` vectors in Xmipp's order: ``-z``, ``+z``, the subdivided icosahedron
        edges, then the face interiors. There are ``10 (m - 1)**2 + 2`` of them, with
        ``m = round(1.107149 / ang) + 1`` points per icosahedron edge.

    Raises
    ------
    ValueError
        If ``ang_deg`` is not positive or so large that an edge is split into fewer than 2 parts.
    """
    if not ang_deg > 0:
        raise ValueError(f"--ang must be a positive angle in degrees, got {ang_deg}")
    n_sub = round(_ICOSAHEDRON_EDGE_RAD / math.radians(ang_deg)) + 1
    if n_sub < 3:
        raise ValueError(
            f"--ang {ang_deg} is too coarse: it gives {n_sub} points per icosahedron edge, "
            "at least 3 are needed; use --ang 42 or less"
        )
    vertices = _icosahedron_vertices()
    s_list, positions = _side_lists(vertices, _S_TRIPLES, n_sub)
    e_list, _ = _side_lists(vertices, _E_TRIPLES, n_sub)
    edges = np.where((np.arange(len(s_list)) < 10 * n_sub - 15)[:, None], s_list, e_list)
    interior = _interior_points(s_list, e_list, positions)
    return np.concatenate([vertices[[11, 0]], edges, interior])


def orientation_grid(
    ang_deg: float,
    psi_sampling_deg: float | None = None,
    tilt0_deg: float = 0.0,
    tiltF_deg: float = 180.0,
    small_angle: bool = True,
    symmetry: NDArray[np.float64] | None = None,
) -> OrientationGrid:
    """Global search grid: every direction of :func:`sphere_directions` times every psi.

    Under a point group the orientations are ``A = E(rot, tilt, psi)^T`` for the directions of the
    asymmetric unit only: ``A e_z`` is the direction, and the equivalent orientations ``R_g A`` move it
    to its symmetry copies, so each class of equivalent orientations is sampled about once.

    Parameters
    ----------
    ang_deg : float
        Direction sampling ``--ang`` in degrees.
    psi_sampling_deg : float or None
        In-plane sampling ``--psi_sampling`` in degrees; ``None`` uses ``ang_deg``.
    tilt0_deg, tiltF_deg : float
        Keep directions with ``tilt0_deg <= tilt <= tiltF_deg`` (``--tilt0``/``--tiltF``),
        degrees in [0, 180].
    small_angle : bool
        Add 2.75 degrees to every psi (off with ``--no_SMALLANGLE``).
    symmetry : (G, 3, 3) ndarray, optional
        The point group's rotations (:func:`~napari_mltomo.core.symmetry.symmetry_matrices`).

    Returns
    -------
    OrientationGrid
        ``n_directions * ceil(360 / psi_sampling_deg)`` orientations ``A = E(rot, tilt, psi_j)``
        (C1; the transposes under a group), ordered direction by direction with psi varying fastest.

    Raises
    ------
    ValueError
        For a non-positive sampling or a tilt window outside ``0 <= tilt0 <= tiltF <= 180``.
    """
    directions = sphere_directions(ang_deg)
    psi_deg = _psi_angles(ang_deg if psi_sampling_deg is None else psi_sampling_deg, small_angle)
    directions = directions[_in_tilt_window(directions, tilt0_deg, tiltF_deg)]
    if symmetry is not None and len(symmetry) > 1:
        directions = directions[asymmetric_unit(directions, symmetry)]
    rot_deg = np.degrees(np.arctan2(directions[:, 1], directions[:, 0]))
    tilt_deg = np.degrees(np.arccos(np.clip(directions[:, 2], -1.0, 1.0)))
    angles_deg = np.stack(
        [
            np.repeat(rot_deg, len(psi_deg)),
            np.repeat(tilt_deg, len(psi_deg)),
            np.tile(psi_deg, len(directions)),
        ],
        axis=-1,
    )
    matrices = euler_to_matrix(*angles_deg.T)
    if symmetry is not None and len(symmetry) > 1:
        matrices = np.swapaxes(matrices, 1, 2)
        angles_deg = matrix_to_euler(matrices)
    return OrientationGrid(angles_deg, matrices)


def local_neighbourhoods(
    grid_angles_deg: NDArray[np.float64],
    centre_angles_deg: NDArray[np.float64],
    search_deg: float,
    limit_psi: bool = True,
    psi_range_deg: float | None = None,
) -> NDArray[np.bool_]:
    """The grid orientations within a local search range of each centre (``--ang_search``).

    A grid orientation is a neighbour of a centre when their directions (the third rows of their
    matrices) are less than ``search_deg`` apart and, with ``limit_psi``, their psi angles differ by at
    most ``search_deg``; near the poles (tilt within ``1.1 * search_deg`` of 0 or 180), where rot and psi
    mix, any psi is accepted. A centre with no grid orientation in range (outside a ``--tilt0``/``--tiltF``
    window, or between psi steps coarser than twice the range) takes the nearest one.

    Parameters
    ----------
    grid_angles_deg : (n_ang, 3) ndarray
        ``(rot, tilt, psi)`` of the grid.
    centre_angles_deg : (n, 3) ndarray
        ``(rot, tilt, psi)`` of each particle's input orientation.
    search_deg : float
        Search range ``--ang_search`` in degrees.
    limit_psi : bool
        Restrict psi (off with ``--dont_limit_psirange``).
    psi_range_deg : float, optional
        The psi range, if not ``search_deg``.

    Returns
    -------
    (n, n_ang) ndarray of bool
    """
    grid, centres = np.radians(grid_angles_deg), np.radians(centre_angles_deg)
    allowed = _directions(centres) @ _directions(grid).T > np.cos(np.radians(search_deg))
    if limit_psi:
        polar = np.abs(_wrap(grid_angles_deg[:, 1], -90.0, 90.0)) < 1.1 * search_deg
        psi_gap = np.abs(_wrap(centre_angles_deg[:, None, 2] - grid_angles_deg[None, :, 2], -180.0, 180.0))
        allowed &= polar | (psi_gap <= (search_deg if psi_range_deg is None else psi_range_deg))
    empty = np.nonzero(~allowed.any(axis=1))[0]
    if len(empty):
        allowed[empty, _nearest_orientations(grid_angles_deg, centre_angles_deg[empty])] = True
    return allowed


def orientation_order(angles_deg: NDArray[np.float64], scale_deg: float) -> NDArray[np.intp]:
    """An order of ``angles_deg`` that keeps neighbours together: cells of twice ``scale_deg``, by
    direction (a run of neighbouring directions of :func:`sphere_directions`) and then by psi.

    Cut into consecutive chunks, this order lets the particles of a chunk share most of the
    orientations of their local searches: for 20,000 random orientations in chunks of 64 with
    ``--ang 10 --ang_search 10``, each grid orientation falls in about 3 chunks instead of 12.

    Parameters
    ----------
    angles_deg : (n, 3) ndarray
        ``(rot, tilt, psi)`` of the orientations to order.
    scale_deg : float
        The size of a neighbourhood (``--ang_search``); cells are at most 40 degrees.

    Returns
    -------
    (n,) ndarray of int
        Indices into ``angles_deg``.
    """
    cell = min(2.0 * scale_deg, 40.0)
    directions = sphere_directions(cell)
    nearest = np.concatenate(
        [
            (_directions(np.radians(block)) @ directions.T).argmax(axis=1)
            for block in np.array_split(angles_deg, max(1, len(angles_deg) // 4096))
        ]
    )
    psi = _wrap(angles_deg[:, 2], 0.0, 360.0)
    return np.lexsort((psi, nearest))  # by direction cell, then psi


def _nearest_orientations(
    grid_angles_deg: NDArray[np.float64], angles_deg: NDArray[np.float64]
) -> NDArray[np.intp]:
    """Index of the grid orientation nearest each of ``angles_deg`` (largest ``trace(G^T A)``)."""
    grid, targets = euler_to_matrix(*grid_angles_deg.T), euler_to_matrix(*angles_deg.T)
    return np.einsum("aij,mij->ma", grid, targets).argmax(axis=1)


def _directions(angles_rad: NDArray[np.float64]) -> NDArray[np.float64]:
    """Unit directions ``(cos rot sin tilt, sin rot sin tilt, cos tilt)`` of ``(n, 3)`` Euler angles."""
    rot, tilt = angles_rad[:, 0], angles_rad[:, 1]
    return np.stack([np.cos(rot) * np.sin(tilt), np.sin(rot) * np.sin(tilt), np.cos(tilt)], axis=-1)


def _wrap(value: NDArray[np.float64], low: float, high: float) -> NDArray[np.float64]:
    """``value`` brought into ``[low, high)`` by whole periods ``high - low``."""
    return value - np.floor((value - low) / (high - low)) * (high - low)


def perturbation_matrix(rng: np.random.Generator, ang_deg: float) -> NDArray[np.float64]:
    """Random small rotation used by ``--perturb``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the three normal draws.
    ang_deg : float
        Angular sampling in degrees; each Euler angle has standard deviation ``ang_deg / 3``.

    Returns
    -------
    (3, 3) ndarray of float64
        ``R = E(g1, g2, g3)`` with ``g_i ~ N(0, (ang_deg / 3)**2)`` degrees.
    """
    rot_deg, tilt_deg, psi_deg = rng.normal(0.0, ang_deg / 3.0, size=3)
    return euler_to_matrix(rot_deg, tilt_deg, psi_deg)


def perturb_grid(grid: OrientationGrid, rotation: NDArray[np.float64]) -> OrientationGrid:
    """Rotate a whole grid rigidly: ``A' = A @ rotation``.

    Parameters
    ----------
    grid : OrientationGrid
        Orientations to perturb; not modified.
    rotation : (3, 3) ndarray of float64
        The perturbation, e.g. from :func:`perturbation_matrix`.

    Returns
    -------
    OrientationGrid
        The rotated matrices in the same order, with their Xmipp ZYZ angles recomputed.
    """
    matrices = grid.matrices @ rotation
    return OrientationGrid(matrix_to_euler(matrices), matrices)


def random_orientations(rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """Orientations drawn uniformly from SO(3).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the uniform draws.
    n : int
        Number of orientations.

    Returns
    -------
    (n, 3) ndarray of float64
        ``(rot, tilt, psi)`` in degrees: ``rot`` and ``psi`` uniform in [0, 360),
        ``cos(tilt)`` uniform in [-1, 1].
    """
    u = rng.random((n, 3))
    return np.stack([360.0 * u[:, 0], np.degrees(np.arccos(2.0 * u[:, 1] - 1.0)), 360.0 * u[:, 2]], axis=-1)


def _icosahedron_vertices() -> NDArray[np.float64]:
    """(12, 3) vertices ``v0 = +z``, upper ring ``v1..v5``, lower ring ``v6..v10``, ``v11 = -z``.

    The rings sit 1.107149 rad from the poles (``z = +-0.4472133``, not exactly ``1/sqrt(5)``),
    which reproduces Xmipp's reference sampling file to its 6 printed decimals.
    """
    azimuths_deg = np.array([-36.0, 36.0, 108.0, 180.0, -108.0, 0.0, 72.0, 144.0, -144.0, -72.0])
    ring_z = np.repeat([1.0, -1.0], 5) * math.cos(_ICOSAHEDRON_EDGE_RAD)
    ring_r = math.sin(_ICOSAHEDRON_EDGE_RAD)
    azimuths = np.radians(azimuths_deg)
    ring = np.stack([ring_r * np.cos(azimuths), ring_r * np.sin(azimuths), ring_z], axis=-1)
    return np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])


def _slerp(
    start: NDArray[np.float64], end: NDArray[np.float64], fraction: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Normalised great-circle interpolation between (m, 3) unit vectors at (m,) fractions."""
    omega = np.arccos(np.clip(np.sum(start * end, axis=-1), -1.0, 1.0))[:, None]
    fraction = fraction[:, None]
    points = np.sin((1.0 - fraction) * omega) * start + np.sin(fraction * omega) * end
    return points / np.linalg.norm(points, axis=-1, keepdims=True)


def _side_lists(
    vertices: NDArray[np.float64], triples: tuple[tuple[int, int, int], ...], n_sub: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Concatenated side lists ``p -> q`` (ending at q) then ``r -> q`` (short of q).

    Returns the (10 (2 n_sub - 3), 3) points and each point's 1-based position on its sub-edge.
    """
    positions = np.concatenate([np.arange(1, n_sub), np.arange(1, n_sub - 1)])
    starts = np.array([[p] * (n_sub - 1) + [r] * (n_sub - 2) for p, _, r in triples]).ravel()
    ends = np.repeat([q for _, q, _ in triples], len(positions))
    all_positions = np.tile(positions, len(triples))
    points = _slerp(vertices[starts], vertices[ends], all_positions / (n_sub - 1))
    return points, all_positions


def _interior_points(
    s_list: NDArray[np.float64], e_list: NDArray[np.float64], positions: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``slerp(S[i], E[i], l / k_i)`` for every i and ``l = 1..k_i - 1``, ``k_i = positions[i]``."""
    counts = positions - 1
    pair = np.repeat(np.arange(len(positions)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    steps = np.arange(len(pair)) - first + 1
    return _slerp(s_list[pair], e_list[pair], steps / positions[pair])


def _psi_angles(psi_sampling_deg: float, small_angle: bool) -> NDArray[np.float64]:
    """(n_psi,) psi ``j * 360 / n_psi (+ 2.75)`` degrees with ``n_psi = ceil(360 / sampling)``."""
    if not psi_sampling_deg > 0:
        raise ValueError(f"--psi_sampling must be a positive angle in degrees, got {psi_sampling_deg}")
    n_psi = math.ceil(360.0 / psi_sampling_deg - _ROUNDING_TOLERANCE)
    return np.arange(n_psi) * (360.0 / n_psi) + (SMALL_ANGLE_DEG if small_angle else 0.0)


def _in_tilt_window(
    directions: NDArray[np.float64],
    tilt0_deg: float,
    tiltF_deg: float,
) -> NDArray[np.bool_]:
    """(n,) mask of the (n, 3) directions with ``cos(tiltF) <= z <= cos(tilt0)``."""
    if not 0.0 <= tilt0_deg <= tiltF_deg <= 180.0:
        raise ValueError(
            f"--tilt0 and --tiltF must satisfy 0 <= tilt0 <= tiltF <= 180 degrees, "
            f"got --tilt0 {tilt0_deg} and --tiltF {tiltF_deg}"
        )
    z = directions[:, 2]
    low = math.cos(math.radians(tiltF_deg)) - _ROUNDING_TOLERANCE
    high = math.cos(math.radians(tilt0_deg)) + _ROUNDING_TOLERANCE
    return (z >= low) & (z <= high)
