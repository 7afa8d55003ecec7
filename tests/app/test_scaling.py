"""Memory bounded by the chunk: rotated references built per batch, chunk results summed as they finish,
local-search chunks grouped by orientation, and the default chunk size."""

from __future__ import annotations

import operator
import time
import tracemalloc
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.fft as sfft

from napari_mltomo.compute import DistributedExecutor
from napari_mltomo.core.chunks import (
    MAX_AUTO_CHUNK,
    ChunkProgress,
    Dispatch,
    chunk_size,
    pairwise_sum,
    sum_chunks,
)
from napari_mltomo.core.estep import estep_chunk
from napari_mltomo.core.estep_inputs import EStepModel, ParticleChunk, ReferenceBank, translation_log_prior
from napari_mltomo.core.fourier import resolution_masks
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import SubtomogramSet
from napari_mltomo.core.sampling import (
    local_neighbourhoods,
    orientation_grid,
    orientation_order,
    random_orientations,
)
from napari_mltomo.core.synthetic import make_dataset


class _Counted:
    """A chunk result that counts how many of its kind are alive at once."""

    alive: ClassVar[int] = 0
    peak: ClassVar[int] = 0

    def __init__(self, value: int) -> None:
        self.value = value
        _Counted.alive += 1
        _Counted.peak = max(_Counted.peak, _Counted.alive)

    def __del__(self) -> None:
        _Counted.alive -= 1

    def __add__(self, other: _Counted) -> _Counted:
        return _Counted(self.value + other.value)

    def __reduce__(self) -> tuple:
        return _Counted, (self.value,)  # a copy made by pickling counts too


def _particles(n: int) -> np.ndarray:
    """``n`` particles of 2^3 voxels, not constant (a pass over constant particles is refused)."""
    return np.random.default_rng(n).standard_normal((n, 2, 2, 2)).astype(np.float32)


def _index_sum(volumes: np.ndarray, indices: np.ndarray) -> _Counted:
    return _Counted(int(indices.sum()))


def _cluster(distributed: Any) -> Any:
    """An in-process cluster of 2 single-threaded workers."""
    return distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None)


@pytest.mark.parametrize("on_cluster", [False, True])
def test_chunk_results_are_added_as_they_finish_not_held_until_the_end(on_cluster: bool) -> None:
    data = SubtomogramSet(_particles(160))
    params = MLParams(n_classes=1, threads=2, chunk_size=4)
    _Counted.alive = _Counted.peak = 0
    if on_cluster:
        distributed = pytest.importorskip("distributed")
        with _cluster(distributed) as client:
            total = sum_chunks(_index_sum, data, params, [], Dispatch(DistributedExecutor(client)), "test")
    else:
        total = sum_chunks(_index_sum, data, params, [], Dispatch(), "test")
    assert total.value == sum(range(160))
    assert _Counted.peak <= 20  # 40 chunks: holding them all would peak at 40 or more


class _Stop(Exception):
    pass


_STARTED: list[int] = []


def _slow_chunk(volumes: np.ndarray, indices: np.ndarray) -> int:
    _STARTED.append(int(indices[0]))
    time.sleep(0.05)
    return len(indices)


def test_raising_from_the_progress_callback_cancels_the_chunks_on_a_cluster() -> None:
    distributed = pytest.importorskip("distributed")
    data = SubtomogramSet(_particles(40))
    params = MLParams(n_classes=1, threads=2, chunk_size=1)

    def stop(event: ChunkProgress) -> None:
        raise _Stop

    _STARTED.clear()
    with _cluster(distributed) as client:
        with pytest.raises(_Stop):
            sum_chunks(_slow_chunk, data, params, [], Dispatch(DistributedExecutor(client), stop), "test")
        time.sleep(0.5)  # what was not cancelled would run now: 10 more chunks
    assert len(_STARTED) <= 6


def test_threads_and_a_cluster_add_the_chunks_in_the_same_order() -> None:
    """Floating-point sums depend on their order; the fixed pairwise tree makes threads and a cluster agree to
    the last bit (and differ from a left-to-right sum, so the test can tell)."""
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(0)
    values = rng.standard_normal(37) * 10.0 ** rng.integers(-8, 9, 37)

    def chunk_value(volumes: np.ndarray, indices: np.ndarray) -> float:
        return float(values[indices].sum())

    data = SubtomogramSet(_particles(37))
    params = MLParams(n_classes=1, threads=2, chunk_size=1)
    on_threads = sum_chunks(chunk_value, data, params, [], Dispatch(), "test")
    with _cluster(distributed) as client:
        on_cluster = sum_chunks(chunk_value, data, params, [], Dispatch(DistributedExecutor(client)), "test")
    assert on_threads == on_cluster == pairwise_sum(list(values), operator.add)
    assert on_threads != sum(values.tolist())


def test_local_search_chunks_share_their_orientations() -> None:
    """With the particles ordered by orientation, the chunks of a local search rotate the references into far
    fewer orientations than in the data's order (each rotation is built once per chunk that uses it)."""
    grid = orientation_grid(10.0)
    centres = random_orientations(np.random.default_rng(0), 6000)
    allowed = np.concatenate(
        [local_neighbourhoods(grid.angles_deg, part, 10.0) for part in np.array_split(centres, 6)]
    )

    def rotations(order: np.ndarray) -> int:
        return sum(int(allowed[order[i : i + 64]].any(axis=0).sum()) for i in range(0, len(order), 64))

    ordered, unordered = rotations(orientation_order(centres, 10.0)), rotations(np.arange(len(centres)))
    assert ordered < 0.5 * unordered
    assert ordered < 3.0 * allowed.any(axis=0).sum()


@pytest.mark.parametrize(("n", "threads", "expected"), [(72, 2, 36), (72, 1, MAX_AUTO_CHUNK), (5, 2, 3)])
def test_the_default_chunk_spreads_the_particles_over_the_threads(
    n: int, threads: int, expected: int
) -> None:
    assert chunk_size(n, MLParams(n_classes=1, threads=threads), Dispatch()) == expected
    assert chunk_size(n, MLParams(n_classes=1, threads=threads, chunk_size=7), Dispatch()) == 7


def _estep_peak_bytes(ang_deg: float) -> int:
    """Peak bytes allocated by the E-step of 2 particles of a 16-box against 2 references at ``ang_deg``."""
    size = 16
    data = make_dataset(1, 2, size, snr=1.0, seed=0)
    _, within = resolution_masks(size, 0.5)
    log_prior, shift_sq = translation_log_prior(size, 2.0)
    model = EStepModel(np.log([0.5, 0.5]), 1.0, log_prior, shift_sq, (data.region,), within)
    spectra = (sfft.rfftn(data.volumes, axes=(-3, -2, -1)) * model.region_masks[0]).astype(np.complex64)
    chunk = ParticleChunk(np.arange(2), spectra, np.zeros(2, int), np.arange(2) % 2)
    grid = orientation_grid(ang_deg)
    model.region_masks  # noqa: B018 -- cached before measuring
    tracemalloc.start()
    estep_chunk(
        chunk, ReferenceBank(data.phantoms.astype(np.float64), grid.matrices, model.region_masks), model
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_the_estep_does_not_hold_the_references_in_every_orientation() -> None:
    """From 30 to 15 degrees the grid grows from 504 to 3888 orientations: all the rotated references would
    take 3888 x 2 x 16 x 16 x 9 x 8 bytes = 143 MB more; the E-step's peak grows by far less."""
    coarse, fine = _estep_peak_bytes(30.0), _estep_peak_bytes(15.0)
    n_fine = len(orientation_grid(15.0))
    whole_bank = n_fine * 2 * 16 * 16 * 9 * 8
    assert fine - coarse < 0.2 * whole_bank
