"""The refinement options: one table that both the command line and the napari widget are built from, and
the validated parameters object the engine takes.

:data:`OPTIONS` declares every option once (flag, group, type, default, help and what it sets in
:class:`MLParams`); ``argparse`` and the magicgui widget are generated from it, so their defaults cannot
drift. :func:`params_from_options` turns option values into :class:`MLParams`, and :func:`options_to_argv`
writes the equivalent ``ml_tomo`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .symmetry import symmetry_matrices

__all__ = [
    "GROUPS",
    "OPTIONS",
    "MLParams",
    "Option",
    "ParameterError",
    "default_values",
    "options_to_argv",
    "params_from_options",
]


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


# --------------------------------------------------------------------------- the option table


@dataclass(frozen=True)
class Option:
    """One option of ``ml_tomo`` and of the Refinement widget.

    Attributes
    ----------
    flags : tuple of str
        Command-line spellings, the long one last (``("-o", "--oroot")``).
    kind : type
        ``bool`` (a switch), ``int``, ``float`` or ``str``.
    default : object
        Value when the option is not given (None: not given).
    help : str
        One line; the default is appended where it says something.
    group : str
        Section of ``ml_tomo -h`` and of the widget, as the original's documentation groups them.
    metavar : str or None
        Placeholder of the value in ``-h``.
    path : {"r", "w"} or None
        The value names a file to read or an output root to write (a file picker in the widget).
    field : str or None
        The :class:`MLParams` field it sets directly (None: the inputs reader uses it).
    convert : callable or None
        Option value -> field value (for example ``-1`` -> None).
    widget : bool
        Shown in the widget (``--quiet`` is a command-line matter).
    """

    flags: tuple[str, ...]
    kind: type
    default: Any
    help: str
    group: str
    metavar: str | None = None
    path: Literal["r", "w"] | None = None
    field: str | None = None
    convert: Callable[[Any], Any] | None = None
    widget: bool = True

    @property
    def name(self) -> str:
        """The value's name: the long flag without dashes (``oroot``, ``tiltF``); ``input`` for ``-i``."""
        return "input" if self.flags == ("-i",) else self.flags[-1].lstrip("-")

    @property
    def help_text(self) -> str:
        """The help line with the default appended: ``off`` for a switch, ``none`` for an option that is
        not given by default (unless the line already says what happens then)."""
        if "(default:" in self.help:
            return self.help
        if self.kind is bool:
            default = "on" if self.default else "off"
        else:
            default = "none" if self.default is None else self.default
        return f"{self.help} (default: {default})"


def _unset_if_negative(value: float) -> float | None:
    return None if value < 0 else value


GROUPS: tuple[str, ...] = (
    "Input and output",
    "Angular sampling",
    "Regularisation",
    "Others",
    "Additional options",
    "napari-mltomo (not in Xmipp)",
)
_IO, _SAMPLING, _REG, _OTHERS, _ADDITIONAL, _OURS = GROUPS
#: The largest ``--ang`` of ``--adaptive``: its coarse grid, of twice the step, needs 3 points per icosahedron
#: edge.
ADAPTIVE_MAX_ANG = 21.0

_ESCAPE_HELP = (
    "For --nref starts: N annealed start-up steps at a 16-voxel box before iteration 1, which keep "
    "classes from locking onto noise, and after iterations 1 and 2 a check of every class, which splits a "
    "class that holds two proteins when two others hold one and re-poses particles split between two poses "
    "related by a near-symmetry (0: both off). For 90 particles of a 32-voxel box the steps cost about 2 "
    "iterations, each check 10-20 s"
)

#: Every option, in the order of ``ml_tomo -h``.
OPTIONS: tuple[Option, ...] = (
    Option(("-i",), str, None, "Input images (and angles); required unless --restart", _IO, "METADATA", "r"),
    Option(("-o", "--oroot"), str, "mltomo", "Output rootname", _IO, "ROOT", "w"),
    Option(("--nref",), int, 0, "Number of references to generate (recommended)", _IO, "K"),
    Option(
        ("--ref",),
        str,
        None,
        "or a reference volume, or a metadata file of reference volumes",
        _IO,
        "FILE",
        "r",
    ),
    Option(
        ("--doc",),
        str,
        None,
        "Angles, shifts, ref and missingRegionNumber for the -i images",
        _IO,
        "METADATA",
        "r",
    ),
    Option(
        ("--keep_angles",),
        bool,
        False,
        "Use the metadata angles for the initial references",
        _IO,
        field="keep_angles",
    ),
    Option(
        ("--missing",), str, None, "Metadata file with missing data region definitions", _IO, "METADATA", "r"
    ),
    Option(("--iter",), int, 25, "Maximum number of iterations", _IO, "N", field="max_iter"),
    Option(("--ang",), float, 10.0, "Angular sampling rate in degrees", _SAMPLING, "DEG", field="ang_deg"),
    Option(
        ("--ang_search",),
        float,
        -1.0,
        "Local angular search range in degrees around the metadata angles (-1: exhaustive)",
        _SAMPLING,
        "DEG",
        field="ang_search_deg",
    ),
    Option(
        ("--psi_sampling",),
        float,
        -1.0,
        "In-plane sampling rate in degrees (-1: --ang)",
        _SAMPLING,
        "DEG",
        field="psi_sampling_deg",
        convert=_unset_if_negative,
    ),
    Option(
        ("--dont_limit_psirange",),
        bool,
        False,
        "Full psi range in local searches",
        _SAMPLING,
        field="limit_psi",
        convert=lambda value: not value,
    ),
    Option(
        ("--limit_trans",),
        float,
        -1.0,
        "Maximum translation in pixels (-1: no limit)",
        _SAMPLING,
        "PX",
        field="limit_trans_px",
    ),
    Option(("--tilt0",), float, 0.0, "Lowest tilt angle in degrees", _SAMPLING, "DEG", field="tilt0_deg"),
    Option(("--tiltF",), float, 180.0, "Highest tilt angle in degrees", _SAMPLING, "DEG", field="tiltf_deg"),
    Option(("--reg0",), float, 0.0, "Initial regularisation parameter", _REG, field="reg0"),
    Option(("--regF",), float, 0.0, "Final regularisation parameter", _REG, field="regf"),
    Option(("--reg_steps",), int, 5, "Iterations from reg0 to regF", _REG, "N", field="reg_steps"),
    Option(
        ("--sym",),
        str,
        "c1",
        "Symmetry group: c1, cN, dN, t, o or i (Xmipp's axes)",
        _OTHERS,
        "GROUP",
        field="symmetry",
    ),
    Option(
        ("--dim",),
        int,
        -1,
        "Down-scale the images to N voxels (-1: no)",
        _OTHERS,
        "N",
        field="dim",
        convert=_unset_if_negative,
    ),
    Option(("--maxres",), float, 0.5, "Maximum resolution in 1/pixel", _OTHERS, field="maxres"),
    Option(
        ("--perturb",),
        bool,
        False,
        "Randomly perturb the angular sampling in each iteration",
        _OTHERS,
        field="perturb",
    ),
    Option(
        ("--dont_rotate",),
        bool,
        False,
        "Keep the metadata angles, search shifts",
        _OTHERS,
        field="dont_rotate",
    ),
    Option(
        ("--dont_align",),
        bool,
        False,
        "Keep the metadata angles and shifts",
        _OTHERS,
        field="dont_align",
    ),
    Option(
        ("--only_average",),
        bool,
        False,
        "Average with the metadata angles, shifts and classes (one iteration, no search)",
        _OTHERS,
        field="only_average",
    ),
    Option(
        ("--mask",),
        str,
        None,
        "Mask (1=classify, 0=ignore), with --dont_align",
        _OTHERS,
        "FILE",
        "r",
    ),
    Option(
        ("--maxCC",),
        bool,
        False,
        "Constrained cross-correlation instead of ML",
        _OTHERS,
        field="max_cc",
    ),
    Option(("--thr",), int, 1, "Number of shared-memory threads", _OTHERS, "T", field="threads"),
    Option(
        ("--dont_impute",),
        bool,
        False,
        "Weighted averaging instead of imputation: each reference component is the weighted average of the "
        "particles that observed it, 0 where their summed weight is at most --noimp_threshold",
        _ADDITIONAL,
        field="dont_impute",
    ),
    Option(
        ("--noimp_threshold",),
        float,
        1.0,
        "Threshold against division by zero (--dont_impute and the starting averages)",
        _ADDITIONAL,
        field="noimp_threshold",
    ),
    Option(("--impute_iter",), int, 1, "Imputation iterations", _ADDITIONAL, "N", field="impute_iter"),
    Option(("--istart",), int, 1, "Number of the first iteration", _ADDITIONAL, "N", field="istart"),
    Option(
        ("--noise",),
        float,
        1.0,
        "Expected noise standard deviation",
        _ADDITIONAL,
        "SIGMA",
        field="noise_sigma",
    ),
    Option(
        ("--offset",),
        float,
        3.0,
        "Expected origin offset standard deviation in pixels",
        _ADDITIONAL,
        "PX",
        field="offset_sigma_px",
    ),
    Option(
        ("--frac",),
        str,
        None,
        "Class fractions: metadata with a weight column, or 0.5,0.5",
        _ADDITIONAL,
        "FRACTIONS",
    ),
    Option(("--restart",), str, None, "Continue from <root>_itNNNNNN_log.xmd", _ADDITIONAL, "LOG", "r"),
    Option(
        ("--fix_sigma_noise",),
        bool,
        False,
        "Do not re-estimate the noise standard deviation",
        _ADDITIONAL,
        field="fix_sigma_noise",
    ),
    Option(
        ("--fix_sigma_offset",),
        bool,
        False,
        "Do not re-estimate the offset standard deviation",
        _ADDITIONAL,
        field="fix_sigma_offset",
    ),
    Option(
        ("--fix_fractions",),
        bool,
        False,
        "Do not re-estimate the class fractions",
        _ADDITIONAL,
        field="fix_fractions",
    ),
    Option(("--eps",), float, 5e-5, "Stopping criterion", _ADDITIONAL, field="eps"),
    Option(
        ("--pixel_size",), float, None, "Pixel size in Angstrom (default: header, else 1)", _ADDITIONAL, "A"
    ),
    Option(
        ("--filter",),
        bool,
        False,
        "Low-pass each reference at its FSC = 0.5 resolution every iteration (raised-cosine edge 0.02/pixel)",
        _ADDITIONAL,
        field="filter_references",
    ),
    Option(
        ("--ini_filter",),
        bool,
        False,
        "Low-pass the --nref starting references at the FSC = 0.5 resolution of their random halves",
        _ADDITIONAL,
        field="filter_initial",
    ),
    Option(
        ("--no_SMALLANGLE",),
        bool,
        False,
        "Keep psi angles that repeat near tilt 0",
        _ADDITIONAL,
        field="small_angle",
        convert=lambda value: not value,
    ),
    Option(("--escape",), int, 5, _ESCAPE_HELP, _OURS, "N", field="escape"),
    Option(
        ("--adaptive",),
        bool,
        False,
        "Coarse-to-fine search: score a grid of twice the --ang step, then the --ang grid only near the "
        "coarse orientations that hold 0.999 of each particle's posterior (global searches only)",
        _OURS,
        field="adaptive",
    ),
    Option(("--seed",), int, 0, "Seed of every random choice", _OURS, field="seed"),
    Option(("--scheduler",), str, None, "Run on a running dask.distributed scheduler", _OURS, "ADDRESS"),
    Option(("--workers",), int, None, "Start a local dask cluster of N processes", _OURS, "N"),
    Option(
        ("--chunk",),
        int,
        None,
        "Particles per task (default: the particles spread evenly over the threads or workers, at most 64)",
        _OURS,
        "N",
        field="chunk_size",
    ),
    Option(("--quiet",), bool, False, "No progress messages", _OURS, widget=False),
)
_BY_NAME = {option.name: option for option in OPTIONS}


def default_values() -> dict[str, Any]:
    """Every option's name -> its default."""
    return {option.name: option.default for option in OPTIONS}


def params_from_options(values: Mapping[str, Any], **fixed: Any) -> MLParams:
    """The :class:`MLParams` that option values set; `fixed` gives the fields the inputs decide
    (``n_classes``, ``fractions``, ``pixel_size_A``, ...) and wins over the options."""
    settings = {}
    for option in OPTIONS:
        if option.field is None or option.field in fixed:
            continue
        value = values.get(option.name, option.default)
        settings[option.field] = value if option.convert is None else option.convert(value)
    return MLParams(**settings, **fixed)


def options_to_argv(values: Mapping[str, Any]) -> list[str]:
    """The ``ml_tomo`` arguments giving `values` (options at their default are left out)."""
    argv: list[str] = []
    for name, value in values.items():
        option = _BY_NAME[name]
        if value is None or value == option.default:
            continue
        if option.kind is bool:
            argv.append(option.flags[-1])
        else:
            argv += [option.flags[-1], str(value)]
    return argv
