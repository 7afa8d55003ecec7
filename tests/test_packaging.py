"""Packaging contracts: no Qt below the GUI face, the npe2 manifest, a GUI smoke test."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import distribution
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

DIST_NAME = "napari-mltomo"
GUI_MODULES = ("qtpy", "napari", "magicgui", "PyQt6", "PyQt5", "vispy")


def _imported_gui_modules(*modules: str) -> list[str]:
    """Import ``modules`` in a fresh interpreter; return the GUI modules that came with them."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(set({list(GUI_MODULES)!r}) & set(sys.modules))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "modules",
    [
        ("napari_mltomo",),
        ("napari_mltomo.core",),
        ("napari_mltomo.io",),
        ("napari_mltomo.core", "napari_mltomo.io"),
        ("napari_mltomo.demo", "napari_mltomo.compute"),
        ("napari_mltomo._reader", "napari_mltomo._writer", "napari_mltomo._sample_data"),
        ("napari_mltomo.cli",),
        ("napari_mltomo.inputs", "napari_mltomo.io.results", "napari_mltomo.core.views"),
    ],
    ids=lambda modules: "+".join(modules),
)
def test_headless_modules_do_not_import_gui(modules: tuple[str, ...]) -> None:
    assert _imported_gui_modules(*modules) == []


def _top_level_imports(path: Path) -> set[str]:
    """The top-level packages that a module imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_imports_neither_a_cluster_nor_the_gui() -> None:
    """``core/`` is numerics: the dask.distributed executor lives in ``compute.py`` and is passed in."""
    core = Path(str(files("napari_mltomo") / "core"))
    banned = {"distributed", *GUI_MODULES}
    offenders = {path.name: sorted(_top_level_imports(path) & banned) for path in sorted(core.glob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}


#: The floors of the package, each importing only its own floor and those below (first match wins).
FLOORS: tuple[tuple[str, int], ...] = (
    ("napari_mltomo.core", 0),
    ("napari_mltomo.io", 1),
    ("napari_mltomo.options", 2), ("napari_mltomo.inputs", 2), ("napari_mltomo.runner", 2),
    ("napari_mltomo.compute", 2), ("napari_mltomo.demo", 2), ("napari_mltomo.protein_sets", 2),
    ("napari_mltomo.export", 2), ("napari_mltomo.output_guard", 2), ("napari_mltomo.argv", 2),
    ("napari_mltomo", 3),
)  # fmt: skip
#: Helpers that every face may use (the others are faces of their own, which no face imports).
SHARED_FACE_HELPERS = {
    "napari_mltomo._layers", "napari_mltomo._aligned", "napari_mltomo._widgets._common",
    "napari_mltomo._widgets.paced", "napari_mltomo._widgets.plots", "napari_mltomo._widgets.particle_table",
    "napari_mltomo._widgets.export_dialog",
}  # fmt: skip
#: A widget holding another face's widget whole (the Refinement widget's missing-region tab), not its helpers.
EMBEDDED = {("napari_mltomo._widgets.refinement", "napari_mltomo._widgets.missing_viewer")}


def _floor(module: str) -> int:
    return next(floor for prefix, floor in FLOORS if module == prefix or module.startswith(prefix + "."))


def _package_imports(path: Path) -> set[str]:
    """The ``napari_mltomo`` modules that a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "napari_mltomo" and _is_module(name)}


def _is_module(name: str) -> bool:
    path = Path(str(files("napari_mltomo"))).parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or path.is_dir()


def _source_modules() -> dict[str, Path]:
    package = Path(str(files("napari_mltomo")))
    return {
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(package.rglob("*.py"))
    }


def test_each_floor_imports_only_the_floors_below() -> None:
    """faces -> application (options, inputs, runner, compute) -> io -> core; no face imports another."""
    upward, across = [], []
    for module, path in _source_modules().items():
        for imported in _package_imports(path):
            if _floor(imported) > _floor(module):
                upward.append(f"{module} imports {imported}")
            elif (
                _floor(module) == _floor(imported) == 3
                and module != "napari_mltomo"
                and imported not in SHARED_FACE_HELPERS
                and (module, imported) not in EMBEDDED
                and not imported.startswith(module)
                and imported != "napari_mltomo"
            ):
                across.append(f"{module} imports {imported}")
    assert upward == [] and across == []


def test_tests_and_benchmarks_import_public_names_only() -> None:
    root = Path(__file__).resolve().parent.parent
    private = []
    for path in sorted([*root.joinpath("tests").rglob("*.py"), *root.joinpath("benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_mltomo"):
                private += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def test_manifest_ships_inside_package() -> None:
    manifest = files("napari_mltomo") / "napari.yaml"
    assert manifest.is_file()
    entry_points = distribution(DIST_NAME).entry_points.select(group="napari.manifest")
    found = [(ep.name, ep.value) for ep in entry_points]
    assert found == [(DIST_NAME, "napari_mltomo:napari.yaml")]


def test_top_level_manifest_is_the_packaged_one() -> None:
    """The repository shows ``napari.yaml`` at its top; npe2 loads the one inside the package: one file."""
    top = Path(__file__).resolve().parents[1] / "napari.yaml"
    assert top.is_symlink()
    assert top.resolve() == Path(str(files("napari_mltomo") / "napari.yaml")).resolve()


def test_manifest_name_matches_distribution() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(DIST_NAME)
    assert manifest.name == DIST_NAME
    assert manifest.display_name == "ML-TOMO"


def test_npe2_validate() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", DIST_NAME, "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout.lower()


def _blob(size: int = 16) -> np.ndarray:
    """A (z, y, x) float32 Gaussian blob centred at voxel ``size // 2``."""
    grid = np.arange(size, dtype=np.float32) - size // 2
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")
    return np.exp(-(z**2 + y**2 + x**2) / (2 * (size / 6) ** 2)).astype(np.float32)


@pytest.mark.gui
@pytest.mark.timeout(300)
@pytest.mark.parametrize("ndisplay", [2, 3])
def test_viewer_renders_volume(make_napari_viewer, ndisplay: int) -> None:
    """napari draws a real (non-constant) picture: proves the Qt/OpenGL stack under Xvfb works."""
    # show=True: the canvas of a hidden viewer is never drawn, and its screenshot is all black.
    viewer = make_napari_viewer(show=True)
    viewer.add_image(_blob(), name="blob", colormap="gray")
    viewer.dims.ndisplay = ndisplay
    viewer.reset_view()

    shot = viewer.screenshot(canvas_only=True, flash=False)

    assert shot.ndim == 3
    assert shot.shape[2] == 4
    rgb = shot[..., :3].astype(np.int64)
    brightest, darkest = int(rgb.max()), int(rgb.min())
    assert brightest > 0, "screenshot is all black: no OpenGL drawing reached the canvas"
    assert darkest < brightest, f"screenshot is constant ({darkest})"
    height, width = rgb.shape[:2]
    centre = int(rgb[height // 2, width // 2].sum())
    corner = int(rgb[0, 0].sum())
    assert centre > corner, f"blob not at the canvas centre: centre {centre}, corner {corner}"
