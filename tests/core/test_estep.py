"""The E-step: exact posteriors, chunk- and thread-invariant statistics, correct backward pass."""

from __future__ import annotations

import functools
import operator
from dataclasses import replace

import dask
import numpy as np
import pytest
import scipy.fft as sfft
from scipy.special import logsumexp

from napari_mltomo.core.estep import estep_chunk
from napari_mltomo.core.estep_inputs import EStepModel, ParticleChunk, ReferenceBank, translation_log_prior
from napari_mltomo.core.fourier import fourier_rescale, resolution_masks
from napari_mltomo.core.geometry import euler_to_matrix, rotate_volumes
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.sampling import orientation_grid
from napari_mltomo.core.stats import SufficientStats
from napari_mltomo.core.synthetic import adjusted_rand_index, make_dataset, make_phantoms

SIZE = 16


def _build_problem(size: int, max_shift_px: int = 0) -> dict:
    """12 particles of 3 classes (a box of about ``2 size``, of the same parity, down-scaled to ``size``),
    the true references and a 30-degree grid."""
    big = 2 * size + size % 2
    data = make_dataset(4, 3, big, snr=2.0, max_shift_px=max_shift_px, seed=3)
    _, within = resolution_masks(size, 0.5)
    log_prior, shift_sq = translation_log_prior(size, 1.5)
    model = EStepModel(
        log_fractions=np.log(np.full(3, 1 / 3)),
        sigma_noise=(size / big) ** 1.5,
        log_prior=log_prior,
        shift_sq=shift_sq,
        regions=(data.region,),
        within_resolution=within,
    )
    references = fourier_rescale(data.phantoms, size).astype(np.float64)
    grid = orientation_grid(30.0)
    bank = ReferenceBank(references, grid.matrices, model.region_masks)
    spectra = sfft.rfftn(fourier_rescale(data.volumes, size), axes=(-3, -2, -1)) * model.region_masks[0]
    n = len(data.volumes)
    halves = np.random.default_rng(0).integers(0, 2, n)
    chunk = ParticleChunk(np.arange(n), spectra.astype(np.complex64), np.zeros(n, int), halves)
    return {"data": data, "model": model, "bank": bank, "grid": grid, "chunk": chunk}


@pytest.fixture(scope="module")
def problem() -> dict:
    """The problem of :func:`_build_problem` at ``SIZE``, unshifted particles."""
    return _build_problem(SIZE)


def _sub_chunk(chunk: ParticleChunk, rows: slice) -> ParticleChunk:
    return ParticleChunk(chunk.indices[rows], chunk.spectra[rows], chunk.regions[rows], chunk.halves[rows])


def _chunked_stats(problem: dict, chunk_size: int, threads: int) -> SufficientStats:
    chunk = problem["chunk"]
    pieces = [_sub_chunk(chunk, slice(s, s + chunk_size)) for s in range(0, len(chunk), chunk_size)]
    tasks = [dask.delayed(estep_chunk)(piece, problem["bank"], problem["model"]) for piece in pieces]
    parts = dask.compute(*tasks, scheduler="threads", num_workers=threads)
    return functools.reduce(operator.add, parts)


def _assert_same_stats(first: SufficientStats, second: SufficientStats) -> None:
    for name in ("sums", "coverage", "class_weights"):
        a, b = getattr(first, name), getattr(second, name)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(a).max())
    for name in ("noise_sum", "offset_sum", "pmax_sum", "log_likelihood"):
        assert getattr(first, name) == pytest.approx(getattr(second, name), rel=1e-6)
    for name in ("indices", "classes", "orientations"):
        np.testing.assert_array_equal(getattr(first.particles, name), getattr(second.particles, name))
    np.testing.assert_allclose(first.particles.log_likelihood, second.particles.log_likelihood, rtol=1e-6)


@pytest.mark.parametrize(("chunk_size", "threads"), [(1, 1), (7, 1), (7, 2), (1, 2)])
def test_statistics_do_not_depend_on_chunks_or_threads(problem: dict, chunk_size: int, threads: int) -> None:
    reference = _chunked_stats(problem, len(problem["chunk"]), 1)
    _assert_same_stats(_chunked_stats(problem, chunk_size, threads), reference)


def test_true_references_recover_classes_and_orientations(problem: dict) -> None:
    stats = _chunked_stats(problem, 12, 1)
    data, grid = problem["data"], problem["grid"]
    assert adjusted_rand_index(data.classes, stats.particles.classes) == 1.0
    estimated = grid.matrices[stats.particles.orientations]
    true = euler_to_matrix(*data.angles_deg.T)
    cosine = (np.trace(np.swapaxes(estimated, 1, 2) @ true, axis1=1, axis2=2) - 1) / 2
    errors = np.rad2deg(np.arccos(np.clip(cosine, -1, 1)))
    assert np.median(errors) < 20.0  # a 30-degree grid: the nearest orientation is within ~20
    assert np.sum(errors > 35.0) <= 1


@pytest.mark.parametrize(("size", "sigma_offset", "box"), [(SIZE, 1.5, SIZE), (SIZE, 0.6, 9), (11, 0.6, 9)])
def test_posteriors_are_normalised_and_loglikelihood_is_exact(
    problem: dict, size: int, sigma_offset: float, box: int
) -> None:
    """Brute force every particle: LL_i = logsumexp over (a, k, t) of log prior - d / sigma^2 - n log(...),
    the posterior means of d and |t|^2, and the best pose. A prior of 0.6 pixels allows a 9-voxel box of
    the maps, which is all the E-step reads of them; an odd box (particles shifted by up to a pixel)
    checks that the maps are centred and the shifts read back the right way."""
    problem = problem if size == SIZE else _build_problem(size, max_shift_px=2)
    log_prior, shift_sq = translation_log_prior(size, sigma_offset)
    model = replace(problem["model"], log_prior=log_prior, shift_sq=shift_sq)
    assert model.translations.shift_sq.shape == (box,) * 3
    bank, chunk = problem["bank"], problem["chunk"]
    stats = estep_chunk(chunk, bank, model)
    rotated = bank.rotated(slice(None))
    noise_sum = offset_sum = 0.0
    for i in range(len(chunk)):
        x = chunk.spectra[i].astype(np.complex128)
        correlations = sfft.irfftn(x * rotated.conjugate_spectra, s=(size,) * 3, axes=(-3, -2, -1))
        residual = 0.5 * (rotated.norms[:, :, 0, None, None, None] + chunk.power[i]) - correlations
        log_terms = (
            model.log_fractions[None, :, None, None, None]
            - np.log(len(bank))
            + model.log_prior.astype(np.float64)
            - residual / model.sigma_noise**2
        )
        n_observed = model.observed_counts[0]
        expected = logsumexp(log_terms) - n_observed * np.log(np.sqrt(2 * np.pi) * model.sigma_noise)
        assert stats.particles.log_likelihood[i] == pytest.approx(expected, rel=1e-5)
        posterior = np.exp(log_terms - logsumexp(log_terms))
        noise_sum += 2 * np.sum(posterior * residual)
        offset_sum += np.sum(posterior * shift_sq)
        orientation, k, *index = np.unravel_index(np.argmax(log_terms), log_terms.shape)
        assert (stats.particles.orientations[i], stats.particles.classes[i]) == (orientation, k)
        translation = (np.array(index) + size // 2) % size - size // 2  # (z, y, x)
        np.testing.assert_array_equal(stats.particles.shifts_px[i], -translation[::-1])
    assert stats.class_weights.sum() == pytest.approx(len(chunk), rel=1e-6)
    assert np.all((stats.particles.pmax > 0.0) & (stats.particles.pmax <= 1.0))
    assert stats.noise_sum == pytest.approx(noise_sum, rel=1e-4)
    assert stats.offset_sum == pytest.approx(offset_sum, rel=1e-4, abs=1e-6)
    if size != SIZE:
        assert np.abs(stats.particles.shifts_px).max() >= 1.0


def test_second_pass_weights_sum_to_one_when_the_posterior_is_split(problem: dict) -> None:
    """Two identical classes split every particle's posterior in half. With a small sigma (correlations of
    about 1e6 sigma^2) the weights of pass 2 must still sum to one per particle: the maps' large values
    cancel in float32 before the particle's log-evidence is added."""
    bank, chunk = problem["bank"], problem["chunk"]
    model = replace(
        problem["model"], sigma_noise=problem["model"].sigma_noise / 10, log_fractions=np.log([0.5, 0.5])
    )
    twins = ReferenceBank(np.stack([bank.references[0]] * 2), bank.matrices[:6], model.region_masks)
    stats = estep_chunk(chunk, twins, model)
    np.testing.assert_allclose(stats.class_weights, len(chunk) / 2, rtol=1e-6)


def test_allowed_orientations_score_each_particle_against_its_own_subset_only(problem: dict) -> None:
    """A chunk with per-particle orientation subsets gives, particle by particle, the statistics of a bank
    holding only that particle's orientations (the prior is uniform over the subset)."""
    model, bank, chunk = problem["model"], problem["bank"], problem["chunk"]
    allowed = np.random.default_rng(1).random((len(chunk), len(bank))) < 0.3
    subset = estep_chunk(replace(chunk, allowed=allowed), bank, model)
    sums = np.zeros_like(subset.sums)
    for i in range(len(chunk)):
        own = ReferenceBank(bank.references, bank.matrices[allowed[i]], model.region_masks)
        alone = estep_chunk(_sub_chunk(chunk, slice(i, i + 1)), own, model)
        sums += alone.sums
        assert subset.particles.log_likelihood[i] == pytest.approx(alone.log_likelihood, rel=1e-6)
        assert subset.particles.orientations[i] == np.nonzero(allowed[i])[0][alone.particles.orientations[0]]
    np.testing.assert_allclose(subset.sums, sums, atol=1e-6 * np.abs(sums).max())
    whole = estep_chunk(chunk, bank, model)
    assert not np.allclose(subset.particles.log_likelihood, whole.particles.log_likelihood, rtol=1e-3)
    with pytest.raises(ValueError, match="a True in every row"):
        estep_chunk(replace(chunk, allowed=np.zeros_like(allowed)), bank, model)


def _fourier_correlation(first: np.ndarray, second: np.ndarray, where: np.ndarray) -> float:
    """Normalised correlation of two half-grid spectra over the components ``where``."""
    a, b = first[where], second[where]
    return float(np.real(np.vdot(a, b)) / np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real))


@pytest.mark.parametrize("regions", [(), (MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60),)])
def test_backward_pass_puts_a_shifted_rotated_particle_back_onto_its_reference(regions: tuple) -> None:
    """One noiseless particle: the E-step finds its shift, the coverage-normalised sum in the reference
    frame matches the reference on the components the particle observed, and the true reference is a
    fixed point of the reference update."""
    reference = make_phantoms(1, SIZE, seed=5).astype(np.float64) * 20
    _, within = resolution_masks(SIZE, 0.5)
    shift = np.array([2.0, -1.0, 1.0])  # (x, y, z)
    matrix = euler_to_matrix(30.0, 40.0, 50.0)
    particle = rotate_volumes(reference[0], matrix.T)  # reference(A r)
    particle = np.roll(particle, tuple(-shift[::-1].astype(int)), axis=(0, 1, 2))  # then shifted
    log_prior, shift_sq = translation_log_prior(SIZE, 3.0)
    model = EStepModel(
        log_fractions=np.zeros(1),
        sigma_noise=0.05,
        log_prior=log_prior,
        shift_sq=shift_sq,
        regions=regions,
        within_resolution=within,
    )
    bank = ReferenceBank(reference, matrix[None], model.region_masks)
    spectra = (sfft.rfftn(particle)[None] * model.region_masks[0]).astype(np.complex64)
    stats = estep_chunk(ParticleChunk(np.arange(1), spectra, np.zeros(1, int), np.zeros(1, int)), bank, model)
    np.testing.assert_array_equal(stats.particles.shifts_px[0], shift)
    coverage = stats.coverage[0, 0]
    seen = coverage > 0.5
    average = np.where(seen, stats.sums[0, 0] / np.maximum(coverage, 1e-12), 0.0)
    target = sfft.rfftn(reference[0])
    seen[0, 0, 0] = False  # DC is never used
    correlation = _fourier_correlation(average, target, seen)
    assert correlation > 0.95
    # The reference is a fixed point of the update: the particle's sum equals the reference as the
    # particle sees it, spread back by the same (exact) transpose.
    gradient = stats.sums.sum(axis=0)[0] - stats.model_sums[0]
    assert np.linalg.norm(gradient) < 0.03 * np.linalg.norm(stats.sums[0, 0])
    misplaced = sfft.rfftn(np.roll(sfft.irfftn(average, s=(SIZE,) * 3), 1, axis=2))  # one voxel off
    assert _fourier_correlation(misplaced, target, seen) < correlation - 0.03
