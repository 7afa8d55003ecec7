"""The demo end to end: a reference-free 3-class refinement must recover classes and orientations."""

from __future__ import annotations

import re

import pytest

from napari_mltomo.cli import main


@pytest.mark.slow
def test_demo_recovers_classes_and_orientations(tmp_path, capsys) -> None:
    assert main(["demo", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    ari = float(re.search(r"adjusted Rand index of the classes: ([-\d.]+)", printed).group(1))
    error, step = map(
        float, re.search(r"orientation error: ([\d.]+) deg \(angular step ([\d.]+)", printed).groups()
    )
    assert ari >= 0.95
    assert error <= step
    assert (tmp_path / "demo" / "run" / "demo_ref.xmd").exists()
