"""RELION particle STAR files (3.0 to 5, 3-D boxes): read into our labels, written from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from napari_mltomo.io.interchange import PosedParticles

__all__ = ["read_relion_star", "write_relion_star"]


def read_relion_star(
    path: str | os.PathLike[str],
    *,
    project: str | os.PathLike[str] | None = None,
    allow_premultiplied: bool = False,
) -> PosedParticles:
    """The particles of a RELION particle STAR file (RELION 3.0 to 5, 3-D boxes), in our conventions.

    Raises
    ------
    MetadataError
        Naming the file for what cannot be used: 2-D tilt stacks, pre-rotated boxes, CTF-premultiplied
        data (unless `allow_premultiplied`), images that are not 3-D.
    """
    raise NotImplementedError


def write_relion_star(
    path: str | os.PathLike[str],
    particles: PosedParticles,
    *,
    layout: Literal["relion", "relion30"] = "relion",
) -> list[Path]:
    """Write `particles` as a RELION particle STAR file, with what RELION needs beside it.

    Writes one wedge volume per missing region (``<stem>_wedges/region_RRR.mrc``, named by ``rlnCtfImage``),
    the particles that are not MRC files converted to MRC (``<stem>_subtomos/``) and the regions as
    ``<stem>_missing.xmd``. Returns the files written.
    """
    raise NotImplementedError
