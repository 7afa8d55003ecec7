"""Property-based tests of the metadata and volume readers.

Whatever a file holds (any bytes, or a valid file with bytes flipped, cut short, lines duplicated or dropped,
header fields set to extreme values) a reader either returns a sound result or raises its one-line error
naming the file (MetadataError, VolumeError; FileNotFoundError as documented), never another exception, and
its memory peak (tracemalloc) stays within a bound relative to the file's size.
"""

from __future__ import annotations

import itertools
import math
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io import (
    MetaData,
    MetadataError,
    VolumeError,
    open_volume_lazy,
    read_images,
    read_metadata,
    read_missing_regions,
    read_pixel_size,
    read_star_blocks,
    read_volume,
    volume_shape,
    write_volume,
)

FUZZ = settings(max_examples=300, deadline=None, database=None)
ERRORS = (MetadataError, VolumeError, FileNotFoundError)
#: A refused volume costs at most this many times its file's size; a volume read costs at most this many times
#: it (int8 voxels become float32: the file's copy and the array returned).
REFUSED_VOLUME, READ_VOLUME = 1.5, 5.0
#: A text table costs at most this many times its size (one Python string per cell, then columns).
READ_TEXT = 100.0
#: Memory the readers may use beyond those bounds: their own Python objects (measured: under 13 KiB for a
#: volume, under 35 KiB for a table; reading the header through mrcfile cost 90 KiB for a 1 KiB file).
VOLUME_SLACK, TEXT_SLACK = 16 * 1024, 64 * 1024


@pytest.fixture(scope="module")
def new_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """A function giving a fresh file path with a given suffix (one per example: no file is rewritten while a
    memory map of it may be alive)."""
    folder = tmp_path_factory.mktemp("fuzz")
    numbers = itertools.count()
    yield lambda suffix: folder / f"f{next(numbers)}{suffix}"


def _measured(read: Callable[[str], object], spec: str) -> tuple[object, Exception | None, int]:
    """``read(spec)``'s result or documented error, and the peak memory while it ran."""
    tracemalloc.start()
    try:
        result, error = read(spec), None
    except ERRORS as caught:
        result, error = None, caught
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, error, peak


def _check_error(error: Exception, path: Path) -> None:
    """One line, naming the file."""
    text = str(error)
    assert str(path) in text, text
    assert "\n" not in text and "\r" not in text, text


# --------------------------------------------------------------------------- metadata

_VALID_TEXT = {
    ".xmd": "# XMIPP_STAR_1 *\ndata_images\nloop_\n _image\n _enabled\n _ref\n _angleRot\n"
    " _missingRegionNumber\n_weight\n'a b.vol' 1 1 10.5 1 0.5\nb.vol -1 2 -3e2 1 0.25\n",
    ".doc": " ; Headerinfo columns: rot (1) , tilt (2), psi (3), Ref (4), Wedge (5)\n ; img/1.vol\n"
    "    1 5  10.0 20.0 30.0 1 1\n ; img/2.vol\n    2 5  -1.0 -2.0 -3.0 2 1\n",
    ".sel": "particles/a.vol 1\nparticles/b.vol -1\nparticles/c.vol 0\n",
    ".txt": "a.vol 1 0 0 0 0 0 0 1 0\nb.vol 1 10 20 30 1 2 3 2 -5\n",
    ".wedges": "# Wedgeinfo\n1 wedge_y -60 60\n2 pyramid -50 55 -40 45\n3 cone 30\n",
}
_TOKENS = (
    "data_", "data_images", "loop_", "_image", "_ref", "_enabled", "_angleRot", "_missingRegionType",
    "_missingRegionNumber", "_weight", " ", "\t", "\n", "\r\n", "\r", "\ufeff", "'", '"', "#", ";", "@",
    "Headerinfo columns:", "rot (1)", "a.vol", "été.vol", "1", "-1", "0", "0.5", "nan", "inf", "1e999",
    "99999999999999999999", "wedge_y", "pyramid", "cone", "-60", "60",
)  # fmt: skip
_EXTREMES = ("0", "-1", "nan", "-inf", "1e308", "1e999", str(2**63), str(-(2**63) - 1), "x", "''")


@st.composite
def _mutated_text(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid table with lines duplicated, dropped or swapped, values made extreme, bytes flipped, or cut."""
    kind = draw(st.sampled_from(sorted(_VALID_TEXT)))
    lines = _VALID_TEXT[kind].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        change = draw(st.sampled_from(["duplicate", "drop", "swap", "extreme", "line end"]))
        if change == "duplicate":
            lines.insert(i, lines[i])
        elif change == "drop" and len(lines) > 1:
            del lines[i]
        elif change == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif change == "extreme" and lines[i].split():
            words = lines[i].split()
            words[draw(st.integers(0, len(words) - 1))] = draw(st.sampled_from(_EXTREMES))
            lines[i] = " ".join(words) + "\n"
        elif change == "line end":
            lines[i] = lines[i].replace("\n", draw(st.sampled_from(["\r\n", "\r", ""])))
    content = bytearray("".join(lines).encode())
    for _ in range(draw(st.integers(0, 2))):
        if content:
            content[draw(st.integers(0, len(content) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(content)))
    if draw(st.booleans()):
        del content[cut:]
    return (".txt" if kind == ".wedges" else kind), bytes(content)


_ANY_TEXT = st.tuples(
    st.sampled_from([".xmd", ".doc", ".sel", ".txt"]),
    st.binary(max_size=600)
    | st.lists(st.sampled_from(_TOKENS), max_size=60).map(lambda tokens: "".join(tokens).encode()),
)


def _check_table(table: MetaData) -> None:
    lengths = {len(table[label]) for label in table.labels}
    assert len(lengths) <= 1
    assert all(table[label].dtype.kind in "ifO" for label in table.labels)


def _check_read_text(reader: Callable[[str], object], result: object) -> None:
    """What a reader that did not refuse its file must return."""
    if reader is read_missing_regions:
        assert result and all(isinstance(region, MissingRegion) for region in result)  # type: ignore[union-attr]
    elif reader is read_star_blocks:
        assert isinstance(result, dict)
        for table in result.values():
            _check_table(table)
    else:
        assert isinstance(result, MetaData)
        _check_table(result)
        if reader is read_images:
            assert "image" in result
            assert "enabled" not in result or bool(np.all(result["enabled"] > 0))


_TEXT_READERS = st.sampled_from([read_metadata, read_images, read_missing_regions, read_star_blocks])


def _read_text_file(
    new_path: Callable[[str], Path], case: tuple[str, bytes], reader: Callable[[str], object]
) -> None:
    suffix, content = case
    path = new_path(suffix)
    path.write_bytes(content)
    result, error, peak = _measured(reader, str(path))
    event("read" if error is None else "refused")
    if error is None:
        _check_read_text(reader, result)
    else:
        _check_error(error, path)
    assert peak <= READ_TEXT * len(content) + TEXT_SLACK


@FUZZ
@given(case=_ANY_TEXT, reader=_TEXT_READERS)
def test_metadata_readers_on_any_bytes(
    new_path: Callable[[str], Path], case: tuple[str, bytes], reader: Callable[[str], object]
) -> None:
    _read_text_file(new_path, case, reader)


@FUZZ
@given(case=_mutated_text(), reader=_TEXT_READERS)
def test_metadata_readers_on_mutated_files(
    new_path: Callable[[str], Path], case: tuple[str, bytes], reader: Callable[[str], object]
) -> None:
    _read_text_file(new_path, case, reader)


# --------------------------------------------------------------------------- volumes

_DATA = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32) * 20
#: Header fields to set to extreme values, as (byte offset, struct format): MRC size, mode, start, grid,
#: cell, axes, space group, NSYMBT; Spider nz, ny, irec, iform, nx, labrec, labbyt, lenbyt, istack, maxim,
#: pixel size; EM size.
_MRC_FIELDS = [(4 * i, "i") for i in (0, 1, 2, 3, 4, 7, 8, 9, 16, 17, 18, 22, 23)] + [(40, "f"), (212, "B")]
_SPIDER_FIELDS = [(4 * i, "f") for i in (0, 1, 2, 4, 11, 12, 21, 22, 23, 25, 37)]
_EM_FIELDS = [(0, "B"), (3, "B"), (4, "i"), (8, "i"), (12, "i")]
_EXTREME_INTS = (0, -1, 1, 2, 4, 12, 101, 401, 2**31 - 1, -(2**31), 2**20)
_EXTREME_FLOATS = (math.nan, math.inf, -math.inf, -1.0, 0.0, 1.0, 3.0, 2.0**24, 1e30)


_SUFFIXES = {"mrc": ".mrc", "mrc int8": ".mrc", "spider": ".vol", "spider stack": ".stk", "em": ".em"}
_VOLUME_KINDS = tuple(_SUFFIXES)


def _valid_volume(folder: Path, kind: str) -> bytes:
    """A small valid file of ``kind``: MRC (float32 or int8), Spider volume or stack, EM."""
    path = folder / f"v{_SUFFIXES[kind]}"
    if kind == "mrc int8":
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(_DATA.astype(np.int8))
        return path.read_bytes()
    content = write_volume(path, _DATA).read_bytes()
    return _spider_stack(content) if kind == "spider stack" else content


def _spider_stack(volume: bytes) -> bytes:
    """Two images of a little-endian Spider volume as a stack: overall header (istack 2, maxim 2), then each
    image's header and data."""
    words = np.frombuffer(volume, "<f4").copy()
    labbyt = int(words[21])
    stack_header = words[: labbyt // 4].copy()
    stack_header[23], stack_header[25] = 2, 2
    return stack_header.tobytes() + volume + volume


@st.composite
def _mutated_volume(draw: st.DrawFn, originals: dict[str, bytes]) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(_VOLUME_KINDS))
    content = bytearray(originals[kind])
    fields = {"m": _MRC_FIELDS, "s": _SPIDER_FIELDS, "e": _EM_FIELDS}[kind[0]]
    for _ in range(draw(st.integers(1, 4))):
        change = draw(st.sampled_from(["field", "field", "flip", "cut", "swap order"]))
        if change == "field":
            offset, code = draw(st.sampled_from(fields))
            order = draw(st.sampled_from("<>"))
            if offset + 4 > len(content):  # cut before this field
                continue
            if code == "B":
                content[offset] = draw(st.sampled_from((0, 1, 3, 5, 6, 0x11, 0x44, 255)))
            else:
                values = _EXTREME_FLOATS if code == "f" else _EXTREME_INTS
                content[offset : offset + 4] = struct.pack(order + code, draw(st.sampled_from(values)))
        elif change == "flip" and content:
            content[draw(st.integers(0, len(content) - 1))] = draw(st.integers(0, 255))
        elif change == "cut":
            del content[draw(st.integers(0, len(content))) :]
        elif change == "swap order" and len(content) >= 1024:  # every header word byte-swapped
            content[:1024] = np.frombuffer(bytes(content[:1024]), "<u4").byteswap().tobytes()
    return draw(st.sampled_from([_SUFFIXES[kind], ".dat"])), bytes(content)


_VOLUME_READERS = (read_volume, volume_shape, open_volume_lazy, read_pixel_size)


def _check_volume_file(path: Path, prefix: str) -> None:
    """Every volume reader on ``path``: a sound result or a VolumeError naming it, within the memory bound."""
    spec = f"{prefix}{path}"
    size = path.stat().st_size
    results = {}
    for reader in _VOLUME_READERS:
        result, error, peak = _measured(reader, spec)
        if error is None:
            results[reader] = result
            assert peak <= READ_VOLUME * size + VOLUME_SLACK
        else:
            assert isinstance(error, VolumeError)
            _check_error(error, path)
            assert peak <= REFUSED_VOLUME * size + VOLUME_SLACK
    assert len(results) in (0, len(_VOLUME_READERS))  # the header decides, for every reader alike
    event("read" if results else "refused")
    if results:
        shape = results[volume_shape]
        assert len(shape) == 3 and min(shape) >= 1
        assert results[read_volume].shape == results[open_volume_lazy].shape == shape
        assert results[read_volume].dtype == np.float32
        pixel = results[read_pixel_size]
        assert pixel is None or (math.isfinite(pixel) and pixel > 0)
    results.clear()


@pytest.fixture(scope="module")
def valid_volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    return {kind: _valid_volume(folder, kind) for kind in _VOLUME_KINDS}


def test_the_valid_volumes_are_read(new_path: Callable[[str], Path], valid_volumes: dict[str, bytes]) -> None:
    for kind, content in valid_volumes.items():
        path = new_path(_SUFFIXES[kind])
        path.write_bytes(content)
        expected = _DATA.astype(np.int8) if kind == "mrc int8" else _DATA
        np.testing.assert_array_equal(read_volume(path), expected, err_msg=kind)


@FUZZ
@given(
    suffix=st.sampled_from([".mrc", ".vol", ".em", ".stk", ".dat"]),
    content=st.binary(max_size=3000),
    prefix=st.sampled_from(["", "2@"]),
)
def test_volume_readers_on_any_bytes(
    new_path: Callable[[str], Path], suffix: str, content: bytes, prefix: str
) -> None:
    path = new_path(suffix)
    path.write_bytes(content)
    _check_volume_file(path, prefix)


@FUZZ
@given(data=st.data(), prefix=st.sampled_from(["", "1@", "2@"]))
def test_volume_readers_on_mutated_files(
    new_path: Callable[[str], Path], valid_volumes: dict[str, bytes], data: st.DataObject, prefix: str
) -> None:
    suffix, content = data.draw(_mutated_volume(valid_volumes))
    path = new_path(suffix)
    path.write_bytes(content)
    _check_volume_file(path, prefix)


@pytest.mark.parametrize(
    "read", [read_metadata, read_images, read_missing_regions, read_star_blocks, *_VOLUME_READERS]
)
def test_a_missing_file_is_file_not_found(tmp_path: Path, read: Callable[[str], object]) -> None:
    with pytest.raises(FileNotFoundError):
        read(str(tmp_path / "nowhere.xmd"))
