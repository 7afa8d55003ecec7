"""Dynamo tables (``.tbl``) and data folders: read into our labels, written from them."""

from __future__ import annotations

import os
from pathlib import Path

from napari_mltomo.io.interchange import PosedParticles

__all__ = ["read_dynamo_table", "write_dynamo_table"]


def read_dynamo_table(path: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> PosedParticles:
    """The particles of a Dynamo table whose volumes are ``particle_NNNNN.em`` in `data_dir`.

    Raises
    ------
    MetadataError
        Naming the file and line for a malformed row, a particle file that is missing, or a wedge type
        other than 0 (none) or 1 (tilt about y).
    """
    raise NotImplementedError


def write_dynamo_table(
    path: str | os.PathLike[str], particles: PosedParticles, *, data_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write `particles` as a Dynamo table, and with `data_dir` their volumes as ``particle_NNNNN.em``.

    Returns the files written.

    Raises
    ------
    ValueError
        For missing regions Dynamo cannot express (only none and a wedge about y can be), or odd boxes.
    """
    raise NotImplementedError
