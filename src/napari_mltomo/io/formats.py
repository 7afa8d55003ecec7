"""Parsing of Xmipp's text tables: STAR (``.xmd``), Xmipp 2 selfiles and docfiles, and headerless rows,
with the format told from the text.

Every format is read as UTF-8 text, with or without a byte order mark, with LF, CRLF or CR line ends, and with
spaces or tabs between values."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_mltomo.io.table import FLOAT_LABELS, INT_LABELS, STRING_LABELS, MetaData, MetadataError

__all__ = ["parse_star", "read_rows", "read_text", "select_block", "split_block_name", "to_table"]


_XMIPP2_ALIASES = {
    "rot": "angleRot", "tilt": "angleTilt", "psi": "anglePsi",
    "Xoff": "shiftX", "Yoff": "shiftY", "Zoff": "shiftZ",
    "Ref": "ref", "Wedge": "missingRegionNumber", "LL": "logLikelihood",
    "Pmax": "pMax", "sumP": "pMax", "Weight": "weight",
}  # fmt: skip


_TOKEN = re.compile(r"""'([^']*)'(?=\s|$)|"([^"]*)"(?=\s|$)|(\S+)""")
_SELFILE_ROW = re.compile(r"\S+\s+-?\d+")
_DATA_LINE = re.compile(r"data_\S*")
_DOC_HEADER = re.compile(r"Headerinfo\s+columns:")
_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


@dataclass
class _Rows:
    """Raw text cells of one table, with the 1-based line of each row."""

    source: Path
    labels: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    label_lines: list[int] = field(default_factory=list)
    layout: str | None = None  # "loop" or "row" for STAR blocks


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank, non-``#`` line."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def _split_values(source: Path, number: int, line: str) -> list[str]:
    values = []
    for match in _TOKEN.finditer(line):
        single, double, bare = match.groups()
        if bare is not None and bare[0] in "'\"":
            raise MetadataError(source, f"unterminated quote in {bare!r}", number)
        values.append(next(v for v in (single, double, bare) if v is not None))
    return values


def parse_star(source: Path, text: str) -> dict[str, _Rows]:
    blocks: dict[str, _Rows] = {}
    block: _Rows | None = None
    for number, line in _content_lines(text):
        if _DATA_LINE.fullmatch(line):
            name = line[len("data_") :]
            if name in blocks:
                raise MetadataError(source, f"block data_{name} appears twice", number)
            block = blocks[name] = _Rows(source)
        elif block is None:
            raise MetadataError(source, f"expected a data_ line before {line[:40]!r}", number)
        else:
            _parse_star_line(block, number, line)
    return blocks


def _parse_star_line(block: _Rows, number: int, line: str) -> None:
    source = block.source
    if line == "loop_":
        if block.layout is not None:
            raise MetadataError(source, "a second loop_ in one data_ block", number)
        block.layout = "loop"
    elif line.startswith("_"):
        if block.layout == "loop" and block.rows:
            raise MetadataError(source, f"label {line.split()[0]} after the data rows", number)
        block.layout = block.layout or "row"
        values = _split_values(source, number, line)
        _add_label(block, number, values[0][1:])
        if block.layout == "row":
            block.rows = block.rows or [[]]
            block.rows[0].append(_row_format_value(source, number, values))
    elif block.layout == "loop":
        values = _split_values(source, number, line)
        if len(values) != len(block.labels):
            raise MetadataError(
                source,
                f"row has {len(values)} values but the loop declares {len(block.labels)} labels",
                number,
            )
        block.rows.append(values)
        block.lines.append(number)
    else:
        raise MetadataError(source, f"expected loop_ or a ' _label' line, got {line[:40]!r}", number)


def _add_label(block: _Rows, number: int, label: str) -> None:
    if not label:
        raise MetadataError(block.source, "empty label '_'", number)
    if label in block.labels:
        raise MetadataError(block.source, f"label _{label} appears twice in one block", number)
    block.labels.append(label)
    block.label_lines.append(number)


def _row_format_value(source: Path, number: int, values: list[str]) -> str:
    if len(values) < 2:
        raise MetadataError(source, f"label {values[0]} has no value", number)
    if len(values) > 2 and not values[2].startswith("#"):
        raise MetadataError(source, f"label {values[0]} has {len(values) - 1} values", number)
    return values[1]


def _parse_docfile(source: Path, text: str) -> _Rows:
    lines = text.splitlines()
    table = _Rows(source, labels=["image", *_docfile_labels(source, lines[0])])
    image: str | None = None
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(";"):
            image = line[1:].strip()
            continue
        if image is None:
            raise MetadataError(source, "data line without a '; <filename>' line before it", number)
        values = line.split()
        n_columns = len(table.labels) - 1
        if len(values) - 2 != n_columns:
            raise MetadataError(
                source,
                f"data line has {len(values) - 2} values after the key and count, "
                f"but the header declares {n_columns} columns",
                number,
            )
        table.rows.append([image, *values[2:]])
        table.lines.append(number)
        image = None
    return table


def _docfile_labels(source: Path, header: str) -> list[str]:
    found = _DOC_HEADER.search(header)
    names = header[found.end() :] if found else ""
    tokens = [t for t in re.split(r"[\s,]+", names) if t and "(" not in t and ")" not in t]
    if not found or not tokens:
        raise MetadataError(source, "expected 'Headerinfo columns: name (1), ...'", 1)
    labels = [_XMIPP2_ALIASES.get(token, token) for token in tokens]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise MetadataError(source, f"header names column(s) {', '.join(duplicates)} twice", 1)
    return labels


def _parse_selfile(source: Path, text: str) -> _Rows:
    table = _Rows(source, labels=["image", "enabled"])
    for number, line in _content_lines(text):
        table.rows.append(line.split())
        table.lines.append(number)
    return table


def _parse_headerless(
    source: Path, text: str, labels: Sequence[str], *, min_values: int, ragged: bool
) -> _Rows:
    """Rows of whitespace-separated values, labelled by position.

    With ``ragged`` short rows are padded with ``nan``; otherwise all rows need the same length.
    """
    table = _Rows(source)
    for number, line in _content_lines(text):
        values = _split_values(source, number, line)
        if not min_values <= len(values) <= len(labels):
            raise MetadataError(
                source,
                f"row has {len(values)} values; a file without a STAR header needs "
                f"{min_values} to {len(labels)} values per row ({' '.join(labels)})",
                number,
            )
        if not ragged and table.rows and len(values) != len(table.rows[0]):
            raise MetadataError(
                source,
                f"row has {len(values)} values but line {table.lines[0]} has {len(table.rows[0])}",
                number,
            )
        table.rows.append(values)
        table.lines.append(number)
    width = max((len(row) for row in table.rows), default=0)
    table.labels = list(labels[:width])
    table.rows = [row + ["nan"] * (width - len(row)) for row in table.rows]
    return table


def _typed_column(source: Path, label: str, cells: list[str], lines: list[int]) -> np.ndarray:
    if label in STRING_LABELS:
        return np.array(cells, dtype=object)
    if label in INT_LABELS:
        ints = [_parse_int(source, label, cell, n) for cell, n in zip(cells, lines, strict=True)]
        return np.array(ints, dtype=np.int64)
    if label in FLOAT_LABELS:
        floats = [_parse_float(source, label, cell, n) for cell, n in zip(cells, lines, strict=True)]
        return np.array(floats, dtype=np.float64)
    return _inferred_column(cells)


def _parse_int(source: Path, label: str, cell: str, number: int) -> int:
    try:
        value = int(cell)
    except ValueError:
        try:
            value = math.trunc(float(cell))
        except (ValueError, OverflowError):
            raise MetadataError(source, f"{label} must be an integer, got {cell!r}", number) from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise MetadataError(source, f"{label} must be a 64-bit integer, got {cell!r}", number)
    return value


def _parse_float(source: Path, label: str, cell: str, number: int) -> float:
    try:
        return float(cell)
    except ValueError:
        raise MetadataError(source, f"{label} must be a number, got {cell!r}", number) from None


def _inferred_column(cells: list[str]) -> np.ndarray:
    """int64 if every cell is an integer, float64 if every cell is a number, else strings."""
    for convert, dtype in ((int, np.int64), (float, np.float64)):
        try:
            return np.array([convert(cell) for cell in cells], dtype=dtype)
        except (ValueError, OverflowError):
            continue
    return np.array(cells, dtype=object)


def to_table(raw: _Rows) -> MetaData:
    columns = {}
    for i, label in enumerate(raw.labels):
        lines = [raw.label_lines[i]] if raw.layout == "row" else raw.lines
        cells = [row[i] for row in raw.rows]
        columns[label] = _typed_column(raw.source, label, cells, lines)
    return MetaData(columns)


def split_block_name(path: str | os.PathLike[str]) -> tuple[str | None, Path]:
    """Split Xmipp's ``block@file`` syntax, unless the whole string names an existing file."""
    text = os.fspath(path)
    name, at, rest = text.partition("@")
    if at and rest and "/" not in name and os.sep not in name and not Path(text).exists():
        return name, Path(rest)
    return None, Path(text)


def read_text(source: Path) -> str:
    """The file's text: UTF-8 without its byte order mark, if any, and with CRLF and CR line ends read as
    LF."""
    try:
        return source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise MetadataError(source, "not a text file (invalid UTF-8); expected metadata") from err


def _detect_format(source: Path, text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    first = next((line for line in lines if line), "")
    if (
        "XMIPP_STAR_1" in first
        or source.suffix.lower() in {".xmd", ".star"}
        or any(_DATA_LINE.fullmatch(line) for line in lines)
    ):
        return "star"
    if lines and "Headerinfo" in lines[0]:
        return "docfile"
    content = [line for _, line in _content_lines(text)]
    if content and all(_SELFILE_ROW.fullmatch(line) for line in content):
        return "selfile"
    return "headerless"


def select_block(source: Path, blocks: dict[str, _Rows], name: str | None) -> _Rows:
    if not blocks:
        raise MetadataError(source, "no data_ block found")
    if name is None:
        return next(iter(blocks.values()))
    if name not in blocks:
        available = ", ".join(f"data_{block}" for block in blocks)
        raise MetadataError(source, f"no block data_{name}; the file has {available}")
    return blocks[name]


def read_rows(
    path: str | os.PathLike[str],
    positional: Sequence[str],
    *,
    min_values: int = 1,
    ragged: bool = False,
) -> _Rows:
    """Read any supported metadata file; headerless rows get the `positional` labels."""
    block, source = split_block_name(path)
    text = read_text(source)
    kind = _detect_format(source, text)
    if block is not None and kind != "star":
        raise MetadataError(source, f"block {block!r} requested, but this is not a STAR file")
    if kind == "star":
        return select_block(source, parse_star(source, text), block)
    if kind == "docfile":
        return _parse_docfile(source, text)
    if kind == "selfile":
        return _parse_selfile(source, text)
    return _parse_headerless(source, text, positional, min_values=min_values, ragged=ragged)
