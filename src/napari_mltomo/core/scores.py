"""Scores of a result against the ground truth: adjusted Rand index of the classes and orientation errors,
per class and gauge-free."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import comb

from .geometry import euler_to_matrix

__all__ = ["adjusted_rand_index", "class_orientation_errors_deg", "orientation_errors_deg"]


def adjusted_rand_index(labels_true: NDArray[np.integer], labels_pred: NDArray[np.integer]) -> float:
    """Adjusted Rand index of two partitions (1 = identical up to relabelling, ~0 = chance)."""
    _, true_codes = np.unique(labels_true, return_inverse=True)
    _, pred_codes = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((true_codes.max() + 1, pred_codes.max() + 1))
    np.add.at(table, (true_codes, pred_codes), 1)
    pairs = comb(table, 2).sum()
    rows, cols = comb(table.sum(axis=1), 2).sum(), comb(table.sum(axis=0), 2).sum()
    expected = rows * cols / comb(len(true_codes), 2)
    maximum = 0.5 * (rows + cols)
    if maximum == expected:
        return 1.0
    return float((pairs - expected) / (maximum - expected))


def class_orientation_errors_deg(
    estimated_deg: NDArray[np.floating],
    true_deg: NDArray[np.floating],
    classes: NDArray[np.integer],
) -> dict[int, NDArray[np.float64]]:
    """Gauge-free orientation errors over the pairs of particles of each true class.

    For a pair ``(i, j)`` the error is the rotation angle of ``(A_i^T A_j)^T (R_i^T R_j)`` where ``A``
    are the estimated and ``R`` the true Xmipp matrices; a global rotation of the result cancels.

    Parameters
    ----------
    estimated_deg, true_deg : (n, 3) array of float
        ``(rot, tilt, psi)`` in degrees.
    classes : (n,) array of int
        True classes.

    Returns
    -------
    dict of int to (n_k (n_k - 1) / 2,) ndarray of float64
        True class -> errors in degrees of its ``n_k`` particles' pairs, in ascending class order.
    """
    estimated = euler_to_matrix(*np.moveaxis(np.asarray(estimated_deg), -1, 0))
    true = euler_to_matrix(*np.moveaxis(np.asarray(true_deg), -1, 0))
    labels = np.asarray(classes)
    return {
        int(label): _pair_errors_deg(estimated[labels == label], true[labels == label])
        for label in np.unique(labels)
    }


def _pair_errors_deg(estimated: NDArray[np.float64], true: NDArray[np.float64]) -> NDArray[np.float64]:
    """Errors in degrees of all pairs ``i < j`` of ``(m, 3, 3)`` estimated and true matrices."""
    i, j = np.triu_indices(len(estimated), k=1)
    a_rel = np.swapaxes(estimated[i], 1, 2) @ estimated[j]
    r_rel = np.swapaxes(true[i], 1, 2) @ true[j]
    difference = np.swapaxes(a_rel, 1, 2) @ r_rel
    cosine = (np.trace(difference, axis1=1, axis2=2) - 1.0) / 2.0
    return np.rad2deg(np.arccos(np.clip(cosine, -1.0, 1.0)))


def orientation_errors_deg(
    estimated_deg: NDArray[np.floating],
    true_deg: NDArray[np.floating],
    classes: NDArray[np.integer],
) -> NDArray[np.float64]:
    """Gauge-free orientation errors over all pairs of particles of the same true class.

    The errors of :func:`class_orientation_errors_deg`, class after class in ascending order.

    Parameters
    ----------
    estimated_deg, true_deg : (n, 3) array of float
        ``(rot, tilt, psi)`` in degrees.
    classes : (n,) array of int
        True classes.

    Returns
    -------
    (n_pairs,) ndarray of float64
        Errors in degrees.
    """
    per_class = class_orientation_errors_deg(estimated_deg, true_deg, classes)
    return np.concatenate(list(per_class.values())) if per_class else np.zeros(0)
