"""Coarse-to-fine refinement (``--refine_to``): after the search at ``--ang``, local searches around each
particle's pose at half the step, then half again, down to ``--refine_to``.

Which search the next iteration runs depends only on the last state (:func:`next_stage`), so a run
restarted from any iteration continues as it would have.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from .fourier import fsc_crossing
from .params import MLParams
from .state import MLState, SearchStage, SubtomogramSet

__all__ = [
    "STAGE_ITERATIONS",
    "STAGE_REACH",
    "best_poses",
    "last_iteration",
    "next_stage",
    "refinement_iterations",
    "stage_inputs",
]

#: Iterations at each finer step: the first moves the poses onto the finer grid, the second refines them
#: against the sharper references the first made.
STAGE_ITERATIONS = 2
#: The local search reaches this many (finer) steps around each particle's pose: 1.5 steps of the grid
#: the pose was found on, beyond the 0.6 step a grid point can lie from the true pose.
STAGE_REACH = 3.0


def next_stage(params: MLParams, state: MLState, last: int) -> SearchStage | None:
    """The search of the iteration after `state`, or None when the run is over.

    The search at ``--ang`` runs until iteration `last` or convergence. With ``--refine_to`` each finer
    step (half the previous, not below ``--refine_to``) then runs ``STAGE_ITERATIONS`` iterations (fewer
    if they converge), and the next step follows only if some class's FSC = 0.5 crossing moved out over
    the step.
    """
    stage = state.stage or SearchStage(params.ang_deg, state.iteration - params.istart + 1)
    if stage.step_deg == params.ang_deg:
        if state.iteration < last and not state.converged:
            return SearchStage(params.ang_deg, stage.iteration + 1)
        if params.refine_to_deg is None or state.fsc is None:
            return None
        return SearchStage(_finer(params.ang_deg, params.refine_to_deg), 1, _resolutions(state))
    if stage.iteration < STAGE_ITERATIONS and not state.converged:
        return replace(stage, iteration=stage.iteration + 1)
    assert params.refine_to_deg is not None
    resolutions = _resolutions(state)
    improved = stage.start_resolution is None or np.any(resolutions > stage.start_resolution)
    if stage.step_deg <= params.refine_to_deg or not improved:
        return None
    return SearchStage(_finer(stage.step_deg, params.refine_to_deg), 1, resolutions)


def _resolutions(state: MLState) -> NDArray[np.float64]:
    """Each class's FSC = 0.5 crossing in (fractional) shells: a step that moves it by less than a shell
    still counts as an improvement."""
    assert state.fsc is not None
    return np.array([fsc_crossing(curve) for curve in state.fsc])


def refinement_iterations(params: MLParams) -> int:
    """The most iterations ``--refine_to`` adds after the last at ``--ang``."""
    if params.refine_to_deg is None:
        return 0
    steps, step = 0, params.ang_deg
    while step > params.refine_to_deg:
        step, steps = _finer(step, params.refine_to_deg), steps + 1
    return STAGE_ITERATIONS * steps


def last_iteration(params: MLParams) -> int:
    """The number of the last iteration a run may reach: ``--iter`` from ``--istart``, and the finer steps."""
    return params.istart + params.max_iter - 1 + refinement_iterations(params)


def _finer(step_deg: float, floor_deg: float) -> float:
    return max(step_deg / 2.0, floor_deg)


def stage_inputs(
    data: SubtomogramSet, params: MLParams, stage: SearchStage, poses_deg: NDArray[np.float64] | None
) -> tuple[SubtomogramSet, MLParams]:
    """The particles and parameters an iteration of `stage` runs with: as given at ``--ang``; at a finer
    step, a local search (``--ang_search`` of ``STAGE_REACH`` steps) around `poses_deg` whose references
    are low-passed at their FSC = 0.5 resolution (``--filter``).

    Unfiltered, a reference holds each particle's own noise at the pose it was added in, beyond the
    resolution as strongly as the signal within it; the local search then keeps particles where they were.
    On 90 particles of three proteins (plain wedge, SNR 0.5, started from the true averages) the two
    smaller proteins stayed at 14.8 and 12.1 degrees median pair error at the 10-degree step; filtered,
    they went to 8.3 and 7.8 at 10 degrees and 4.4 and 3.9 at 5.
    """
    if stage.step_deg == params.ang_deg:
        return data, params
    assert poses_deg is not None
    ratio = stage.step_deg / params.ang_deg
    psi = params.psi_sampling_deg
    local = replace(
        params,
        ang_deg=stage.step_deg,
        psi_sampling_deg=None if psi is None else psi * ratio,
        ang_search_deg=STAGE_REACH * stage.step_deg,
        adaptive=False,
        refine_to_deg=None,
        filter_references=True,
    )
    return replace(data, angles_deg=poses_deg), local


def best_poses(state: MLState) -> NDArray[np.float64] | None:
    """Each particle's most probable orientation ``(n, 3)`` (rot, tilt, psi) in the state's grid, in
    data-set order; None before the first E-step."""
    if state.stats is None or state.grid is None:
        return None
    particles = state.stats.particles
    return state.grid.angles_deg[particles.orientations[np.argsort(particles.indices, kind="stable")]]
