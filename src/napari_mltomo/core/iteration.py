"""One EM iteration: the E-step over every chunk of particles, then the M-step."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .chunks import Dispatch, sum_chunks
from .estep_inputs import EStepModel, translation_log_prior
from .fourier import AXES3, resolution_from_fsc
from .mstep import (
    class_fsc,
    impute_references,
    regularise,
    resolution_filter,
    sigma_noise_without_imputation,
    signal_change,
    thresholded_average,
    update_fractions,
    update_offset,
    update_sigma_noise,
)
from .params import MLParams
from .sampling import OrientationGrid
from .search import RestrictedSearch, estep_task, focused_references, iteration_search
from .setup import Setup, metadata_shifts, seeded_rng
from .state import MLState, SubtomogramSet
from .stats import SufficientStats

__all__ = ["iterate", "maximise", "regularised"]


def regularised(
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


def iterate(
    data: SubtomogramSet,
    params: MLParams,
    setup: Setup,
    state: MLState,
    iteration: int,
    dispatch: Dispatch,
    stage: str,
    temperature: float = 1.0,
    *,
    exact: bool = True,
    coarsening: float = 1.0,
) -> MLState:
    """One EM iteration (``stage`` names it in progress reports); ``temperature > 1`` flattens the
    posteriors (likelihoods to the power ``1/T``). ``exact=False`` is the start-up's reference update
    (see :func:`maximise`); a global search scores a grid of ``coarsening`` times the angular steps."""
    references = focused_references(state, setup)
    grid, search = iteration_search(data, params, setup, references, iteration, coarsening)
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
    halves = seeded_rng(params, iteration, 1).integers(0, 2, size=len(data))
    fixed_shifts = metadata_shifts(data, params) * setup.scale if params.dont_align else None
    shared = [halves, data.region_index, setup, search, model, fixed_shifts]
    order = search.particle_order() if isinstance(search, RestrictedSearch) else None
    stats = sum_chunks(estep_task, data, params, shared, dispatch, stage, order=order)
    return maximise(data, params, setup, state, stats, grid, iteration, exact=exact)


def maximise(
    data: SubtomogramSet,
    params: MLParams,
    setup: Setup,
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
        references, variance_increase = regularised(references, fractions, len(data), params, iteration)
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
