"""How the E-step's chunks of particles run: one dask task per chunk, handed to a :class:`ChunkExecutor`
(local threads by default; ``napari_mltomo.compute`` has one for a dask.distributed cluster), reported as
each finishes, and summed as a fixed pairwise tree so that every executor gives the same bits."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback
from numpy.typing import NDArray

from .params import MLParams
from .state import SubtomogramSet

__all__ = [
    "MAX_AUTO_CHUNK",
    "ChunkExecutor",
    "ChunkProgress",
    "ConstantParticles",
    "Dispatch",
    "NonFiniteParticles",
    "ThreadExecutor",
    "chunk_size",
    "map_chunks",
    "pairwise_sum",
    "report_as_finished",
    "sum_chunks",
]


@dataclass(frozen=True)
class ChunkProgress:
    """``done`` of ``total`` chunks of particles of one pass (``stage``: "starting references",
    "start-up step 2", "iteration 3") are finished."""

    stage: str
    done: int
    total: int


Report = Callable[[ChunkProgress], None] | None


class NonFiniteParticles(ValueError):
    """Particles ``indices`` (of one chunk) have NaN or Inf voxels: a chunk task raises it as it reads them,
    so the first pass over the particles checks them all."""

    def __init__(self, indices: tuple[int, ...]) -> None:
        super().__init__(indices)
        self.indices = indices


class ConstantParticles(ValueError):
    """Every one of the ``n`` particles is constant (one value in all its voxels): there is no signal to
    align or classify. :func:`sum_chunks` raises it at the end of a pass, from counts its chunk tasks make as
    they read the particles, so the first pass over the particles checks it."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.n = n


class ChunkExecutor(Protocol):
    """Runs the delayed tasks of one pass over the particles and reports each finished one."""

    def parallelism(self) -> int:
        """How many tasks run at once."""
        ...

    def share(self, item: Any) -> Any:
        """``item`` as every task will take it (sent once to where the tasks run)."""
        ...

    def gather(self, tasks: list[Any], stage: str, on_chunk: Report) -> list[Any]:
        """The tasks' results, in order."""
        ...

    def total(self, tasks: list[Any], add: Callable[[Any, Any], Any], stage: str, on_chunk: Report) -> Any:
        """The tasks' results added as :func:`pairwise_sum` adds them."""
        ...


@dataclass(frozen=True)
class ThreadExecutor:
    """The default :class:`ChunkExecutor`: dask's threaded scheduler in this process."""

    threads: int

    def parallelism(self) -> int:
        """The threads."""
        return self.threads

    def share(self, item: Any) -> Any:
        """``item`` itself: threads share memory."""
        return item

    def gather(self, tasks: list[Any], stage: str, on_chunk: Report) -> list[Any]:
        """The tasks' results, in order."""
        with _ChunkCounter({task.key for task in tasks}, stage, on_chunk):
            return list(dask.compute(*tasks, scheduler="threads", num_workers=self.threads))

    def total(self, tasks: list[Any], add: Callable[[Any, Any], Any], stage: str, on_chunk: Report) -> Any:
        """The :func:`pairwise_sum` of the tasks, each pair added as soon as both are done."""
        with _ChunkCounter({task.key for task in tasks}, stage, on_chunk):
            (total,) = dask.compute(
                pairwise_sum(tasks, dask.delayed(add)), scheduler="threads", num_workers=self.threads
            )
        return total


@dataclass(frozen=True)
class Dispatch:
    """Where chunk tasks run (local threads, ``params.threads`` of them, if ``executor`` is None) and whom
    to tell as each finishes."""

    executor: ChunkExecutor | None = None
    on_chunk: Report = None

    def executor_for(self, params: MLParams) -> ChunkExecutor:
        """The executor, or threads as ``params`` asks."""
        return ThreadExecutor(params.threads) if self.executor is None else self.executor


#: Largest number of particles per task when ``--chunk`` is not given: a chunk rotates the references
#: into every orientation it scores, which costs about as much as 15 correlation maps per orientation
#: (N = 32 and 64), so 64 particles of 3 classes spend under 10% of the E-step on it.
MAX_AUTO_CHUNK = 64


def chunk_size(n: int, params: MLParams, dispatch: Dispatch) -> int:
    """``--chunk``, or by default the particles spread evenly over the executor's parallel tasks, at most
    ``MAX_AUTO_CHUNK`` per task."""
    if params.chunk_size is not None:
        return params.chunk_size
    parallel = dispatch.executor_for(params).parallelism()
    return max(1, min(MAX_AUTO_CHUNK, -(-n // max(1, parallel))))


def _chunk_tasks(
    function: Callable[..., Any],
    data: SubtomogramSet,
    params: MLParams,
    shared: Sequence[Any],
    dispatch: Dispatch,
    order: NDArray[np.intp] | None,
    *,
    counted: bool = False,
) -> list[Any]:
    """One delayed ``function(volumes, indices, *shared)`` per chunk of particles, taken in ``order``
    (the data's order if None); each chunk reads its particles (``shared[0]``, see :func:`_shared`) in
    ascending order. ``counted`` tasks return ``(result, number of particles that are not constant)``."""
    if order is None:
        order = np.arange(len(data))
    size = chunk_size(len(data), params, dispatch)
    call = dask.delayed(_read_apply_and_count if counted else _read_and_apply)
    return [
        call(function, np.sort(order[start : start + size]), *shared) for start in range(0, len(order), size)
    ]


def _shared(data: SubtomogramSet, shared: Sequence[Any], executor: ChunkExecutor) -> list[Any]:
    """The particles and ``shared``, as the chunk tasks take them (:meth:`ChunkExecutor.share`; the caller
    holds the result until the tasks are done)."""
    return [executor.share(item) for item in (_Particles(data.volumes), *shared)]


class _Particles:
    """The particles (numpy, memory-mapped, dask or any array-like), in a box that dask does not open: a
    task reads only its own chunk, and no task carries the graph of the whole data set."""

    def __init__(self, volumes: Any) -> None:
        self.volumes = volumes

    def read(self, indices: NDArray[np.intp]) -> NDArray[np.float32]:
        """Particles ``indices``, read now; :class:`NonFiniteParticles` if any has a NaN or Inf voxel."""
        rows = self.volumes[indices]
        if isinstance(rows, da.Array):
            rows = rows.compute(scheduler="sync")
        rows = np.asarray(rows, dtype=np.float32)
        finite = np.isfinite(rows).all(axis=(1, 2, 3))
        if not finite.all():
            raise NonFiniteParticles(tuple(int(i) for i in indices[~finite]))
        return rows


def _read_and_apply(
    function: Callable[..., Any], indices: NDArray[np.intp], particles: _Particles, *shared: Any
) -> Any:
    """``function(volumes, indices, *shared)`` on the chunk ``indices`` of ``particles``."""
    return function(particles.read(indices), indices, *shared)


def _read_apply_and_count(
    function: Callable[..., Any], indices: NDArray[np.intp], particles: _Particles, *shared: Any
) -> tuple[Any, int]:
    """:func:`_read_and_apply`, and how many of the chunk's particles are not constant."""
    volumes = particles.read(indices)
    flat = volumes.reshape(len(volumes), -1)
    varying = int(np.count_nonzero(flat.max(axis=1) > flat.min(axis=1)))
    return function(volumes, indices, *shared), varying


def _add_counted(
    add: Callable[[Any, Any], Any], first: tuple[Any, int], second: tuple[Any, int]
) -> tuple[Any, int]:
    """``add`` of the results of two counted tasks, and the sum of their counts."""
    return add(first[0], second[0]), first[1] + second[1]


def map_chunks(
    function: Callable[..., Any],
    data: SubtomogramSet,
    params: MLParams,
    shared: Sequence[Any],
    dispatch: Dispatch,
    stage: str,
) -> list[Any]:
    """Apply ``function(volumes, indices, *shared)`` to every chunk of particles with dask, reporting
    each finished chunk of ``stage`` to ``dispatch.on_chunk``."""
    executor = dispatch.executor_for(params)
    shared = _shared(data, shared, executor)
    tasks = _chunk_tasks(function, data, params, shared, dispatch, None)
    return executor.gather(tasks, stage, dispatch.on_chunk)


def sum_chunks(
    function: Callable[..., Any],
    data: SubtomogramSet,
    params: MLParams,
    shared: Sequence[Any],
    dispatch: Dispatch,
    stage: str,
    *,
    order: NDArray[np.intp] | None = None,
    add: Callable[[Any, Any], Any] = operator.add,
) -> Any:
    """:func:`map_chunks`, summed with ``add`` as the chunks finish, so that only a few chunks'
    results are held at once. The sum is a fixed pairwise tree over the chunks, so threads and a
    cluster give the same result to the last bit. :class:`ConstantParticles` if every particle read is
    constant."""
    executor = dispatch.executor_for(params)
    shared = _shared(data, shared, executor)
    tasks = _chunk_tasks(function, data, params, shared, dispatch, order, counted=True)
    total, varying = executor.total(tasks, functools.partial(_add_counted, add), stage, dispatch.on_chunk)
    if varying == 0:
        raise ConstantParticles(len(data))
    return total


def pairwise_sum(items: list[Any], add: Callable[[Any, Any], Any]) -> Any:
    """``items`` added as a balanced binary tree (neighbours first)."""
    while len(items) > 1:
        items = [add(a, b) for a, b in zip(items[::2], items[1::2], strict=False)] + items[len(items) & ~1 :]
    return items[0]


class _ChunkCounter(Callback):
    """Report each finished task among ``keys`` (dask calls this in the scheduling thread)."""

    def __init__(self, keys: set[Any], stage: str, on_chunk: Callable[[ChunkProgress], None] | None):
        super().__init__()
        self.keys, self.stage, self.on_chunk, self.done = keys, stage, on_chunk, 0

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in self.keys and self.on_chunk is not None:
            self.done += 1
            self.on_chunk(ChunkProgress(self.stage, self.done, len(self.keys)))


def report_as_finished(
    finished: Iterator[Any], total: int, stage: str, on_chunk: Callable[[ChunkProgress], None] | None
) -> None:
    """Call ``on_chunk`` as each of the ``total`` items of ``finished`` arrives."""
    for done, _ in enumerate(finished, start=1):
        if on_chunk is not None:
            on_chunk(ChunkProgress(stage, done, total))
