"""The ``ml_tomo`` command line: Xmipp's options, progress on stderr, outputs in ``<root>_*``, and a demo.

``ml_tomo -i images.sel --nref 3 --missing wedges.doc ...`` runs a refinement; ``ml_tomo demo [DIR]``
writes a synthetic data set with ground truth to ``DIR`` and runs a reference-free 3-class refinement
on it through the same code path. Single-dash spellings of long options (``-missing``) are accepted,
as the original's examples use them. A bad file, value or combination of options ends with one line
``ml_tomo: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from napari_mltomo import demo
from napari_mltomo.cluster import dask_client
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import (
    ChunkProgress,
    MLState,
    StartModel,
    SubtomogramSet,
    check_start,
    internal_size,
    iter_refine,
    prepare_references,
)
from napari_mltomo.io import (
    ANGLE_LABELS,
    SHIFT_LABELS,
    MetaData,
    MetadataError,
    VolumeError,
    checked_volume_shape,
    image_key,
    particle_box,
    read_images,
    read_metadata,
    read_missing_regions,
    read_pixel_size,
    read_volume,
    read_volume_stack,
    voxels_text,
)
from napari_mltomo.io.run import read_command_line, read_restart, write_final, write_iteration

__all__ = [
    "RunRequest",
    "UsageError",
    "main",
    "normalise_argv",
    "parse_command",
    "run",
    "run_demo",
]

PROG = "ml_tomo"
#: Characters of the progress bar shown on a terminal.
_BAR_WIDTH = 30

_METADATA_SUFFIXES = frozenset({".xmd", ".star", ".sel", ".doc", ".txt"})
#: Columns that ``--doc`` brings into the ``-i`` table (replacing any there).
_DOC_LABELS = (
    "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ", "ref", "missingRegionNumber",
)  # fmt: skip
_NOT_IMPLEMENTED_FLAGS = (
    "dont_limit_psirange", "dont_rotate", "dont_align", "only_average", "maxCC", "dont_impute",
    "filter", "ini_filter",
)  # fmt: skip
_LATER = " (not implemented yet)"


class UsageError(ValueError):
    """The command line itself is wrong (unknown option, missing value, not implemented yet)."""


class _Exit(Exception):
    """argparse finished on its own (``--help``); carries the exit status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing a usage block and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


@dataclass(frozen=True)
class RunRequest:
    """A checked command line: the parameters and the inputs of one run.

    Attributes
    ----------
    params : MLParams
        All numeric options (``fractions`` is None when restarting: the restored fractions are used).
    oroot : Path
        Output root.
    images : MetaData
        The ``-i`` rows (enabled only, image paths resolved), with the ``--doc`` columns merged in.
    box_size : int
        Particle box size ``N0``; ``size`` is the internal box size ``N``.
    regions : tuple of MissingRegion
        ``--missing`` definitions (empty without it); ``region_index`` is the 0-based region of each
        particle, or None.
    reference_files : tuple of str
        ``--ref`` maps (empty with ``--nref``); ``reference_weights`` their ``weight`` column, or None.
    restart : Path or None
        ``--restart`` log.
    workers, scheduler : int or None, str or None
        ``--workers`` (local dask cluster) or ``--scheduler`` (running dask scheduler).
    quiet : bool
    command_line : str
        The command as given (written to the logs).
    """

    params: MLParams
    oroot: Path
    images: MetaData
    box_size: int
    size: int
    regions: tuple[MissingRegion, ...]
    region_index: NDArray[np.intp] | None
    reference_files: tuple[str, ...]
    reference_weights: NDArray[np.float64] | None
    restart: Path | None
    workers: int | None
    scheduler: str | None
    quiet: bool
    command_line: str


# --------------------------------------------------------------------------- the parser


def _build_parser() -> tuple[_Parser, frozenset[str]]:
    """The argument parser, and the set of its long option names (``--name``)."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Align and classify subtomograms with missing Fourier regions by maximum likelihood "
            "(Scheres et al. 2009, Structure 17:1563)."
        ),
        epilog=f"'{PROG} demo [DIR]' writes a synthetic data set to DIR and runs a 3-class refinement on it.",
        allow_abbrev=False,
    )
    names: list[str] = []

    def group(title: str) -> Any:
        section = parser.add_argument_group(title)

        def add(*flags: str, **kwargs: Any) -> None:
            section.add_argument(*flags, **kwargs)
            names.extend(flag for flag in flags if flag.startswith("--"))

        return add

    _input_options(group("Input and output"))
    _sampling_options(group("Angular sampling"))
    _regularisation_options(group("Regularisation"))
    _other_options(group("Others"))
    _additional_options(group("Additional options"))
    _our_options(group("napari-mltomo (not in Xmipp)"))
    return parser, frozenset(names)


def _input_options(add: Any) -> None:
    add("-i", dest="input", metavar="METADATA", help="Input images (and angles); required unless --restart")
    add("-o", "--oroot", default="mltomo", metavar="ROOT", help="Output rootname (default: %(default)s)")
    add("--nref", type=int, default=0, metavar="K", help="Number of references to generate (recommended)")
    add("--ref", metavar="FILE", help="or a reference volume, or a metadata file of reference volumes")
    add("--doc", metavar="METADATA", help="Angles, shifts, ref and missingRegionNumber for the -i images")
    add("--keep_angles", action="store_true", help="Use the metadata angles for the initial references")
    add("--missing", metavar="METADATA", help="Metadata file with missing data region definitions")
    add("--iter", type=int, default=25, metavar="N", help="Maximum number of iterations (default: 25)")


def _sampling_options(add: Any) -> None:
    add("--ang", type=float, default=10.0, metavar="DEG", help="Angular sampling rate (default: %(default)s)")
    add("--ang_search", type=float, default=-1.0, metavar="DEG", help="Local search range" + _LATER)
    add("--psi_sampling", type=float, default=-1.0, metavar="DEG", help="In-plane sampling (-1: --ang)")
    add("--dont_limit_psirange", action="store_true", help="Full psi range in local searches" + _LATER)
    add("--limit_trans", type=float, default=-1.0, metavar="PX", help="Maximum translation (-1: no limit)")
    add("--tilt0", type=float, default=0.0, metavar="DEG", help="Lowest tilt angle (default: %(default)s)")
    add("--tiltF", type=float, default=180.0, metavar="DEG", help="Highest tilt angle (default: %(default)s)")


def _regularisation_options(add: Any) -> None:
    add("--reg0", type=float, default=0.0, help="Initial regularisation parameter (default: %(default)s)")
    add("--regF", type=float, default=0.0, help="Final regularisation parameter (default: %(default)s)")
    add("--reg_steps", type=int, default=5, metavar="N", help="Iterations from reg0 to regF (default: 5)")


def _other_options(add: Any) -> None:
    add("--sym", default="c1", metavar="GROUP", help="Symmetry group; only c1 is implemented yet")
    add("--dim", type=int, default=-1, metavar="N", help="Down-scale the images to N voxels (-1: no)")
    add("--maxres", type=float, default=0.5, help="Maximum resolution in 1/pixel (default: %(default)s)")
    add("--perturb", action="store_true", help="Randomly perturb the angular sampling in each iteration")
    add("--dont_rotate", action="store_true", help="Keep the metadata angles, search shifts" + _LATER)
    add("--dont_align", action="store_true", help="Keep the metadata angles and shifts" + _LATER)
    add("--only_average", action="store_true", help="Average with the metadata angles, no ML" + _LATER)
    add("--mask", metavar="FILE", help="Mask (1=classify, 0=ignore), with --dont_align" + _LATER)
    add("--maxCC", action="store_true", help="Constrained cross-correlation instead of ML" + _LATER)
    add("--thr", type=int, default=1, metavar="T", help="Number of shared-memory threads (default: 1)")


def _additional_options(add: Any) -> None:
    add("--dont_impute", action="store_true", help="Weighted averaging instead of imputation" + _LATER)
    add("--noimp_threshold", type=float, default=1.0, help="Threshold against division by zero (default: 1)")
    add("--impute_iter", type=int, default=1, metavar="N", help="Imputation iterations (default: 1)")
    add("--istart", type=int, default=1, metavar="N", help="Number of the first iteration (default: 1)")
    add("--noise", type=float, default=1.0, metavar="SIGMA", help="Expected noise standard deviation (1)")
    add("--offset", type=float, default=3.0, metavar="PX", help="Expected origin offset deviation (3)")
    add("--frac", metavar="FRACTIONS", help="Class fractions: metadata with a weight column, or 0.5,0.5")
    add("--restart", metavar="LOG", help="Continue from <root>_itNNNNNN_log.xmd")
    add("--fix_sigma_noise", action="store_true", help="Do not re-estimate the noise standard deviation")
    add("--fix_sigma_offset", action="store_true", help="Do not re-estimate the offset standard deviation")
    add("--fix_fractions", action="store_true", help="Do not re-estimate the class fractions")
    add("--eps", type=float, default=5e-5, help="Stopping criterion (default: %(default)s)")
    add("--pixel_size", type=float, metavar="A", help="Pixel size in Angstrom (default: header, else 1)")
    add("--filter", action="store_true", help="Low-pass the references at their resolution" + _LATER)
    add("--ini_filter", action="store_true", help="Low-pass the initial references" + _LATER)
    add("--no_SMALLANGLE", action="store_true", help="Keep psi angles that repeat near tilt 0")


def _our_options(add: Any) -> None:
    add(
        "--escape",
        type=int,
        default=5,
        metavar="N",
        help="For --nref starts: N annealed start-up steps at a 16-voxel box before iteration 1, which keep "
        "classes from locking onto noise (0: off; default: %(default)s). Five cost about 1.8 iterations "
        "of a 32-voxel run, or 12 of a 16-voxel run",
    )
    add("--seed", type=int, default=0, help="Seed of every random choice (default: %(default)s)")
    add("--scheduler", metavar="ADDRESS", help="Run on a running dask.distributed scheduler")
    add("--workers", type=int, metavar="N", help="Start a local dask cluster of N processes")
    add("--chunk", type=int, default=16, metavar="N", help="Particles per task (default: %(default)s)")
    add("--quiet", action="store_true", help="No progress messages")


def normalise_argv(argv: Sequence[str], long_options: frozenset[str]) -> list[str]:
    """Turn single-dash long options (``-missing``, ``-iter=5``) into ``--missing``, ``--iter=5``.

    Only names that are long options of the parser are changed, so values such as ``-1`` and the
    short options ``-i``/``-o``/``-h`` pass through.
    """
    normalised = []
    for arg in argv:
        name = arg.partition("=")[0]
        if arg.startswith("-") and not arg.startswith("--") and "-" + name in long_options:
            arg = "-" + arg
        normalised.append(arg)
    return normalised


def _parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser, long_options = _build_parser()
    normalised = normalise_argv(argv, long_options)
    return parser.parse_args(normalised), normalised


def _refuse_not_implemented(args: argparse.Namespace) -> None:
    refused = [f"--{name}" for name in _NOT_IMPLEMENTED_FLAGS if getattr(args, name)]
    if args.ang_search > 0:
        refused.insert(0, "--ang_search")
    if args.sym.lower() != "c1":
        refused.append(f"--sym {args.sym}")
    if args.mask is not None:
        refused.append("--mask")
    if refused:
        verb = "is" if len(refused) == 1 else "are"
        raise UsageError(f"{', '.join(refused)} {verb} not implemented yet")


# --------------------------------------------------------------------------- argv -> RunRequest


def parse_command(argv: Sequence[str]) -> RunRequest:
    """Check a command line and the files it names, reading only metadata and volume headers.

    Parameters
    ----------
    argv : sequence of str
        The arguments after the program name. With ``--restart LOG`` and no ``-i``, the command line
        stored in ``LOG`` is used, with `argv` appended (so later options override it).

    Returns
    -------
    RunRequest

    Raises
    ------
    UsageError
        For an unknown or malformed option, or one that is not implemented yet.
    ParameterError
        For an invalid value or combination; the message starts with the option.
    MetadataError, VolumeError, FileNotFoundError
        For a missing or malformed file; the message names it.
    """
    args, normalised = _parse_args(argv)
    if args.input is None and args.restart is not None:
        normalised = _logged_argv(Path(args.restart)) + normalised
        args, normalised = _parse_args(normalised)
    _refuse_not_implemented(args)
    if args.input is None:
        raise UsageError("the following arguments are required: -i")
    if args.workers is not None and args.scheduler is not None:
        raise UsageError("give --workers or --scheduler, not both")
    if args.workers is not None and args.workers < 1:
        raise ParameterError(f"--workers must be at least 1, got {args.workers}")
    if args.restart is not None and not Path(args.restart).is_file():
        raise FileNotFoundError(2, "--restart: no such file", args.restart)

    images = _read_particles(args)
    box_size = particle_box(images, args.input)
    regions, region_index = _missing_regions(args, images)
    reference_files, reference_weights = _reference_files(args.ref, box_size)
    params = _params(args, images, n_classes=_n_classes(args, reference_files))
    if args.restart is not None:
        params = dataclasses.replace(params, fractions=None)
    _check_angles(params, images, args.input)
    return RunRequest(
        params=params,
        oroot=Path(args.oroot),
        images=images,
        box_size=box_size,
        size=internal_size(box_size, params.dim),
        regions=regions,
        region_index=region_index,
        reference_files=reference_files,
        reference_weights=reference_weights,
        restart=None if args.restart is None else Path(args.restart),
        workers=args.workers,
        scheduler=args.scheduler,
        quiet=args.quiet,
        command_line=shlex.join([PROG, *normalised]),
    )


def _logged_argv(log: Path) -> list[str]:
    """The arguments of the run that wrote `log`, without its own ``--restart``."""
    if not log.is_file():
        raise FileNotFoundError(2, "--restart: no such file", str(log))
    words = shlex.split(read_command_line(log))
    arguments = words[1:] if words[:1] == [PROG] else words
    kept: list[str] = []
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word == "--restart":
            skip = True
        elif not word.startswith("--restart="):
            kept.append(word)
    return kept


def _read_particles(args: argparse.Namespace) -> MetaData:
    images = read_images(args.input)
    if len(images) == 0:
        raise MetadataError(args.input, "no enabled images")
    if args.doc is not None:
        images = _merge_doc(images, args.doc, args.input)
    return images


def _merge_doc(images: MetaData, doc_path: str, input_path: str) -> MetaData:
    """Copy the angle, shift, ref and missing-region columns of ``--doc`` into the ``-i`` rows, by image."""
    doc = read_images(doc_path)
    rows = {image_key(str(name)): row for row, name in enumerate(doc["image"])}
    picked = []
    for name in images["image"]:
        row = rows.get(image_key(str(name)))
        if row is None:
            raise MetadataError(doc_path, f"no row for image {name} of {input_path}")
        picked.append(row)
    matched = doc.take(np.asarray(picked, dtype=np.intp))
    return images.with_columns(**{label: matched[label] for label in _DOC_LABELS if label in matched})


def _missing_regions(
    args: argparse.Namespace, images: MetaData
) -> tuple[tuple[MissingRegion, ...], NDArray[np.intp] | None]:
    if args.missing is None:
        return (), None
    regions = tuple(read_missing_regions(args.missing))
    if "missingRegionNumber" not in images:
        raise MetadataError(
            args.input, "--missing needs a missingRegionNumber column (in -i or --doc), one per image"
        )
    numbers = images["missingRegionNumber"]
    bad = np.flatnonzero((numbers < 1) | (numbers > len(regions)))
    if bad.size:
        i = bad[0]
        raise MetadataError(
            args.input,
            f"image {images['image'][i]} has missingRegionNumber {numbers[i]}, but {args.missing} "
            f"defines regions 1..{len(regions)}",
        )
    return regions, (numbers - 1).astype(np.intp)


def _reference_files(ref: str | None, box_size: int) -> tuple[tuple[str, ...], NDArray[np.float64] | None]:
    """``--ref``: one volume, or a metadata file of volumes (with an optional ``weight`` column)."""
    if ref is None:
        return (), None
    weights = None
    if Path(ref).suffix.lower() in _METADATA_SUFFIXES:
        table = read_images(ref)
        if len(table) == 0:
            raise MetadataError(ref, "no enabled references")
        files = tuple(str(name) for name in table["image"])
        if "weight" in table:
            weights = np.asarray(table["weight"], dtype=np.float64)
    else:
        files = (ref,)
    for name in files:
        shape = checked_volume_shape(name, f"--ref {ref}")
        if shape != (box_size,) * 3:
            raise ParameterError(
                f"--ref {name} is {voxels_text(shape)} but the particles are {voxels_text((box_size,) * 3)}; "
                "give references of the particle box size"
            )
    return files, weights


def _n_classes(args: argparse.Namespace, reference_files: tuple[str, ...]) -> int:
    if reference_files:
        if args.nref not in (0, len(reference_files)):
            raise ParameterError(
                f"--nref {args.nref} conflicts with --ref {args.ref}, which holds {len(reference_files)} "
                "reference(s); give one of them"
            )
        return len(reference_files)
    if args.nref < 1:
        raise ParameterError("--nref: give the number of classes (--nref K) or starting maps (--ref FILE)")
    return args.nref


def _fractions(text: str | None) -> tuple[float, ...] | None:
    """``--frac``: a metadata file with a ``weight`` column (one row per class) or ``0.5,0.3,0.2``."""
    if text is None:
        return None
    if Path(text).is_file():
        table = read_metadata(text)
        if "weight" not in table:
            raise MetadataError(text, "--frac needs a weight column, one row per class")
        return tuple(float(weight) for weight in table["weight"])
    try:
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise ParameterError(
            f"--frac {text!r} is neither a file nor comma-separated numbers such as 0.5,0.3,0.2"
        ) from None


def _params(args: argparse.Namespace, images: MetaData, *, n_classes: int) -> MLParams:
    pixel_size = args.pixel_size
    if pixel_size is None:
        pixel_size = read_pixel_size(str(images["image"][0])) or 1.0
    return MLParams(
        n_classes=n_classes,
        max_iter=args.iter,
        istart=args.istart,
        ang_deg=args.ang,
        psi_sampling_deg=None if args.psi_sampling < 0 else args.psi_sampling,
        tilt0_deg=args.tilt0,
        tiltf_deg=args.tiltF,
        small_angle=not args.no_SMALLANGLE,
        perturb=args.perturb,
        limit_trans_px=args.limit_trans,
        dim=None if args.dim < 0 else args.dim,
        maxres=args.maxres,
        reg0=args.reg0,
        regf=args.regF,
        reg_steps=args.reg_steps,
        impute_iter=args.impute_iter,
        noimp_threshold=args.noimp_threshold,
        noise_sigma=args.noise,
        offset_sigma_px=args.offset,
        fix_sigma_noise=args.fix_sigma_noise,
        fix_sigma_offset=args.fix_sigma_offset,
        fix_fractions=args.fix_fractions,
        fractions=_fractions(args.frac),
        keep_angles=args.keep_angles,
        eps=args.eps,
        pixel_size_A=pixel_size,
        threads=args.thr,
        chunk_size=args.chunk,
        seed=args.seed,
        escape=0 if args.ref or args.keep_angles else args.escape,
    )


def _check_angles(params: MLParams, images: MetaData, input_path: str) -> None:
    if not params.keep_angles:
        return
    if not all(label in images for label in ANGLE_LABELS):
        raise ParameterError(
            f"--keep_angles needs angleRot, angleTilt and anglePsi in -i or --doc; {input_path} has none"
        )
    angles = images.float_columns(ANGLE_LABELS)
    if angles is None or not np.all(np.isfinite(angles)):
        raise ParameterError(f"--keep_angles: some images of {input_path} have no angles")


# --------------------------------------------------------------------------- running


def _subtomograms(request: RunRequest) -> SubtomogramSet:
    """The particles as a lazy dask array (one task per file) with what the metadata knows."""
    volumes = read_volume_stack(request.images["image"], (request.box_size,) * 3)
    return SubtomogramSet(
        volumes,
        request.regions,
        request.region_index,
        request.images.float_columns(ANGLE_LABELS),
        request.images.float_columns(SHIFT_LABELS),
    )


def _refuse_non_finite(volumes: da.Array, names: Sequence[str], threads: int, client: Any) -> None:
    """Read every particle once (on ``client`` if given); a particle with NaN or Inf voxels stops the run
    before anything is written."""
    finite = da.isfinite(volumes).all(axis=(1, 2, 3))
    if client is not None:
        finite = client.compute(finite).result()
    else:
        finite = finite.compute(scheduler="threads", num_workers=threads)
    if not np.all(finite):
        bad = np.flatnonzero(~finite)
        others = len(bad) - 1
        more = f" (and {others} more particle{'s' if others > 1 else ''})" if others else ""
        raise VolumeError(f"{names[bad[0]]}: has NaN or Inf voxels{more}; refine only finite particles")


def _start_model(request: RunRequest) -> StartModel | None:
    """The model to start from: ``--restart``, ``--ref`` maps, or None (random subsets)."""
    params = request.params
    if request.restart is not None:
        point = read_restart(request.restart)
        try:
            check_start(point.model, params, request.size)
        except ParameterError as error:
            raise ParameterError(f"--restart {request.restart}: {error}") from None
        last = params.istart + params.max_iter - 1
        if point.iteration >= last:
            raise ParameterError(f"--restart is at iteration {point.iteration}; raise --iter above it")
        return point.model
    if not request.reference_files:
        return None
    maps = np.stack([read_volume(name) for name in request.reference_files])
    return StartModel(
        references=prepare_references(maps, request.size),
        fractions=request.reference_weights,
        iteration=params.istart - 1,
    )


class _Progress:
    """One line per start-up step and per iteration on stderr (nothing with ``--quiet``); on a terminal,
    a bar with the time left redrawn as the chunks of particles of each pass finish."""

    def __init__(self, request: RunRequest) -> None:
        self.quiet = request.quiet
        self.last = request.params.istart + request.params.max_iter - 1
        self.started = self.mark = time.perf_counter()
        self.stage, self.stage_started, self.bar_shown = "", self.started, False

    def say(self, text: str) -> None:
        if self.quiet:
            return
        self.clear()
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)
        self.mark = time.perf_counter()

    def chunk(self, progress: ChunkProgress) -> None:
        if self.quiet or not sys.stderr.isatty():
            return
        if progress.stage != self.stage:
            self.stage, self.stage_started = progress.stage, self.mark
        now = time.perf_counter()
        left = (now - self.stage_started) / progress.done * (progress.total - progress.done)
        filled = round(_BAR_WIDTH * progress.done / progress.total)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        line = f"{PROG}: {progress.stage} [{bar}] {progress.done}/{progress.total} chunks, {left:.0f} s left"
        columns = shutil.get_terminal_size().columns
        sys.stderr.write(f"\r{line[: columns - 1]}\033[K")
        sys.stderr.flush()
        self.bar_shown = True
        if progress.done == progress.total:
            self.mark = now  # the next pass starts here

    def clear(self) -> None:
        """Remove the bar, so that what follows (an error, an interruption) starts its own line."""
        if self.bar_shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.bar_shown = False

    def report(self, state: MLState) -> None:
        elapsed = time.perf_counter() - self.started
        if state.stats is None:
            self.say(f"starting references ready ({elapsed:.1f} s)")
            return
        fractions = " ".join(f"{value:.3f}" for value in state.fractions)
        converged = "  converged" if state.converged else ""
        self.say(
            f"iteration {state.iteration}/{self.last}  LL {state.log_likelihood:.6g}  "
            f"pMax {state.mean_pmax:.3f}  sigma {state.sigma_noise:.4g}  "
            f"fractions {fractions}  {elapsed:.1f} s{converged}"
        )

    def report_startup(self, state: MLState) -> None:
        elapsed = time.perf_counter() - self.started
        self.say(
            f"start-up step {state.startup_step}  box {state.size}  temperature {state.temperature:.3g}  "
            f"pMax {state.mean_pmax:.3f}  {elapsed:.1f} s"
        )


def _summary(request: RunRequest) -> str:
    params = request.params
    start = "--restart" if request.restart else ("--ref" if request.reference_files else "random subsets")
    where = (
        f"scheduler {request.scheduler}"
        if request.scheduler
        else f"{request.workers} worker processes"
        if request.workers
        else f"{params.threads} thread(s)"
    )
    return (
        f"{len(request.images)} particles of {request.box_size}^3 (internal {request.size}^3), "
        f"{params.n_classes} classes from {start}, {len(request.regions)} missing region(s), "
        f"iterations {params.istart}..{params.istart + params.max_iter - 1}, --ang {params.ang_deg:g}, "
        f"pixel {params.pixel_size_A:g} A, {where}, output {request.oroot}_*"
    )


@contextlib.contextmanager
def _cleared(progress: _Progress) -> Iterator[None]:
    """Clear the progress bar however the block ends."""
    try:
        yield
    finally:
        progress.clear()


def run(request: RunRequest) -> MLState:
    """Run a checked command: refine, writing every iteration's files and the final ones.

    Parameters
    ----------
    request : RunRequest

    Returns
    -------
    MLState
        The last state.
    """
    data = _subtomograms(request)
    start = _start_model(request)
    progress = _Progress(request)
    output = {
        "images": request.images,
        "regions_used": bool(request.regions),
        "pixel_size_A": request.params.pixel_size_A,
        "box_size": request.box_size,
    }
    state = None
    with dask_client(request.scheduler, request.workers) as client, _cleared(progress):
        _refuse_non_finite(data.volumes, request.images["image"], request.params.threads, client)
        progress.say(_summary(request))
        request.oroot.parent.mkdir(parents=True, exist_ok=True)
        states = iter_refine(data, request.params, start, client=client, on_chunk=progress.chunk)
        for number, state in enumerate(states):
            if state.startup_step:
                progress.report_startup(state)
                continue
            if number == 0 and request.restart is not None:
                continue  # the restored model: its files are already there
            write_iteration(request.oroot, state, command_line=request.command_line, **output)
            progress.report(state)
    assert state is not None
    write_final(request.oroot, state, **output)
    progress.say(f"done; final results in {request.oroot}_img.xmd and {request.oroot}_ref.xmd")
    return state


def _fail(message: str, status: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _error_text(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"{err.filename}: {err.strerror or 'no such file'}"
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ml_tomo``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``). ``demo [DIR]`` runs the demo.

    Returns
    -------
    int
        Exit status: 0 on success, 2 for a bad command line or input, 1 for another I/O failure,
        130 when interrupted.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments[:1] == ["demo"]:
            return run_demo(arguments[1:])
        run(parse_command(arguments))
    except _Exit as stop:
        return stop.status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; files already written are complete", file=sys.stderr)
        return 130
    except (UsageError, ParameterError, MetadataError, VolumeError, FileNotFoundError, ValueError) as err:
        return _fail(_error_text(err))
    except OSError as err:
        return _fail(_error_text(err), status=1)
    return 0


# --------------------------------------------------------------------------- demo


def run_demo(argv: Sequence[str]) -> int:
    """``ml_tomo demo [DIR]``: write the synthetic data set to DIR, refine it, and score the result.

    The data are :func:`napari_mltomo.demo.write_demo_data`'s; the refinement is ``ml_tomo -i DIR/images.xmd
    --missing DIR/wedges.xmd --oroot DIR/run/demo`` plus ``demo.DEMO_ARGS``. Prints the adjusted Rand index
    of the classes, the median pairwise orientation error (overall and for each true class) and the wall time.

    Returns
    -------
    int
        The exit status of the refinement (0 if it ran; the scores are printed, not checked).
    """
    parser = _Parser(prog=f"{PROG} demo", description="Refine a synthetic data set with known answers.")
    parser.add_argument("dir", nargs="?", default="mltomo_demo", help="Output folder (default: %(default)s)")
    folder = Path(parser.parse_args(argv).dir)
    started = time.perf_counter()
    truth = demo.write_demo_data(folder)
    root = folder / "run" / "demo"
    inputs = ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd")]
    status = main([*inputs, "--oroot", str(root), *demo.DEMO_ARGS])
    if status:
        return status
    demo.print_demo_scores(truth, read_images(f"{root}_img.xmd"), time.perf_counter() - started)
    return 0
