"""The E-step kernel: posteriors of one chunk of particles and their additive sufficient statistics.

Computation (see ``docs/engine.md``):

1. References are rotated into each orientation once per chunk of particles, one orientation batch
   at a time (:class:`~napari_mltomo.core.estep_inputs.ReferenceBank`), not once per particle.
2. Pass 1 correlates each particle with every rotated reference over all circular translations with
   one batched inverse real FFT per orientation batch (the maps centred on the zero translation, read
   only on the box of translations the prior allows), and summarises every correlation map by its
   log-mass, peak, mean residual and mean squared shift. A log-sum-exp over those summaries gives each
   particle's exact normaliser.
3. Pass 2 revisits only the (orientation, class) pairs whose peak is within ``significance`` of the
   particle's exact maximum, forms the weighted, shifted particle sums in Fourier space, adds them per
   (orientation, class, missing region, half set), and spreads each sum into the reference frame once,
   by the exact adjoint of the rotation that built the bank (:mod:`napari_mltomo.core.backward`).

This module holds the two entry points (:func:`estep_chunk`, :func:`orientation_log_masses`), pass 1, the
posterior weights pass 2 spreads and the ``--maxCC`` path. The correlation maps both passes are built on are
in :mod:`napari_mltomo.core.correlation_maps`, the E-step's inputs in :mod:`napari_mltomo.core.estep_inputs`
and its outputs in :mod:`napari_mltomo.core.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from .backward import WeightMaps, backward_pass
from .correlation_maps import centred_spectra, correlations, rotated_blocks
from .estep_inputs import EStepModel, ParticleChunk, ReferenceBank, RotatedReferences
from .fourier import AXES3
from .stats import ParticleResults, SufficientStats

__all__ = ["estep_chunk", "orientation_log_masses"]

_LOG_2PI = float(np.log(2.0 * np.pi))
#: Log-weights are raised to at least this, relative to a map's top (pass 1) or to the particle's
#: evidence (pass 2), so that ``exp`` never underflows: on underflowing values float32 ``exp`` ran 8x,
#: dot products 6x and FFTs 1.6x slower (subnormals). The mass this adds, at most
#: ``N**3 e**-80`` of the top weight, is far below float32 resolution.
LOG_WEIGHT_FLOOR = np.float32(-80.0)


@dataclass(frozen=True)
class _MapSummaries:
    """Per (particle, orientation, class) summaries of pass 1, shape ``(n, n_ang, K)`` each."""

    log_mass: NDArray[np.float64]
    peak: NDArray[np.float64]
    mean_residual: NDArray[np.float64]
    mean_shift_sq: NDArray[np.float64]
    best_shift: NDArray[np.intp]


def estep_chunk(chunk: ParticleChunk, bank: ReferenceBank, model: EStepModel) -> SufficientStats:
    """Expectation step for one chunk of particles against all orientations and classes.

    Parameters
    ----------
    chunk : ParticleChunk
    bank : ReferenceBank
        Rotated references of this iteration.
    model : EStepModel

    Returns
    -------
    SufficientStats
        Statistics that add over chunks; identical (to rounding) for any chunking.
    """
    allowed = chunk.allowed_in(bank)
    if model.max_cc:
        return _estep_max_cc(chunk, bank, model, allowed)
    log_orientations = chunk.log_orientation_counts(allowed)
    summaries = _summarise_maps(chunk, bank, model, allowed, log_orientations)
    log_norm = logsumexp(summaries.log_mass, axis=(1, 2))
    posterior = np.exp(summaries.log_mass - log_norm[:, None, None])
    peak_max = summaries.peak.max(axis=(1, 2))
    significant = summaries.peak >= peak_max[:, None, None] + np.log(model.significance)
    weights_at = _posterior_weights(chunk, bank, model, log_norm + log_orientations)
    sums, model_sums, coverage, class_weights = backward_pass(chunk, bank, model, significant, weights_at)
    results = _particle_results(chunk, model, summaries, log_norm, peak_max, bank.size)
    return SufficientStats(
        sums=sums,
        model_sums=model_sums,
        coverage=coverage,
        class_weights=class_weights,
        noise_sum=float(2.0 * np.sum(posterior * summaries.mean_residual)),
        offset_sum=float(np.sum(posterior * summaries.mean_shift_sq)),
        pmax_sum=float(results.pmax.sum()),
        log_likelihood=float(results.log_likelihood.sum()),
        observed_components=float(model.observed_counts[chunk.regions].sum()),
        particles=results,
    )


def orientation_log_masses(
    chunk: ParticleChunk, bank: ReferenceBank, model: EStepModel
) -> NDArray[np.float64]:
    """Log of each particle's joint probability mass in each orientation of the bank, classes and shifts
    summed out (the first pass of :func:`estep_chunk` alone), ``(n, n_ang)``."""
    allowed = chunk.allowed_in(bank)
    log_orientations = chunk.log_orientation_counts(allowed)
    summaries = _summarise_maps(chunk, bank, model, allowed, log_orientations, means=False)
    return logsumexp(summaries.log_mass, axis=2)


def _half_power_sum(
    chunk: ParticleChunk, norms: NDArray[np.float64], rows: slice | NDArray[np.intp] = slice(None)
) -> NDArray[np.float64]:
    """``(a2_akm + xi_i) / 2`` for a batch's ``(b, K, R)`` norms: the residual of a zero correlation,
    shape ``(n_rows, b, K)``."""
    selected = norms[:, :, chunk.regions[rows]]  # (b, K, n_rows)
    return 0.5 * (np.moveaxis(selected, 2, 0) + chunk.power[rows, None, None])


def _log_weight_constant(
    half_sum: NDArray[np.float64], log_orientations: NDArray[np.float64], model: EStepModel
) -> NDArray[np.float64]:
    """``log alpha_k - log n_ang(i) - (a2 + xi) / (2 sigma**2)``: the log weight without the correlation
    (``log_orientations`` broadcasts against ``half_sum``)."""
    return model.log_fractions - log_orientations - half_sum / model.sigma_noise**2


def _summarise_maps(
    chunk: ParticleChunk,
    bank: ReferenceBank,
    model: EStepModel,
    allowed: NDArray[np.bool_],
    log_orientations: NDArray[np.float64],
    *,
    means: bool = True,
) -> _MapSummaries:
    """Pass 1: log-mass, peak, mean residual and mean |t|^2 of every allowed correlation map (log-mass
    and peak ``-inf``, the means 0, where not allowed; the means 0 everywhere without ``means``)."""
    shape = (len(chunk), len(bank), bank.n_classes)
    out = {name: np.zeros(shape) for name in ("log_mass", "peak", "mean_residual", "mean_shift_sq")}
    best_shift = np.zeros(shape, dtype=np.intp)
    window = model.translations
    centred = centred_spectra(chunk, model, bank.size)
    shift_sq = window.shift_sq.ravel()
    for rows, batch, rotated in rotated_blocks(bank, allowed):
        maps = correlations(centred[rows], rotated.conjugate_spectra, bank.size)[window.box]
        log_weights = (maps + window.log_prior).reshape(*maps.shape[:3], -1)  # correlations over sigma**2
        best = log_weights.argmax(axis=-1)
        best_shift[rows, batch] = window.circular_index[best]
        top = np.take_along_axis(log_weights, best[..., None], axis=-1)
        log_weights -= top
        np.maximum(log_weights, LOG_WEIGHT_FLOOR, out=log_weights)
        weights = np.exp(log_weights, out=log_weights)
        mass = weights.sum(axis=-1).astype(np.float64)
        top = top[..., 0].astype(np.float64)
        half_sum = _half_power_sum(chunk, rotated.norms, rows)
        constant = _log_weight_constant(half_sum, log_orientations[rows, None, None], model)
        out["log_mass"][rows, batch] = constant + top + np.log(mass)
        out["peak"][rows, batch] = constant + top
        if means:
            weighted_sum = np.einsum("...zyx,...zyx->...", weights.reshape(maps.shape), maps)
            out["mean_residual"][rows, batch] = half_sum - model.sigma_noise**2 * weighted_sum / mass
            out["mean_shift_sq"][rows, batch] = (weights @ shift_sq) / mass
    excluded = np.broadcast_to(~allowed[..., None], shape)
    for name, value in (
        ("log_mass", -np.inf),
        ("peak", -np.inf),
        ("mean_residual", 0.0),
        ("mean_shift_sq", 0.0),
    ):
        np.putmask(out[name], excluded, value)
    return _MapSummaries(**out, best_shift=best_shift)


def _particle_results(
    chunk: ParticleChunk,
    model: EStepModel,
    summaries: _MapSummaries,
    log_norm: NDArray[np.float64],
    peak_max: NDArray[np.float64],
    size: int,
) -> ParticleResults:
    n_classes = summaries.peak.shape[2]
    flat_best = summaries.peak.reshape(len(chunk), -1).argmax(axis=1)
    orientations, classes = np.divmod(flat_best, n_classes)
    shift_index = summaries.best_shift[np.arange(len(chunk)), orientations, classes]
    observed = model.observed_counts[chunk.regions]
    log_likelihood = log_norm - observed * (0.5 * _LOG_2PI + np.log(model.sigma_noise))
    return ParticleResults(
        indices=chunk.indices,
        classes=classes,
        orientations=orientations,
        shifts_px=_shifts_px(shift_index, size),
        pmax=np.exp(peak_max - log_norm),
        log_likelihood=log_likelihood,
    )


def _shifts_px(shift_index: NDArray[np.intp], size: int) -> NDArray[np.float64]:
    """``(n, 3)`` shifts ``s`` (x, y, z) of the flat correlation-map indices: ``particle(q) = ref(A(q + s))``
    for the circular translation ``t = -s`` of the map."""
    translation = (np.stack(np.unravel_index(shift_index, (size,) * 3), axis=1) + size // 2) % size
    return -(translation - size // 2)[:, ::-1].astype(np.float64)  # (z, y, x) -> (x, y, z)


def _posterior_weights(
    chunk: ParticleChunk, bank: ReferenceBank, model: EStepModel, log_evidence: NDArray[np.float64]
) -> WeightMaps:
    """The posterior weights of pass 2, recomputed from the correlation maps; ``log_evidence`` is each
    particle's log normaliser without the orientation prior."""
    window = model.translations
    centred = centred_spectra(chunk, model, bank.size)

    def weights_at(rows: NDArray[np.intp], rotated: RotatedReferences) -> NDArray[np.float32]:
        maps = correlations(centred[rows], rotated.conjugate_spectra, bank.size)[:, 0]
        half_sum = _half_power_sum(chunk, rotated.norms, rows)[:, 0]
        offset = _log_weight_constant(half_sum, 0.0, model) - log_evidence[rows, None]
        log_weights = maps[window.box] + window.log_prior
        top = log_weights.max(axis=AXES3)  # cancelled in float32 first, so that the offset added is small
        log_weights -= top[..., None, None, None]
        log_weights += (offset + top).astype(np.float32)[..., None, None, None]
        np.maximum(log_weights, LOG_WEIGHT_FLOOR, out=log_weights)
        weights = np.zeros_like(maps)
        weights[window.box] = np.exp(log_weights, out=log_weights)
        return np.fft.ifftshift(weights, axes=AXES3)

    return weights_at


def _estep_max_cc(
    chunk: ParticleChunk, bank: ReferenceBank, model: EStepModel, allowed: NDArray[np.bool_]
) -> SufficientStats:
    """The ``--maxCC`` E-step: every particle added with weight 1 at its best-correlated pose."""
    correlation, best_shift = _correlation_peaks(chunk, bank, model, allowed)
    n, n_classes = len(chunk), correlation.shape[2]
    orientations, classes = np.divmod(correlation.reshape(n, -1).argmax(axis=1), n_classes)
    rows = np.arange(n)
    shift_index = best_shift[rows, orientations, classes]
    significant = np.zeros(correlation.shape, dtype=bool)
    significant[rows, orientations, classes] = True

    def weights_at(members: NDArray[np.intp], rotated: RotatedReferences) -> NDArray[np.float32]:
        weights = np.zeros((len(members), n_classes, bank.size**3), dtype=np.float32)
        weights[np.arange(len(members)), classes[members], shift_index[members]] = 1.0
        return weights.reshape(len(members), n_classes, *(bank.size,) * 3)

    sums, model_sums, coverage, class_weights = backward_pass(chunk, bank, model, significant, weights_at)
    best = correlation[rows, orientations, classes]
    results = ParticleResults(
        chunk.indices, classes, orientations, _shifts_px(shift_index, bank.size), best, np.zeros(n)
    )
    return SufficientStats(
        sums=sums,
        model_sums=model_sums,
        coverage=coverage,
        class_weights=class_weights,
        noise_sum=0.0,
        offset_sum=0.0,
        pmax_sum=float(best.sum()),
        log_likelihood=0.0,
        observed_components=float(model.observed_counts[chunk.regions].sum()),
        particles=results,
    )


def _correlation_peaks(
    chunk: ParticleChunk, bank: ReferenceBank, model: EStepModel, allowed: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Highest normalised correlation ``CC(t) / sqrt(xi * a2)`` of every allowed map over the shifts the
    prior allows, and where it is: ``(n, n_ang, K)`` each (``-inf`` where not allowed, and for an empty
    reference or particle)."""
    shape = (len(chunk), len(bank), bank.n_classes)
    correlation = np.full(shape, -np.inf)
    best_shift = np.zeros(shape, dtype=np.intp)
    excluded = ~np.isfinite(model.log_prior.ravel())
    for rows, batch, rotated in rotated_blocks(bank, allowed):
        maps = correlations(chunk.spectra[rows], rotated.conjugate_spectra, bank.size)
        maps = maps.reshape(*maps.shape[:3], -1)
        maps[..., excluded] = -np.inf
        best = maps.argmax(axis=-1)
        best_shift[rows, batch] = best
        peak = np.take_along_axis(maps, best[..., None], axis=-1)[..., 0].astype(np.float64)
        norms = np.moveaxis(rotated.norms[:, :, chunk.regions[rows]], 2, 0)  # (r, b, K)
        scale = np.sqrt(norms * chunk.power[rows, None, None])
        correlation[rows, batch] = np.divide(peak, scale, out=np.full_like(peak, -np.inf), where=scale > 0)
    correlation[~allowed] = -np.inf
    return correlation, best_shift
