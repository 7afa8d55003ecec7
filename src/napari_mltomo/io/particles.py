"""Particle images named in a table: their boxes checked from the volume headers, and their names made
comparable and resolved against the table's folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from napari_mltomo.io.table import MetaData, MetadataError
from napari_mltomo.io.volumes import volume_shape

__all__ = ["checked_volume_shape", "image_key", "particle_box", "resolve_image", "voxels_text"]


_STACK_PREFIX = re.compile(r"(\d+@)(.+)")


def particle_box(images: MetaData, input_path: str | os.PathLike[str]) -> int:
    """Check that every image of ``images`` exists and all are cubes of one size (headers only).

    Returns
    -------
    int
        The box size.

    Raises
    ------
    MetadataError
        Naming ``input_path`` and the image, if the table is empty or an image is not a cube of the
        first image's size.
    FileNotFoundError
        If an image file is missing.
    """
    first = None
    for name in images["image"]:
        shape = checked_volume_shape(str(name), f"-i {input_path}")
        if shape[0] != shape[1] or shape[1] != shape[2]:
            raise MetadataError(input_path, f"image {name} is {voxels_text(shape)}; particles must be cubes")
        if first is None:
            first = (name, shape)
        elif shape != first[1]:
            raise MetadataError(
                input_path,
                f"image {name} is {voxels_text(shape)} but {first[0]} is {voxels_text(first[1])}; "
                "all particles must have the same box",
            )
    if first is None:
        raise MetadataError(input_path, "lists no images")
    return first[1][0]


def checked_volume_shape(name: str, what: str) -> tuple[int, int, int]:
    """``(z, y, x)`` of the volume ``name`` (an ``N@`` stack prefix allowed); a missing file raises
    ``FileNotFoundError`` naming it and ``what`` asked for it."""
    match = _STACK_PREFIX.fullmatch(name)
    if not Path(match[2] if match else name).is_file():
        raise FileNotFoundError(2, f"{what}: no such file", name)
    return volume_shape(name)


def voxels_text(shape: tuple[int, int, int]) -> str:
    """``"XxYxZ voxels"`` for a ``(z, y, x)`` shape."""
    z, y, x = shape
    return f"{x}x{y}x{z} voxels"


def image_key(name: str) -> str:
    """A file name normalised for matching (absolute, no ``..``), keeping an ``N@`` stack prefix."""
    match = _STACK_PREFIX.fullmatch(name)
    prefix, file = (match[1], match[2]) if match else ("", name)
    return prefix + os.path.normpath(os.path.abspath(file))


def resolve_image(name: str, folder: Path) -> str:
    match = _STACK_PREFIX.fullmatch(name)
    prefix, file = (match[1], match[2]) if match else ("", name)
    if not file or os.path.isabs(file) or os.path.exists(file):
        return name
    return prefix + str(folder / file)
