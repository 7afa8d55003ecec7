"""Volume readers and writers, checked against files built by hand from the format notes."""

from __future__ import annotations

import math
import re
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_mltomo.io import (
    VolumeError,
    open_volume_lazy,
    read_finite_volume,
    read_pixel_size,
    read_volume,
    volume_shape,
    write_volume,
)
from napari_mltomo.io import volumes as volumes_module

SHAPE = (4, 5, 6)  # z, y, x: not a cube, so axis mix-ups show


def _volume(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --------------------------------------------------------------------------- independent writers


def _spider_header(
    shape: tuple[int, int, int],
    order: str,
    *,
    iform: int = 3,
    istack: int = 0,
    maxim: int = 0,
    pixel_size_A: float = 0.0,
) -> bytes:
    """Spider header from the format notes: float32 words, labbyt = ceil(1024/(4nx))*4nx."""
    nz, ny, nx = shape
    lenbyt = 4 * nx
    labrec = math.ceil(1024 / lenbyt)
    words = [0.0] * (labrec * lenbyt // 4)
    words[0], words[1], words[11] = nz, ny, nx
    words[2] = labrec + ny * nz
    words[4] = iform
    words[12], words[21], words[22] = labrec, labrec * lenbyt, lenbyt
    words[23], words[25] = istack, maxim
    words[37] = pixel_size_A
    return struct.pack(f"{order}{len(words)}f", *words)


def _spider_bytes(data: np.ndarray, order: str, **header: float) -> bytes:
    return _spider_header(data.shape, order, **header) + data.astype(f"{order}f4").tobytes()


def _spider_stack_bytes(images: list[np.ndarray], order: str) -> bytes:
    shape = images[0].shape
    parts = [_spider_header(shape, order, istack=2, maxim=len(images))]
    parts += [_spider_bytes(image, order) for image in images]
    return b"".join(parts)


def _em_bytes(data: np.ndarray, machine: int, code: int, dtype: str) -> bytes:
    """EM header: byte 0 machine, byte 3 type, int32 nx ny nz at 4..15, data from 512."""
    order = "<" if machine == 6 else ">"
    nz, ny, nx = data.shape
    header = struct.pack(f"{order}4B3i", machine, 0, 0, code, nx, ny, nz).ljust(512, b"\0")
    return header + data.astype(f"{order}{dtype}").tobytes()


MRC_MODES = {0: "i1", 1: "i2", 2: "f4", 6: "u2", 12: "f2"}


def _mrc_bytes(
    data: np.ndarray,
    order: str,
    pixel_size_A: float,
    *,
    mode: int = 2,
    extended: bytes = b"",
    stamp: bool = True,
) -> bytes:
    """Minimal MRC2014 header written word by word, the extended header, then the data in `mode`."""
    nz, ny, nx = data.shape
    words = struct.pack(f"{order}4i", nx, ny, nz, mode)  # size and mode
    words += struct.pack(f"{order}3i", 0, 0, 0)  # nxstart...
    words += struct.pack(f"{order}3i", nx, ny, nz)  # mx my mz
    words += struct.pack(f"{order}6f", nx * pixel_size_A, ny * pixel_size_A, nz * pixel_size_A, 90, 90, 90)
    words += struct.pack(f"{order}3i", 1, 2, 3)  # mapc mapr maps
    words += struct.pack(f"{order}3f", data.min(), data.max(), data.mean())
    words += struct.pack(f"{order}2i", 1, len(extended))  # ispg, nsymbt
    header = bytearray(words.ljust(1024, b"\0"))
    header[104:108] = b"FEI1" if extended else b"\0\0\0\0"  # exttyp
    header[208:212] = b"MAP "
    if stamp:
        header[212:216] = b"\x44\x44\0\0" if order == "<" else b"\x11\x11\0\0"
    return bytes(header) + extended + data.astype(f"{order}{MRC_MODES[mode]}").tobytes()


def _write_bytes(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- Spider


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("name", ["v.vol", "v.spi", "v.xmp", "v.scl", "v.msk", "v.unknown"])
def test_read_hand_built_spider(tmp_path: Path, order: str, name: str) -> None:
    data = _volume()
    path = _write_bytes(tmp_path / name, _spider_bytes(data, order, pixel_size_A=2.25))
    volume = read_volume(path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume, data)
    assert volume_shape(path) == SHAPE
    assert read_pixel_size(path) == pytest.approx(2.25)


def test_read_spider_image_as_single_slice(tmp_path: Path) -> None:
    image = _volume((1, 7, 9))
    path = _write_bytes(tmp_path / "i.xmp", _spider_bytes(image, "<", iform=1))
    np.testing.assert_array_equal(read_volume(path), image)
    assert read_pixel_size(path) is None


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("prefix", "expected"), [("", 0), ("1@", 0), ("2@", 1), ("3@", 2)])
def test_read_spider_stack_image(tmp_path: Path, order: str, prefix: str, expected: int) -> None:
    images = [_volume(seed=seed) for seed in range(3)]
    path = _write_bytes(tmp_path / "s.stk", _spider_stack_bytes(images, order))
    np.testing.assert_array_equal(read_volume(f"{prefix}{path}"), images[expected])
    assert volume_shape(f"{prefix}{path}") == SHAPE


@pytest.mark.parametrize(
    ("content", "spec", "match"),
    [
        (_spider_stack_bytes([_volume()] * 2, "<"), "3@{path}", "stack has 2 images, no image 3"),
        (_spider_stack_bytes([_volume()] * 2, "<"), "0@{path}", "image numbers start at 1"),
        (_spider_bytes(_volume(), "<"), "2@{path}", "single volume, not a stack"),
        (_spider_bytes(_volume(), "<", iform=-22), "{path}", r"Fourier-space .*iform -22"),
        (_spider_bytes(_volume(), "<", iform=7), "{path}", "unsupported Spider iform 7"),
        (_spider_bytes(_volume(), ">")[:-10], "{path}", "truncated"),
        (_spider_stack_bytes([_volume()] * 2, "<")[:-10], "2@{path}", "truncated"),
        (b"\0" * 12, "{path}", "truncated Spider header"),
        (b"\0" * 2048, "{path}", "bad size"),
    ],
)
def test_spider_errors_name_the_file(tmp_path: Path, content: bytes, spec: str, match: str) -> None:
    path = _write_bytes(tmp_path / "bad.vol", content)
    with pytest.raises(VolumeError, match=rf"bad\.vol: .*{match}"):
        read_volume(spec.format(path=path))


def test_write_spider_matches_the_format_notes(tmp_path: Path) -> None:
    data = _volume()
    path = write_volume(tmp_path / "out.vol", data, pixel_size_A=3.5)
    raw = path.read_bytes()
    words = struct.unpack("<38f", raw[: 4 * 38])
    nz, ny, nx = SHAPE
    labbyt = math.ceil(1024 / (4 * nx)) * 4 * nx
    assert (words[0], words[1], words[11]) == (nz, ny, nx)
    assert (words[4], words[21], words[22], words[23]) == (3, labbyt, 4 * nx, 0)
    assert words[37] == 3.5
    assert len(raw) == labbyt + 4 * data.size
    np.testing.assert_array_equal(np.frombuffer(raw[labbyt:], "<f4").reshape(SHAPE), data)


# --------------------------------------------------------------------------- EM


@pytest.mark.parametrize(
    ("machine", "code", "dtype"),
    [(6, 5, "f4"), (5, 5, "f4"), (6, 1, "i1"), (6, 2, "i2"), (0, 4, "i4"), (3, 9, "f8")],
)
@pytest.mark.parametrize("name", ["v.em", "v.unknown"])
def test_read_hand_built_em(tmp_path: Path, machine: int, code: int, dtype: str, name: str) -> None:
    data = (_volume() * 20).astype(dtype)
    path = _write_bytes(tmp_path / name, _em_bytes(data, machine, code, dtype))
    volume = read_volume(path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume, data.astype(np.float32))
    assert volume_shape(path) == SHAPE
    assert read_pixel_size(path) is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_em_bytes(_volume(), 6, 5, "f4")[:-4], "the EM header describes"),
        (_em_bytes(_volume(), 6, 5, "f4").replace(b"\x06\0\0\x05", b"\x06\0\0\x07", 1), "code 7"),
        (_em_bytes(_volume(), 6, 5, "f4").replace(b"\x06", b"\x09", 1), "machine code 9"),
    ],
)
def test_em_errors_name_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = _write_bytes(tmp_path / "bad.em", content)
    with pytest.raises(VolumeError, match=rf"bad\.em: .*{match}"):
        read_volume(path)


# --------------------------------------------------------------------------- MRC


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("name", ["v.mrc", "v.map", "v.rec", "v.unknown"])
def test_read_hand_built_mrc(tmp_path: Path, order: str, name: str) -> None:
    data = _volume()
    path = _write_bytes(tmp_path / name, _mrc_bytes(data, order, pixel_size_A=1.75))
    np.testing.assert_array_equal(read_volume(path), data)
    assert volume_shape(path) == SHAPE
    assert read_pixel_size(path) == pytest.approx(1.75)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_read_mrc_modes_written_by_mrcfile(tmp_path: Path, dtype: type[np.generic]) -> None:
    data = (_volume() * 10).astype(dtype)
    path = tmp_path / "v.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
    volume = read_volume(path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume, data.astype(np.float32))


def test_read_mrc_image_and_stacks(tmp_path: Path) -> None:
    image = _volume((1, 5, 6))[0]
    with mrcfile.new(tmp_path / "i.mrc") as mrc:
        mrc.set_data(image)
    assert volume_shape(tmp_path / "i.mrc") == (1, 5, 6)

    images = _volume((3, 5, 6))
    with mrcfile.new(tmp_path / "s.mrcs") as mrc:
        mrc.set_data(images)
        mrc.set_image_stack()
    np.testing.assert_array_equal(read_volume(f"2@{tmp_path / 's.mrcs'}"), images[1:2])
    np.testing.assert_array_equal(read_volume(tmp_path / "s.mrcs"), images)

    volumes = np.stack([_volume(seed=seed) for seed in range(3)])
    with mrcfile.new(tmp_path / "vs.mrcs") as mrc:
        mrc.set_data(volumes)
    np.testing.assert_array_equal(read_volume(f"3@{tmp_path / 'vs.mrcs'}"), volumes[2])
    np.testing.assert_array_equal(read_volume(tmp_path / "vs.mrcs"), volumes[0])
    with pytest.raises(VolumeError, match="volume stack has 3 volumes, no volume 4"):
        read_volume(f"4@{tmp_path / 'vs.mrcs'}")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"abc", "not a readable MRC file"),
        (b"\1" * 2048, "unsupported MRC mode"),
        (_mrc_bytes(_volume(), "<", 1.0)[:-8], "truncated"),
    ],
)
def test_mrc_errors_name_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    path = _write_bytes(tmp_path / "bad.mrc", content)
    with pytest.raises(VolumeError, match=rf"bad\.mrc: .*{match}"):
        read_volume(path)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name", ["o.mrc", "o.map", "o.vol", "o.spi", "o.xmp", "o.other"])
@pytest.mark.parametrize("pixel_size_A", [1.0, 4.2])
def test_write_read_round_trip(tmp_path: Path, name: str, pixel_size_A: float) -> None:
    data = _volume()
    path = write_volume(tmp_path / name, data, pixel_size_A)
    assert path == tmp_path / name
    np.testing.assert_array_equal(read_volume(path), data)
    assert volume_shape(path) == SHAPE
    assert read_pixel_size(path) == pytest.approx(pixel_size_A)
    assert sorted(tmp_path.iterdir()) == [path]


def test_written_mrc_is_read_by_mrcfile(tmp_path: Path) -> None:
    data = _volume()
    path = write_volume(tmp_path / "o.mrc", data.astype(np.float64), pixel_size_A=2.0)
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == np.float32
        np.testing.assert_array_equal(mrc.data, data)
        assert float(mrc.voxel_size.x) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("data", "pixel_size_A", "error", "match"),
    [
        (np.zeros((4, 4)), 1.0, ValueError, r"\(z, y, x\) array"),
        (np.zeros((2, 2, 2)), 0.0, ValueError, "positive"),
        (np.zeros((2, 2, 2)), math.nan, ValueError, "positive"),
        (np.zeros((2, 2, 2), complex), 1.0, TypeError, "real numbers"),
    ],
)
def test_write_volume_rejects_bad_input(
    tmp_path: Path, data: np.ndarray, pixel_size_A: float, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        write_volume(tmp_path / "o.mrc", data, pixel_size_A)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_write_em_round_trip(tmp_path: Path, dtype: type[np.generic]) -> None:
    data = (_volume() * 20).astype(dtype)
    path = write_volume(tmp_path / "o.em", data, pixel_size_A=3.0)
    assert path == tmp_path / "o.em"
    np.testing.assert_array_equal(read_volume(path), data.astype(np.float32))
    assert volume_shape(path) == SHAPE
    assert read_pixel_size(path) is None  # EM headers hold no pixel size
    assert sorted(tmp_path.iterdir()) == [path]


def test_written_em_matches_the_format_notes(tmp_path: Path) -> None:
    data = _volume()
    path = write_volume(tmp_path / "o.em", data)
    assert path.read_bytes() == _em_bytes(data, 6, 5, "f4")  # PC byte order, float32


@pytest.mark.parametrize(("name", "writer"), [("o.em", "write_em"), ("o.vol", "write_spider")])
def test_write_volume_is_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, writer: str
) -> None:
    path = write_volume(tmp_path / name, _volume(seed=1))

    def write_half_then_fail(target: Path, *_: object) -> None:
        target.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(volumes_module, writer, write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_volume(path, _volume(seed=2))
    np.testing.assert_array_equal(read_volume(path), _volume(seed=1))
    assert list(tmp_path.iterdir()) == [path]


# --------------------------------------------------------------------------- lazy and sniffing


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("big.vol", _spider_bytes(_volume(), ">")),
        ("s.stk", _spider_stack_bytes([_volume(seed=5), _volume()], "<")),
        ("v.em", _em_bytes(_volume(), 5, 5, "f4")),
        ("v.mrc", _mrc_bytes(_volume(), ">", 1.0)),
    ],
)
def test_open_volume_lazy_is_a_read_only_memmap(tmp_path: Path, name: str, content: bytes) -> None:
    path = _write_bytes(tmp_path / name, content)
    spec = f"2@{path}" if name.endswith(".stk") else path
    mapped = open_volume_lazy(spec)
    assert isinstance(mapped, np.memmap)
    assert mapped.shape == SHAPE
    assert not mapped.flags.writeable
    np.testing.assert_array_equal(mapped.astype(np.float32), _volume())


@pytest.mark.parametrize("content", [b"", b"\x7f" * 3000, b"hello world\n" * 100])
def test_unknown_format_is_reported(tmp_path: Path, content: bytes) -> None:
    path = _write_bytes(tmp_path / "mystery.dat", content)
    with pytest.raises(VolumeError, match=r"mystery\.dat: unknown volume format"):
        volume_shape(path)


# --------------------------------------------------------------------------- odd but valid


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("mode", sorted(MRC_MODES))
def test_read_every_mrc_mode_in_both_byte_orders(tmp_path: Path, order: str, mode: int) -> None:
    data = (_volume() * 20).astype(MRC_MODES[mode])
    path = _write_bytes(tmp_path / "v.mrc", _mrc_bytes(data, order, 1.5, mode=mode))
    volume = read_volume(path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume, data.astype(np.float32))
    np.testing.assert_array_equal(open_volume_lazy(path).astype(np.float32), data.astype(np.float32))


@pytest.mark.parametrize("order", ["<", ">"])
def test_read_mrc_with_an_extended_header(tmp_path: Path, order: str) -> None:
    data = _volume()
    path = _write_bytes(tmp_path / "v.mrc", _mrc_bytes(data, order, 2.0, extended=bytes(range(256)) * 3))
    np.testing.assert_array_equal(read_volume(path), data)
    assert read_pixel_size(path) == pytest.approx(2.0)


def test_read_mrc_extended_header_written_by_mrcfile(tmp_path: Path) -> None:
    data = _volume()
    with mrcfile.new(tmp_path / "v.mrc") as mrc:
        mrc.set_data(data)
        mrc.set_extended_header(np.arange(100, dtype=np.int32))
    np.testing.assert_array_equal(read_volume(tmp_path / "v.mrc"), data)


@pytest.mark.parametrize(("order", "mode"), [("<", 2), (">", 2), (">", 1), ("<", 12)])
def test_mrc_byte_order_from_the_mode_without_a_machine_stamp(tmp_path: Path, order: str, mode: int) -> None:
    data = (_volume() * 20).astype(MRC_MODES[mode])
    path = _write_bytes(tmp_path / "v.mrc", _mrc_bytes(data, order, 1.0, mode=mode, stamp=False))
    np.testing.assert_array_equal(read_volume(path), data.astype(np.float32))


@pytest.mark.parametrize("name", ["v.mrc", "v.vol", "v.em", "v.xmp"])
def test_non_ascii_and_spaces_in_volume_paths(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "données à voir" / "été 2024"
    folder.mkdir(parents=True)
    data = _volume()
    path = write_volume(folder / f"particule ü {name}", data)
    np.testing.assert_array_equal(read_volume(path), data)
    np.testing.assert_array_equal(read_volume(str(path)), data)
    assert volume_shape(path) == SHAPE


# --------------------------------------------------------------------------- headers against the file size

BIG = (64, 64, 64)  # 1 MiB of float32: large enough that the reader's own objects are noise in a memory peak


def _peak_bytes(read: Callable[..., object], *args: object) -> int:
    """The peak memory (tracemalloc: Python objects and numpy arrays) while ``read(*args)`` runs."""
    tracemalloc.start()
    try:
        read(*args)
    except VolumeError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _set_word(content: bytes, index: int, value: float, fmt: str) -> bytes:
    """``content`` with 4-byte word ``index`` set to ``value`` (``struct`` format ``fmt``)."""
    return content[: 4 * index] + struct.pack(fmt, value) + content[4 * index + 4 :]


_MRC = _mrc_bytes(np.zeros(BIG, np.float32), "<", 1.0)
_MRC_BE = _mrc_bytes(np.zeros(BIG, np.float32), ">", 1.0)
_SPIDER = _spider_bytes(np.zeros(BIG, np.float32), "<")
_EM = _em_bytes(np.zeros(BIG, np.float32), 6, 5, "f4")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("nsymbt.mrc", _set_word(_MRC, 23, 2**26, "<i"), "NSYMBT=67108864"),
        ("nsymbt.mrc", _set_word(_MRC, 23, 2**31 - 1, "<i"), "NSYMBT=2147483647"),
        ("nsymbt.mrc", _set_word(_MRC_BE, 23, 2**31 - 1, ">i"), "NSYMBT=2147483647"),
        ("nsymbt.mrc", _set_word(_MRC, 23, -1024, "<i"), "NSYMBT=-1024"),
        ("nx.mrc", _set_word(_MRC, 0, 2**31 - 1, "<i"), "truncated: the header describes"),
        ("nz.mrc", _set_word(_MRC_BE, 2, 2**20, ">i"), "truncated: the header describes"),
        ("nx.vol", _set_word(_SPIDER, 11, 2.0**24, "<f"), "truncated: needs"),
        ("labbyt.vol", _set_word(_SPIDER, 21, 2.0**30, "<f"), "truncated: needs"),
        ("nx.em", _set_word(_EM, 1, 2**31 - 1, "<i"), "the EM header describes"),
    ],
)
def test_sizes_beyond_the_file_are_refused_from_the_header(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    path = _write_bytes(tmp_path / name, content)
    for read in (read_volume, volume_shape, open_volume_lazy):
        with pytest.raises(VolumeError, match=rf"{re.escape(name)}: .*{match}"):
            read(path)
        assert _peak_bytes(read, path) <= 1.5 * len(content)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_set_word(_set_word(_MRC, 22, 401, "<i"), 9, 0, "<i"), "bad MRC volume stack: mz=0"),
        (_set_word(_set_word(_MRC, 22, 401, "<i"), 9, -3, "<i"), "bad MRC volume stack: mz=-3"),
    ],
)
def test_mrc_volume_stack_needs_its_depth(tmp_path: Path, content: bytes, match: str) -> None:
    path = _write_bytes(tmp_path / "stack.mrc", content)
    with pytest.raises(VolumeError, match=rf"stack\.mrc: {match}"):
        read_volume(path)


@pytest.mark.parametrize("maxim", [math.nan, math.inf, 2.5, -1.0])
def test_spider_stack_with_a_bad_image_count(tmp_path: Path, maxim: float) -> None:
    content = _set_word(_spider_stack_bytes([_volume()] * 2, "<"), 25, maxim, "<f")
    path = _write_bytes(tmp_path / "s.stk", content)
    with pytest.raises(VolumeError, match=r"s\.stk: stack has 0 images, no image 1"):
        read_volume(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cell.mrc", _set_word(_mrc_bytes(_volume(), "<", 1.0), 10, math.inf, "<f")),
        ("cell.mrc", _set_word(_mrc_bytes(_volume(), ">", 1.0), 10, math.nan, ">f")),
        ("pixsiz.vol", _spider_bytes(_volume(), "<", pixel_size_A=math.inf)),
        ("pixsiz.vol", _spider_bytes(_volume(), ">", pixel_size_A=math.nan)),
    ],
)
def test_a_pixel_size_that_is_not_a_number_is_none(tmp_path: Path, name: str, content: bytes) -> None:
    path = _write_bytes(tmp_path / name, content)
    assert read_pixel_size(path) is None
    np.testing.assert_array_equal(read_volume(path), _volume())


# --------------------------------------------------------------------------- finite volumes


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_read_finite_volume_refuses_nan_and_inf(tmp_path: Path, order: str, bad: float) -> None:
    data = np.random.default_rng(0).normal(size=BIG).astype(np.float32)
    data[5, 6, 7] = bad
    path = _write_bytes(tmp_path / "ref.mrc", _mrc_bytes(data, order, 1.0))
    expected = r"ref\.mrc: has NaN or Inf voxels \(the first at x=7 y=6 z=5\); --ref maps must be finite$"
    with pytest.raises(VolumeError, match=expected):
        read_finite_volume(path, "--ref maps must be finite")
    assert _peak_bytes(read_finite_volume, path, "") <= 1.5 * path.stat().st_size
    data[5, 6, 7] = 0.0
    path = _write_bytes(tmp_path / "ref.mrc", _mrc_bytes(data, order, 1.0))
    np.testing.assert_array_equal(read_finite_volume(path, ""), data)


@pytest.mark.parametrize("name", ["v.mrc", "v.vol", "v.em"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_reading_a_float32_volume_holds_one_copy(tmp_path: Path, name: str, order: str) -> None:
    data = np.random.default_rng(0).normal(size=BIG).astype(np.float32)
    content = {
        "v.mrc": lambda: _mrc_bytes(data, order, 1.0),
        "v.vol": lambda: _spider_bytes(data, order),
        "v.em": lambda: _em_bytes(data, 6 if order == "<" else 3, 5, "f4"),
    }[name]()
    path = _write_bytes(tmp_path / name, content)
    assert _peak_bytes(read_volume, path) <= 1.1 * data.nbytes
    volume = read_volume(path)
    assert volume.dtype == np.dtype(np.float32) and volume.dtype.isnative
    np.testing.assert_array_equal(volume, data)
