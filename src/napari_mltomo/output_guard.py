"""A run claims its output root before any work: what it reads against what it will write, the folder,
and the lock (:mod:`napari_mltomo.io.outputs` does the checking)."""

from __future__ import annotations

from napari_mltomo.inputs import RunInputs
from napari_mltomo.io import read_star
from napari_mltomo.io.outputs import RunLock, RunOutputs, check_not_inputs, check_output_folder
from napari_mltomo.io.run import PARTICLE_LABELS

__all__ = ["claim_outputs", "read_files", "run_outputs"]

_CELL_BYTES = 16  # an upper estimate of one number in a particle table


def claim_outputs(inputs: RunInputs) -> RunLock:
    """Check the output root of a run and lock it; release the lock when the run ends, however it ends.

    Raises
    ------
    OutputError
        If an output would replace a file the run reads, the folder cannot be made or written or has
        too little free space, or another run holds the root's lock.
    """
    outputs = run_outputs(inputs)
    check_not_inputs(outputs, read_files(inputs))
    check_output_folder(outputs)
    return RunLock.acquire(inputs.oroot)


def run_outputs(inputs: RunInputs) -> RunOutputs:
    """What the run of `inputs` will write."""
    params, images = inputs.params, inputs.images
    longest = max(len(str(name)) for name in images["image"])
    return RunOutputs(
        root=inputs.oroot,
        iterations=range(_first_written(inputs), params.istart + params.max_iter),
        n_classes=params.n_classes,
        box_size=inputs.box_size,
        n_particles=len(images),
        row_bytes=longest + _CELL_BYTES * (len(images.labels) + len(PARTICLE_LABELS)),
        regularised=params.reg0 > 0,
        coverage=bool(inputs.regions),
    )


def read_files(inputs: RunInputs) -> list[str]:
    """Every file the run reads: those its options name, the particles and the reference maps."""
    return [*inputs.named_files, *(str(name) for name in inputs.images["image"]), *inputs.reference_files]


def _first_written(inputs: RunInputs) -> int:
    """The starting model's iteration, or after a restart the one after its log's (not written again)."""
    if inputs.restart is None:
        return inputs.params.istart - 1
    log = read_star(inputs.restart)
    if "iterationNumber" not in log or len(log) != 1:  # not a log: the restart refuses it later
        return inputs.params.istart - 1
    return int(log["iterationNumber"][0]) + 1
