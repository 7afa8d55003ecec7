"""The three volume formats, MRC, Spider and EM, one header at a time: where a file's voxels are
(:class:`Layout`), read from its header and checked against the file's size before anything is allocated,
and the writer of each format. :mod:`napari_mltomo.io.volumes` reads and writes volumes through them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE
from numpy.typing import NDArray

__all__ = [
    "Layout",
    "VolumeError",
    "em_layout",
    "mrc_layout",
    "sniff_format",
    "spider_layout",
    "volume_error",
    "write_em",
    "write_mrc",
    "write_spider",
]

_HEAD_BYTES = 1024

# Spider header words (0-based float32 indices) and limits.
_SP_NZ, _SP_NY, _SP_IREC, _SP_IFORM, _SP_IMAMI = 0, 1, 2, 4, 5
_SP_FMAX, _SP_FMIN, _SP_AV, _SP_SIG, _SP_NX, _SP_LABREC = 6, 7, 8, 9, 11, 12
_SP_LABBYT, _SP_LENBYT, _SP_ISTACK, _SP_MAXIM = 21, 22, 23, 25
_SP_PIXSIZ = 37  # SPIDER location 38: pixel size in Angstrom
_SP_WORDS = 38
_SP_MAX_NZ = 16776960
_SP_MAX_IFORM = 1000

_EM_HEADER_BYTES = 512
_EM_MACHINES = frozenset({0, 1, 2, 3, 5, 6})
_EM_PC = 6
_EM_FLOAT32 = 5
_EM_DTYPES = {1: "i1", 2: "i2", 4: "i4", 5: "f4", 9: "f8"}


class VolumeError(ValueError):
    """A volume file could not be read or written; the message names the file."""


def volume_error(path: Path, message: str) -> VolumeError:
    return VolumeError(f"{path}: {message}")


@dataclass(frozen=True)
class Layout:
    """Where one volume's voxels are in its file."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, int, int]  # z, y, x
    pixel_size_A: float | None


def _read_head(source: Path, n_bytes: int = _HEAD_BYTES) -> bytes:
    with open(source, "rb") as stream:
        return stream.read(n_bytes)


def sniff_format(source: Path) -> str:
    head = _read_head(source)
    size = source.stat().st_size
    if head[208:212] == b"MAP ":
        return "mrc"
    if _em_problem(head, size, exact_size=True) is None:
        return "em"
    if len(head) >= 4 * _SP_WORDS and _spider_problem(_spider_words(head)[0], size) is None:
        return "spider"
    raise volume_error(
        source,
        "unknown volume format: not MRC (no 'MAP ' at byte 208), EM or Spider; use a .mrc, .vol or .em file",
    )


def _single_image(source: Path, index: int | None, what: str) -> None:
    if index not in (None, 1):
        raise volume_error(source, f"is a single {what}, not a stack; cannot read image {index}")


# --------------------------------------------------------------------------- MRC


def mrc_layout(source: Path, index: int | None) -> Layout:
    head = _read_head(source)
    if len(head) < _HEAD_BYTES:
        raise volume_error(
            source, f"not a readable MRC file: {len(head)} bytes, shorter than the 1024-byte header"
        )
    order = _mrc_byte_order(head)
    header = np.frombuffer(head, dtype=HEADER_DTYPE.newbyteorder(order)).reshape(()).view(np.recarray)
    return _mrc_header_layout(source, header, index)


def _mrc_byte_order(head: bytes) -> str:
    """``<`` or ``>``: the machine stamp's (little-endian if it is unknown), unless the mode word is a known
    mode only in the other order (files with a wrong stamp exist)."""
    try:
        stamped = mrcfile.utils.byte_order_from_machine_stamp(head[212:216])
    except ValueError:
        stamped = "<"
    other = ">" if stamped == "<" else "<"
    if not _known_mrc_mode(head, stamped) and _known_mrc_mode(head, other):
        return other
    return stamped


def _known_mrc_mode(head: bytes, order: str) -> bool:
    """Whether the mode word, read in byte ``order``, is a mode mrcfile knows."""
    mode = int(np.frombuffer(head[12:16], dtype=f"{order}i4")[0])
    try:
        mrcfile.utils.dtype_from_mode(mode)
    except ValueError:
        return False
    return True


def _mrc_header_layout(source: Path, header: np.recarray, index: int | None) -> Layout:
    """Where the voxels are, from the header alone: sizes are checked against the file before any read."""
    mode = int(header.mode)
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError:
        raise volume_error(source, f"unsupported MRC mode {mode}") from None
    if dtype.kind == "c" or mode == 101:
        raise volume_error(source, f"MRC mode {mode} (complex or packed 4-bit) is not supported")
    if min(int(header.nx), int(header.ny), int(header.nz)) < 1:
        raise volume_error(source, f"bad MRC size nx={header.nx} ny={header.ny} nz={header.nz}")
    nsymbt, size = int(header.nsymbt), source.stat().st_size
    if nsymbt < 0 or _HEAD_BYTES + nsymbt > size:
        raise volume_error(source, f"bad extended header size NSYMBT={nsymbt} for a file of {size} bytes")
    if mrcfile.utils.spacegroup_is_volume_stack(header.ispg) and int(header.mz) < 1:
        raise volume_error(source, f"bad MRC volume stack: mz={header.mz}")
    shape = mrcfile.utils.data_shape_from_header(header)
    offset = _HEAD_BYTES + nsymbt
    if len(shape) == 4:  # a stack of volumes
        n_volumes, depth, height, width = shape
        number = index or 1
        if number > n_volumes:
            raise volume_error(source, f"volume stack has {n_volumes} volumes, no volume {number}")
        shape3 = (depth, height, width)
        offset += (number - 1) * math.prod(shape3) * dtype.itemsize
    elif len(shape) == 2:
        _single_image(source, index, "image")
        shape3 = (1, shape[0], shape[1])
    elif index is not None and (int(header.ispg) == 0 or source.suffix.lower() == ".mrcs"):
        if index > shape[0]:
            raise volume_error(source, f"image stack has {shape[0]} images, no image {index}")
        shape3 = (1, shape[1], shape[2])
        offset += (index - 1) * shape[1] * shape[2] * dtype.itemsize
    else:
        _single_image(source, index, "volume")
        shape3 = (shape[0], shape[1], shape[2])
    return Layout(offset, dtype, shape3, _mrc_pixel_size(header))


def _mrc_pixel_size(header: np.recarray) -> float | None:
    mx, cell_x = int(header.mx), float(header.cella.x)
    return _positive(cell_x / mx) if mx > 0 else None


def _positive(value: float) -> float | None:
    """``value`` if it is a finite positive number (a pixel size), else None."""
    return value if math.isfinite(value) and value > 0 else None


def write_mrc(target: Path, volume: NDArray[np.float32], pixel_size_A: float) -> None:
    with mrcfile.new(target) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = pixel_size_A


# --------------------------------------------------------------------------- Spider


def _spider_words(head: bytes) -> tuple[NDArray[np.float64], str]:
    """Header words and the file's byte order (``<`` or ``>``).

    The native reading is used unless ``|nz|`` is outside ``[1, 16776960]`` or ``|iform|``
    exceeds 1000, in which case the bytes are swapped.
    """
    native = "<" if sys.byteorder == "little" else ">"
    words = np.frombuffer(head[: 4 * _SP_WORDS], dtype=f"{native}f4")
    nz, iform = abs(float(words[_SP_NZ])), abs(float(words[_SP_IFORM]))
    if 1 <= nz <= _SP_MAX_NZ and iform <= _SP_MAX_IFORM:
        return words.astype(np.float64), native
    swapped = ">" if native == "<" else "<"
    return words.byteswap().astype(np.float64), swapped


def _spider_problem(words: NDArray[np.float64], size: int) -> str | None:
    """Why these header words are not a real-space Spider file, or None if they are."""
    fields = {
        "nz": words[_SP_NZ], "ny": words[_SP_NY], "nx": words[_SP_NX],
        "iform": words[_SP_IFORM], "labbyt": words[_SP_LABBYT],
    }  # fmt: skip
    if not all(math.isfinite(v) and float(v).is_integer() for v in fields.values()):
        return "header sizes are not whole numbers (not a Spider file)"
    nz, ny, nx, iform, labbyt = (int(v) for v in fields.values())
    if min(nz, ny, nx) < 1:
        return f"bad size nx={nx} ny={ny} nz={nz}"
    if iform < 0:
        return f"Fourier-space Spider files (iform {iform}) are not supported"
    if iform not in (1, 3):
        return f"unsupported Spider iform {iform} (expected 1 for an image or 3 for a volume)"
    if labbyt < 4 * _SP_WORDS or labbyt % 4:
        return f"bad header length labbyt={labbyt}"
    if size < labbyt + 4 * nx * ny * nz:
        return f"truncated: needs {labbyt + 4 * nx * ny * nz} bytes, the file has {size}"
    return None


def _count(value: float) -> int:
    """``value`` as a count: itself if it is a whole number >= 0, else 0."""
    return int(value) if math.isfinite(value) and float(value).is_integer() and value >= 0 else 0


def spider_layout(source: Path, index: int | None) -> Layout:
    head = _read_head(source)
    if len(head) < 4 * _SP_WORDS:
        raise volume_error(source, f"truncated Spider header: {len(head)} bytes")
    words, byte_order = _spider_words(head)
    problem = _spider_problem(words, source.stat().st_size)
    if problem is not None:
        raise volume_error(source, problem)
    nz, ny, nx = (int(words[i]) for i in (_SP_NZ, _SP_NY, _SP_NX))
    labbyt = int(words[_SP_LABBYT])
    offset = labbyt
    if words[_SP_ISTACK] > 0:
        n_images, number = _count(words[_SP_MAXIM]), index or 1
        if number > n_images:
            raise volume_error(source, f"stack has {n_images} images, no image {number}")
        offset += (number - 1) * (labbyt + 4 * nx * ny * nz) + labbyt
    else:
        _single_image(source, index, "volume")
    dtype = np.dtype(f"{byte_order}f4")
    return Layout(offset, dtype, (nz, ny, nx), _positive(float(words[_SP_PIXSIZ])))


def _spider_header(volume: NDArray[np.generic], pixel_size_A: float) -> bytes:
    """A little-endian Spider volume header (iform 3, or 1 when z = 1) with statistics."""
    nz, ny, nx = volume.shape
    lenbyt = 4 * nx
    labrec = math.ceil(1024 / lenbyt)
    words = np.zeros(labrec * lenbyt // 4, dtype="<f4")
    values = volume.astype(np.float64)
    words[_SP_NZ], words[_SP_NY], words[_SP_NX] = nz, ny, nx
    words[_SP_IREC] = labrec + nz * ny
    words[_SP_IFORM] = 3 if nz > 1 else 1
    words[_SP_IMAMI] = 1
    words[_SP_FMAX], words[_SP_FMIN] = values.max(), values.min()
    words[_SP_AV], words[_SP_SIG] = values.mean(), values.std()
    words[_SP_LABREC], words[_SP_LABBYT], words[_SP_LENBYT] = labrec, labrec * lenbyt, lenbyt
    words[_SP_PIXSIZ] = pixel_size_A
    return words.tobytes()


def write_spider(target: Path, volume: NDArray[np.generic], pixel_size_A: float) -> None:
    with open(target, "wb") as stream:
        stream.write(_spider_header(volume, pixel_size_A))
        stream.write(np.ascontiguousarray(volume, dtype="<f4").tobytes())


# --------------------------------------------------------------------------- EM


def _em_problem(head: bytes, size: int, *, exact_size: bool) -> str | None:
    """Why this is not an EM file, or None if it is."""
    if len(head) < 16:
        return f"truncated EM header: {len(head)} bytes"
    machine, code = head[0], head[3]
    if machine not in _EM_MACHINES:
        return f"unknown EM machine code {machine}"
    if code not in _EM_DTYPES:
        return f"unsupported EM data type code {code} (supported: {sorted(_EM_DTYPES)})"
    nx, ny, nz = _em_size(head)
    if min(nx, ny, nz) < 1:
        return f"bad EM size nx={nx} ny={ny} nz={nz}"
    needed = _EM_HEADER_BYTES + nx * ny * nz * np.dtype(_EM_DTYPES[code]).itemsize
    if size < needed or (exact_size and size != needed):
        return f"file has {size} bytes, the EM header describes {needed}"
    return None


def _em_byte_order(head: bytes) -> str:
    return "<" if head[0] == _EM_PC else ">"


def _em_size(head: bytes) -> tuple[int, int, int]:
    nx, ny, nz = np.frombuffer(head[4:16], dtype=f"{_em_byte_order(head)}i4").tolist()
    return nx, ny, nz


def _em_header(shape: tuple[int, int, int]) -> bytes:
    """A little-endian (PC) float32 EM header: machine code, data type code and ``nx ny nz``; zeros after."""
    nz, ny, nx = shape
    head = bytes([_EM_PC, 0, 0, _EM_FLOAT32]) + np.array([nx, ny, nz], dtype="<i4").tobytes()
    return head.ljust(_EM_HEADER_BYTES, b"\0")


def write_em(target: Path, volume: NDArray[np.generic]) -> None:
    with open(target, "wb") as stream:
        stream.write(_em_header(volume.shape))
        stream.write(np.ascontiguousarray(volume, dtype="<f4").tobytes())


def em_layout(source: Path, index: int | None) -> Layout:
    head = _read_head(source, _EM_HEADER_BYTES)
    problem = _em_problem(head, source.stat().st_size, exact_size=False)
    if problem is not None:
        raise volume_error(source, problem)
    _single_image(source, index, "volume")
    nx, ny, nz = _em_size(head)
    dtype = np.dtype(f"{_em_byte_order(head)}{_EM_DTYPES[head[3]]}")
    return Layout(_EM_HEADER_BYTES, dtype, (nz, ny, nx), None)
