"""Everything a run reads, checked, from the option values of the command line or the widget.

:func:`read_inputs` takes option values (names as in :data:`napari_mltomo.options.OPTIONS`), reads the
particle metadata (with ``--doc`` merged in), the missing regions, the start references and the fractions,
and returns a :class:`RunInputs` that gives the engine its particles (a lazy stack) and its start model.
Only metadata and volume headers are read here; a bad file or value raises one error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.argv import option_values, stored_argv
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import (
    StartModel,
    SubtomogramSet,
    check_start,
    internal_size,
    prepare_references,
)
from napari_mltomo.core.stages import last_iteration
from napari_mltomo.io import (
    ANGLE_LABELS,
    SHIFT_LABELS,
    MetaData,
    MetadataError,
    checked_volume_shape,
    image_key,
    particle_box,
    read_finite_volume,
    read_images,
    read_metadata,
    read_missing_regions,
    read_pixel_size,
    read_volume_stack,
    voxels_text,
)
from napari_mltomo.io.interchange import read_posed_particles, table_format
from napari_mltomo.io.results import RunResults
from napari_mltomo.io.run import read_restart
from napari_mltomo.options import default_values, params_from_options

__all__ = ["RunInputs", "error_text", "read_inputs", "run_missing_regions"]

_METADATA_SUFFIXES = frozenset({".xmd", ".star", ".sel", ".doc", ".txt"})
#: Columns that ``--doc`` brings into the ``-i`` table (replacing any there).
_DOC_LABELS = (
    "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ", "ref", "missingRegionNumber",
)  # fmt: skip


@dataclass(frozen=True)
class RunInputs:
    """The checked inputs of one run.

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
        The equivalent command (written to the logs).
    named_files : tuple of str
        The files the options name (``-i``, ``--doc``, ``--missing``, ``--ref``, ``--mask``, ``--restart``
        and ``--frac`` when it is a file), as given.
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
    focus_mask: NDArray[np.float32] | None
    restart: Path | None
    workers: int | None
    scheduler: str | None
    quiet: bool
    command_line: str
    named_files: tuple[str, ...] = ()

    def pixel_size_at(self, size: int) -> float:
        """The pixel size in Å of maps of ``size`` voxels (the engine's internal box, or the start-up's)."""
        return self.params.pixel_size_A * self.box_size / size

    def resolution_A(self, shell: int) -> float:
        """The resolution in Å of Fourier shell ``shell`` (of the input box; 0 is read as 1)."""
        return self.box_size * self.params.pixel_size_A / max(shell, 1)

    def subtomograms(self) -> SubtomogramSet:
        """The particles as a lazy dask array (one task per file) with what the metadata knows."""
        return SubtomogramSet(
            read_volume_stack(self.images["image"], (self.box_size,) * 3),
            self.regions,
            self.region_index,
            self.images.float_columns(ANGLE_LABELS),
            self.images.float_columns(SHIFT_LABELS),
            _metadata_classes(self.images) if self.params.only_average else None,
            self.focus_mask,
        )

    def start_model(self) -> StartModel | None:
        """The model to start from: ``--restart`` (from the last iteration, or a converged one, the run only
        writes the final files), ``--ref`` maps, or None (random subsets)."""
        params = self.params
        if self.restart is not None:
            point = read_restart(self.restart)
            try:
                check_start(point.model, params, self.size)
            except ParameterError as error:
                raise ParameterError(f"--restart {self.restart}: {error}") from None
            last = last_iteration(params)
            if point.iteration > last:
                raise ParameterError(
                    f"--restart is at iteration {point.iteration}, past the last one ({last}); raise --iter"
                )
            return point.model
        if not self.reference_files:
            return None
        maps = [read_finite_volume(name, "--ref maps must be finite") for name in self.reference_files]
        return StartModel(
            references=prepare_references(np.stack(maps), self.size),
            fractions=self.reference_weights,
            iteration=params.istart - 1,
        )


def read_inputs(values: Mapping[str, Any], command_line: str) -> RunInputs:
    """Check option values and the files they name, reading only metadata and volume headers.

    Parameters
    ----------
    values : mapping
        Option name -> value; options not given take their default.
    command_line : str
        The equivalent ``ml_tomo`` command, for the logs.

    Returns
    -------
    RunInputs

    Raises
    ------
    ParameterError
        For an invalid value or combination; the message starts with the option.
    MetadataError, VolumeError, FileNotFoundError
        For a missing or malformed file; the message names it.
    """
    option = {**default_values(), **values}
    if option["input"] is None:
        raise ParameterError("the following arguments are required: -i")
    if option["workers"] is not None and option["scheduler"] is not None:
        raise ParameterError("give --workers or --scheduler, not both")
    if option["workers"] is not None and option["workers"] < 1:
        raise ParameterError(f"--workers must be at least 1, got {option['workers']}")
    restart = option["restart"]
    if restart is not None and not Path(restart).is_file():
        raise FileNotFoundError(2, "--restart: no such file", restart)

    posed = read_posed_particles(
        option["input"],
        dynamo_data=option["dynamo_data"],
        relion_project=option["relion_project"],
        allow_premultiplied=bool(option["allow_premultiplied"]),
    )
    images = _checked_particles(posed.images, option["input"], option["doc"])
    box_size = particle_box(images, option["input"])
    regions, region_index = _missing_regions(option["missing"], option["input"], images, posed.regions)
    reference_files, reference_weights = _reference_files(option["ref"], box_size)
    pixel_size = option["pixel_size"] or posed.pixel_size_A
    if pixel_size is None:
        pixel_size = read_pixel_size(str(images["image"][0])) or 1.0
    fractions = _fractions(option["frac"])
    fixed = {"escape": 0} if reference_files or option["keep_angles"] else {}  # it is for random starts
    params = params_from_options(
        option,
        n_classes=_n_classes(
            option["nref"], option["ref"], reference_files, images, bool(option["only_average"])
        ),
        fractions=None if restart is not None else fractions,  # a restart keeps its fractions
        pixel_size_A=pixel_size,
        **fixed,
    )
    _check_angles(params, images, option["input"])
    return RunInputs(
        params=params,
        oroot=Path(option["oroot"]),
        images=images,
        box_size=box_size,
        size=internal_size(box_size, params.dim),
        regions=regions,
        region_index=region_index,
        reference_files=reference_files,
        reference_weights=reference_weights,
        focus_mask=_focus_mask(option["mask"], box_size),
        restart=None if restart is None else Path(restart),
        workers=option["workers"],
        scheduler=option["scheduler"],
        quiet=bool(option["quiet"]),
        command_line=command_line,
        named_files=_named_files(option),
    )


def error_text(err: BaseException) -> str:
    """One line for an error a user can cause: ``file: reason`` for a file error, else the message."""
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror or type(err).__name__}"
    return " ".join(str(err).split()) or type(err).__name__


def run_missing_regions(run: RunResults) -> list[MissingRegion] | None:
    """The missing regions of a run on disk: its ``--missing`` definitions (its stored command line parsed
    as ``ml_tomo`` parses it), else those its ``-i`` table defines (RELION, Dynamo); None if it had none or
    the file cannot be found. A relative path is tried from the working directory, then from the run's
    folder and its parents (it was typed where the run started)."""
    try:
        option = option_values(stored_argv(run.command_line()))
    except ValueError:  # a command line this version cannot parse
        return None
    path = option["missing"] or option["input"]
    if path is None:
        return None
    for folder in (Path(), run.root.parent, *run.root.parent.parents):
        if not (folder / path).is_file():
            continue
        if option["missing"] is not None:
            return read_missing_regions(folder / path)
        if table_format(folder / path) == "xmipp":
            return None
        posed = read_posed_particles(
            folder / path, dynamo_data=option["dynamo_data"], relion_project=option["relion_project"]
        )
        return list(posed.regions) or None
    return None


def _named_files(option: Mapping[str, Any]) -> tuple[str, ...]:
    """The files the options name (``--frac`` only when it is a file)."""
    names = [option[name] for name in ("input", "doc", "missing", "ref", "mask", "restart")]
    if option["frac"] is not None and Path(option["frac"]).is_file():
        names.append(option["frac"])
    return tuple(str(name) for name in names if name is not None)


def _checked_particles(images: MetaData, input_path: str, doc_path: str | None) -> MetaData:
    if len(images) == 0:
        raise MetadataError(input_path, "no enabled images")
    if doc_path is not None:
        images = _merge_doc(images, doc_path, input_path)
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
    missing: str | None, input_path: str, images: MetaData, defined: tuple[MissingRegion, ...] = ()
) -> tuple[tuple[MissingRegion, ...], NDArray[np.intp] | None]:
    """The regions of ``--missing``, else those the ``-i`` table defines (RELION, Dynamo), and the 0-based
    region of each particle."""
    if missing is None and not defined:
        return (), None
    regions = tuple(read_missing_regions(missing)) if missing is not None else defined
    missing = missing or input_path
    if "missingRegionNumber" not in images:
        raise MetadataError(
            input_path, "--missing needs a missingRegionNumber column (in -i or --doc), one per image"
        )
    numbers = images["missingRegionNumber"]
    bad = np.flatnonzero((numbers < 1) | (numbers > len(regions)))
    if bad.size:
        i = bad[0]
        raise MetadataError(
            input_path,
            f"image {images['image'][i]} has missingRegionNumber {numbers[i]}, but {missing} "
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


def _focus_mask(path: str | None, box_size: int) -> NDArray[np.float32] | None:
    """``--mask``: a cube of the particle box with values in [0, 1]."""
    if path is None:
        return None
    shape = checked_volume_shape(path, "--mask")  # from the header, before reading the voxels
    if shape != (box_size,) * 3:
        raise ParameterError(f"--mask {path}: is {shape}, the particles are {(box_size,) * 3}")
    mask = read_finite_volume(path, "--mask needs values in [0, 1]")
    if not (mask.min() >= 0.0 and mask.max() <= 1.0):
        raise ParameterError(f"--mask {path}: values must lie in [0, 1] (1 = classify, 0 = ignore)")
    return mask


def _metadata_classes(images: MetaData) -> NDArray[np.intp]:
    """0-based classes from the ``ref`` column; all 0 if any image has none (``--only_average``)."""
    refs = images.float_columns(["ref"])
    if refs is None or not np.all(np.isfinite(refs)) or refs.min() < 1:
        return np.zeros(len(images), dtype=np.intp)
    return refs[:, 0].astype(np.intp) - 1


def _n_classes(
    nref: int, ref: str | None, reference_files: tuple[str, ...], images: MetaData, only_average: bool
) -> int:
    if only_average:
        return int(_metadata_classes(images).max()) + 1
    if reference_files:
        if nref not in (0, len(reference_files)):
            raise ParameterError(
                f"--nref {nref} conflicts with --ref {ref}, which holds {len(reference_files)} "
                "reference(s); give one of them"
            )
        return len(reference_files)
    if nref < 1:
        raise ParameterError("--nref: give the number of classes (--nref K) or starting maps (--ref FILE)")
    return nref


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


def _check_angles(params: MLParams, images: MetaData, input_path: str) -> None:
    """Options that start from or search around the metadata angles need them for every image."""
    needing = params.angle_options
    if not needing:
        return
    if not all(label in images for label in ANGLE_LABELS):
        raise ParameterError(
            f"{needing[0]} needs angleRot, angleTilt and anglePsi in -i or --doc; {input_path} has none"
        )
    angles = images.float_columns(ANGLE_LABELS)
    if angles is None or not np.all(np.isfinite(angles)):
        raise ParameterError(f"{needing[0]}: some images of {input_path} have no angles")
