"""Missing regions in Fourier space: single-axis wedges, dual-axis pyramids and cones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .fourier import signed_frequencies

__all__ = ["REGION_KINDS", "MissingRegion", "observed_masks", "region_masks"]

RegionKind = Literal["wedge_y", "wedge_x", "pyramid", "cone"]
REGION_KINDS: tuple[str, ...] = ("wedge_y", "wedge_x", "pyramid", "cone")


@dataclass(frozen=True, kw_only=True)
class MissingRegion:
    """One missing-region definition: the tilt range(s) of the tilt series, in degrees.

    ``wedge_y`` uses ``theta_y0_deg``/``theta_yf_deg`` (tilt axis y), ``wedge_x`` uses
    ``theta_x0_deg``/``theta_xf_deg``, ``pyramid`` uses all four and ``cone`` only ``theta_y0_deg``.
    """

    kind: RegionKind
    theta_y0_deg: float = 0.0
    theta_yf_deg: float = 0.0
    theta_x0_deg: float = 0.0
    theta_xf_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in REGION_KINDS:
            raise ValueError(
                f"missing region type must be one of {', '.join(REGION_KINDS)}; got {self.kind!r}"
            )
        for low, high, axis in (
            (self.theta_y0_deg, self.theta_yf_deg, "Y"),
            (self.theta_x0_deg, self.theta_xf_deg, "X"),
        ):
            if not -90.0 <= low <= high <= 90.0 and self._uses(axis):
                raise ValueError(
                    f"missing region {self.kind}: need -90 <= theta{axis}0 <= theta{axis}F <= 90, "
                    f"got theta{axis}0={low} theta{axis}F={high}"
                )

    def _uses(self, axis: str) -> bool:
        if self.kind == "pyramid":
            return True
        return (axis == "Y" and self.kind == "wedge_y") or (axis == "X" and self.kind == "wedge_x")

    def slopes(self) -> tuple[float, float, float, float]:
        """Boundary slopes ``(tg0_y, tgF_y, tg0_x, tgF_x)`` of the observed region (cone: ``tg0_y``)."""
        theta_y_end = self.theta_y0_deg if self.kind == "cone" else self.theta_yf_deg
        return (
            _slope(-90.0 - theta_y_end),
            _slope(90.0 - self.theta_y0_deg),
            _slope(-90.0 - self.theta_xf_deg),
            _slope(90.0 - self.theta_x0_deg),
        )


def _slope(angle_deg: float) -> float:
    return -float(np.tan(np.deg2rad(angle_deg)))


def _inside_wedge_data(
    along: NDArray[np.float64], pz: NDArray[np.float64], low: float, high: float
) -> NDArray[np.bool_]:
    """Observed test of a single-axis tilt series; ``along`` is the in-plane axis (x or y)."""
    positive = (pz >= 0) & ((along <= low * pz) | (along >= high * pz))
    negative = (pz < 0) & ((along <= high * pz) | (along >= low * pz))
    return positive | negative


def observed_masks(
    region: MissingRegion,
    size: int,
    within_resolution: NDArray[np.bool_],
    matrices: ArrayLike | None = None,
) -> NDArray[np.bool_]:
    """Half-grid masks of the observed Fourier components, rotated by each matrix.

    Rotating a particle by ``A`` rotates its mask: ``M_A(k) = M_I(A^T k)``.

    Parameters
    ----------
    region : MissingRegion
    size : int
        Box size ``N``.
    within_resolution : (N, N, N//2+1) ndarray of bool
        The "within maxres and not DC" mask; components outside it count as missing.
    matrices : (n, 3, 3) array_like, optional
        Rotations; the identity (the particle's own frame) if omitted.

    Returns
    -------
    (n, N, N, N//2+1) ndarray of bool
        ``True`` where the component is observed (``n = 1`` without ``matrices``).
    """
    mats = np.eye(3)[None] if matrices is None else np.asarray(matrices, dtype=np.float64)
    kz, ky, kx = signed_frequencies(size)
    shape = within_resolution.shape
    k = np.stack([np.broadcast_to(c, shape).ravel() for c in (kx, ky, kz)])  # (3, n_half)
    p = np.einsum("nij,ik->njk", mats, k)  # p_j = sum_i A_ij k_i = (A^T k)_j
    px, py, pz = p[:, 0], p[:, 1], p[:, 2]
    tg0_y, tgf_y, tg0_x, tgf_x = region.slopes()
    if region.kind == "wedge_y":
        observed = _inside_wedge_data(px, pz, tg0_y, tgf_y)
    elif region.kind == "wedge_x":
        observed = _inside_wedge_data(py, pz, tg0_x, tgf_x)
    elif region.kind == "pyramid":
        observed = _inside_wedge_data(px, pz, tg0_y, tgf_y) | _inside_wedge_data(py, pz, tg0_x, tgf_x)
    else:
        observed = px**2 + py**2 >= (tg0_y * pz) ** 2
    return observed.reshape(len(mats), *shape) & within_resolution


def region_masks(
    regions: tuple[MissingRegion, ...],
    size: int,
    within_resolution: NDArray[np.bool_],
    matrices: ArrayLike | None = None,
) -> NDArray[np.bool_]:
    """Observed-component masks of every region, rotated by each matrix.

    Without missing regions (an empty tuple) there is one region, observed everywhere within
    ``within_resolution``, which no rotation changes.

    Returns
    -------
    (n, R, N, N, N//2+1) ndarray of bool
        ``n = 1`` without ``matrices``; ``R = max(1, len(regions))``.
    """
    n = 1 if matrices is None else len(np.asarray(matrices))
    if not regions:
        return np.broadcast_to(within_resolution, (n, 1, *within_resolution.shape))
    masks = [observed_masks(region, size, within_resolution, matrices) for region in regions]
    return np.stack(masks, axis=1)
