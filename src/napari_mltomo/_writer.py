"""napari writer: an image layer as an MRC (``.mrc``) or Spider (``.vol``) volume."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_mltomo.io import write_volume


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one 2D or 3D image layer (2D as one z-slice), atomically, with its voxel size.

    The voxel size is the layer's scale along x. napari reports a ``ValueError`` from a writer only as
    "not a valid writer", so a layer of another dimensionality raises ``TypeError`` naming the file.
    """
    volume = np.asarray(data, dtype=np.float32)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise TypeError(
            f"{path}: napari-mltomo writes 2D or 3D images; this layer has {volume.ndim} dimensions"
        )
    scale = meta.get("scale") or (1.0,)
    return [str(write_volume(path, volume, pixel_size_A=float(scale[-1])))]
