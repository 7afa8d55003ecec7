"""dask.distributed for the E-step: a local cluster tuned for it, or a client of a running scheduler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask

__all__ = ["WORKER_ENVIRONMENT", "dask_client", "local_cluster"]

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
