"""The refinement driver: start-up, EM iterations and convergence, as a generator of states.

``iter_refine`` yields an :class:`MLState` for each step of the annealed start-up (``--escape``), one
for the starting references (iteration ``istart - 1``) and one after every iteration; the command line
writes each iteration's state to disk, and stopping the iteration cancels the run. The E-step runs as
one dask task per chunk of particles whose statistics are added up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from .chunks import ChunkExecutor, ChunkProgress, ConstantParticles, Dispatch, NonFiniteParticles
from .iteration import iterate
from .params import MLParams, ParameterError
from .setup import check_start, internal_size, make_setup
from .stages import best_poses, next_stage, stage_inputs
from .startup import annealed_startup, only_average, prepare_references, starting_state
from .state import MLState, StartModel, SubtomogramSet
from .traps import ESCAPE_CHECKS, escape_traps

__all__ = [
    "ChunkProgress",
    "ConstantParticles",
    "MLState",
    "NonFiniteParticles",
    "StartModel",
    "SubtomogramSet",
    "check_start",
    "internal_size",
    "iter_refine",
    "prepare_references",
    "run_refine",
]


def iter_refine(
    data: SubtomogramSet,
    params: MLParams,
    start: StartModel | None = None,
    *,
    executor: ChunkExecutor | None = None,
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
        ``start.iteration`` is the last iteration already done (restart); nothing follows a
        ``start.converged`` model.
    executor : ChunkExecutor, optional
        Runs the chunk tasks (``params.threads`` local threads if omitted; ``napari_mltomo.compute``
        has one for a dask.distributed cluster).
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
    NonFiniteParticles
        From the first pass over the particles, if any has a NaN or Inf voxel (its indices).
    ConstantParticles
        At the end of the first pass over the particles, if every one is constant (no signal).
    """
    dispatch = Dispatch(executor, on_chunk)
    setup = make_setup(data, params)
    _check_metadata_poses(data, params)
    searching = params.escape > 0 and params.global_search and not (params.keep_angles or params.max_cc)
    checking = searching and len(params.symmetry_group) == 1  # a group's own turns are no trap
    if start is None and searching and params.max_iter > 0:
        start = yield from annealed_startup(data, params, setup, dispatch)
    if params.only_average:
        yield only_average(data, params, setup, dispatch)
        return
    if start is not None:
        check_start(start, params, setup.size)
    state = starting_state(data, params, setup, start, dispatch)
    yield state
    last = params.max_iter + params.istart - 1
    poses = None if start is None else start.poses_deg
    stage = next_stage(params, state, last)
    while stage is not None:
        iteration = state.iteration + 1
        poses = best_poses(state) if state.stats is not None else poses
        stage_data, stage_params = stage_inputs(data, params, stage, poses)
        label = f"iteration {iteration}" + ("" if stage_params is params else f" at {stage.step_deg:g} deg")
        changed = state.changed_classes
        state = iterate(stage_data, stage_params, setup, state, iteration, dispatch, label)
        if checking and iteration < last and iteration < params.istart + ESCAPE_CHECKS:
            state = escape_traps(data, params, setup, state, dispatch)
        elif checking and iteration < last and changed:  # look again at what the last check changed
            state = escape_traps(data, params, setup, state, dispatch, changed)
        if params.refine_to_deg is not None:
            state = replace(state, stage=stage)
        yield state
        stage = next_stage(params, state, last)


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
    executor: ChunkExecutor | None = None,
) -> MLState:
    """Blocking wrapper of :func:`iter_refine`; returns the last state."""
    state = None
    for state in iter_refine(data, params, start, executor=executor):
        if callback is not None:
            callback(state)
    assert state is not None
    return state
