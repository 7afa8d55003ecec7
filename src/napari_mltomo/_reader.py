"""napari reader: volumes as image layers, Xmipp metadata files as lazy particle stacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error

from napari_mltomo.io import (
    MetadataError,
    VolumeError,
    read_images,
    read_pixel_size,
    read_volume,
    read_volume_stack,
    volume_shape,
)

#: Suffixes opened as one volume, and as a table of particles (Xmipp STAR, doc and sel files).
VOLUME_SUFFIXES = (".mrc", ".map", ".rec", ".vol", ".spi", ".xmp", ".em")
METADATA_SUFFIXES = (".xmd", ".doc", ".sel", ".star")

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for ``path`` if this plugin reads it (one file), else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    suffix = Path(path).suffix.lower()
    if suffix in VOLUME_SUFFIXES or suffix in METADATA_SUFFIXES:
        return read_layers
    return None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Layers of one file; a file that cannot be read gives one error notification and no layer."""
    path = path[0] if isinstance(path, list) else path
    try:
        if Path(path).suffix.lower() in METADATA_SUFFIXES:
            return [_particle_stack(path)]
        return [_volume(path)]
    except (MetadataError, VolumeError, OSError) as error:
        show_error(f"napari-mltomo could not open {path}: {error}")
        return []


def _volume(path: str) -> LayerData:
    """One volume as an image layer, scaled by its voxel size (Angstrom)."""
    pixel = read_pixel_size(path) or 1.0
    meta = {"name": Path(path).stem, "scale": (pixel,) * 3, "metadata": {"source": str(path)}}
    return read_volume(path), meta, "image"


def _particle_stack(path: str) -> LayerData:
    """The particles (or class references) a metadata file lists, as one lazy ``(n, z, y, x)`` stack.

    The table's columns are in the layer's ``metadata["table"]``, one value per particle, in stack order.
    """
    table = read_images(path)
    names = [str(name) for name in table["image"]]
    if not names:
        raise MetadataError(f"{path}: lists no images")
    pixel = read_pixel_size(names[0]) or 1.0
    stack = read_volume_stack(names, volume_shape(names[0]))
    columns = {label: table[label] for label in table.labels}
    meta = {
        "name": Path(path).stem,
        "scale": (1.0, pixel, pixel, pixel),
        "metadata": {"source": str(path), "table": columns},
    }
    return stack, meta, "image"
