"""Point-group symmetry for ``--sym``: group matrices, asymmetric units, symmetrised maps.

A reference map with point group ``G`` is invariant under every group matrix,
``ref(R_g r) = ref(r)``. Matrices act on ``(x, y, z)`` column vectors, as everywhere in
:mod:`napari_mltomo.core.geometry`.

The groups are placed as Xmipp places them (``SymList::fillSymmetryClass`` in xmippCore's
``symmetries.cpp``):

- ``cN``: an ``N``-fold axis along ``z``;
- ``dN``: ``cN`` plus a 2-fold axis along ``x``;
- ``t``: a 3-fold axis along ``z`` and a 2-fold axis along ``(0, sqrt(2/3), sqrt(1/3))``
  (Xmipp writes ``0 0.816496 0.577350``); so ``z`` is a 3-fold axis, not a cube axis;
- ``o``: a 3-fold axis along ``(1, 1, 1) / sqrt(3)`` and a 4-fold axis along ``z``: 4-fold axes on
  ``x``, ``y``, ``z``, 3-fold axes on the cube diagonals;
- ``i`` (Xmipp's default ``i``, the same as ``i2``): 2-fold axes along ``x``, ``y`` and ``z``, a
  5-fold axis along ``(1, 0, phi) / sqrt(1 + phi**2)`` and a 3-fold axis along
  ``(0, 1 / phi, phi) / sqrt(3)``, ``phi`` the golden ratio.
"""

from __future__ import annotations

import math
import re

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .geometry import rotate_volumes

__all__ = [
    "SUPPORTED_GROUPS",
    "asymmetric_unit",
    "dirichlet_unit",
    "orientation_copies",
    "symmetrise",
    "symmetry_matrices",
]

SUPPORTED_GROUPS = "c1, cN, dN, t, o or i"
"""The ``--sym`` values understood, as listed in error messages."""

#: Highest order N of cN and dN (the asymmetric unit of a finer one is narrower than the direction grid).
MAX_FOLD = 60

_GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
_MATCH_TOLERANCE = 1e-6  # two group matrices (max abs entry) or two unit vectors (max abs coordinate) agree

# Xmipp groups that are not implemented: those with mirrors or an inversion, other icosahedral settings.
_IMPROPER = re.compile(r"ci|cs|c\d+[vh]|s\d+|d\d+[vh]|t[dh]|oh|i[1-5]?h")
_OTHER_ICOSAHEDRAL = re.compile(r"i[1345]")

_CANDIDATES = 32  # candidate centres of the fundamental domain
_AXIS_CLEARANCE = 0.05  # a candidate closer than this (chord) to one of its copies is too near an axis


def symmetry_matrices(name: str) -> NDArray[np.float64]:
    """Rotation matrices of a point group, identity first.

    Parameters
    ----------
    name : str
        ``c1``, ``cN``, ``dN`` (``N >= 1``), ``t``, ``o`` or ``i`` (also ``i2``, Xmipp's name for the
        same setting); case-insensitive.

    Returns
    -------
    (G, 3, 3) ndarray of float64
        The ``G`` proper rotations of the group (orders ``N``, ``2N``, 12, 24, 60), in Xmipp's
        orientation (see the module docstring).

    Raises
    ------
    ValueError
        For an unknown name, or an Xmipp group that is not supported (improper groups such as
        ``ci``, ``cs``, ``cNv``, ``cNh``, ``sN``, ``dNv``, ``dNh``, ``td``, ``th``, ``oh``, ``ih``,
        and the other icosahedral settings ``i1``, ``i3``, ``i4``, ``i5``). Messages start with
        ``--sym <name>:`` and list the supported groups.
    """
    key = name.strip().lower()
    generators, order = _generators(key, name)
    return _close_group(generators, order)


def asymmetric_unit(directions: ArrayLike, group: ArrayLike) -> NDArray[np.intp]:
    """Indices of the directions that represent every symmetry orbit about once.

    The asymmetric unit is the Dirichlet (Voronoi) fundamental domain of a generic point ``p0``: the
    directions ``v`` with ``v . p0 >= v . (R_g p0)`` for every ``g``. Of directions on its boundary
    that are symmetry copies of each other only the first is kept (directions on a rotation axis lie
    on the boundary too, and are kept once per orbit). A grid that is not itself symmetric puts in such
    a domain a number of points that jumps with the rows of points crossing its boundary, so ``p0`` is
    taken from a fixed list of candidates: the first whose domain holds the number nearest ``n / G``.

    Parameters
    ----------
    directions : (n, 3) array_like
        Unit ``(x, y, z)`` vectors.
    group : (G, 3, 3) array_like
        Group matrices from :func:`symmetry_matrices`, identity first.

    Returns
    -------
    (k,) ndarray of intp
        Ascending indices into ``directions``, ``k`` about ``n / G`` (all indices for ``c1``). The
        copies ``R_g v`` of the kept directions come within about the grid spacing of every direction
        of a uniform grid.

    Notes
    -----
    The group acts here on the directions themselves, ``v -> R_g v``. For orientations ``A`` with
    ``particle(q) = ref(A q)`` the copies are ``R_g A`` (:func:`orientation_copies`): they move the
    column ``A e_z`` to ``R_g A e_z``. That is why a grid under symmetry takes ``A = E(rot, tilt,
    psi)^T``, whose column ``A e_z`` is the ``(rot, tilt)`` direction
    (:func:`~napari_mltomo.core.sampling.orientation_grid`).
    """
    v = np.asarray(directions, dtype=np.float64)
    rotations = np.asarray(group, dtype=np.float64)
    if len(rotations) == 1:
        return np.arange(len(v), dtype=np.intp)
    expected = len(v) / len(rotations)
    units = (dirichlet_unit(v, rotations, p0) for p0 in _generic_points(rotations))
    return min(units, key=lambda unit: abs(len(unit) - expected))


def symmetrise(volumes: ArrayLike, group: ArrayLike) -> NDArray[np.float64]:
    """Average of volumes over the rotations of a group, which makes them invariant under it.

    Parameters
    ----------
    volumes : (K, N, N, N) or (N, N, N) array_like
        Maps indexed ``[z, y, x]`` with the centre at ``N//2``.
    group : (G, 3, 3) array_like
        Group matrices, identity first (:func:`symmetry_matrices`).

    Returns
    -------
    ndarray of float64, the shape of ``volumes``
        ``mean_g Rot[R_g] f``, the identity term exact and the others rotated in Fourier space by
        :func:`~napari_mltomo.core.geometry.rotate_volumes`.
    """
    maps = np.asarray(volumes, dtype=np.float64)
    rotations = np.asarray(group, dtype=np.float64)
    total = maps.copy()
    for rotation in rotations[1:]:
        total += rotate_volumes(maps, rotation)
    return total / len(rotations)


def orientation_copies(matrices: ArrayLike, group: ArrayLike) -> NDArray[np.float64]:
    """Orientations equivalent under the group: ``R_g A`` for every orientation ``A``.

    With ``particle(q) = ref(A q)`` and ``ref(R_g r) = ref(r)``, ``R_g A`` fits the particle equally.

    Parameters
    ----------
    matrices : (n, 3, 3) array_like
        Orientations ``A``.
    group : (G, 3, 3) array_like
        Group matrices.

    Returns
    -------
    (n, G, 3, 3) ndarray of float64
    """
    return np.asarray(group, dtype=np.float64)[None] @ np.asarray(matrices, dtype=np.float64)[:, None]


def _unsupported(name: str, reason: str) -> ValueError:
    """The ``--sym`` error for ``name``."""
    return ValueError(f"--sym {name}: {reason}; use {SUPPORTED_GROUPS}")


def _generators(key: str, name: str) -> tuple[list[NDArray[np.float64]], int]:
    """Generator matrices and order of the group called ``key`` (lower case) in Xmipp's placement."""
    z_axis, x_axis = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    axial = re.fullmatch(r"([cd])([1-9]\d*)", key)
    if axial:
        fold = int(axial.group(2))
        if fold > MAX_FOLD:
            raise _unsupported(name, f"axes of more than {MAX_FOLD}-fold are not supported")
        if axial.group(1) == "c":
            return [_axis_rotation(z_axis, fold)], fold
        return [_axis_rotation(z_axis, fold), _axis_rotation(x_axis, 2)], 2 * fold
    if key == "t":
        return [_axis_rotation(z_axis, 3), _axis_rotation((0.0, math.sqrt(2 / 3), math.sqrt(1 / 3)), 2)], 12
    if key == "o":
        return [_axis_rotation((1.0, 1.0, 1.0), 3), _axis_rotation(z_axis, 4)], 24
    if key in ("i", "i2"):
        five, three = (1.0, 0.0, _GOLDEN), (0.0, 1.0 / _GOLDEN, _GOLDEN)
        return [_axis_rotation(z_axis, 2), _axis_rotation(five, 5), _axis_rotation(three, 3)], 60
    if _IMPROPER.fullmatch(key):
        raise _unsupported(name, "groups with a mirror plane or an inversion centre are not supported")
    if _OTHER_ICOSAHEDRAL.fullmatch(key):
        raise _unsupported(name, "only Xmipp's default icosahedral setting i (the same as i2) is supported")
    raise _unsupported(name, "unknown symmetry group")


def _axis_rotation(axis: tuple[float, float, float], fold: int) -> NDArray[np.float64]:
    """Rotation by ``360 / fold`` degrees about ``axis`` (Rodrigues' formula)."""
    u = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    angle = 2.0 * math.pi / fold
    cross = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1.0 - math.cos(angle)) * (cross @ cross)


def _close_group(generators: list[NDArray[np.float64]], order: int) -> NDArray[np.float64]:
    """All products of the generators, identity first, duplicates removed; checks the order."""
    elements = np.eye(3)[None]
    frontier = elements
    while len(frontier) and len(elements) <= order:
        new: list[NDArray[np.float64]] = []
        for product in np.concatenate([generator @ frontier for generator in generators]):
            known = np.concatenate([elements, *[m[None] for m in new]])
            if not np.any(np.all(np.abs(known - product) < _MATCH_TOLERANCE, axis=(1, 2))):
                new.append(product)
        frontier = np.asarray(new).reshape(-1, 3, 3)
        elements = np.concatenate([elements, frontier])
    if len(elements) != order:
        raise RuntimeError(f"symmetry generators give {len(elements)} or more elements, expected {order}")
    return elements


def _generic_points(rotations: NDArray[np.float64]) -> NDArray[np.float64]:
    """The candidate centres ``p0`` of the fundamental domain: a fixed Fibonacci lattice of unit
    vectors, less any within ``_AXIS_CLEARANCE`` of one of its symmetry copies (near an axis)."""
    j = np.arange(_CANDIDATES) + 0.5
    z = 1.0 - 2.0 * j / _CANDIDATES
    azimuth = j * math.pi * (3.0 - math.sqrt(5.0))
    points = np.stack([np.sqrt(1.0 - z**2) * np.cos(azimuth), np.sqrt(1.0 - z**2) * np.sin(azimuth), z], 1)
    copies = np.einsum("gij,cj->cgi", rotations[1:], points)
    clearance = np.min(np.linalg.norm(copies - points[:, None, :], axis=-1), axis=1)
    return points[clearance > _AXIS_CLEARANCE]


def dirichlet_unit(
    v: NDArray[np.float64], rotations: NDArray[np.float64], p0: NDArray[np.float64]
) -> NDArray[np.intp]:
    """Ascending indices of the directions in the Dirichlet domain of ``p0``, each orbit once."""
    normals = p0 - rotations[1:] @ p0  # (G-1, 3): normals of the circles bisecting p0 and R_g p0
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    depth = np.min(v @ normals.T, axis=1)  # sine of the angle to the nearest circle, < 0 outside
    inside = np.flatnonzero(depth >= -_MATCH_TOLERANCE)
    boundary = inside[depth[inside] <= _MATCH_TOLERANCE]
    repeats = boundary[_repeats_earlier(v[boundary], rotations)]
    return np.setdiff1d(inside, repeats).astype(np.intp)


def _repeats_earlier(v: NDArray[np.float64], rotations: NDArray[np.float64]) -> NDArray[np.bool_]:
    """(m,) mask of the directions that are a symmetry copy of an earlier direction of ``v``."""
    copies = np.einsum("gij,mj->mgi", rotations[1:], v)  # (m, G-1, 3)
    same = np.all(np.abs(copies[:, :, None, :] - v[None, None, :, :]) < _MATCH_TOLERANCE, axis=-1)
    earlier = np.tril(np.ones((len(v), len(v)), dtype=bool), k=-1)  # [i, j]: j < i
    return np.any(same.any(axis=1) & earlier, axis=1)
