"""The Refinement widget in a real viewer: same options as the command, same results, cancel, restart."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import napari_mltomo._widgets.refinement as refinement
from conftest import TINY_CLASSES, TINY_OPTIONS
from napari_mltomo._layers import class_name
from napari_mltomo._widgets.refinement import RefinementWidget, option_fields
from napari_mltomo.argv import build_parser, option_values, options_to_argv
from napari_mltomo.cli import main
from napari_mltomo.io import read_star, read_star_blocks, read_volume
from napari_mltomo.io.run import RunWriter
from napari_mltomo.options import OPTIONS, default_values

pytestmark = pytest.mark.gui


def _widget(viewer) -> RefinementWidget:
    _, widget = viewer.window.add_plugin_dock_widget("napari-mltomo", "Refinement")
    return widget


def _options(tiny_data: Path, root: Path) -> dict[str, object]:
    """The widget values of ``TINY_OPTIONS`` with the tiny data set, output at `root`."""
    inputs = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    values = option_values([*inputs, "--oroot", str(root), *TINY_OPTIONS])
    values.pop("quiet")
    return values


def _run_to_end(qtbot, widget: RefinementWidget, timeout_ms: int = 120_000) -> None:
    assert widget.start() is not None, "the run did not start"
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout_ms)  # finished (connected before start)
    qtbot.waitUntil(lambda: not widget._paced.busy)  # the display updates are paced


def _same_run_files(left: Path, right: Path) -> None:
    """Every table and map of two runs agree to 1e-6 (the logs' command lines aside)."""
    names = sorted(path.name[len(left.name) :] for path in left.parent.glob(f"{left.name}*"))
    assert names == sorted(path.name[len(right.name) :] for path in right.parent.glob(f"{right.name}*"))
    for suffix in names:
        a, b = Path(f"{left}{suffix}"), Path(f"{right}{suffix}")
        if suffix.endswith(".mrc"):
            np.testing.assert_allclose(read_volume(a), read_volume(b), atol=1e-6, err_msg=suffix)
            continue
        if suffix.endswith(".npz"):
            with np.load(a) as model_a, np.load(b) as model_b:
                for key in model_a.files:
                    np.testing.assert_allclose(
                        model_a[key], model_b[key], atol=1e-6, err_msg=f"{suffix} {key}"
                    )
            continue
        blocks_a, blocks_b = read_star_blocks(a), read_star_blocks(b)
        assert list(blocks_a) == list(blocks_b), suffix
        for name in blocks_a:
            table_a, table_b = blocks_a[name], blocks_b[name]
            for label in table_a.labels:
                column_a, column_b = table_a[label], table_b[label]
                if column_a.dtype.kind in "fi":
                    np.testing.assert_allclose(column_a, column_b, atol=1e-6, err_msg=f"{suffix} {label}")
                elif label not in {"imageMetaData", "referenceMetaData"}:
                    assert [Path(str(v)).name for v in column_a] == [Path(str(v)).name for v in column_b]


@pytest.mark.parametrize("name", ["Refinement", "Results browser", "Missing region viewer"])
def test_every_widget_opens_from_the_plugin_menu(make_napari_viewer, name: str) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-mltomo", name)
    assert dock is not None and widget is not None


def test_the_widget_and_the_command_have_the_same_options_and_defaults(make_napari_viewer) -> None:
    widget = _widget(make_napari_viewer())
    cli_defaults = vars(build_parser()[0].parse_args([]))
    shown = {option.name for option in OPTIONS if option.widget}
    assert set(option_fields()) == shown == set(cli_defaults) - {"quiet"}
    assert widget.values() == {name: default_values()[name] for name in shown}
    assert widget.command_line() == "ml_tomo"


def test_a_run_from_the_widget_equals_the_command(make_napari_viewer, qtbot, tiny_data, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    widget.set_values(_options(tiny_data, tmp_path / "widget" / "r"))
    seen: dict[str, list[int]] = {}
    viewer.layers.events.inserted.connect(
        lambda event: seen.setdefault(event.value.name, []).append(id(event.value))
    )
    _run_to_end(qtbot, widget)
    assert [state.iteration for state in widget.history] == [1, 2]
    names = [class_name(k) for k in range(1, TINY_CLASSES + 1)]
    assert widget.plot.series["log-likelihood"]["LL"][1].shape == (2,)
    assert [layer.name for layer in viewer.layers] == names
    assert all(len(seen[name]) == 1 for name in names)  # each added once, then updated in place
    assert viewer.layers[names[0]].metadata["iteration"] == 2
    command = ["-i", str(tiny_data / "images.xmd"), "--missing", str(tiny_data / "wedges.xmd")]
    assert main([*command, "--oroot", str(tmp_path / "cli" / "r"), *TINY_OPTIONS, "--quiet"]) == 0
    _same_run_files(tmp_path / "widget" / "r", tmp_path / "cli" / "r")


@pytest.mark.parametrize("shown", [0, 1])  # the starting model, or iteration 1
def test_cancel_leaves_a_run_that_restarts_to_the_same_result(
    make_napari_viewer, qtbot, tiny_data, tmp_path, monkeypatch: pytest.MonkeyPatch, shown: int
) -> None:
    widget = _widget(make_napari_viewer())
    values = {**_options(tiny_data, tmp_path / "cancelled" / "r"), "iter": 3, "chunk": 4}
    widget.set_values(values)
    write_iteration = RunWriter.write_iteration
    written, clicked = threading.Event(), threading.Event()

    def wait_after_the_iteration_shown(writer: RunWriter, state) -> list[Path]:
        files = write_iteration(writer, state)
        if state.iteration == shown:
            written.set()
            clicked.wait(60)  # the user clicks Cancel while that iteration is shown
        return files

    monkeypatch.setattr(RunWriter, "write_iteration", wait_after_the_iteration_shown)
    assert widget.start() is not None
    qtbot.waitUntil(written.is_set, timeout=120_000)
    widget.cancel()
    clicked.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    qtbot.waitUntil(lambda: not widget._paced.busy)
    assert [state.iteration for state in widget.history] == list(range(1, shown + 1))
    cancelled = tmp_path / "cancelled" / "r"
    log = f"{cancelled}_it{shown:06d}_log.xmd"
    assert widget.status.text().startswith(f"cancelled after iteration {shown}")
    assert widget.values()["restart"] == log
    assert not Path(f"{cancelled}_it{shown + 1:06d}_log.xmd").exists()
    assert main(["--restart", log, "--quiet"]) == 0
    full = tmp_path / "full" / "r"
    assert main([*options_to_argv({**values, "oroot": str(full)}), "--quiet"]) == 0
    # The restart reads the exact model it continues from: the results are those of the uninterrupted run.
    final_a, final_b = read_star(f"{cancelled}_img.xmd"), read_star(f"{full}_img.xmd")
    for label in (
        "ref",
        "angleRot",
        "angleTilt",
        "anglePsi",
        "shiftX",
        "shiftY",
        "shiftZ",
        "logLikelihood",
        "pMax",
    ):
        np.testing.assert_array_equal(final_a[label], final_b[label], err_msg=label)
    for k in range(1, TINY_CLASSES + 1):
        continued, uninterrupted = (
            read_volume(f"{cancelled}_ref{k:06d}.mrc"),
            read_volume(f"{full}_ref{k:06d}.mrc"),
        )
        np.testing.assert_array_equal(continued, uninterrupted)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ang": "abc"}, "argument --ang: invalid float value: 'abc'"),
        ({"eps": ""}, "argument --eps: expected one argument"),
        ({"sym": "c0"}, "--sym c0: unknown symmetry group; use c1, cN, dN, t, o or i"),
        ({"ang": "50"}, "--ang must be in (0, 42] degrees, got 50.0"),
        ({"input": "missing.xmd"}, "missing.xmd: No such file or directory"),
    ],
)
def test_a_bad_value_gives_the_commands_message_once(
    make_napari_viewer, qtbot, tiny_data, tmp_path, monkeypatch: pytest.MonkeyPatch, change, message
) -> None:
    shown: list[str] = []
    monkeypatch.setattr("napari_mltomo._widgets._common.show_error", shown.append)
    monkeypatch.setattr("napari_mltomo._widgets.refinement.show_error", shown.append)
    monkeypatch.chdir(tmp_path)
    widget = _widget(make_napari_viewer())
    widget.set_values({**_options(tiny_data, tmp_path / "r"), **change})
    if widget.start() is not None:  # refused by the input checks in the worker thread
        qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
        assert widget.status.text() == f"failed: {message}"
    assert shown == [message]
    assert widget.worker is None and widget.run_button.isEnabled()
    assert not list(tmp_path.iterdir())


def test_the_viewer_stays_responsive_during_a_run(make_napari_viewer, qtbot, tiny_data, tmp_path) -> None:
    """A guard, not a benchmark: the longest gap between 10 ms timer ticks over a 2-iteration run."""
    from qtpy.QtCore import QTimer

    widget = _widget(make_napari_viewer())
    widget.set_values(_options(tiny_data, tmp_path / "r"))
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    _run_to_end(qtbot, widget)
    timer.stop()
    assert len(ticks) > 10
    assert np.max(np.diff(ticks)) < 2.0


def test_the_class_layers_are_made_before_the_refinement_starts(
    make_napari_viewer, qtbot, tiny_data, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """napari sets a new layer up in the GUI thread, quicker while the processors are free."""
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    widget.set_values(_options(tiny_data, tmp_path / "r"))
    names = {class_name(k) for k in range(1, TINY_CLASSES + 1)}
    present_at_start: list[bool] = []
    refine_events = refinement.refine_events

    def watched(*args, **kwargs):
        present_at_start.append(names <= {layer.name for layer in viewer.layers})
        return refine_events(*args, **kwargs)

    monkeypatch.setattr(refinement, "refine_events", watched)
    _run_to_end(qtbot, widget)
    assert present_at_start == [True] and widget.outcome == "done"
