"""A run's output files (napari_mltomo.io.run): names, contents, atomic writes and restart."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import napari_mltomo.io.volumes as volumes_module
from napari_mltomo.core.fourier import fourier_rescale
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import MLState, SubtomogramSet, iter_refine
from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.io import (
    MetaData,
    MetadataError,
    read_images,
    read_pixel_size,
    read_star,
    read_star_blocks,
    read_volume,
    write_star,
)
from napari_mltomo.io.run import RunPaths, RunWriter, read_command_line, read_restart, remove_temporaries

BOX = 16
PIXEL_A = 2.5
N_PARTICLES = 8
COMMAND = "ml_tomo -i 'my images.xmd' --nref 2 --iter 2 --ang 40 --dim 8 --reg0 2 --reg_steps 2 " + "x" * 80


@pytest.fixture(scope="module", params=[8, 16], ids=["dim8", "dim16"])
def run_states(request: pytest.FixtureRequest) -> list[MLState]:
    """Starting model and two iterations on 8 particles of 16^3 (internal box 8 or 16), regularised."""
    dataset = make_dataset(4, 2, BOX, snr=5.0, seed=0)
    data = SubtomogramSet(
        dataset.volumes, (dataset.region,), np.zeros(N_PARTICLES, dtype=np.intp), dataset.angles_deg
    )
    params = MLParams(
        n_classes=2, max_iter=2, ang_deg=40.0, dim=request.param, reg0=2.0, regf=0.0, reg_steps=2, seed=0
    )
    return [state for state in iter_refine(data, params) if not state.startup_step]


def _images() -> MetaData:
    names = np.array([f"particles/p{i:06d}.mrc" for i in range(N_PARTICLES, 0, -1)], dtype=object)
    return MetaData(
        {"image": names, "missingRegionNumber": np.ones(N_PARTICLES, dtype=np.int64), "note": np.arange(8)}
    )


def _writer(root: Path, images: MetaData | None = None) -> RunWriter:
    return RunWriter(root, _images() if images is None else images, True, PIXEL_A, BOX, COMMAND)


def _write(folder: Path, state: MLState) -> list[Path]:
    return _writer(folder / "run").write_iteration(state)


def test_run_paths_name_every_file_and_find_the_root() -> None:
    paths = RunPaths(Path("out/run"))
    named = {
        paths.particles(12): "run_it000012.doc", paths.particles(): "run_img.xmd",
        paths.classes(12): "run_it000012_ref.xmd", paths.classes(): "run_ref.xmd",
        paths.reference(3, 12): "run_it000012_ref000003.mrc", paths.reference(3): "run_ref000003.mrc",
        paths.unregularised(3, 12): "run_it000012_oriref000003.mrc",
        paths.coverage(3, 12): "run_it000012_wedge000003.mrc",
        paths.fsc(12): "run_it000012.fsc", paths.fsc(): "run.fsc", paths.log(12): "run_it000012_log.xmd",
        paths.model(12): "run_it000012_model.npz",
    }  # fmt: skip
    for path, name in named.items():
        assert path == Path("out", name)
        assert RunPaths.of(path).root == Path("out/run").absolute()
    assert RunPaths.of("out/run").root == Path("out/run").absolute()


def test_starting_model_is_a_restart_point(tmp_path: Path, run_states: list[MLState]) -> None:
    written = _write(tmp_path, run_states[0])
    expected = [
        "run_it000000_ref000001.mrc", "run_it000000_ref000002.mrc",
        "run_it000000_oriref000001.mrc", "run_it000000_oriref000002.mrc", "run_it000000_ref.xmd",
        "run_it000000.doc", "run_it000000_model.npz", "run_it000000_log.xmd",
    ]  # fmt: skip
    assert [path.name for path in written] == expected  # the log last
    assert {path.name for path in tmp_path.iterdir()} == set(expected)
    classes = read_star(tmp_path / "run_it000000_ref.xmd", "classes")
    assert set(classes.labels) == {"image", "enabled", "ref", "weight"}
    np.testing.assert_allclose(classes["weight"], run_states[0].fractions, rtol=1e-5)  # from the start-up
    assert classes["weight"].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(read_star(tmp_path / "run_it000000.doc")["note"], _images()["note"])
    point = read_restart(tmp_path / "run_it000000_log.xmd")
    assert point.iteration == 0 and point.model.exact and not point.model.converged
    np.testing.assert_array_equal(point.model.references, run_states[0].references)  # regularised


def test_iteration_file_names(tmp_path: Path, run_states: list[MLState]) -> None:
    written = _write(tmp_path, run_states[1])
    names = [path.name for path in written]
    expected = {"run_it000001.doc", "run_it000001_ref.xmd", "run_it000001.fsc", "run_it000001_log.xmd"}
    expected.add("run_it000001_model.npz")
    for k in (1, 2):
        expected |= {f"run_it000001_{kind}{k:06d}.mrc" for kind in ("ref", "oriref", "wedge")}
    assert set(names) == expected
    assert names[-1] == "run_it000001_log.xmd"  # the restart marker comes last
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(expected)


def test_particle_table(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[1]
    _write(tmp_path, state)
    doc = read_star(tmp_path / "run_it000001.doc")
    images = _images()
    for label in (*images.labels, "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ"):
        assert label in doc
    results = state.stats.particles
    angles = np.stack([doc["angleRot"], doc["angleTilt"], doc["anglePsi"]], axis=1)
    np.testing.assert_allclose(angles, state.grid.angles_deg[results.orientations], atol=1e-5)
    shifts = np.stack([doc["shiftX"], doc["shiftY"], doc["shiftZ"]], axis=1)
    np.testing.assert_allclose(shifts, results.shifts_px / state.scale, atol=1e-5)
    np.testing.assert_array_equal(doc["ref"], results.classes + 1)
    np.testing.assert_allclose(doc["pMax"], results.pmax, atol=1e-6)
    np.testing.assert_allclose(doc["logLikelihood"], results.log_likelihood, rtol=1e-6)
    np.testing.assert_array_equal(doc["missingRegionNumber"], 1)
    np.testing.assert_array_equal(doc["note"], images["note"])


def test_class_table(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[1]
    _write(tmp_path, state)
    classes = read_star(tmp_path / "run_it000001_ref.xmd", "classes")
    np.testing.assert_array_equal(classes["ref"], [1, 2])
    np.testing.assert_allclose(classes["weight"], state.fractions, atol=1e-6)
    np.testing.assert_allclose(classes["signalChange"], 1000 * state.signal_change, atol=1e-6)
    np.testing.assert_allclose(classes["resolution"], state.resolution_shell / (BOX * PIXEL_A), atol=1e-6)
    for name, k in zip(classes["image"], (1, 2), strict=True):
        assert (tmp_path / name).name == f"run_it000001_ref{k:06d}.mrc"
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize("kind", ["ref", "oriref"])
def test_maps_at_input_box(tmp_path: Path, run_states: list[MLState], kind: str) -> None:
    state = run_states[1]
    _write(tmp_path, state)
    maps = state.references if kind == "ref" else state.unregularised
    expected = fourier_rescale(maps, BOX)
    for k in (1, 2):
        path = tmp_path / f"run_it000001_{kind}{k:06d}.mrc"
        volume = read_volume(path)
        assert volume.shape == (BOX,) * 3
        assert read_pixel_size(path) == pytest.approx(PIXEL_A)
        np.testing.assert_allclose(volume, expected[k - 1], atol=1e-5 * np.abs(expected).max())


def test_wedge_maps_are_the_full_centred_coverage(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[1]
    _write(tmp_path, state)
    half = state.coverage()
    size = state.size
    # Independent Hermitian expansion: the half grid of a real, even map is the rfft of its inverse.
    full = np.fft.fftn(np.fft.irfftn(half, s=(size,) * 3, axes=(1, 2, 3)), axes=(1, 2, 3)).real
    centred = np.fft.fftshift(full, axes=(1, 2, 3))
    start = BOX // 2 - size // 2
    for k in (1, 2):
        wedge = read_volume(tmp_path / f"run_it000001_wedge{k:06d}.mrc")
        assert wedge.shape == (BOX,) * 3
        inner = wedge[start : start + size, start : start + size, start : start + size]
        np.testing.assert_allclose(inner, centred[k - 1], atol=1e-5)
        assert np.abs(wedge).sum() == pytest.approx(np.abs(inner).sum())
        interior = wedge[1:, 1:, 1:]
        np.testing.assert_allclose(interior, interior[::-1, ::-1, ::-1], atol=1e-6)


def test_fsc_file(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[1]
    _write(tmp_path, state)
    blocks = read_star_blocks(tmp_path / "run_it000001.fsc")
    assert list(blocks) == ["class_000001", "class_000002"]
    shells = np.arange(1, state.size // 2 + 1)
    for k, table in enumerate(blocks.values()):
        np.testing.assert_allclose(table["resolutionFreqFourier"], shells / (BOX * PIXEL_A), atol=1e-6)
        np.testing.assert_allclose(table["resolutionFRC"], state.fsc[k, 1:], atol=1e-6)


def test_log(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[1]
    _write(tmp_path, state)
    log_path = tmp_path / "run_it000001_log.xmd"
    log = read_star(log_path)
    assert len(log) == 1
    assert log["logLikelihood"][0] == pytest.approx(state.log_likelihood, rel=1e-6)
    assert log["pMax"][0] == pytest.approx(state.mean_pmax, abs=1e-6)
    assert log["sigmaNoise"][0] == state.sigma_noise
    assert log["sigmaOffset"][0] == pytest.approx(state.sigma_offset_px / state.scale, rel=1e-15)
    assert log["iterationNumber"][0] == 1
    assert log["imageMetaData"][0] == "run_it000001.doc"
    assert log["referenceMetaData"][0] == "run_it000001_ref.xmd"
    assert log["xSize"][0] == state.size
    assert read_command_line(log_path) == COMMAND


def test_read_restart_restores_the_model_exactly(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[-1]
    _write(tmp_path, state)
    point = read_restart(tmp_path / "run_it000002_log.xmd")
    assert point.iteration == point.model.iteration == 2
    assert point.command_line == COMMAND
    model = point.model
    assert model.exact and model.converged == state.converged
    assert (model.sigma_noise, model.sigma_offset_px) == (state.sigma_noise, state.sigma_offset_px)
    np.testing.assert_array_equal(model.fractions, state.fractions)
    np.testing.assert_array_equal(model.references, state.references)


@pytest.mark.parametrize(("escaped", "regrouped"), [((), None), ((0, 1), None), ((1,), (0, 1, 1))])
def test_read_restart_restores_what_the_trap_escape_changed(
    tmp_path: Path,
    run_states: list[MLState],
    escaped: tuple[int, ...],
    regrouped: tuple[int, int, int] | None,
) -> None:
    """The next iteration looks again at the classes the last check changed, restarted or not."""
    state = replace(run_states[-1], escaped_classes=escaped, regrouped=regrouped)
    _write(tmp_path, state)
    model = read_restart(tmp_path / "run_it000002_log.xmd").model
    assert (model.escaped_classes, model.regrouped) == (escaped, regrouped)


def test_read_restart_without_the_model_file(tmp_path: Path, run_states: list[MLState]) -> None:
    """A log of Xmipp or of an earlier version: the model from the log, the class table and the maps."""
    state = run_states[1]
    _write(tmp_path, state)
    (tmp_path / "run_it000001_model.npz").unlink()
    point = read_restart(tmp_path / "run_it000001_log.xmd")
    assert point.iteration == point.model.iteration == 1
    assert not point.model.exact
    assert point.model.sigma_noise == state.sigma_noise
    assert point.model.sigma_offset_px == pytest.approx(state.sigma_offset_px, rel=1e-14)
    np.testing.assert_allclose(point.model.fractions, state.fractions, atol=1e-6)
    assert point.model.references.shape == state.references.shape
    scale = np.abs(state.references).max()
    np.testing.assert_allclose(point.model.references, state.references, atol=1e-6 * scale)


def test_read_restart_from_another_directory(
    tmp_path: Path, run_states: list[MLState], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out").mkdir()
    _write(tmp_path / "out", run_states[1])
    monkeypatch.chdir(tmp_path)
    point = read_restart(Path("out") / "run_it000001_log.xmd")
    assert point.model.references.shape[0] == 2


def test_read_restart_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.xmd"
    write_star(path, MetaData({"weight": [1.0]}), row_format=True)
    with pytest.raises(MetadataError, match=r"other\.xmd.*sigmaNoise"):
        read_restart(path)


def test_final_files(tmp_path: Path, run_states: list[MLState]) -> None:
    state = run_states[-1]
    written = _writer(tmp_path / "run").write_final(state)
    expected = {"run_ref000001.mrc", "run_ref000002.mrc", "run.fsc", "run_img.xmd", "run_ref.xmd"}
    assert {path.name for path in written} == expected
    assert {path.name for path in tmp_path.iterdir()} == expected
    particles = read_star(tmp_path / "run_img.xmd")
    np.testing.assert_array_equal(particles["ref"], state.stats.particles.classes + 1)
    blocks = read_star_blocks(tmp_path / "run_ref.xmd")
    assert list(blocks) == ["classes", "class000001_images", "class000002_images"]
    assert list(blocks["classes"]["image"]) == ["run_ref000001.mrc", "run_ref000002.mrc"]
    members = []
    for k in (1, 2):
        block = blocks[f"class{k:06d}_images"]
        names = list(block["image"])
        assert names == sorted(names)
        np.testing.assert_array_equal(block["ref"], k)
        members += names
    assert sorted(members) == sorted(particles["image"])


def test_final_files_of_a_run_without_iterations(tmp_path: Path, run_states: list[MLState]) -> None:
    _writer(tmp_path / "run").write_final(run_states[0])
    blocks = read_star_blocks(tmp_path / "run_ref.xmd")
    assert len(blocks["class000001_images"]) == len(blocks["class000002_images"]) == 0
    assert len(read_star(tmp_path / "run_img.xmd")) == N_PARTICLES
    assert not (tmp_path / "run.fsc").exists()


def test_final_files_from_an_iteration_on_disk(
    tmp_path: Path, run_states: list[MLState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a restart from the last log writes: the same files as the run's own final copies, in its
    folder or in another."""
    monkeypatch.chdir(tmp_path)
    state, root = run_states[-1], Path("a") / "run"
    _writer(root).write_iteration(state)
    written = _writer(root).write_final(state)
    expected = {path.name: path.read_bytes() for path in written if path.suffix != ".mrc"}
    maps = {path.name: read_volume(path) for path in written if path.suffix == ".mrc"}
    log = root.parent / "run_it000002_log.xmd"
    for path in written:
        path.unlink()
    again = _writer(root).write_final_from(log)
    assert [path.name for path in again] == [path.name for path in written]
    for path in again:
        if path.suffix == ".mrc":
            np.testing.assert_array_equal(read_volume(path), maps[path.name])
        else:
            assert path.read_bytes() == expected[path.name], path.name
    elsewhere = Path("b") / "deeper" / "run"
    _writer(elsewhere).write_final_from(log)
    for name in ("run_img.xmd", "run_ref.xmd"):
        for block, table in read_star_blocks(elsewhere.parent / name).items():
            original = read_star_blocks(root.parent / name)[block]
            if block == "classes":
                assert list(table["image"]) == ["run_ref000001.mrc", "run_ref000002.mrc"]
                continue
            moved, kept = (
                read_images(f"{block}@{folder / name}")["image"] for folder in (elsewhere.parent, root.parent)
            )
            assert [os.path.normpath(path) for path in moved] == [os.path.normpath(path) for path in kept]
            assert table["image"][0].startswith(os.path.join("..", "..", "particles"))
            np.testing.assert_array_equal(table["ref"], original["ref"])


def test_remove_temporaries_of_the_run_only(tmp_path: Path) -> None:
    kept = [
        "run_it000001.doc", ".run_b_it000001.0123456789ab.tmp.doc", ".run_it000001.012345.tmp.doc",
        "notes.0123456789ab.tmp.txt", ".notes.0123456789ab.tmp.txt",
        ".run_it000001_extra.0123456789ab.tmp.doc",
    ]  # fmt: skip
    removed = [
        ".run_it000001.0123456789ab.tmp.doc", ".run_it000002_model.ba9876543210.tmp.npz",
        ".run.0123456789ab.tmp.fsc", ".run_ref000003.0123456789ab.tmp.mrc",
    ]  # fmt: skip
    for name in kept + removed:
        (tmp_path / name).write_text("x")
    assert sorted(path.name for path in remove_temporaries(tmp_path / "run")) == sorted(removed)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(kept)
    assert remove_temporaries(tmp_path / "nowhere" / "run") == []


def test_image_paths_are_relative_to_the_table(
    tmp_path: Path, run_states: list[MLState], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "particles").mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "elsewhere" / "q.mrc")
    images = _images().with_columns(image=np.array([absolute, *_images()["image"][1:]], dtype=object))
    _writer(Path("out") / "run", images).write_iteration(run_states[1])
    doc = read_star(tmp_path / "out" / "run_it000001.doc")
    assert doc["image"][0] == absolute
    assert doc["image"][1] == os.path.join("..", "particles", "p000007.mrc")
    monkeypatch.chdir(tmp_path / "particles")  # any other working directory
    resolved = read_images(tmp_path / "out" / "run_it000001.doc")["image"][1]
    assert os.path.normpath(resolved) == str(tmp_path / "particles" / "p000007.mrc")


def test_interrupted_write_leaves_no_partial_file(
    tmp_path: Path,
    run_states: list[MLState],
    monkeypatch: pytest.MonkeyPatch,
    snapshot: Callable[[Path], dict[str, object]],
) -> None:
    _write(tmp_path, run_states[1])
    before = snapshot(tmp_path)
    original = volumes_module.write_mrc
    calls = []

    def fail_on_third(target: Path, volume: np.ndarray, pixel_size_A: float) -> None:
        calls.append(target)
        if len(calls) == 3:
            target.write_bytes(b"half a header")
            raise OSError(28, "No space left on device")
        original(target, volume, pixel_size_A)

    monkeypatch.setattr(volumes_module, "write_mrc", fail_on_third)
    with pytest.raises(OSError, match="No space"):
        _write(tmp_path, run_states[1])
    after = snapshot(tmp_path)
    assert after.keys() == before.keys()
    for name, content in before.items():
        np.testing.assert_array_equal(after[name], content, err_msg=name)
    (tmp_path / "new").mkdir()
    calls.clear()
    with pytest.raises(OSError, match="No space"):
        _write(tmp_path / "new", run_states[1])
    left = sorted(path.name for path in (tmp_path / "new").iterdir())
    assert left == ["run_it000001_ref000001.mrc", "run_it000001_ref000002.mrc"]
    assert all(read_volume(tmp_path / "new" / name).shape == (BOX,) * 3 for name in left)
