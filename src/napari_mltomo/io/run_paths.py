"""Every file name of a refinement, in one place: what :class:`~napari_mltomo.io.run.RunWriter` writes,
what :mod:`napari_mltomo.io.results` reads back and what the widgets offer (``<root>`` is ``--oroot``,
``NNNNNN`` the iteration and ``KKKKKK`` the class, both six digits)."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunPaths"]

#: The name of any file of a run, with its root as group ``root``.
_RUN_FILE = re.compile(
    r"(?P<root>.+?)(_it\d{6}(_log\.xmd|_model\.npz|\.doc|\.fsc|_ref\.xmd|_(ori)?ref\d{6}\.mrc|_wedge\d{6}\.mrc)"
    r"|_img\.xmd|_ref\.xmd|_ref\d{6}\.mrc|\.fsc)"
)
_LOG = re.compile(r"_it(\d{6})_log\.xmd")


@dataclass(frozen=True)
class RunPaths:
    """The files of the run whose output root is ``root``.

    Methods taking ``iteration=None`` name the final copies (``<root>_img.xmd``, ``<root>_ref.xmd``,
    ``<root>_refKKKKKK.mrc``, ``<root>.fsc``); with an iteration, that iteration's files.
    """

    root: Path

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> RunPaths:
        """The run named by its root or by any file it wrote (the root made absolute)."""
        path = Path(path).expanduser().absolute()
        match = _RUN_FILE.fullmatch(path.name)
        return cls(path.with_name(match["root"]) if match else path)

    def _stem(self, iteration: int | None) -> str:
        root = os.fspath(self.root)
        return root if iteration is None else f"{root}_it{iteration:06d}"

    def particles(self, iteration: int | None = None) -> Path:
        """``<root>_itNNNNNN.doc``, or ``<root>_img.xmd``."""
        return Path(f"{self.root}_img.xmd") if iteration is None else Path(f"{self._stem(iteration)}.doc")

    def classes(self, iteration: int | None = None) -> Path:
        """``<root>_itNNNNNN_ref.xmd``, or ``<root>_ref.xmd``."""
        return Path(f"{self._stem(iteration)}_ref.xmd")

    def reference(self, k: int, iteration: int | None = None) -> Path:
        """Class ``k``'s map (1-based): ``<root>_itNNNNNN_refKKKKKK.mrc``, or ``<root>_refKKKKKK.mrc``."""
        return Path(f"{self._stem(iteration)}_ref{k:06d}.mrc")

    def unregularised(self, k: int, iteration: int) -> Path:
        """Class ``k``'s map before regularisation: ``<root>_itNNNNNN_orirefKKKKKK.mrc``."""
        return Path(f"{self._stem(iteration)}_oriref{k:06d}.mrc")

    def coverage(self, k: int, iteration: int) -> Path:
        """Class ``k``'s Fourier coverage: ``<root>_itNNNNNN_wedgeKKKKKK.mrc``."""
        return Path(f"{self._stem(iteration)}_wedge{k:06d}.mrc")

    def fsc(self, iteration: int | None = None) -> Path:
        """``<root>_itNNNNNN.fsc``, or ``<root>.fsc``."""
        return Path(f"{self._stem(iteration)}.fsc")

    def log(self, iteration: int) -> Path:
        """``<root>_itNNNNNN_log.xmd``: the restart point of an iteration, written last."""
        return Path(f"{self._stem(iteration)}_log.xmd")

    def model(self, iteration: int) -> Path:
        """``<root>_itNNNNNN_model.npz``: the exact model of an iteration, for a bit-for-bit restart."""
        return Path(f"{self._stem(iteration)}_model.npz")

    def holds(self, path: str | os.PathLike[str]) -> bool:
        """Whether `path` names a file of this run (any iteration's, or a final copy)."""
        found = _RUN_FILE.fullmatch(Path(path).name)
        return found is not None and RunPaths.of(path).root == RunPaths.of(self.root).root

    def logged_iterations(self) -> tuple[int, ...]:
        """The iterations whose log is on disk (so all their files are complete), ascending."""
        pattern = glob.escape(os.fspath(self.root)) + "_it[0-9][0-9][0-9][0-9][0-9][0-9]_log.xmd"
        return tuple(sorted(int(_LOG.search(name)[1]) for name in glob.glob(pattern)))
