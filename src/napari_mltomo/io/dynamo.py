"""Dynamo tables (``.tbl``) and data folders: read into our labels, written from them.

A table row means ``particle(q) = template(R (q - d))`` with ``R = Rz(narot) Rx(tilt) Rz(tdrot)`` and
``d = (dx, dy, dz)`` in pixels; ``R`` is our ``E`` of ``(rot, tilt, psi) = (90 - tdrot, tilt, -90 - narot)``
and ``d = -s`` (:func:`napari_mltomo.io.conventions.dynamo_angles`). Only two wedge types are documented
for Dynamo tables: 0 (full range, no missing region) and 1 (a wedge about y, ``ymintilt..ymaxtilt``).
The particles of a table are ``particle_<tag>.em`` in its data folder.
"""

from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path

import dynamotable
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.conventions import dynamo_angles
from napari_mltomo.io.interchange import PosedParticles, even_box
from napari_mltomo.io.table import ANGLE_LABELS, SHIFT_LABELS, MetaData, MetadataError
from napari_mltomo.io.volumes import read_volume, write_volume

__all__ = ["read_dynamo_table", "write_dynamo_table"]

#: The 42 columns of a Dynamo table, in order, by the names ``dynamotable`` gives them.
_COLUMNS = (
    "tag", "aligned_value", "averaged_value", "dx", "dy", "dz", "tdrot", "tilt", "narot",
    "cc", "cc2", "cpu", "ftype", "ymintilt", "ymaxtilt", "xmintilt", "xmaxtilt", "fs1", "fs2",
    "tomo", "reg", "class", "annotation", "x", "y", "z",
    "dshift", "daxis", "dnarot", "dcc", "otag", "npar", "undefined1", "ref", "sref", "apix", "def",
    "undefined2", "undefined3", "undefined4", "eig1", "eig2",
)  # fmt: skip
#: The columns read, up to ``class`` (column 22).
_READ_COLUMNS = ("tag", "dx", "dy", "dz", "tdrot", "tilt", "narot", "ftype", "ymintilt", "ymaxtilt", "class")
_MIN_COLUMNS = _COLUMNS.index("class") + 1
_FULL_RANGE, _WEDGE_Y = 0, 1
#: Particle file names tried for a tag, in order.
_PARTICLE_NAMES = ("particle_{:05d}.em", "particle_{:06d}.em", "particle_{:05d}.mrc", "particle_{:06d}.mrc")


# --------------------------------------------------------------------------- writing


def write_dynamo_table(
    path: str | os.PathLike[str], particles: PosedParticles, *, data_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Write `particles` as a Dynamo table, and with `data_dir` their volumes as ``particle_NNNNN.em``.

    Tags are 1..n in the order of the rows. Every one of the 42 columns is written: ``aligned`` and
    ``averaged`` 1, ``dx dy dz`` the negated shifts, ``tdrot tilt narot`` by
    :func:`~napari_mltomo.io.conventions.dynamo_angles`, ``cc`` the ``pMax`` (0 without it), ``ftype``
    0 or 1 with the wedge's ``ymintilt ymaxtilt``, ``tomo`` 1, ``class`` the ``ref``; the rest 0.

    Returns
    -------
    list of Path
        The files written: the table first, then the particles.

    Raises
    ------
    ValueError
        For missing regions Dynamo cannot express (only none and a wedge about y can be), odd boxes, poses
        or region numbers that are missing, or a file name not ending in ``.tbl``.
    """
    target = Path(path)
    if target.suffix != ".tbl":
        raise ValueError(f"{target}: a Dynamo table's name must end in .tbl")
    _check_regions(particles.regions)
    images = particles.images
    if len(images) == 0:
        raise ValueError("no particles to write")
    even_box(particles, target, "Dynamo")
    columns = _table_columns(particles)
    written = [] if data_dir is None else _write_particles(images["image"], columns["tag"], data_dir)
    with atomic_path(target) as temporary:
        dynamotable.write(pd.DataFrame(columns), str(temporary))
    return [target, *written]


def _check_regions(regions: tuple[MissingRegion, ...]) -> None:
    """Refuse regions other than wedges about y; warn about asymmetric wedges."""
    for number, region in enumerate(regions, start=1):
        if region.kind != "wedge_y":
            raise ValueError(
                f"missing region {number} is a {region.kind}: Dynamo tables only express no missing "
                "region and a wedge about y (wedge_y)"
            )
        _warn_if_asymmetric(region, f"missing region {number}")


def _warn_if_asymmetric(region: MissingRegion, where: str) -> None:
    if region.theta_y0_deg != -region.theta_yf_deg:
        warnings.warn(
            f"{where}: the wedge {region.theta_y0_deg:g}..{region.theta_yf_deg:g} is asymmetric, and the "
            "sign convention of Dynamo's tilt limits (ymintilt, ymaxtilt) against ours is not verified; "
            "check the wedge's orientation in Dynamo",
            UserWarning,
            stacklevel=3,
        )


def _table_columns(particles: PosedParticles) -> dict[str, NDArray[np.generic]]:
    """All 42 columns of the table of `particles`."""
    images = particles.images
    n = len(images)
    angles = images.float_columns(ANGLE_LABELS)
    if angles is None:
        raise ValueError("the particles have no angles (angleRot, angleTilt, anglePsi) to write")
    shifts = images.float_columns(SHIFT_LABELS)
    shifts = np.zeros((n, 3)) if shifts is None else shifts
    ftype, ymin, ymax = _wedge_columns(particles)
    columns: dict[str, NDArray[np.generic]] = {name: np.zeros(n, dtype=np.int64) for name in _COLUMNS}
    columns.update(
        {
            "tag": np.arange(1, n + 1),
            "aligned_value": np.ones(n, dtype=np.int64),
            "averaged_value": np.ones(n, dtype=np.int64),
            "tomo": np.ones(n, dtype=np.int64),
            "class": _column(images, "ref", 1).astype(np.int64),
            "cc": _column(images, "pMax", 0.0),
            "ftype": ftype,
            "ymintilt": ymin,
            "ymaxtilt": ymax,
        }
    )
    columns.update(zip(("dx", "dy", "dz"), 0.0 - shifts.T, strict=True))  # no "-0.0"
    columns.update(zip(("tdrot", "tilt", "narot"), dynamo_angles(angles).T, strict=True))
    return columns


def _column(images: MetaData, label: str, default: float) -> NDArray[np.generic]:
    """A column of `images`, or `default` on every row without it."""
    return np.asarray(images[label]) if label in images else np.full(len(images), default)


def _wedge_columns(
    particles: PosedParticles,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """``ftype``, ``ymintilt`` and ``ymaxtilt`` of every particle."""
    n, regions = len(particles.images), particles.regions
    if not regions:
        return np.full(n, _FULL_RANGE), np.zeros(n), np.zeros(n)
    if "missingRegionNumber" not in particles.images:
        raise ValueError("the particles have missing regions but no missingRegionNumber")
    numbers = np.asarray(particles.images["missingRegionNumber"])
    if np.any((numbers < 1) | (numbers > len(regions))):
        raise ValueError(f"a missingRegionNumber is outside the regions 1..{len(regions)}")
    ymin = np.array([region.theta_y0_deg for region in regions])[numbers - 1]
    ymax = np.array([region.theta_yf_deg for region in regions])[numbers - 1]
    return np.full(n, _WEDGE_Y), ymin, ymax


def _write_particles(
    images: NDArray[np.object_], tags: NDArray[np.int64], data_dir: str | os.PathLike[str]
) -> list[Path]:
    """Each image as ``particle_<tag>.em`` (float32) in `data_dir`."""
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for image, tag in zip(images, tags, strict=True):
        written.append(write_volume(folder / _PARTICLE_NAMES[0].format(tag), read_volume(str(image))))
    return written


# --------------------------------------------------------------------------- reading


def read_dynamo_table(path: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> PosedParticles:
    """The particles of a Dynamo table whose volumes are ``particle_NNNNN.em`` in `data_dir`.

    A tag's volume is the first of ``particle_%05d.em``, ``particle_%06d.em``, ``particle_%05d.mrc`` and
    ``particle_%06d.mrc`` that exists. ``class`` becomes ``ref`` (0 becomes 1); each distinct wedge
    becomes a ``wedge_y`` region. Tables carry no reliable pixel size: ``pixel_size_A`` is None.

    Raises
    ------
    MetadataError
        Naming the file and line for a malformed row, a particle file that is missing, or a wedge type
        other than 0 (none) or 1 (tilt about y).
    FileNotFoundError
        If the table does not exist.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such Dynamo table", str(source))
    lines = _row_lines(source)
    values = _read_columns(source, lines)
    tags = _whole_numbers(source, values, "tag", lines)
    classes = _whole_numbers(source, values, "class", lines)
    regions, region_numbers = _regions(source, values, lines)
    dynamo = np.stack([values[name] for name in ("tdrot", "tilt", "narot")], axis=1)
    files = [_particle_file(source, Path(data_dir), tag, line) for tag, line in zip(tags, lines, strict=True)]
    columns: dict[str, NDArray[np.generic]] = {"image": np.array(files, dtype=object)}
    columns.update(zip(ANGLE_LABELS, dynamo_angles(dynamo).T, strict=True))
    columns.update(zip(SHIFT_LABELS, (0.0 - values[name] for name in ("dx", "dy", "dz")), strict=True))
    columns["ref"] = np.maximum(classes, 1)
    if region_numbers is not None:
        columns["missingRegionNumber"] = region_numbers
    return PosedParticles(MetaData(columns), regions, None)


def _read_columns(source: Path, lines: list[int]) -> dict[str, NDArray[np.float64]]:
    """The columns of `_READ_COLUMNS`, as numbers, checked; `lines` are the rows' line numbers."""
    try:
        frame = dynamotable.read(str(source))
    except pd.errors.EmptyDataError:
        raise MetadataError(source, "the table is empty") from None
    except pd.errors.ParserError as err:
        raise _parser_error(source, err) from None
    except UnicodeDecodeError:
        raise MetadataError(source, "not a Dynamo table: not text") from None
    if frame.shape[1] < _MIN_COLUMNS:
        raise MetadataError(
            source, f"has {frame.shape[1]} columns; a Dynamo table has at least {_MIN_COLUMNS} (tag to class)"
        )
    return {name: _numeric_column(source, frame[name], name, lines) for name in _READ_COLUMNS}


def _parser_error(source: Path, err: Exception) -> MetadataError:
    """pandas' complaint about rows of different lengths, with the line it names."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if found is None:
        return MetadataError(source, f"not a Dynamo table: {err}")
    expected, line, seen = (int(group) for group in found.groups())
    return MetadataError(source, f"has {seen} columns where the rows above have {expected}", line)


def _row_lines(source: Path) -> list[int]:
    """The 1-based line number of each row (blank lines hold none)."""
    with open(source, encoding="utf-8", errors="replace") as text:
        return [number for number, line in enumerate(text, start=1) if line.strip()]


def _numeric_column(source: Path, column: pd.Series, name: str, lines: list[int]) -> NDArray[np.float64]:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = bad[0]
        number = _COLUMNS.index(name) + 1
        raise MetadataError(
            source, f"column {number} ({name}) is missing or not a number: {column.iloc[row]!r}", lines[row]
        )
    return values


def _whole_numbers(
    source: Path, values: dict[str, NDArray[np.float64]], name: str, lines: list[int]
) -> NDArray[np.int64]:
    column = values[name]
    bad = np.flatnonzero((column != np.round(column)) | (column < 0))
    if bad.size:
        row = bad[0]
        raise MetadataError(source, f"{name} must be a whole number >= 0, got {column[row]:g}", lines[row])
    return column.astype(np.int64)


def _regions(
    source: Path, values: dict[str, NDArray[np.float64]], lines: list[int]
) -> tuple[tuple[MissingRegion, ...], NDArray[np.int64] | None]:
    """The distinct wedges of the table, and each row's 1-based region (None if no row has a wedge)."""
    ftype = values["ftype"]
    unknown = np.flatnonzero((ftype != _FULL_RANGE) & (ftype != _WEDGE_Y))
    if unknown.size:
        row = unknown[0]
        raise MetadataError(
            source,
            f"wedge type (ftype) {ftype[row]:g} is not supported: only 0 (full range) and 1 (a wedge "
            "about y) are",
            lines[row],
        )
    if np.all(ftype == _FULL_RANGE):
        return (), None
    if np.any(ftype == _FULL_RANGE):
        first_none, first_wedge = np.argmax(ftype == _FULL_RANGE), np.argmax(ftype == _WEDGE_Y)
        raise MetadataError(
            source,
            f"line {lines[first_none]} has ftype 0 (no missing region) and line {lines[first_wedge]} ftype 1 "
            "(a wedge about y); ml_tomo needs a wedge for every particle or for none",
        )
    limits = np.stack([values["ymintilt"], values["ymaxtilt"]], axis=1)
    distinct, first_rows, numbers = np.unique(limits, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first_rows)  # regions numbered as they first appear
    regions = tuple(_wedge(source, *distinct[i], lines[first_rows[i]]) for i in order)
    renumber = np.empty(len(order), dtype=np.int64)
    renumber[order] = np.arange(1, len(order) + 1)
    return regions, renumber[np.ravel(numbers)]


def _wedge(source: Path, ymin: float, ymax: float, line: int) -> MissingRegion:
    try:
        region = MissingRegion(kind="wedge_y", theta_y0_deg=float(ymin), theta_yf_deg=float(ymax))
    except ValueError as err:
        raise MetadataError(source, f"ymintilt, ymaxtilt: {err}", line) from None
    _warn_if_asymmetric(region, f"{source}, line {line}")
    return region


def _particle_file(source: Path, data_dir: Path, tag: int, line: int) -> str:
    """The volume of `tag` in `data_dir`: the first of `_PARTICLE_NAMES` that exists."""
    for pattern in _PARTICLE_NAMES:
        candidate = data_dir / pattern.format(tag)
        if candidate.is_file():
            return str(candidate)
    names = ", ".join(pattern.format(tag) for pattern in _PARTICLE_NAMES)
    raise MetadataError(
        source, f"no volume for tag {tag} in {data_dir} (looked for {names}); give --dynamo_data", line
    )
