"""One run as one stream of events: chunks, states, the end; stopping; the particles checked on the way."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import napari_mltomo.io.volumes as volumes_module
from conftest import TINY_OPTIONS
from napari_mltomo.argv import option_values
from napari_mltomo.core.refine import ChunkProgress, MLState
from napari_mltomo.inputs import RunInputs, read_inputs
from napari_mltomo.io import read_images, read_volume, write_volume
from napari_mltomo.io.run import RunPaths
from napari_mltomo.runner import RunEnd, refine_events


def _inputs(tiny_data: Path, root: Path, *extra: str) -> RunInputs:
    argv = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    values = option_values([*argv, "--oroot", str(root), *TINY_OPTIONS, *extra])
    return read_inputs(values, "ml_tomo test")


def test_one_stream_of_chunks_states_and_the_end(tiny_data: Path, tmp_path: Path) -> None:
    events = list(refine_events(_inputs(tiny_data, tmp_path / "r", "--chunk", "4")))
    chunks = [event for event in events if isinstance(event, ChunkProgress)]
    states = [event for event in events if isinstance(event, MLState)]
    assert isinstance(events[-1], RunEnd) and events[-1].complete
    assert events[-1].state is states[-1] and [s.iteration for s in states] == [0, 1, 2]
    assert {(c.stage, c.done, c.total) for c in chunks} >= {("iteration 2", 3, 3), ("iteration 1", 1, 3)}
    for state in states:  # each state's files are on disk when it arrives
        assert RunPaths(tmp_path / "r").classes(state.iteration).is_file()
    assert RunPaths(tmp_path / "r").particles().is_file()


def test_a_stop_ends_the_stream_after_the_chunk_and_keeps_finished_iterations(
    tiny_data: Path, tmp_path: Path
) -> None:
    stop = threading.Event()
    seen = []
    for event in refine_events(_inputs(tiny_data, tmp_path / "r", "--chunk", "4"), stop):
        seen.append(event)
        if isinstance(event, ChunkProgress) and event.stage == "iteration 2" and event.done == 1:
            stop.set()
    end = seen[-1]
    assert isinstance(end, RunEnd) and not end.complete and end.state.iteration == 1
    paths = RunPaths(tmp_path / "r")
    assert paths.log(1).is_file() and not paths.log(2).exists() and not paths.particles().exists()
    stages = [event.stage for event in seen if isinstance(event, ChunkProgress)]
    assert stages.count("iteration 2") <= 2  # no chunk started after the stop but those already running


def test_particles_are_read_once_per_pass_and_a_nan_is_named(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No extra pass checks the particles: the first pass over them does, and names the file."""
    reads: list[str] = []
    read_block = volumes_module._read_block
    monkeypatch.setattr(volumes_module, "_read_block", lambda path: reads.append(path) or read_block(path))
    events = list(refine_events(_inputs(tiny_data, tmp_path / "r", "--iter", "1")))
    passes = {event.stage for event in events if isinstance(event, ChunkProgress)}
    assert passes == {"starting references", "iteration 1"}  # the engine's passes, no checking pass
    n_particles = len(read_images(tiny_data / "images.xmd"))
    assert len(reads) == len(passes) * n_particles

    folder = tmp_path / "bad"
    folder.mkdir()
    images = read_images(tiny_data / "images.xmd")
    volume = read_volume(images["image"][4])
    volume[3, 4, 5] = np.inf
    write_volume(folder / "bad.mrc", volume)
    images["image"][4] = str(folder / "bad.mrc")
    inputs = _inputs(tiny_data, tmp_path / "nan")
    inputs = RunInputs(**{**vars(inputs), "images": images})
    with pytest.raises(volumes_module.VolumeError, match=r"bad\.mrc: has NaN or Inf voxels"):
        list(refine_events(inputs))
