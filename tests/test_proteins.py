"""Subtomograms of real protein structures: how they are made and scored."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from napari_mltomo.core.geometry import euler_to_matrix, matrix_to_euler
from napari_mltomo.core.synthetic import Atoms, render_atoms
from napari_mltomo.protein_sets import ProteinSet, read_atoms, score_classes

#: Closed adenylate kinase: round, and nearly 2-fold symmetric at low resolution.
ROUND = ProteinSet(("adk_closed.pdb",), n_per_class=40)


def test_atoms_are_rendered_where_the_pose_puts_them() -> None:
    """``particle(q) = template(M (q + s))``: one atom at ``x`` lands at ``M^T x / pixel - s``."""
    atom = Atoms(np.array([[6.0, -4.0, 2.0]]), np.array([1.0]))
    matrix, shift = euler_to_matrix(30.0, 60.0, -45.0), np.array([1.0, 0.0, -2.0])
    volume = render_atoms(atom, 24, 2.0, matrix, shift)
    peak = np.array(np.unravel_index(volume.argmax(), volume.shape))[::-1] - 12  # (x, y, z)
    expected = matrix.T @ atom.positions_a[0] / 2.0 - shift
    assert np.all(np.abs(peak - expected) <= 0.5 + 1e-9)
    assert volume.sum() == pytest.approx(1.0)


def test_structures_are_read_centred_and_weighted_by_mass() -> None:
    """Adenylate kinase (a PDB file without elements, CHARMM names such as HG and CD): 214 residues of
    heavy atoms, each carbon, nitrogen, oxygen or sulphur."""
    atoms = read_atoms("adk_closed.pdb")
    assert 1600 <= len(atoms.weights) <= 1700
    np.testing.assert_allclose(np.unique(atoms.weights.round(1)), [12.0, 14.0, 16.0, 32.1])
    np.testing.assert_allclose(np.average(atoms.positions_a, axis=0, weights=atoms.weights), 0.0, atol=1e-9)


def test_scores_count_the_particles_turned_from_the_class_consensus() -> None:
    """Class 0: the truth up to a global rotation, one particle turned by 180 degrees; class 1 exact."""
    true = Rotation.random(8, random_state=1).as_matrix()
    found = Rotation.random(random_state=2).as_matrix() @ true
    found[0] = found[0] @ Rotation.from_rotvec([0.0, np.pi, 0.0]).as_matrix()
    classes = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    scores = score_classes(matrix_to_euler(found), matrix_to_euler(true), classes)
    assert [(s.beyond_90, s.size) for s in scores.values()] == [(1, 5), (0, 3)]
    assert scores[0].median_error_deg == pytest.approx(0.0, abs=1e-4)  # 6 of 10 pairs exact
    assert scores[1].median_error_deg == pytest.approx(0.0, abs=1e-4)
