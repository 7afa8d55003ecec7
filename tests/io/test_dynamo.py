"""Dynamo tables, checked against the independent oracles of ``oracles.py``.

Ours: ``particle(q) = ref(E (q + s))`` with ``E = Rz(-psi) Ry(-tilt) Rz(-rot)``. Dynamo's:
``particle(q) = template(R (q - d))`` with ``R = Rz(narot) Rx(tilt) Rz(tdrot)`` (its ``dynamo_euler2matrix``)
and ``d = (dx, dy, dz)``. A phantom is turned into particles by one model, the table is read by the other,
and the particles brought back must match the phantom (normalised cross-correlation inside a ball).
Neither the conversion module nor the project's geometry is used here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import eulerangles
import numpy as np
import pytest
from numpy.typing import NDArray

from napari_mltomo.cli import main
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.inputs import run_missing_regions
from napari_mltomo.io import MetaData, MetadataError, read_volume, write_missing_regions, write_volume
from napari_mltomo.io.dynamo import read_dynamo_table, write_dynamo_table
from napari_mltomo.io.interchange import PosedParticles, read_posed_particles
from napari_mltomo.io.results import open_run
from oracles import (
    BAD,
    GOOD,
    PIXEL,
    SPECIAL,
    dynamo_matrix,
    our_matrix,
    our_poses,
    pose_scores,
    posed_phantoms,
    relion_formula,
)

WEDGES = (
    MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60),
    MissingRegion(kind="wedge_y", theta_y0_deg=-45, theta_yf_deg=45),
)
FAST = ("--ang", "30", "--iter", "1", "--dim", "16", "--escape", "0", "--seed", "0", "--quiet")


# --------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class OurParticles:
    """Particles made with our model, and the poses that made them."""

    volumes: NDArray[np.float32]
    particles: PosedParticles


@dataclass(frozen=True)
class DynamoParticles:
    """Particles made with Dynamo's model: the volumes, the table and its data folder, the classes."""

    volumes: NDArray[np.float32]
    table: Path
    data: Path
    classes: NDArray[np.int64]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> OurParticles:
    """Particles ``particle(q) = ref(E (q + s))``: the random poses, then the special ones; two wedges."""
    folder = tmp_path_factory.mktemp("ours")
    rng = np.random.default_rng(7)
    angles, shifts, volumes = posed_phantoms(rng)
    volumes = volumes.astype(np.float32)
    names = [str(write_volume(folder / f"p{i:02d}.mrc", v, PIXEL)) for i, v in enumerate(volumes)]
    count = len(names)
    images = MetaData(
        {
            "image": np.array(names, dtype=object),
            **dict(zip(("angleRot", "angleTilt", "anglePsi"), angles.T, strict=True)),
            **dict(zip(("shiftX", "shiftY", "shiftZ"), shifts.T, strict=True)),
            "ref": np.arange(count) % 3 + 1,
            "pMax": rng.uniform(0, 1, count),
            "missingRegionNumber": np.arange(count) % 2 + 1,
        }
    )
    return OurParticles(volumes, PosedParticles(images, WEDGES, PIXEL))


def _dynamo_row(tag: int, d: NDArray[np.float64], angles: NDArray[np.float64], klass: int) -> list[float]:
    """42 columns: tag, aligned, averaged, dx dy dz, tdrot tilt narot, cc cc2 cpu, ftype 1 with -60..60,
    xmintilt xmaxtilt fs1 fs2, tomo 1, reg, class, then zeros."""
    return [tag, 1, 1, *d, *angles, 0.5, 0, 0, 1, -60, 60, 0, 0, 0, 0, 1, 0, klass, *[0] * 20]


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> DynamoParticles:
    """Particles ``particle(q) = template(R (q - d))`` as ``particle_%05d.em``, tags with gaps, and a
    table written with numpy."""
    folder = tmp_path_factory.mktemp("dynamo")
    angles, shifts, volumes = posed_phantoms(np.random.default_rng(11), dynamo_matrix, sign=-1)
    volumes = volumes.astype(np.float32)
    tags = 3 * np.arange(len(angles)) + 2
    classes = np.arange(len(angles)) % 3  # class 0 is read as 1
    data = folder / "data"
    data.mkdir()
    for tag, volume in zip(tags, volumes, strict=True):
        write_volume(data / f"particle_{tag:05d}.em", volume)
    rows = [_dynamo_row(*row) for row in zip(tags, shifts, angles, classes, strict=True)]
    table = folder / "t.tbl"
    np.savetxt(table, rows, fmt="%.10g")
    return DynamoParticles(volumes, table, data, classes)


# --------------------------------------------------------------------------- the oracles agree


def test_the_oracle_matrices_agree_with_eulerangles() -> None:
    """Dynamo's matrix is eulerangles' 'dynamo' (zxz extrinsic); RELION's is its 'relion' transposed and
    our E of the same angles."""
    for angles in [*np.random.default_rng(3).uniform(-180, 180, (20, 3)), *SPECIAL]:
        np.testing.assert_allclose(
            dynamo_matrix(*angles),
            eulerangles.euler2matrix(angles, axes="zxz", intrinsic=False, right_handed_rotation=True),
            atol=1e-12,
        )
        relion = eulerangles.euler2matrix(angles, axes="zyz", intrinsic=True, right_handed_rotation=True).T
        np.testing.assert_allclose(relion_formula(*angles), relion, atol=1e-12)
        np.testing.assert_allclose(our_matrix(*angles), relion, atol=1e-12)


# --------------------------------------------------------------------------- C: export


def test_export_brings_every_particle_onto_the_phantom_in_dynamo_s_model(
    ours: OurParticles, tmp_path: Path
) -> None:
    table_path = tmp_path / "p.tbl"
    written = write_dynamo_table(table_path, ours.particles, data_dir=tmp_path / "data")
    table = np.loadtxt(table_path, ndmin=2)
    assert table.shape == (len(ours.volumes), 42)
    matrices = [dynamo_matrix(*row).T for row in table[:, 6:9]]
    good, transposed, flipped = pose_scores(ours.volumes, matrices, table[:, 3:6], label="C: exported poses")
    assert good.min() >= GOOD
    assert transposed.max() < BAD and flipped.max() < BAD
    assert written[0] == table_path and len(written) == 1 + len(table)


def test_export_writes_every_column_and_the_particles(ours: OurParticles, tmp_path: Path) -> None:
    images = ours.particles.images
    written = write_dynamo_table(tmp_path / "p.tbl", ours.particles, data_dir=tmp_path / "data")
    table = np.loadtxt(tmp_path / "p.tbl", ndmin=2)
    tags = table[:, 0].astype(int)
    assert table.shape[1] >= 26 and len(set(tags)) == len(tags)
    np.testing.assert_array_equal(tags, np.arange(1, len(images) + 1))
    np.testing.assert_array_equal(table[:, 1:3], 1)  # aligned, averaged
    np.testing.assert_allclose(table[:, 9], images["pMax"])  # cc
    np.testing.assert_array_equal(table[:, 12], 1)  # ftype: a wedge about y
    region = [WEDGES[number - 1] for number in images["missingRegionNumber"]]
    np.testing.assert_array_equal(table[:, 13], [wedge.theta_y0_deg for wedge in region])
    np.testing.assert_array_equal(table[:, 14], [wedge.theta_yf_deg for wedge in region])
    np.testing.assert_array_equal(table[:, 19], 1)  # tomo, counted from 1
    np.testing.assert_array_equal(table[:, 21], images["ref"])  # class
    untouched = [*range(10, 12), *range(15, 19), 20, *range(22, 42)]
    np.testing.assert_array_equal(table[:, untouched], 0)
    assert written[1:] == [tmp_path / "data" / f"particle_{tag:05d}.em" for tag in tags]
    for path, volume in zip(written[1:], ours.volumes, strict=True):
        np.testing.assert_array_equal(read_volume(path), volume)


def test_export_without_regions_writes_no_wedge(ours: OurParticles, tmp_path: Path) -> None:
    particles = PosedParticles(ours.particles.images, (), PIXEL)
    assert write_dynamo_table(tmp_path / "p.tbl", particles) == [tmp_path / "p.tbl"]
    table = np.loadtxt(tmp_path / "p.tbl", ndmin=2)
    np.testing.assert_array_equal(table[:, 12:15], 0)


@pytest.mark.parametrize(
    "region",
    [
        MissingRegion(kind="wedge_x", theta_x0_deg=-60, theta_xf_deg=60),
        MissingRegion(kind="pyramid", theta_y0_deg=-60, theta_yf_deg=60, theta_x0_deg=-50, theta_xf_deg=50),
        MissingRegion(kind="cone", theta_y0_deg=60),
    ],
)
def test_export_refuses_regions_dynamo_cannot_express(
    ours: OurParticles, tmp_path: Path, region: MissingRegion
) -> None:
    particles = PosedParticles(ours.particles.images, (WEDGES[0], region), PIXEL)
    with pytest.raises(ValueError, match=rf"region 2 is a {region.kind}: Dynamo tables only express"):
        write_dynamo_table(tmp_path / "p.tbl", particles, data_dir=tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_export_warns_about_an_asymmetric_wedge(ours: OurParticles, tmp_path: Path) -> None:
    wedge = MissingRegion(kind="wedge_y", theta_y0_deg=-50, theta_yf_deg=65)
    particles = PosedParticles(ours.particles.images, (wedge, WEDGES[1]), PIXEL)
    with pytest.warns(UserWarning, match=r"region 1: .*asymmetric.*not verified"):
        write_dynamo_table(tmp_path / "p.tbl", particles)
    table = np.loadtxt(tmp_path / "p.tbl", ndmin=2)
    np.testing.assert_array_equal(table[0, 13:15], [-50, 65])


def test_export_refuses_odd_boxes_and_other_suffixes(tmp_path: Path) -> None:
    image = write_volume(tmp_path / "odd.mrc", np.zeros((5, 5, 5), np.float32))
    images = MetaData(
        {
            "image": np.array([str(image)], dtype=object),
            "angleRot": [0.0],
            "angleTilt": [0.0],
            "anglePsi": [0.0],
        }
    )
    with pytest.raises(ValueError, match="odd size 5"):
        write_dynamo_table(tmp_path / "p.tbl", PosedParticles(images))
    with pytest.raises(ValueError, match=r"must end in \.tbl"):
        write_dynamo_table(tmp_path / "p.txt", PosedParticles(images))
    assert list(tmp_path.iterdir()) == [image]


# --------------------------------------------------------------------------- D: import


def test_import_brings_every_particle_onto_the_phantom_in_our_model(dynamo: DynamoParticles) -> None:
    matrices, shifts = our_poses(read_dynamo_table(dynamo.table, dynamo.data).images)
    good, transposed, flipped = pose_scores(
        dynamo.volumes, matrices.transpose(0, 2, 1), -shifts, label="D: imported poses"
    )
    assert good.min() >= GOOD
    assert transposed.max() < BAD and flipped.max() < BAD


def test_import_reads_classes_wedges_and_files(dynamo: DynamoParticles) -> None:
    particles = read_posed_particles(dynamo.table, dynamo_data=dynamo.data)
    images = particles.images
    tags = 3 * np.arange(len(images)) + 2
    assert list(images["image"]) == [str(dynamo.data / f"particle_{tag:05d}.em") for tag in tags]
    np.testing.assert_array_equal(images["ref"], np.maximum(dynamo.classes, 1))
    assert particles.regions == (MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60),)
    np.testing.assert_array_equal(images["missingRegionNumber"], 1)
    assert particles.pixel_size_A is None


def test_the_published_pair_gives_relion_s_matrix(tmp_path: Path) -> None:
    """Dynamo (-47.2730, 1.1777, -132.3000) and RELION (137.7000, 1.1777, 42.7270) are one pose
    (eulerangles' test suite); RELION's matrix is our E transposed."""
    write_volume(tmp_path / "particle_00001.em", np.zeros((4, 4, 4), np.float32))
    np.savetxt(tmp_path / "t.tbl", [_dynamo_row(1, np.zeros(3), np.array([-47.2730, 1.1777, -132.3000]), 1)])
    matrices, _ = our_poses(read_dynamo_table(tmp_path / "t.tbl", tmp_path).images)
    np.testing.assert_allclose(matrices[0], relion_formula(137.7000, 1.1777, 42.7270).T, atol=1e-5)


@pytest.mark.parametrize("name", ["particle_000007.em", "particle_00007.mrc"])
def test_import_finds_the_other_particle_names(tmp_path: Path, name: str) -> None:
    write_volume(tmp_path / name, np.zeros((4, 4, 4), np.float32))
    np.savetxt(tmp_path / "t.tbl", [_dynamo_row(7, np.zeros(3), np.zeros(3), 1)])
    assert read_dynamo_table(tmp_path / "t.tbl", tmp_path).images["image"][0] == str(tmp_path / name)


def test_import_without_wedges_defines_no_regions(tmp_path: Path) -> None:
    write_volume(tmp_path / "particle_00001.em", np.zeros((4, 4, 4), np.float32))
    row = _dynamo_row(1, np.zeros(3), np.zeros(3), 0)
    row[12:15] = [0, 0, 0]
    np.savetxt(tmp_path / "t.tbl", [row])
    particles = read_dynamo_table(tmp_path / "t.tbl", tmp_path)
    assert particles.regions == () and "missingRegionNumber" not in particles.images


def _bad_tables() -> list[object]:
    row = " ".join(f"{value:g}" for value in _dynamo_row(1, np.zeros(3), np.zeros(3), 1))
    other = row.replace("1 1 1 ", "2 1 1 ", 1)
    cases = {
        "empty": ("", "empty"),
        "longer row": (row + "\n" + other + " 0\n", r"line 2: has 43 columns"),
        "short table": ("1 1 1 0 0 0\n", "has 6 columns; a Dynamo table has at least 22"),
        "text": (
            row + "\n" + other.replace(" 0 0 1 -60", " 0 0 x -60", 1) + "\n",
            r"line 2: column 13 \(ftype\)",
        ),
        "ftype 3": (
            row + "\n\n" + other.replace(" 0 0 1 -60", " 0 0 3 -60", 1) + "\n",
            r"line 3: wedge type .* 3",
        ),
        "ftype 0 and 1": (
            row + "\n" + other.replace(" 0 0 1 -60 60", " 0 0 0 0 0", 1) + "\n",
            "line 2 has ftype 0",
        ),
        "tilt range": (row.replace("-60 60", "-95 60", 1) + "\n", r"line 1: ymintilt, ymaxtilt"),
        "tag": (
            row + "\n" + other.replace("2 1 1 ", "2.5 1 1 ", 1) + "\n",
            r"line 2: tag must be a whole number",
        ),
        "no file": (
            row + "\n" + other + "\n",
            r"line 2: no volume for tag 2 in .* \(looked for particle_00002\.em",
        ),
    }
    return [pytest.param(text, match, id=name) for name, (text, match) in cases.items()]


@pytest.mark.parametrize(("text", "match"), _bad_tables())
def test_a_malformed_table_gives_one_error_naming_it(tmp_path: Path, text: str, match: str) -> None:
    write_volume(tmp_path / "particle_00001.em", np.zeros((4, 4, 4), np.float32))
    (tmp_path / "bad.tbl").write_text(text)
    with pytest.raises(MetadataError, match=rf"bad\.tbl(, )?.*{match}"):
        read_dynamo_table(tmp_path / "bad.tbl", tmp_path)


# --------------------------------------------------------------------------- round trip


def test_export_then_import_gives_the_same_poses(ours: OurParticles, tmp_path: Path) -> None:
    write_dynamo_table(tmp_path / "p.tbl", ours.particles, data_dir=tmp_path / "data")
    back = read_dynamo_table(tmp_path / "p.tbl", tmp_path / "data")
    before, after = ours.particles.images, back.images
    (matrices, shifts), (matrices_back, shifts_back) = our_poses(before), our_poses(after)
    np.testing.assert_allclose(matrices_back, matrices, atol=1e-6)  # matrices: never Euler triples
    np.testing.assert_allclose(shifts_back, shifts, atol=1e-4)
    np.testing.assert_array_equal(after["ref"], before["ref"])
    assert back.regions == WEDGES
    np.testing.assert_array_equal(after["missingRegionNumber"], before["missingRegionNumber"])
    for name, volume in zip(after["image"], ours.volumes, strict=True):
        np.testing.assert_array_equal(read_volume(name), volume)


# --------------------------------------------------------------------------- through ml_tomo


@pytest.fixture(scope="module")
def wedge_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-iteration, two-class run of the tiny data set (a +-60 degree wedge about y); its root."""
    root = tmp_path_factory.mktemp("run") / "r"
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    assert main([*inputs, "--oroot", str(root), "--nref", "2", *FAST]) == 0
    return root


def test_ml_tomo_export_to_dynamo(wedge_run: Path, tmp_path: Path) -> None:
    out, folder = tmp_path / "p.tbl", tmp_path / "data"
    command = ["export", str(wedge_run), "--to", "dynamo", "-o", str(out), "--dynamo_data", str(folder)]
    assert main(command) == 0
    particles = open_run(wedge_run).read_iteration(1).particles
    table = np.loadtxt(out, ndmin=2)
    assert len(table) == len(particles)
    np.testing.assert_array_equal(table[:, 21], particles["ref"])
    np.testing.assert_array_equal(table[:, 12:15], np.tile([1, -60, 60], (len(table), 1)))
    for tag, image in zip(table[:, 0].astype(int), particles["image"], strict=True):
        np.testing.assert_array_equal(read_volume(folder / f"particle_{tag:05d}.em"), read_volume(image))


def test_ml_tomo_export_of_a_cone_run_is_one_error(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cone = write_missing_regions(tmp_path / "cone.xmd", [MissingRegion(kind="cone", theta_y0_deg=60)])
    root = tmp_path / "run" / "r"
    root.parent.mkdir()
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(cone)]
    assert main([*inputs, "--oroot", str(root), "--nref", "1", *FAST]) == 0
    capsys.readouterr()
    out = tmp_path / "p.tbl"
    assert (
        main(["export", str(root), "--to", "dynamo", "-o", str(out), "--dynamo_data", str(tmp_path / "d")])
        == 2
    )
    error = capsys.readouterr().err
    assert re.fullmatch(r"ml_tomo: error: .*cone.*wedge about y.*\n", error), error
    assert not out.exists() and not (tmp_path / "d").exists()


def test_ml_tomo_refines_a_dynamo_table_with_its_wedge(dynamo: DynamoParticles, tmp_path: Path) -> None:
    root = tmp_path / "r"
    inputs = ["-i", str(dynamo.table), "--dynamo_data", str(dynamo.data)]
    assert main([*inputs, "--nref", "1", "--oroot", str(root), *FAST]) == 0
    run = open_run(root)
    assert run_missing_regions(run) == [MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60)]
    np.testing.assert_array_equal(run.read_iteration(1).particles["missingRegionNumber"], 1)
