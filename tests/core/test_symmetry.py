"""Point groups for --sym: group matrices, asymmetric units, symmetrised maps, orientation copies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_mltomo.core.geometry import centred_coordinates, euler_to_matrix, matrix_to_euler, rotate_volumes
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import StartModel, SubtomogramSet, run_refine
from napari_mltomo.core.sampling import orientation_grid, random_orientations, sphere_directions
from napari_mltomo.core.symmetry import (
    asymmetric_unit,
    dirichlet_unit,
    orientation_copies,
    symmetrise,
    symmetry_matrices,
)
from napari_mltomo.core.synthetic import make_phantoms

ORDERS = {"c1": 1, "c2": 2, "c4": 4, "c7": 7, "c12": 12, "d1": 2, "d2": 4, "d4": 8, "t": 12, "o": 24, "i": 60}
GROUPS = ["c2", "c4", "c7", "d2", "d4", "t", "o", "i"]
ANGLES = [20.0, 15.0, 10.0, 5.0]
GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0

GRID_SIZES = {20.0: 92, 15.0: 162, 10.0: 362, 5.0: 1692}  # len(sphere_directions(ang))

# (group, --ang) pairs whose kept count must be within 5% of n / G: all those with n / G >= 10. Below
# that a whole number of directions is often more than 5% off (i at 20 degrees: 92 / 60 = 1.53, so 1 or
# 2 directions, 35% or 30% off). Checked: c2, c4, c7, d2, d4 at 20, 15, 10, 5; t at 15, 10, 5; o at 10,
# 5; i at 5.
COUNT_PAIRS = [(name, ang) for name in GROUPS for ang in ANGLES if GRID_SIZES[ang] / ORDERS[name] >= 10]


def _rotation(axis: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    """Right-handed rotation about ``axis`` (Rodrigues), written independently of the module."""
    u = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + math.sin(a) * k + (1.0 - math.cos(a)) * k @ k


def _contains(group: np.ndarray, matrix: np.ndarray) -> bool:
    return bool(np.any(np.all(np.abs(group - matrix) < 1e-9, axis=(1, 2))))


def _copies(group: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """(k * G, 3) every ``R_g v``."""
    return np.einsum("gij,kj->kgi", group, directions).reshape(-1, 3)


def _farthest_deg(points: np.ndarray, cover: np.ndarray) -> float:
    """Largest angle from a point of ``points`` to its nearest point of ``cover``, degrees."""
    return float(np.degrees(np.arccos(np.clip((points @ cover.T).max(axis=1), -1.0, 1.0))).max())


@pytest.mark.parametrize(("name", "order"), ORDERS.items())
def test_group_order_identity_first_and_case(name: str, order: int) -> None:
    group = symmetry_matrices(name)
    assert group.shape == (order, 3, 3)
    np.testing.assert_array_equal(group[0], np.eye(3))
    np.testing.assert_allclose(symmetry_matrices(name.upper()), group)


@pytest.mark.parametrize("name", ORDERS)
def test_group_is_closed_set_of_distinct_proper_rotations(name: str) -> None:
    group = symmetry_matrices(name)
    np.testing.assert_allclose(
        group @ group.transpose(0, 2, 1), np.broadcast_to(np.eye(3), group.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(group), 1.0, atol=1e-12)
    products = np.einsum("aij,bjk->abik", group, group).reshape(-1, 1, 3, 3)
    distance = np.max(np.abs(products - group[None]), axis=(2, 3))  # (G*G, G)
    assert np.all(distance.min(axis=1) < 1e-9), "a product of two elements is not in the group"
    pairwise = np.max(np.abs(group[:, None] - group[None]), axis=(2, 3)) + 10.0 * np.eye(len(group))
    assert pairwise.min() > 1e-3, "two elements of the group coincide"


def test_axes_follow_xmipp_placement() -> None:
    assert _contains(symmetry_matrices("c4"), _rotation((0, 0, 1), 90.0))
    assert _contains(symmetry_matrices("c7"), _rotation((0, 0, 1), 360.0 / 7.0))
    d2 = symmetry_matrices("d2")
    assert _contains(d2, _rotation((1, 0, 0), 180.0))
    assert _contains(d2, _rotation((0, 0, 1), 180.0))
    assert not _contains(symmetry_matrices("c4"), _rotation((1, 0, 0), 180.0))
    # t: 3-fold along z, 2-fold along (0, sqrt(2/3), sqrt(1/3)) (Xmipp's T, not the cube setting).
    t = symmetry_matrices("t")
    assert _contains(t, _rotation((0, 0, 1), 120.0))
    assert _contains(t, _rotation((0.0, math.sqrt(2.0 / 3.0), math.sqrt(1.0 / 3.0)), 180.0))
    assert not _contains(t, _rotation((1, 0, 0), 180.0))
    # o: 4-fold axes along x, y and z, 3-fold axes along the cube diagonals.
    o = symmetry_matrices("o")
    for axis in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert _contains(o, _rotation(axis, 90.0))
    assert _contains(o, _rotation((1, -1, 1), 120.0))
    # i (Xmipp's default, i2): 2-folds on x, y, z; a 5-fold along (1, 0, phi); a 3-fold along (0, 1/phi, phi).
    i = symmetry_matrices("i")
    for axis in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert _contains(i, _rotation(axis, 180.0))
    assert _contains(i, _rotation((1.0, 0.0, GOLDEN), 72.0))
    assert _contains(i, _rotation((0.0, 1.0 / GOLDEN, GOLDEN), 120.0))
    assert not _contains(i, _rotation((0, 0, 1), 72.0))
    np.testing.assert_allclose(symmetry_matrices("i2"), i)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("foo", "unknown symmetry group"),
        ("c0", "unknown symmetry group"),
        ("cn", "unknown symmetry group"),
        ("d1x", "unknown symmetry group"),
        ("", "unknown symmetry group"),
        ("ci", "mirror plane or an inversion"),
        ("C4v", "mirror plane or an inversion"),
        ("d3h", "mirror plane or an inversion"),
        ("s4", "mirror plane or an inversion"),
        ("oh", "mirror plane or an inversion"),
        ("ih", "mirror plane or an inversion"),
        ("i1", "icosahedral setting"),
    ],
)
def test_bad_names_raise(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"use c1, cN, dN, t, o or i$") as error:
        symmetry_matrices(name)
    assert str(error.value).startswith(f"--sym {name}: ")
    assert reason in str(error.value)


def test_asymmetric_unit_of_c1_is_everything() -> None:
    directions = sphere_directions(20.0)
    np.testing.assert_array_equal(asymmetric_unit(directions, symmetry_matrices("c1")), np.arange(92))


@pytest.mark.parametrize(("name", "ang"), COUNT_PAIRS)
def test_asymmetric_unit_count_is_n_over_g(name: str, ang: float) -> None:
    directions = sphere_directions(ang)
    group = symmetry_matrices(name)
    kept = asymmetric_unit(directions, group)
    assert kept.dtype == np.intp
    assert np.all(np.diff(kept) > 0), "indices are not ascending and unique"
    assert len(directions) == GRID_SIZES[ang]
    assert len(kept) == pytest.approx(len(directions) / len(group), rel=0.05)


@pytest.mark.parametrize("ang", ANGLES)
@pytest.mark.parametrize("name", GROUPS)
def test_asymmetric_unit_copies_cover_the_sphere(name: str, ang: float) -> None:
    directions = sphere_directions(ang)
    group = symmetry_matrices(name)
    kept = directions[asymmetric_unit(directions, group)]
    # The grid's own spacing reaches 63.43 / (m - 1) = 1.057 ang on the icosahedron edges (m points per edge).
    assert _farthest_deg(directions, _copies(group, kept)) <= 1.06 * ang


@pytest.mark.parametrize("ang", [20.0, 10.0])
def test_asymmetric_unit_of_symmetric_grid_takes_every_orbit_once(ang: float) -> None:
    # The icosahedral grid has a 5-fold axis along z: its c5 orbits are the two poles and (n - 2) / 5
    # rings of 5. Exactly one direction of each must be kept, and their copies must give back the grid.
    directions = sphere_directions(ang)
    group = symmetry_matrices("c5")
    kept = directions[asymmetric_unit(directions, group)]
    assert len(kept) == (len(directions) - 2) // 5 + 2
    assert _farthest_deg(directions, _copies(group, kept)) < 1e-4
    assert _farthest_deg(_copies(group, kept), directions) < 1e-4


def test_dirichlet_unit_keeps_one_of_two_boundary_copies() -> None:
    # With p0 = +x the c4 domain is the lune |longitude| <= 45 degrees. Its two edges hold copies of
    # each other: of the orbit at longitudes 45, 135, 225, 315 only the first listed in the domain stays.
    # The pole is an orbit of its own (kept); a point at longitude 10 is inside, one at 100 outside.
    def direction(longitude_deg: float, latitude_deg: float) -> list[float]:
        lon, lat = math.radians(longitude_deg), math.radians(latitude_deg)
        return [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]

    group = symmetry_matrices("c4")
    directions = np.array(
        [direction(100.0, 20.0), direction(-45.0, 30.0), direction(10.0, -20.0), [0.0, 0.0, 1.0]]
        + [direction(longitude, 30.0) for longitude in (45.0, 135.0, 225.0)]
    )
    np.testing.assert_array_equal(dirichlet_unit(directions, group, np.array([1.0, 0.0, 0.0])), [1, 2, 3])
    # Listed the other way round, the copy at +45 degrees is the one kept.
    np.testing.assert_array_equal(
        dirichlet_unit(directions[::-1], group, np.array([1.0, 0.0, 0.0])), [2, 3, 4]
    )


def _blobs(size: int, seed: int) -> np.ndarray:
    """A smooth map without symmetry: a few Gaussian blobs of random centres, widths and heights."""
    rng = np.random.default_rng(seed)
    r = centred_coordinates(size)
    volume = np.zeros(len(r))
    for _ in range(5):
        centre = rng.uniform(-size / 4, size / 4, 3)
        volume += rng.uniform(0.5, 1.5) * np.exp(
            -np.sum((r - centre) ** 2, axis=1) / (2 * rng.uniform(1.5, 2.5) ** 2)
        )
    return volume.reshape(size, size, size)


def _relative_rms_in_ball(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    size = a.shape[-1]
    inside = (np.sum(centred_coordinates(size) ** 2, axis=1) <= radius**2).reshape(size, size, size)
    return float(np.sqrt(np.mean((a - b)[inside] ** 2) / np.mean(a[inside] ** 2)))


def test_symmetrise_makes_map_invariant() -> None:
    size = 24
    volume = _blobs(size, seed=3)
    quarter_turn = _rotation((0, 0, 1), 90.0)
    radius = size / 2 - 3
    assert _relative_rms_in_ball(volume, rotate_volumes(volume, quarter_turn), radius) > 0.3
    symmetric = symmetrise(volume, symmetry_matrices("c4"))
    assert symmetric.shape == volume.shape
    assert _relative_rms_in_ball(symmetric, rotate_volumes(symmetric, quarter_turn), radius) < 0.05
    # A 2-fold about x is no element of c4: the symmetrised map has no reason to follow it.
    assert (
        _relative_rms_in_ball(symmetric, rotate_volumes(symmetric, _rotation((1, 0, 0), 180.0)), radius) > 0.3
    )


def test_symmetrise_batch_matches_single_maps() -> None:
    size = 16
    volumes = np.stack([_blobs(size, seed=1), _blobs(size, seed=2)])
    group = symmetry_matrices("d2")
    batch = symmetrise(volumes, group)
    assert batch.shape == volumes.shape
    for volume, symmetric in zip(volumes, batch, strict=True):
        np.testing.assert_allclose(symmetric, symmetrise(volume, group), atol=1e-10)
    np.testing.assert_allclose(symmetrise(volumes[0], symmetry_matrices("c1")), volumes[0])


def test_orientation_copies_fit_a_symmetric_reference_equally() -> None:
    group = symmetry_matrices("d3")
    rng = np.random.default_rng(0)
    matrices = euler_to_matrix(*rng.uniform(0.0, 180.0, (3, 5)))
    copies = orientation_copies(matrices, group)
    assert copies.shape == (5, 6, 3, 3)
    np.testing.assert_allclose(copies[:, 0], matrices)
    np.testing.assert_allclose(copies[3, 4], group[4] @ matrices[3])

    # An analytic reference with the symmetry: ref(R_g r) = ref(r).
    centres = np.einsum("gij,j->gi", group, [3.0, 1.0, 2.0])

    def reference(points: np.ndarray) -> np.ndarray:
        return np.exp(-np.sum((points[..., None, :] - centres) ** 2, axis=-1) / 4.0).sum(axis=-1)

    q = rng.normal(0.0, 3.0, (50, 3))
    particle = reference(np.einsum("nij,pj->npi", matrices, q))  # particle(q) = ref(A q)
    fitted = reference(np.einsum("ngij,pj->ngpi", copies, q))
    np.testing.assert_allclose(
        fitted, np.broadcast_to(particle[:, None], fitted.shape), rtol=1e-10, atol=1e-12
    )
    # A copy on the wrong side, A R_g, does not fit.
    wrong = reference(np.einsum("nij,jk,pk->npi", matrices, group[1], q))
    assert np.max(np.abs(wrong - particle)) > 0.1


# --------------------------------------------------------------------------- --sym in a refinement


def _c4_particles(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A C4 phantom (axis z, box 16) and ``n`` noisy particles of it at random poses (SNR about 1)."""
    rng = np.random.default_rng(seed)
    phantom = symmetrise(make_phantoms(1, 16, seed=seed)[0].astype(np.float64), symmetry_matrices("c4"))
    angles = random_orientations(rng, n)
    particles = np.stack([rotate_volumes(phantom[None], euler_to_matrix(*a).T)[0] for a in angles])
    particles += rng.normal(scale=phantom.std(), size=particles.shape)
    return phantom, particles, angles


def _errors_modulo(estimated: np.ndarray, true_deg: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Angle between each estimated orientation and the nearest symmetry copy of the true one."""
    copies = orientation_copies(euler_to_matrix(*true_deg.T), group)  # (n, G, 3, 3)
    relative = copies @ np.swapaxes(estimated, -1, -2)[:, None]
    cosine = (np.trace(relative, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))).min(axis=1)


def test_sym_c4_samples_the_asymmetric_unit_and_aligns_modulo_the_group() -> None:
    phantom, particles, angles = _c4_particles(24, seed=1)
    noisy = phantom + np.random.default_rng(0).normal(scale=0.3 * phantom.std(), size=phantom.shape)
    params = MLParams(max_iter=2, ang_deg=20.0, symmetry="c4", threads=2, seed=1)
    state = run_refine(SubtomogramSet(particles), params, StartModel(references=noisy[None]))
    assert len(state.grid) == pytest.approx(len(orientation_grid(20.0)) / 4, rel=0.05)
    turned = rotate_volumes(state.references[0], _rotation((0, 0, 1), 90.0))
    assert _relative_rms_in_ball(state.references[0], turned, 5.0) < 0.06  # see the test below
    estimated = state.grid.matrices[state.stats.particles.orientations]
    group = symmetry_matrices("c4")
    assert np.median(_errors_modulo(estimated, angles, group)) < 15.0  # a 20-degree grid
    assert np.corrcoef(state.references[0].ravel(), phantom.ravel())[0, 1] > 0.9


@pytest.mark.parametrize(("name", "low", "high"), [("c4", 0.0, 0.06), ("c1", 0.3, np.inf)])
def test_sym_makes_every_reference_invariant_under_the_group(name: str, low: float, high: float) -> None:
    """Particles of an asymmetric phantom: with --sym c4 the reference is invariant under a quarter
    turn about z all the same (to the 4% a 16-voxel rotation loses); without, it is far from it."""
    rng = np.random.default_rng(0)
    phantom = make_phantoms(1, 16, seed=4)[0].astype(np.float64)
    angles = random_orientations(rng, 12)
    particles = np.stack([rotate_volumes(phantom[None], euler_to_matrix(*a).T)[0] for a in angles])
    particles += rng.normal(scale=phantom.std(), size=particles.shape)
    params = MLParams(max_iter=1, ang_deg=20.0, symmetry=name, threads=2)
    state = run_refine(SubtomogramSet(particles), params, StartModel(references=phantom[None]))
    turned = rotate_volumes(state.references[0], _rotation((0, 0, 1), 90.0))
    assert low < _relative_rms_in_ball(state.references[0], turned, 5.0) < high


def test_local_search_under_symmetry_reaches_the_copies_of_the_input_orientation() -> None:
    """Input angles at a symmetry copy of the truth outside the asymmetric unit: the neighbourhood
    holds the equivalent grid orientations, and the search stays within its range of them."""
    phantom, particles, angles = _c4_particles(12, seed=2)
    group = symmetry_matrices("c4")
    moved = matrix_to_euler(group[1] @ euler_to_matrix(*angles.T))  # 90 degrees about z: equivalent
    params = MLParams(max_iter=1, ang_deg=15.0, ang_search_deg=20.0, symmetry="c4", threads=2)
    data = SubtomogramSet(particles, angles_deg=moved, shifts_px=np.zeros((12, 3)))
    state = run_refine(data, params, StartModel(references=phantom[None]))
    estimated = state.grid.matrices[state.stats.particles.orientations]
    assert np.max(_errors_modulo(estimated, angles, group)) < 20.0


def test_axes_above_sixty_fold_are_refused() -> None:
    assert len(symmetry_matrices("d60")) == 120
    with pytest.raises(ValueError, match="--sym c61: axes of more than 60-fold are not supported"):
        symmetry_matrices("c61")
