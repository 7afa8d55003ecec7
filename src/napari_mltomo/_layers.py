"""Results as napari layer data ``(data, kwargs, "image")``, and showing them in a viewer in place.

Layers are named so that a widget finds them again: ``"class 1"`` (reference), ``"class 1 coverage"``
(Fourier coverage, on the maps' grid and scale so that both overlay), ``"aligned particles"`` (one
class's particles in the reference frame, by decreasing pMax) and the missing-region masks (their central
sections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from napari_mltomo.io import MetaData

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "ALIGNED_NAME",
    "MASK_NAME",
    "MASK_SECTIONS",
    "ROTATED_MASK_NAME",
    "LayerData",
    "aligned_stack_layer",
    "class_name",
    "coverage_layers",
    "coverage_name",
    "mask_layer",
    "prepare_image_layers",
    "reference_layers",
    "remove_layers",
    "show_layer",
]

LayerData = tuple[Any, dict[str, Any], str]

ALIGNED_NAME = "aligned particles"
MASK_NAME = "missing region mask"
ROTATED_MASK_NAME = "missing region mask (reference frame)"
#: The central sections of a mask layer, left to right: the plane, and its axes down and across.
MASK_SECTIONS = ("kz = 0: ky down, kx across", "ky = 0: kz down, kx across", "kx = 0: kz down, ky across")
#: Keyword arguments a shown layer takes over from new layer data (the rest is left as the user set it).
_UPDATED = ("scale", "translate", "metadata", "contrast_limits")


def class_name(ref: int) -> str:
    """Layer name of class ``ref`` (1-based)."""
    return f"class {ref}"


def coverage_name(ref: int) -> str:
    """Layer name of the Fourier coverage of class ``ref`` (1-based)."""
    return f"class {ref} coverage"


def reference_layers(
    references: NDArray[np.floating], pixel_size_A: float, iteration: int
) -> list[LayerData]:
    """One layer per class reference ``(K, N, N, N)``, scaled by the pixel size."""
    return [
        (
            np.asarray(volume, dtype=np.float32),
            {
                "name": class_name(k),
                "scale": (pixel_size_A,) * 3,
                "metadata": {"iteration": iteration, "ref": k},
            },
            "image",
        )
        for k, volume in enumerate(references, start=1)
    ]


def coverage_layers(coverage: NDArray[np.floating], pixel_size_A: float, iteration: int) -> list[LayerData]:
    """One layer per class coverage map ``(K, N, N, N)`` (centred Fourier grid), hidden at first."""
    return [
        (
            np.asarray(volume, dtype=np.float32),
            {
                "name": coverage_name(k),
                "scale": (pixel_size_A,) * 3,
                "colormap": "inferno",
                "contrast_limits": _limits(volume, low=0.0),
                "visible": False,
                "metadata": {"iteration": iteration, "ref": k, "space": "Fourier, centred"},
            },
            "image",
        )
        for k, volume in enumerate(coverage, start=1)
    ]


def aligned_stack_layer(
    aligned: Any,
    members: MetaData,
    ref: int,
    pixel_size_A: float,
    iteration: int,
    contrast_limits: tuple[float, float],
) -> LayerData:
    """The particles of class ``ref`` in the reference frame, ``(n, N, N, N)``, in the order of `members`.

    `aligned` is passed on as it is, so that a lazy array (dask) stays lazy, and out of napari's dask cache
    (the stack keeps its particles, and a deferred particle's zeros must not be kept); `contrast_limits` are
    given so that napari does not compute them from the whole stack. ``metadata["table"]`` holds the columns
    of `members` (one value per stack entry).
    """
    meta = {
        "iteration": iteration,
        "ref": ref,
        "table": {label: members[label] for label in members.labels},
    }
    kwargs = {
        "name": ALIGNED_NAME,
        "scale": (1.0, *(pixel_size_A,) * 3),
        "contrast_limits": contrast_limits,
        "metadata": meta,
        "cache": False,
    }
    return aligned, kwargs, "image"


def mask_layer(mask: NDArray[np.floating], name: str = MASK_NAME, **metadata: Any) -> LayerData:
    """A centred Fourier mask ``(N, N, N)`` as a 2D image of its three central sections side by side
    (:data:`MASK_SECTIONS`, ``N // 8`` pixels apart), readable in napari's default 2D view; ``1``
    observed. The mask in the reference frame (:data:`ROTATED_MASK_NAME`) is drawn a row below."""
    size = mask.shape[-1]
    centre, step = size // 2, size + _gap(size)
    sections = np.zeros((size, 2 * step + size), dtype=np.float32)
    for index, plane in enumerate((mask[centre], mask[:, centre], mask[:, :, centre])):
        sections[:, index * step : index * step + size] = plane
    rotated = name == ROTATED_MASK_NAME
    kwargs = {
        "name": name,
        "contrast_limits": (0.0, 1.0),
        "colormap": "magenta" if rotated else "cyan",
        "translate": (step if rotated else 0.0, 0.0),
        "metadata": {**metadata, "sections": MASK_SECTIONS},
    }
    return sections, kwargs, "image"


def prepare_image_layers() -> None:
    """Make a throw-away image layer: napari sets up its units and thumbnails on the first one (0.5 to 2 s),
    which is better spent when a widget opens than when it shows its first layers."""
    from napari.layers import Image

    Image(np.zeros((2, 2, 2), dtype=np.float32))


def show_layer(viewer: napari.Viewer, layer_data: LayerData) -> Layer:
    """Add the layer, or update the viewer's layer of that name in place (same layer object).

    An existing image layer of that name and dimensionality gets the new data, scale, translation, metadata
    and contrast limits (those given that differ); its other settings stay as the user left them. Anything
    else of that name is replaced.
    """
    from napari.layers import Image

    data, kwargs, _ = layer_data
    name = kwargs["name"]
    layer = next((layer for layer in viewer.layers if layer.name == name), None)
    if layer is not None and (not isinstance(layer, Image) or layer.ndim != np.ndim(data)):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        return viewer.add_image(data, **kwargs)
    layer.data = data
    for key in _UPDATED:
        if key in kwargs and not _unchanged(layer, key, kwargs[key]):
            setattr(layer, key, kwargs[key])
    if "contrast_limits" not in kwargs:
        layer.reset_contrast_limits()
    return layer


def _unchanged(layer: Layer, key: str, value: Any) -> bool:
    """Whether the layer's scale, translation or contrast limits are `value` already (napari redoes its
    transforms or colour mapping on every assignment); metadata is always assigned."""
    return key != "metadata" and np.array_equal(getattr(layer, key), value)


def remove_layers(viewer: napari.Viewer, names: list[str] | set[str]) -> None:
    """Remove the viewer's layers of these names (absent ones are skipped)."""
    for name in names:
        if name in viewer.layers:
            viewer.layers.remove(name)


def _gap(size: int) -> int:
    """Pixels between two sections of a mask layer of box `size`."""
    return max(2, size // 8)


def _limits(volume: NDArray[np.floating], low: float) -> tuple[float, float]:
    high = float(np.max(volume)) if np.size(volume) else 1.0
    return (low, high if high > low else low + 1.0)
