"""Coarse-to-fine refinement (``--refine_to``): the schedule of steps and the local searches; the start-up's
grid."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import MLState, StartModel, iter_refine
from napari_mltomo.core.sampling import local_neighbourhoods, orientation_grid
from napari_mltomo.core.stages import STAGE_REACH, best_poses, next_stage, refinement_iterations
from napari_mltomo.core.startup import STARTUP_COARSE_TEMPERATURE
from napari_mltomo.core.state import SearchStage
from napari_mltomo.core.synthetic import make_dataset, orientation_errors_deg

PARAMS = MLParams(n_classes=2, max_iter=3, ang_deg=20.0, refine_to_deg=5.0)


def _state(
    iteration: int, stage: SearchStage | None, crossings: list[float], converged: bool = False
) -> MLState:
    """A state whose classes' FSC falls linearly through 0.5 at the given shells."""
    curves = 1.0 - 0.5 * np.arange(9) / np.array(crossings)[:, None]
    return MLState(
        iteration=iteration,
        references=np.zeros((2, 4, 4, 4)),
        fractions=np.full(2, 0.5),
        sigma_noise=1.0,
        sigma_offset_px=1.0,
        scale=1.0,
        fsc=curves,
        stage=stage,
        converged=converged,
    )


def test_the_steps_halve_after_the_last_iteration_at_ang_two_iterations_each_down_to_the_floor() -> None:
    assert next_stage(PARAMS, _state(2, SearchStage(20.0, 2), [4, 4]), 3) == SearchStage(20.0, 3)
    handover = next_stage(PARAMS, _state(3, SearchStage(20.0, 3), [4, 5]), 3)
    assert (handover.step_deg, handover.iteration) == (10.0, 1)
    np.testing.assert_array_equal(handover.start_resolution, [4, 5])
    second = next_stage(PARAMS, _state(4, handover, [5, 5]), 3)
    assert (second.step_deg, second.iteration) == (10.0, 2)
    finer = next_stage(PARAMS, _state(5, second, [5, 6]), 3)  # class 2 improved over the step
    assert (finer.step_deg, finer.iteration) == (5.0, 1)
    last = replace(finer, iteration=2)
    assert next_stage(PARAMS, _state(7, last, [6, 7]), 3) is None  # at --refine_to
    within_a_shell = replace(second, start_resolution=np.array([5.0, 6.0]))
    assert next_stage(PARAMS, _state(5, within_a_shell, [5.0, 6.3]), 3).step_deg == 5.0
    assert refinement_iterations(PARAMS) == 4
    assert refinement_iterations(replace(PARAMS, refine_to_deg=7.0)) == 4  # 20, 10, then 7
    assert refinement_iterations(replace(PARAMS, refine_to_deg=None)) == 0


def test_a_converged_search_at_ang_hands_over_and_a_step_that_improves_no_class_ends_the_run() -> None:
    converged = next_stage(PARAMS, _state(1, SearchStage(20.0, 1), [4, 4], converged=True), 3)
    assert converged.step_deg == 10.0
    stalled = SearchStage(10.0, 2, np.array([5, 6]))
    assert next_stage(PARAMS, _state(5, stalled, [5, 6]), 3) is None
    assert next_stage(replace(PARAMS, refine_to_deg=None), _state(3, None, [4, 4]), 3) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"refine_to_deg": 20.0}, "--refine_to must be above 0 and below --ang"),
        ({"refine_to_deg": 0.0}, "--refine_to must be above 0"),
        ({"refine_to_deg": 5.0, "dont_align": True}, "--refine_to needs an orientation search"),
    ],
)
def test_refine_to_refuses_what_it_cannot_do(fields: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        MLParams(ang_deg=20.0, **fields)


def test_local_steps_stay_near_the_poses_and_refine_them_below_the_coarse_step() -> None:
    """From the true references, the search at 30 degrees is limited by its grid (median pair error 23
    degrees); the local steps at 15 and 8 degrees keep each particle within their reach and more than
    halve the error (to 10)."""
    data = make_dataset(6, 2, 16, snr=5.0, max_shift_px=1, seed=3)
    params = MLParams(n_classes=2, max_iter=1, ang_deg=30.0, seed=1, refine_to_deg=8.0)
    start = StartModel(references=data.phantoms)
    states = [state for state in iter_refine(data.subtomograms(), params, start) if state.stats]
    steps = [(state.stage.step_deg, state.stage.iteration) for state in states]
    assert steps == [(30, 1), (15, 1), (15, 2), (8, 1), (8, 2)]
    for before, after in itertools.pairwise(states):
        reach = STAGE_REACH * after.stage.step_deg
        assert local_neighbourhoods(best_poses(after), best_poses(before), reach).diagonal().all()
    errors = [np.median(orientation_errors_deg(best_poses(s), data.angles_deg, data.classes)) for s in states]
    assert errors[0] > 20.0 and errors[-1] < min(12.0, errors[0] / 2), errors


def test_hot_startup_steps_search_a_grid_of_twice_the_step() -> None:
    data = make_dataset(3, 2, 16, snr=1.0, seed=1)
    params = MLParams(n_classes=2, max_iter=1, ang_deg=20.0, escape=3, seed=1)
    startup = []
    for state in iter_refine(data.subtomograms(), params):
        if not state.startup_step:
            break
        startup.append(state)
    hot = [state.temperature >= STARTUP_COARSE_TEMPERATURE for state in startup]
    assert hot == [True, False, False]
    expected = [len(orientation_grid(40.0 if is_hot else 20.0)) for is_hot in hot]
    assert [len(state.grid) for state in startup] == expected
