"""The metadata table type: one 1-D numpy array per label, and the labels ml_tomo reads and writes.

Every malformed input raises `MetadataError`, whose message names the file and, where it applies, the
1-based line number."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

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
]


#: Xmipp Euler angle and shift columns of a particle's transform, in this order.
ANGLE_LABELS = ("angleRot", "angleTilt", "anglePsi")
SHIFT_LABELS = ("shiftX", "shiftY", "shiftZ")
INT_LABELS = frozenset({"ref", "missingRegionNumber", "enabled", "itemId", "iterationNumber"})
FLOAT_LABELS = frozenset(
    {
        "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ",
        "logLikelihood", "pMax", "weight", "signalChange", "sigmaNoise", "sigmaOffset",
        "resolution", "resolutionFreqFourier", "resolutionFRC",
        "missingRegionThetaY0", "missingRegionThetaYF",
        "missingRegionThetaX0", "missingRegionThetaXF",
    }
)  # fmt: skip
STRING_LABELS = frozenset({"image", "missingRegionType", "imageMetaData", "referenceMetaData"})

#: Positional labels of a headerless images file (the seed's ``-i`` example).
IMAGE_COLUMNS: tuple[str, ...] = (
    "image", "missingRegionNumber", "angleRot", "angleTilt", "anglePsi",
    "shiftX", "shiftY", "shiftZ", "ref", "logLikelihood",
)  # fmt: skip
#: Positional labels of a headerless missing-region file (the seed's ``--missing`` example).
MISSING_REGION_COLUMNS: tuple[str, ...] = (
    "missingRegionNumber", "missingRegionType", "missingRegionThetaY0",
    "missingRegionThetaYF", "missingRegionThetaX0", "missingRegionThetaXF",
)  # fmt: skip


class MetadataError(ValueError):
    """A metadata file could not be read; the message names the file and line."""

    def __init__(self, path: str | os.PathLike[str], message: str, line: int | None = None):
        self.path = os.fspath(path)
        self.line = line
        self.detail = message
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[MetadataError], tuple[str, str, int | None]]:
        return (type(self), (self.path, self.detail, self.line))


@dataclass(frozen=True, eq=False)
class MetaData:
    """A metadata table: one 1-D column per label, all of the same length.

    Columns are normalised on construction: integers become int64, floats float64, and
    anything else (strings) an object array. Label order is insertion order. Methods return
    new tables and never modify this one.

    Parameters
    ----------
    columns : dict of str to (n,) array
        Label -> column values.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        columns = {label: _as_column(label, values) for label, values in self.columns.items()}
        lengths = {label: len(values) for label, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"all columns must have the same length, got {lengths}")
        object.__setattr__(self, "columns", columns)

    @classmethod
    def from_rows(cls, labels: Sequence[str], rows: Iterable[Sequence[object]]) -> MetaData:
        """Build a table from row tuples whose values follow `labels`."""
        table = [tuple(row) for row in rows]
        for number, row in enumerate(table):
            if len(row) != len(labels):
                raise ValueError(f"row {number} has {len(row)} values, expected {len(labels)}")
        return cls({label: [row[i] for row in table] for i, label in enumerate(labels)})

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    @property
    def labels(self) -> tuple[str, ...]:
        """Column labels, in order."""
        return tuple(self.columns)

    def __contains__(self, label: object) -> bool:
        return label in self.columns

    def __getitem__(self, label: str) -> np.ndarray:
        try:
            return self.columns[label]
        except KeyError:
            raise KeyError(f"no column {label!r}; labels are {', '.join(self.labels)}") from None

    def with_columns(self, **arrays: ArrayLike) -> MetaData:
        """Return a new table with columns added or replaced; scalars are broadcast."""
        n_rows = len(self)
        new = {
            label: np.full(n_rows, values) if np.ndim(values) == 0 else values
            for label, values in arrays.items()
        }
        return MetaData({**self.columns, **new})

    def take(self, indices: ArrayLike) -> MetaData:
        """Return the rows at `indices` (integer positions or a boolean mask), in that order."""
        return MetaData({label: values[indices] for label, values in self.columns.items()})

    def float_columns(self, labels: Sequence[str]) -> NDArray[np.float64] | None:
        """``(n, len(labels))`` float columns, or None if any is absent or not numeric."""
        if not all(label in self for label in labels):
            return None
        try:
            return np.stack([np.asarray(self[label], dtype=np.float64) for label in labels], axis=1)
        except (TypeError, ValueError):
            return None


def _as_column(label: str, values: ArrayLike) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"column {label!r} must be one-dimensional, got shape {array.shape}")
    if array.dtype.kind in "biu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        return array.astype(np.float64, copy=False)
    return array.astype(object, copy=False)
