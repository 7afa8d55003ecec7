"""Runs that start from a RELION or Dynamo table, and tables that cannot be used, through ``ml_tomo``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_OPTIONS
from napari_mltomo.cli import main
from napari_mltomo.io import read_images, read_volume

QUIET = (*TINY_OPTIONS, "--quiet")


def test_a_run_from_the_exported_relion_table_equals_the_run_from_the_xmipp_table(
    tiny_data: Path, tiny_run: Path, tmp_path: Path
) -> None:
    star = tmp_path / "relion" / "particles.star"
    assert main(["export", str(tiny_run), "--to", "relion", "-o", str(star)]) == 0
    xmipp_root, relion_root = tmp_path / "from_xmipp" / "r", tmp_path / "from_relion" / "r"
    xmipp = ["-i", f"{tiny_run}_img.xmd", "--missing", str(tiny_data / "wedges.xmd")]
    assert main([*xmipp, "--oroot", str(xmipp_root), *QUIET]) == 0
    assert main(["-i", str(star), "--oroot", str(relion_root), *QUIET]) == 0  # regions from the export
    first, second = read_images(f"{xmipp_root}_img.xmd"), read_images(f"{relion_root}_img.xmd")
    for label in ("ref", "angleRot", "angleTilt", "anglePsi", "shiftX", "shiftY", "shiftZ", "pMax"):
        np.testing.assert_array_equal(first[label], second[label], err_msg=label)
    for ref in (1, 2):
        np.testing.assert_array_equal(
            read_volume(f"{xmipp_root}_ref{ref:06d}.mrc"), read_volume(f"{relion_root}_ref{ref:06d}.mrc")
        )


_OPTICS = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnImagePixelSize #2
_rlnImageSize #3
_rlnImageDimensionality #4
_rlnCtfDataAreCtfPremultiplied #5
1 4.0 16 {dimensionality} {premultiplied}
"""
_PARTICLES = """
data_particles

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOpticsGroup #5
{image} 10.0 20.0 30.0 {group}
"""
_STACKS = """
data_general

_rlnTomoSubTomosAre2DStacks 1
"""


def _relion(folder: Path, case: str) -> Path:
    """A one-particle RELION STAR file with one fault."""
    image = str(folder / "p000.mrc")
    optics = _OPTICS.format(dimensionality=2 if case == "2-D images" else 3,
                            premultiplied=1 if case == "premultiplied" else 0)  # fmt: skip
    particles = _PARTICLES.format(image=image, group=2 if case == "unknown optics group" else 1)
    if case == "no image column":
        particles = particles.replace("_rlnImageName #1", "_rlnMicrographName #1")
    text = (_STACKS if case == "2-D stacks" else "") + optics + particles
    path = folder / f"{case.replace(' ', '_')}.star"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("no image column", "rlnImageName"),
        ("unknown optics group", "optics"),
        ("2-D stacks", "2-D"),
        ("2-D images", "rlnImageDimensionality is 2"),
        ("premultiplied", "premultiplied"),
    ],
)
def test_a_relion_table_that_cannot_be_used_ends_with_one_line_naming_it(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, said: str
) -> None:
    star = _relion(tiny_data, case)
    assert main(["-i", str(star), "--missing", str(tiny_data / "wedges.xmd"), "--oroot", str(tmp_path / "r"),
                 *QUIET]) == 2  # fmt: skip
    _assert_one_error_line(capsys, star.name, said)
    assert not list(tmp_path.iterdir())


def test_a_dynamo_wedge_type_it_cannot_hold_ends_with_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "cones.tbl"
    row = np.zeros(42)
    row[[0, 1, 2, 12, 13, 14, 19, 21]] = [1, 1, 1, 3, -60, 60, 1, 1]  # tag, aligned, averaged, ftype 3, ...
    np.savetxt(table, row[None], fmt="%g")
    assert main(["-i", str(table), "--nref", "1", "--oroot", str(tmp_path / "r"), "--quiet"]) == 2
    _assert_one_error_line(capsys, table.name, "ftype")


def _assert_one_error_line(capsys: pytest.CaptureFixture[str], name: str, said: str) -> None:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ml_tomo: error: "), err
    assert name in lines[0] and said in lines[0], lines[0]
    assert "Traceback" not in err
