"""RELION particle STAR files (3.0 to 5, 3-D boxes): read into our labels, written from them.

RELION's angles give the inverse of our rotation and its origins our shifts times the pixel size
(``docs/conventions.md``, section RELION): ``rlnAngleRot/Tilt/Psi = relion_angles(rot, tilt, psi)`` and
``rlnOrigin{X,Y,Z}Angst = p * shift{X,Y,Z}``, both ways. The missing region of a particle travels as a
3-D CTF volume (``rlnCtfImage``, 1 observed and 0 missing), with our definitions in ``<stem>_missing.xmd``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import starfile
from numpy.typing import NDArray

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.views import region_mask_volume
from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.conventions import relion_angles, wrap_degrees
from napari_mltomo.io.interchange import PosedParticles, even_box
from napari_mltomo.io.metadata import read_missing_regions, write_missing_regions
from napari_mltomo.io.table import ANGLE_LABELS, SHIFT_LABELS, MetaData, MetadataError
from napari_mltomo.io.volumes import read_volume, write_volume

__all__ = ["read_relion_star", "write_relion_star"]

_ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
_ORIGINS_A = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
_ORIGINS_PX = ("rlnOriginX", "rlnOriginY", "rlnOriginZ")
_SUBTOMOGRAM_ANGLES = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")
#: Our score labels and RELION's.
_SCORES = {"pMax": "rlnMaxValueProbDistribution", "logLikelihood": "rlnLogLikeliContribution"}
#: Labels whose values are names, never numbers (a tomogram "01" stays "01").
_NAME_LABELS = [
    "rlnImageName", "rlnCtfImage", "rlnMicrographName", "rlnTomoName", "rlnTomoParticleName",
    "rlnOpticsGroupName", "rlnGroupName", "rlnReferenceImage",
]  # fmt: skip
_STACK_PREFIX = re.compile(r"(\d+@)(.+)")
_REGION_FILE = re.compile(r"region_(\d+)\.mrc")
#: Optics of the exported particles: only for RELION's bookkeeping (the CTF volume replaces the CTF).
_VOLTAGE_KV, _CS_MM, _AMPLITUDE_CONTRAST = 300.0, 2.7, 0.1
#: RELION 3.0 layout: the pixel size is rlnDetectorPixelSize (um) * 1e4 / rlnMagnification.
_MAGNIFICATION = 10000.0
_MICROGRAPH_PLACEHOLDER = "tomogram_1.mrc"


# --------------------------------------------------------------------------- reading


def read_relion_star(
    path: str | os.PathLike[str],
    *,
    project: str | os.PathLike[str] | None = None,
    allow_premultiplied: bool = False,
) -> PosedParticles:
    """The particles of a RELION particle STAR file (RELION 3.0 to 5, 3-D boxes), in our conventions.

    Parameters
    ----------
    path : str or os.PathLike
    project : str or os.PathLike, optional
        The folder relative image names start from; default: the working directory if the image is
        there, else the STAR file's folder.
    allow_premultiplied : bool
        Accept particles marked as multiplied by their CTF.

    Returns
    -------
    PosedParticles
        ``image`` (absolute), ``angleRot/Tilt/Psi``, ``shiftX/Y/Z`` (pixels), ``ref``,
        ``missingRegionNumber`` (1 for every particle unless the file is one of our exports), and the
        scores RELION stored.

    Raises
    ------
    MetadataError
        Naming the file for what cannot be used: 2-D tilt stacks, pre-rotated boxes, CTF-premultiplied
        data (unless `allow_premultiplied`), images that are not 3-D, a file that is not a particle STAR
        file.
    """
    source = Path(path)
    blocks = _read_blocks(source)
    _refuse_unusable(source, blocks, allow_premultiplied)
    table = _particle_block(source, blocks)
    pixel_size = _pixel_size(source, table, blocks.get("optics"))
    angles = relion_angles(_numbers(source, table, _ANGLES))
    shifts = _shifts_px(source, table, pixel_size)
    regions, region_numbers = _regions(source, table)
    refs = _numbers(source, table, ("rlnClassNumber",), default=1.0)[:, 0]
    folder = source.parent
    columns = {
        "image": np.array([_resolved_image(str(name), folder, project) for name in table["rlnImageName"]]),
        **dict(zip(ANGLE_LABELS, angles.T, strict=True)),
        **dict(zip(SHIFT_LABELS, shifts.T, strict=True)),
        "ref": np.rint(refs).astype(np.int64),
        "missingRegionNumber": region_numbers,
    }
    for ours, theirs in _SCORES.items():
        if theirs in table:
            columns[ours] = _numbers(source, table, (theirs,))[:, 0]
    return PosedParticles(MetaData(columns), regions, pixel_size)


def _read_blocks(source: Path) -> dict[str, pd.DataFrame]:
    """Every block of a STAR file as a table (a key-value block as one row)."""
    if not source.is_file():
        raise FileNotFoundError(2, "no such file", str(source))
    try:
        blocks = starfile.read(source, always_dict=True, parse_as_string=_NAME_LABELS)
    except (ValueError, IndexError, KeyError, TypeError) as err:
        raise MetadataError(source, f"not a readable STAR file ({' '.join(str(err).split())})") from None
    return {
        name: block if isinstance(block, pd.DataFrame) else pd.DataFrame([block])
        for name, block in blocks.items()
    }


def _refuse_unusable(source: Path, blocks: Mapping[str, pd.DataFrame], allow_premultiplied: bool) -> None:
    """Raise for particles that are not the 3-D boxes our model describes."""
    if np.any(_values(source, blocks, "rlnTomoSubTomosAre2DStacks") == 1):
        raise MetadataError(
            source,
            "holds 2-D tilt-series stacks (rlnTomoSubTomosAre2DStacks 1), not 3-D subtomograms; "
            "extract the particles as 3-D boxes",
        )
    dimensions = _values(source, blocks, "rlnImageDimensionality")
    if np.any(dimensions != 3):
        raise MetadataError(
            source, f"rlnImageDimensionality is {dimensions[dimensions != 3][0]:g}; ml_tomo needs 3-D images"
        )
    if any(np.any(_values(source, blocks, label) != 0) for label in _SUBTOMOGRAM_ANGLES):
        raise MetadataError(
            source,
            "the boxes are pre-rotated (non-zero rlnTomoSubtomogramRot/Tilt/Psi), so their missing wedge "
            "is not about the box's y axis; extract them without rotation",
        )
    if not allow_premultiplied and np.any(_values(source, blocks, "rlnCtfDataAreCtfPremultiplied") == 1):
        raise MetadataError(
            source,
            "the particles are multiplied by their CTF (rlnCtfDataAreCtfPremultiplied 1); extract them "
            "without it, or give --allow_premultiplied",
        )


def _values(source: Path, blocks: Mapping[str, pd.DataFrame], label: str) -> NDArray[np.float64]:
    """All values of ``label`` in any block, as numbers."""
    found = [_numbers(source, block, (label,))[:, 0] for block in blocks.values() if label in block]
    return np.concatenate(found) if found else np.empty(0)


def _particle_block(source: Path, blocks: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """``data_particles``, else the first block with ``rlnImageName`` (RELION 3.0 has one ``data_``)."""
    named = {name: block for name, block in blocks.items() if "rlnImageName" in block}
    if not named:
        raise MetadataError(
            source, "no block of particles with rlnImageName (data_particles, or data_ in RELION 3.0)"
        )
    table = named.get("particles", next(iter(named.values())))
    if len(table) == 0:
        raise MetadataError(source, "lists no particles")
    return table.reset_index(drop=True)


def _numbers(
    source: Path, table: pd.DataFrame, labels: Sequence[str], default: float = 0.0
) -> NDArray[np.float64]:
    """``(n, len(labels))`` float columns of ``table``; ``default`` where a label is absent."""
    out = np.full((len(table), len(labels)), default)
    for i, label in enumerate(labels):
        if label not in table:
            continue
        column = pd.to_numeric(table[label], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise MetadataError(source, f"{label} {table[label].iloc[bad[0]]!r} is not a number")
        out[:, i] = column
    return out


def _pixel_size(source: Path, table: pd.DataFrame, optics: pd.DataFrame | None) -> float | None:
    """Angstrom per pixel of the particles: their optics groups' ``rlnImagePixelSize`` (RELION 3.1 to 5)
    or ``rlnDetectorPixelSize * 1e4 / rlnMagnification`` (3.0); None if the file says neither."""
    if optics is not None and "rlnImagePixelSize" in optics:
        sizes = _optics_values(source, table, optics, "rlnImagePixelSize")
    elif "rlnDetectorPixelSize" in table and "rlnMagnification" in table:
        detector, magnification = _numbers(source, table, ("rlnDetectorPixelSize", "rlnMagnification")).T
        sizes = detector * 1e4 / magnification
    else:
        return None
    if not np.all(np.isfinite(sizes) & (sizes > 0)):
        raise MetadataError(source, "the pixel size must be positive")
    if np.ptp(sizes) > 1e-6 * sizes.max():
        raise MetadataError(
            source,
            f"the particles have different pixel sizes ({sizes.min():g} to {sizes.max():g} A); "
            "ml_tomo needs one",
        )
    return float(sizes[0])


def _optics_values(
    source: Path, table: pd.DataFrame, optics: pd.DataFrame, label: str
) -> NDArray[np.float64]:
    """``label`` of each particle's optics group (``rlnOpticsGroup``, 1 if absent)."""
    groups = _numbers(source, optics, ("rlnOpticsGroup",), default=1.0)[:, 0]
    by_group = dict(zip(groups, _numbers(source, optics, (label,))[:, 0], strict=True))
    wanted = _numbers(source, table, ("rlnOpticsGroup",), default=groups[0])[:, 0]
    unknown = sorted(set(wanted) - set(by_group))
    if unknown:
        raise MetadataError(source, f"rlnOpticsGroup {unknown[0]:g} of a particle is not in data_optics")
    return np.array([by_group[group] for group in wanted])


def _shifts_px(source: Path, table: pd.DataFrame, pixel_size: float | None) -> NDArray[np.float64]:
    """Our shifts in pixels: ``rlnOrigin*Angst / p``, else ``rlnOrigin*`` (pixels, RELION 3.0), else 0."""
    if any(label in table for label in _ORIGINS_A):
        if pixel_size is None:
            raise MetadataError(
                source, "rlnOrigin*Angst needs a pixel size (rlnImagePixelSize in data_optics)"
            )
        return _numbers(source, table, _ORIGINS_A) / pixel_size
    return _numbers(source, table, _ORIGINS_PX)


def _regions(source: Path, table: pd.DataFrame) -> tuple[tuple[MissingRegion, ...], NDArray[np.int64]]:
    """The regions of one of our exports (``rlnCtfImage`` ``region_RRR.mrc`` and ``<stem>_missing.xmd``)
    and each particle's number; otherwise none, and region 1 for every particle (for ``--missing``)."""
    ones = np.ones(len(table), dtype=np.int64)
    definitions = source.with_name(f"{source.stem}_missing.xmd")
    if "rlnCtfImage" not in table or not definitions.is_file():
        return (), ones
    names = [str(name) for name in table["rlnCtfImage"]]
    matches = [_REGION_FILE.fullmatch(os.path.basename(name)) for name in names]
    if not all(matches):
        return (), ones
    regions = tuple(read_missing_regions(definitions))
    numbers = np.array([int(match[1]) for match in matches], dtype=np.int64)
    bad = np.flatnonzero((numbers < 1) | (numbers > len(regions)))
    if bad.size:
        raise MetadataError(
            source, f"rlnCtfImage {names[bad[0]]} names a region that {definitions} does not define"
        )
    return regions, numbers


def _resolved_image(name: str, folder: Path, project: str | os.PathLike[str] | None) -> str:
    """``name`` made absolute (an ``N@`` prefix kept): from ``project`` if given, else from the working
    directory if the file is there, else from ``folder``."""
    match = _STACK_PREFIX.fullmatch(name)
    prefix, file = (match[1], match[2]) if match else ("", name)
    if os.path.isabs(file):
        return name
    if project is not None:
        base = Path(project)
    elif os.path.exists(file):
        base = Path.cwd()
    else:
        base = folder
    return prefix + os.path.abspath(base / file)


# --------------------------------------------------------------------------- writing


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

    Parameters
    ----------
    path : str or os.PathLike
        The STAR file.
    particles : PosedParticles
        With angles, shifts and a pixel size.
    layout : {"relion", "relion30"}
        ``"relion"``: optics and particles blocks, origins in Angstrom (RELION 3.1 to 5);
        ``"relion30"``: one block, origins in pixels (RELION 3.0, Warp/M).

    Returns
    -------
    list of Path
        The STAR file first, then the particles converted, the wedge volumes and the regions.

    Raises
    ------
    ValueError
        For an unknown layout, particles without angles, shifts or pixel size, or an odd box.
    """
    if layout not in ("relion", "relion30"):
        raise ValueError(f"layout must be 'relion' or 'relion30', got {layout!r}")
    target = Path(path)
    images, regions, pixel_size = particles.images, particles.regions, particles.pixel_size_A
    angles, shifts = _poses(images)
    if not pixel_size or pixel_size <= 0:
        raise ValueError("the pixel size of the particles is unknown; RELION needs it")
    box = even_box(particles, target, "RELION")
    names, converted = _mrc_images(target, images, pixel_size)
    region_rows = _region_rows(images, regions)
    wedges = _write_wedges(target, regions, box, pixel_size)
    files = {"rlnImageName": names}
    if wedges:
        files["rlnCtfImage"] = [str(wedges[row].resolve()) for row in region_rows]
    poses = _pose_columns(angles, shifts, pixel_size, layout)
    refs = images["ref"] if "ref" in images else np.ones(len(images), dtype=np.int64)
    scores = {theirs: images[ours] for ours, theirs in _SCORES.items() if ours in images}
    if layout == "relion":
        group = np.ones(len(images), dtype=np.int64)
        columns = {**files, **poses, "rlnClassNumber": refs, "rlnOpticsGroup": group, **scores}
        blocks = {"optics": _optics_block(pixel_size, box), "particles": pd.DataFrame(columns)}
    else:
        placement, pixel = _relion30_placement(len(images)), _relion30_pixel(pixel_size)
        columns = {**placement, **files, **pixel, **poses, "rlnClassNumber": refs, **scores}
        blocks = {"": pd.DataFrame(columns)}
    written = [target, *converted, *wedges]
    if regions:
        written.append(write_missing_regions(target.with_name(f"{target.stem}_missing.xmd"), regions))
    with atomic_path(target) as temporary:
        starfile.write(blocks, temporary)
    return written


def _poses(images: MetaData) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Angles and shifts of every particle; ValueError if any is missing."""
    angles, shifts = images.float_columns(ANGLE_LABELS), images.float_columns(SHIFT_LABELS)
    if angles is None or shifts is None or not (np.all(np.isfinite(angles)) and np.all(np.isfinite(shifts))):
        raise ValueError("every particle needs angleRot/Tilt/Psi and shiftX/Y/Z to be written for RELION")
    return angles, shifts


def _mrc_images(target: Path, images: MetaData, pixel_size: float) -> tuple[list[str], list[Path]]:
    """Absolute MRC names of the particles, converting those that are not single MRC files to MRC in
    ``<stem>_subtomos/`` (as ``RRRRRR_<name>.mrc``, numbered by row). Returns the names and the files
    written."""
    folder = target.with_name(f"{target.stem}_subtomos")
    names, converted = [], []
    for row, name in enumerate(map(str, images["image"]), start=1):
        match = _STACK_PREFIX.fullmatch(name)
        if match is None and Path(name).suffix.lower() == ".mrc":
            names.append(os.path.abspath(name))
            continue
        folder.mkdir(exist_ok=True)
        file = Path(match[2] if match else name)
        written = write_volume(folder / f"{row:06d}_{file.stem}.mrc", read_volume(name), pixel_size)
        converted.append(written)
        names.append(str(written.resolve()))
    return names, converted


def _region_rows(images: MetaData, regions: tuple[MissingRegion, ...]) -> NDArray[np.intp]:
    """The 0-based region of each particle (all 0 without a ``missingRegionNumber`` column and one
    region)."""
    if not regions:
        return np.zeros(len(images), dtype=np.intp)
    if "missingRegionNumber" not in images:
        if len(regions) == 1:
            return np.zeros(len(images), dtype=np.intp)
        raise ValueError(f"{len(regions)} missing regions but no missingRegionNumber column")
    numbers = np.asarray(images["missingRegionNumber"], dtype=np.intp)
    if np.any((numbers < 1) | (numbers > len(regions))):
        raise ValueError(f"missingRegionNumber must lie in 1..{len(regions)}")
    return numbers - 1


def _write_wedges(
    target: Path, regions: tuple[MissingRegion, ...], box: int, pixel_size: float
) -> list[Path]:
    """One centred ``box``-cube per region, 1 observed and 0 missing: RELION's 3-D CTF of its particles."""
    if not regions:
        return []
    folder = target.with_name(f"{target.stem}_wedges")
    folder.mkdir(exist_ok=True)
    return [
        write_volume(
            folder / f"region_{number:03d}.mrc", region_mask_volume(region, box, ball=False), pixel_size
        )
        for number, region in enumerate(regions, start=1)
    ]


def _pose_columns(
    angles: NDArray[np.float64], shifts: NDArray[np.float64], pixel_size: float, layout: str
) -> dict[str, NDArray[np.float64]]:
    """RELION's angles (tilt in [0, 180]) and origins: Angstrom (``"relion"``) or pixels (``"relion30"``)."""
    theirs = _tilt_non_negative(relion_angles(angles))
    if layout == "relion":
        labels, origins = _ORIGINS_A, shifts * pixel_size
    else:
        labels, origins = _ORIGINS_PX, shifts
    return {**dict(zip(_ANGLES, theirs.T, strict=True)), **dict(zip(labels, origins.T, strict=True))}


def _tilt_non_negative(angles: NDArray[np.float64]) -> NDArray[np.float64]:
    """The same rotation with tilt in ``[0, 180]``: ``(a, -t, b)`` is ``(a + 180, t, b + 180)``."""
    first, tilt, last = wrap_degrees(angles).T
    flip = tilt < 0
    return np.stack(
        [wrap_degrees(first + 180.0 * flip), np.abs(tilt), wrap_degrees(last + 180.0 * flip)], axis=1
    )


def _optics_block(pixel_size: float, box: int) -> pd.DataFrame:
    """One optics group of 3-D images, not CTF-premultiplied."""
    return pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnVoltage": [_VOLTAGE_KV],
            "rlnSphericalAberration": [_CS_MM],
            "rlnAmplitudeContrast": [_AMPLITUDE_CONTRAST],
            "rlnImagePixelSize": [pixel_size],
            "rlnImageSize": [box],
            "rlnImageDimensionality": [3],
            "rlnCtfDataAreCtfPremultiplied": [0],
        }
    )


def _relion30_placement(count: int) -> dict[str, object]:
    """RELION 3.0's micrograph and coordinates of each particle: unknown, so a placeholder and 0."""
    zeros = np.zeros(count)
    return {
        "rlnMicrographName": [_MICROGRAPH_PLACEHOLDER] * count,
        "rlnCoordinateX": zeros,
        "rlnCoordinateY": zeros,
        "rlnCoordinateZ": zeros,
    }


def _relion30_pixel(pixel_size: float) -> dict[str, float]:
    """RELION 3.0's pixel size: a detector pixel (um) at a magnification, ``p = detector * 1e4 / mag``."""
    return {"rlnMagnification": _MAGNIFICATION, "rlnDetectorPixelSize": pixel_size * _MAGNIFICATION / 1e4}
