"""File input and output: Xmipp metadata tables and MRC/Spider/EM volumes."""

from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.metadata import (
    ANGLE_LABELS,
    SHIFT_LABELS,
    MetaData,
    MetadataError,
    checked_volume_shape,
    image_key,
    particle_box,
    read_images,
    read_metadata,
    read_missing_regions,
    read_star,
    read_star_blocks,
    voxels_text,
    write_star,
)
from napari_mltomo.io.volumes import (
    VolumeError,
    open_volume_lazy,
    read_pixel_size,
    read_volume,
    read_volume_stack,
    volume_shape,
    write_volume,
)

__all__ = [
    "ANGLE_LABELS",
    "SHIFT_LABELS",
    "MetaData",
    "MetadataError",
    "VolumeError",
    "atomic_path",
    "checked_volume_shape",
    "image_key",
    "open_volume_lazy",
    "particle_box",
    "read_images",
    "read_metadata",
    "read_missing_regions",
    "read_pixel_size",
    "read_star",
    "read_star_blocks",
    "read_volume",
    "read_volume_stack",
    "volume_shape",
    "voxels_text",
    "write_star",
    "write_volume",
]
