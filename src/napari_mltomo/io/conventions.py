"""Particle poses in the conventions of RELION and Dynamo, by closed forms (``docs/conventions.md``).

Ours: ``particle(q) = reference(E (q + s))`` with ``E = E(rot, tilt, psi)`` and ``s`` in pixels.
RELION (3.1 to 5, 3-D boxes): ``particle(q) = reference(A^T (q + o / p))`` with ``A`` built by the same
formula from ``rlnAngleRot/Tilt/Psi``, ``o`` the ``rlnOrigin*Angst`` and ``p`` the pixel size: so
``A = E^T`` and ``o = p s``. Dynamo: ``particle(q) = template(R (q - d))`` with
``R = Rz(narot) Rx(tilt) Rz(tdrot)`` equal to ``E``: so ``d = -s``.

Each angle map is its own inverse (it converts ours to theirs and theirs to ours), and no Euler
decomposition is involved, so poses at rot or psi = +-90 degrees and tilt = 0 or 180 convert exactly.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["dynamo_angles", "relion_angles", "wrap_degrees"]


def wrap_degrees(angles: ArrayLike) -> NDArray[np.float64]:
    """Angles in degrees brought into ``(-180, 180]``."""
    return 180.0 - np.mod(180.0 - np.asarray(angles, dtype=np.float64), 360.0)


def relion_angles(angles: ArrayLike) -> NDArray[np.float64]:
    """``(rot, tilt, psi) -> (180 - psi, tilt, 180 - rot)``: RELION's ``rlnAngleRot/Tilt/Psi`` of our
    angles, and ours of RELION's.

    Parameters
    ----------
    angles : (..., 3) array_like
        Degrees.

    Returns
    -------
    (..., 3) ndarray of float64
        Degrees, rot and psi in ``(-180, 180]``.
    """
    rot, tilt, psi = np.moveaxis(np.asarray(angles, dtype=np.float64), -1, 0)
    return np.stack([wrap_degrees(180.0 - psi), tilt, wrap_degrees(180.0 - rot)], axis=-1)


def dynamo_angles(angles: ArrayLike) -> NDArray[np.float64]:
    """``(rot, tilt, psi) -> (90 - rot, tilt, -90 - psi)``: Dynamo's ``(tdrot, tilt, narot)`` of our
    angles, and ours of Dynamo's.

    Parameters
    ----------
    angles : (..., 3) array_like
        Degrees.

    Returns
    -------
    (..., 3) ndarray of float64
        Degrees, the first and last in ``(-180, 180]``.
    """
    first, tilt, last = np.moveaxis(np.asarray(angles, dtype=np.float64), -1, 0)
    return np.stack([wrap_degrees(90.0 - first), tilt, wrap_degrees(-90.0 - last)], axis=-1)
