"""The M-step: references (with imputation of missing data), noise, offsets, fractions, regularisation."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from .fourier import AXES3, frequency_radius, fsc, half_grid_weights
from .geometry import euler_to_matrix, flatten_outside_sphere, rotate_volumes
from .stats import SufficientStats

__all__ = [
    "class_fsc",
    "impute_references",
    "postprocess",
    "regularise",
    "resolution_filter",
    "sigma_noise_without_imputation",
    "signal_change",
    "smooth_by_rotation",
    "thresholded_average",
    "update_fractions",
    "update_offset",
    "update_sigma_noise",
]


def full_grid_sum(half_grid: NDArray[np.floating]) -> NDArray[np.float64]:
    """Sum of ``(..., N, N, N//2+1)`` half-grid values over the full grid (Hermitian multiplicity)."""
    return np.einsum("...zyx,x->...", half_grid, half_grid_weights(half_grid.shape[-2]))


def impute_references(
    old_spectra: NDArray[np.complexfloating],
    sums: NDArray[np.complex128],
    model_sums: NDArray[np.complex128],
    coverage: NDArray[np.float64],
    class_weights: NDArray[np.float64],
    impute_iter: int = 1,
) -> NDArray[np.complex128]:
    """ML update of reference spectra, treating the unobserved components as hidden data.

    ``A <- A + (S_k - H_k A) / n_k``, repeated ``impute_iter`` times: observed components move to the
    weighted average of the aligned particles, missing ones keep the current reference. ``H_k A_old``
    is ``model_sums``, exact for the bank's rotations, so the first step never lowers the likelihood's
    bound; later steps approximate ``H_k (A - A_old)`` by ``W_k (A - A_old)``. With exact rotations this
    is ``A <- A (1 - W_k / n_k) + S_k / n_k``. A class with no weight keeps its reference.

    Parameters
    ----------
    old_spectra : (K, N, N, N//2+1) complex ndarray
        Current references.
    sums : (K, N, N, N//2+1) complex ndarray
        Weighted sums of aligned particles (both halves).
    model_sums : (K, N, N, N//2+1) complex ndarray
        The same sums with each particle replaced by the current reference as it sees it.
    coverage : (K, N, N, N//2+1) ndarray
        Weighted sums of the observed-region masks in the reference frame.
    class_weights : (K,) ndarray
        Posterior mass ``n_k`` of each class.
    impute_iter : int

    Returns
    -------
    (K, N, N, N//2+1) ndarray of complex128
    """
    old = np.asarray(old_spectra, dtype=np.complex128)
    spectra = old.copy()
    for k, weight in enumerate(class_weights):
        if weight <= 0:
            continue
        gradient = sums[k] - model_sums[k]
        for _ in range(impute_iter):
            spectra[k] = spectra[k] + (gradient - coverage[k] * (spectra[k] - old[k])) / weight
    return spectra


def update_fractions(class_weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Class fractions ``alpha_k = n_k / sum_j n_j``."""
    return class_weights / class_weights.sum()


def update_offset(stats: SufficientStats) -> float:
    """Standard deviation of the isotropic 3D translation prior, ``sqrt(E|t|^2 / (3 n))``."""
    return float(np.sqrt(stats.offset_sum / (3.0 * stats.n_particles)))


def update_sigma_noise(
    sigma: float,
    stats: SufficientStats,
    observed_per_particle: float,
    impute_iter: int = 1,
) -> float:
    """White-noise standard deviation with the missing components imputed.

    ``sigma^2 <- [sigma^2 (n F - W) + sum_i 2 E[d_i]] / (n F)`` where ``F`` is the number of components
    within the resolution limit, ``n`` the number of particles and ``W`` the number of observed
    components summed over the particles (``stats.observed_components``).

    Parameters
    ----------
    sigma : float
        Current value.
    stats : SufficientStats
    observed_per_particle : float
        ``F``: components a fully observed particle would have (full grid).
    impute_iter : int
    """
    total = stats.n_particles * observed_per_particle
    covered = stats.observed_components
    variance = sigma**2
    for _ in range(impute_iter):
        variance = (variance * (total - covered) + stats.noise_sum) / total
    return float(np.sqrt(variance))


def thresholded_average(
    sums: NDArray[np.complexfloating], coverage: NDArray[np.floating], threshold: float
) -> NDArray[np.complex128]:
    """``S / W`` where the coverage ``W`` exceeds ``threshold``, else 0 (``--dont_impute``)."""
    return np.where(coverage > threshold, sums / np.maximum(coverage, 1e-300), 0.0)


def sigma_noise_without_imputation(stats: SufficientStats) -> float:
    """White-noise standard deviation from the observed components only: ``sqrt(sum_i 2 E[d_i] / W)``,
    the fixed point of :func:`update_sigma_noise`'s recursion (``--dont_impute``)."""
    return float(np.sqrt(stats.noise_sum / stats.observed_components))


def postprocess(spectra: NDArray[np.complexfloating], soft_mask: NDArray[np.float64]) -> NDArray:
    """Low-pass at ``--maxres`` (DC removed), back to real space, flatten outside the sphere.

    Returns
    -------
    (K, N, N, N) ndarray of float64
    """
    size = spectra.shape[-2]
    volumes = sfft.irfftn(spectra * soft_mask, s=(size,) * 3, axes=AXES3)
    return flatten_outside_sphere(volumes)


def smooth_by_rotation(volumes: NDArray[np.floating]) -> NDArray[np.float64]:
    """Rotate by ``E(32, 61, 53)`` and back: removes the highest frequencies that would make rotated
    norms depend on the orientation. ``(K, N, N, N)`` in and out."""
    matrix = euler_to_matrix(32.0, 61.0, 53.0)
    there = rotate_volumes(np.asarray(volumes, dtype=np.float64), matrix)
    return rotate_volumes(there, matrix.T)


def regularise(
    spectra: NDArray[np.complex128], fractions: NDArray[np.float64], n_images: int, strength: float
) -> tuple[NDArray[np.complex128], float]:
    """Pull each reference towards the mean reference.

    ``A_k <- (n_k A_k + mu sum_j A_j) / (n_k + K mu)`` with ``mu = strength n_images / K`` and
    ``n_k = alpha_k n_images``.

    Returns
    -------
    spectra : (K, N, N, N//2+1) ndarray of complex128
    variance_increase : float
        ``mu sum_jl ||A_j - A_l||^2 / (n_images V)``, to add to ``sigma^2``.
    """
    n_classes = len(spectra)
    size = spectra.shape[-2]
    mu = strength * n_images / n_classes
    counts = fractions * n_images
    total = spectra.sum(axis=0)
    pulled = (counts[:, None, None, None] * spectra + mu * total) / (counts + n_classes * mu)[
        :, None, None, None
    ]
    difference = spectra[:, None] - spectra[None, :]
    power = full_grid_sum(np.abs(difference) ** 2).sum() / size**3  # sum_r over all pairs
    return pulled, float(mu * power / (n_images * size**3))


def class_fsc(sums: NDArray[np.complex128], coverage: NDArray[np.float64]) -> NDArray[np.float64]:
    """FSC of each class between the two random halves, cross-weighted by the other half's coverage.

    Parameters
    ----------
    sums, coverage : (2, K, N, N, N//2+1) ndarray
        Per half set and class, the spread sums of the particles and their coverage.

    Returns
    -------
    (K, N//2 + 1) ndarray of float64
    """
    size = sums.shape[-2]
    return np.array(
        [fsc(coverage[1, k] * sums[0, k], coverage[0, k] * sums[1, k], size) for k in range(sums.shape[1])]
    )


#: Width of the raised-cosine edge of ``--filter`` and ``--ini_filter``, in cycles per input pixel.
FILTER_EDGE = 0.02


def resolution_filter(
    spectra: NDArray[np.complexfloating], shells: NDArray[np.intp], scale: float
) -> NDArray[np.complex128]:
    """Low-pass each reference spectrum at its resolution shell (``--filter``): 1 up to the shell, a
    raised cosine over ``FILTER_EDGE`` cycles per input pixel beyond it, 0 further out.

    Parameters
    ----------
    spectra : (K, N, N, N//2+1) complex ndarray
    shells : (K,) ints
        Each reference's FSC = 0.5 shell at the internal box ``N``.
    scale : float
        ``N / N0``: the edge is ``FILTER_EDGE / scale`` cycles per internal pixel.
    """
    size = spectra.shape[-2]
    frequency = frequency_radius(size) / size
    edge = FILTER_EDGE / scale
    filtered = np.empty(spectra.shape, dtype=np.complex128)
    for k, shell in enumerate(shells):
        beyond = np.clip((frequency - shell / size) / edge, 0.0, 1.0)
        filtered[k] = spectra[k] * 0.5 * (1.0 + np.cos(np.pi * beyond))
    return filtered


def signal_change(old: NDArray[np.floating], new: NDArray[np.floating]) -> NDArray[np.float64]:
    """Relative change ``mean((old - new)^2) / mean(old^2)`` of each ``(K, N, N, N)`` reference."""
    axes = (-3, -2, -1)
    power = np.mean(np.square(old, dtype=np.float64), axis=axes)
    change = np.mean(np.square(old - new, dtype=np.float64), axis=axes)
    return np.divide(change, power, out=np.full_like(change, np.inf), where=power > 0)
