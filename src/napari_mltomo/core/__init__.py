"""Pure numerics of ML-TOMO: geometry, sampling, missing regions, the E-step, the M-step and the driver.

Nothing here imports napari or Qt, or reads or writes files.
"""

from napari_mltomo.core.missing import MissingRegion
from napari_mltomo.core.params import MLParams, ParameterError
from napari_mltomo.core.refine import MLState, StartModel, SubtomogramSet, iter_refine, run_refine

__all__ = [
    "MLParams",
    "MLState",
    "MissingRegion",
    "ParameterError",
    "StartModel",
    "SubtomogramSet",
    "iter_refine",
    "run_refine",
]
