"""Draw docs/images/conventions.png: one phantom posed by the same pose written in each program's parameters.

``python docs/make_conventions_figure.py``. Each particle is resampled from the phantom with that program's
own model (``docs/conventions.md``), the parameters converted by :mod:`napari_mltomo.io.conventions`; the
last panel takes RELION's angles as if they were ours, the commonest mistake.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from napari_mltomo.io.conventions import dynamo_angles, relion_angles

SIZE, PIXEL_A = 48, 2.0
ANGLES = np.array([30.0, 60.0, -110.0])  # ours: rot, tilt, psi
SHIFT = np.array([3.0, -2.0, 1.0])  # ours: shiftX, shiftY, shiftZ in pixels


def phantom() -> np.ndarray:
    """Four Gaussian blobs of different sizes, none at the centre: no symmetry, so every pose differs."""
    centre = SIZE // 2
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE] - centre
    blobs = [((8, 0, 0), 3.0, 1.0), ((8, 8, 0), 2.5, 0.8), ((-6, 0, 0), 2.0, 0.6), ((0, -4, 9), 2.0, 0.9)]
    volume = np.zeros((SIZE,) * 3)
    for (bx, by, bz), sigma, amplitude in blobs:
        volume += amplitude * np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * sigma**2))
    return volume


def sample(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``volume`` at centred ``(x, y, z)`` points ``(3, SIZE**3)``, as a volume."""
    centre = SIZE // 2
    indices = points[::-1] + centre  # (z, y, x) array indices
    return map_coordinates(volume, indices, order=3, mode="constant").reshape((SIZE,) * 3)


def zyz(angles: np.ndarray) -> np.ndarray:
    """``Rz(-psi) Ry(-tilt) Rz(-rot)``: the matrix of ours, and of RELION's ``rlnAngle*`` alike."""
    return Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().T


def main() -> None:
    reference = phantom()
    centre = SIZE // 2
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE] - centre
    q = np.stack([x.ravel(), y.ravel(), z.ravel()]).astype(np.float64)
    relion, origin_a = relion_angles(ANGLES), PIXEL_A * SHIFT
    dynamo, d = dynamo_angles(ANGLES), -SHIFT
    rotation = Rotation.from_euler("zxz", dynamo, degrees=True).as_matrix()  # Rz(narot) Rx(tilt) Rz(tdrot)
    panels = [
        ("reference", reference),
        (f"ml_tomo: rot, tilt, psi = {_text(ANGLES)}\nshiftX, Y, Z = {_text(SHIFT)} px",
         sample(reference, zyz(ANGLES) @ (q + SHIFT[:, None]))),
        (f"RELION: rlnAngleRot, Tilt, Psi = {_text(relion)}\nrlnOriginX, Y, ZAngst = {_text(origin_a)}",
         sample(reference, zyz(relion).T @ (q + origin_a[:, None] / PIXEL_A))),
        (f"Dynamo: tdrot, tilt, narot = {_text(dynamo)}\ndx, dy, dz = {_text(d)} px",
         sample(reference, rotation @ (q - d[:, None]))),
        (f"wrong: RELION's angles read as ml_tomo's\nrot, tilt, psi = {_text(relion)}",
         sample(reference, zyz(relion) @ (q + SHIFT[:, None]))),
    ]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for axis, (title, volume) in zip(axes, panels, strict=True):
        axis.imshow(volume.max(axis=0), cmap="gray", origin="lower")
        axis.set_title(title, fontsize=7.5)
        axis.set_xticks([])
        axis.set_yticks([])
    title = "One pose in the parameters of each program (projections along z, x to the right)"
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    out = Path(__file__).parent / "images" / "conventions.png"
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


def _text(values: np.ndarray) -> str:
    return ", ".join(f"{value:g}" for value in np.round(values, 2))


if __name__ == "__main__":
    main()
