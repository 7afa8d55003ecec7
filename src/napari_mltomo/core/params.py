"""The validated parameters of a refinement: :class:`MLParams`, and :class:`ParameterError` for a bad value.

The option table that the command line and the napari widget are built from, and that turns their values
into :class:`MLParams`, is :mod:`napari_mltomo.options`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .symmetry import symmetry_matrices

__all__ = ["ADAPTIVE_MAX_ANG", "MLParams", "ParameterError"]


class ParameterError(ValueError):
    """An option value or combination of options is invalid; the message names the option."""


@dataclass(frozen=True, kw_only=True)
class MLParams:
    """Hyper-parameters of one ML alignment/classification run (pixels, degrees).

    Names follow the command-line options (``--ang`` is ``ang_deg``); pixel quantities refer to the
    input box unless said otherwise.
    """

    n_classes: int = 1
    max_iter: int = 25
    istart: int = 1
    ang_deg: float = 10.0
    psi_sampling_deg: float | None = None
    tilt0_deg: float = 0.0
    tiltf_deg: float = 180.0
    small_angle: bool = True
    ang_search_deg: float = -1.0
    refine_to_deg: float | None = None
    limit_psi: bool = True
    dont_rotate: bool = False
    dont_align: bool = False
    only_average: bool = False
    max_cc: bool = False
    symmetry: str = "c1"
    adaptive: bool = False
    perturb: bool = False
    limit_trans_px: float = -1.0
    dim: int | None = None
    maxres: float = 0.5
    reg0: float = 0.0
    regf: float = 0.0
    reg_steps: int = 5
    impute_iter: int = 1
    dont_impute: bool = False
    filter_references: bool = False
    filter_initial: bool = False
    noimp_threshold: float = 1.0
    noise_sigma: float = 1.0
    offset_sigma_px: float = 3.0
    fix_sigma_noise: bool = False
    fix_sigma_offset: bool = False
    fix_fractions: bool = False
    fractions: tuple[float, ...] | None = None
    keep_angles: bool = False
    eps: float = 5e-5
    pixel_size_A: float = 1.0
    threads: int = 1
    chunk_size: int | None = None
    seed: int = 0
    significance: float = 1e-8
    escape: int = 5

    def __post_init__(self) -> None:
        _require(self.n_classes >= 1, "--nref", f"must be at least 1, got {self.n_classes}")
        _require(self.max_iter >= 0, "--iter", f"must be >= 0, got {self.max_iter}")
        _require(self.istart >= 1, "--istart", f"must be >= 1, got {self.istart}")
        _require(0.0 < self.ang_deg <= 42.0, "--ang", f"must be in (0, 42] degrees, got {self.ang_deg}")
        if self.psi_sampling_deg is not None:
            _require(
                0.0 < self.psi_sampling_deg <= 360.0,
                "--psi_sampling",
                f"must be in (0, 360] degrees, got {self.psi_sampling_deg}",
            )
        _require(
            0.0 <= self.tilt0_deg < self.tiltf_deg <= 180.0,
            "--tilt0/--tiltF",
            f"need 0 <= tilt0 < tiltF <= 180, got {self.tilt0_deg} and {self.tiltf_deg}",
        )
        if self.ang_search_deg > 0:
            _require(
                self.ang_search_deg >= self.ang_deg,
                "--ang_search",
                f"must be at least --ang ({self.ang_deg}), the grid spacing, got {self.ang_search_deg}",
            )
        if self.refine_to_deg is not None:
            _require(
                0.0 < self.refine_to_deg < self.ang_deg,
                "--refine_to",
                f"must be above 0 and below --ang ({self.ang_deg:g}), got {self.refine_to_deg:g}",
            )
            _require(
                not (self.dont_rotate or self.dont_align or self.only_average),
                "--refine_to",
                "needs an orientation search: not with --dont_rotate, --dont_align or --only_average",
            )
        if self.adaptive:
            _require(
                self.global_search and not self.max_cc,
                "--adaptive",
                "needs a global ML search: not with --ang_search, --dont_rotate, --dont_align, "
                "--only_average or --maxCC",
            )
            _require(
                self.ang_deg <= ADAPTIVE_MAX_ANG,
                "--adaptive",
                f"needs --ang {ADAPTIVE_MAX_ANG:g} or less (its coarse pass samples at twice the step), "
                f"got {self.ang_deg:g}",
            )
        try:
            symmetry_matrices(self.symmetry)
        except ValueError as error:
            raise ParameterError(str(error)) from None
        _require(0.0 < self.maxres <= 0.5, "--maxres", f"must be in (0, 0.5] 1/pixel, got {self.maxres}")
        if self.dim is not None:
            _require(self.dim >= 8, "--dim", f"must be at least 8 voxels, got {self.dim}")
        _require(self.regf <= self.reg0, "--regF", f"must not exceed --reg0 ({self.regf} > {self.reg0})")
        _require(self.reg0 >= 0 and self.regf >= 0, "--reg0/--regF", "must be >= 0")
        _require(self.reg_steps >= 1, "--reg_steps", f"must be >= 1, got {self.reg_steps}")
        _require(self.impute_iter >= 1, "--impute_iter", f"must be >= 1, got {self.impute_iter}")
        _require(self.noise_sigma > 0, "--noise", f"must be > 0, got {self.noise_sigma}")
        _require(self.offset_sigma_px >= 0, "--offset", f"must be >= 0, got {self.offset_sigma_px}")
        _require(self.eps >= 0, "--eps", f"must be >= 0, got {self.eps}")
        _require(self.pixel_size_A > 0, "--pixel_size", f"must be > 0, got {self.pixel_size_A}")
        _require(self.threads >= 1, "--thr", f"must be >= 1, got {self.threads}")
        _require(
            self.chunk_size is None or self.chunk_size >= 1, "--chunk", f"must be >= 1, got {self.chunk_size}"
        )
        _require(self.escape >= 0, "--escape", f"must be >= 0, got {self.escape}")
        if self.fractions is not None:
            _require(
                len(self.fractions) == self.n_classes,
                "--frac",
                f"gives {len(self.fractions)} fractions for {self.n_classes} classes",
            )
            _require(
                all(f >= 0 for f in self.fractions) and sum(self.fractions) > 0,
                "--frac",
                "fractions must be >= 0 and not all zero",
            )

    @property
    def symmetry_group(self) -> NDArray[np.float64]:
        """The ``(G, 3, 3)`` rotations of ``--sym``, identity first."""
        return symmetry_matrices(self.symmetry)

    @property
    def correlation_only(self) -> bool:
        """``--maxCC`` or ``--only_average``: references are plain averages (no imputation) and the noise
        and offset deviations stay as they are."""
        return self.max_cc or self.only_average

    @property
    def global_search(self) -> bool:
        """Every particle is scored against every orientation of the grid (no local search, no fixed
        orientations)."""
        return self.ang_search_deg <= 0 and not (self.dont_rotate or self.dont_align or self.only_average)

    @property
    def angle_options(self) -> tuple[str, ...]:
        """The options given that need the particles' metadata angles."""
        given = (
            ("--keep_angles", self.keep_angles),
            ("--ang_search", self.ang_search_deg > 0),
            ("--dont_rotate", self.dont_rotate),
            ("--dont_align", self.dont_align),
            ("--only_average", self.only_average),
        )
        return tuple(flag for flag, on in given if on)

    def regularisation(self, iteration: int) -> float:
        """Strength of the pull towards the mean reference at ``iteration`` (0 at start-up)."""
        step = (self.reg0 - self.regf) / self.reg_steps
        return max(self.reg0 - iteration * step, self.regf)


def _require(condition: bool, option: str, message: str) -> None:
    if not condition:
        raise ParameterError(f"{option} {message}")


#: The largest ``--ang`` of ``--adaptive``: its coarse grid, of twice the step, needs 3 points per icosahedron
#: edge.
ADAPTIVE_MAX_ANG = 21.0
