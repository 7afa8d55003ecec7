"""What is fixed for a whole run: the internal box, the resolution and missing-region masks, the seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
from numpy.typing import ArrayLike, NDArray

from .fourier import AXES3, fourier_rescale, resolution_masks
from .geometry import sphere_mask
from .missing import region_masks
from .mstep import full_grid_sum, postprocess
from .params import MLParams, ParameterError
from .state import StartModel, SubtomogramSet
from .symmetry import symmetrise

__all__ = [
    "Setup",
    "check_start",
    "internal_size",
    "make_setup",
    "metadata_shifts",
    "observed_particles",
    "seeded_rng",
    "uses_metadata_poses",
]


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
class Setup:
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


def make_setup(data: SubtomogramSet, params: MLParams) -> Setup:
    size = internal_size(data.box_size, params.dim)
    soft, within = resolution_masks(size, params.maxres)
    masks = region_masks(data.regions, size, within)[0]
    focus = None
    if data.focus_mask is not None:
        focus = np.clip(fourier_rescale(np.asarray(data.focus_mask, dtype=np.float32), size), 0.0, 1.0)
        focus = focus.astype(np.float64) * sphere_mask(size)
    return Setup(
        size,
        size / data.box_size,
        soft,
        within,
        masks,
        float(full_grid_sum(within)),
        focus,
        params.symmetry_group,
    )


def seeded_rng(params: MLParams, *keys: int) -> np.random.Generator:
    """A generator derived only from the seed and the given keys (iteration, purpose, ...)."""
    return np.random.default_rng([params.seed, *keys])


def observed_particles(
    volumes: ArrayLike, indices: NDArray[np.intp], region_index: NDArray[np.intp], setup: Setup
) -> NDArray[np.complex64]:
    """Half-grid spectra of particles at the internal size, times their observed-region masks."""
    volumes = fourier_rescale(np.asarray(volumes, dtype=np.float32), setup.size)
    spectra = sfft.rfftn(volumes, axes=AXES3) * setup.masks[region_index[indices]]
    return spectra.astype(np.complex64)


def uses_metadata_poses(params: MLParams) -> bool:
    """The starting averages take the metadata angles and shifts (``--keep_angles``, and every search
    around or at the metadata poses)."""
    return params.keep_angles or not params.global_search


def metadata_shifts(data: SubtomogramSet, params: MLParams) -> NDArray[np.float64]:
    if uses_metadata_poses(params) and data.shifts_px is not None:
        return np.asarray(data.shifts_px, dtype=np.float64)
    return np.zeros((len(data), 3))
