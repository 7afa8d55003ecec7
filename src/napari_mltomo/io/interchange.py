"""Particle tables of other programs: RELION particle STAR files and Dynamo tables, read into our labels
(``image``, ``angleRot/Tilt/Psi``, ``shiftX/Y/Z`` in pixels, ``ref``, ``missingRegionNumber``) and written
from them. The poses are converted by the closed forms of :mod:`napari_mltomo.io.conventions`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io.metadata import read_images
from napari_mltomo.io.particles import particle_box
from napari_mltomo.io.table import MetaData, MetadataError

__all__ = ["PosedParticles", "TableFormat", "even_box", "read_posed_particles", "table_format"]

TableFormat = Literal["xmipp", "relion", "dynamo"]


@dataclass(frozen=True)
class PosedParticles:
    """Particles with their poses and classes, in our labels and conventions.

    Attributes
    ----------
    images : MetaData
        ``image`` (paths resolved), and where known ``angleRot angleTilt anglePsi``, ``shiftX shiftY shiftZ``
        (pixels), ``ref`` (1-based), ``missingRegionNumber`` (1-based, into `regions`), ``pMax``,
        ``logLikelihood``.
    regions : tuple of MissingRegion
        The missing regions the table defines (empty if it defines none).
    pixel_size_A : float or None
        Angstrom per pixel of the particles, if the table says.
    """

    images: MetaData
    regions: tuple[MissingRegion, ...] = ()
    pixel_size_A: float | None = None


def even_box(particles: PosedParticles, table: str | os.PathLike[str], program: str) -> int:
    """The box size ``N`` of the particles, from their headers (:func:`~napari_mltomo.io.particle_box`: every
    one a cube of one size), which must be even: the box centre of RELION and Dynamo is ours only then.

    Raises
    ------
    MetadataError
        Naming `table`, for particles that are not cubes of one size or an odd box.
    FileNotFoundError
        For a particle file that is missing.
    """
    box = particle_box(particles.images, table)
    if box % 2:
        raise MetadataError(
            table,
            f"the particles are {box}x{box}x{box} voxels, an odd size {box}; {program}'s box centre is ours "
            "only for even boxes",
        )
    return box


def table_format(path: str | os.PathLike[str]) -> TableFormat:
    """``"dynamo"`` for a ``.tbl`` file, ``"relion"`` for a STAR file with ``_rln`` labels, else
    ``"xmipp"``."""
    path = Path(path)
    if path.suffix.lower() == ".tbl":
        return "dynamo"
    if path.suffix.lower() == ".star" and path.is_file():
        with open(path, encoding="utf-8", errors="replace") as text:
            if any(line.lstrip().startswith("_rln") for line in text):
                return "relion"
    return "xmipp"


def read_posed_particles(
    path: str | os.PathLike[str],
    *,
    dynamo_data: str | os.PathLike[str] | None = None,
    relion_project: str | os.PathLike[str] | None = None,
    allow_premultiplied: bool = False,
) -> PosedParticles:
    """Read a particle table of any format :func:`table_format` tells apart.

    Parameters
    ----------
    path : str or os.PathLike
    dynamo_data : str or os.PathLike, optional
        The data folder of a Dynamo table (its ``particle_NNNNN.em`` files); default: the table's folder.
    relion_project : str or os.PathLike, optional
        The folder RELION image names are relative to; default: the working directory, then the STAR
        file's folder.
    allow_premultiplied : bool
        Accept RELION particles marked as multiplied by their CTF.

    Raises
    ------
    MetadataError
        Naming the file (and line) for a table that cannot be read or converted.
    """
    kind = table_format(path)
    # the readers of other formats import pandas (through starfile and dynamotable): only when needed
    if kind == "dynamo":
        from napari_mltomo.io.dynamo import read_dynamo_table

        return read_dynamo_table(path, Path(path).parent if dynamo_data is None else dynamo_data)
    if kind == "relion":
        from napari_mltomo.io.relion import read_relion_star

        return read_relion_star(path, project=relion_project, allow_premultiplied=allow_premultiplied)
    return PosedParticles(read_images(path))
