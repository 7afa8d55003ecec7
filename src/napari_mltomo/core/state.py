"""What the refinement works on and yields: the particles, a starting model, the state of each step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .missing import MissingRegion
from .params import ParameterError
from .sampling import OrientationGrid
from .stats import SufficientStats

__all__ = ["MLState", "SearchStage", "StartModel", "SubtomogramSet"]


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
class SearchStage:
    """The search that made a state (``--refine_to``): its angular step, which iteration at that step it
    was (from 1), and each class's FSC = 0.5 crossing (in fractional shells) before the step began (at the
    end of the previous step), by which the step is judged."""

    step_deg: float
    iteration: int = 1
    start_resolution: NDArray[np.float64] | None = None


@dataclass(frozen=True)
class StartModel:
    """A model to start from or continue: references at the internal size and scalar parameters.

    ``exact`` marks the exact model of a finished iteration (a restart point): it is taken as it is, not
    symmetrised, normalised or regularised again, so the run continues bit for bit. ``converged`` says that
    iteration had converged: the run ends with it (or goes on to a finer step with ``--refine_to``).
    ``stage`` is the search that made it and ``poses_deg`` the particles' best orientations, ``(n, 3)``,
    around which a finer step searches, judged against ``fsc``, the model's per-class FSC curves.
    ``escaped_classes`` and ``regrouped`` are what the trap escape changed after it (see :class:`MLState`),
    which the next iteration checks again.
    """

    references: NDArray[np.float64]
    fractions: NDArray[np.float64] | None = None
    sigma_noise: float | None = None
    sigma_offset_px: float | None = None  # internal pixels
    iteration: int = 0
    exact: bool = False
    converged: bool = False
    stage: SearchStage | None = None
    poses_deg: NDArray[np.float64] | None = None
    fsc: NDArray[np.float64] | None = None
    escaped_classes: tuple[int, ...] = ()
    regrouped: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class MLState:
    """The model after one iteration (or the starting model at ``iteration = istart - 1``).

    Internal sizes: references are ``(K, N, N, N)`` at the internal box size ``N``; ``scale = N / N0``.
    States of the low-resolution start have ``startup_step`` 1, 2, ... and the ``temperature`` of
    their posteriors; they are progress reports, not iterations of the run. ``escaped_classes`` are the
    classes whose references the trap escape replaced after this iteration's M-step; ``regrouped`` is
    ``(split, spare, kept)`` when it split class ``split`` into itself and ``spare``, whose particles
    go to ``kept`` (``spare`` itself when it was too small to check). ``stage`` is the search of a run
    with ``--refine_to`` that made the state.
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
    stage: SearchStage | None = None

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

    @property
    def changed_classes(self) -> tuple[int, ...]:
        """The classes the trap escape gave new references after this iteration (re-posed or split)."""
        split = () if self.regrouped is None else self.regrouped[:2]
        return tuple(sorted({*self.escaped_classes, *split}))

    def coverage(self) -> NDArray[np.float64] | None:
        """Per class, the observed-region coverage normalised by the class weight, ``(K, N, N, N//2+1)``."""
        if self.stats is None:
            return None
        weights = np.maximum(self.stats.class_weights, 1e-300)[:, None, None, None]
        return self.stats.coverage.sum(axis=0) / weights
