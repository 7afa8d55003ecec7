"""Test sets of subtomograms made from real protein structures, and how a result is scored on them.

The structures are PDB files that the PyPI package ``mdanalysistests`` ships (read with MDAnalysis; both
come with the ``test`` extra). Each set is made by :func:`~napari_mltomo.core.synthetic.make_protein_dataset`:
exactly posed atoms, a +-60 degree tilt series with a phase-flipped CTF, dose-dependent attenuation and
noise on every tilt, weighted back-projection; or a plain wedge with white noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .core.geometry import euler_to_matrix
from .core.params import MLParams
from .core.refine import SubtomogramSet, iter_refine, prepare_references
from .core.synthetic import (
    Atoms,
    ReconstructionKind,
    SyntheticDataset,
    class_orientation_errors_deg,
    make_protein_dataset,
)

__all__ = [
    "PROTEIN_SETS",
    "ClassScore",
    "ProteinSet",
    "read_atoms",
    "score_classes",
    "structure_path",
    "true_averages",
]


def structure_path(name: str) -> Path:
    """The path of a structure file of ``mdanalysistests``' data (``"adk_open.pdb"``, ``"1a28.pdb.gz"``).

    Raises
    ------
    ModuleNotFoundError
        Without ``mdanalysistests`` (``pip install napari-mltomo[test]``).
    FileNotFoundError
        If the package has no such file.
    """
    import MDAnalysisTests

    path = Path(MDAnalysisTests.__file__).parent / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"mdanalysistests has no data file {name}")
    return path


@lru_cache(maxsize=32)
def read_atoms(name: str) -> Atoms:
    """The heavy atoms of the first frame of a structure file, without water, weighted by their mass (as
    MDAnalysis guesses it from the atom names when the file gives no elements), centred (see
    :func:`structure_path`)."""
    import warnings

    import MDAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing PDB fields that MDAnalysis guesses
        universe = MDAnalysis.Universe(str(structure_path(name)))
        atoms = universe.select_atoms("not name H* and not resname HOH WAT SOL TIP3")
        return Atoms(atoms.positions.astype(np.float64), atoms.masses.astype(np.float64)).centred()


#: The furthest atom of the largest structure of a set lies this far from the box centre, in boxes.
FILL = 0.35


@dataclass(frozen=True)
class ProteinSet:
    """A named test set: one class per structure, and how its particles are made.

    The pixel size is chosen so that the largest structure reaches ``FILL`` of the box from its centre.
    """

    structures: tuple[str, ...]
    snr: float = 0.5
    reconstruction: ReconstructionKind = "tilt_series"
    n_per_class: int = 30
    size: int = 32
    notes: str = field(default="", compare=False)

    def atoms(self) -> list[Atoms]:
        """The structures' atoms."""
        return [read_atoms(name) for name in self.structures]

    @property
    def pixel_size_a(self) -> float:
        """Angstrom per voxel."""
        return max(atoms.radius_a for atoms in self.atoms()) / (FILL * self.size)

    def make(self, seed: int = 0) -> SyntheticDataset:
        """The particles (every random choice from ``seed``)."""
        return make_protein_dataset(
            self.atoms(),
            self.n_per_class,
            self.size,
            pixel_size_a=self.pixel_size_a,
            snr=self.snr,
            reconstruction=self.reconstruction,
            seed=seed,
        )


_THREE = ("merge/2zmm/protein.pdb", "dssp/3nbkA.pdb.gz", "dssp/2a2lA.pdb.gz")
_SHAPES = ("mmcif/1BD2.pdb.gz", "dssp/1dx5I.pdb.gz", "1osm.pdb.gz")
_CONFORMATIONS = ("adk_open.pdb", "adk_closed.pdb")
_ALIKE = ("4E43.pdb", "dssp/1h4aX.pdb.gz", "1osm.pdb.gz")

#: The sets the engine is measured on (``benchmarks/proteins.py``, ``docs/engine.md``).
PROTEIN_SETS: dict[str, ProteinSet] = {
    "three-wedge": ProteinSet(_THREE, reconstruction="wedge", notes="three proteins, plain wedge, SNR 0.5"),
    "three-tilt": ProteinSet(_THREE, notes="the same three as tilt series, SNR 0.5"),
    "three-tilt-snr0.1": ProteinSet(_THREE, snr=0.1, notes="the same three as tilt series, SNR 0.1"),
    "conformations-tilt": ProteinSet(
        _CONFORMATIONS, n_per_class=40, notes="adenylate kinase open and closed, tilt series, SNR 0.5"
    ),
    "shapes-tilt": ProteinSet(
        _SHAPES, notes="a long complex, a long and a round protein, tilt series, SNR 0.5"
    ),
    "one-tilt-snr0.3": ProteinSet(
        ("dssp/3q4oA.pdb.gz",), n_per_class=60, snr=0.3, notes="one protein, SNR 0.3"
    ),
    "alike-tilt": ProteinSet(
        _ALIKE, notes="two proteins nearly 2-fold symmetric up to 10 A and a third, tilt series, SNR 0.5"
    ),
}


@dataclass(frozen=True)
class ClassScore:
    """How well one true class is aligned.

    Attributes
    ----------
    median_error_deg : float
        Median over the class's particle pairs of the gauge-free error of their relative rotation.
    beyond_90 : int
        Particles whose pose is more than 90 degrees from the class consensus.
    size : int
        Particles in the class.
    """

    median_error_deg: float
    beyond_90: int
    size: int


def score_classes(
    estimated_deg: NDArray[np.floating], true_deg: NDArray[np.floating], classes: NDArray[np.integer]
) -> dict[int, ClassScore]:
    """Per true class, the median pair error and the particles turned away from the class's consensus.

    A particle's offset is ``A_i R_i^T`` (estimated times true transposed), which is the same rotation
    for every particle of a perfectly aligned class. The consensus is the offset with the smallest median
    angle to the others; a particle beyond 90 degrees of it is turned (a flip by a near-symmetry is
    about 180).
    """
    estimated = euler_to_matrix(*np.moveaxis(np.asarray(estimated_deg, dtype=np.float64), -1, 0))
    true = euler_to_matrix(*np.moveaxis(np.asarray(true_deg, dtype=np.float64), -1, 0))
    errors = class_orientation_errors_deg(estimated_deg, true_deg, classes)
    scores = {}
    for label, pair_errors in errors.items():
        members = np.asarray(classes) == label
        offsets = estimated[members] @ np.swapaxes(true[members], 1, 2)
        angles = _angles_between(offsets)
        consensus = np.argmin(np.median(angles, axis=1))
        scores[label] = ClassScore(
            float(np.median(pair_errors)) if len(pair_errors) else 0.0,
            int(np.sum(angles[consensus] > 90.0)),
            int(members.sum()),
        )
    return scores


def _angles_between(matrices: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(m, m)``: the angle in degrees of ``M_i^T M_j`` for every pair."""
    traces = np.einsum("iab,jab->ij", matrices, matrices)
    return np.degrees(np.arccos(np.clip((traces - 1.0) / 2.0, -1.0, 1.0)))


def true_averages(data: SyntheticDataset, size: int) -> NDArray[np.float64]:
    """The class averages of the particles at their true poses and classes, at the internal box ``size``:
    what ``ml_tomo --only_average`` makes from the true metadata, prepared as ``--ref`` prepares maps.

    Returns
    -------
    (K, N, N, N) ndarray of float64
    """
    truth = SubtomogramSet(
        data.volumes,
        (data.region,),
        np.zeros(len(data.volumes), dtype=np.intp),
        data.angles_deg,
        data.shifts_px,
        data.classes,
    )
    box = data.volumes.shape[-1]
    params = MLParams(n_classes=len(data.phantoms), only_average=True, dim=None if size == box else size)
    *_, state = iter_refine(truth, params)
    return prepare_references(state.references, size)
