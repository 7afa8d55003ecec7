"""The orientations an E-step scores: the whole grid, an adaptive coarse-to-fine search, or a search
restricted around metadata poses; and the E-step task of one chunk."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.special import logsumexp

from .estep import estep_chunk, orientation_log_masses
from .estep_inputs import EStepModel, ParticleChunk, ReferenceBank
from .fourier import AXES3, shift_phases
from .geometry import euler_to_matrix, matrix_to_euler, rotate_volumes
from .params import MLParams
from .sampling import (
    OrientationGrid,
    local_neighbourhoods,
    orientation_grid,
    orientation_order,
    perturb_grid,
    perturbation_matrix,
)
from .setup import Setup, observed_particles, seeded_rng
from .state import MLState, SubtomogramSet
from .stats import SufficientStats
from .symmetry import orientation_copies

__all__ = [
    "ADAPTIVE_MASS",
    "ADAPTIVE_PEAKS",
    "ADAPTIVE_REACH",
    "AdaptiveSearch",
    "RestrictedSearch",
    "Search",
    "adaptive_reach",
    "estep_task",
    "focused_references",
    "grids",
    "holding_mass",
    "iteration_search",
]


def grids(
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
    return perturb_grid(base, perturbation_matrix(seeded_rng(params, iteration, 2), params.ang_deg)), base


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
class AdaptiveSearch:
    """``--adaptive``: each chunk scores every orientation of a grid of twice the angular steps, then the
    ``--ang`` grid only near each particle's coarse peaks (``ADAPTIVE_MASS``, ``ADAPTIVE_PEAKS``; "near"
    is :func:`adaptive_reach`). The orientation prior stays uniform over the whole ``--ang`` grid
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
        peaks = holding_mass(posterior, ADAPTIVE_MASS)
        best = np.argsort(-log_mass, axis=1)[:, :ADAPTIVE_PEAKS]
        np.put_along_axis(peaks, best, True, axis=1)
        return (sparse.csr_matrix(peaks, dtype=np.int32) @ self.reach).toarray() > 0

    def estep(self, chunk: ParticleChunk, masks: NDArray[np.bool_], model: EStepModel) -> SufficientStats:
        """:func:`estep_chunk` on the fine orientations near each particle's coarse peaks."""
        counted = replace(chunk, orientation_count=np.full(len(chunk), float(len(self.grid))))
        allowed = self.allowed(chunk, masks, model)
        return _estep_on_subset(counted, allowed, self.references, self.grid, masks, model)


@functools.lru_cache(maxsize=2)
def adaptive_reach(params: MLParams) -> sparse.csr_matrix:
    """``(n_coarse, n_fine)``: the orientations of the ``--ang`` grid within ``ADAPTIVE_REACH`` coarse
    steps of each orientation of the coarse grid (direction, and psi in coarse psi steps), or of one of its
    symmetry copies, and of the nearest one; found once per run on the unperturbed grids (both take the
    same perturbation)."""
    (_, fine), (_, coarse) = grids(params, 0), grids(params, 0, 2.0)
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


def holding_mass(posterior: NDArray[np.float64], mass: float) -> NDArray[np.bool_]:
    """Per row of ``posterior``, the fewest entries whose sum reaches ``mass`` of the row's: ``(n, m)``."""
    order = np.argsort(-posterior, axis=1)
    ranked = np.take_along_axis(posterior, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked
    held = np.zeros(posterior.shape, dtype=bool)
    np.put_along_axis(held, order, before < mass * ranked.sum(axis=1, keepdims=True), axis=1)
    return held


@dataclass(frozen=True)
class RestrictedSearch:
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
Search = ReferenceBank | RestrictedSearch | AdaptiveSearch


def _with_particles(stats: SufficientStats, **changes: Any) -> SufficientStats:
    return replace(stats, particles=replace(stats.particles, **changes))


def focused_references(state: MLState, setup: Setup) -> NDArray[np.float64]:
    """The references the E-step compares with: times ``--mask`` if given."""
    return state.references if setup.focus_mask is None else state.references * setup.focus_mask


def iteration_search(
    data: SubtomogramSet,
    params: MLParams,
    setup: Setup,
    references: NDArray[np.float64],
    iteration: int,
    coarsening: float = 1.0,
) -> tuple[OrientationGrid, Search]:
    """This iteration's orientations: a bank of the whole grid (at ``coarsening`` times the angular
    steps), or an adaptive or restricted search."""
    if params.global_search and not params.adaptive:
        grid, _ = grids(params, iteration, coarsening)
        return grid, ReferenceBank(references, grid.matrices, setup.masks)
    group = params.symmetry_group
    if params.global_search:
        (grid, _), (coarse, _) = grids(params, iteration), grids(params, iteration, 2.0)
        return grid, AdaptiveSearch(references, grid, coarse, adaptive_reach(params))
    assert data.angles_deg is not None  # _check_metadata_poses
    if params.dont_rotate or params.dont_align:  # each particle at its own metadata orientation
        grid = OrientationGrid(data.angles_deg, euler_to_matrix(*data.angles_deg.T))
        return grid, RestrictedSearch(references, grid, grid.angles_deg)
    grid, base = grids(params, iteration)
    frame = _neighbourhood_frame(base, group)
    search = RestrictedSearch(
        references, grid, frame, data.angles_deg, params.ang_search_deg, params.limit_psi, group
    )
    return grid, search


def _focused(
    spectra: NDArray[np.complex64],
    matrices: NDArray[np.float64],
    region_index: NDArray[np.intp],
    setup: Setup,
) -> NDArray[np.complex64]:
    """Aligned particle spectra times ``--mask`` turned into each particle's frame (``mask(A q)``),
    observed regions re-imposed."""
    assert setup.focus_mask is not None
    volumes = sfft.irfftn(spectra, s=(setup.size,) * 3, axes=AXES3)
    for row, matrix in enumerate(matrices):
        volumes[row] *= rotate_volumes(setup.focus_mask[None], matrix.T)[0]
    return (sfft.rfftn(volumes, axes=AXES3) * setup.masks[region_index]).astype(np.complex64)


def estep_task(
    volumes: ArrayLike,
    indices: NDArray[np.intp],
    halves: NDArray[np.intp],
    region_index: NDArray[np.intp],
    setup: Setup,
    search: Search,
    model: EStepModel,
    fixed_shifts: NDArray[np.float64] | None,
) -> SufficientStats:
    """The E-step of one chunk; ``fixed_shifts`` (``--dont_align``, internal pixels) are applied to the
    particles first and added to the shifts found."""
    spectra = observed_particles(volumes, indices, region_index, setup)
    if fixed_shifts is not None:
        spectra *= shift_phases(fixed_shifts[indices], setup.size).astype(np.complex64)
    if setup.focus_mask is not None:
        assert isinstance(search, RestrictedSearch)  # --mask comes with --dont_align
        spectra = _focused(spectra, search.grid.matrices[indices], region_index[indices], setup)
    chunk = ParticleChunk(indices, spectra, region_index[indices], halves[indices])
    if isinstance(search, ReferenceBank):
        return estep_chunk(chunk, search, model)
    stats = search.estep(chunk, setup.masks, model)
    if fixed_shifts is None:
        return stats
    return _with_particles(stats, shifts_px=stats.particles.shifts_px + fixed_shifts[indices])
