"""Writing Xmipp STAR tables (``.xmd``), atomically, with a ``data_`` block per table."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.table import MetaData

__all__ = ["write_star"]


_STAR_MAGIC = "# XMIPP_STAR_1 * "
_COMMENT_WIDTH = 70


def write_star(
    path: str | os.PathLike[str],
    blocks: MetaData | Mapping[str, MetaData],
    comment: str = "",
    *,
    row_format: bool = False,
) -> Path:
    """Write tables as an Xmipp STAR file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; replaced in one step (written to a temporary file, then renamed).
    blocks : MetaData or mapping of str to MetaData
        One table (written as block ``data_noname``) or block name -> table.
    comment : str
        Header comment, wrapped at 70 characters; an empty comment still writes ``# ``.
    row_format : bool
        Write `` _label value`` lines instead of a loop; each table must have one row.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        For a block or label name with whitespace, a row-format table without exactly one
        row, or a string value that cannot be quoted (line breaks, or both quote characters).
    """
    named = {"noname": blocks} if isinstance(blocks, MetaData) else dict(blocks)
    text = _star_text(named, comment, row_format=row_format)
    target = Path(path)
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return target


def _star_text(blocks: Mapping[str, MetaData], comment: str, *, row_format: bool) -> str:
    wrapped = textwrap.wrap(comment, _COMMENT_WIDTH, break_long_words=False, break_on_hyphens=False) or [""]
    lines = [_STAR_MAGIC, *(f"# {part}" for part in wrapped)]
    for number, (name, table) in enumerate(blocks.items()):
        if not re.fullmatch(r"\S*", name):
            raise ValueError(f"block name must not contain whitespace, got {name!r}")
        if number:
            lines.append("")
        lines.append(f"data_{name}")
        lines += _row_lines(name, table) if row_format else _loop_lines(table)
    return "\n".join(lines) + "\n"


def _checked_labels(table: MetaData) -> tuple[str, ...]:
    for label in table.labels:
        if not re.fullmatch(r"\S+", label):
            raise ValueError(f"labels must be non-empty without whitespace, got {label!r}")
    return table.labels


def _loop_lines(table: MetaData) -> list[str]:
    labels = _checked_labels(table)
    cells = [_format_column(table[label]) for label in labels]
    rows = ["".join(f"{value} " for value in row) for row in zip(*cells, strict=True)]
    return ["loop_", *(f" _{label}" for label in labels), *rows]


def _row_lines(name: str, table: MetaData) -> list[str]:
    if len(table) != 1:
        raise ValueError(f"row format needs exactly one row; block {name!r} has {len(table)}")
    labels = _checked_labels(table)
    return [f" _{label} {_format_column(table[label])[0].strip()}" for label in labels]


def _format_column(values: NDArray[np.generic]) -> list[str]:
    if values.dtype.kind == "i":
        return [f"{value:20d}" for value in values.tolist()]
    if values.dtype.kind == "f":
        return [_format_float(value) for value in values.tolist()]
    return [_format_string(str(value)) for value in values.tolist()]


def _format_float(value: float) -> str:
    return f"{value:12.6e}" if 0 < abs(value) < 0.001 else f"{value:12.6f}"


def _format_string(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"a STAR value cannot contain a line break, got {value!r}")
    needs_quotes = (
        not value
        or any(char.isspace() for char in value)
        or value[0] in "_#'\""
        or value.startswith(("data_", "loop_"))
    )
    if not needs_quotes:
        return value
    quote = '"' if "'" in value else "'"
    if quote in value:
        raise ValueError(f"a STAR value cannot hold both quote characters, got {value!r}")
    return f"{quote}{value}{quote}"
