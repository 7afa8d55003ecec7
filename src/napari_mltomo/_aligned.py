"""A class's particles in the reference frame as a lazy stack for napari: one dask block per particle,
read (:func:`napari_mltomo.io.read_volume`) and aligned (:func:`napari_mltomo.core.views.align_to_reference`)
the first time it is asked for, then kept, so that a widget can align the particles about to be shown in a
worker thread and napari's slicing finds them ready. A deferring stack never aligns in napari's slicing: a
particle not yet aligned is computed as zeros, and the widget redraws it once its worker has aligned it.

:class:`ClassRequest` is what the results browser asks of its worker thread: read an iteration (unless it is
shown already), make the lazy stack of a class and align the particle to show; :class:`ClassView` is the
answer, which the GUI thread shows without further work. Nothing here uses Qt or napari.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
from numpy.typing import NDArray

from napari_mltomo.core.views import align_to_reference, class_members
from napari_mltomo.io import ANGLE_LABELS, SHIFT_LABELS, MetaData, read_volume, voxels_text
from napari_mltomo.io.results import IterationResults, RunResults

__all__ = ["AlignedParticles", "ClassRequest", "ClassView", "align_near"]

#: Memory for the aligned particles kept by one stack (the least recently used are dropped beyond it).
KEEP_BYTES = 256 * 2**20
#: Particles next to the one in view that :func:`align_near` aligns without waiting for its go-ahead.
AT_ONCE = 2


class AlignedParticles:
    """The particles a table lists, in the reference frame, aligned one by one on demand and kept.

    Thread-safe: a worker thread may align particles while napari computes a block on another thread.

    Parameters
    ----------
    members : MetaData
        ``image``, angle and shift columns of the particles, in stack order.
    size : int
        Box size ``N`` of the particles (a particle of another size raises ``ValueError`` when read).
    defer : bool
        Compute the block of a particle not yet aligned as zeros (and add its index to ``deferred``)
        instead of aligning it in the thread that computes it: for a viewer that must not wait.

    Raises
    ------
    ValueError
        If `members` has no angles or shifts.
    """

    def __init__(self, members: MetaData, size: int, *, defer: bool = False):
        angles, shifts = members.float_columns(ANGLE_LABELS), members.float_columns(SHIFT_LABELS)
        if angles is None or shifts is None:
            raise ValueError("the particle table has no angles or shifts")
        self.names = [str(name) for name in members["image"]]
        self.size = size
        self._angles, self._shifts = angles, shifts
        self._keep = max(32, KEEP_BYTES // (4 * size**3))
        self._kept: collections.OrderedDict[int, NDArray[np.float32]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.defer = defer
        self.deferred: set[int] = set()
        self.stack = self._lazy_stack()

    def __len__(self) -> int:
        return len(self.names)

    def is_aligned(self, index: int) -> bool:
        """Whether particle `index` is aligned and kept."""
        with self._lock:
            return index in self._kept

    def particle(self, index: int) -> NDArray[np.float32]:
        """Particle `index` in the reference frame, ``(N, N, N)``: kept, or read and aligned now."""
        with self._lock:
            if index in self._kept:
                self._kept.move_to_end(index)
                return self._kept[index]
        volume = read_volume(self.names[index])
        if volume.shape != (self.size,) * 3:
            raise ValueError(
                f"{self.names[index]} is {voxels_text(volume.shape)}; "
                f"the class references are {voxels_text((self.size,) * 3)}"
            )
        slot = slice(index, index + 1)
        aligned = align_to_reference(volume[None], self._angles[slot], self._shifts[slot])[0]
        with self._lock:
            self._kept[index] = aligned
            while len(self._kept) > self._keep:
                self._kept.popitem(last=False)
        return aligned

    def around(self, index: int, ahead: int = 16) -> Iterator[int]:
        """Positions near `index` that a user stepping through the stack reaches next: `ahead` of them
        forward, half as many backward, nearest first (a step back counts as two)."""
        forward = range(index + 1, min(index + ahead + 1, len(self)))
        backward = range(index - 1, max(index - ahead // 2, 0) - 1, -1)
        order = sorted([(i - index, i) for i in forward] + [(2 * (index - i), i) for i in backward])
        return (i for _, i in order)

    def _lazy_stack(self) -> da.Array:
        """``(n, N, N, N)`` float32, one block per particle, each computed by :meth:`particle`."""
        name = f"aligned-particles-{dask.base.tokenize(self.names, self._angles, self._shifts, self.size)}"
        graph = {(name, i, 0, 0, 0): (self._block, i) for i in range(len(self))}
        chunks = ((1,) * len(self), *((self.size,),) * 3)
        return da.Array(graph, name, chunks, dtype=np.float32)

    def _block(self, index: int) -> NDArray[np.float32]:
        if self.defer and not self.is_aligned(index):
            self.deferred.add(index)
            return np.zeros((1, *(self.size,) * 3), dtype=np.float32)
        return self.particle(index)[None]


@dataclass(frozen=True, eq=False)
class ClassView:
    """One class of one iteration, ready to show: the particle at `position` is aligned.

    Attributes
    ----------
    run : RunResults
    results : IterationResults
    ref : int
        The class (1-based).
    rows : (n,) ndarray of int
        Rows of the iteration's particle table in stack order (by decreasing pMax); empty without particles.
    members : MetaData or None
        Those rows of the table; None when the class has no particles (or the iteration no table).
    stack : AlignedParticles or None
        Their lazy aligned stack; None with `members`.
    position : int
        The stack position to show.
    move : bool
        Whether the viewer is to be moved to `position`.
    contrast_limits : tuple of float
        Range of the particle at `position`.
    """

    run: RunResults
    results: IterationResults
    ref: int
    rows: NDArray[np.intp]
    members: MetaData | None
    stack: AlignedParticles | None
    position: int
    move: bool
    contrast_limits: tuple[float, float]


@dataclass(frozen=True, eq=False)
class ClassRequest:
    """Show class `ref` (1-based; another class if the iteration has none such) of `iteration` at stack
    `position` (clamped to the stack), moving the viewer there if `move`. With `shown`, its iteration is
    used instead of reading `iteration`, and its stack if it is of class `ref`."""

    run: RunResults
    iteration: int
    ref: int
    position: int = 0
    move: bool = False
    shown: ClassView | None = None

    def view(self) -> ClassView:
        """Read, make and align what the request needs (in a worker thread)."""
        results = self.shown.results if self.shown is not None else self.run.read_iteration(self.iteration)
        ref = self.ref if 1 <= self.ref <= results.n_classes else 1
        if self.shown is not None and self.shown.ref == ref:
            rows, members, stack = self.shown.rows, self.shown.members, self.shown.stack
        else:
            rows, members, stack = self._class_stack(results, ref)
        position = min(max(self.position, 0), max(len(rows) - 1, 0))
        limits = (0.0, 1.0)
        if stack is not None:
            stack.particle(position)
            # Read back through the lazy stack: dask's first computation in a process imports
            # dask.distributed (a second or so), better done here than in napari's first slice.
            limits = _range(stack.stack[position].compute())
        return ClassView(self.run, results, ref, rows, members, stack, position, self.move, limits)

    def _class_stack(
        self, results: IterationResults, ref: int
    ) -> tuple[NDArray[np.intp], MetaData | None, AlignedParticles | None]:
        particles = results.particles
        if particles is None:
            return np.zeros(0, dtype=np.intp), None, None
        rows = class_members(particles["ref"], particles["pMax"], ref)
        if rows.size == 0:
            return rows, None, None
        members = particles.take(rows)
        try:
            return rows, members, AlignedParticles(members, results.references.shape[-1], defer=True)
        except ValueError as err:
            raise ValueError(f"{self.run.root}: {err}") from None


def align_near(stack: AlignedParticles, position: int, go: threading.Event) -> Iterator[int | None]:
    """Align the particle at `position` and those around it (:meth:`AlignedParticles.around`), yielding
    each index.

    The particle at `position` and the :data:`AT_ONCE` nearest are aligned at once; each of the others
    waits for `go` to be set, yielding None every 50 ms meanwhile (a worker stops at a yield).
    """
    if not stack.is_aligned(position):
        stack.particle(position)
        yield position
    for count, index in enumerate(stack.around(position)):
        while count >= AT_ONCE and not go.wait(0.05):
            yield None
        stack.particle(index)
        yield index


def _range(volume: NDArray[np.float32]) -> tuple[float, float]:
    low, high = float(volume.min()), float(volume.max())
    return (low, high) if high > low else (low, low + 1.0)
