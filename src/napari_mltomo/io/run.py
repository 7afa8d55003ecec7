"""The files a refinement leaves behind (``<root>`` is ``--oroot``), and restarting from them.

Per iteration ``NNNNNN`` (six digits), :meth:`RunWriter.write_iteration` writes

* ``<root>_itNNNNNN.doc``: the particle table (Xmipp STAR), the input columns plus ``angleRot angleTilt
  anglePsi shiftX shiftY shiftZ ref logLikelihood pMax`` (and ``missingRegionNumber`` with missing data);
* ``<root>_itNNNNNN_ref.xmd``: block ``classes``, one row per class (``image enabled ref weight
  signalChange resolution``);
* ``<root>_itNNNNNN_refKKKKKK.mrc``: class references at the input box size (float32, input pixel size);
* ``<root>_itNNNNNN_orirefKKKKKK.mrc``: the references before regularisation (only when regularised);
* ``<root>_itNNNNNN_wedgeKKKKKK.mrc``: per-class Fourier coverage, fftshifted (only with missing data);
* ``<root>_itNNNNNN.fsc``: one block ``class_KKKKKK`` per class (``resolutionFreqFourier`` in 1/Å,
  ``resolutionFRC``);
* ``<root>_itNNNNNN_model.npz``: the model exactly (references at the internal box in float64, fractions,
  sigmas, whether it converged), so that a restart continues bit for bit;
* ``<root>_itNNNNNN_log.xmd``: the scalars needed to restart, with the command line as header comment.
  It is written last, so a log on disk means every other file of its iteration is complete.

The starting model (iteration ``istart - 1``, no E-step yet) has no coverage maps nor FSC; its ``.doc`` is
the input table. :meth:`RunWriter.write_final` writes ``<root>_img.xmd``, ``<root>_ref.xmd`` (with one
``classKKKKKK_images`` block per class, as Scipion reads it), ``<root>_refKKKKKK.mrc`` and ``<root>.fsc``;
:meth:`RunWriter.write_final_from` writes the same from an iteration's files on disk.

Every file is written to a temporary name and renamed, so an interrupted run never leaves half a file;
:func:`remove_temporaries` removes the temporary files of a killed one.
File names inside these tables are relative to the folder of the table (absolute input paths stay
absolute), so a run can be read from any working directory with :func:`~napari_mltomo.io.read_images`.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.core.fourier import centred_coverage, fourier_rescale
from napari_mltomo.core.refine import MLState, StartModel
from napari_mltomo.io._atomic import atomic_path, temporary_target
from napari_mltomo.io.metadata import MetaData, MetadataError, read_star, write_star
from napari_mltomo.io.run_model import read_model, write_model
from napari_mltomo.io.run_paths import RunPaths
from napari_mltomo.io.volumes import read_volume, write_volume

__all__ = [
    "RestartPoint",
    "RunPaths",
    "RunWriter",
    "beside",
    "particle_table",
    "read_command_line",
    "read_restart",
    "remove_temporaries",
]

#: Labels of the iteration log; ``xSize`` (an Xmipp label) holds the internal box size ``N``.
LOG_LABELS: tuple[str, ...] = (
    "logLikelihood", "pMax", "sigmaNoise", "sigmaOffset", "iterationNumber",
    "imageMetaData", "referenceMetaData", "xSize",
)  # fmt: skip
#: Per-particle labels added to the input table.
PARTICLE_LABELS: tuple[str, ...] = (
    "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ", "ref", "logLikelihood", "pMax",
)  # fmt: skip
_STACK_PREFIX = re.compile(r"(\d+@)(.+)")


class RestartPoint(NamedTuple):
    """What :func:`read_restart` recovers from an iteration log.

    Attributes
    ----------
    model : StartModel
        References at the internal box size, fractions, sigmas (internal pixels) and the iteration.
    iteration : int
        The iteration the log belongs to (the last one done).
    command_line : str
        The command line of the run that wrote the log (its header comment).
    """

    model: StartModel
    iteration: int
    command_line: str


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class RunWriter:
    """Writes a run's files: what every iteration needs is held here, each call writes one state.

    Attributes
    ----------
    root : Path
        Output root (``--oroot``); its folder is made on the first write.
    images : MetaData
        The input particle table, one row per particle in the order given to the refinement. With
        `regions_used` it must have ``missingRegionNumber``.
    regions_used : bool
        Whether the particles have missing regions (then the coverage maps are written).
    pixel_size_A : float
        Input pixel size in Angstrom.
    box_size : int
        Input box size ``N0``; references are up-scaled to it.
    command_line : str
        Written as the header comment of each log.
    """

    root: Path
    images: MetaData
    regions_used: bool
    pixel_size_A: float
    box_size: int
    command_line: str

    def write_iteration(self, state: MLState) -> list[Path]:
        """Write the files of one iteration (see the module docstring), each atomically.

        `state` is the model after iteration ``state.iteration``, or the starting model when
        ``state.stats`` is None (its particle table is the input table). Returns the files written,
        the log last.
        """
        self.root.parent.mkdir(parents=True, exist_ok=True)
        paths, it = RunPaths(self.root), state.iteration
        maps = self._maps(functools.partial(paths.reference, iteration=it), state.references)
        written = list(maps)
        if state.unregularised is not None:
            written += self._maps(functools.partial(paths.unregularised, iteration=it), state.unregularised)
        if state.stats is not None and self.regions_used:
            coverage = centred_coverage(state.coverage(), self.box_size)
            written += self._maps(functools.partial(paths.coverage, iteration=it), coverage)
        if state.fsc is not None:
            written.append(write_star(paths.fsc(it), fsc_blocks(state, self.pixel_size_A, self.box_size)))
        references = paths.classes(it)
        classes = class_table(state, maps, references, self.pixel_size_A, self.box_size)
        written.append(write_star(references, {"classes": classes}))
        doc = paths.particles(it)
        written.append(write_star(doc, _relative_images(self._particles(state), doc)))
        written.append(write_model(paths.model(it), state))
        written.append(
            write_star(paths.log(it), _log_table(state, doc, references), self.command_line, row_format=True)
        )
        return written

    def write_final(self, state: MLState) -> list[Path]:
        """Write ``<root>_img.xmd``, ``<root>_ref.xmd``, ``<root>_refKKKKKK.mrc`` and ``<root>.fsc``.

        `state` is the last one of the run. If it is the starting model (``--iter 0``) the particle
        table is the input table and the class blocks are empty. Returns the files written.
        """
        self.root.parent.mkdir(parents=True, exist_ok=True)
        paths = RunPaths(self.root)
        maps = self._maps(paths.reference, state.references)
        written = list(maps)
        if state.fsc is not None:
            written.append(write_star(paths.fsc(), fsc_blocks(state, self.pixel_size_A, self.box_size)))
        particles = _relative_images(self._particles(state), paths.particles())
        classes = class_table(state, maps, paths.classes(), self.pixel_size_A, self.box_size)
        return written + _write_final_tables(paths, particles, classes)

    def write_final_from(self, log_path: str | os.PathLike[str]) -> list[Path]:
        """Write the final files of :meth:`write_final` from the files of the iteration `log_path` logs.

        For a restart from the last iteration (or a converged one) of a run killed before its final
        copies: the maps and the FSC are copied, the tables rewritten with their file names relative to
        the final tables. Returns the files written.
        """
        log_path = Path(log_path)
        log = read_star(log_path)
        doc = beside(str(log["imageMetaData"][0]), log_path)
        table_path = beside(str(log["referenceMetaData"][0]), log_path)
        classes = read_star(table_path, "classes")
        classes = classes.take(np.argsort(classes["ref"], kind="stable"))
        self.root.parent.mkdir(parents=True, exist_ok=True)
        paths = RunPaths(self.root)
        maps = [
            _copied(beside(str(name), table_path), paths.reference(k))
            for k, name in enumerate(classes["image"], start=1)
        ]
        written = list(maps)
        if doc.with_suffix(".fsc").is_file():
            written.append(_copied(doc.with_suffix(".fsc"), paths.fsc()))
        particles = _rebased_images(read_star(doc), doc, paths.particles())
        image = np.array([_relative_to(path, paths.classes()) for path in maps], dtype=object)
        return written + _write_final_tables(paths, particles, classes.with_columns(image=image))

    def _particles(self, state: MLState) -> MetaData:
        """The particle table of `state`: the input table for the starting model."""
        return self.images if state.stats is None else particle_table(state, self.images, self.regions_used)

    def _maps(self, name: Callable[[int], Path], volumes: NDArray[np.floating]) -> list[Path]:
        """Write volume ``k`` (1-based) to ``name(k)``, each Fourier-rescaled to the input box if needed."""
        size = self.box_size
        scaled = volumes if volumes.shape[-1] == size else fourier_rescale(volumes, size)
        return [
            write_volume(name(k), volume.astype(np.float32), self.pixel_size_A)
            for k, volume in enumerate(scaled, start=1)
        ]


def particle_table(state: MLState, images: MetaData, regions_used: bool) -> MetaData:
    """The input particle table with the assignments of `state` added (original pixels, degrees).

    Parameters
    ----------
    state : MLState
        A state after an E-step (``state.stats`` is not None).
    images : MetaData
        One row per particle, in refinement order.
    regions_used : bool
        Require (and keep) the ``missingRegionNumber`` column.

    Returns
    -------
    MetaData
        `images` plus ``angleRot angleTilt anglePsi`` (Xmipp ZYZ, degrees), ``shiftX shiftY shiftZ``
        (input pixels; ``particle(q) = reference(A (q + s))``), ``ref`` (1-based), ``logLikelihood``
        and ``pMax``.

    Raises
    ------
    ValueError
        If `state` has no E-step results, their count differs from the table's, or `regions_used`
        and the table lacks ``missingRegionNumber``.
    """
    if state.stats is None or state.grid is None:
        raise ValueError(f"iteration {state.iteration} has no per-particle results (no E-step yet)")
    results = state.stats.particles
    if len(images) != len(results.indices):
        raise ValueError(f"the table has {len(images)} particles but the results {len(results.indices)}")
    if regions_used and "missingRegionNumber" not in images:
        raise ValueError("particles with missing regions need a missingRegionNumber column")
    order = np.argsort(results.indices, kind="stable")
    angles = state.grid.angles_deg[results.orientations[order]]
    shifts = results.shifts_px[order] / state.scale + 0.0  # no "-0.000000" in the table
    values = (
        *angles.T, *shifts.T, results.classes[order] + 1, results.log_likelihood[order], results.pmax[order],
    )  # fmt: skip
    return images.with_columns(**dict(zip(PARTICLE_LABELS, values, strict=True)))


def class_table(
    state: MLState,
    maps: list[Path],
    table_path: Path,
    pixel_size_A: float,
    box_size: int,
) -> MetaData:
    """Block ``classes``: one row per class (``image enabled ref weight [signalChange resolution]``).

    ``image`` names the class reference file (`maps`, one per class) relative to the folder of
    `table_path`. ``signalChange`` is ``1000`` times the relative squared change of the reference
    (as Xmipp writes it) and ``resolution`` the FSC=0.5 frequency in 1/Å; both only after an E-step.
    """
    n_classes = state.n_classes
    columns: dict[str, object] = {
        "image": np.array([_relative_to(path, table_path) for path in maps], dtype=object),
        "enabled": np.ones(n_classes, dtype=np.int64),
        "ref": np.arange(1, n_classes + 1),
        "weight": np.asarray(state.fractions, dtype=np.float64),
    }
    if state.signal_change is not None:
        columns["signalChange"] = 1000.0 * np.asarray(state.signal_change, dtype=np.float64)
    if state.resolution_shell is not None:
        columns["resolution"] = np.asarray(state.resolution_shell) / (box_size * pixel_size_A)
    return MetaData(columns)


def fsc_blocks(state: MLState, pixel_size_A: float, box_size: int) -> dict[str, MetaData]:
    """One block ``class_KKKKKK`` per class: FSC of shells ``1..N//2`` against frequency in 1/Å.

    Shell ``i`` of the internal box ``N`` (pixel size ``pixel_size_A * N0 / N``) is the frequency
    ``i / (N0 * pixel_size_A)``.
    """
    if state.fsc is None:
        raise ValueError(f"iteration {state.iteration} has no FSC (no E-step yet)")
    shells = np.arange(1, state.fsc.shape[1])
    frequencies = shells / (box_size * pixel_size_A)
    return {
        f"class_{k + 1:06d}": MetaData(
            {"resolutionFreqFourier": frequencies, "resolutionFRC": np.asarray(curve[1:], dtype=np.float64)}
        )
        for k, curve in enumerate(state.fsc)
    }


def _log_table(state: MLState, doc: Path, references: Path) -> MetaData:
    values = (
        state.log_likelihood,
        state.mean_pmax,
        _exact(state.sigma_noise),
        _exact(state.sigma_offset_px / state.scale),
        state.iteration,
        _relative_to(doc, doc),
        _relative_to(references, doc),
        state.size,
    )
    return MetaData({label: [value] for label, value in zip(LOG_LABELS, values, strict=True)})


def _exact(value: float) -> np.ndarray:
    """A float as its shortest exact decimal string, so that a restart restores it bit for bit."""
    return np.array(repr(float(value)), dtype=object)


def _write_final_tables(paths: RunPaths, particles: MetaData, classes: MetaData) -> list[Path]:
    """``<root>_img.xmd`` and ``<root>_ref.xmd``; the file names in both tables are already relative to
    their folder."""
    blocks = {"classes": classes, **_class_member_blocks(particles, len(classes))}
    return [write_star(paths.particles(), particles), write_star(paths.classes(), blocks)]


def _copied(source: Path, target: Path) -> Path:
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)
    return target


def _class_member_blocks(particles: MetaData, n_classes: int) -> dict[str, MetaData]:
    """``classKKKKKK_images``: the rows of each class, sorted by image name (empty without ``ref``)."""
    refs = particles["ref"] if "ref" in particles else np.zeros(len(particles), dtype=np.int64)
    order = np.argsort(np.asarray(particles["image"], dtype=str), kind="stable")
    refs = refs[order]
    return {f"class{k:06d}_images": particles.take(order[refs == k]) for k in range(1, n_classes + 1)}


def _relative_images(table: MetaData, destination: Path) -> MetaData:
    """The ``image`` column rewritten relative to the folder of `destination` (``N@`` prefixes kept)."""
    if "image" not in table:
        return table
    names = [_relative_image(str(name), destination) for name in table["image"]]
    return table.with_columns(image=np.array(names, dtype=object))


def _relative_image(name: str, destination: Path, source: Path = Path()) -> str:
    """`name` (relative to the folder `source`) made relative to the folder of `destination`."""
    match = _STACK_PREFIX.fullmatch(name)
    prefix, file = (match[1], match[2]) if match else ("", name)
    if os.path.isabs(file):
        return name
    return prefix + _relative_to(source / file, destination)


def _rebased_images(table: MetaData, source: Path, destination: Path) -> MetaData:
    """The ``image`` column of the table `source`, relative to its folder, made relative to that of
    `destination`."""
    names = [_relative_image(str(name), destination, source.parent) for name in table["image"]]
    return table.with_columns(image=np.array(names, dtype=object))


def _relative_to(path: Path, destination: Path) -> str:
    """`path` relative to the folder that will hold `destination`."""
    return os.path.relpath(os.path.abspath(path), os.path.abspath(destination.parent))


# --------------------------------------------------------------------------- restart


def read_restart(log_path: str | os.PathLike[str]) -> RestartPoint:
    """Recover the model of an iteration from its ``<root>_itNNNNNN_log.xmd``.

    The model is read exactly from the iteration's ``_model.npz`` if it is there. Otherwise (a log of
    Xmipp, or of an earlier version) it reads ``sigmaNoise``, ``sigmaOffset`` (input pixels, converted back
    to internal pixels), ``iterationNumber`` and ``xSize`` (internal box size) from the log, the class
    fractions from the ``weight`` column of its ``_ref.xmd`` and the references from the MRC files that
    table names, Fourier-cropped back to the internal box size.

    Parameters
    ----------
    log_path : str or os.PathLike
        The log of the iteration to continue from.

    Returns
    -------
    RestartPoint

    Raises
    ------
    MetadataError
        If the log or the reference table is malformed or lacks a label.
    FileNotFoundError
        If a file it names is missing.
    VolumeError
        If a reference map cannot be read.
    """
    log_path = Path(log_path)
    log = read_star(log_path)
    missing = [label for label in LOG_LABELS if label not in log or len(log) != 1]
    if missing:
        raise MetadataError(
            log_path,
            f"not an ml_tomo iteration log: no {', '.join(missing)}; give a <root>_itNNNNNN_log.xmd file",
        )
    iteration = int(log["iterationNumber"][0])
    exact = RunPaths.of(log_path).model(iteration)
    if exact.is_file():
        return RestartPoint(read_model(exact, iteration), iteration, read_command_line(log_path))
    size = int(log["xSize"][0])
    table_path = beside(str(log["referenceMetaData"][0]), log_path)
    classes = read_star(table_path, "classes")
    for label in ("image", "ref", "weight"):
        if label not in classes:
            raise MetadataError(table_path, f"block data_classes has no {label} column")
    order = np.argsort(classes["ref"], kind="stable")
    maps = np.stack([read_volume(beside(str(classes["image"][k]), table_path)) for k in order])
    scale = size / maps.shape[-1]
    model = StartModel(
        references=fourier_rescale(maps, size).astype(np.float64),
        fractions=np.asarray(classes["weight"][order], dtype=np.float64),
        sigma_noise=float(log["sigmaNoise"][0]),
        sigma_offset_px=float(log["sigmaOffset"][0]) * scale,
        iteration=iteration,
    )
    return RestartPoint(model, iteration, read_command_line(log_path))


def remove_temporaries(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files that a killed run left for its files (and only those).

    Parameters
    ----------
    root : str or os.PathLike
        The run's output root (``--oroot``).

    Returns
    -------
    list of Path
        The files removed.
    """
    paths = RunPaths.of(root)
    if not paths.root.parent.is_dir():
        return []
    removed = []
    for path in sorted(paths.root.parent.iterdir()):
        target = temporary_target(path)
        if target is not None and paths.holds(target) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def beside(name: str, table_path: Path) -> Path:
    """A file named in a table: relative to the table's folder, else as given (current directory)."""
    path = Path(name)
    if path.is_absolute():
        return path
    nearby = table_path.parent / path
    return nearby if nearby.exists() else path


def read_command_line(log_path: str | os.PathLike[str]) -> str:
    """The command line stored in an iteration log: its header comment, wrapped lines re-joined."""
    parts = []
    for line in Path(log_path).read_text(encoding="utf-8").splitlines()[1:]:
        if not line.startswith("#"):
            break
        parts.append(line[1:].strip())
    return " ".join(part for part in parts if part)
