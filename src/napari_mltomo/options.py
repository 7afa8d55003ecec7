"""The options of ``ml_tomo`` and of the Refinement widget: one table that both faces are built from.

:data:`OPTIONS` declares every option once (flag, group, type, default, help and what it sets in
:class:`~napari_mltomo.core.params.MLParams`); :func:`params_from_options` turns option values into
``MLParams``. :mod:`napari_mltomo.argv` builds the ``argparse`` parser of the command line from the table
and writes option values back as arguments, and the widget generates its fields from it, so their
defaults cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from napari_mltomo.core.params import MLParams

__all__ = [
    "GROUPS",
    "OPTIONS",
    "PROG",
    "Option",
    "default_values",
    "params_from_options",
]

PROG = "ml_tomo"


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
    "Input and output", "Angular sampling", "Regularisation", "Others", "Additional options",
    "napari-mltomo (not in Xmipp)",
)  # fmt: skip
_IO, _SAMPLING, _REG, _OTHERS, _ADDITIONAL, _OURS = GROUPS

_ESCAPE_HELP = (
    "For --nref starts: N annealed start-up steps at a 16-voxel box before iteration 1, which keep "
    "classes from locking onto noise, and after iterations 1 and 2 a check of every class, which splits a "
    "class that holds two proteins when two others hold one and re-poses particles split between two poses "
    "related by a near-symmetry (0: both off). For 90 particles of a 32-voxel box the steps cost about 0.8 "
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
    Option(("--mask",), str, None, "Mask (1=classify, 0=ignore), with --dont_align", _OTHERS, "FILE", "r"),
    Option(("--maxCC",), bool, False, "Constrained cross-correlation instead of ML", _OTHERS, field="max_cc"),
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
    Option(
        ("--refine_to",),
        float,
        None,
        "After the --iter iterations at --ang, refine each particle's pose by local searches at half the "
        "step, then half again, down to DEG, with references low-passed at their FSC = 0.5 resolution (2 "
        "iterations a step; stops early when no class's resolution improves)",
        _OURS,
        "DEG",
        field="refine_to_deg",
    ),
    Option(("--seed",), int, 0, "Seed of every random choice", _OURS, field="seed"),
    Option(
        ("--dynamo_data",),
        str,
        None,
        "With -i TABLE.tbl: the Dynamo data folder of its particle_NNNNN.em files (default: the "
        "table's folder)",
        _OURS,
        "DIR",
    ),
    Option(
        ("--relion_project",),
        str,
        None,
        "With -i PARTICLES.star of RELION: the folder its image names are relative to (default: the working "
        "folder, then the file's)",
        _OURS,
        "DIR",
    ),
    Option(
        ("--allow_premultiplied",),
        bool,
        False,
        "With -i PARTICLES.star of RELION: accept particles marked as multiplied by their CTF",
        _OURS,
    ),
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
