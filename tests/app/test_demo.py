"""The demo end to end: a reference-free 3-class refinement must recover classes and orientations."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_mltomo.cli import main
from napari_mltomo.core.geometry import euler_to_matrix, matrix_to_euler
from napari_mltomo.demo import print_demo_scores
from napari_mltomo.io import MetaData

#: One line per true class: (class, median error in degrees, number of particles).
PER_CLASS = re.compile(
    r"^class (\d+): median pairwise orientation error ([\d.]+) deg \((\d+) particles\)$", re.M
)


@pytest.mark.slow
def test_demo_recovers_classes_and_orientations(tmp_path, capsys) -> None:
    assert main(["demo", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    ari = float(re.search(r"adjusted Rand index of the classes: ([-\d.]+)", printed).group(1))
    error, step = map(
        float, re.search(r"orientation error: ([\d.]+) deg \(angular step ([\d.]+)", printed).groups()
    )
    per_class = PER_CLASS.findall(printed)
    assert ari >= 0.95
    assert error <= step
    assert [label for label, _, _ in per_class] == ["1", "2", "3"]
    assert all(float(class_error) <= step for _, class_error, _ in per_class)
    assert (tmp_path / "demo" / "run" / "demo_ref.xmd").exists()


def test_demo_scores_print_one_line_per_class(capsys) -> None:
    """Class 1 is found up to a global rotation (0 degrees); in class 2 one of three particles is turned
    by 90 degrees, so two of its three pairs are 90 degrees off."""
    true = np.array([[10, 20, 30], [50, 60, 70], [-40, 100, 15], [80, 35, -60], [5, 150, 90]], dtype=float)
    found = euler_to_matrix(33.0, 44.0, 55.0) @ euler_to_matrix(*true.T)
    found[2] = found[2] @ euler_to_matrix(90.0, 0.0, 0.0)
    images = [f"p{i}.mrc" for i in range(5)]
    labels = ("angleRot", "angleTilt", "anglePsi")
    true_angles = dict(zip(labels, true.T, strict=True))
    found_angles = dict(zip(labels, matrix_to_euler(found[::-1]).T, strict=True))
    truth = MetaData({"image": images, "ref": np.array([1, 1, 2, 2, 2]), **true_angles})
    result = MetaData({"image": images[::-1], "ref": np.array([2, 2, 2, 1, 1]), **found_angles})
    print_demo_scores(truth, result, 1.0)
    per_class = PER_CLASS.findall(capsys.readouterr().out)
    assert [(label, float(error), count) for label, error, count in per_class] == [
        ("1", 0.0, "2"),
        ("2", 90.0, "3"),
    ]
