"""The refinement driver: start-up, EM iterations and convergence, as a generator of states.

``iter_refine`` yields an :class:`MLState` for each step of the annealed start-up (``--escape``), one
for the starting references (iteration ``istart - 1``) and one after every iteration; the command line
writes each iteration's state to disk, and stopping the iteration cancels the run. The E-step runs as
one dask task per chunk of particles whose statistics are added up.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.fft as sfft
from dask.callbacks import Callback
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.special import logsumexp

from .escape import (
    SPLIT_BAND,
    AlignedClass,
    RigidMove,
    fourier_band,
    near_symmetry,
    signal_weights,
    superposition,
    turned_proposal,
)
from .estep import (
    EStepModel,
    ParticleChunk,
    ParticleResults,
    ReferenceBank,
    SufficientStats,
    estep_chunk,
    orientation_log_masses,
    translation_log_prior,
)
from .fourier import AXES3, fourier_rescale, resolution_from_fsc, resolution_masks, shift_phases
from .geometry import (
    backproject,
    euler_to_matrix,
    flatten_outside_sphere,
    fourier_stencil,
    matrix_to_euler,
    oversampled_masks,
    oversampled_shape,
    rotate_masks,
    rotate_volumes,
    sphere_mask,
)
from .missing import MissingRegion, region_masks
from .mstep import (
    class_fsc,
    full_grid_sum,
    impute_references,
    postprocess,
    regularise,
    resolution_filter,
    sigma_noise_without_imputation,
    signal_change,
    smooth_by_rotation,
    thresholded_average,
    update_fractions,
    update_offset,
    update_sigma_noise,
)
from .params import MLParams, ParameterError
from .regroup import ClassSample, merge_loss, split_gain, split_groups
from .sampling import (
    OrientationGrid,
    local_neighbourhoods,
    orientation_grid,
    orientation_order,
    perturb_grid,
    perturbation_matrix,
    random_orientations,
)
from .symmetry import orientation_copies, symmetrise

__all__ = [
    "ChunkProgress",
    "MLState",
    "StartModel",
    "SubtomogramSet",
    "check_start",
    "finite_particles",
    "internal_size",
    "iter_refine",
    "prepare_references",
    "run_refine",
]


@dataclass(frozen=True)
class SubtomogramSet:
    """The particles and what is known about them.

    Attributes
    ----------
    volumes : (n, N0, N0, N0) array_like
        The subtomograms (numpy, memory-mapped or dask; read one chunk at a time).
    regions : tuple of MissingRegion
        Missing-region definitions; empty if the data have none.
    region_index : (n,) ndarray of int
        0-based index into ``regions`` of each particle (zeros without regions).
    angles_deg : (n, 3) ndarray or None
        Xmipp angles from the metadata, used with ``keep_angles``.
    shifts_px : (n, 3) ndarray or None
        ``(x, y, z)`` shifts from the metadata (input pixels).
    classes : (n,) ndarray of int or None
        0-based classes from the metadata (``ref - 1``), used by ``only_average``.
    focus_mask : (N0, N0, N0) ndarray or None
        ``--mask``, in the reference frame, values in [0, 1]: with ``dont_align`` only what it keeps of
        the particles (turned to their metadata poses) and of the references is compared.
    """

    volumes: Any
    regions: tuple[MissingRegion, ...] = ()
    region_index: NDArray[np.intp] | None = None
    angles_deg: NDArray[np.float64] | None = None
    shifts_px: NDArray[np.float64] | None = None
    classes: NDArray[np.intp] | None = None
    focus_mask: NDArray[np.floating] | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.volumes.shape)
        if len(shape) != 4 or not shape[1] == shape[2] == shape[3]:
            raise ParameterError(f"-i: particles must be cubes, got an array of shape {shape}")
        if self.region_index is None:
            object.__setattr__(self, "region_index", np.zeros(shape[0], dtype=np.intp))
        index = np.asarray(self.region_index)
        if len(index) != shape[0]:
            raise ParameterError("-i: need one missing-region number per particle")
        if len(index) and (index.min() < 0 or index.max() >= max(1, len(self.regions))):
            raise ParameterError(
                f"-i: missing-region numbers must lie in 1..{len(self.regions)}, "
                f"got {index.min() + 1}..{index.max() + 1}"
            )

    def __len__(self) -> int:
        return int(self.volumes.shape[0])

    @property
    def box_size(self) -> int:
        """Input box size ``N0``."""
        return int(self.volumes.shape[-1])


@dataclass(frozen=True)
class StartModel:
    """A model to start from or continue: references at the internal size and scalar parameters."""

    references: NDArray[np.float64]
    fractions: NDArray[np.float64] | None = None
    sigma_noise: float | None = None
    sigma_offset_px: float | None = None  # internal pixels
    iteration: int = 0


@dataclass(frozen=True)
class MLState:
    """The model after one iteration (or the starting model at ``iteration = istart - 1``).

    Internal sizes: references are ``(K, N, N, N)`` at the internal box size ``N``; ``scale = N / N0``.
    States of the low-resolution start have ``startup_step`` 1, 2, ... and the ``temperature`` of
    their posteriors; they are progress reports, not iterations of the run. ``escaped_classes`` are the
    classes whose references the trap escape replaced after this iteration's M-step; ``regrouped`` is
    ``(split, spare, kept)`` when it split class ``split`` into itself and ``spare``, whose particles
    go to ``kept`` (``spare`` itself when it was too small to check).
    """

    iteration: int
    references: NDArray[np.float64]
    fractions: NDArray[np.float64]
    sigma_noise: float
    sigma_offset_px: float
    scale: float
    grid: OrientationGrid | None = None
    stats: SufficientStats | None = field(default=None, repr=False)
    fsc: NDArray[np.float64] | None = None
    resolution_shell: NDArray[np.intp] | None = None
    signal_change: NDArray[np.float64] | None = None
    unregularised: NDArray[np.float64] | None = field(default=None, repr=False)
    startup_step: int = 0
    temperature: float = 1.0
    escaped_classes: tuple[int, ...] = ()
    regrouped: tuple[int, int, int] | None = None
    converged: bool = False

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.references)

    @property
    def size(self) -> int:
        """Internal box size ``N``."""
        return int(self.references.shape[-1])

    @property
    def log_likelihood(self) -> float:
        """Total log-likelihood of the data (NaN for the starting model)."""
        return self.stats.log_likelihood if self.stats is not None else float("nan")

    @property
    def mean_pmax(self) -> float:
        """Mean over particles of the largest posterior probability (NaN for the starting model)."""
        if self.stats is None:
            return float("nan")
        return self.stats.pmax_sum / self.stats.n_particles

    @property
    def escape_note(self) -> str:
        """What the trap escape did: ``re-posed class 1, 3; split class 2 into 2 and 3, merged 3 into 1
        (trap escape)`` (no merge when class 3 was too small to check), or ``""``."""
        notes = []
        if self.escaped_classes:
            notes.append(f"re-posed class {', '.join(str(k + 1) for k in self.escaped_classes)}")
        if self.regrouped is not None:
            split, spare, kept = (k + 1 for k in self.regrouped)
            merged = f", merged {spare} into {kept}" if kept != spare else ""
            notes.append(f"split class {split} into {split} and {spare}{merged}")
        return f"{'; '.join(notes)} (trap escape)" if notes else ""

    def coverage(self) -> NDArray[np.float64] | None:
        """Per class, the observed-region coverage normalised by the class weight, ``(K, N, N, N//2+1)``."""
        if self.stats is None:
            return None
        weights = np.maximum(self.stats.class_weights, 1e-300)[:, None, None, None]
        return self.stats.coverage.sum(axis=0) / weights


@dataclass(frozen=True)
class ChunkProgress:
    """``done`` of ``total`` chunks of particles of one pass (``stage``: "starting references",
    "start-up step 2", "iteration 3") are finished."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class _Dispatch:
    """Where chunk tasks run (a dask.distributed client, or local threads) and whom to tell."""

    client: Any = None
    on_chunk: Callable[[ChunkProgress], None] | None = None


def check_start(start: StartModel, params: MLParams, size: int) -> None:
    """Refuse a starting model that does not fit the run: its class count and box must be the run's.

    Raises
    ------
    ParameterError
        Naming what the model holds and what the run needs (``--nref``/``--ref``, ``--dim``).
    """
    found = np.shape(start.references)
    if len(found) != 4 or found[0] != params.n_classes or found[1:] != (size,) * 3:
        held = f"{found[0]} references of {found[-1]} voxels" if len(found) == 4 else f"an array of {found}"
        raise ParameterError(
            f"the starting model holds {held}, but this run has {params.n_classes} classes at {size} voxels "
            "(--nref/--ref/--dim)"
        )
    if params.fractions is None and start.fractions is not None and len(start.fractions) != params.n_classes:
        raise ParameterError(
            f"the starting model has {len(start.fractions)} class fractions for {params.n_classes} classes"
        )


def internal_size(box_size: int, dim: int | None) -> int:
    """The working box size for ``--dim``: at most ``N0`` and of the same parity (increased by 1)."""
    if dim is None:
        return box_size
    if dim > box_size:
        raise ParameterError(f"--dim {dim} exceeds the particle box size {box_size}")
    return dim + (box_size - dim) % 2


@dataclass(frozen=True)
class _Setup:
    """Everything fixed for a whole run."""

    size: int
    scale: float
    soft_mask: NDArray[np.float64]
    within_resolution: NDArray[np.bool_]
    masks: NDArray[np.bool_]  # (R, N, N, N//2+1) in the particle frame
    observed_per_particle: float
    focus_mask: NDArray[np.float64] | None = None  # (N, N, N) in the reference frame, 0 outside the sphere
    symmetry: NDArray[np.float64] = field(default_factory=lambda: np.eye(3)[None])  # (G, 3, 3)

    def finish(self, spectra: NDArray[np.complexfloating]) -> NDArray[np.float64]:
        """References from their spectra: post-processed (:func:`postprocess`) and symmetrised."""
        return self.symmetrised(postprocess(spectra, self.soft_mask))

    def symmetrised(self, references: NDArray[np.float64]) -> NDArray[np.float64]:
        """``references`` averaged over the point group (unchanged for c1)."""
        return references if len(self.symmetry) == 1 else symmetrise(references, self.symmetry)


def _make_setup(data: SubtomogramSet, params: MLParams) -> _Setup:
    size = internal_size(data.box_size, params.dim)
    soft, within = resolution_masks(size, params.maxres)
    masks = region_masks(data.regions, size, within)[0]
    focus = None
    if data.focus_mask is not None:
        focus = np.clip(fourier_rescale(np.asarray(data.focus_mask, dtype=np.float32), size), 0.0, 1.0)
        focus = focus.astype(np.float64) * sphere_mask(size)
    return _Setup(
        size,
        size / data.box_size,
        soft,
        within,
        masks,
        float(full_grid_sum(within)),
        focus,
        params.symmetry_group,
    )


def iter_refine(
    data: SubtomogramSet,
    params: MLParams,
    start: StartModel | None = None,
    *,
    client: Any = None,
    on_chunk: Callable[[ChunkProgress], None] | None = None,
) -> Iterator[MLState]:
    """Run the ML refinement, yielding the starting model and then one state per iteration.

    Parameters
    ----------
    data : SubtomogramSet
    params : MLParams
    start : StartModel, optional
        References (and parameters) to start from, ``params.n_classes`` of them at the internal box
        (:func:`check_start`); random references from ``params.n_classes`` subsets if omitted.
        ``start.iteration`` is the last iteration already done (restart).
    client : dask.distributed.Client, optional
        Run the E-step tasks on this cluster instead of local threads.
    on_chunk : callable, optional
        Called with a :class:`ChunkProgress` each time a chunk of particles is done. An exception it
        raises cancels the run between chunks: no chunk starts after it (those already running finish
        in the background, unwaited).

    Yields
    ------
    MLState
        With ``params.escape`` and no ``start``, first one state per step of the low-resolution
        start (``startup_step > 0``).

    Raises
    ------
    ParameterError
        If ``start`` does not fit the run (:func:`check_start`).
    """
    dispatch = _Dispatch(client, on_chunk)
    setup = _make_setup(data, params)
    _check_metadata_poses(data, params)
    searching = params.escape > 0 and params.global_search and not (params.keep_angles or params.max_cc)
    checking = searching and len(params.symmetry_group) == 1  # a group's own turns are no trap
    if start is None and searching and params.max_iter > 0:
        start = yield from _startup(data, params, setup, dispatch)
    if params.only_average:
        yield _only_average(data, params, setup, dispatch)
        return
    if start is not None:
        check_start(start, params, setup.size)
    state = _starting_state(data, params, setup, start, dispatch)
    yield state
    last = params.max_iter + params.istart - 1
    for iteration in range(state.iteration + 1, last + 1):
        state = _iterate(data, params, setup, state, iteration, dispatch, f"iteration {iteration}")
        if checking and iteration < min(last, params.istart + ESCAPE_CHECKS):
            state = _escape_traps(data, params, setup, state, dispatch)
        yield state
        if state.converged:
            return


def _check_metadata_poses(data: SubtomogramSet, params: MLParams) -> None:
    """Refuse what the data cannot support: options that need metadata angles when there are none,
    ``--mask`` without ``--dont_align`` (or with ``--only_average``), classes beyond the run's."""
    if data.focus_mask is not None and (not params.dont_align or params.only_average):
        raise ParameterError("--mask works only with --dont_align, and not with --only_average")
    if (
        params.only_average
        and data.classes is not None
        and np.max(data.classes, initial=0) >= params.n_classes
    ):
        raise ParameterError(f"--only_average: the metadata name classes above {params.n_classes}")
    needing = params.angle_options
    if needing and data.angles_deg is None:
        raise ParameterError(f"{needing[0]} needs the particles' angles (angleRot, angleTilt, anglePsi)")


def run_refine(
    data: SubtomogramSet,
    params: MLParams,
    start: StartModel | None = None,
    *,
    callback: Callable[[MLState], None] | None = None,
    client: Any = None,
) -> MLState:
    """Blocking wrapper of :func:`iter_refine`; returns the last state."""
    state = None
    for state in iter_refine(data, params, start, client=client):
        if callback is not None:
            callback(state)
    assert state is not None
    return state


def finite_particles(data: SubtomogramSet, params: MLParams, client: Any = None) -> NDArray[np.bool_]:
    """Whether each particle is finite (no NaN or Inf voxel): every particle read once, a chunk per task
    on threads or on ``client``, ``(n,)``."""
    parts = _map_chunks(_finite_rows, data, params, [], _Dispatch(client), "particles checked")
    return np.concatenate(parts) if parts else np.ones(0, dtype=bool)


def _finite_rows(volumes: NDArray[np.float32], indices: NDArray[np.intp]) -> NDArray[np.bool_]:
    return np.isfinite(volumes).all(axis=(1, 2, 3))


def _rng(params: MLParams, *keys: int) -> np.random.Generator:
    """A generator derived only from the seed and the given keys (iteration, purpose, ...)."""
    return np.random.default_rng([params.seed, *keys])


#: Largest number of particles per task when ``--chunk`` is not given: a chunk rotates the references
#: into every orientation it scores, which costs about as much as 15 correlation maps per orientation
#: (N = 32 and 64), so 64 particles of 3 classes spend under 10% of the E-step on it.
MAX_AUTO_CHUNK = 64


def _chunk_size(n: int, params: MLParams, dispatch: _Dispatch) -> int:
    """``--chunk``, or by default the particles spread evenly over the threads (or the cluster's
    threads), at most ``MAX_AUTO_CHUNK`` per task."""
    if params.chunk_size is not None:
        return params.chunk_size
    parallel = params.threads if dispatch.client is None else sum(dispatch.client.nthreads().values())
    return max(1, min(MAX_AUTO_CHUNK, -(-n // max(1, parallel))))


def _chunk_tasks(
    function: Callable[..., Any],
    data: SubtomogramSet,
    params: MLParams,
    shared: Sequence[Any],
    dispatch: _Dispatch,
    order: NDArray[np.intp] | None,
) -> list[Any]:
    """One delayed ``function(volumes, indices, *shared)`` per chunk of particles, taken in ``order``
    (the data's order if None); each chunk reads its particles (``shared[0]``, see :func:`_shared`) in
    ascending order."""
    if order is None:
        order = np.arange(len(data))
    size = _chunk_size(len(data), params, dispatch)
    call = dask.delayed(_read_and_apply)
    return [
        call(function, np.sort(order[start : start + size]), *shared) for start in range(0, len(order), size)
    ]


def _shared(data: SubtomogramSet, shared: Sequence[Any], dispatch: _Dispatch) -> list[Any]:
    """The particles and ``shared``, as the chunk tasks take them: on a cluster, scattered to every worker
    once (the caller holds the result until the tasks are done, or the cluster drops them)."""
    items = [_Particles(data.volumes), *shared]
    if dispatch.client is None:
        return items
    return [dispatch.client.scatter(item, broadcast=True, hash=False) for item in items]


class _Particles:
    """The particles (numpy, memory-mapped, dask or any array-like), in a box that dask does not open: a
    task reads only its own chunk, and no task carries the graph of the whole data set."""

    def __init__(self, volumes: Any) -> None:
        self.volumes = volumes

    def read(self, indices: NDArray[np.intp]) -> NDArray[np.float32]:
        """Particles ``indices``, read now."""
        rows = self.volumes[indices]
        if isinstance(rows, da.Array):
            rows = rows.compute(scheduler="sync")
        return np.asarray(rows, dtype=np.float32)


def _read_and_apply(
    function: Callable[..., Any], indices: NDArray[np.intp], particles: _Particles, *shared: Any
) -> Any:
    """``function(volumes, indices, *shared)`` on the chunk ``indices`` of ``particles``."""
    return function(particles.read(indices), indices, *shared)


def _map_chunks(
    function: Callable[..., Any],
    data: SubtomogramSet,
    params: MLParams,
    shared: Sequence[Any],
    dispatch: _Dispatch,
    stage: str,
) -> list[Any]:
    """Apply ``function(volumes, indices, *shared)`` to every chunk of particles with dask, reporting
    each finished chunk of ``stage`` to ``dispatch.on_chunk``."""
    shared = _shared(data, shared, dispatch)
    tasks = _chunk_tasks(function, data, params, shared, dispatch, None)
    if dispatch.client is not None:
        return _gather_reporting(dispatch.client, tasks, stage, dispatch.on_chunk)
    with _ChunkCounter({task.key for task in tasks}, stage, dispatch.on_chunk):
        return list(dask.compute(*tasks, scheduler="threads", num_workers=params.threads))


def _sum_chunks(
    function: Callable[..., Any],
    data: SubtomogramSet,
    params: MLParams,
    shared: Sequence[Any],
    dispatch: _Dispatch,
    stage: str,
    *,
    order: NDArray[np.intp] | None = None,
    add: Callable[[Any, Any], Any] = operator.add,
) -> Any:
    """:func:`_map_chunks`, summed with ``add`` as the chunks finish, so that only a few chunks'
    results are held at once. The sum is a fixed pairwise tree over the chunks, so threads and a
    cluster give the same result to the last bit."""
    shared = _shared(data, shared, dispatch)
    tasks = _chunk_tasks(function, data, params, shared, dispatch, order)
    if dispatch.client is not None:
        return _sum_reporting(dispatch.client, tasks, add, stage, dispatch.on_chunk)
    with _ChunkCounter({task.key for task in tasks}, stage, dispatch.on_chunk):
        (total,) = dask.compute(
            _pairwise(tasks, dask.delayed(add)), scheduler="threads", num_workers=params.threads
        )
    return total


def _pairwise(items: list[Any], add: Callable[[Any, Any], Any]) -> Any:
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


def _gather_reporting(
    client: Any, tasks: list[Any], stage: str, on_chunk: Callable[[ChunkProgress], None] | None
) -> list[Any]:
    """Compute ``tasks`` on a dask.distributed cluster, reporting each as it finishes."""
    from distributed import as_completed

    futures = client.compute(tasks)
    try:
        _report_as_finished(as_completed(futures), len(futures), stage, on_chunk)
    except BaseException:
        client.cancel(futures)
        raise
    return client.gather(futures)


def _sum_reporting(
    client: Any,
    tasks: list[Any],
    add: Callable[[Any, Any], Any],
    stage: str,
    on_chunk: Callable[[ChunkProgress], None] | None,
) -> Any:
    """The :func:`_pairwise` sum of ``tasks`` on a dask.distributed cluster, reporting each task as it
    finishes. The tree goes to the scheduler as one graph, whose order adds each pair as soon as both
    are done; the client holds no chunk result, so the cluster drops each once it has been added."""
    from distributed import as_completed

    total, *leaves = client.compute([_pairwise(tasks, dask.delayed(add)), *tasks], optimize_graph=False)
    pending = as_completed(leaves)
    del leaves  # each chunk's future is dropped as it is reported
    try:
        _report_as_finished(pending, len(tasks), stage, on_chunk)
    except BaseException:
        client.cancel([total, *pending.futures])  # and with them every chunk not yet started
        pending.clear()
        raise
    return total.result()


def _report_as_finished(
    finished: Iterator[Any], total: int, stage: str, on_chunk: Callable[[ChunkProgress], None] | None
) -> None:
    """Call ``on_chunk`` as each of the ``total`` items of ``finished`` arrives."""
    for done, _ in enumerate(finished, start=1):
        if on_chunk is not None:
            on_chunk(ChunkProgress(stage, done, total))


def _observed_particles(
    volumes: ArrayLike, indices: NDArray[np.intp], region_index: NDArray[np.intp], setup: _Setup
) -> NDArray[np.complex64]:
    """Half-grid spectra of particles at the internal size, times their observed-region masks."""
    volumes = fourier_rescale(np.asarray(volumes, dtype=np.float32), setup.size)
    spectra = sfft.rfftn(volumes, axes=AXES3) * setup.masks[region_index[indices]]
    return spectra.astype(np.complex64)


# ----------------------------------------------------------------------------------------------
# start-up


def prepare_references(volumes: ArrayLike, size: int) -> NDArray[np.float64]:
    """Starting references from user maps: down-scale, flatten outside the sphere, smooth.

    Parameters
    ----------
    volumes : (K, N0, N0, N0) array_like
    size : int
        Internal box size ``N``.

    Returns
    -------
    (K, N, N, N) ndarray of float64
    """
    scaled = fourier_rescale(np.asarray(volumes, dtype=np.float32), size)
    return smooth_by_rotation(flatten_outside_sphere(scaled.astype(np.float64)))


def _starting_state(
    data: SubtomogramSet, params: MLParams, setup: _Setup, start: StartModel | None, dispatch: _Dispatch
) -> MLState:
    if start is None:
        references = _random_references(data, params, setup, dispatch)
        start = StartModel(
            references=smooth_by_rotation(flatten_outside_sphere(references)),
            iteration=params.istart - 1,
        )
    n_classes = len(start.references)
    if params.fractions is not None:
        fractions = np.asarray(params.fractions, dtype=np.float64)
    elif start.fractions is not None:
        fractions = np.asarray(start.fractions, dtype=np.float64)
    else:
        fractions = np.ones(n_classes)
    sigma = start.sigma_noise
    if sigma is None:  # white noise of the particles at the internal size, inside --mask if given
        kept = 1.0 if setup.focus_mask is None else float(np.mean(setup.focus_mask**2))
        sigma = params.noise_sigma * setup.scale**1.5 * np.sqrt(kept)
    offset = start.sigma_offset_px
    if offset is None:
        offset = params.offset_sigma_px * setup.scale
    references = setup.symmetrised(np.asarray(start.references, dtype=np.float64))
    unregularised = None
    if start.iteration == 0 and params.istart == 1 and params.regularisation(0) > 0:
        unregularised = references
        references, _ = _regularised(references, fractions / fractions.sum(), len(data), params, 0)
    return MLState(
        iteration=start.iteration,
        references=references,
        fractions=fractions / fractions.sum(),
        sigma_noise=float(sigma),
        sigma_offset_px=float(offset),
        scale=setup.scale,
        unregularised=unregularised,
    )


#: Internal box of the annealed start-up steps (17 for odd boxes), and the temperature of their posteriors at
#: the first step (tuned at this box: about half the particles' posterior mass off their best pose).
STARTUP_SIZE = 16
STARTUP_TEMPERATURE = 30.0


def _startup(
    data: SubtomogramSet, params: MLParams, setup: _Setup, dispatch: _Dispatch
) -> Generator[MLState, None, StartModel]:
    """``params.escape`` annealed iterations at low resolution from random references.

    The temperature falls geometrically from ``STARTUP_TEMPERATURE`` to 1; soft posteriors keep the
    random starting references from locking the classes and poses to noise. The steps are not
    regularised (``--reg0`` applies to the starting references they hand over, as to any start). Yields
    each step's state (``iteration`` is the step number) and returns the references, scaled up to the
    run's internal size, as the start of the run.
    """
    low = replace(
        params,
        dim=STARTUP_SIZE if setup.size > STARTUP_SIZE else params.dim,
        reg0=0.0,
        regf=0.0,
        adaptive=False,  # soft posteriors: nearly every coarse orientation would be a peak
    )
    low_setup = _make_setup(data, low)
    state = _starting_state(data, low, low_setup, None, dispatch)
    steps = params.escape
    for step in range(1, steps + 1):
        temperature = STARTUP_TEMPERATURE ** ((steps - step) / max(steps - 1, 1))
        stage = f"start-up step {step}"
        state = _iterate(data, low, low_setup, state, step, dispatch, stage, temperature, exact=False)
        yield replace(state, startup_step=step, temperature=temperature)
    ratio = setup.scale / low_setup.scale
    return StartModel(
        references=fourier_rescale(state.references, setup.size).astype(np.float64),
        fractions=state.fractions,
        sigma_noise=state.sigma_noise * ratio**1.5,
        sigma_offset_px=state.sigma_offset_px * ratio,
        iteration=params.istart - 1,
    )


def _random_references(
    data: SubtomogramSet, params: MLParams, setup: _Setup, dispatch: _Dispatch
) -> NDArray[np.float64]:
    """Weighted averages of random subsets of particles in random (or metadata) orientations."""
    rng = _rng(params, 0, 0)
    n = len(data)
    if n < params.n_classes:
        raise ParameterError(f"--nref {params.n_classes} exceeds the number of particles ({n})")
    classes = np.empty(n, dtype=np.intp)
    classes[rng.permutation(n)] = np.arange(n) * params.n_classes // n  # near-equal random subsets
    halves = rng.integers(0, 2, size=n)
    if _uses_metadata_poses(params) and data.angles_deg is not None:
        angles = data.angles_deg
    else:
        angles = random_orientations(rng, n)
    matrices = euler_to_matrix(*angles.T)
    shifts = _metadata_shifts(data, params) * setup.scale
    shared = [classes, halves, matrices, shifts, data.region_index, setup, params.n_classes]
    sums, coverage = _sum_chunks(
        _average_chunk, data, params, shared, dispatch, "starting references", add=_add_pairs
    )
    spectra = thresholded_average(sums.sum(axis=0), coverage.sum(axis=0), params.noimp_threshold)
    if params.filter_initial:
        shells = np.array([resolution_from_fsc(curve) for curve in class_fsc(sums, coverage)])
        spectra = resolution_filter(spectra, shells, setup.scale)
    return setup.finish(spectra)


def _only_average(data: SubtomogramSet, params: MLParams, setup: _Setup, dispatch: _Dispatch) -> MLState:
    """``--only_average``: each class the average of its particles at their metadata poses, with the
    observed-region masks summed (not the last one kept), in one iteration from empty references."""
    n, n_classes = len(data), params.n_classes
    classes = np.zeros(n, dtype=np.intp) if data.classes is None else np.asarray(data.classes)
    assert data.angles_deg is not None  # _check_metadata_poses
    grid = OrientationGrid(data.angles_deg, euler_to_matrix(*data.angles_deg.T))
    halves = _rng(params, params.istart, 1).integers(0, 2, size=n)
    shifts = _metadata_shifts(data, params) * setup.scale
    shared = [classes, halves, grid.matrices, shifts, data.region_index, setup, n_classes]
    stage = f"iteration {params.istart}"
    sums, coverage = _sum_chunks(_average_chunk, data, params, shared, dispatch, stage, add=_add_pairs)
    particles = ParticleResults(np.arange(n), classes, np.arange(n), shifts, np.ones(n), np.zeros(n))
    stats = SufficientStats(
        sums=sums,
        model_sums=np.zeros_like(sums[0]),
        coverage=coverage,
        class_weights=np.bincount(classes, minlength=n_classes).astype(np.float64),
        noise_sum=0.0,
        offset_sum=0.0,
        pmax_sum=float(n),
        log_likelihood=0.0,
        observed_components=float(np.array([full_grid_sum(m) for m in setup.masks])[data.region_index].sum()),
        particles=particles,
    )
    empty = MLState(
        iteration=params.istart - 1,
        references=np.zeros((n_classes, *(setup.size,) * 3)),
        fractions=np.full(n_classes, 1.0 / n_classes),
        sigma_noise=params.noise_sigma * setup.scale**1.5,
        sigma_offset_px=params.offset_sigma_px * setup.scale,
        scale=setup.scale,
    )
    return replace(_maximise(data, params, setup, empty, stats, grid, params.istart), converged=True)


def _weighted_average(
    sums: NDArray[np.complexfloating], coverage: NDArray[np.floating], params: MLParams, setup: _Setup
) -> NDArray[np.float64]:
    """The post-processed volume ``S / W`` of aligned particles, 0 where ``W <= --noimp_threshold``."""
    return setup.finish(thresholded_average(sums, coverage, params.noimp_threshold))


def _uses_metadata_poses(params: MLParams) -> bool:
    """The starting averages take the metadata angles and shifts (``--keep_angles``, and every search
    around or at the metadata poses)."""
    return params.keep_angles or not params.global_search


def _metadata_shifts(data: SubtomogramSet, params: MLParams) -> NDArray[np.float64]:
    if _uses_metadata_poses(params) and data.shifts_px is not None:
        return np.asarray(data.shifts_px, dtype=np.float64)
    return np.zeros((len(data), 3))


def _average_chunk(
    volumes: ArrayLike,
    indices: NDArray[np.intp],
    classes: NDArray[np.intp],
    halves: NDArray[np.intp],
    matrices: NDArray[np.float64],
    shifts: NDArray[np.float64],
    region_index: NDArray[np.intp],
    setup: _Setup,
    n_classes: int,
) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Spectra of the sums of the chunk's particles aligned by the given transforms, per half and class,
    and the sums of their rotated observed-region masks (see :func:`_spread_particles`)."""
    targets = (halves[indices] * n_classes + classes[indices], 2 * n_classes)
    sums, coverage = _spread_particles(volumes, indices, matrices, shifts, region_index, setup, targets)
    shape = (2, n_classes, *setup.masks.shape[1:])
    return sums.reshape(shape), coverage.reshape(shape)


def _add_pairs(first: tuple[Any, Any], second: tuple[Any, Any]) -> tuple[Any, Any]:
    """``first + second`` element by element, for :func:`_sum_chunks` of :func:`_average_chunk`."""
    return first[0] + second[0], first[1] + second[1]


def _spread_particles(
    volumes: ArrayLike,
    indices: NDArray[np.intp],
    matrices: NDArray[np.float64],
    shifts: NDArray[np.float64],
    region_index: NDArray[np.intp],
    setup: _Setup,
    targets: tuple[NDArray[np.intp], int] | None = None,
) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Particles shifted and spread into the reference frame, and their rotated observed-region masks.

    Each particle (row ``r`` of the chunk, data-set index ``indices[r]``, which indexes ``matrices``,
    ``shifts`` and ``region_index``) is brought back as in the E-step's backward pass; its mask is
    rotated by the same interpolation. With ``targets = (target of each row, number of targets)`` they
    are summed per target; by default each row is its own.

    Returns
    -------
    sums : (n_targets, N, N, N//2+1) ndarray of complex128
    coverage : (n_targets, N, N, N//2+1) ndarray of float64
    """
    row_targets, n_targets = targets or (np.arange(len(indices)), len(indices))
    spectra = _observed_particles(volumes, indices, region_index, setup)
    size = setup.size
    masks = oversampled_masks(setup.masks.astype(np.float64))
    spread = np.zeros((n_targets, *oversampled_shape(size)), dtype=np.complex128)
    coverage = np.zeros((n_targets, *setup.masks.shape[1:]))
    for row, i in enumerate(indices):
        shifted = spectra[row] * shift_phases(shifts[i], size)
        fourier_stencil(matrices[i].T, size).spread(shifted, spread[row_targets[row]])
        stencil = fourier_stencil(matrices[i], size)
        coverage[row_targets[row]] += rotate_masks(masks[region_index[i]], stencil)
    return sfft.rfftn(backproject(spread, size), axes=AXES3), coverage


def _regularised(
    references: NDArray[np.float64],
    fractions: NDArray[np.float64],
    n_images: int,
    params: MLParams,
    iteration: int,
) -> tuple[NDArray[np.float64], float]:
    spectra = sfft.rfftn(references, axes=AXES3)
    pulled, variance_increase = regularise(spectra, fractions, n_images, params.regularisation(iteration))
    size = references.shape[-1]
    return sfft.irfftn(pulled, s=(size,) * 3, axes=AXES3), variance_increase


# ----------------------------------------------------------------------------------------------
# escape from approximate-symmetry traps

#: Iterations (from the first) after which classes are checked for approximate-symmetry traps: each
#: check re-poses an aligned class of a few dozen particles about as often as not (its held-out gain is
#: noise), so checks after every iteration moved aligned classes again until the last.
ESCAPE_CHECKS = 2
#: Classes with fewer particles than this are not checked.
ESCAPE_MIN_PARTICLES = 10
#: At most this many particles of a class (drawn at random) decide whether to re-pose it and make its
#: new reference; the next E-step re-poses all of them against it.
ESCAPE_SAMPLE = 200


def _escape_traps(
    data: SubtomogramSet, params: MLParams, setup: _Setup, state: MLState, dispatch: _Dispatch
) -> MLState:
    """Split a class that holds two proteins if two others hold one (``core.regroup``), then re-pose the
    other classes caught between poses related by their near-symmetry (``core.escape``).

    For each class, its particles in their best poses are split by :func:`flip_groups`; if moving one
    group by the class's near-symmetry explains held-out particles better (:func:`turned_proposal`),
    the reference changes by the difference between the sample's average with that group moved and
    without (the rest of the reference, the M-step's, is kept). Particles are compared on their class's
    :func:`signal_weights` and, if that proposes nothing, on the band from ``SPLIT_BAND`` to Nyquist.
    """
    samples = _class_samples(data, params, setup, state, dispatch)
    regrouped = _regroup(state, samples, params)
    if regrouped is not None:
        state = _apply_regroup(state, samples, regrouped, params, setup)
    moves = near_symmetry(state.references, state.grid.matrices, params.ang_deg)
    references = np.array(state.references, copy=True)
    escaped = []
    split_band = fourier_band(state.references.shape[-1], SPLIT_BAND)
    for k, sample in samples.items():
        if regrouped is not None and k in regrouped[:2]:
            continue  # new references: the next check sees their poses
        proposal = turned_proposal(
            sample.spectra, sample.coverage, (sample.signal, split_band), moves[k], params.ang_deg, sample.rng
        )
        if proposal is not None:
            flipped, aligned = proposal
            references[k] += _weighted_average(*aligned.sums(flipped), params, setup) - _weighted_average(
                *aligned.sums(np.zeros_like(flipped)), params, setup
            )
            escaped.append(k)
    if not escaped and regrouped is None:
        return state
    return replace(state, references=references, escaped_classes=tuple(escaped), converged=False)


@dataclass(frozen=True)
class _Members:
    """At most ``ESCAPE_SAMPLE`` particles of a class in its reference frame (spectra and coverage), their
    signal weights, the class's size, and the generator its check goes on drawing from."""

    spectra: NDArray[np.complex64]
    coverage: NDArray[np.float32]
    signal: NDArray[np.float64]
    class_size: int
    rng: np.random.Generator

    def band_sample(
        self, move: RigidMove | None = None, signal: NDArray[np.float64] | None = None
    ) -> ClassSample:
        """The particles on the components of their signal weights (or of ``signal``), moved by ``move``
        if given."""
        signal = self.signal if signal is None else signal
        if move is None:
            return ClassSample.of(self.spectra, self.coverage, self.class_size, signal)
        moved = AlignedClass.turn(self.spectra, self.coverage, move, signal)
        return ClassSample.of(moved.turned, moved.turned_coverage, self.class_size, signal)


def _class_samples(
    data: SubtomogramSet, params: MLParams, setup: _Setup, state: MLState, dispatch: _Dispatch
) -> dict[int, _Members]:
    """The :class:`_Members` of every class of at least ``ESCAPE_MIN_PARTICLES``."""
    particles = state.stats.particles
    poses = state.grid.matrices[particles.orientations]
    samples = {}
    for k in range(state.n_classes):
        rng = _rng(params, state.iteration, 3, k)
        members = np.flatnonzero(particles.classes == k)
        if len(members) < ESCAPE_MIN_PARTICLES:
            continue
        class_size = len(members)
        if len(members) > ESCAPE_SAMPLE:
            members = np.sort(rng.choice(members, ESCAPE_SAMPLE, replace=False))
        subset = SubtomogramSet(data.volumes[members], data.regions, data.region_index[members])
        shared = [poses[members], particles.shifts_px[members], subset.region_index, setup]
        parts = _map_chunks(_spread_particles, subset, params, shared, dispatch, f"trap check, class {k + 1}")
        spectra = np.concatenate([part[0].astype(np.complex64) for part in parts])
        coverage = np.concatenate([part[1].astype(np.float32) for part in parts])
        samples[k] = _Members(spectra, coverage, signal_weights(spectra, coverage), class_size, rng)
    return samples


def _regroup(state: MLState, samples: dict[int, _Members], params: MLParams) -> tuple[int, int, int] | None:
    """``(split, spare, kept)`` if splitting class ``split`` gains more, on held-out particles, than
    merging ``spare`` into ``kept`` loses (a class too small to check costs nothing to merge), else None."""
    if state.n_classes < 3:
        return None
    rng = _rng(params, state.iteration, 4)
    gains = {k: split_gain(sample.band_sample(), rng) for k, sample in samples.items()}
    split = max(gains, key=gains.__getitem__, default=None)
    if split is None or gains[split] <= 0:
        return None
    small = [k for k in range(state.n_classes) if k not in samples]
    if small:
        return split, small[0], small[0]
    losses = {}
    for kept, spare in combinations([k for k in samples if k != split], 2):
        move = superposition(
            state.references[kept], state.references[spare], state.grid.matrices, params.ang_deg
        )
        # the kept class's particles go through the same resampling, by the identity, and both classes
        # are compared on the same components
        identity = RigidMove(np.eye(3), np.zeros(3))
        signal = (samples[kept].signal + samples[spare].signal) / 2
        first, second = samples[kept].band_sample(identity, signal), samples[spare].band_sample(move, signal)
        losses[kept, spare] = merge_loss(first, second, rng)
    kept, spare = min(losses, key=losses.__getitem__)
    if losses[kept, spare] >= gains[split]:
        return None
    if samples[spare].class_size > samples[kept].class_size:
        kept, spare = spare, kept
    return split, spare, kept


def _apply_regroup(
    state: MLState,
    samples: dict[int, _Members],
    regrouped: tuple[int, int, int],
    params: MLParams,
    setup: _Setup,
) -> MLState:
    """Class ``split`` and ``spare`` take the averages of ``split``'s two groups and share its fraction;
    ``kept`` takes ``spare``'s fraction (the next E-step gives it ``spare``'s particles)."""
    split, spare, kept = regrouped
    spectra, coverage = samples[split].spectra, samples[split].coverage
    groups = split_groups(samples[split].band_sample())
    references = np.array(state.references, copy=True)
    for target, rows in ((split, ~groups), (spare, groups)):
        sums = spectra[rows].sum(axis=0, dtype=np.complex128), coverage[rows].sum(axis=0, dtype=np.float64)
        references[target] = _weighted_average(*sums, params, setup)
    fractions = np.array(state.fractions, copy=True)
    if kept != spare:
        fractions[kept] += fractions[spare]
    fractions[[split, spare]] = fractions[split] / 2
    return replace(state, references=references, fractions=fractions / fractions.sum(), regrouped=regrouped)


# ----------------------------------------------------------------------------------------------
# one iteration


def _grids(
    params: MLParams, iteration: int, coarsening: float = 1.0
) -> tuple[OrientationGrid, OrientationGrid]:
    """This iteration's grid (perturbed with ``--perturb``) and the same grid unperturbed, at ``coarsening``
    times the angular steps (the perturbation is the iteration's, whatever the steps)."""
    psi = params.psi_sampling_deg
    base = orientation_grid(
        params.ang_deg * coarsening,
        None if psi is None else psi * coarsening,
        params.tilt0_deg,
        params.tiltf_deg,
        params.small_angle,
        params.symmetry_group,
    )
    if not params.perturb:
        return base, base
    return perturb_grid(base, perturbation_matrix(_rng(params, iteration, 2), params.ang_deg)), base


def _neighbourhood_frame(grid: OrientationGrid, symmetry: NDArray[np.float64]) -> NDArray[np.float64]:
    """The angles in which neighbourhoods on ``grid`` are found: its own, or under a point group those of
    the transposed matrices (whose directions span the asymmetric unit)."""
    return grid.angles_deg if len(symmetry) == 1 else matrix_to_euler(np.swapaxes(grid.matrices, 1, 2))


def _estep_on_subset(
    chunk: ParticleChunk,
    allowed: NDArray[np.bool_],
    references: NDArray[np.float64],
    grid: OrientationGrid,
    masks: NDArray[np.bool_],
    model: EStepModel,
) -> SufficientStats:
    """:func:`estep_chunk` of ``chunk`` on the orientations of ``grid`` it is ``allowed``
    (``(n, len(grid))``), with a bank of only the orientations some particle takes; orientations are
    reported as ``grid``'s."""
    used = np.nonzero(allowed.any(axis=0))[0]
    bank = ReferenceBank(references, grid.matrices[used], masks)
    stats = estep_chunk(replace(chunk, allowed=allowed[:, used]), bank, model)
    return _with_particles(stats, orientations=used[stats.particles.orientations])


#: An adaptive search refines, for each particle, the coarse orientations that hold this much of its
#: coarse posterior, and at least its ``ADAPTIVE_PEAKS`` best: the coarse posterior of a 20-degree grid is
#: nearly one-hot, yet the best fine orientation lay next to the 2nd to 6th best coarse one for 6 of 30
#: near-symmetric particles at SNR 0.5.
ADAPTIVE_MASS = 0.999
ADAPTIVE_PEAKS = 8
#: The fine orientations refined around a coarse peak: direction and psi within this many coarse steps (a
#: fine orientation is at most about 0.6 coarse steps from the nearest coarse one).
ADAPTIVE_REACH = 0.75


@dataclass(frozen=True)
class _AdaptiveSearch:
    """``--adaptive``: each chunk scores every orientation of a grid of twice the angular steps, then the
    ``--ang`` grid only near each particle's coarse peaks (``ADAPTIVE_MASS``, ``ADAPTIVE_PEAKS``; "near"
    is :func:`_adaptive_reach`). The orientation prior stays uniform over the whole ``--ang`` grid
    (orientations not scored keep their share of it), so a particle's posterior is the exhaustive one
    without the mass far from its coarse peaks.
    """

    references: NDArray[np.float64]
    grid: OrientationGrid
    coarse: OrientationGrid
    reach: sparse.csr_matrix  # (len(coarse), len(grid)) bool

    def allowed(self, chunk: ParticleChunk, masks: NDArray[np.bool_], model: EStepModel) -> NDArray[np.bool_]:
        """The coarse pass: ``(n, len(grid))``, the fine orientations each particle of ``chunk`` is scored
        against."""
        bank = ReferenceBank(self.references, self.coarse.matrices, masks)
        log_mass = orientation_log_masses(chunk, bank, model)
        posterior = np.exp(log_mass - logsumexp(log_mass, axis=1, keepdims=True))
        peaks = _holding_mass(posterior, ADAPTIVE_MASS)
        best = np.argsort(-log_mass, axis=1)[:, :ADAPTIVE_PEAKS]
        np.put_along_axis(peaks, best, True, axis=1)
        return (sparse.csr_matrix(peaks, dtype=np.int32) @ self.reach).toarray() > 0

    def estep(self, chunk: ParticleChunk, masks: NDArray[np.bool_], model: EStepModel) -> SufficientStats:
        """:func:`estep_chunk` on the fine orientations near each particle's coarse peaks."""
        counted = replace(chunk, orientation_count=np.full(len(chunk), float(len(self.grid))))
        allowed = self.allowed(chunk, masks, model)
        return _estep_on_subset(counted, allowed, self.references, self.grid, masks, model)


@functools.lru_cache(maxsize=2)
def _adaptive_reach(params: MLParams) -> sparse.csr_matrix:
    """``(n_coarse, n_fine)``: the orientations of the ``--ang`` grid within ``ADAPTIVE_REACH`` coarse
    steps of each orientation of the coarse grid (direction, and psi in coarse psi steps), or of one of its
    symmetry copies, and of the nearest one; found once per run on the unperturbed grids (both take the
    same perturbation)."""
    (_, fine), (_, coarse) = _grids(params, 0), _grids(params, 0, 2.0)
    group = params.symmetry_group
    frame = _neighbourhood_frame(fine, group)
    if len(group) == 1:
        centres = coarse.angles_deg[:, None]
    else:
        copies = orientation_copies(coarse.matrices, group)
        centres = matrix_to_euler(np.swapaxes(copies, -1, -2))  # (n_coarse, G, 3)
    psi_step = params.ang_deg if params.psi_sampling_deg is None else params.psi_sampling_deg
    reach, psi_reach = (ADAPTIVE_REACH * 2.0 * step for step in (params.ang_deg, psi_step))
    blocks = []
    for block in np.array_split(centres, max(1, len(centres) // 16)):
        near = local_neighbourhoods(frame, block.reshape(-1, 3), reach, psi_range_deg=psi_reach)
        blocks.append(sparse.csr_matrix(near.reshape(len(block), -1, len(fine)).any(axis=1), dtype=np.int32))
    # and every fine orientation joins its nearest coarse one (near the poles, or in a seam between
    # the copies of the coarse grid, that one can lie outside the direction and psi ranges)
    copies = orientation_copies(coarse.matrices, group).reshape(-1, 9)  # (n_coarse * G, 9)
    nearest = np.concatenate(
        [
            (block.reshape(-1, 9) @ copies.T).argmax(axis=1) // len(group)  # largest trace(C^T F)
            for block in np.array_split(fine.matrices, max(1, len(fine) // 512))
        ]
    )
    own = sparse.csr_matrix(
        (np.ones(len(fine), np.int32), (nearest, np.arange(len(fine)))), shape=(len(coarse), len(fine))
    )
    reached = sparse.vstack(blocks, format="csr") + own
    reached.data[:] = 1
    return reached


def _holding_mass(posterior: NDArray[np.float64], mass: float) -> NDArray[np.bool_]:
    """Per row of ``posterior``, the fewest entries whose sum reaches ``mass`` of the row's: ``(n, m)``."""
    order = np.argsort(-posterior, axis=1)
    ranked = np.take_along_axis(posterior, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked
    held = np.zeros(posterior.shape, dtype=bool)
    np.put_along_axis(held, order, before < mass * ranked.sum(axis=1, keepdims=True), axis=1)
    return held


@dataclass(frozen=True)
class _RestrictedSearch:
    """Orientations scored particle by particle, when not every particle meets the whole grid.

    With ``centres`` (``--ang_search``) a particle takes the grid orientations near its metadata angles
    or near any of their symmetry copies (:func:`~napari_mltomo.core.sampling.local_neighbourhoods` on
    the unperturbed grid, so a perturbation moves a neighbourhood but does not change it; under a
    point group directions and psi are compared on the transposed matrices, whose directions span the
    asymmetric unit). Without (``--dont_rotate``, ``--dont_align``) the grid is the particles' metadata
    orientations and each takes its own. Each chunk's bank holds only the orientations its particles
    take.
    """

    references: NDArray[np.float64]
    grid: OrientationGrid
    neighbourhood_angles: NDArray[np.float64]
    centres: NDArray[np.float64] | None = None
    search_deg: float = 0.0
    limit_psi: bool = True
    symmetry: NDArray[np.float64] = field(default_factory=lambda: np.eye(3)[None])

    def allowed(self, indices: NDArray[np.intp]) -> NDArray[np.bool_]:
        """``(len(indices), len(grid))``: the orientations each particle of ``indices`` takes."""
        if self.centres is None:
            return indices[:, None] == np.arange(len(self.grid))[None, :]
        centres = self.centres[indices]
        if len(self.symmetry) > 1:
            copies = orientation_copies(euler_to_matrix(*centres.T), self.symmetry)
            centres = matrix_to_euler(np.swapaxes(copies, -1, -2)).reshape(-1, 3)
        near = local_neighbourhoods(self.neighbourhood_angles, centres, self.search_deg, self.limit_psi)
        return near.reshape(len(indices), -1, len(self.grid)).any(axis=1)

    def particle_order(self) -> NDArray[np.intp]:
        """The particles ordered so that neighbours in orientation share chunks (and so each rotated
        reference is built for few chunks): by nearest grid direction, then psi."""
        if self.centres is None:
            return np.arange(len(self.grid))
        centres = self.centres
        if len(self.symmetry) > 1:  # compared in the frame of the transposed matrices
            centres = matrix_to_euler(np.swapaxes(euler_to_matrix(*centres.T), -1, -2))
        return orientation_order(centres, self.search_deg)

    def estep(self, chunk: ParticleChunk, masks: NDArray[np.bool_], model: EStepModel) -> SufficientStats:
        """:func:`estep_chunk` against a bank of the orientations the chunk takes."""
        return _estep_on_subset(chunk, self.allowed(chunk.indices), self.references, self.grid, masks, model)


#: What an E-step task scores its chunk against.
_Search = ReferenceBank | _RestrictedSearch | _AdaptiveSearch


def _with_particles(stats: SufficientStats, **changes: Any) -> SufficientStats:
    return replace(stats, particles=replace(stats.particles, **changes))


def _focused_references(state: MLState, setup: _Setup) -> NDArray[np.float64]:
    """The references the E-step compares with: times ``--mask`` if given."""
    return state.references if setup.focus_mask is None else state.references * setup.focus_mask


def _search(
    data: SubtomogramSet, params: MLParams, setup: _Setup, references: NDArray[np.float64], iteration: int
) -> tuple[OrientationGrid, _Search]:
    """This iteration's orientations: a bank of the whole grid, or an adaptive or restricted search."""
    if params.global_search and not params.adaptive:
        grid, _ = _grids(params, iteration)
        return grid, ReferenceBank(references, grid.matrices, setup.masks)
    group = params.symmetry_group
    if params.global_search:
        (grid, _), (coarse, _) = _grids(params, iteration), _grids(params, iteration, 2.0)
        return grid, _AdaptiveSearch(references, grid, coarse, _adaptive_reach(params))
    assert data.angles_deg is not None  # _check_metadata_poses
    if params.dont_rotate or params.dont_align:  # each particle at its own metadata orientation
        grid = OrientationGrid(data.angles_deg, euler_to_matrix(*data.angles_deg.T))
        return grid, _RestrictedSearch(references, grid, grid.angles_deg)
    grid, base = _grids(params, iteration)
    frame = _neighbourhood_frame(base, group)
    search = _RestrictedSearch(
        references, grid, frame, data.angles_deg, params.ang_search_deg, params.limit_psi, group
    )
    return grid, search


def _focused(
    spectra: NDArray[np.complex64],
    matrices: NDArray[np.float64],
    region_index: NDArray[np.intp],
    setup: _Setup,
) -> NDArray[np.complex64]:
    """Aligned particle spectra times ``--mask`` turned into each particle's frame (``mask(A q)``),
    observed regions re-imposed."""
    assert setup.focus_mask is not None
    volumes = sfft.irfftn(spectra, s=(setup.size,) * 3, axes=AXES3)
    for row, matrix in enumerate(matrices):
        volumes[row] *= rotate_volumes(setup.focus_mask[None], matrix.T)[0]
    return (sfft.rfftn(volumes, axes=AXES3) * setup.masks[region_index]).astype(np.complex64)


def _estep_task(
    volumes: ArrayLike,
    indices: NDArray[np.intp],
    halves: NDArray[np.intp],
    region_index: NDArray[np.intp],
    setup: _Setup,
    search: _Search,
    model: EStepModel,
    fixed_shifts: NDArray[np.float64] | None,
) -> SufficientStats:
    """The E-step of one chunk; ``fixed_shifts`` (``--dont_align``, internal pixels) are applied to the
    particles first and added to the shifts found."""
    spectra = _observed_particles(volumes, indices, region_index, setup)
    if fixed_shifts is not None:
        spectra *= shift_phases(fixed_shifts[indices], setup.size).astype(np.complex64)
    if setup.focus_mask is not None:
        assert isinstance(search, _RestrictedSearch)  # --mask comes with --dont_align
        spectra = _focused(spectra, search.grid.matrices[indices], region_index[indices], setup)
    chunk = ParticleChunk(indices, spectra, region_index[indices], halves[indices])
    if isinstance(search, ReferenceBank):
        return estep_chunk(chunk, search, model)
    stats = search.estep(chunk, setup.masks, model)
    if fixed_shifts is None:
        return stats
    return _with_particles(stats, shifts_px=stats.particles.shifts_px + fixed_shifts[indices])


def _iterate(
    data: SubtomogramSet,
    params: MLParams,
    setup: _Setup,
    state: MLState,
    iteration: int,
    dispatch: _Dispatch,
    stage: str,
    temperature: float = 1.0,
    *,
    exact: bool = True,
) -> MLState:
    """One EM iteration (``stage`` names it in progress reports); ``temperature > 1`` flattens the
    posteriors (likelihoods to the power ``1/T``). ``exact=False`` is the start-up's reference update
    (see :func:`_maximise`)."""
    grid, search = _search(data, params, setup, _focused_references(state, setup), iteration)
    log_prior, shift_sq = translation_log_prior(
        setup.size,
        0.0 if params.dont_align else state.sigma_offset_px,
        params.limit_trans_px * setup.scale if params.limit_trans_px >= 0 else -1.0,
    )
    with np.errstate(divide="ignore"):
        log_fractions = np.log(state.fractions)
    model = EStepModel(
        log_fractions=log_fractions,
        sigma_noise=state.sigma_noise * np.sqrt(temperature),
        log_prior=log_prior,
        shift_sq=shift_sq,
        regions=data.regions,
        within_resolution=setup.within_resolution,
        significance=params.significance,
        max_cc=params.max_cc,
    )
    halves = _rng(params, iteration, 1).integers(0, 2, size=len(data))
    fixed_shifts = _metadata_shifts(data, params) * setup.scale if params.dont_align else None
    shared = [halves, data.region_index, setup, search, model, fixed_shifts]
    order = search.particle_order() if isinstance(search, _RestrictedSearch) else None
    stats = _sum_chunks(_estep_task, data, params, shared, dispatch, stage, order=order)
    return _maximise(data, params, setup, state, stats, grid, iteration, exact=exact)


def _maximise(
    data: SubtomogramSet,
    params: MLParams,
    setup: _Setup,
    state: MLState,
    stats: SufficientStats,
    grid: OrientationGrid,
    iteration: int,
    *,
    exact: bool = True,
) -> MLState:
    """The M-step. With ``exact`` the references take the exact EM update (the likelihood never falls);
    the start-up uses the coverage in place of the model sums (``H A ~ W A``), which leaves the imputed
    components as blurred as the rotations make them: a smoothing that keeps the annealed search from
    locking classes onto noise (without it one class of three was lost on the demo data). With
    ``--dont_impute`` every update is the thresholded weighted average of the observed components."""
    weights = stats.class_weights
    old_spectra = sfft.rfftn(state.references, axes=AXES3)
    coverage = stats.coverage.sum(axis=0)
    if params.dont_impute or params.correlation_only:
        spectra = thresholded_average(stats.sums.sum(axis=0), coverage, params.noimp_threshold)
    else:
        spectra = impute_references(
            old_spectra,
            stats.sums.sum(axis=0),
            stats.model_sums if exact else coverage * old_spectra,
            coverage,
            weights,
            params.impute_iter,
        )
    fractions = state.fractions if params.fix_fractions else update_fractions(weights)
    fixed_offset = params.fix_sigma_offset or params.dont_align or params.correlation_only
    sigma_offset = state.sigma_offset_px if fixed_offset else update_offset(stats)
    sigma = state.sigma_noise
    if params.fix_sigma_noise or params.correlation_only:
        pass
    elif params.dont_impute:
        sigma = sigma_noise_without_imputation(stats)
    else:
        sigma = update_sigma_noise(sigma, stats, setup.observed_per_particle, params.impute_iter)
    curves = class_fsc(stats.sums, stats.coverage)
    shells = np.array([resolution_from_fsc(c) for c in curves])
    if params.filter_references:
        spectra = resolution_filter(spectra, shells, setup.scale)
    references = setup.finish(spectra)
    unregularised = None
    if params.regularisation(iteration) > 0:
        unregularised = references
        references, variance_increase = _regularised(references, fractions, len(data), params, iteration)
        if not params.fix_sigma_noise:
            sigma = float(np.sqrt(sigma**2 + variance_increase))
    change = signal_change(state.references, references)
    return MLState(
        iteration=iteration,
        references=references,
        fractions=fractions,
        sigma_noise=sigma,
        sigma_offset_px=sigma_offset,
        scale=setup.scale,
        grid=grid,
        stats=stats,
        fsc=curves,
        resolution_shell=shells,
        signal_change=change,
        unregularised=unregularised,
        converged=bool(np.all(change[fractions > 0] <= params.eps)),
    )
