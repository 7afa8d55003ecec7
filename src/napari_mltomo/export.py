"""``ml_tomo export``: a run's particles, poses and classes as a RELION particle STAR file or a Dynamo
table (``docs/conventions.md``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

from napari_mltomo.argv import option_values, stored_argv
from napari_mltomo.inputs import run_missing_regions
from napari_mltomo.io import MetadataError, read_pixel_size
from napari_mltomo.io.interchange import PosedParticles
from napari_mltomo.io.results import RunResults, open_run

__all__ = ["EXPORT_FORMATS", "ExportFormat", "export_run", "run_particles"]

ExportFormat = Literal["relion", "relion30", "dynamo"]
#: What ``--to`` accepts: RELION 3.1 to 5, the RELION 3.0 subtomogram layout (Warp/M), Dynamo.
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)


def run_particles(run: RunResults, iteration: int | None = None) -> PosedParticles:
    """The particles of one iteration of `run` (default: the last), with its missing regions and pixel size.

    Raises
    ------
    ValueError
        If the run has no such iteration, or the iteration no particle table (the starting model).
    MetadataError
        If the pixel size is known neither from the run's ``--pixel_size`` nor from the particles' headers.
    """
    iteration = run.iterations[-1] if iteration is None else iteration
    results = run.read_iteration(iteration)
    if results.particles is None:
        raise ValueError(f"{run.root}: iteration {iteration} is the starting model; it has no particle poses")
    images = results.particles
    pixel_size = _run_pixel_size(run) or read_pixel_size(str(images["image"][0]))
    if not pixel_size:
        raise MetadataError(
            str(images["image"][0]), "no pixel size in its header; run the refinement with --pixel_size"
        )
    return PosedParticles(images, tuple(run_missing_regions(run) or ()), pixel_size)


def export_run(
    path: str | os.PathLike[str],
    to: ExportFormat,
    output: str | os.PathLike[str],
    *,
    iteration: int | None = None,
    dynamo_data: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the particles of a run (its root or any file it wrote) in another program's format.

    Parameters
    ----------
    path : str or os.PathLike
    to : {"relion", "relion30", "dynamo"}
    output : str or os.PathLike
        The STAR file or table to write (its folder is made if need be).
    iteration : int, optional
        Default: the last iteration on disk.
    dynamo_data : str or os.PathLike, optional
        With ``to="dynamo"``: write the particles there as ``particle_NNNNN.em``.

    Returns
    -------
    list of Path
        The files written.
    """
    if to not in EXPORT_FORMATS:
        raise ValueError(f"--to must be one of {', '.join(EXPORT_FORMATS)}, got {to!r}")
    if dynamo_data is not None and to != "dynamo":
        raise ValueError("--dynamo_data goes with --to dynamo")
    particles = run_particles(open_run(path), iteration)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if to == "dynamo":
        from napari_mltomo.io.dynamo import write_dynamo_table

        return write_dynamo_table(output, particles, data_dir=dynamo_data)
    from napari_mltomo.io.relion import write_relion_star

    return write_relion_star(output, particles, layout=to)


def _run_pixel_size(run: RunResults) -> float | None:
    """The ``--pixel_size`` the run was given, if any."""
    try:
        return option_values(stored_argv(run.command_line()))["pixel_size"]
    except ValueError:  # a command line this version cannot parse
        return None
