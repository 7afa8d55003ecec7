"""napari writer: an image layer as an MRC (``.mrc``) or Spider (``.vol``) volume."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_mltomo.io import write_volume


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one 3D image layer, atomically, with its voxel size (the layer's last scale) in the header."""
    volume = np.asarray(data, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{path}: napari-mltomo writes 3D volumes; this layer has {volume.ndim} dimensions")
    scale = meta.get("scale") or (1.0,)
    return [str(write_volume(path, volume, pixel_size_A=float(scale[-1])))]
