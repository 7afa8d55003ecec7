"""Refinements on synthetic data with known classes and orientations, and the M-step formulas."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import scipy.fft as sfft

from napari_mltomo.core.fourier import fourier_rescale, frequency_radius, resolution_masks
from napari_mltomo.core.mstep import (
    impute_references,
    postprocess,
    regularise,
    resolution_filter,
    thresholded_average,
    update_offset,
    update_sigma_noise,
)
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import (
    ChunkProgress,
    MLState,
    StartModel,
    iter_refine,
    run_refine,
)
from napari_mltomo.core.startup import STARTUP_SIZE, STARTUP_TEMPERATURE
from napari_mltomo.core.stats import ParticleResults, SufficientStats
from napari_mltomo.core.synthetic import adjusted_rand_index, make_dataset, orientation_errors_deg

SIZE = 16


@pytest.fixture(scope="module")
def three_classes():
    """30 particles of 3 classes, box 32, +-60 wedge, shifts up to 2 voxels."""
    return make_dataset(10, 3, 32, snr=2.0, max_shift_px=2, seed=4)


def _scores(state: MLState, data) -> tuple[float, float]:
    particles = state.stats.particles
    angles = state.grid.angles_deg[particles.orientations]
    errors = orientation_errors_deg(angles, data.angles_deg, data.classes)
    return adjusted_rand_index(data.classes, particles.classes), float(np.median(errors))


def test_refinement_from_noisy_true_references_recovers_classes_orientations_and_noise(three_classes) -> None:
    data = three_classes
    rng = np.random.default_rng(0)
    references = fourier_rescale(data.phantoms, SIZE).astype(np.float64)
    references += rng.normal(scale=0.25 * references.std(), size=references.shape)
    params = MLParams(n_classes=3, max_iter=2, ang_deg=20.0, dim=SIZE, threads=2, chunk_size=8, seed=1)
    state = run_refine(data.subtomograms(), params, StartModel(references=references))
    ari, median_error = _scores(state, data)
    assert ari == 1.0
    assert median_error <= 20.0  # the angular step
    np.testing.assert_allclose(state.fractions, 1 / 3, atol=0.01)
    assert np.all(state.resolution_shell >= 3)  # FSC between halves well above chance (Nyquist is 8)
    # The references end up closer to the truth than where they started.
    truth = fourier_rescale(data.phantoms, SIZE).astype(np.float64)
    before = [np.corrcoef(references[k].ravel(), truth[k].ravel())[0, 1] for k in range(3)]
    after = [np.corrcoef(state.references[k].ravel(), truth[k].ravel())[0, 1] for k in range(3)]
    assert min(after) > 0.9 and all(a > b for a, b in zip(after, before, strict=True))


def test_reference_free_alignment_of_one_class_finds_the_poses() -> None:
    """The start-up and 3 iterations (13.1, 12.8 and 12.4 degrees; 8 iterations end at 12.4)."""
    data = make_dataset(30, 1, 32, snr=2.0, max_shift_px=2, seed=2)
    params = MLParams(n_classes=1, max_iter=3, ang_deg=20.0, dim=SIZE, threads=2, chunk_size=8, seed=2)
    state = run_refine(data.subtomograms(), params)
    _, median_error = _scores(state, data)
    assert median_error <= 20.0


def test_refinement_is_deterministic_and_independent_of_chunking(three_classes) -> None:
    data = three_classes
    params = MLParams(
        n_classes=2, max_iter=2, ang_deg=30.0, dim=SIZE, escape=2, threads=1, chunk_size=30, seed=7
    )
    first = run_refine(data.subtomograms(), params)
    second = run_refine(data.subtomograms(), replace(params, chunk_size=7, threads=2))
    np.testing.assert_allclose(first.references, second.references, rtol=1e-6, atol=1e-9)
    assert first.log_likelihood == pytest.approx(second.log_likelihood, rel=1e-9)
    other_seed = run_refine(data.subtomograms(), replace(params, seed=8))
    assert not np.allclose(first.references, other_seed.references)


def test_generator_yields_start_then_each_iteration_and_stops_when_converged(three_classes) -> None:
    params = MLParams(n_classes=1, max_iter=3, ang_deg=40.0, dim=SIZE, eps=100.0, escape=0, seed=0)
    states = list(iter_refine(three_classes.subtomograms(), params))
    assert [s.iteration for s in states] == [0, 1]  # eps = 100 converges after the first iteration
    assert states[0].stats is None and states[1].converged


def test_every_chunk_of_every_pass_is_reported(three_classes) -> None:
    data = three_classes.subtomograms()
    params = MLParams(n_classes=1, max_iter=2, ang_deg=40.0, dim=SIZE, escape=2, seed=0, chunk_size=4)
    events: list[ChunkProgress] = []
    list(iter_refine(data, params, on_chunk=events.append))
    total = -(-len(data) // 4)
    stages = [
        "starting references",
        "start-up step 1",
        "start-up step 2",
        "iteration 1",
        "trap check, class 1",  # the one class's particles, after the first iteration
        "iteration 2",
    ]
    assert [event.stage for event in events] == [stage for stage in stages for _ in range(total)]
    assert [event.done for event in events] == list(range(1, total + 1)) * len(stages)
    assert {event.total for event in events} == {total}


@pytest.mark.parametrize(
    ("references", "fractions", "expected"),
    [
        (np.zeros((2, SIZE, SIZE, SIZE)), None, "holds 2 references of 16 voxels"),
        (np.zeros((1, 12, 12, 12)), None, "holds 1 references of 12 voxels"),
        (np.zeros((1, SIZE, SIZE, SIZE)), np.array([0.5, 0.5]), "2 class fractions for 1 classes"),
    ],
)
def test_a_start_that_does_not_fit_the_run_is_refused(three_classes, references, fractions, expected) -> None:
    params = MLParams(n_classes=1, max_iter=1, ang_deg=40.0, dim=SIZE, seed=0)
    start = StartModel(references=references, fractions=fractions)
    with pytest.raises(ParameterError, match=expected):
        next(iter_refine(three_classes.subtomograms(), params, start))


class _Cancelled(Exception):
    pass


def test_raising_from_the_progress_callback_cancels_between_chunks(three_classes) -> None:
    params = MLParams(n_classes=1, max_iter=3, ang_deg=40.0, dim=SIZE, escape=0, seed=0, chunk_size=4)
    events: list[ChunkProgress] = []
    states: list[MLState] = []

    def cancel_in_iteration_1(event: ChunkProgress) -> None:
        events.append(event)
        if event.stage == "iteration 1":
            raise _Cancelled

    with pytest.raises(_Cancelled):
        states.extend(iter_refine(three_classes.subtomograms(), params, on_chunk=cancel_in_iteration_1))
    assert [state.iteration for state in states] == [0]
    assert [event.stage for event in events][-1] == "iteration 1"
    assert sum(event.stage == "iteration 1" for event in events) == 1


def test_refinement_never_imports_napari_or_qt() -> None:
    code = (
        "import sys, numpy as np\n"
        "from napari_mltomo.core.synthetic import make_dataset\n"
        "from napari_mltomo.core.params import MLParams\n"
        "from napari_mltomo.core.refine import SubtomogramSet, run_refine\n"
        "d = make_dataset(2, 1, 16, seed=0)\n"
        "run_refine(SubtomogramSet(d.volumes), MLParams(max_iter=1, ang_deg=40.0))\n"
        "bad = {'napari', 'qtpy', 'PyQt6', 'magicgui', 'vispy'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parameters_name_the_option_in_errors() -> None:
    with pytest.raises(ParameterError, match="--ang"):
        MLParams(ang_deg=50.0)
    with pytest.raises(ParameterError, match="--regF"):
        MLParams(reg0=1.0, regf=2.0)
    with pytest.raises(ParameterError, match="--frac"):
        MLParams(n_classes=2, fractions=(1.0,))


# ---------------------------------------------------------------------------------------------
# M-step formulas


def _stats(**fields) -> SufficientStats:
    n = fields.pop("n", 4)
    particles = ParticleResults(
        indices=np.arange(n),
        classes=np.zeros(n, int),
        orientations=np.zeros(n, int),
        shifts_px=np.zeros((n, 3)),
        pmax=np.ones(n),
        log_likelihood=np.zeros(n),
    )
    defaults = dict(
        sums=np.zeros((2, 1, 4, 4, 3), complex),
        model_sums=np.zeros((1, 4, 4, 3), complex),
        coverage=np.zeros((2, 1, 4, 4, 3)),
        class_weights=np.ones(1) * n,
        noise_sum=0.0,
        offset_sum=0.0,
        pmax_sum=float(n),
        log_likelihood=0.0,
        observed_components=0.0,
    )
    return SufficientStats(**{**defaults, **fields}, particles=particles)


def test_imputation_keeps_missing_components_and_averages_observed_ones() -> None:
    old = np.full((1, 2, 2, 2), 5.0 + 0j)
    sums = np.full((1, 2, 2, 2), 12.0 + 0j)  # 4 particles seeing value 3 where observed
    coverage = np.zeros((1, 2, 2, 2))
    coverage[0, 0] = 4.0  # first plane seen by all 4 particles, second plane by none
    sums[0, 1] = 0.0
    model_sums = coverage * old  # exact rotations: the particles see the reference where observed
    new = impute_references(old, sums, model_sums, coverage, np.array([4.0]))
    np.testing.assert_allclose(new[0, 0], 3.0)
    np.testing.assert_allclose(new[0, 1], 5.0)
    # A class without weight keeps its reference.
    np.testing.assert_allclose(impute_references(old, sums, model_sums, coverage, np.array([0.0])), old)


def test_repeated_imputation_tends_to_the_observed_average() -> None:
    """Components seen by half the particles reach ``S / W`` as ``--impute_iter`` grows."""
    old = np.full((1, 2, 2, 2), 5.0 + 0j)
    coverage = np.full((1, 2, 2, 2), 2.0)
    sums = coverage * 3.0 + 0j
    once = impute_references(old, sums, coverage * old, coverage, np.array([4.0]))
    many = impute_references(old, sums, coverage * old, coverage, np.array([4.0]), impute_iter=40)
    np.testing.assert_allclose(once, 4.0)
    np.testing.assert_allclose(many, 3.0, rtol=1e-9)


def test_sigma_update_with_full_coverage_is_mean_residual() -> None:
    n, components = 4, 48.0  # 48 components within the resolution limit, all observed
    stats = _stats(n=n, observed_components=n * components, noise_sum=n * components * 0.25)
    assert update_sigma_noise(7.0, stats, components) == pytest.approx(0.5)
    # Half of them observed: the missing half keeps the old variance (imputation).
    half = _stats(n=n, observed_components=n * components / 2, noise_sum=n * components / 2 * 0.25)
    assert update_sigma_noise(1.0, half, components) ** 2 == pytest.approx(0.5 * 1.0 + 0.5 * 0.25)


def test_offset_update_uses_three_degrees_of_freedom() -> None:
    stats = _stats(n=10, offset_sum=10 * 3 * 2.0**2)  # E|t|^2 = 3 sigma^2 with sigma = 2
    assert update_offset(stats) == pytest.approx(2.0)


def test_regularisation_pulls_towards_the_mean() -> None:
    spectra = np.stack([np.full((2, 2, 2), 1.0 + 0j), np.full((2, 2, 2), 3.0 + 0j)])
    pulled, increase = regularise(spectra, np.array([0.5, 0.5]), n_images=10, strength=1.0)
    # mu = 1 * 10 / 2 = 5, n_k = 5: (5 * 1 + 5 * 4) / (5 + 10) = 5/3
    np.testing.assert_allclose(pulled[0], 5 / 3)
    np.testing.assert_allclose(pulled[1], 35 / 15)
    assert increase > 0
    same, zero = regularise(spectra[:1], np.array([1.0]), n_images=10, strength=1.0)
    assert zero == 0.0 and np.allclose(same, spectra[:1])


@pytest.mark.slow
def test_loglikelihood_does_not_fall_from_the_true_references_without_shifts() -> None:
    """EM cannot lower the likelihood: from the true references (fixed offset prior, no perturbation, no
    regularisation) it never falls, also once it has nearly converged; this needs the reference update
    to spread the sums by the exact transpose of the bank's rotation."""
    data = make_dataset(10, 3, 32, snr=0.5, max_shift_px=0, seed=4)
    references = fourier_rescale(data.phantoms, SIZE).astype(np.float64)
    params = MLParams(
        n_classes=3,
        max_iter=6,
        ang_deg=20.0,
        dim=SIZE,
        eps=0.0,
        fix_sigma_offset=True,
        threads=2,
        chunk_size=16,
        seed=1,
    )
    states = list(iter_refine(data.subtomograms(), params, StartModel(references=references)))
    values = np.array([state.log_likelihood for state in states[1:]])
    assert np.all(np.diff(values) >= -1e-6 * np.abs(values[:-1])), values


def test_startup_anneals_at_a_small_box_and_hands_over_at_full_size() -> None:
    data = make_dataset(4, 2, 24, snr=1.0, seed=1)
    params = MLParams(n_classes=2, max_iter=1, ang_deg=40.0, escape=3, seed=1)
    states = list(iter_refine(data.subtomograms(), params))
    startup = states[:3]
    assert [state.startup_step for state in startup] == [1, 2, 3]
    assert [state.size for state in startup] == [STARTUP_SIZE] * 3
    temperatures = [state.temperature for state in startup]
    np.testing.assert_allclose(temperatures, [STARTUP_TEMPERATURE, STARTUP_TEMPERATURE**0.5, 1.0])
    assert startup[0].mean_pmax < startup[2].mean_pmax  # soft posteriors first
    assert [(state.startup_step, state.iteration, state.size) for state in states[3:]] == [
        (0, 0, 24),
        (0, 1, 24),
    ]


def test_startup_is_skipped_when_turned_off_or_given_references(three_classes) -> None:
    params = MLParams(n_classes=3, max_iter=1, ang_deg=40.0, dim=SIZE, seed=1)
    references = fourier_rescale(three_classes.phantoms, SIZE).astype(np.float64)
    given = list(iter_refine(three_classes.subtomograms(), params, StartModel(references=references)))
    off = list(iter_refine(three_classes.subtomograms(), replace(params, escape=0)))
    no_iterations = list(iter_refine(three_classes.subtomograms(), replace(params, max_iter=0)))
    assert [state.iteration for state in given] == [0, 1] == [state.iteration for state in off]
    assert [(state.iteration, state.startup_step) for state in no_iterations] == [(0, 0)]


def test_startup_updates_references_with_the_coverage_and_iterations_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The start-up takes ``W A`` for the model sums (a smoothing that keeps the annealed search off noise);
    the iterations take the exact model sums, whose update never lowers the likelihood."""
    import napari_mltomo.core.iteration as refine

    calls: list[bool] = []
    update = refine.impute_references

    def recorded(old, sums, model_sums, coverage, *args):
        calls.append(np.allclose(model_sums, coverage * old))
        return update(old, sums, model_sums, coverage, *args)

    monkeypatch.setattr(refine, "impute_references", recorded)
    data = make_dataset(4, 2, 24, snr=1.0, seed=1)
    list(iter_refine(data.subtomograms(), MLParams(n_classes=2, max_iter=2, ang_deg=40.0, escape=2, seed=1)))
    assert calls == [True, True, False, False]


def test_thresholded_average_divides_where_the_coverage_exceeds_the_threshold() -> None:
    sums = np.array([2.0, 3.0, 4.0, 1.0]) + 0j
    coverage = np.array([2.0, 0.5, 4.0, 1.0])
    np.testing.assert_allclose(thresholded_average(sums, coverage, 1.0), [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(thresholded_average(sums, coverage, 0.25), [1.0, 6.0, 1.0, 1.0])


def test_dont_impute_takes_the_thresholded_weighted_average_and_the_observed_noise(three_classes) -> None:
    """``--dont_impute``: each reference is ``S / W`` where ``W > --noimp_threshold`` and 0 elsewhere (not
    the imputed update, which keeps the old reference where few particles looked), and sigma^2 is the mean
    squared residual over the observed components only."""
    data = three_classes.subtomograms()
    params = MLParams(n_classes=3, max_iter=1, ang_deg=40.0, escape=0, dim=SIZE, noimp_threshold=2.0, seed=1)
    imputed, averaged = (
        list(iter_refine(data, replace(params, dont_impute=flag)))[-1] for flag in (False, True)
    )
    stats = averaged.stats
    expected = thresholded_average(stats.sums.sum(axis=0), stats.coverage.sum(axis=0), 2.0)
    soft_mask = resolution_masks(SIZE, params.maxres)[0]
    np.testing.assert_allclose(averaged.references, postprocess(expected, soft_mask), atol=1e-9)
    assert np.abs(imputed.references - averaged.references).max() > 0.1 * np.abs(averaged.references).max()
    assert averaged.sigma_noise == pytest.approx(np.sqrt(stats.noise_sum / stats.observed_components))


def test_resolution_filter_is_a_raised_cosine_beyond_the_shell() -> None:
    size = 16
    radius = frequency_radius(size) / size
    filtered = resolution_filter(np.ones((1, size, size, size // 2 + 1)), np.array([4]), scale=1.0)[0].real
    np.testing.assert_allclose(filtered[radius <= 0.25], 1.0)
    np.testing.assert_allclose(filtered[radius >= 0.27], 0.0, atol=1e-12)
    edge = (radius > 0.25) & (radius < 0.27)
    np.testing.assert_allclose(filtered[edge], 0.5 * (1 + np.cos(np.pi * (radius[edge] - 0.25) / 0.02)))


def _power_beyond(references: np.ndarray, shells: np.ndarray) -> float:
    """Power of the references' components more than one shell beyond each one's ``shells``."""
    spectra = sfft.rfftn(references, axes=(1, 2, 3))
    radius = frequency_radius(references.shape[-1])
    return float(sum(np.sum(np.abs(s[radius > r + 1.5]) ** 2) for s, r in zip(spectra, shells, strict=True)))


@pytest.mark.parametrize("option", ["filter_references", "filter_initial"])
def test_filters_remove_the_power_beyond_the_resolution(option: str) -> None:
    """``--filter`` low-passes the references of every iteration at their FSC = 0.5 shell and
    ``--ini_filter`` the starting averages at that of their random halves."""
    data = make_dataset(12, 2, 32, snr=0.5, seed=2)
    params = MLParams(n_classes=2, max_iter=1, ang_deg=40.0, escape=0, dim=SIZE, seed=1)
    plain, filtered = (
        list(iter_refine(data.subtomograms(), replace(params, **{option: on}))) for on in (0, 1)
    )
    if option == "filter_references":
        shells = filtered[-1].resolution_shell
        before, after = plain[-1].references, filtered[-1].references
    else:  # random halves in random orientations agree only at low shells: compare beyond shell 3.5
        shells = np.full(2, 2)
        before, after = plain[0].references, filtered[0].references
    assert shells.max() < SIZE // 2 - 3  # a band is left to filter
    # the rest is the flattening outside the sphere, done in real space after the filter
    assert _power_beyond(after, shells) < 0.25 * _power_beyond(before, shells)


def test_starting_sigma_is_the_noise_of_the_down_scaled_box(three_classes) -> None:
    """The original kept --noise unchanged with --dim; the per-voxel noise of a box down-scaled by f is
    sigma f^1.5 (white noise keeps its power per Fourier component)."""
    params = MLParams(n_classes=3, max_iter=1, dim=SIZE, noise_sigma=2.0, escape=0, seed=1)
    start = next(iter_refine(three_classes.subtomograms(), params))
    assert start.sigma_noise == pytest.approx(2.0 * (SIZE / 32) ** 1.5)
