"""Reading a refinement's results back: its iterations, and per iteration the tables, maps and FSC.

The files are those :mod:`napari_mltomo.io.run` writes. A run is named by its root (``--oroot``) or by
any file it wrote (``<root>_itNNNNNN_log.xmd``, ``<root>_img.xmd``, ...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.io.metadata import MetaData, MetadataError, read_images, read_star, read_star_blocks
from napari_mltomo.io.run import beside, read_command_line
from napari_mltomo.io.run_paths import RunPaths
from napari_mltomo.io.volumes import read_pixel_size, read_volume

__all__ = ["IterationResults", "RunResults", "open_run", "read_particles"]


@dataclass(frozen=True, eq=False)
class IterationResults:
    """What one iteration of a run left on disk.

    Attributes
    ----------
    iteration : int
    particles : MetaData or None
        The particle table (image paths resolved); None for the starting model (iteration 0).
    classes : MetaData
        Block ``classes`` of ``_ref.xmd``, rows in ``ref`` order.
    references : (K, N, N, N) ndarray of float32
    coverage : (K, N, N, N) ndarray of float32 or None
        Fourier coverage per class, centred (fftshifted); None without missing regions or at iteration 0.
    fsc : dict of int to (frequency, frc)
        Class (1-based) -> frequencies in 1/Å and FSC values; empty at iteration 0.
    pixel_size_A : float
        From the first reference's header (1 if it has none).
    """

    iteration: int
    particles: MetaData | None
    classes: MetaData
    references: NDArray[np.float32]
    coverage: NDArray[np.float32] | None
    fsc: dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]]
    pixel_size_A: float

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.references)


@dataclass(frozen=True)
class RunResults:
    """A refinement on disk: its root and the iterations whose files are complete.

    Attributes
    ----------
    paths : RunPaths
        The run's files; ``paths.root`` is its output root (``--oroot``), absolute.
    iterations : tuple of int
        Ascending: 0 if the starting references are there, then every iteration with a ``_log.xmd``.
    """

    paths: RunPaths
    iterations: tuple[int, ...]

    @property
    def root(self) -> Path:
        """The output root (``--oroot``), absolute."""
        return self.paths.root

    def read_iteration(self, iteration: int) -> IterationResults:
        """Read the tables, maps and FSC of one iteration (see :class:`IterationResults`).

        Raises
        ------
        ValueError
            If the run has no such iteration.
        MetadataError, FileNotFoundError, VolumeError
            If a file of the iteration is malformed or missing; the message names it.
        """
        if iteration not in self.iterations:
            raise ValueError(f"{self.root}: no iteration {iteration}; the run has {_listed(self.iterations)}")
        classes, maps = _class_maps(self.paths.classes(iteration))
        references = np.stack([read_volume(path) for path in maps])
        doc = self.paths.particles(iteration)
        particles = read_images(doc) if iteration > 0 and doc.is_file() else None
        return IterationResults(
            iteration=iteration,
            particles=particles,
            classes=classes,
            references=references,
            coverage=self._coverage(iteration, len(references)),
            fsc=_fsc_curves(self.paths.fsc(iteration)),
            pixel_size_A=read_pixel_size(maps[0]) or 1.0,
        )

    def command_line(self) -> str:
        """The command line of the run, from its last iteration log ('' without one)."""
        logs = [i for i in self.iterations if i > 0]
        return read_command_line(self.paths.log(logs[-1])) if logs else ""

    def _coverage(self, iteration: int, n_classes: int) -> NDArray[np.float32] | None:
        paths = [self.paths.coverage(k, iteration) for k in range(1, n_classes + 1)]
        if not all(path.is_file() for path in paths):
            return None
        return np.stack([read_volume(path) for path in paths])


def open_run(path: str | os.PathLike[str]) -> RunResults:
    """Find the iterations of a run.

    Parameters
    ----------
    path : str or os.PathLike
        The run's root (``--oroot``) or any file it wrote.

    Returns
    -------
    RunResults

    Raises
    ------
    FileNotFoundError
        If there is no finished iteration (nor starting references) at that root; the message names it.
    """
    paths = RunPaths.of(path)
    root = paths.root
    found = set(paths.logged_iterations())
    if paths.classes(0).is_file():
        found.add(0)
    if not found:
        raise FileNotFoundError(
            f"{root}: no ml_tomo run there (no {root.name}_itNNNNNN_log.xmd); "
            "give a run's root or one of its files"
        )
    return RunResults(paths, tuple(sorted(found)))


def read_particles(table: MetaData) -> NDArray[np.float32]:
    """The volumes a particle table lists (``image`` column), as one ``(n, N, N, N)`` array."""
    if len(table) == 0:
        raise ValueError("the particle table is empty")
    return np.stack([read_volume(str(name)) for name in table["image"]])


def _class_maps(table_path: Path) -> tuple[MetaData, list[Path]]:
    """Block ``classes`` (sorted by ``ref``) and the reference file of each row."""
    classes = read_star(table_path, "classes")
    for label in ("image", "ref"):
        if label not in classes:
            raise MetadataError(table_path, f"block data_classes has no {label} column")
    classes = classes.take(np.argsort(classes["ref"], kind="stable"))
    if len(classes) == 0:
        raise MetadataError(table_path, "block data_classes has no rows")
    return classes, [beside(str(name), table_path) for name in classes["image"]]


def _fsc_curves(path: Path) -> dict[int, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Class (1-based) -> (frequency, FSC) of an ``.fsc`` file; empty if there is none."""
    if not path.is_file():
        return {}
    curves = {}
    for name, table in read_star_blocks(path).items():
        match = re.fullmatch(r"class_(\d+)", name)
        if match and "resolutionFreqFourier" in table and "resolutionFRC" in table:
            frequency = np.asarray(table["resolutionFreqFourier"], dtype=np.float64)
            curves[int(match[1])] = (frequency, np.asarray(table["resolutionFRC"], dtype=np.float64))
    return curves


def _listed(iterations: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in iterations) or "none"
