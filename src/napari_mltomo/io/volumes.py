"""Volume files (MRC, Spider, EM) as float32 ``(z, y, x)`` numpy arrays.

All three formats store voxels with x varying fastest, which is numpy's C order for
``(z, y, x)`` arrays, so no axes are swapped. The format is chosen by extension; files with an
unknown extension are recognised from their header (MRC, then EM, then Spider). ``N@file``
selects image ``N`` (1-based) of a stack. Every size a header gives is checked against the file's size
before anything else is read or allocated.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from numpy.typing import ArrayLike, NDArray

from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.volume_formats import (
    Layout,
    VolumeError,
    em_layout,
    mrc_layout,
    sniff_format,
    spider_layout,
    volume_error,
    write_em,
    write_mrc,
    write_spider,
)

__all__ = [
    "VolumeError",
    "open_volume_lazy",
    "read_finite_volume",
    "read_pixel_size",
    "read_volume",
    "read_volume_stack",
    "volume_shape",
    "write_volume",
]

_FORMAT_BY_SUFFIX = {
    ".mrc": "mrc", ".map": "mrc", ".rec": "mrc", ".mrcs": "mrc",
    ".em": "em",
    ".vol": "spider", ".spi": "spider", ".xmp": "spider", ".scl": "spider",
    ".msk": "spider", ".stk": "spider",
}  # fmt: skip
_STACK_PREFIX = re.compile(r"(\d+)@(.+)")

# --------------------------------------------------------------------------- public API


def read_volume(path: str | os.PathLike[str]) -> NDArray[np.float32]:
    """Read a volume into memory.

    Parameters
    ----------
    path : str or os.PathLike
        ``.mrc .map .rec .mrcs`` (MRC), ``.em`` (EM/TOM), ``.vol .spi .xmp .scl .msk .stk``
        (Spider) or any other extension (format from the header). ``N@file`` reads image
        ``N`` (1-based) of a stack; the default is the first image.

    Returns
    -------
    (z, y, x) ndarray of float32
        The voxels, x fastest. A 2D image has ``z = 1``.

    Raises
    ------
    VolumeError
        If the file is not a readable volume (unknown format, bad header, truncated data).
    """
    source, layout = _locate(path)
    count = math.prod(layout.shape)
    data = np.fromfile(source, dtype=layout.dtype, count=count, offset=layout.offset)
    if data.size != count:
        raise volume_error(source, f"truncated: expected {count} voxels, read {data.size}")
    return _as_float32(data).reshape(layout.shape)


def read_finite_volume(path: str | os.PathLike[str], needed_for: str) -> NDArray[np.float32]:
    """`read_volume`, refusing a volume with a NaN or Inf voxel.

    Parameters
    ----------
    path : str or os.PathLike
        As for `read_volume`.
    needed_for : str
        What the volume is, for the message (``"--ref maps must be finite"``).

    Raises
    ------
    VolumeError
        As for `read_volume`; or, for a NaN or Inf voxel, ``"<path>: has NaN or Inf voxels (the first at
        x=.. y=.. z=..); <needed_for>"``.
    """
    volume = read_volume(path)
    if not np.isfinite(volume).all():
        z, y, x = (int(i) for i in np.argwhere(~np.isfinite(volume))[0])
        where = f"the first at x={x} y={y} z={z}"
        raise VolumeError(f"{os.fspath(path)}: has NaN or Inf voxels ({where}); {needed_for}")
    return volume


def _as_float32(data: NDArray[np.generic]) -> NDArray[np.float32]:
    """``data`` as native float32, converted in place when it is float32 already (of either byte order), so
    that reading a volume holds one copy of it."""
    if data.dtype.kind == "f" and data.dtype.itemsize == 4 and not data.dtype.isnative:
        data = data.byteswap(inplace=True).view(data.dtype.newbyteorder("="))
    return data.astype(np.float32, copy=False)


def open_volume_lazy(path: str | os.PathLike[str]) -> np.memmap:
    """Map a volume read-only without reading it (for ``dask.array.from_array``).

    Parameters
    ----------
    path : str or os.PathLike
        As for `read_volume`.

    Returns
    -------
    (z, y, x) numpy.memmap
        Read-only, in the file's own dtype and byte order; convert chunks with
        ``astype(np.float32)``.

    Raises
    ------
    VolumeError
        As for `read_volume`.
    """
    source, layout = _locate(path)
    return np.memmap(source, dtype=layout.dtype, mode="r", offset=layout.offset, shape=layout.shape)


def read_volume_stack(paths: Sequence[str | os.PathLike[str]], shape: tuple[int, int, int]) -> da.Array:
    """Volumes of one ``shape`` as a lazy ``(n, z, y, x)`` float32 dask array, one task per file.

    Nothing is read until a chunk is computed, and the files' shapes are not checked here: check them
    first (:func:`napari_mltomo.io.particle_box` reads the headers).
    """
    names = [str(path) for path in paths]
    layer = f"read-volumes-{dask.base.tokenize(names, shape)}"
    graph = {(layer, i, 0, 0, 0): (_read_block, name) for i, name in enumerate(names)}
    chunks = ((1,) * len(names), *((length,) for length in shape))
    return da.Array(graph, layer, chunks, dtype=np.float32)  # one graph layer, however many files


def _read_block(path: str) -> NDArray[np.float32]:
    """One volume as a ``(1, z, y, x)`` block of :func:`read_volume_stack`."""
    return read_volume(path)[None]


def volume_shape(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Return a volume's ``(z, y, x)`` size in voxels, reading only its header."""
    return _locate(path)[1].shape


def read_pixel_size(path: str | os.PathLike[str]) -> float | None:
    """Return the pixel size in Angstrom stored in the header, or None if there is none.

    MRC: the voxel size along x. Spider: header location 38 (PIXSIZ). EM: always None.
    """
    return _locate(path)[1].pixel_size_A


def write_volume(path: str | os.PathLike[str], data: ArrayLike, pixel_size_A: float = 1.0) -> Path:
    """Write a volume as float32, atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or os.PathLike
        ``.mrc .map .rec .mrcs`` write MRC (mode 2), ``.em`` a little-endian float32 EM file (whose
        header holds no pixel size); any other extension writes a little-endian Spider volume.
    data : (z, y, x) array_like of real numbers
        The voxels.
    pixel_size_A : float
        Pixel size in Angstrom, stored in the header.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        If `data` is not 3-D or `pixel_size_A` is not positive.
    TypeError
        If `data` is not real-valued.
    """
    target = Path(path)
    volume = np.asarray(data)
    if volume.ndim != 3:
        raise ValueError(f"data must be a (z, y, x) array, got shape {volume.shape}")
    if volume.dtype.kind not in "biuf":
        raise TypeError(f"data must be real numbers, got dtype {volume.dtype}")
    if not (math.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise ValueError(f"pixel_size_A must be a positive number, got {pixel_size_A}")
    kind = _FORMAT_BY_SUFFIX.get(target.suffix.lower(), "spider")
    with atomic_path(target) as temporary:
        if kind == "mrc":
            write_mrc(temporary, volume.astype(np.float32), pixel_size_A)
        elif kind == "em":
            write_em(temporary, volume)
        else:
            write_spider(temporary, volume, pixel_size_A)
    return target


# --------------------------------------------------------------------------- dispatch


def _locate(path: str | os.PathLike[str]) -> tuple[Path, Layout]:
    index, source = _split_stack_index(path)
    if index is not None and index < 1:
        raise volume_error(source, f"image numbers start at 1, got {index}@")
    kind = _FORMAT_BY_SUFFIX.get(source.suffix.lower()) or sniff_format(source)
    layout = {"mrc": mrc_layout, "spider": spider_layout, "em": em_layout}[kind](source, index)
    _check_size(source, layout)
    return source, layout


def _split_stack_index(path: str | os.PathLike[str]) -> tuple[int | None, Path]:
    """Split ``N@file`` unless the whole string names an existing file."""
    text = os.fspath(path)
    match = _STACK_PREFIX.fullmatch(text)
    if match and not Path(text).exists():
        return int(match[1]), Path(match[2])
    return None, Path(text)


def _check_size(source: Path, layout: Layout) -> None:
    needed = layout.offset + math.prod(layout.shape) * layout.dtype.itemsize
    size = source.stat().st_size
    if size < needed:
        raise volume_error(
            source,
            f"truncated: the header describes {needed} bytes ({layout.shape} voxels of "
            f"{layout.dtype} from byte {layout.offset}) but the file has {size}",
        )
