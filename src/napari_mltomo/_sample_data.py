"""napari sample data: the demo's synthetic subtomograms, with their ground truth."""

from __future__ import annotations

from typing import Any

from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.demo import DEMO_DATASET, truth_columns


def make_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """The particles of ``make demo`` (near-symmetric proteins, tilt series with CTF, SNR 0.5) and the true
    class maps.

    The particles' layer metadata holds the truth per particle (``ref`` 1-based, Xmipp angles and
    shifts in pixels: ``particle(q) = map(E (q + s))``).
    """
    dataset = make_dataset(**DEMO_DATASET)
    particles = {"name": "synthetic particles", "metadata": {"table": truth_columns(dataset)}}
    return [
        (dataset.volumes, particles, "image"),
        (dataset.phantoms, {"name": "true class maps"}, "image"),
    ]
