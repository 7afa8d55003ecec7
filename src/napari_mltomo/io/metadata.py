"""Xmipp metadata as ml_tomo reads and writes it: image and missing-region tables, STAR blocks.

The table type is in `napari_mltomo.io.table`, the parsers of STAR (``.xmd``), Xmipp 2 selfiles and
docfiles and headerless rows in `napari_mltomo.io.formats`, the STAR writer in
`napari_mltomo.io.star_writer`; this module holds the readers and re-exports what ``napari_mltomo.io``
offers. Every reader returns a `MetaData`: one 1-D numpy array per label (int64, float64, or object arrays
of ``str``), in file order. Every malformed input raises `MetadataError`, whose message names the file
and, where it applies, the 1-based line number.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io.formats import (
    parse_star,
    read_rows,
    read_text,
    select_block,
    split_block_name,
    to_table,
)
from napari_mltomo.io.particles import (
    checked_volume_shape,
    image_key,
    particle_box,
    resolve_image,
    voxels_text,
)
from napari_mltomo.io.star_writer import write_star
from napari_mltomo.io.table import (
    ANGLE_LABELS,
    FLOAT_LABELS,
    IMAGE_COLUMNS,
    INT_LABELS,
    MISSING_REGION_COLUMNS,
    SHIFT_LABELS,
    STRING_LABELS,
    MetaData,
    MetadataError,
)

__all__ = [
    "ANGLE_LABELS",
    "FLOAT_LABELS",
    "IMAGE_COLUMNS",
    "INT_LABELS",
    "MISSING_REGION_COLUMNS",
    "SHIFT_LABELS",
    "STRING_LABELS",
    "MetaData",
    "MetadataError",
    "checked_volume_shape",
    "image_key",
    "particle_box",
    "read_images",
    "read_metadata",
    "read_missing_regions",
    "read_star",
    "read_star_blocks",
    "voxels_text",
    "write_missing_regions",
    "write_star",
]


_REGION_ANGLE_FIELDS = {
    "missingRegionThetaY0": "theta_y0_deg",
    "missingRegionThetaYF": "theta_yf_deg",
    "missingRegionThetaX0": "theta_x0_deg",
    "missingRegionThetaXF": "theta_xf_deg",
}
_REGION_REQUIRED_ANGLES = {
    "wedge_y": ("missingRegionThetaY0", "missingRegionThetaYF"),
    "wedge_x": ("missingRegionThetaX0", "missingRegionThetaXF"),
    "pyramid": tuple(_REGION_ANGLE_FIELDS),
    "cone": ("missingRegionThetaY0",),
}


def read_star_blocks(path: str | os.PathLike[str]) -> dict[str, MetaData]:
    """Read every block of an Xmipp STAR file.

    Parameters
    ----------
    path : str or os.PathLike
        The file. With ``name@file`` only block ``name`` is returned.

    Returns
    -------
    dict of str to MetaData
        Block name (without ``data_``) -> table, in file order.

    Raises
    ------
    MetadataError
        If the file is malformed or the named block does not exist.
    """
    block, source = split_block_name(path)
    blocks = parse_star(source, read_text(source))
    if block is not None:
        blocks = {block: select_block(source, blocks, block)}
    return {name: to_table(raw) for name, raw in blocks.items()}


def read_star(path: str | os.PathLike[str], block: str | None = None) -> MetaData:
    """Read one block of an Xmipp STAR file (loop or row format).

    Parameters
    ----------
    path : str or os.PathLike
        The file, optionally as ``name@file`` to select block ``data_name``.
    block : str, optional
        Block name without ``data_``. Default: the block named in `path`, else the first one.

    Returns
    -------
    MetaData
        The block's table. Known integer labels (``ref``, ``missingRegionNumber``, ...) are
        int64, known float labels float64, and other labels are inferred.

    Raises
    ------
    MetadataError
        If the file is malformed, or the block does not exist.
    """
    named, source = split_block_name(path)
    if named is not None and block is not None and named != block:
        raise MetadataError(source, f"block given twice: {named!r} in the path and {block!r}")
    raw = select_block(source, parse_star(source, read_text(source)), block or named)
    return to_table(raw)


def read_metadata(path: str | os.PathLike[str]) -> MetaData:
    """Read a metadata file, recognising its format from its content.

    * Xmipp STAR if the first non-blank line contains ``XMIPP_STAR_1``, the extension is
      ``.xmd``/``.star``, or a ``data_`` line appears (``name@file`` selects a block);
    * Xmipp 2 docfile if line 1 contains ``Headerinfo`` (aliases such as ``rot`` become
      ``angleRot``; the ``; <filename>`` lines become ``image``);
    * Xmipp 2 selfile if every line is ``<filename> <int flag>`` (columns ``image enabled``);
    * otherwise headerless rows labelled by position with `IMAGE_COLUMNS`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    MetaData
        All rows, including disabled ones.

    Raises
    ------
    MetadataError
        If the file is malformed; the message names the file and line.
    """
    return to_table(read_rows(path, IMAGE_COLUMNS))


def read_images(path: str | os.PathLike[str]) -> MetaData:
    """Read an images metadata file: enabled rows only, with image paths resolved.

    A relative image path is kept if it exists relative to the current directory, and is
    otherwise taken relative to the metadata file's folder (Xmipp's rule). A ``N@`` stack
    prefix is kept.

    Parameters
    ----------
    path : str or os.PathLike
        Any format `read_metadata` accepts.

    Returns
    -------
    MetaData
        The rows with ``enabled > 0`` (all rows if there is no ``enabled`` column).

    Raises
    ------
    MetadataError
        If the file is malformed or has no ``image`` column.
    """
    raw = read_rows(path, IMAGE_COLUMNS)
    table = to_table(raw)
    if "image" not in table:
        labels = ", ".join(table.labels) or "none"
        raise MetadataError(
            raw.source, f"no 'image' column (labels: {labels}); add one with the volume files"
        )
    if "enabled" in table:
        table = table.take(np.flatnonzero(table["enabled"] > 0))
    images = [resolve_image(str(name), raw.source.parent) for name in table["image"]]
    return table.with_columns(image=np.array(images, dtype=object))


def read_missing_regions(path: str | os.PathLike[str]) -> list[MissingRegion]:
    """Read missing-region definitions; region ``k`` (1-based) is the row whose ``missingRegionNumber`` is
    ``k``, or the ``k``-th row in a STAR file without that column.

    STAR files use the labels ``missingRegionNumber``, ``missingRegionType`` and
    ``missingRegionThetaY0/YF/X0/XF``. Files without a STAR header hold rows
    ``number type thetaY0 thetaYF [thetaX0 thetaXF]``, e.g. ``1 wedge_y -64 64``.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``name@file`` selects a STAR block).

    Returns
    -------
    list of MissingRegion
        Region ``k`` at position ``k - 1``; angles in degrees.

    Raises
    ------
    MetadataError
        If the file is malformed, a type is unknown, a needed angle is absent, the angles are out
        of range or the numbers are not ``1..R`` once each; the message names the file and line.
    """
    raw = read_rows(path, MISSING_REGION_COLUMNS, min_values=3, ragged=True)
    table = to_table(raw)
    if "missingRegionType" not in table:
        raise MetadataError(raw.source, "no missingRegionType column")
    if len(table) == 0:
        raise MetadataError(raw.source, "no missing-region rows")
    regions = [_missing_region(raw.source, table, row, line) for row, line in enumerate(raw.lines)]
    if "missingRegionNumber" not in table:
        return regions
    numbers = np.asarray(table["missingRegionNumber"])
    for row, line in enumerate(raw.lines):
        if not 1 <= numbers[row] <= len(regions) or np.count_nonzero(numbers == numbers[row]) > 1:
            raise MetadataError(
                raw.source,
                f"missingRegionNumber {numbers[row]}: the rows must be numbered 1..{len(regions)}, once each",
                line,
            )
    return [regions[row] for row in np.argsort(numbers)]


def _missing_region(source: Path, table: MetaData, row: int, line: int) -> MissingRegion:
    kind = str(table["missingRegionType"][row])
    if kind not in _REGION_REQUIRED_ANGLES:
        expected = ", ".join(_REGION_REQUIRED_ANGLES)
        raise MetadataError(source, f"unknown missingRegionType {kind!r}; use {expected}", line)
    angles = {}
    for label, name in _REGION_ANGLE_FIELDS.items():
        value = float(table[label][row]) if label in table else math.nan
        if math.isnan(value) and label in _REGION_REQUIRED_ANGLES[kind]:
            raise MetadataError(source, f"a {kind} region needs {label}", line)
        angles[name] = 0.0 if math.isnan(value) else value
    try:
        return MissingRegion(kind=kind, **angles)  # type: ignore[arg-type]  # kind checked above
    except ValueError as err:
        raise MetadataError(source, str(err), line) from err


def write_missing_regions(path: str | os.PathLike[str], regions: Sequence[MissingRegion]) -> Path:
    """Write missing-region definitions (region ``k`` on row ``k``), as :func:`read_missing_regions` reads
    them, atomically. Returns the file written."""
    rows = [
        (number, region.kind, *(getattr(region, name) for name in _REGION_ANGLE_FIELDS.values()))
        for number, region in enumerate(regions, start=1)
    ]
    labels = ("missingRegionNumber", "missingRegionType", *_REGION_ANGLE_FIELDS)
    return write_star(path, MetaData.from_rows(labels, rows), "missing regions")
