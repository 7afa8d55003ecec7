"""The napari reader, writer and sample data, called as napari calls them (no viewer needed)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_mltomo._reader import get_reader
from napari_mltomo._sample_data import make_sample
from napari_mltomo._writer import write_image
from napari_mltomo.cli import main
from napari_mltomo.io import (
    MetaData,
    MetadataError,
    VolumeError,
    read_images,
    read_pixel_size,
    read_volume,
    write_star,
    write_volume,
)

BOX = 16


def _particles(folder: Path, n: int = 4) -> tuple[Path, np.ndarray]:
    """``n`` random particles (voxel 2.5 A) as MRC files and an ``images.xmd`` that lists them."""
    volumes = np.random.default_rng(0).normal(size=(n, BOX, BOX, BOX)).astype(np.float32)
    names = []
    for i, volume in enumerate(volumes):
        names.append(f"p{i}.mrc")
        write_volume(folder / names[-1], volume, pixel_size_A=2.5)
    table = MetaData({"image": np.array(names, dtype=object), "missingRegionNumber": np.arange(1, n + 1)})
    write_star(folder / "images.xmd", table)
    return folder / "images.xmd", volumes


@pytest.mark.parametrize("name", ["map.mrc", "map.vol"])
def test_a_volume_opens_as_an_image_with_its_voxel_size(tmp_path: Path, name: str) -> None:
    volume = np.random.default_rng(1).normal(size=(BOX, BOX, BOX)).astype(np.float32)
    write_volume(tmp_path / name, volume, pixel_size_A=3.0)
    reader = get_reader(str(tmp_path / name))
    [(data, meta, kind)] = reader(str(tmp_path / name))
    assert kind == "image"
    np.testing.assert_array_equal(np.asarray(data), volume)
    assert meta["scale"] == (3.0, 3.0, 3.0)


def test_a_metadata_file_opens_its_particles_as_a_lazy_stack(tmp_path: Path) -> None:
    path, volumes = _particles(tmp_path)
    [(data, meta, kind)] = get_reader(str(path))(str(path))
    assert kind == "image" and isinstance(data, da.Array)
    assert data.shape == (4, BOX, BOX, BOX)
    np.testing.assert_array_equal(data[2].compute(), volumes[2])
    assert meta["scale"] == (1.0, 2.5, 2.5, 2.5)
    np.testing.assert_array_equal(meta["metadata"]["table"]["missingRegionNumber"], [1, 2, 3, 4])


def test_a_runs_reference_table_opens_its_class_references(tmp_path: Path) -> None:
    path, _ = _particles(tmp_path, n=6)
    root = tmp_path / "run" / "r"
    options = ["--nref", "2", "--iter", "1", "--ang", "40", "--escape", "0", "--quiet"]
    assert main(["-i", str(path), "--oroot", str(root), *options]) == 0
    [(data, meta, _)] = get_reader(f"{root}_ref.xmd")(f"{root}_ref.xmd")
    assert data.shape == (2, BOX, BOX, BOX)
    np.testing.assert_allclose(data[1].compute(), read_volume(f"{root}_ref000002.mrc"))
    assert meta["metadata"]["table"]["ref"].tolist() == [1, 2]


@pytest.mark.parametrize(("to", "name"), [("relion", "p.star"), ("dynamo", "p.tbl")])
def test_an_exported_relion_or_dynamo_table_opens_as_the_runs_particles(
    tmp_path: Path, to: str, name: str
) -> None:
    path, _ = _particles(tmp_path, n=6)
    root = tmp_path / "run" / "r"
    options = ["--nref", "2", "--iter", "1", "--ang", "40", "--escape", "0", "--quiet"]
    assert main(["-i", str(path), "--oroot", str(root), *options]) == 0
    out = tmp_path / "out" / name
    data_folder = ["--dynamo_data", str(out.parent)] if to == "dynamo" else []  # where the reader looks
    assert main(["export", str(root), "--to", to, "-o", str(out), *data_folder]) == 0
    [(data, meta, _)] = get_reader(str(out))(str(out))
    run_table = read_images(f"{root}_img.xmd")
    assert data.shape == (6, BOX, BOX, BOX)
    np.testing.assert_allclose(data[3].compute(), read_volume(str(run_table["image"][3])), atol=1e-6)
    np.testing.assert_array_equal(meta["metadata"]["table"]["ref"], run_table["ref"])


def test_other_files_are_left_to_other_readers(tmp_path: Path) -> None:
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "a.mrc"), str(tmp_path / "b.mrc")]) is None


def _broken_table(folder: Path) -> Path:
    (folder / "broken.xmd").write_text("data_\nloop_\n_image\n_ref\np0.mrc\n")
    return folder / "broken.xmd"


def _empty_table(folder: Path) -> Path:
    write_star(folder / "empty.xmd", MetaData({"image": np.array([], dtype=object)}))
    return folder / "empty.xmd"


def _missing_particle(folder: Path) -> Path:
    path, _ = _particles(folder)
    (folder / "p2.mrc").unlink()
    return path


def _mixed_boxes(folder: Path) -> Path:
    path, _ = _particles(folder)
    write_volume(folder / "p3.mrc", np.zeros((8, 8, 8), np.float32))
    return path


def _truncated_volume(folder: Path) -> Path:
    write_volume(folder / "cut.mrc", np.zeros((BOX, BOX, BOX), np.float32))
    (folder / "cut.mrc").write_bytes((folder / "cut.mrc").read_bytes()[:2000])
    return folder / "cut.mrc"


UNREADABLE = {
    "malformed table": (_broken_table, "broken.xmd, line 5"),
    "empty table": (_empty_table, "lists no images"),
    "missing particle": (_missing_particle, "p2.mrc"),
    "particles of two sizes": (_mixed_boxes, "p3.mrc is 8x8x8 voxels"),
    "truncated volume": (_truncated_volume, "cut.mrc"),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_file_gives_one_error_naming_it(tmp_path: Path, case: str) -> None:
    """napari shows a reader's exception as one notification; ours names the file at fault."""
    from napari.components import ViewerModel
    from npe2 import PluginManager

    PluginManager.instance().discover()  # as napari does at start-up
    make, expected = UNREADABLE[case]
    path = make(tmp_path)
    with pytest.raises((MetadataError, VolumeError, FileNotFoundError)) as caught:
        ViewerModel().open(str(path), plugin="napari-mltomo")
    assert expected in str(caught.value)


def test_relative_names_are_found_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path, volumes = _particles(folder)
    monkeypatch.chdir(tmp_path)
    relative = str(path.relative_to(tmp_path))
    [(data, _, _)] = get_reader(relative)(relative)
    monkeypatch.chdir(tmp_path.parent)
    np.testing.assert_array_equal(data[3].compute(), volumes[3])


@pytest.mark.parametrize("name", ["out.mrc", "out.vol"])
def test_writer_round_trip_keeps_voxels_and_voxel_size(tmp_path: Path, name: str) -> None:
    volume = np.random.default_rng(2).normal(size=(BOX, BOX, BOX)).astype(np.float32)
    [written] = write_image(str(tmp_path / name), volume, {"scale": (4.0, 4.0, 4.0)})
    np.testing.assert_array_equal(read_volume(written), volume)
    assert read_pixel_size(written) == pytest.approx(4.0)


def test_writer_takes_a_plane_as_one_slice_and_refuses_a_stack(tmp_path: Path) -> None:
    plane = np.arange(BOX * BOX, dtype=np.float32).reshape(BOX, BOX)
    [written] = write_image(str(tmp_path / "plane.mrc"), plane, {"scale": (2.0, 2.0)})
    np.testing.assert_array_equal(read_volume(written), plane[None])
    with pytest.raises(TypeError, match=r"stack\.mrc"):
        write_image(str(tmp_path / "stack.mrc"), np.zeros((2, BOX, BOX, BOX)), {})


def test_sample_data_carries_the_ground_truth() -> None:
    particles, maps = make_sample()
    assert particles[0].shape == (72, 24, 24, 24) and maps[0].shape == (3, 24, 24, 24)
    truth = particles[1]["metadata"]["table"]
    assert sorted(set(truth["ref"].tolist())) == [1, 2, 3]
    assert len(truth["angleRot"]) == 72


@pytest.mark.gui
@pytest.mark.timeout(300)
def test_viewer_opens_particles_and_sample_through_the_manifest(make_napari_viewer, tmp_path: Path) -> None:
    """napari finds the reader and the sample data by the manifest alone."""
    path, _ = _particles(tmp_path)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-mltomo")
    assert layer.data.shape == (4, BOX, BOX, BOX)
    assert tuple(layer.scale) == (1.0, 2.5, 2.5, 2.5)
    sample = viewer.open_sample("napari-mltomo", "subtomograms")
    assert [layer.name for layer in sample] == ["synthetic particles", "true class maps"]
