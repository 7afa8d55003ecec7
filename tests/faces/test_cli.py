"""The ``ml_tomo`` command line: options, the seed's example commands, errors, outputs, restart, demo."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import napari_mltomo.demo as demo
import napari_mltomo.io.volumes as volumes_module
import napari_mltomo.runner as runner
from napari_mltomo.cli import main, parse_command
from napari_mltomo.core.synthetic import make_dataset
from napari_mltomo.inputs import RunInputs
from napari_mltomo.io import (
    MetaData,
    read_star,
    read_star_blocks,
    read_volume,
    write_star,
    write_volume,
)
from napari_mltomo.io.run import RunWriter
from napari_mltomo.options import OPTIONS

#: Every option of the seed document and ARCHITECTURE.md section 3, plus ours.
SEED_OPTIONS = (
    "-i", "--oroot", "-o", "--nref", "--ref", "--doc", "--keep_angles", "--missing", "--iter", "--ang",
    "--ang_search", "--psi_sampling", "--dont_limit_psirange", "--limit_trans", "--tilt0", "--tiltF",
    "--sym", "--dim", "--maxres", "--perturb", "--reg0", "--regF", "--reg_steps", "--dont_rotate",
    "--dont_align", "--only_average", "--mask", "--maxCC", "--dont_impute", "--noimp_threshold",
    "--impute_iter", "--istart", "--noise", "--offset", "--frac", "--restart", "--fix_sigma_noise",
    "--fix_sigma_offset", "--fix_fractions", "--eps", "--pixel_size", "--thr", "--filter", "--ini_filter",
    "--no_SMALLANGLE",
)  # fmt: skip
OUR_OPTIONS = ("--seed", "--scheduler", "--workers", "--chunk", "--quiet")
HELP_GROUPS = (
    "Input and output", "Angular sampling", "Regularisation", "Others", "Additional options", "napari-mltomo",
)  # fmt: skip

#: The example commands of the seed document, verbatim.
SEED_EXAMPLES = (
    "ml_tomo -i images.sel --oroot run1_align/nref1_15deg --nref 1 --doc images.doc --missing "
    "wedges.doc --iter 15 --ang 15 --dim 32 --perturb",
    "ml_tomo -i images.sel --oroot run1_align/nref1_10deg --nref 1 --doc "
    "run1_align/nref1_15deg_it000015.doc --keep_angles --missing wedges.doc --iter 5 --ang 10 "
    "--ang_search 50 --maxres 0.35 --perturb",
    "ml_tomo -i images.sel --oroot run1_align/nref1_5deg --nref 1 --doc "
    "run1_align/nref1_10deg_it000005.doc --keep_angles -missing wedges.doc --iter 5 --ang 5 "
    "--ang_search 25 --maxres 0.35 -perturb",
    "ml_tomo -i images.sel --oroot run2_3classes/nref3_10deg  --nref 3 --doc "
    "run1_align/nref1_5deg_it000005.doc --keep_angles --missing wedges.doc --iter 20 --ang 10 "
    "--ang_search 50 --maxres 0.35 --perturb --reg0 5 --regF 0 --reg_steps 5",
    "ml_tomo -i images.sel --oroot run2_3classes/nref3_5deg --nref 3 --doc "
    "run2_3classes/nref3_10deg_it000020.doc --keep_angles --missing wedges.doc --iter 5 --ang 5 "
    "--ang_search 25 --maxres 0.35 --perturb",
    "ml_tomo -i images.sel --oroot run2_3classes/nref3_noalign  --nref 3 --doc "
    "run1_align/nref1_5deg_it000005.doc --keep_angles --missing wedges.doc --iter 20 --dont_align "
    "--maxres 0.35 --reg0 5 --regF 0 --reg_steps 5 --mask interesting.msk ",
    "ml_tomo -i images.sel --oroot run3_3classes/nref3_15deg --nref 3 --doc images.doc --missing "
    "wedges.doc --iter 25 --ang 15 --dim 32 --perturb --reg0 5 --regF 0 --reg_steps 5",
    "ml_tomo -i images.sel --oroot run4_extref/15deg --ref myreference.vol --doc images.doc --missing"
    " wedges.doc --iter 1 --ang 15 ",
    "ml_tomo -i images.sel --oroot run4_extref/7deg --ref myreference.vol --doc "
    "run4_extref/15deg_it000001.doc --missing wedges.doc --iter 1 --ang 7 --ang_search 20",
    "ml_tomo -i images.sel --oroot run4_extref/3deg --ref myreference.vol --doc "
    "run4_extref/7deg_it000001.doc --missing wedges.doc --iter 1 --ang 3 --ang_search 10",
    # README.md, and the seed's headerless -i example
    "ml_tomo -i images.sel --oroot run3_3classes/nref3_15deg --nref 3 --missing wedges.doc --iter 25 "
    "--ang 15 --dim 32 --perturb",
    "ml_tomo -i seed_rows.txt --nref 1 --missing wedges.doc",
)
#: Options of the examples that are refused for now, with the number of values each takes.

SEED_BOX = 32
TINY_BOX = 16
RUN_ARGS = ("--nref", "2", "--ang", "40", "--dim", "16", "--seed", "0", "--quiet")


# --------------------------------------------------------------------------- data


def _write_tiny_dataset(folder: Path) -> Path:
    """8 particles of 16^3 (2 classes, +-60 degree wedge) as MRC files plus images.xmd and wedges.xmd."""
    dataset = make_dataset(4, 2, TINY_BOX, snr=5.0, seed=0)
    (folder / "particles").mkdir(parents=True)
    names = []
    for i, volume in enumerate(dataset.volumes, start=1):
        names.append(f"particles/p{i:06d}.mrc")
        write_volume(folder / names[-1], volume)
    images = MetaData(
        {"image": np.array(names, dtype=object), "missingRegionNumber": np.ones(len(names), dtype=np.int64)}
    )
    write_star(folder / "images.xmd", images)
    wedges = MetaData.from_rows(
        ("missingRegionNumber", "missingRegionType", "missingRegionThetaY0", "missingRegionThetaYF"),
        [(1, "wedge_y", -60.0, 60.0)],
    )
    write_star(folder / "wedges.xmd", wedges)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data set, plus angles.xmd: its particles in reverse order with angles and shifts."""
    folder = _write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    images = read_star(folder / "images.xmd")
    n = len(images)
    table = images.take(np.arange(n)[::-1]).with_columns(
        angleRot=np.arange(n, dtype=float)[::-1], angleTilt=10.0, anglePsi=20.0,
        shiftX=1.0, shiftY=-1.0, shiftZ=0.5, ref=1, missingRegionNumber=1,
    )  # fmt: skip
    write_star(folder / "angles.xmd", table)
    return folder


def _inputs(folder: Path) -> list[str]:
    return ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd")]


@pytest.fixture(scope="module")
def full_run(tiny: Path) -> Path:
    """An uninterrupted 2-iteration run; returns its root."""
    root = tiny / "full" / "run"
    assert main([*_inputs(tiny), "--oroot", str(root), "--iter", "2", *RUN_ARGS]) == 0
    return root


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ml_tomo: error: ")
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- options


def test_help_lists_every_option_in_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    text = capsys.readouterr().out
    for option in (*SEED_OPTIONS, *OUR_OPTIONS):
        assert f"{option} " in text or f"{option}," in text or f"{option}\n" in text, option
    positions = [text.index(f"\n{title}") for title in HELP_GROUPS]
    assert positions == sorted(positions)
    assert "ml_tomo demo" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sym", "c0"], "--sym c0: unknown symmetry group; use c1, cN, dN, t, o or i"),
        (["-sym", "d2h"], "--sym d2h: groups with a mirror plane or an inversion centre are not supported"),
    ],
)
def test_an_unsupported_symmetry_is_refused(
    capsys: pytest.CaptureFixture[str], tiny: Path, extra: list[str], message: str
) -> None:
    assert main([*_inputs(tiny), "--nref", "1", *extra]) == 2
    assert _error_line(capsys).startswith(f"ml_tomo: error: {message}")


def test_help_gives_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines at spaces and hyphens
    for option in OPTIONS:
        assert "(default:" in option.help_text, option.name
        assert "".join(option.help_text.split()) in text, option.name


@pytest.mark.parametrize("value", ["-1", "0", "-5"])
def test_ang_search_without_a_range_is_accepted(tiny: Path, value: str) -> None:
    assert parse_command([*_inputs(tiny), "--nref", "1", "--ang_search", value]).params.ang_deg == 10.0


def test_sym_c1_is_accepted(tiny: Path) -> None:
    parse_command([*_inputs(tiny), "--nref", "1", "--sym", "C1"])


def test_single_dash_spellings(tiny: Path) -> None:
    request = parse_command(
        ["-i", str(tiny / "images.xmd"), "-missing", str(tiny / "wedges.xmd"), "-nref", "2", "-perturb",
         "-iter", "3", "-ang=30", "-psi_sampling", "-1", "-oroot", "out/x", "-no_SMALLANGLE"]
    )  # fmt: skip
    params = request.params
    assert (params.n_classes, params.max_iter, params.ang_deg, params.perturb) == (2, 3, 30.0, True)
    assert params.psi_sampling_deg is None and params.small_angle is False
    assert request.oroot == Path("out/x")
    assert len(request.regions) == 1


def test_single_dash_negative_value_is_a_value(capsys: pytest.CaptureFixture[str], tiny: Path) -> None:
    assert main([*_inputs(tiny), "--nref", "1", "-tilt0", "-5"]) == 2
    assert "--tilt0" in _error_line(capsys)


def test_options_reach_the_parameters(tiny: Path) -> None:
    request = parse_command(
        [*_inputs(tiny), "--nref", "2", "--iter", "7", "--istart", "2", "--ang", "15", "--psi_sampling", "20",
         "--tilt0", "10", "--tiltF", "170", "--limit_trans", "3", "--dim", "8", "--maxres", "0.3",
         "--reg0", "5", "--regF", "1", "--reg_steps", "3", "--impute_iter", "2", "--noimp_threshold", "0.5",
         "--noise", "2", "--offset", "4", "--fix_sigma_noise", "--fix_sigma_offset", "--fix_fractions",
         "--frac", "0.25,0.75", "--keep_angles", "--doc", str(tiny / "angles.xmd"), "--eps", "1e-4",
         "--pixel_size", "3.5", "--thr", "3", "--chunk", "5", "--seed", "9", "--quiet", "--perturb",
         "--escape", "2", "--dont_impute", "--filter", "--ini_filter"]
    )  # fmt: skip
    params = request.params
    expected = dict(
        n_classes=2, max_iter=7, istart=2, ang_deg=15.0, psi_sampling_deg=20.0, tilt0_deg=10.0,
        tiltf_deg=170.0, limit_trans_px=3.0, dim=8, maxres=0.3, reg0=5.0, regf=1.0, reg_steps=3,
        impute_iter=2, noimp_threshold=0.5, noise_sigma=2.0, offset_sigma_px=4.0, fix_sigma_noise=True,
        fix_sigma_offset=True, fix_fractions=True, fractions=(0.25, 0.75), keep_angles=True, eps=1e-4,
        pixel_size_A=3.5, threads=3, chunk_size=5, seed=9, perturb=True, small_angle=True, dont_impute=True,
        filter_references=True, filter_initial=True,
        escape=0,  # --keep_angles turns the annealed start-up off
    )  # fmt: skip
    assert {name: getattr(params, name) for name in expected} == expected
    assert (request.size, request.box_size, request.quiet) == (8, TINY_BOX, True)


def test_defaults(tiny: Path) -> None:
    request = parse_command([*_inputs(tiny), "--nref", "1"])
    params = request.params
    assert (params.max_iter, params.ang_deg, params.dim, params.psi_sampling_deg) == (25, 10.0, None, None)
    assert (params.chunk_size, params.threads, params.seed, params.reg_steps) == (None, 1, 0, 5)
    assert (params.noise_sigma, params.offset_sigma_px, params.eps, params.maxres) == (1.0, 3.0, 5e-5, 0.5)
    assert params.escape == 5 and not params.dont_impute
    assert request.oroot == Path("mltomo")
    assert (request.workers, request.scheduler, request.restart) == (None, None, None)
    assert params.pixel_size_A == 1.0  # from the particle headers


def test_doc_columns_are_merged_by_image(tiny: Path) -> None:
    request = parse_command([*_inputs(tiny), "--nref", "1", "--doc", str(tiny / "angles.xmd")])
    np.testing.assert_array_equal(request.images["angleRot"], np.arange(8.0))
    np.testing.assert_array_equal(request.images["shiftY"], -1.0)
    assert list(request.images["image"]) == list(
        parse_command([*_inputs(tiny), "--nref", "1"]).images["image"]
    )


@pytest.mark.parametrize(
    ("text", "expected"), [("0.2,0.8", (0.2, 0.8)), ("fractions.xmd", (0.4, 0.6))], ids=["numbers", "file"]
)
def test_frac(tiny: Path, text: str, expected: tuple[float, ...]) -> None:
    write_star(tiny / "fractions.xmd", MetaData({"ref": [1, 2], "weight": [0.4, 0.6]}))
    value = str(tiny / text) if text.endswith(".xmd") else text
    assert parse_command([*_inputs(tiny), "--nref", "2", "--frac", value]).params.fractions == expected


def test_pixel_size_from_the_header(tmp_path: Path) -> None:
    folder = _write_tiny_dataset(tmp_path / "data")
    for path in (folder / "particles").iterdir():
        write_volume(path, read_volume(path), pixel_size_A=4.2)
    assert parse_command([*_inputs(folder), "--nref", "1"]).params.pixel_size_A == pytest.approx(4.2)
    assert parse_command([*_inputs(folder), "--nref", "1", "--pixel_size", "2"]).params.pixel_size_A == 2.0


def test_pixel_size_without_header_value_is_one(tmp_path: Path) -> None:
    folder = _write_tiny_dataset(tmp_path / "data")
    for path in (folder / "particles").iterdir():
        data = read_volume(path)
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = 0.0
    assert parse_command([*_inputs(folder), "--nref", "1"]).params.pixel_size_A == 1.0


def test_references_from_a_volume_and_from_metadata(tiny: Path) -> None:
    write_volume(tiny / "ref1.vol", np.zeros((TINY_BOX,) * 3, np.float32))
    write_volume(tiny / "ref2.mrc", np.ones((TINY_BOX,) * 3, np.float32))
    single = parse_command([*_inputs(tiny), "--ref", str(tiny / "ref1.vol")])
    assert single.params.n_classes == 1 and single.reference_weights is None
    table = MetaData({"image": np.array(["ref1.vol", "ref2.mrc"], dtype=object), "weight": [0.3, 0.7]})
    write_star(tiny / "refs.xmd", table)
    several = parse_command([*_inputs(tiny), "--ref", str(tiny / "refs.xmd")])
    assert several.params.n_classes == 2
    assert [Path(name).name for name in several.reference_files] == ["ref1.vol", "ref2.mrc"]
    np.testing.assert_allclose(several.reference_weights, [0.3, 0.7])


# --------------------------------------------------------------------------- the seed's examples


@pytest.fixture
def seed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the seed's examples name, in the working directory (32^3 Spider particles)."""
    monkeypatch.chdir(tmp_path)
    names = [f"32_{i:06d}.scl" for i in (1, 2, 3)]
    rng = np.random.default_rng(0)
    for name in (*names, "myreference.vol"):
        write_volume(name, rng.normal(size=(SEED_BOX,) * 3).astype(np.float32))
    write_volume("interesting.msk", rng.random((SEED_BOX,) * 3).astype(np.float32))
    table = MetaData(
        {"image": np.array(names, dtype=object), "missingRegionNumber": np.ones(3, dtype=np.int64)}
    )
    write_star("images.sel", table)  # Xmipp 3 writes .sel files as STAR
    Path("wedges.doc").write_text("# Wedgeinfo\n   1  wedge_y  -64  64\n")
    legacy = [
        " ; Headerinfo columns: rot (1) , tilt (2), psi (3), Xoff (4), Yoff (5), Zoff (6), Ref (7), Wedge (8)"
    ]
    for i, name in enumerate(names):
        legacy += [f" ; {name}", f"    {i + 1} 8 {10.0 * i} 20.0 30.0 1.0 0.0 -1.0 1 1"]
    Path("images.doc").write_text("\n".join(legacy) + "\n")
    with_angles = table.with_columns(angleRot=[1.0, 2.0, 3.0], angleTilt=90.0, anglePsi=0.0, ref=1)
    for doc in (
        "run1_align/nref1_15deg_it000015.doc", "run1_align/nref1_10deg_it000005.doc",
        "run1_align/nref1_5deg_it000005.doc", "run2_3classes/nref3_10deg_it000020.doc",
        "run4_extref/15deg_it000001.doc", "run4_extref/7deg_it000001.doc",
    ):  # fmt: skip
        Path(doc).parent.mkdir(exist_ok=True)
        write_star(doc, with_angles)
    rows = "".join(
        f"   {name}  1.00 0.000000 0.000  0.000  0.000000     0.000000  0    0.000000 1\n" for name in names
    )
    Path("seed_rows.txt").write_text(rows)
    return tmp_path


@pytest.mark.parametrize("command", SEED_EXAMPLES, ids=range(1, len(SEED_EXAMPLES) + 1))
def test_seed_example_commands_parse(seed_files: Path, command: str) -> None:
    words = shlex.split(command)[1:]
    request = parse_command(words)
    assert isinstance(request, RunInputs)
    assert request.box_size == SEED_BOX
    assert len(request.images) == 3 and len(request.regions) == 1
    np.testing.assert_array_equal(request.region_index, 0)
    if "images.doc" in words:  # the Xmipp 2 docfile's angles arrive by image name
        np.testing.assert_array_equal(request.images["angleRot"], [0.0, 10.0, 20.0])
    if "--ref" in words:
        assert request.params.n_classes == 1 and len(request.reference_files) == 1


def test_seed_example_mask_is_read_and_checked(seed_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(SEED_EXAMPLES[5])[1:]
    request = parse_command(words)
    assert request.subtomograms().focus_mask.shape == (SEED_BOX,) * 3
    write_volume("interesting.msk", np.full((SEED_BOX,) * 3, 2.0, dtype=np.float32))
    assert main(words) == 2
    assert _error_line(capsys) == (
        "ml_tomo: error: --mask interesting.msk: values must lie in [0, 1] (1 = classify, 0 = ignore)"
    )


# --------------------------------------------------------------------------- bad input


def _bad_metadata_line(folder: Path) -> list[str]:
    text = (folder / "images.xmd").read_text().splitlines()
    text[8] += " 99"
    (folder / "images.xmd").write_text("\n".join(text) + "\n")
    return ["-i", str(folder / "images.xmd"), "--nref", "1"]


def _missing_particle(folder: Path) -> list[str]:
    (folder / "particles" / "p000003.mrc").unlink()
    return [*_inputs(folder), "--nref", "1"]


def _wrong_box(folder: Path) -> list[str]:
    write_volume(folder / "particles" / "p000005.mrc", np.zeros((12, 12, 12), np.float32))
    return [*_inputs(folder), "--nref", "1"]


def _particle_with_nan(folder: Path) -> list[str]:
    volume = np.zeros((TINY_BOX,) * 3, np.float32)
    volume[3, 4, 5] = np.nan
    write_volume(folder / "particles" / "p000004.mrc", volume)
    return [*_inputs(folder), "--nref", "1"]


def _region_out_of_range(folder: Path) -> list[str]:
    images = read_star(folder / "images.xmd")
    write_star(folder / "images.xmd", images.with_columns(missingRegionNumber=[1, 1, 3, 1, 1, 1, 1, 1]))
    return [*_inputs(folder), "--nref", "1"]


def _no_region_column(folder: Path) -> list[str]:
    images = read_star(folder / "images.xmd")
    write_star(folder / "images.xmd", MetaData({"image": images["image"]}))
    return [*_inputs(folder), "--nref", "1"]


def _doc_without_an_image(folder: Path) -> list[str]:
    images = read_star(folder / "images.xmd")
    write_star(folder / "short.doc", images.take(np.arange(7)))
    return [*_inputs(folder), "--nref", "1", "--doc", str(folder / "short.doc")]


def _ref_of_another_box(folder: Path) -> list[str]:
    write_volume(folder / "big.mrc", np.zeros((20, 20, 20), np.float32))
    return [*_inputs(folder), "--ref", str(folder / "big.mrc")]


def _args(*extra: str) -> Callable[[Path], list[str]]:
    """Arguments after the tiny data set's -i and --missing; ``refs.xmd`` is taken in its folder."""
    return lambda folder: [*_inputs(folder), *(str(folder / a) if a == "refs.xmd" else a for a in extra)]


BAD_INPUTS = {
    "missing -i file": (lambda folder: ["-i", str(folder / "nope.xmd"), "--nref", "1"], "nope.xmd"),
    "no -i": (lambda folder: ["--nref", "1"], "-i"),
    "malformed metadata line": (_bad_metadata_line, "images.xmd, line 9"),
    "missing particle file": (_missing_particle, "p000003.mrc"),
    "wrong box among particles": (_wrong_box, "p000005.mrc is 12x12x12 voxels"),
    "NaN voxels in a particle": (_particle_with_nan, "p000004.mrc: has NaN or Inf voxels"),
    "region out of range": (_region_out_of_range, "missingRegionNumber 3"),
    "no region column": (_no_region_column, "missingRegionNumber"),
    "missing wedge file": (
        lambda folder: ["-i", str(folder / "images.xmd"), "--missing", "nowhere.xmd", "--nref", "1"],
        "nowhere.xmd",
    ),
    "--doc lacks an image": (_doc_without_an_image, "short.doc"),
    "--ref of another box": (_ref_of_another_box, "--ref"),
    "--dim larger than box": (_args("--nref", "1", "--dim", "40"), "--dim 40"),
    "--ang too large": (_args("--nref", "1", "--ang", "50"), "--ang"),
    "--ang not a number": (_args("--nref", "1", "--ang", "ten"), "--ang"),
    "--ang missing value": (_args("--nref", "1", "--ang"), "--ang"),
    "unknown option": (_args("--nref", "1", "--bogus"), "--bogus"),
    "no --nref or --ref": (_args(), "--nref"),
    "--nref and --ref disagree": (_args("--nref", "2", "--ref", "refs.xmd"), "--nref 2"),
    "--frac count": (_args("--nref", "2", "--frac", "0.1,0.2,0.7"), "--frac"),
    "--frac garbage": (_args("--nref", "2", "--frac", "a,b"), "--frac"),
    "--keep_angles without angles": (_args("--nref", "1", "--keep_angles"), "--keep_angles"),
    "--workers with --scheduler": (_args("--nref", "1", "--workers", "2", "--scheduler", "x:1"), "--workers"),
    "--regF above --reg0": (_args("--nref", "1", "--regF", "2"), "--regF"),
    "--escape negative": (_args("--nref", "1", "--escape", "-1"), "--escape"),
    "--restart of a missing log": (_args("--nref", "1", "--restart", "nolog.xmd"), "nolog.xmd"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_ends_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    folder = _write_tiny_dataset(tmp_path / "data")
    write_star(folder / "refs.xmd", MetaData({"image": np.array(["particles/p000001.mrc"], dtype=object)}))
    make_argv, expected = BAD_INPUTS[case]
    monkeypatch.chdir(folder)  # where the default --oroot writes
    assert main(make_argv(folder)) == 2
    assert expected in _error_line(capsys)
    assert not list(folder.glob("mltomo*"))  # nothing written, not even the starting references


# --------------------------------------------------------------------------- runs


def _outputs(root: Path) -> set[str]:
    return {path.name for path in root.parent.iterdir() if path.name.startswith(root.name)}


def test_run_writes_every_output(full_run: Path) -> None:
    expected = {"run_img.xmd", "run_ref.xmd", "run.fsc"}
    for it in (0, 1, 2):
        expected |= {f"run_it{it:06d}{suffix}" for suffix in (".doc", "_ref.xmd", "_model.npz", "_log.xmd")}
    for k in (1, 2):
        expected |= {f"run_it000000_ref{k:06d}.mrc", f"run_ref{k:06d}.mrc"}
        for it in (1, 2):
            expected |= {f"run_it{it:06d}_ref{k:06d}.mrc", f"run_it{it:06d}_wedge{k:06d}.mrc"}
    for it in (1, 2):
        expected.add(f"run_it{it:06d}.fsc")
    assert _outputs(full_run) == expected
    assert not [path for path in full_run.parent.iterdir() if ".tmp" in path.name]
    for name in expected:
        path = full_run.parent / name
        if name.endswith(".mrc"):
            assert read_volume(path).shape == (TINY_BOX,) * 3
        elif name.endswith(".npz"):
            assert np.load(path)["references"].shape == (2, *(TINY_BOX,) * 3)
        else:
            assert read_star_blocks(path)


def test_run_tables(full_run: Path) -> None:
    doc = read_star(f"{full_run}_it000002.doc")
    for label in (
        "image", "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ", "ref", "logLikelihood",
        "pMax", "missingRegionNumber",
    ):  # fmt: skip
        assert label in doc, label
    assert len(doc) == 8 and set(doc["ref"]) <= {1, 2}
    assert np.all((doc["pMax"] > 0) & (doc["pMax"] <= 1))
    final = read_star(f"{full_run}_img.xmd")
    np.testing.assert_array_equal(final["ref"], doc["ref"])
    log = read_star(f"{full_run}_it000002_log.xmd")
    for label in ("logLikelihood", "pMax", "sigmaNoise", "sigmaOffset", "iterationNumber",
                  "imageMetaData", "referenceMetaData"):  # fmt: skip
        assert label in log, label
    assert log["iterationNumber"][0] == 2
    header = Path(f"{full_run}_it000002_log.xmd").read_text()
    assert "ml_tomo -i" in header and "--oroot" in header
    blocks = read_star_blocks(f"{full_run}_ref.xmd")
    assert list(blocks) == ["classes", "class000001_images", "class000002_images"]


@pytest.fixture
def one_iteration(tmp_path: Path, tiny: Path) -> Path:
    root = tmp_path / "part" / "run"
    assert main([*_inputs(tiny), "--oroot", str(root), "--iter", "1", *RUN_ARGS]) == 0
    return root


@pytest.mark.parametrize("form", ["log only", "full command"])
def test_restart_continues_as_an_uninterrupted_run(
    tmp_path: Path, tiny: Path, full_run: Path, one_iteration: Path, form: str
) -> None:
    log = f"{one_iteration}_it000001_log.xmd"
    if form == "log only":
        root = one_iteration
        argv = ["--restart", log, "--iter", "2"]
    else:
        root = tmp_path / "continued" / "run"
        argv = [*_inputs(tiny), "--oroot", str(root), "--iter", "2", *RUN_ARGS, "--restart", log]
    assert main(argv) == 0
    assert Path(f"{root}_it000002_log.xmd").is_file()
    if root != one_iteration:  # the restored iteration is not written again
        assert not Path(f"{root}_it000001_log.xmd").exists()
    for k in (1, 2):
        continued = read_volume(f"{root}_ref{k:06d}.mrc")
        np.testing.assert_array_equal(continued, read_volume(f"{full_run}_ref{k:06d}.mrc"))
    continued, uninterrupted = read_star(f"{root}_img.xmd"), read_star(f"{full_run}_img.xmd")
    for label in ("ref", "angleRot", "anglePsi", "shiftX", "logLikelihood", "pMax"):
        np.testing.assert_array_equal(continued[label], uninterrupted[label], err_msg=label)


def test_refine_to_steps_down_says_the_step_and_restarts_within_a_step(
    tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--refine_to: iterations at --ang, then local ones at half the step, numbered on; a restart from an
    iteration of a finer step continues as the uninterrupted run did."""
    options = ["--iter", "1", "--refine_to", "10", *(word for word in RUN_ARGS if word != "--quiet")]
    full = tmp_path / "full" / "run"
    assert main([*_inputs(tiny), "--oroot", str(full), *options]) == 0
    said = [line.removeprefix("ml_tomo: ") for line in capsys.readouterr().err.splitlines()]
    lines = [line for line in said if line.startswith("iteration")]
    assert lines[0].startswith("iteration 1/5  step 40 deg")
    assert lines[1].startswith("iteration 2/5  step 20 deg")
    last = len(lines)
    assert last >= 3 and Path(f"{full}_it{last:06d}_log.xmd").is_file()
    for iteration in (1, 2, 3):  # the hand-over to 20 deg, within the step, and the hand-over to 10 deg
        restarted = tmp_path / f"restarted{iteration}" / "run"
        log = f"{full}_it{iteration:06d}_log.xmd"
        assert main([*_inputs(tiny), "--oroot", str(restarted), *options, "--quiet", "--restart", log]) == 0
        assert (
            sorted(path.name for path in restarted.parent.glob("run_it*_log.xmd"))[-1]
            == f"run_it{last:06d}_log.xmd"
        )
        continued = _final_files(restarted)
        for name, content in _final_files(full).items():
            np.testing.assert_array_equal(continued[name], content, err_msg=f"{name}, restart at {iteration}")


def _final_files(root: Path) -> dict[str, object]:
    """The final copies of a run: maps by voxels, tables by bytes."""
    files: dict[str, object] = {}
    for suffix in ("_img.xmd", "_ref.xmd", ".fsc", "_ref000001.mrc", "_ref000002.mrc"):
        path = root.with_name(root.name + suffix)
        files[path.name] = read_volume(path) if suffix.endswith(".mrc") else path.read_bytes()
    return files


def test_restart_from_the_last_iteration_writes_the_final_files(one_iteration: Path) -> None:
    """A run killed between its last log and its final copies: the restart writes them, nothing else."""
    before = _final_files(one_iteration)
    for name in before:
        (one_iteration.parent / name).unlink()
    files = _outputs(one_iteration)
    assert main(["--restart", f"{one_iteration}_it000001_log.xmd"]) == 0
    assert _outputs(one_iteration) - files == set(before)
    after = _final_files(one_iteration)
    for name, content in before.items():
        np.testing.assert_array_equal(after[name], content, err_msg=name)


def test_restart_from_a_converged_iteration_writes_the_final_files(tmp_path: Path, tiny: Path) -> None:
    root = tmp_path / "run"
    assert main([*_inputs(tiny), "--oroot", str(root), "--iter", "3", "--eps", "1e9", *RUN_ARGS]) == 0
    assert root.with_name("run_it000001_log.xmd").is_file()
    assert not root.with_name("run_it000002_log.xmd").exists()  # converged at iteration 1
    before = _final_files(root)
    for name in before:
        (root.parent / name).unlink()
    assert main(["--restart", f"{root}_it000001_log.xmd"]) == 0
    assert not root.with_name("run_it000002_log.xmd").exists()
    after = _final_files(root)
    for name, content in before.items():
        np.testing.assert_array_equal(after[name], content, err_msg=name)


def test_restart_past_the_last_iteration_is_refused(
    capsys: pytest.CaptureFixture[str], full_run: Path
) -> None:
    assert main(["--restart", f"{full_run}_it000002_log.xmd", "--iter", "1", "--oroot", "unused"]) == 2
    assert "--restart is at iteration 2, past the last one (1)" in _error_line(capsys)


def test_restart_with_another_class_count_is_refused(
    capsys: pytest.CaptureFixture[str], one_iteration: Path
) -> None:
    assert main(["--restart", f"{one_iteration}_it000001_log.xmd", "--iter", "2", "--nref", "3"]) == 2
    line = _error_line(capsys)
    assert "--restart" in line and "holds 2 references of 16 voxels" in line and "3 classes" in line


def test_progress_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path) -> None:
    args = [arg for arg in RUN_ARGS if arg != "--quiet"]
    assert main([*_inputs(tiny), "--oroot", str(tmp_path / "run"), "--iter", "2", *args]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "8 particles" in lines[0]
    assert [line for line in lines if "iteration 1/2" in line and "LL" in line and "pMax" in line]
    assert [line for line in lines if "iteration 2/2" in line and "fractions" in line]
    assert [line for line in lines if "start-up step 5" in line and "temperature 1" in line]
    assert captured.out == ""


def test_terminal_shows_a_bar_with_the_time_left(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Path
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = [arg for arg in RUN_ARGS if arg != "--quiet"] + ["--escape", "0"]  # no start-up: faster
    assert main([*_inputs(tiny), "--oroot", str(tmp_path / "run"), "--iter", "1", "--chunk", "4", *args]) == 0
    err = capsys.readouterr().err
    bar = err[err.index("ml_tomo: iteration 1:") : err.index("ml_tomo: iteration 1/1")]
    assert "2/2" in bar and "chunk/s" in bar and "<00:00" in bar  # chunks done, rate and time left
    assert err[: err.index("ml_tomo: iteration 1/1")].endswith("\r")  # the bar is erased before the line


def test_the_bar_is_cleared_before_an_interruption(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Path
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(RunWriter, "write_iteration", lambda *args, **kwargs: _raise(KeyboardInterrupt()))
    args = [arg for arg in RUN_ARGS if arg != "--quiet"] + ["--escape", "0"]  # no start-up: faster
    main([*_inputs(tiny), "--oroot", str(tmp_path / "run"), "--iter", "1", "--chunk", "4", *args])
    err = capsys.readouterr().err
    last_bar = err.rindex("2/2")
    assert "\r" in err[last_bar:].split("ml_tomo:")[0]  # erased before the next line
    shown_last = err.rstrip().splitlines()[-1].split("\r")[-1]  # what the terminal shows on the last line
    assert shown_last.startswith("ml_tomo: interrupted") and "chunk" not in shown_last


def _raise(error: BaseException) -> None:
    raise error


def test_quiet_run_prints_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny: Path) -> None:
    assert main([*_inputs(tiny), "--oroot", str(tmp_path / "run"), "--iter", "1", *RUN_ARGS]) == 0
    assert capsys.readouterr() == ("", "")  # the start-up and trap checks print nothing either


def test_run_with_reference_maps(tmp_path: Path, tiny: Path) -> None:
    write_volume(tmp_path / "start.mrc", read_volume(tiny / "particles" / "p000001.mrc"))
    root = tmp_path / "run"
    assert main([*_inputs(tiny), "--oroot", str(root), "--ref", str(tmp_path / "start.mrc"), "--iter", "1",
                 "--ang", "40", "--quiet"]) == 0  # fmt: skip
    assert read_star(f"{root}_ref.xmd", "classes")["ref"].tolist() == [1]


def test_interrupted_write_damages_nothing(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny: Path,
    snapshot: Callable[[Path], dict[str, object]],
) -> None:
    root = tmp_path / "run"
    argv = [*_inputs(tiny), "--oroot", str(root), "--iter", "1", *RUN_ARGS]
    assert main(argv) == 0
    before = snapshot(tmp_path)
    original = volumes_module.write_mrc
    calls = []

    def fail_midway(target: Path, volume: np.ndarray, pixel_size_A: float) -> None:
        calls.append(target)
        if len(calls) == 4:  # the first map of iteration 1
            target.write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        original(target, volume, pixel_size_A)

    monkeypatch.setattr(volumes_module, "write_mrc", fail_midway)
    assert main(argv) == 1
    assert "No space left on device" in _error_line(capsys)
    after = snapshot(tmp_path)
    assert after.keys() == before.keys()
    for name, content in before.items():
        np.testing.assert_array_equal(after[name], content, err_msg=name)


def test_keyboard_interrupt(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Path
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "iter_refine", interrupted)
    assert main([*_inputs(tiny), "--oroot", str(tmp_path / "run"), *RUN_ARGS]) == 130
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "interrupted" in err and "Traceback" not in err


def test_local_cluster_gives_the_same_result_to_the_last_bit(
    tmp_path: Path, tiny: Path, one_iteration: Path
) -> None:
    """The same chunks, added in the same order, on one thread and on a cluster of one worker process."""
    root = tmp_path / "cluster" / "run"
    assert main([*_inputs(tiny), "--oroot", str(root), "--iter", "1", *RUN_ARGS, "--workers", "1"]) == 0
    for k in (1, 2):
        expected = read_volume(f"{one_iteration}_ref{k:06d}.mrc")
        np.testing.assert_array_equal(read_volume(f"{root}_ref{k:06d}.mrc"), expected)


# --------------------------------------------------------------------------- demo


def test_demo_writes_data_runs_and_scores(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(demo, "DEMO_DATASET", dict(n_per_class=3, n_classes=2, size=16, snr=5.0, seed=0))
    monkeypatch.setattr(demo, "DEMO_ARGS", ["--nref", "2", "--ang", "40", "--iter", "1", "--quiet"])
    folder = tmp_path / "demo"
    assert main(["demo", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "adjusted Rand index" in out and "orientation error" in out and "angular step 40" in out
    for name in ("images.xmd", "wedges.xmd", "truth.xmd", "particles/p000001.mrc", "run/demo_img.xmd"):
        assert (folder / name).is_file(), name
    truth = read_star(folder / "truth.xmd")
    assert len(truth) == 6 and {"ref", "angleRot", "shiftZ"} <= set(truth.labels)


def test_demo_settings_are_valid(tmp_path: Path) -> None:
    folder = _write_tiny_dataset(tmp_path / "data")
    assert (
        parse_command([*_inputs(folder), *demo.DEMO_ARGS]).params.n_classes == demo.DEMO_DATASET["n_classes"]
    )
