"""The original documentation's ten example commands (docs/examples/seed_examples.sh), run as a chain.

The commands are read from the script, not repeated here. The slow test runs them in order on 6 synthetic
particles with one iteration each: ``--iter N`` becomes ``--iter 1`` and a ``--doc <root>_itNNNNNN.doc``
written by an earlier command becomes ``<root>_it000001.doc``; nothing else changes.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_mltomo.io import read_images, read_missing_regions, read_volume

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SCRIPT = EXAMPLES / "seed_examples.sh"
MAKE_DATA = EXAMPLES / "make_seed_data.py"
#: Particles and box of the chain's data set (``--dim 32`` refuses a smaller box).
PARTICLES, BOX = 6, 32
PREFIX = "ml_tomo -i images.sel --oroot "
#: ``--doc`` written by an earlier command: ``<root>_itNNNNNN.doc``.
ITERATION_DOC = re.compile(r"(?P<root>.+)_it\d{6}\.doc")


def seed_commands() -> list[str]:
    """The ``ml_tomo`` command lines of the script, in order."""
    return [line.strip() for line in SCRIPT.read_text().splitlines() if line.startswith("ml_tomo ")]


def one_iteration(command: str) -> list[str]:
    """The arguments of ``command`` (without the program) with one iteration, reading earlier runs' first."""
    words = shlex.split(command)[1:]
    for i, word in enumerate(words[:-1]):
        if word.lstrip("-") == "iter":
            words[i + 1] = "1"
        elif word.lstrip("-") == "doc" and (match := ITERATION_DOC.fullmatch(words[i + 1])):
            words[i + 1] = f"{match['root']}_it000001.doc"
    return words


def option(words: list[str], name: str) -> str:
    """The value of ``--name`` (or ``-name``) in ``words``."""
    return next(words[i + 1] for i, word in enumerate(words[:-1]) if word.lstrip("-") == name)


def ml_tomo_program() -> list[str]:
    """The ``ml_tomo`` console script of this interpreter's environment, else ``main`` called directly."""
    script = Path(sys.executable).with_name("ml_tomo")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from napari_mltomo.cli import main; sys.exit(main())"]


def write_data(folder: Path, particles: int, box: int) -> None:
    subprocess.run(
        [sys.executable, str(MAKE_DATA), str(folder), "--particles", str(particles), "--size", str(box)],
        check=True,
        capture_output=True,
        text=True,
    )


def test_script_holds_the_ten_seed_commands() -> None:
    commands = seed_commands()
    assert len(commands) == 10
    assert all(command.startswith(PREFIX) for command in commands)
    assert "-missing" in shlex.split(commands[2]) and "-perturb" in shlex.split(commands[2])


def test_one_iteration_chain_reads_only_earlier_outputs() -> None:
    """Every rewritten ``--doc`` is ``images.doc`` or the first-iteration file of an earlier command."""
    written = set()
    for command in seed_commands():
        words = one_iteration(command)
        assert option(words, "iter") == "1"
        doc = option(words, "doc")
        assert doc == "images.doc" or doc in written, command
        written.add(f"{option(words, 'oroot')}_it000001.doc")
    assert len(written) == 10


def test_seed_data_files_are_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_data(tmp_path, 3, 16)
    monkeypatch.chdir(tmp_path)
    selected = read_images("images.sel")
    doc = read_images("images.doc")
    assert list(selected["image"]) == list(doc["image"]) == [f"particles/part_{i:06d}.vol" for i in (1, 2, 3)]
    np.testing.assert_array_equal(doc["missingRegionNumber"], 1)
    np.testing.assert_array_equal(doc["angleRot"], 0.0)
    [region] = read_missing_regions("wedges.doc")
    assert (region.kind, region.theta_y0_deg, region.theta_yf_deg) == ("wedge_y", -64.0, 64.0)
    for name in (*selected["image"], "myreference.vol", "interesting.msk"):
        assert read_volume(name).shape == (16, 16, 16)
    mask = read_volume("interesting.msk")
    assert mask.min() == 0.0 and mask.max() == 1.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_seed_examples_run_as_a_chain(tmp_path: Path) -> None:
    write_data(tmp_path, PARTICLES, BOX)
    for folder in ("run1_align", "run2_3classes", "run3_3classes", "run4_extref"):
        (tmp_path / folder).mkdir()
    times = []
    for number, command in enumerate(seed_commands(), start=1):
        words = one_iteration(command)
        started = time.perf_counter()
        done = subprocess.run(
            [*ml_tomo_program(), *words], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        times.append(f"{number}: {time.perf_counter() - started:.0f} s")
        assert done.returncode == 0, (
            f"command {number} ({shlex.join(words)}) failed (times: {', '.join(times)}):\n{done.stderr}"
        )
        assert (tmp_path / f"{option(words, 'oroot')}_it000001.doc").is_file(), f"command {number}"
    print("seconds per command:", ", ".join(times))
