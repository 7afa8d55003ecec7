"""The demo: a synthetic data set with known answers, written as real files, and the scores of a run on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.core.synthetic import (
    SyntheticDataset,
    adjusted_rand_index,
    class_orientation_errors_deg,
    make_dataset,
    orientation_errors_deg,
)
from napari_mltomo.io import (
    ANGLE_LABELS,
    SHIFT_LABELS,
    MetaData,
    image_key,
    read_images,
    write_missing_regions,
    write_star,
    write_volume,
)

__all__ = ["DEMO_ARGS", "DEMO_DATASET", "print_demo_scores", "truth_columns", "write_demo_data"]

#: The demo's synthetic data set (arguments of ``napari_mltomo.core.synthetic.make_dataset``): proteins that
#: are nearly 2-fold symmetric at low resolution, made as real subtomograms are (a tilt series with CTF and
#: noise per tilt, weighted back-projection), at an SNR of 0.5.
DEMO_DATASET: dict[str, Any] = dict(
    n_per_class=24,
    n_classes=3,
    size=24,
    snr=0.5,
    phantoms="near_symmetric",
    reconstruction="tilt_series",
    seed=0,
)
#: The demo's refinement options (added to ``-i``, ``--missing`` and ``--oroot``): the defaults otherwise.
DEMO_ARGS: list[str] = [
    "--nref", "3", "--ang", "20", "--iter", "6", "--thr", "2", "--seed", "1",
]  # fmt: skip


def write_demo_data(folder: Path) -> MetaData:
    """Write the demo data set; return the truth table (image, ref, angles, shifts)."""
    dataset = make_dataset(**DEMO_DATASET)
    (folder / "particles").mkdir(parents=True, exist_ok=True)
    names = [f"particles/p{i:06d}.mrc" for i in range(1, len(dataset.volumes) + 1)]
    for name, volume in zip(names, dataset.volumes, strict=True):
        write_volume(folder / name, volume)
    image_column = np.array(names, dtype=object)
    write_star(
        folder / "images.xmd",
        MetaData({"image": image_column, "missingRegionNumber": np.ones(len(names), dtype=np.int64)}),
        "ml_tomo demo particles",
    )
    write_missing_regions(folder / "wedges.xmd", [dataset.region])
    truth = MetaData({"image": image_column, **truth_columns(dataset)})
    write_star(folder / "truth.xmd", truth, "ml_tomo demo ground truth: class and the transform onto it")
    return read_images(folder / "truth.xmd")


def truth_columns(dataset: SyntheticDataset) -> dict[str, NDArray]:
    """The true class (``ref``, 1-based), Xmipp angles and shifts of each particle, as metadata columns."""
    values = np.hstack([dataset.angles_deg, dataset.shifts_px]).T
    return {"ref": dataset.classes + 1, **dict(zip(ANGLE_LABELS + SHIFT_LABELS, values, strict=True))}


def print_demo_scores(truth: MetaData, result: MetaData, seconds: float) -> None:
    """Print the adjusted Rand index of the classes and the median pairwise orientation errors (overall
    and per true class) of a run's ``result`` table against the ``truth`` table, matched by image."""
    rows = {image_key(str(name)): row for row, name in enumerate(result["image"])}
    order = np.array([rows[image_key(str(name))] for name in truth["image"]], dtype=np.intp)
    result = result.take(order)
    true_angles = truth.float_columns(ANGLE_LABELS)
    found_angles = result.float_columns(ANGLE_LABELS)
    assert true_angles is not None and found_angles is not None
    ari = adjusted_rand_index(truth["ref"], result["ref"])
    errors = orientation_errors_deg(found_angles, true_angles, truth["ref"])
    per_class = class_orientation_errors_deg(found_angles, true_angles, truth["ref"])
    labels, counts = np.unique(truth["ref"], return_counts=True)
    step = DEMO_ARGS[DEMO_ARGS.index("--ang") + 1]
    print(f"particles: {len(truth)} in {len(labels)} classes")
    print(f"adjusted Rand index of the classes: {ari:.3f}")
    print(f"median pairwise orientation error: {np.median(errors):.1f} deg (angular step {step} deg)")
    for label, count in zip(labels, counts, strict=True):
        median = np.median(per_class[int(label)])
        print(f"class {label}: median pairwise orientation error {median:.1f} deg ({count} particles)")
    print(f"wall time: {seconds:.1f} s")
