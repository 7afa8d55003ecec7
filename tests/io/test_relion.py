"""RELION particle STAR files, export and import, against the independent oracles of ``oracles.py``.

Our model: ``particle(q) = ref(E (q + s))``, ``E = Rz(-psi) Ry(-tilt) Rz(-rot)``, ``s`` in pixels.
RELION's (3-D boxes): ``particle(q) = ref(A^T (q + o / p))``, ``A`` from RELION's Euler formula (checked
against eulerangles here), ``o`` the ``rlnOrigin*Angst``. A phantom is turned into particles by one model,
the file is read by the other, and the particles brought back must match the phantom. Nothing here uses
the package's own geometry or pose conversions.
"""

from __future__ import annotations

from pathlib import Path

import eulerangles
import mrcfile
import numpy as np
import pytest
import starfile
from scipy.spatial.transform import Rotation

from napari_mltomo.cli import main, parse_command
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.io import MetaData, MetadataError, read_star_blocks, write_volume
from napari_mltomo.io.interchange import PosedParticles, read_posed_particles
from napari_mltomo.io.relion import read_relion_star, write_relion_star
from napari_mltomo.io.results import open_run
from oracles import (
    BAD,
    GOOD,
    PHANTOM,
    PIXEL,
    POINTS,
    N,
    our_matrix,
    our_poses,
    pose_scores,
    posed_phantoms,
    relion_formula,
)

REGIONS = (
    MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60),
    MissingRegion(kind="wedge_y", theta_y0_deg=-50, theta_yf_deg=50),
)


# --------------------------------------------------------------------------- RELION's side


def relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's A by eulerangles: ZYZ intrinsic right-handed, transposed (a passive rotation)."""
    return eulerangles.euler2matrix(
        np.array([rot, tilt, psi], dtype=float), axes="zyz", intrinsic=True, right_handed_rotation=True
    ).T


def wedge_oracle(region: MissingRegion) -> np.ndarray:
    """A symmetric tilt series about y, centred grid: observed where ``|kz| <= tan(theta) |kx|``."""
    kx, _, kz = (axis.reshape(N, N, N) for axis in POINTS)
    return (np.abs(kz) <= np.tan(np.radians(region.theta_yf_deg)) * np.abs(kx)).astype(np.float32)


def read_mrc(path: str | Path) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float64)


def _relion_triples(rows: MetaData) -> np.ndarray:
    return np.stack([rows["rlnAngleRot"], rows["rlnAngleTilt"], rows["rlnAnglePsi"]], axis=1)


# --------------------------------------------------------------------------- the oracles agree


def test_relion_formula_is_eulerangles_transposed_and_our_matrix() -> None:
    triple = (37.0, 81.0, -123.0)
    np.testing.assert_allclose(relion_formula(*triple), relion_matrix(*triple), atol=1e-12)
    np.testing.assert_allclose(our_matrix(*triple), relion_formula(*triple), atol=1e-12)
    scipy_ours = Rotation.from_euler("ZYZ", triple, degrees=True).as_matrix().T
    np.testing.assert_allclose(our_matrix(*triple), scipy_ours, atol=1e-12)


# --------------------------------------------------------------------------- A: ml_tomo -> RELION


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> PosedParticles:
    """Particles of the phantom made with our model (the random poses, then the special ones), in two
    regions and two classes."""
    folder = tmp_path_factory.mktemp("ours")
    angles, shifts, volumes = posed_phantoms(np.random.default_rng(7))
    names = [
        str(write_volume(folder / f"p{row:02d}.mrc", volume, PIXEL)) for row, volume in enumerate(volumes)
    ]
    count = len(names)
    images = MetaData(
        {
            "image": np.array(names, dtype=object),
            "missingRegionNumber": np.arange(count) % 2 + 1,
            **dict(zip(("angleRot", "angleTilt", "anglePsi"), angles.T, strict=True)),
            **dict(zip(("shiftX", "shiftY", "shiftZ"), shifts.T, strict=True)),
            "ref": (np.arange(count) // 3) % 2 + 1,
            "pMax": np.linspace(0.2, 1.0, count),
            "logLikelihood": np.linspace(-900.0, -100.0, count),
        }
    )
    return PosedParticles(images, REGIONS, PIXEL)


def _export(ours: PosedParticles, folder: Path, layout: str) -> tuple[Path, list[Path]]:
    star = folder / f"{layout}.star"
    return star, write_relion_star(star, ours, layout=layout)


def test_export_brings_every_particle_onto_the_phantom(ours: PosedParticles, tmp_path: Path) -> None:
    star, _ = _export(ours, tmp_path, "relion")
    blocks = read_star_blocks(star)
    optics, rows = blocks["optics"], blocks["particles"]
    pixel = float(optics["rlnImagePixelSize"][0])
    assert pixel == pytest.approx(PIXEL) and len(rows) == len(ours.images)
    matrices = [relion_matrix(*row) for row in _relion_triples(rows)]
    origins = np.stack([rows[f"rlnOrigin{axis}Angst"] for axis in "XYZ"], axis=1) / pixel
    particles = [read_mrc(name) for name in rows["rlnImageName"]]
    exact, transposed, flipped = pose_scores(particles, matrices, -origins, label="export")
    assert exact.min() >= GOOD
    assert transposed.max() < BAD and flipped.max() < BAD


def test_export_reads_the_same_with_starfile(ours: PosedParticles, tmp_path: Path) -> None:
    star, written = _export(ours, tmp_path, "relion")
    assert written[0] == star and all(path.is_file() for path in written)
    ours_view = read_star_blocks(star)
    theirs = starfile.read(star, always_dict=True, parse_as_string=["rlnImageName", "rlnCtfImage"])
    assert set(theirs) == set(ours_view) == {"optics", "particles"}
    for name, block in ours_view.items():
        assert list(theirs[name].columns) == list(block.labels)
        for label in block.labels:
            expected = block[label]
            if expected.dtype == object:
                assert list(theirs[name][label]) == list(expected)
            else:
                np.testing.assert_allclose(theirs[name][label].to_numpy(dtype=float), expected, atol=1e-9)
    optics, rows = theirs["optics"].iloc[0], theirs["particles"]
    assert (optics.rlnImageSize, optics.rlnImageDimensionality, optics.rlnCtfDataAreCtfPremultiplied) == (
        N,
        3,
        0,
    )
    assert (optics.rlnVoltage, optics.rlnSphericalAberration, optics.rlnAmplitudeContrast) == (300, 2.7, 0.1)
    assert optics.rlnOpticsGroupName == "opticsGroup1"
    np.testing.assert_array_equal(rows["rlnClassNumber"], ours.images["ref"])
    np.testing.assert_array_equal(rows["rlnOpticsGroup"], 1)
    np.testing.assert_allclose(rows["rlnMaxValueProbDistribution"], ours.images["pMax"], atol=1e-6)
    np.testing.assert_allclose(rows["rlnLogLikeliContribution"], ours.images["logLikelihood"], atol=1e-6)
    assert all(Path(name).is_absolute() for name in rows["rlnImageName"])


def test_each_ctf_image_is_its_particles_wedge(ours: PosedParticles, tmp_path: Path) -> None:
    star, _ = _export(ours, tmp_path, "relion")
    rows = read_star_blocks(star)["particles"]
    for name, number in zip(rows["rlnCtfImage"], ours.images["missingRegionNumber"], strict=True):
        assert Path(name) == (tmp_path / "relion_wedges" / f"region_{number:03d}.mrc").resolve()
    for number, region in enumerate(REGIONS, start=1):
        volume = read_mrc(tmp_path / "relion_wedges" / f"region_{number:03d}.mrc")
        assert volume.shape == (N, N, N)
        np.testing.assert_array_equal(volume, wedge_oracle(region))
    assert (tmp_path / "relion_missing.xmd").is_file()


def test_relion30_layout_has_pixel_origins_and_a_detector_pixel(ours: PosedParticles, tmp_path: Path) -> None:
    star, _ = _export(ours, tmp_path, "relion30")
    blocks = read_star_blocks(star)
    assert list(blocks) == [""]
    rows = blocks[""]
    for label in ("rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnCtfImage"):
        assert label in rows
    pixel = rows["rlnDetectorPixelSize"] * 1e4 / rows["rlnMagnification"]
    np.testing.assert_allclose(pixel, PIXEL)
    np.testing.assert_allclose(rows["rlnMagnification"], 10000)
    origins = np.stack([rows[f"rlnOrigin{axis}"] for axis in "XYZ"], axis=1)
    np.testing.assert_allclose(origins, ours.images.float_columns(("shiftX", "shiftY", "shiftZ")), atol=1e-6)
    np.testing.assert_array_equal(rows["rlnClassNumber"], ours.images["ref"])
    matrices = [relion_matrix(*row) for row in _relion_triples(rows)]
    particles = [read_mrc(name) for name in rows["rlnImageName"]]
    exact, _, _ = pose_scores(particles, matrices, -origins)
    assert exact.min() >= GOOD


def test_export_refuses_odd_boxes_and_particles_without_poses(ours: PosedParticles, tmp_path: Path) -> None:
    odd = write_volume(tmp_path / "odd.mrc", np.zeros((15, 15, 15)), PIXEL)
    images = ours.images.take(np.arange(2)).with_columns(image=np.array([str(odd)] * 2, dtype=object))
    with pytest.raises(ValueError, match="15x15x15"):
        write_relion_star(tmp_path / "odd.star", PosedParticles(images, (), PIXEL))
    bare = MetaData({"image": ours.images["image"][:2]})
    with pytest.raises(ValueError, match="angleRot"):
        write_relion_star(tmp_path / "bare.star", PosedParticles(bare, (), PIXEL))
    assert not (tmp_path / "odd.star").exists() and not (tmp_path / "bare.star").exists()


@pytest.mark.parametrize("layout", ["relion", "relion30"])
def test_the_export_command_writes_the_runs_particles(tiny_run: Path, tmp_path: Path, layout: str) -> None:
    out = tmp_path / "exported.star"
    assert main(["export", str(tiny_run), "--to", layout, "-o", str(out)]) == 0
    table = open_run(tiny_run).read_iteration(2).particles
    blocks = starfile.read(out, always_dict=True)
    rows = blocks["particles" if layout == "relion" else ""]
    assert len(rows) == len(table)
    np.testing.assert_array_equal(rows["rlnClassNumber"], table["ref"])
    assert all(Path(name).is_file() for name in rows["rlnCtfImage"])
    assert (tmp_path / "exported_missing.xmd").is_file()


# --------------------------------------------------------------------------- B: RELION -> ml_tomo


def relion_inverse(rot: float, tilt: float, psi: float) -> np.ndarray:
    """``A^T``: RELION's particle at ``q`` is its reference at ``A^T (q + o)``."""
    return relion_formula(rot, tilt, psi).T


def _relion_particles(folder: Path, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Particles made with RELION's model in ``folder/Subtomograms``: names relative to ``folder``,
    RELION angles, origins in pixels."""
    angles, origins, volumes = posed_phantoms(np.random.default_rng(seed), relion_inverse)
    (folder / "Subtomograms").mkdir()
    names = []
    for row, particle in enumerate(volumes):
        names.append(f"Subtomograms/t{row:02d}.mrc")
        with mrcfile.new(folder / names[-1]) as mrc:
            mrc.set_data(particle.astype(np.float32))
            mrc.voxel_size = PIXEL
    return names, angles, origins


def _loop(name: str, labels: list[str], rows: list[list[object]]) -> str:
    lines = [f"data_{name}", "", "loop_", *(f"_{label} #{i}" for i, label in enumerate(labels, start=1))]
    lines += ["  ".join(str(value) for value in row) for row in rows]
    return "\n".join(lines) + "\n\n"


def relion31_text(
    names: list[str],
    angles: np.ndarray,
    origins_px: np.ndarray,
    *,
    optics: dict | None = None,
    extra: dict | None = None,
) -> str:
    """A RELION 3.1-5 particle file: optics and particles blocks, origins in Angstrom."""
    optics = {
        "rlnOpticsGroup": 1, "rlnOpticsGroupName": "opticsGroup1", "rlnVoltage": 300.0,
        "rlnSphericalAberration": 2.7, "rlnAmplitudeContrast": 0.1, "rlnImagePixelSize": PIXEL,
        "rlnImageSize": N, "rlnImageDimensionality": 3, **(optics or {}),
    }  # fmt: skip
    labels = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    labels += ["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnClassNumber", "rlnOpticsGroup"]
    rows = [
        [name, *(f"{a:.6f}" for a in triple), *(f"{o * PIXEL:.6f}" for o in origin), row % 3 + 1, 1]
        for row, (name, triple, origin) in enumerate(zip(names, angles, origins_px, strict=True))
    ]
    extra = extra or {}
    labels += list(extra)
    rows = [[*row, *extra.values()] for row in rows]
    return (
        "# version 30001\n\n"
        + _loop("optics", list(optics), [list(optics.values())])
        + _loop("particles", labels, rows)
    )


def relion30_text(names: list[str], angles: np.ndarray, origins_px: np.ndarray) -> str:
    """A RELION 3.0 subtomogram file: one block, origins in pixels, pixel = 5 um * 1e4 / 20000."""
    labels = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ", "rlnImageName"]
    labels += ["rlnMagnification", "rlnDetectorPixelSize", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    labels += ["rlnOriginX", "rlnOriginY", "rlnOriginZ", "rlnClassNumber"]
    rows = [
        [
            "TS_01.mrc",
            100,
            200,
            300,
            name,
            20000.0,
            5.0,
            *(f"{a:.6f}" for a in triple),
            *(f"{o:.6f}" for o in origin),
            1,
        ]
        for name, triple, origin in zip(names, angles, origins_px, strict=True)
    ]
    return _loop("", labels, rows)


@pytest.fixture(scope="module")
def relion_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], np.ndarray, np.ndarray]:
    """A folder of particles made with RELION's model; their relative names, angles and origins (px)."""
    folder = tmp_path_factory.mktemp("relion")
    return (folder, *_relion_particles(folder, seed=11))


def _import_scores(posed: PosedParticles, label: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NCC of ``particle(E^T r - s)`` (every particle), and of the controls ``E r - s`` and ``E^T r + s``
    (the random poses)."""
    matrices, shifts = our_poses(posed.images)
    particles = [read_mrc(name) for name in posed.images["image"]]
    return pose_scores(particles, matrices.transpose(0, 2, 1), -shifts, label)


def test_import_brings_every_particle_onto_the_phantom(relion_set, monkeypatch) -> None:
    folder, names, angles, origins = relion_set
    star = folder / "run_data.star"
    star.write_text(relion31_text(names, angles, origins))
    monkeypatch.chdir(folder.parent)  # the names are not relative to the working directory
    posed = read_relion_star(star)
    assert posed.pixel_size_A == pytest.approx(PIXEL) and posed.regions == ()
    assert list(posed.images["image"]) == [str(folder / name) for name in names]
    np.testing.assert_array_equal(posed.images["ref"], np.arange(len(names)) % 3 + 1)
    np.testing.assert_array_equal(posed.images["missingRegionNumber"], 1)
    exact, transposed, flipped = _import_scores(posed, label="import")
    assert exact.min() >= GOOD
    assert transposed.max() < BAD and flipped.max() < BAD


def test_import_of_a_relion30_file(relion_set) -> None:
    folder, names, angles, origins = relion_set
    star = folder / "warp.star"
    star.write_text(relion30_text(names, angles, origins))
    posed = read_posed_particles(star)
    assert posed.pixel_size_A == pytest.approx(PIXEL)
    np.testing.assert_allclose(posed.images.float_columns(("shiftX", "shiftY", "shiftZ")), origins, atol=1e-6)
    exact, transposed, flipped = _import_scores(posed)
    assert exact.min() >= GOOD
    assert transposed.max() < BAD and flipped.max() < BAD


def test_image_names_follow_the_project_folder(relion_set, tmp_path: Path) -> None:
    folder, names, angles, origins = relion_set
    star = tmp_path / "elsewhere.star"
    star.write_text(relion31_text(names, angles, origins))
    posed = read_relion_star(star, project=folder)
    assert list(posed.images["image"]) == [str(folder / name) for name in names]


def test_the_command_line_takes_a_relion_file_with_missing(relion_set, tiny_data: Path) -> None:
    folder, names, angles, origins = relion_set
    star = folder / "for_cli.star"
    star.write_text(relion31_text(names, angles, origins))
    inputs = parse_command(["-i", str(star), "--missing", str(tiny_data / "wedges.xmd"), "--nref", "2"])
    assert inputs.box_size == N and inputs.params.pixel_size_A == pytest.approx(PIXEL)
    assert len(inputs.regions) == 1 and np.all(inputs.region_index == 0)


REFUSED = {
    "2-D stacks": ("data_general\n\n_rlnTomoSubTomosAre2DStacks 1\n\n", {}, {}, "2-D"),
    "pre-rotated": ("", {}, {"rlnTomoSubtomogramRot": 30.0}, "pre-rotated"),
    "premultiplied": ("", {"rlnCtfDataAreCtfPremultiplied": 1}, {}, "rlnCtfDataAreCtfPremultiplied"),
    "2-D images": ("", {"rlnImageDimensionality": 2}, {}, "rlnImageDimensionality"),
}


def _refused_file(folder: Path, names, angles, origins, case: str) -> Path:
    head, optics, extra, _ = REFUSED[case]
    star = folder / f"{case.replace(' ', '_')}.star"
    star.write_text(head + relion31_text(names, angles, origins, optics=optics, extra=extra))
    return star


@pytest.mark.parametrize("case", list(REFUSED))
def test_unusable_files_are_refused_with_one_message(relion_set, case: str) -> None:
    folder, names, angles, origins = relion_set
    star = _refused_file(folder, names, angles, origins, case)
    with pytest.raises(MetadataError, match=REFUSED[case][3]) as caught:
        read_relion_star(star)
    assert str(caught.value).startswith(f"{star}: ") and "\n" not in str(caught.value)


def test_premultiplied_particles_pass_when_allowed(relion_set) -> None:
    folder, names, angles, origins = relion_set
    star = _refused_file(folder, names, angles, origins, "premultiplied")
    assert len(read_relion_star(star, allow_premultiplied=True).images) == len(names)


@pytest.mark.parametrize(
    "text",
    [
        "data_particles\nloop_\n_rlnImageName\n_rlnAngleRot\na.mrc 1 2 3\nb.mrc\n",
        "data_optics\nloop_\n_rlnOpticsGroup\n1\n",
        "data_particles\nloop_\n_rlnImageName\n_rlnAngleRot\na.mrc ten\n",
        "data_particles\nloop_\n_rlnImageName\n",
    ],
    ids=["ragged", "no particles", "not a number", "empty"],
)
def test_malformed_files_give_a_metadata_error(tmp_path: Path, text: str) -> None:
    star = tmp_path / "bad.star"
    star.write_text(text)
    with pytest.raises(MetadataError, match=str(star)):
        read_relion_star(star)


def test_a_refused_file_on_the_command_line_is_one_error_line(
    relion_set, tiny_data: Path, tmp_path, capsys
) -> None:
    folder, names, angles, origins = relion_set
    star = _refused_file(folder, names, angles, origins, "2-D stacks")
    argv = ["-i", str(star), "--missing", str(tiny_data / "wedges.xmd"), "--nref", "2"]
    assert main([*argv, "--oroot", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ml_tomo: error: ") and str(star) in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("layout", ["relion", "relion30"])
def test_export_then_import_gives_back_every_pose(ours: PosedParticles, tmp_path: Path, layout: str) -> None:
    """The poses of ``ours`` plus tilts outside [0, 180] on Spider particles (converted to MRC on the way)."""
    awkward = np.array([[30.0, -40.0, 50.0], [-170.0, 200.0, 10.0], [90.0, -90.0, -90.0], [0.0, -180.0, 0.0]])
    spider = [str(write_volume(tmp_path / f"s{row}.vol", PHANTOM * (row + 1), PIXEL)) for row in range(4)]
    extra = MetaData(
        {
            "image": np.array(spider, dtype=object),
            "missingRegionNumber": np.array([2, 1, 2, 1]),
            **dict(zip(("angleRot", "angleTilt", "anglePsi"), awkward.T, strict=True)),
            **dict(zip(("shiftX", "shiftY", "shiftZ"), np.full((3, 4), -1.25), strict=True)),
            "ref": np.array([1, 2, 2, 1]),
            "pMax": np.full(4, 0.5),
            "logLikelihood": np.full(4, -5.0),
        }
    )
    count = len(ours.images)
    images = MetaData({label: np.concatenate([ours.images[label], extra[label]]) for label in extra.labels})
    star = tmp_path / "round.star"
    written = write_relion_star(star, PosedParticles(images, REGIONS, PIXEL), layout=layout)
    back = read_relion_star(star)
    (matrices, shifts), (matrices_back, shifts_back) = our_poses(images), our_poses(back.images)
    np.testing.assert_allclose(matrices_back, matrices, atol=1e-6)  # matrices: never Euler triples
    np.testing.assert_allclose(shifts_back, shifts, atol=1e-4)
    for label in ("ref", "missingRegionNumber"):
        np.testing.assert_array_equal(back.images[label], images[label])
    np.testing.assert_allclose(back.images["pMax"], images["pMax"], atol=1e-6)
    assert back.regions == REGIONS and back.pixel_size_A == pytest.approx(PIXEL)
    assert list(back.images["image"][:count]) == list(ours.images["image"])
    converted = [Path(name) for name in back.images["image"][count:]]
    assert all(path.parent == (tmp_path / "round_subtomos").resolve() for path in converted)
    assert len(set(converted)) == 4 and set(converted) <= {path.resolve() for path in written}
    for row, path in enumerate(converted):
        np.testing.assert_allclose(read_mrc(path), PHANTOM * (row + 1), rtol=1e-6, atol=1e-6)
