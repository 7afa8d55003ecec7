"""A run's exact model files, ``<root>_itNNNNNN_model.npz``: what a restart needs to continue from a state
bit for bit (references, fractions and sigmas in float64, what the trap escape changed last, and the search
stage of ``--refine_to``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from napari_mltomo.core.refine import MLState, StartModel
from napari_mltomo.core.stages import best_poses
from napari_mltomo.core.state import SearchStage
from napari_mltomo.io._atomic import atomic_path
from napari_mltomo.io.metadata import MetadataError

__all__ = ["read_model", "write_model"]


def write_model(path: Path, state: MLState) -> Path:
    """``<root>_itNNNNNN_model.npz``: what ``--restart`` needs to continue from `state` exactly."""
    stage = {}
    if state.stage is not None:  # --refine_to: the search that made it, and the poses a finer one starts from
        stage = {"step_deg": state.stage.step_deg, "stage_iteration": state.stage.iteration}
        if state.fsc is not None:  # by which the step that follows is judged
            stage["fsc"] = state.fsc
        if state.stage.start_resolution is not None:
            stage["start_resolution"] = state.stage.start_resolution
        poses = best_poses(state)
        if poses is not None:
            stage["poses_deg"] = poses
    with atomic_path(path) as temporary, temporary.open("wb") as file:
        np.savez(
            file,
            references=state.references,
            fractions=state.fractions,
            sigma_noise=state.sigma_noise,
            sigma_offset_px=state.sigma_offset_px,
            converged=state.converged,
            escaped_classes=np.array(state.escaped_classes, dtype=np.int64),
            regrouped=np.array(state.regrouped or (), dtype=np.int64),
            **stage,
        )
    return path


def read_model(path: Path, iteration: int) -> StartModel:
    """The exact model of :func:`write_model`."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            stage = None
            if "step_deg" in saved:
                resolution = saved.get("start_resolution")
                stage = SearchStage(float(saved["step_deg"]), int(saved["stage_iteration"]), resolution)
            return StartModel(
                references=saved["references"],
                fractions=saved["fractions"],
                sigma_noise=float(saved["sigma_noise"]),
                sigma_offset_px=float(saved["sigma_offset_px"]),
                iteration=iteration,
                exact=True,
                converged=bool(saved["converged"]),
                stage=stage,
                poses_deg=saved.get("poses_deg"),
                fsc=saved.get("fsc"),
                escaped_classes=tuple(int(k) for k in saved.get("escaped_classes", ())),
                regrouped=_classes_or_none(saved.get("regrouped")),
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise MetadataError(path, f"not an ml_tomo model file ({error})") from None


def _classes_or_none(saved: np.ndarray | None) -> tuple[int, int, int] | None:
    """``(split, spare, kept)`` as :func:`write_model` saved it, or None (saved empty, or not saved)."""
    if saved is None or saved.size != 3:
        return None
    split, spare, kept = (int(k) for k in saved)
    return split, spare, kept
