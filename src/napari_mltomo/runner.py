"""One refinement run: checked inputs -> engine -> files, as one stream of events.

:func:`refine_events` runs the engine in a thread of its own and yields, in order, a
:class:`~napari_mltomo.core.state.ChunkProgress` as each chunk of particles finishes, an
:class:`~napari_mltomo.core.state.MLState` for each start-up step and iteration (its files are written
before it is yielded), and a last :class:`RunEnd`. The command line prints the stream and the Refinement
widget shows it; a ``threading.Event`` set by either stops the run after the chunk being computed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from napari_mltomo.compute import cluster_executor, dask_client
from napari_mltomo.core.refine import (
    ChunkProgress,
    ConstantParticles,
    MLState,
    NonFiniteParticles,
    iter_refine,
)
from napari_mltomo.inputs import RunInputs
from napari_mltomo.io._atomic import fault_point
from napari_mltomo.io.run import RunWriter, remove_temporaries
from napari_mltomo.io.volumes import VolumeError
from napari_mltomo.output_guard import claim_outputs

__all__ = ["RunEnd", "RunEvent", "refine_events"]


@dataclass(frozen=True)
class RunEnd:
    """The last event of a run: ``state`` is its last iteration (None if it stopped before one);
    ``complete`` is False when it was stopped, and then the final files are not written."""

    state: MLState | None
    complete: bool


RunEvent = ChunkProgress | MLState | RunEnd


class _Stopped(Exception):
    """Raised in the engine thread to stop the run between chunks."""


_FINISHED = object()  # the engine thread's last message


def refine_events(inputs: RunInputs, stop: threading.Event | None = None) -> Iterator[RunEvent]:
    """Refine checked inputs, writing each iteration's files, as a stream of events.

    Parameters
    ----------
    inputs : RunInputs
        From :func:`napari_mltomo.inputs.read_inputs`.
    stop : threading.Event, optional
        Set it to stop the run after the chunk being computed: the stream then ends with
        ``RunEnd(complete=False)``; the files of finished iterations stay, so the run can be restarted.
        Closing the generator (or an exception in the consumer, such as ``KeyboardInterrupt``) stops the
        run the same way and waits for the engine to let go.

    Yields
    ------
    ChunkProgress, MLState or RunEnd
        Start-up states (``startup_step`` > 0) write nothing; every other state, from the starting model
        on, is a restart point (its log is written last). A run first removes the temporary files a killed
        run left at its output root. A restart does not rewrite the restored iteration; when nothing
        follows that iteration (it was the last, or converged) the final files are copied from its
        files. The final files are written before ``RunEnd(complete=True)``.

    Raises
    ------
    OutputError
        Before any work, for an output root over an input, unwritable, short of space or locked by
        another run (:func:`~napari_mltomo.output_guard.claim_outputs`); the lock is released at the end.
    VolumeError
        For a particle with NaN or Inf voxels, or particles that are all constant, found on the first pass
        over the particles. No file is written then: the files of given starting references (``--ref``)
        are written once that pass is done, with those of the first iteration.
    OSError, ValueError
        Whatever the engine or a write raised, in the caller's thread.
    """
    lock = claim_outputs(inputs)
    stop = threading.Event() if stop is None else stop
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    engine = threading.Thread(target=_engine, args=(inputs, stop, events.put), name="ml_tomo", daemon=True)
    engine.start()
    try:
        while (event := events.get()) is not _FINISHED:
            if isinstance(event, BaseException):
                raise event
            yield event  # type: ignore[misc]
    finally:
        stop.set()
        engine.join()
        lock.release()


def _engine(inputs: RunInputs, stop: threading.Event, put: Callable[[object], None]) -> None:
    """The engine thread: every event of the run through ``put``, then ``_FINISHED``."""
    try:
        put(_refine(inputs, stop, put))
    except BaseException as error:  # handed to the consumer's thread, which raises it
        put(error)
    put(_FINISHED)


def _refine(inputs: RunInputs, stop: threading.Event, put: Callable[[object], None]) -> RunEnd:
    """Run the engine, writing and reporting every state; the run's :class:`RunEnd`."""

    def on_chunk(progress: ChunkProgress) -> None:
        fault_point(f"{progress.stage} chunk {progress.done}/{progress.total}")
        if stop.is_set():
            raise _Stopped
        put(progress)

    remove_temporaries(inputs.oroot)
    data, start = inputs.subtomograms(), inputs.start_model()
    writer = RunWriter(
        inputs.oroot,
        inputs.images,
        bool(inputs.regions),
        inputs.params.pixel_size_A,
        inputs.box_size,
        inputs.command_line,
    )
    last = None
    unwritten: list[MLState] = []  # given starting references (--ref), until a pass has checked the particles
    with dask_client(inputs.scheduler, inputs.workers) as client:
        states = iter_refine(data, inputs.params, start, executor=cluster_executor(client), on_chunk=on_chunk)
        try:
            for number, state in enumerate(states):
                restored = number == 0 and inputs.restart is not None  # its files are already there
                if not state.startup_step and not restored:
                    unwritten.append(state)
                if state.stats is not None or start is None:  # a pass over the particles came before it
                    _write_all(writer, unwritten)
                if state.stats is not None:
                    last = state
                put(state)
                if stop.is_set():
                    return _stopped(writer, unwritten, last)
        except _Stopped:
            return _stopped(writer, unwritten, last)
        except NonFiniteParticles as error:
            raise _non_finite_error(inputs, error) from None
        except ConstantParticles as error:
            raise _constant_error(inputs, error) from None
    assert state is not None
    _write_all(writer, unwritten)
    if last is None and inputs.restart is not None:  # the restored iteration was the run's last
        writer.write_final_from(inputs.restart)
    else:
        writer.write_final(state)
    return RunEnd(last, complete=True)


def _write_all(writer: RunWriter, states: list[MLState]) -> None:
    """Write the files of ``states`` and forget them."""
    for state in states:
        writer.write_iteration(state)
    states.clear()


def _stopped(writer: RunWriter, unwritten: list[MLState], last: MLState | None) -> RunEnd:
    """The end of a stopped run, with the files of every state it yielded."""
    _write_all(writer, unwritten)
    return RunEnd(last, complete=False)


def _constant_error(inputs: RunInputs, error: ConstantParticles) -> VolumeError:
    """The one line refusing particles that are all constant, naming the first."""
    first = inputs.images["image"][0]
    return VolumeError(
        f"{first}: constant (one value in every voxel), like all {error.n} particles; nothing to refine"
    )


def _non_finite_error(inputs: RunInputs, error: NonFiniteParticles) -> VolumeError:
    """The one line naming the first particle file with NaN or Inf voxels."""
    name = inputs.images["image"][error.indices[0]]
    others = len(error.indices) - 1
    more = f" (and {others} more particle{'s' if others > 1 else ''})" if others else ""
    return VolumeError(f"{name}: has NaN or Inf voxels{more}; refine only finite particles")
