"""Pure numerics of ML-TOMO: geometry, sampling, missing regions, the E-step, the M-step and the driver.

Nothing here imports napari or Qt, or reads or writes files.
"""

from .missing import MissingRegion
from .params import MLParams, ParameterError
from .refine import MLState, StartModel, SubtomogramSet, iter_refine, run_refine

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
