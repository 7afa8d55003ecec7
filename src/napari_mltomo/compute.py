"""Where a refinement's chunks run: local threads, a local dask cluster tuned for them, or a running
dask.distributed scheduler (:class:`DistributedExecutor`, the engine's ``ChunkExecutor`` for a cluster)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dask

from napari_mltomo.core.chunks import ChunkExecutor, pairwise_sum, report_as_finished
from napari_mltomo.core.refine import ChunkProgress

__all__ = [
    "WORKER_ENVIRONMENT",
    "DistributedExecutor",
    "cluster_executor",
    "dask_client",
    "local_cluster",
]

#: Environment of local dask worker processes. dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536``,
#: which turns off glibc's adaptive mmap threshold: every multi-megabyte array the E-step allocates
#: is then mapped and unmapped anew, and the E-step ran 2.3x slower. Large thresholds restore speed.
WORKER_ENVIRONMENT = {"MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_MMAP_THRESHOLD_": str(2**26)}


def local_cluster(n_workers: int) -> Any:
    """A ``distributed.LocalCluster`` of single-threaded worker processes with `WORKER_ENVIRONMENT`."""
    from distributed import LocalCluster

    environment = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENVIRONMENT}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environment}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None)


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers`` processes, closed
    afterwards; None (local threads) if neither is given."""
    if scheduler is None and workers is None:
        yield None
        return
    from distributed import Client

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster) as client:
        yield client


@dataclass(frozen=True)
class DistributedExecutor:
    """Chunk tasks on a dask.distributed cluster (``client``): the shared items scattered to every worker
    once, each chunk reported as it finishes, and a cancelled pass cancels every task not yet done."""

    client: Any

    def parallelism(self) -> int:
        """The cluster's threads."""
        return sum(self.client.nthreads().values())

    def share(self, item: Any) -> Any:
        """A future of ``item`` on every worker (the cluster drops it once no one holds the future)."""
        return self.client.scatter(item, broadcast=True, hash=False)

    def gather(
        self, tasks: list[Any], stage: str, on_chunk: Callable[[ChunkProgress], None] | None
    ) -> list[Any]:
        """The tasks' results, in order."""
        from distributed import as_completed

        futures = self.client.compute(tasks)
        try:
            report_as_finished(as_completed(futures), len(futures), stage, on_chunk)
        except BaseException:
            self.client.cancel(futures)
            raise
        return self.client.gather(futures)

    def total(
        self,
        tasks: list[Any],
        add: Callable[[Any, Any], Any],
        stage: str,
        on_chunk: Callable[[ChunkProgress], None] | None,
    ) -> Any:
        """The :func:`pairwise_sum` of the tasks. The tree goes to the scheduler as one graph, whose order
        adds each pair as soon as both are done; the client holds no chunk result, so the cluster drops
        each once it has been added."""
        from distributed import as_completed

        total, *leaves = self.client.compute(
            [pairwise_sum(tasks, dask.delayed(add)), *tasks], optimize_graph=False
        )
        pending = as_completed(leaves)
        del leaves  # each chunk's future is dropped as it is reported
        try:
            report_as_finished(pending, len(tasks), stage, on_chunk)
        except BaseException:
            self.client.cancel([total, *pending.futures])  # and with them every chunk not yet started
            pending.clear()
            raise
        return total.result()


def cluster_executor(client: Any) -> ChunkExecutor | None:
    """The executor of ``client`` (from :func:`dask_client`), or None for local threads."""
    return None if client is None else DistributedExecutor(client)
