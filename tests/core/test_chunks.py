"""What a pass over the particles checks as it reads them: NaN or Inf voxels, and particles without signal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mltomo.core.chunks import ConstantParticles, Dispatch, NonFiniteParticles, sum_chunks
from napari_mltomo.core.params import MLParams
from napari_mltomo.core.refine import SubtomogramSet

PARAMS = MLParams(n_classes=1, threads=2, chunk_size=3)


def _count(volumes: np.ndarray, indices: np.ndarray) -> int:
    return len(indices)


def test_a_pass_over_constant_particles_is_refused() -> None:
    volumes = np.stack(
        [np.full((4, 4, 4), value, np.float32) for value in (0.0, 0.0, 1.5, -2.0, 0.0, 7.0, 0.0)]
    )
    with pytest.raises(ConstantParticles) as refused:
        sum_chunks(_count, SubtomogramSet(volumes), PARAMS, [], Dispatch(), "test")
    assert refused.value.n == 7


def test_one_particle_with_signal_is_enough() -> None:
    volumes = np.zeros((7, 4, 4, 4), np.float32)
    volumes[5, 1, 2, 3] = 1.0
    assert sum_chunks(_count, SubtomogramSet(volumes), PARAMS, [], Dispatch(), "test") == 7


def test_non_finite_voxels_are_found_first() -> None:
    volumes = np.zeros((7, 4, 4, 4), np.float32)
    volumes[4, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteParticles) as refused:
        sum_chunks(_count, SubtomogramSet(volumes), PARAMS, [], Dispatch(), "test")
    assert refused.value.indices == (4,)
