"""The missing-region viewer: a wedge, pyramid or cone as a 3D Fourier mask, in the particle's own frame
and, for a particle with given angles, in the reference frame.

Masks come from :mod:`napari_mltomo.core.views` (``1`` observed, centred Fourier grid) and are shown as
their three central sections side by side (:func:`napari_mltomo._layers.mask_layer`), which read in
napari's default 2D view; the layers are updated in place whenever a setting changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_mltomo._layers import (
    MASK_NAME,
    MASK_SECTIONS,
    ROTATED_MASK_NAME,
    mask_layer,
    remove_layers,
    show_layer,
)
from napari_mltomo._widgets._common import report_errors
from napari_mltomo.core.missing import REGION_KINDS, MissingRegion
from napari_mltomo.core.views import missing_fraction, region_mask_volume, rotated_region_mask
from napari_mltomo.inputs import run_missing_regions
from napari_mltomo.io import ANGLE_LABELS
from napari_mltomo.io.results import open_run

if TYPE_CHECKING:
    import napari

__all__ = ["MissingRegionViewer"]

#: MissingRegion angle fields and their labels.
ANGLE_FIELDS: dict[str, str] = {
    "theta_y0_deg": "θY0",
    "theta_yf_deg": "θYF",
    "theta_x0_deg": "θX0",
    "theta_xf_deg": "θXF",
}
#: The angle fields each kind of region uses (MissingRegion's rules).
USED_FIELDS: dict[str, tuple[str, ...]] = {
    "wedge_y": ("theta_y0_deg", "theta_yf_deg"),
    "wedge_x": ("theta_x0_deg", "theta_xf_deg"),
    "pyramid": tuple(ANGLE_FIELDS),
    "cone": ("theta_y0_deg",),
}


def _spin_box(low: float, high: float, value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(1)
    box.setValue(value)
    box.setKeyboardTracking(False)  # update on Enter or when leaving the box, not on every key
    return box


class MissingRegionViewer(QWidget):
    """Show a missing-region definition as a 3D Fourier mask (its central sections), optionally turned
    into a particle's reference frame.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    live : bool
        Show the masks now and after every change; the Refinement widget's editor turns this on only
        when its tab is opened, so that opening the widget adds no layer.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None, *, live: bool = True):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.live = live
        self._build()
        self._connect()
        self._enable_fields()
        self.refresh()

    def _build(self) -> None:
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(list(REGION_KINDS))
        self.angle_boxes = {
            name: _spin_box(-90.0, 90.0, -60.0 if name.endswith("0_deg") else 60.0) for name in ANGLE_FIELDS
        }
        self.size_box = QSpinBox()
        self.size_box.setRange(4, 256)
        self.size_box.setValue(32)
        self.size_box.setKeyboardTracking(False)
        self.fraction_label = QLabel()
        sections = ", ".join(section.split(":")[0] for section in MASK_SECTIONS)
        self.sections_label = QLabel(
            f"shown as central sections, left to right {sections}; bright: observed; a particle's mask "
            "in the reference frame below"
        )
        self.sections_label.setWordWrap(True)
        self.rotate_check = QCheckBox("show a particle's mask in the reference frame")
        self.euler_boxes = [_spin_box(-360.0, 360.0, 0.0) for _ in ANGLE_LABELS]
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("run root or file (last iteration's particle table)")
        self.row_box = QSpinBox()
        self.row_box.setRange(1, 10**7)
        self.use_button = QPushButton("Use particle")

        region = QFormLayout()
        region.addRow("Type", self.kind_combo)
        for name, label in ANGLE_FIELDS.items():
            region.addRow(f"{label} (°)", self.angle_boxes[name])
        region.addRow("Box size", self.size_box)
        region.addRow("", self.fraction_label)
        region.addRow("", self.sections_label)
        eulers = QHBoxLayout()
        for box in self.euler_boxes:
            eulers.addWidget(box)
        from_run = QHBoxLayout()
        from_run.addWidget(self.run_edit)
        from_run.addWidget(self.row_box)
        from_run.addWidget(self.use_button)
        particle = QFormLayout()
        particle.addRow(self.rotate_check)
        particle.addRow("rot tilt psi (°)", eulers)
        particle.addRow("Run, particle", from_run)
        region_group, particle_group = QGroupBox("Missing region"), QGroupBox("Particle")
        region_group.setLayout(region)
        particle_group.setLayout(particle)
        layout = QVBoxLayout(self)
        layout.addWidget(region_group)
        layout.addWidget(particle_group)
        layout.addStretch(1)

    def _connect(self) -> None:
        self.kind_combo.currentTextChanged.connect(lambda _: (self._enable_fields(), self.refresh()))
        for box in (*self.angle_boxes.values(), *self.euler_boxes):
            box.valueChanged.connect(lambda _: self.refresh())
        self.size_box.valueChanged.connect(lambda _: self.refresh())
        self.rotate_check.toggled.connect(lambda _: self.refresh())
        self.use_button.clicked.connect(lambda: self.use_particle(self.run_edit.text(), self.row_box.value()))

    def _enable_fields(self) -> None:
        used = USED_FIELDS[self.kind_combo.currentText()]
        for name, box in self.angle_boxes.items():
            box.setEnabled(name in used)

    def region(self) -> MissingRegion:
        """The region the fields describe (unused angles are 0)."""
        kind = self.kind_combo.currentText()
        angles = {name: self.angle_boxes[name].value() for name in USED_FIELDS[kind]}
        return MissingRegion(kind=kind, **angles)

    def set_region(self, region: MissingRegion) -> None:
        """Fill the fields from `region` (the masks follow)."""
        for name in ANGLE_FIELDS:
            self.angle_boxes[name].blockSignals(True)
            self.angle_boxes[name].setValue(getattr(region, name))
            self.angle_boxes[name].blockSignals(False)
        self.kind_combo.blockSignals(True)
        self.kind_combo.setCurrentText(region.kind)
        self.kind_combo.blockSignals(False)
        self._enable_fields()
        self.refresh()

    @report_errors
    def refresh(self) -> None:
        """Show the mask of the region and, if asked, the particle's mask in the reference frame."""
        if not self.live:
            return
        region, size = self.region(), self.size_box.value()
        mask = region_mask_volume(region, size)
        show_layer(self.viewer, mask_layer(mask, MASK_NAME, region=region))
        self.fraction_label.setText(f"missing: {100 * missing_fraction(mask):.1f}% of the Nyquist ball")
        if self.rotate_check.isChecked():
            angles = [box.value() for box in self.euler_boxes]
            rotated = rotated_region_mask(region, angles, size)
            show_layer(self.viewer, mask_layer(rotated, ROTATED_MASK_NAME, region=region, angles_deg=angles))
        else:
            remove_layers(self.viewer, {ROTATED_MASK_NAME})

    @report_errors
    def use_particle(self, path: str | Path, row: int) -> None:
        """Take the angles (and the region, if the run's ``--missing`` file is found) of particle `row`
        (1-based) of the last iteration of a run."""
        run = open_run(path)
        iteration = max(run.iterations)
        results = run.read_iteration(iteration)
        particles = results.particles
        if particles is None:
            raise ValueError(f"{run.root}: iteration {iteration} has no particle table")
        if not 1 <= row <= len(particles):
            raise ValueError(f"{run.root}: particle {row} is not in 1..{len(particles)}")
        angles = particles.float_columns(ANGLE_LABELS)
        if angles is None:
            raise ValueError(f"{run.root}: the particle table has no angles")
        self.run_edit.setText(str(run.root))
        self.row_box.setValue(row)
        for box, value in zip(self.euler_boxes, angles[row - 1], strict=True):
            box.blockSignals(True)
            box.setValue(float(value))
            box.blockSignals(False)
        self.size_box.blockSignals(True)
        self.size_box.setValue(int(results.references.shape[-1]))
        self.size_box.blockSignals(False)
        self.rotate_check.blockSignals(True)
        self.rotate_check.setChecked(True)
        self.rotate_check.blockSignals(False)
        regions = run_missing_regions(run)
        number = int(particles["missingRegionNumber"][row - 1]) if "missingRegionNumber" in particles else 1
        if regions and 1 <= number <= len(regions):
            self.set_region(regions[number - 1])
        else:
            self.refresh()
        self.viewer.status = f"particle {row}: angles {np.round(angles[row - 1], 1).tolist()}"
