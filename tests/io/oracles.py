"""Independent oracles for the RELION and Dynamo interchange tests.

Everything here is written out from the programs' own definitions, independently of the package: nothing
of it is imported (but a type name), least of all its pose conventions or geometry, so a test comparing
the package with these oracles cannot pass by sharing its mistake.

- Our model: ``particle(q) = ref(E (q + s))`` with ``E = Rz(-psi) Ry(-tilt) Rz(-rot)``, ``s`` in pixels.
- RELION's (3-D boxes): ``particle(q) = ref(A^T (q + o))``, ``A`` from its ``Euler_angles2matrix``, ``o``
  the origin in pixels.
- Dynamo's: ``particle(q) = template(R (q - d))`` with ``R = Rz(narot) Rx(tilt) Rz(tdrot)``.

Volumes are ``(N, N, N)`` boxes whose voxel ``[k, i, j]`` is the centred point
``(x, y, z) = (j - N//2, i - N//2, k - N//2)``. Particles are resampled with a cubic spline and scored by
their normalised cross-correlation (NCC) with the phantom inside the ball ``r <= 0.4 N``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import map_coordinates

if TYPE_CHECKING:
    from napari_mltomo.io import MetaData

N, CENTRE, PIXEL = 32, 16, 2.5  # N even: Dynamo's centre N/2 + 1 (from 1) is our N//2 (from 0)
#: How many random poses come before the special ones.
N_RANDOM = 14
#: Poses at the poles and at +-90 degrees, where Euler decompositions go wrong.
SPECIAL = (
    (90, 0, 90), (-90, 90, -90), (0, 180, 90), (90, 90, -90), (-90, 180, 90), (0, 0, -90),
    (90, 180, -90), (-90, 0, 90), (0, 90, -90),
)  # fmt: skip
#: The NCC a right transform must reach, and a wrong one (the controls) stay below.
GOOD, BAD = 0.99, 0.9
#: Four off-centre Gaussian blobs: centre (x, y, z) px, sigma px, amplitude.
BLOBS = (((5, 0, -3), 1.5, 1.0), ((-4, 6, 2), 2.0, 0.8), ((2, -5, 7), 2.5, 0.6), ((-6, -3, -5), 1.8, 0.5))


# --------------------------------------------------------------------------- rotations


def rz(degrees: float) -> NDArray[np.float64]:
    """The right-handed rotation about z."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def ry(degrees: float) -> NDArray[np.float64]:
    """The right-handed rotation about y."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rx(degrees: float) -> NDArray[np.float64]:
    """The right-handed rotation about x."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def our_matrix(rot: float, tilt: float, psi: float) -> NDArray[np.float64]:
    """Our ``E = Rz(-psi) Ry(-tilt) Rz(-rot)`` (docs/conventions.md), transcribed."""
    return rz(-psi) @ ry(-tilt) @ rz(-rot)


def relion_formula(rot: float, tilt: float, psi: float) -> NDArray[np.float64]:
    """RELION's ``Euler_angles2matrix``, written out element by element."""
    ca, sa = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    cb, sb = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
    cg, sg = np.cos(np.radians(psi)), np.sin(np.radians(psi))
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )


def dynamo_matrix(tdrot: float, tilt: float, narot: float) -> NDArray[np.float64]:
    """Dynamo's ``dynamo_euler2matrix``: ``Rz(narot) Rx(tilt) Rz(tdrot)``."""
    return rz(narot) @ rx(tilt) @ rz(tdrot)


def turn_degrees(matrix: NDArray[np.float64]) -> float:
    """The angle a rotation matrix turns by."""
    return float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))))


# --------------------------------------------------------------------------- volumes and scores


def _centred_points() -> NDArray[np.float64]:
    k, i, j = np.indices((N, N, N)).reshape(3, -1) - CENTRE
    return np.stack([j, i, k]).astype(np.float64)


#: Centred ``(x, y, z)`` of every voxel of the box, as ``(3, N^3)``.
POINTS = _centred_points()
#: The voxels inside the ball ``r <= 0.4 N``, flat.
BALL = np.linalg.norm(POINTS, axis=0) <= 0.4 * N


def sample(volume: NDArray[np.floating], points: NDArray[np.float64]) -> NDArray[np.float64]:
    """``volume`` at centred ``(x, y, z)`` points (cubic spline, zero outside), as a box on the grid of
    POINTS."""
    x, y, z = points + CENTRE
    return map_coordinates(volume, np.stack([z, y, x]), order=3, mode="constant").reshape(N, N, N)


def _phantom() -> NDArray[np.float64]:
    total = np.zeros(POINTS.shape[1])
    for centre, sigma, amplitude in BLOBS:
        distance2 = np.sum((POINTS - np.array(centre, dtype=float)[:, None]) ** 2, axis=0)
        total += amplitude * np.exp(-distance2 / (2 * sigma**2))
    return total.reshape(N, N, N)


#: The reference every test particle is made from: the four BLOBS, none at the centre.
PHANTOM = _phantom()


def ncc(volume: NDArray[np.floating]) -> float:
    """Normalised cross-correlation of a box with the phantom inside the ball."""
    a, b = volume.ravel()[BALL], PHANTOM.ravel()[BALL]
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _scores(
    particles: Sequence[NDArray[np.floating]],
    matrices: Sequence[NDArray[np.float64]],
    offsets: NDArray[np.float64],
) -> NDArray[np.float64]:
    rows = zip(particles, matrices, offsets, strict=True)
    return np.array(
        [ncc(sample(particle, matrix @ POINTS + offset[:, None])) for particle, matrix, offset in rows]
    )


def pose_scores(
    particles: Sequence[NDArray[np.floating]],
    matrices: Sequence[NDArray[np.float64]],
    offsets: NDArray[np.float64],
    label: str = "",
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """NCC with the phantom of each particle sampled at ``M r + t``, for its matrix ``M`` and offset ``t``;
    and, for the first N_RANDOM particles only (a special pose may be its own inverse), of the controls
    ``M^T r + t`` (matrix transposed) and ``M r - t`` (shift sign flipped). With a ``label``, prints the
    worst of each (seen with ``pytest -s``)."""
    offsets = np.asarray(offsets, dtype=np.float64)
    exact = _scores(particles, matrices, offsets)
    head = slice(N_RANDOM)
    transposed = _scores(particles[head], [matrix.T for matrix in matrices[head]], offsets[head])
    flipped = _scores(particles[head], matrices[head], -offsets[head])
    if label:
        worst = f"NCC min {exact.min():.4f}; controls max {transposed.max():.4f} {flipped.max():.4f}"
        print(f"\n{label}: {worst}")
    return exact, transposed, flipped


# --------------------------------------------------------------------------- poses


def random_poses(
    rng: np.random.Generator, matrix: Callable[..., NDArray[np.float64]] = our_matrix
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """N_RANDOM uniform random Euler triples, then the SPECIAL poses; shifts uniform in ``[-3, 3]^3`` px.

    A random triple is kept if ``matrix`` of it turns by 30 to 150 degrees, and a shift if it is at least
    2 px long, so that the controls can tell a pose from its inverse (a half turn is its own inverse)
    and a flipped shift sign moves the particle visibly.
    """
    angles = []
    while len(angles) < N_RANDOM:
        first, last = rng.uniform(-180, 180, 2)
        triple = (first, float(np.degrees(np.arccos(rng.uniform(-1, 1)))), last)
        if 30 <= turn_degrees(matrix(*triple)) <= 150:
            angles.append(triple)
    angles += SPECIAL
    shifts = rng.uniform(-3, 3, size=(8 * len(angles), 3))
    return np.array(angles, dtype=np.float64), shifts[np.linalg.norm(shifts, axis=1) >= 2][: len(angles)]


def our_poses(images: MetaData) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each row's ``E`` (``(n, 3, 3)``) and ``s`` (``(n, 3)``), from its angle and shift columns."""
    angles, shifts = (
        np.stack([np.asarray(images[label], dtype=np.float64) for label in labels], axis=1)
        for labels in (("angleRot", "angleTilt", "anglePsi"), ("shiftX", "shiftY", "shiftZ"))
    )
    return np.stack([our_matrix(*row) for row in angles]), shifts


def posed_phantoms(
    rng: np.random.Generator, matrix: Callable[..., NDArray[np.float64]] = our_matrix, sign: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The poses of random_poses and, for each, the phantom so posed: the box ``PHANTOM(M (r + sign t))``
    with ``M = matrix(*angles)`` and ``t`` the shift (our model: ``our_matrix``, sign 1; RELION's: ``A^T``,
    sign 1; Dynamo's: ``dynamo_matrix``, sign -1). Returns the angles, the shifts and the boxes."""
    angles, shifts = random_poses(rng, matrix)
    rows = zip(angles, shifts, strict=True)
    volumes = [sample(PHANTOM, matrix(*triple) @ (POINTS + sign * shift[:, None])) for triple, shift in rows]
    return angles, shifts, np.stack(volumes)
