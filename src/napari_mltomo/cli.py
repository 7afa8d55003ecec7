"""The ``ml_tomo`` command line: Xmipp's options, progress on stderr, outputs in ``<root>_*``, and a demo.

``ml_tomo -i images.sel --nref 3 --missing wedges.doc ...`` runs a refinement; ``ml_tomo demo [DIR]``
writes a synthetic data set with ground truth to ``DIR`` and runs a reference-free 3-class refinement
on it through the same code path; ``ml_tomo export RUN --to relion|relion30|dynamo -o FILE`` writes a run's
particles for RELION or Dynamo. Single-dash spellings of long options (``-missing``) are accepted,
as the original's examples use them. A bad file, value or combination of options ends with one line
``ml_tomo: error: ...`` and exit status 2. SIGINT, SIGTERM and SIGHUP stop a run after the running chunk
of particles, with one line naming what is complete and the ``ml_tomo --restart`` command that continues,
and exit status 128 + the signal's number.
"""

from __future__ import annotations

import functools
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from napari_mltomo import demo
from napari_mltomo.argv import CommandParser, HelpExit, UsageError, parse_argv, stored_argv
from napari_mltomo.core.params import ParameterError
from napari_mltomo.core.refine import ChunkProgress, MLState
from napari_mltomo.core.stages import last_iteration
from napari_mltomo.export import EXPORT_FORMATS, export_run
from napari_mltomo.inputs import RunInputs, error_text, read_inputs
from napari_mltomo.io import MetadataError, VolumeError, read_images
from napari_mltomo.io.outputs import OutputWarning
from napari_mltomo.io.run import RunPaths, read_command_line
from napari_mltomo.options import PROG
from napari_mltomo.runner import RunEnd, refine_events

__all__ = ["main", "parse_command", "run", "run_demo", "run_export"]

# --------------------------------------------------------------------------- argv -> RunInputs


def parse_command(argv: Sequence[str]) -> RunInputs:
    """Check a command line and the files it names, reading only metadata and volume headers.

    Parameters
    ----------
    argv : sequence of str
        The arguments after the program name. With ``--restart LOG`` and no ``-i``, the command line
        stored in ``LOG`` is used, with `argv` appended (so later options override it).

    Returns
    -------
    RunInputs

    Raises
    ------
    UsageError
        For an unknown or malformed option.
    ParameterError
        For an invalid value or combination; the message starts with the option.
    MetadataError, VolumeError, FileNotFoundError
        For a missing or malformed file; the message names it.
    """
    args, normalised = parse_argv(argv)
    if args.input is None and args.restart is not None:
        normalised = _logged_argv(Path(args.restart)) + normalised
        args, normalised = parse_argv(normalised)
    return read_inputs(vars(args), shlex.join([PROG, *normalised]))


def _logged_argv(log: Path) -> list[str]:
    """The arguments of the run that wrote `log`, without its own ``--restart``."""
    if not log.is_file():
        raise FileNotFoundError(2, "--restart: no such file", str(log))
    arguments = stored_argv(read_command_line(log))
    kept: list[str] = []
    skip = False
    for word in arguments:
        if skip:
            skip = False
        elif word == "--restart":
            skip = True
        elif not word.startswith("--restart="):
            kept.append(word)
    return kept


# --------------------------------------------------------------------------- running


class _Progress:
    """Progress on stderr (nothing with ``--quiet``): a summary when the work starts, one line per start-up
    step and per iteration, and on a terminal a bar per pass (``tqdm``) with the chunks of particles done
    and the time left."""

    def __init__(self, inputs: RunInputs) -> None:
        self.quiet = inputs.quiet
        self.summary: str | None = _summary(inputs)
        params = inputs.params
        self.last = last_iteration(params)
        self.started = time.perf_counter()
        self.bar: tqdm | None = None

    def say(self, text: str) -> None:
        if self.quiet:
            return
        self.clear()
        self.announce()
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    def announce(self) -> None:
        """Print the summary once, when the work starts (after the particles passed their check)."""
        if self.summary is not None and not self.quiet:
            print(f"{PROG}: {self.summary}", file=sys.stderr, flush=True)
        self.summary = None

    def chunk(self, progress: ChunkProgress) -> None:
        self.announce()
        if self.quiet or not sys.stderr.isatty():
            return
        stage = f"{PROG}: {progress.stage}"
        if self.bar is None or self.bar.desc != stage:
            self.clear()
            self.bar = tqdm(  # redrawn at every chunk (chunks take long enough that none is skipped)
                total=progress.total, desc=stage, unit="chunk", file=sys.stderr, leave=False, mininterval=0
            )
        self.bar.update(progress.done - self.bar.n)

    def clear(self) -> None:
        """Remove the bar, so that what follows (an error, an interruption) starts its own line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def report(self, state: MLState) -> None:
        elapsed = time.perf_counter() - self.started
        if state.startup_step:
            self.say(
                f"start-up step {state.startup_step}  box {state.size}  temperature {state.temperature:.3g}  "
                f"pMax {state.mean_pmax:.3f}  {elapsed:.1f} s"
            )
        elif state.stats is None:
            self.say(f"starting references ready ({elapsed:.1f} s)")
        else:
            fractions = " ".join(f"{value:.3f}" for value in state.fractions)
            converged = "  converged" if state.converged else ""
            escaped = f"  {state.escape_note}" if state.escape_note else ""
            step = f"  step {state.stage.step_deg:g} deg" if state.stage is not None else ""
            self.say(
                f"iteration {state.iteration}/{self.last}{step}  LL {state.log_likelihood:.6g}  "
                f"pMax {state.mean_pmax:.3f}  sigma {state.sigma_noise:.4g}  "
                f"fractions {fractions}  {elapsed:.1f} s{escaped}{converged}"
            )


def _summary(inputs: RunInputs) -> str:
    params = inputs.params
    start = "--restart" if inputs.restart else ("--ref" if inputs.reference_files else "random subsets")
    where = (
        f"scheduler {inputs.scheduler}"
        if inputs.scheduler
        else f"{inputs.workers} worker processes"
        if inputs.workers
        else f"{params.threads} thread(s)"
    )
    return (
        f"{len(inputs.images)} particles of {inputs.box_size}^3 (internal {inputs.size}^3), "
        f"{params.n_classes} classes from {start}, {len(inputs.regions)} missing region(s), "
        f"iterations {params.istart}..{params.istart + params.max_iter - 1}, --ang {params.ang_deg:g}"
        f"{'' if params.refine_to_deg is None else f' refined to {params.refine_to_deg:g}'}, "
        f"pixel {params.pixel_size_A:g} A, {where}, output {inputs.oroot}_*"
    )


class _RunStopped(Exception):
    """A run stopped before its end; the message says what is complete and how to continue."""


def run(inputs: RunInputs, stop: threading.Event | None = None) -> MLState:
    """Run a checked command: refine, writing every iteration's files and the final ones.

    Parameters
    ----------
    inputs : RunInputs
    stop : threading.Event, optional
        Set it to stop the run after the running chunk of particles.

    Returns
    -------
    MLState
        The last state.

    Raises
    ------
    _RunStopped
        When `stop` stopped the run.
    """
    shown = warnings.showwarning
    warnings.showwarning = functools.partial(_show_warning, shown)
    progress = _Progress(inputs)
    state, log = None, None
    restored = inputs.restart is not None  # the first state is then the restart's, reported by its run
    try:
        for event in refine_events(inputs, stop):
            if isinstance(event, ChunkProgress):
                progress.chunk(event)
            elif isinstance(event, MLState):
                state = event
                if restored:  # the restart's own iteration: its run reported it
                    log, restored = inputs.restart, False
                    continue
                progress.report(state)
                if not state.startup_step:
                    log = RunPaths(inputs.oroot).log(state.iteration)
            elif isinstance(event, RunEnd) and not event.complete:
                raise _RunStopped(_restart_hint(inputs, state, log))
    finally:
        progress.clear()
        warnings.showwarning = shown
    assert state is not None
    progress.say(f"done; final results in {inputs.oroot}_img.xmd and {inputs.oroot}_ref.xmd")
    return state


def _restart_hint(inputs: RunInputs, state: MLState | None, log: Path | None) -> str:
    """What a stopped run has complete (`state`, whose log is `log`) and the command that continues it."""
    if log is None or state is None:
        return "nothing is complete yet; run the command again"
    params = inputs.params
    if state.iteration < params.istart:
        done = f"the starting model (iteration {state.iteration})"
    else:
        done = f"iteration {state.iteration} of {params.istart + params.max_iter - 1}"
    return f"{done} is complete; continue with: {shlex.join([PROG, '--restart', str(log)])}"


#: The signals that stop a run after the running chunk (SIGHUP where the system has it).
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class _SignalStop:
    """Turns SIGINT, SIGTERM and SIGHUP into a stop of the run after the running chunk (``event``);
    ``received`` is the first signal's number. A signal the process ignores stays ignored (``nohup``
    ignores SIGHUP, a shell's background job SIGINT)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: int | None = None

    def __call__(self, number: int, frame: object) -> None:
        self.received = self.received or number
        self.event.set()

    @contextmanager
    def installed(self) -> Iterator[threading.Event | None]:
        """Handle the signals in the block, then restore the previous handlers; only in the main thread
        (where Python runs handlers), elsewhere the block gets None and nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            yield None
            return
        previous = {
            number: signal.signal(number, self)
            for number in _STOP_SIGNALS
            if signal.getsignal(number) is not signal.SIG_IGN
        }
        try:
            yield self.event
        finally:
            for number, handler in previous.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)


def _fail(message: str, status: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _show_warning(
    shown: Callable[..., None], message: Warning | str, category: type[Warning], *where: Any
) -> None:
    """An output warning (a lock taken over) as one line ``ml_tomo: warning: ...``; others as `shown` does."""
    if issubclass(category, OutputWarning):
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)
    else:
        shown(message, category, *where)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ml_tomo``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``). ``demo [DIR]`` runs the demo.

    Returns
    -------
    int
        Exit status: 0 on success, 2 for a bad command line or input, 1 for another I/O failure,
        128 + the signal's number when SIGINT (130), SIGTERM (143) or SIGHUP (129) stopped the run.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    signals = _SignalStop()
    try:
        if arguments[:1] == ["demo"]:
            return run_demo(arguments[1:])
        if arguments[:1] == ["export"]:
            return run_export(arguments[1:])
        with signals.installed() as stop:
            run(parse_command(arguments), stop)
    except HelpExit as stop:
        return stop.args[0]
    except _RunStopped as stopped:
        assert signals.received is not None
        name = signal.Signals(signals.received).name
        print(f"{PROG}: stopped by {name}; {stopped}", file=sys.stderr)
        return 128 + signals.received
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; files already written are complete", file=sys.stderr)
        return 130
    except (UsageError, ParameterError, MetadataError, VolumeError, FileNotFoundError, ValueError) as err:
        return _fail(error_text(err))
    except OSError as err:
        return _fail(error_text(err), status=1)
    return 0


# --------------------------------------------------------------------------- demo


def run_demo(argv: Sequence[str]) -> int:
    """``ml_tomo demo [DIR]``: write the synthetic data set to DIR, refine it, and score the result.

    The data are :func:`napari_mltomo.demo.write_demo_data`'s; the refinement is ``ml_tomo -i DIR/images.xmd
    --missing DIR/wedges.xmd --oroot DIR/run/demo`` plus ``demo.DEMO_ARGS``. Prints the adjusted Rand index
    of the classes, the median pairwise orientation error (overall and for each true class) and the wall time.

    Returns
    -------
    int
        The exit status of the refinement (0 if it ran; the scores are printed, not checked).
    """
    parser = CommandParser(prog=f"{PROG} demo", description="Refine a synthetic data set with known answers.")
    parser.add_argument("dir", nargs="?", default="mltomo_demo", help="Output folder (default: %(default)s)")
    folder = Path(parser.parse_args(argv).dir)
    started = time.perf_counter()
    truth = demo.write_demo_data(folder)
    root = folder / "run" / "demo"
    inputs = ["-i", str(folder / "images.xmd"), "--missing", str(folder / "wedges.xmd")]
    status = main([*inputs, "--oroot", str(root), *demo.DEMO_ARGS])
    if status:
        return status
    demo.print_demo_scores(truth, read_images(f"{root}_img.xmd"), time.perf_counter() - started)
    return 0


# --------------------------------------------------------------------------- export


def run_export(argv: Sequence[str]) -> int:
    """``ml_tomo export RUN --to FORMAT -o FILE [--iteration N] [--dynamo_data DIR]``.

    Returns
    -------
    int
        0; a bad run or option raises as :func:`main` reports it.
    """
    parser = CommandParser(
        prog=f"{PROG} export",
        description="Write a run's particles, poses and classes for RELION or Dynamo (docs/conventions.md).",
    )
    parser.add_argument("run", help="The run's --oroot, or any file it wrote")
    parser.add_argument(
        "--to",
        required=True,
        choices=EXPORT_FORMATS,
        help="relion: RELION 3.1 to 5; relion30: the RELION 3.0 subtomogram layout (Warp/M); "
        "dynamo: a Dynamo table",
    )
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="The STAR file or table")
    parser.add_argument("--iteration", type=int, metavar="N", help="Default: the last one")
    parser.add_argument(
        "--dynamo_data", metavar="DIR", help="With --to dynamo: write the particles there (particle_NNNNN.em)"
    )
    args = parser.parse_args(argv)
    written = export_run(
        args.run, args.to, args.output, iteration=args.iteration, dynamo_data=args.dynamo_data
    )
    print(f"{PROG}: wrote {', '.join(str(path) for path in written)}", file=sys.stderr)
    return 0
