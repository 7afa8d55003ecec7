"""What the E-step produces: each particle's best pose and likelihood (:class:`ParticleResults`) and the
additive statistics the M-step reads (:class:`SufficientStats`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ParticleResults", "SufficientStats"]


@dataclass(frozen=True)
class ParticleResults:
    """Per-particle outcome of an E-step (rows in the order of ``indices``)."""

    indices: NDArray[np.intp]
    classes: NDArray[np.intp]
    orientations: NDArray[np.intp]
    shifts_px: NDArray[np.float64]  # (n, 3) x, y, z in internal pixels: particle(q) = ref(A(q + s))
    pmax: NDArray[np.float64]
    log_likelihood: NDArray[np.float64]

    @classmethod
    def concatenate(cls, parts: list[ParticleResults]) -> ParticleResults:
        """Rows of several results, sorted by particle index."""
        merged = {
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in (
                "indices",
                "classes",
                "orientations",
                "shifts_px",
                "pmax",
                "log_likelihood",
            )
        }
        order = np.argsort(merged["indices"], kind="stable")
        return cls(**{name: values[order] for name, values in merged.items()})


@dataclass(frozen=True)
class SufficientStats:
    """Additive statistics of an E-step; chunks combine with ``+``.

    Attributes
    ----------
    sums : (2, K, N, N, N//2+1) ndarray of complex128
        Per half set and class, the spectrum of the weighted sum of aligned particles (reference frame),
        taken by the exact adjoint of the bank's rotation.
    model_sums : (K, N, N, N//2+1) ndarray of complex128
        Per class, the same sum with each particle replaced by the current reference as that particle
        sees it (rotated, masked): ``sums - model_sums`` is the gradient of the likelihood's bound.
    coverage : (2, K, N, N, N//2+1) ndarray of float64
        Per half set and class, the weighted sum of rotated observed-region masks.
    class_weights : (K,) ndarray of float64
        Posterior mass of each class (significant pairs).
    noise_sum, offset_sum, pmax_sum, log_likelihood : float
        ``sum_i 2 E[d]``, ``sum_i E[|t|**2]``, ``sum_i Pmax_i`` and ``sum_i LL_i``.
    observed_components : float
        ``sum_i n_m(i)``: observed Fourier components of the particles (full grid, particle frame).
    particles : ParticleResults
    """

    sums: NDArray[np.complex128]
    model_sums: NDArray[np.complex128]
    coverage: NDArray[np.float64]
    class_weights: NDArray[np.float64]
    noise_sum: float
    offset_sum: float
    pmax_sum: float
    log_likelihood: float
    observed_components: float
    particles: ParticleResults

    def __add__(self, other: SufficientStats) -> SufficientStats:
        return SufficientStats(
            sums=self.sums + other.sums,
            model_sums=self.model_sums + other.model_sums,
            coverage=self.coverage + other.coverage,
            class_weights=self.class_weights + other.class_weights,
            noise_sum=self.noise_sum + other.noise_sum,
            offset_sum=self.offset_sum + other.offset_sum,
            pmax_sum=self.pmax_sum + other.pmax_sum,
            log_likelihood=self.log_likelihood + other.log_likelihood,
            observed_components=self.observed_components + other.observed_components,
            particles=ParticleResults.concatenate([self.particles, other.particles]),
        )

    @property
    def n_particles(self) -> int:
        """Number of particles summed."""
        return len(self.particles.indices)
