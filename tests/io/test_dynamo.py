"""Dynamo tables, checked against the models of both programs written out here.

Ours: ``particle(q) = ref(E (q + s))`` with ``E = Rz(-psi) Ry(-tilt) Rz(-rot)``. Dynamo's:
``particle(q) = template(R (q - d))`` with ``R = Rz(narot) Rx(tilt) Rz(tdrot)`` (its ``dynamo_euler2matrix``)
and ``d = (dx, dy, dz)``. A phantom is turned into particles by one model, the table is read by the other,
and the particles brought back must match the phantom (normalised cross-correlation inside a ball).
Neither the conversion module nor the project's geometry is used here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import eulerangles
import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from napari_mltomo.cli import main
from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.inputs import run_missing_regions
from napari_mltomo.io import MetaData, MetadataError, read_volume, write_missing_regions, write_volume
from napari_mltomo.io.dynamo import read_dynamo_table, write_dynamo_table
from napari_mltomo.io.interchange import PosedParticles, read_posed_particles
from napari_mltomo.io.results import open_run

N = 32  # even: Dynamo's centre N/2 + 1 (from 1) is our N//2 (from 0)
PIXEL_A = 2.5
N_RANDOM = 14
#: Poses at the poles and at +-90 degrees, where Euler decompositions go wrong.
SPECIAL = ((90, 0, 90), (-90, 90, -90), (0, 180, 90), (90, 180, -90), (-90, 0, 90), (0, 90, -90))
WEDGES = (
    MissingRegion(kind="wedge_y", theta_y0_deg=-60, theta_yf_deg=60),
    MissingRegion(kind="wedge_y", theta_y0_deg=-45, theta_yf_deg=45),
)
GOOD, BAD = 0.99, 0.9  # NCC a right transform must reach, and a wrong one stay below
FAST = ("--ang", "30", "--iter", "1", "--dim", "16", "--escape", "0", "--seed", "0", "--quiet")


# --------------------------------------------------------------------------- the oracles


def _rz(degrees: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rx(degrees: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _dynamo_matrix(tdrot: float, tilt: float, narot: float) -> NDArray[np.float64]:
    """Dynamo's ``dynamo_euler2matrix``: ``Rz(narot) Rx(tilt) Rz(tdrot)``."""
    return _rz(narot) @ _rx(tilt) @ _rz(tdrot)


def _relion_matrix(rot: float, tilt: float, psi: float) -> NDArray[np.float64]:
    """RELION's ``Euler_angles2matrix``, element by element."""
    ca, sa = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    cb, sb = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
    cg, sg = np.cos(np.radians(psi)), np.sin(np.radians(psi))
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )


def _our_matrix(rot: float, tilt: float, psi: float) -> NDArray[np.float64]:
    """Our ``E = Rz(-psi) Ry(-tilt) Rz(-rot)``."""
    return Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T


def _our_poses(images: MetaData) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each row's ``E`` and ``s``."""
    angles = np.stack([images[label] for label in ("angleRot", "angleTilt", "anglePsi")], axis=1)
    shifts = np.stack([images[label] for label in ("shiftX", "shiftY", "shiftZ")], axis=1)
    return np.stack([_our_matrix(*row) for row in angles]), shifts


def _grid() -> NDArray[np.float64]:
    """Centred ``(x, y, z)`` of every voxel ``[k, i, j]`` of the box, as ``(3, N^3)``."""
    k, i, j = np.indices((N, N, N)).reshape(3, -1) - N // 2
    return np.stack([j, i, k]).astype(np.float64)


def _sample(volume: NDArray[np.float32], points: NDArray[np.float64]) -> NDArray[np.float64]:
    """`volume` at centred ``(x, y, z)`` points (cubic spline, zero outside), as a box."""
    x, y, z = points + N // 2
    return map_coordinates(volume, np.stack([z, y, x]), order=3, mode="constant").reshape(N, N, N)


def _ncc(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    """Normalised cross-correlation inside the ball of radius 0.4 N."""
    inside = np.linalg.norm(_grid(), axis=0).reshape(N, N, N) <= 0.4 * N
    return float(np.corrcoef(a[inside], b[inside])[0, 1])


def _phantom() -> NDArray[np.float32]:
    """Four Gaussian blobs, none at the centre, of different sizes and heights."""
    points = _grid()
    blobs = (
        ((5, -3, 2), 1.5, 1.0),
        ((-4, 4, -3), 2.0, 0.7),
        ((2, 6, -4), 2.5, 0.5),
        ((-5, -4, 4), 1.8, 0.85),
    )
    volume = sum(
        height * np.exp(-np.sum((points - np.array(centre)[:, None]) ** 2, axis=0) / (2 * sigma**2))
        for centre, sigma, height in blobs
    )
    return volume.reshape(N, N, N).astype(np.float32)


def _turn_degrees(matrix: NDArray[np.float64]) -> float:
    """The angle a rotation matrix turns by."""
    return float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))))


def _random_angles(
    rng: np.random.Generator, count: int, matrix: Callable[..., NDArray[np.float64]]
) -> NDArray[np.float64]:
    """Euler triples of uniform random rotations turning by 30 to 150 degrees under `matrix`: neither
    near the identity nor near a half turn, so that the transposed matrix is clearly wrong."""
    angles = []
    while len(angles) < count:
        first, last = rng.uniform(-180, 180, 2)
        triple = (first, float(np.degrees(np.arccos(rng.uniform(-1, 1)))), last)
        if 30 <= _turn_degrees(matrix(*triple)) <= 150:
            angles.append(triple)
    return np.array(angles)


def _random_shifts(rng: np.random.Generator, count: int) -> NDArray[np.float64]:
    """Uniform in ``[-3, 3]^3`` pixels, at least 2 pixels long (so that a flipped sign is clearly wrong)."""
    shifts = rng.uniform(-3, 3, size=(8 * count, 3))
    return shifts[np.linalg.norm(shifts, axis=1) >= 2][:count]


# --------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class OurParticles:
    """Particles made with our model, and the poses that made them."""

    phantom: NDArray[np.float32]
    volumes: NDArray[np.float32]
    particles: PosedParticles


@dataclass(frozen=True)
class DynamoParticles:
    """Particles made with Dynamo's model: the table, its data folder and the phantom."""

    phantom: NDArray[np.float32]
    volumes: NDArray[np.float32]
    table: Path
    data: Path
    classes: NDArray[np.int64]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> OurParticles:
    """20 particles ``particle(q) = ref(E (q + s))``: 14 random poses, then the special ones; two wedges."""
    folder = tmp_path_factory.mktemp("ours")
    rng = np.random.default_rng(7)
    angles = np.vstack([_random_angles(rng, N_RANDOM, _our_matrix), SPECIAL])
    shifts = _random_shifts(rng, len(angles))
    phantom, grid = _phantom(), _grid()
    volumes = np.stack(
        [_sample(phantom, _our_matrix(*a) @ (grid + s[:, None])) for a, s in zip(angles, shifts, strict=True)]
    ).astype(np.float32)
    names = [str(write_volume(folder / f"p{i:02d}.mrc", v, PIXEL_A)) for i, v in enumerate(volumes)]
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
    return OurParticles(phantom, volumes, PosedParticles(images, WEDGES, PIXEL_A))


def _dynamo_row(tag: int, d: NDArray[np.float64], angles: NDArray[np.float64], klass: int) -> list[float]:
    """42 columns: tag, aligned, averaged, dx dy dz, tdrot tilt narot, cc cc2 cpu, ftype 1 with -60..60,
    xmintilt xmaxtilt fs1 fs2, tomo 1, reg, class, then zeros."""
    return [tag, 1, 1, *d, *angles, 0.5, 0, 0, 1, -60, 60, 0, 0, 0, 0, 1, 0, klass, *[0] * 20]


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> DynamoParticles:
    """20 particles ``particle(q) = template(R (q - d))`` as ``particle_%05d.em``, tags with gaps, and a
    table written with numpy."""
    folder = tmp_path_factory.mktemp("dynamo")
    rng = np.random.default_rng(11)
    angles = np.vstack([_random_angles(rng, N_RANDOM, _dynamo_matrix), SPECIAL])
    shifts = _random_shifts(rng, len(angles))
    tags = 3 * np.arange(len(angles)) + 2
    classes = np.arange(len(angles)) % 3  # class 0 is read as 1
    phantom, grid = _phantom(), _grid()
    volumes = np.stack(
        [
            _sample(phantom, _dynamo_matrix(*a) @ (grid - d[:, None]))
            for a, d in zip(angles, shifts, strict=True)
        ]
    ).astype(np.float32)
    data = folder / "data"
    data.mkdir()
    for tag, volume in zip(tags, volumes, strict=True):
        write_volume(data / f"particle_{tag:05d}.em", volume)
    rows = [_dynamo_row(*row) for row in zip(tags, shifts, angles, classes, strict=True)]
    table = folder / "t.tbl"
    np.savetxt(table, rows, fmt="%.10g")
    return DynamoParticles(phantom, volumes, table, data, classes)


def _show(label: str, values: list[float]) -> None:
    print(f"{label}: min {min(values):.6f} max {max(values):.6f}")


# --------------------------------------------------------------------------- the oracles agree


def test_the_oracle_matrices_agree_with_eulerangles() -> None:
    """Dynamo's matrix is eulerangles' 'dynamo' (zxz extrinsic); RELION's is its 'relion' transposed and
    our E of the same angles."""
    for angles in [*np.random.default_rng(3).uniform(-180, 180, (20, 3)), *SPECIAL]:
        np.testing.assert_allclose(
            _dynamo_matrix(*angles),
            eulerangles.euler2matrix(angles, axes="zxz", intrinsic=False, right_handed_rotation=True),
            atol=1e-12,
        )
        relion = eulerangles.euler2matrix(angles, axes="zyz", intrinsic=True, right_handed_rotation=True).T
        np.testing.assert_allclose(_relion_matrix(*angles), relion, atol=1e-12)
        np.testing.assert_allclose(_our_matrix(*angles), relion, atol=1e-12)


# --------------------------------------------------------------------------- C: export


def test_export_brings_every_particle_onto_the_phantom_in_dynamo_s_model(
    ours: OurParticles, tmp_path: Path
) -> None:
    table_path = tmp_path / "p.tbl"
    written = write_dynamo_table(table_path, ours.particles, data_dir=tmp_path / "data")
    table = np.loadtxt(table_path, ndmin=2)
    assert table.shape == (len(ours.volumes), 42)
    grid, good, transposed, flipped = _grid(), [], [], []
    for k, (row, particle) in enumerate(zip(table, ours.volumes, strict=True)):
        d, r = row[3:6], _dynamo_matrix(*row[6:9])
        good.append(_ncc(_sample(particle, r.T @ grid + d[:, None]), ours.phantom))
        if k < N_RANDOM:  # a special pose may be its own inverse
            transposed.append(_ncc(_sample(particle, r @ grid + d[:, None]), ours.phantom))
            flipped.append(_ncc(_sample(particle, r.T @ grid - d[:, None]), ours.phantom))
    _show("C: exported poses", good)
    _show("C: transposed", transposed)
    _show("C: shift sign flipped", flipped)
    assert min(good) >= GOOD
    assert max(transposed) < BAD and max(flipped) < BAD
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
    particles = PosedParticles(ours.particles.images, (), PIXEL_A)
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
    particles = PosedParticles(ours.particles.images, (WEDGES[0], region), PIXEL_A)
    with pytest.raises(ValueError, match=rf"region 2 is a {region.kind}: Dynamo tables only express"):
        write_dynamo_table(tmp_path / "p.tbl", particles, data_dir=tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


def test_export_warns_about_an_asymmetric_wedge(ours: OurParticles, tmp_path: Path) -> None:
    wedge = MissingRegion(kind="wedge_y", theta_y0_deg=-50, theta_yf_deg=65)
    particles = PosedParticles(ours.particles.images, (wedge, WEDGES[1]), PIXEL_A)
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
    matrices, shifts = _our_poses(read_dynamo_table(dynamo.table, dynamo.data).images)
    grid, good, transposed, flipped = _grid(), [], [], []
    for k, (particle, e, s) in enumerate(zip(dynamo.volumes, matrices, shifts, strict=True)):
        good.append(_ncc(_sample(particle, e.T @ grid - s[:, None]), dynamo.phantom))
        if k < N_RANDOM:
            transposed.append(_ncc(_sample(particle, e @ grid - s[:, None]), dynamo.phantom))
            flipped.append(_ncc(_sample(particle, e.T @ grid + s[:, None]), dynamo.phantom))
    _show("D: imported poses", good)
    _show("D: transposed", transposed)
    _show("D: shift sign flipped", flipped)
    assert min(good) >= GOOD
    assert max(transposed) < BAD and max(flipped) < BAD


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
    matrices, _ = _our_poses(read_dynamo_table(tmp_path / "t.tbl", tmp_path).images)
    np.testing.assert_allclose(matrices[0], _relion_matrix(137.7000, 1.1777, 42.7270).T, atol=1e-5)


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
    (matrices, shifts), (matrices_back, shifts_back) = _our_poses(before), _our_poses(after)
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
