"""napari reader: volumes as image layers; Xmipp metadata files, RELION particle STAR files and Dynamo tables
(their particles in the table's folder) as lazy particle stacks.

Errors are raised, not shown: napari reports a reader's exception as one notification, and ours name
the file (and line) at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from napari_mltomo.io import open_volume_lazy, particle_box, read_pixel_size, read_volume_stack
from napari_mltomo.io.interchange import read_posed_particles

#: Suffixes opened as one volume, and as a table of particles (Xmipp STAR, doc and sel files, RELION STAR
#: files, Dynamo tables).
VOLUME_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec", ".vol", ".spi", ".xmp", ".em")
METADATA_SUFFIXES = (".xmd", ".doc", ".sel", ".star", ".tbl")

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
    """The layer of one file: a volume, or the particles (class references) a metadata file lists."""
    path = path[0] if isinstance(path, list) else path
    if Path(path).suffix.lower() in METADATA_SUFFIXES:
        return [_particle_stack(path)]
    return [_volume(path)]


def _volume(path: str) -> LayerData:
    """One volume as a lazy float32 image layer (read a z-slice at a time), scaled by its voxel size."""
    mapped = open_volume_lazy(path)
    data = da.from_array(mapped, chunks=(1, *mapped.shape[1:])).astype(np.float32)
    pixel = read_pixel_size(path) or 1.0
    return data, {"name": Path(path).stem, "scale": (pixel,) * 3, "metadata": {"source": str(path)}}, "image"


def _particle_stack(path: str) -> LayerData:
    """The particles (or class references) a metadata file lists, as one lazy ``(n, z, y, x)`` stack.

    Every file is checked first (it exists, and all are cubes of one size; headers only). The table's
    columns are in the layer's ``metadata["table"]``, one value per particle, in stack order.
    """
    source = Path(path).resolve()  # relative image names are taken relative to the file's folder
    posed = read_posed_particles(source)
    table = posed.images
    size = particle_box(table, source)
    names = [str(name) for name in table["image"]]
    pixel = posed.pixel_size_A or read_pixel_size(names[0]) or 1.0
    columns = {label: table[label] for label in table.labels}
    meta = {
        "name": source.stem,
        "scale": (1.0, pixel, pixel, pixel),
        "metadata": {"source": str(source), "table": columns},
    }
    return read_volume_stack(names, (size,) * 3), meta, "image"
