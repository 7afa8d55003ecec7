"""The starting model: random references, the annealed low-resolution start-up (``--escape``), user
maps (``--ref``) and ``--only_average``."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray

from .chunks import Dispatch, sum_chunks
from .fourier import AXES3, fourier_rescale, resolution_from_fsc, shift_phases
from .geometry import (
    backproject,
    euler_to_matrix,
    flatten_outside_sphere,
    fourier_stencil,
    oversampled_masks,
    oversampled_shape,
    rotate_masks,
)
from .iteration import iterate, maximise, regularised
from .mstep import class_fsc, full_grid_sum, resolution_filter, smooth_by_rotation, thresholded_average
from .params import ADAPTIVE_MAX_ANG, MLParams, ParameterError
from .sampling import OrientationGrid, random_orientations
from .setup import Setup, make_setup, metadata_shifts, observed_particles, seeded_rng, uses_metadata_poses
from .state import MLState, StartModel, SubtomogramSet
from .stats import ParticleResults, SufficientStats

__all__ = [
    "STARTUP_SIZE",
    "STARTUP_TEMPERATURE",
    "annealed_startup",
    "only_average",
    "prepare_references",
    "spread_particles",
    "starting_state",
    "weighted_average",
]


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


def starting_state(
    data: SubtomogramSet, params: MLParams, setup: Setup, start: StartModel | None, dispatch: Dispatch
) -> MLState:
    """The state of iteration ``istart - 1``: `start` completed with the defaults of `params` (symmetrised,
    fractions normalised, regularised by ``--reg0`` at iteration 0), or random references; an exact
    `start` (a restart point) as it is."""
    if start is not None and start.exact:
        return _restored_state(start, setup.scale)
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
        references, _ = regularised(references, fractions / fractions.sum(), len(data), params, 0)
    return MLState(
        iteration=start.iteration,
        references=references,
        fractions=fractions / fractions.sum(),
        sigma_noise=float(sigma),
        sigma_offset_px=float(offset),
        scale=setup.scale,
        unregularised=unregularised,
    )


def _restored_state(start: StartModel, scale: float) -> MLState:
    """The state a restart point holds, bit for bit."""
    assert start.fractions is not None and start.sigma_noise is not None and start.sigma_offset_px is not None
    return MLState(
        iteration=start.iteration,
        references=start.references,
        fractions=start.fractions,
        sigma_noise=start.sigma_noise,
        sigma_offset_px=start.sigma_offset_px,
        scale=scale,
        converged=start.converged,
        stage=start.stage,
        fsc=start.fsc,
        escaped_classes=start.escaped_classes,
        regrouped=start.regrouped,
    )


#: Internal box of the annealed start-up steps (17 for odd boxes), and the temperature of their posteriors at
#: the first step (tuned at this box: about half the particles' posterior mass off their best pose).
STARTUP_SIZE = 16
STARTUP_TEMPERATURE = 30.0
#: Steps at least this hot (the first two of five) search a grid of twice the angular steps (an eighth of
#: the orientations; when ``--ang`` is at most ``ADAPTIVE_MAX_ANG``, which that grid needs): their
#: posteriors are wider than its spacing. Making the third step (temperature 5.5) coarse as well saved
#: more time but left the demo's poses worse (docs/engine.md).
STARTUP_COARSE_TEMPERATURE = 10.0


def annealed_startup(
    data: SubtomogramSet, params: MLParams, setup: Setup, dispatch: Dispatch
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
    low_setup = make_setup(data, low)
    state = starting_state(data, low, low_setup, None, dispatch)
    steps = params.escape
    for step in range(1, steps + 1):
        temperature = STARTUP_TEMPERATURE ** ((steps - step) / max(steps - 1, 1))
        stage = f"start-up step {step}"
        doubled = temperature >= STARTUP_COARSE_TEMPERATURE and low.ang_deg <= ADAPTIVE_MAX_ANG
        coarse = 2.0 if doubled else 1.0
        state = iterate(
            data, low, low_setup, state, step, dispatch, stage, temperature, exact=False, coarsening=coarse
        )
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
    data: SubtomogramSet, params: MLParams, setup: Setup, dispatch: Dispatch
) -> NDArray[np.float64]:
    """Weighted averages of random subsets of particles in random (or metadata) orientations."""
    rng = seeded_rng(params, 0, 0)
    n = len(data)
    if n < params.n_classes:
        raise ParameterError(f"--nref {params.n_classes} exceeds the number of particles ({n})")
    classes = np.empty(n, dtype=np.intp)
    classes[rng.permutation(n)] = np.arange(n) * params.n_classes // n  # near-equal random subsets
    halves = rng.integers(0, 2, size=n)
    if uses_metadata_poses(params) and data.angles_deg is not None:
        angles = data.angles_deg
    else:
        angles = random_orientations(rng, n)
    matrices = euler_to_matrix(*angles.T)
    shifts = metadata_shifts(data, params) * setup.scale
    shared = [classes, halves, matrices, shifts, data.region_index, setup, params.n_classes]
    sums, coverage = sum_chunks(
        _average_chunk, data, params, shared, dispatch, "starting references", add=_add_pairs
    )
    spectra = thresholded_average(sums.sum(axis=0), coverage.sum(axis=0), params.noimp_threshold)
    if params.filter_initial:
        shells = np.array([resolution_from_fsc(curve) for curve in class_fsc(sums, coverage)])
        spectra = resolution_filter(spectra, shells, setup.scale)
    return setup.finish(spectra)


def only_average(data: SubtomogramSet, params: MLParams, setup: Setup, dispatch: Dispatch) -> MLState:
    """``--only_average``: each class the average of its particles at their metadata poses, with the
    observed-region masks summed (not the last one kept), in one iteration from empty references."""
    n, n_classes = len(data), params.n_classes
    classes = np.zeros(n, dtype=np.intp) if data.classes is None else np.asarray(data.classes)
    assert data.angles_deg is not None  # _check_metadata_poses
    grid = OrientationGrid(data.angles_deg, euler_to_matrix(*data.angles_deg.T))
    halves = seeded_rng(params, params.istart, 1).integers(0, 2, size=n)
    shifts = metadata_shifts(data, params) * setup.scale
    shared = [classes, halves, grid.matrices, shifts, data.region_index, setup, n_classes]
    stage = f"iteration {params.istart}"
    sums, coverage = sum_chunks(_average_chunk, data, params, shared, dispatch, stage, add=_add_pairs)
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
    return replace(maximise(data, params, setup, empty, stats, grid, params.istart), converged=True)


def weighted_average(
    sums: NDArray[np.complexfloating], coverage: NDArray[np.floating], params: MLParams, setup: Setup
) -> NDArray[np.float64]:
    """The post-processed volume ``S / W`` of aligned particles, 0 where ``W <= --noimp_threshold``."""
    return setup.finish(thresholded_average(sums, coverage, params.noimp_threshold))


def _average_chunk(
    volumes: ArrayLike,
    indices: NDArray[np.intp],
    classes: NDArray[np.intp],
    halves: NDArray[np.intp],
    matrices: NDArray[np.float64],
    shifts: NDArray[np.float64],
    region_index: NDArray[np.intp],
    setup: Setup,
    n_classes: int,
) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Spectra of the sums of the chunk's particles aligned by the given transforms, per half and class,
    and the sums of their rotated observed-region masks (see :func:`spread_particles`)."""
    targets = (halves[indices] * n_classes + classes[indices], 2 * n_classes)
    sums, coverage = spread_particles(volumes, indices, matrices, shifts, region_index, setup, targets)
    shape = (2, n_classes, *setup.masks.shape[1:])
    return sums.reshape(shape), coverage.reshape(shape)


def _add_pairs(first: tuple[Any, Any], second: tuple[Any, Any]) -> tuple[Any, Any]:
    """``first + second`` element by element, for :func:`sum_chunks` of :func:`_average_chunk`."""
    return first[0] + second[0], first[1] + second[1]


def spread_particles(
    volumes: ArrayLike,
    indices: NDArray[np.intp],
    matrices: NDArray[np.float64],
    shifts: NDArray[np.float64],
    region_index: NDArray[np.intp],
    setup: Setup,
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
    spectra = observed_particles(volumes, indices, region_index, setup)
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
