"""The output root of a run, guarded before any work: no output replaces an input, the folder is
writable and has room for the run, and one run at a time writes a root.

:class:`RunOutputs` tells the files a run will write under ``<root>`` (those of the iterations it will
write, the final copies, the lock) and estimates their size.
:func:`check_not_inputs` refuses a root whose files would replace a file the run reads;
:func:`check_output_folder` makes the folder, writes and removes a probe file in it and compares the
estimate with the free space. :class:`RunLock` holds ``<root>.lock`` (host, process id, start time) for
the length of a run. Each refusal raises :class:`OutputError` with one line naming ``--oroot``.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

from napari_mltomo.io.run_paths import RunPaths

__all__ = [
    "LockHolder",
    "OutputError",
    "OutputWarning",
    "RunLock",
    "RunOutputs",
    "check_not_inputs",
    "check_output_folder",
    "lock_file",
    "size_text",
]

_MRC_HEADER_BYTES = 1024
_TABLE_BYTES = 4096  # an upper estimate of a class table, a log or an FSC header
_FSC_ROW_BYTES = 40


class OutputError(ValueError):
    """An output root a run refuses before any work; the message starts with ``--oroot``."""


class OutputWarning(UserWarning):
    """A lock of a run that is gone was taken over."""


@dataclass(frozen=True)
class RunOutputs:
    """What a run will write under its root.

    Attributes
    ----------
    root : Path
        ``--oroot``.
    iterations : range
        The iterations whose files it writes (the starting model's included; a restart's own not).
    n_classes, box_size, n_particles : int
        Classes, input box size ``N0`` (maps are written at it) and particles.
    row_bytes : int
        An upper estimate of one particle row of a table.
    regularised, coverage : bool
        Whether it writes the maps before regularisation (``oriref``) and the coverage maps (``wedge``).
    """

    root: Path
    iterations: range
    n_classes: int
    box_size: int
    n_particles: int
    row_bytes: int
    regularised: bool
    coverage: bool

    def replaces(self, name: str) -> bool:
        """Whether the run writes a file called `name` in its folder: any file of an iteration it writes
        (``<root>_itNNNNNN*``), a final copy (``<root>_img.xmd``, ``<root>_ref.xmd``, ``<root>.fsc``,
        ``<root>_refKKKKKK.mrc``) or the lock."""
        stem = re.escape(self.root.name)
        iteration = re.match(rf"{stem}_it(\d{{6}})", name)
        if iteration:
            return int(iteration[1]) in self.iterations
        final_map = re.fullmatch(rf"{stem}_ref(\d{{6}})\.mrc", name)
        if final_map:
            return 1 <= int(final_map[1]) <= self.n_classes
        paths = RunPaths(self.root)
        return name in {
            paths.particles().name,
            paths.classes().name,
            paths.fsc().name,
            lock_file(self.root).name,
        }

    def estimated_bytes(self) -> int:
        """An upper estimate of the bytes the run writes: per iteration its maps at the input box, its
        exact model (float64 references at most at the input box), its particle table and its small
        tables; then the final copies (maps, two particle tables, FSC)."""
        map_bytes = _MRC_HEADER_BYTES + 4 * self.box_size**3
        maps = self.n_classes * (1 + self.regularised + self.coverage)
        model = 8 * self.n_classes * self.box_size**3 + _TABLE_BYTES
        table = self.n_particles * self.row_bytes
        fsc = _TABLE_BYTES + self.n_classes * (self.box_size // 2) * _FSC_ROW_BYTES
        iteration = maps * map_bytes + model + table + fsc + 3 * _TABLE_BYTES
        final = self.n_classes * map_bytes + 2 * table + fsc + _TABLE_BYTES
        return len(self.iterations) * iteration + final

    def needs_text(self) -> str:
        """The estimate, and what it counts."""
        box = self.box_size
        return (
            f"about {size_text(self.estimated_bytes())} ({len(self.iterations)} iteration(s) of "
            f"{self.n_classes} class(es) at {box}x{box}x{box} voxels, {self.n_particles} particles)"
        )


def check_not_inputs(outputs: RunOutputs, inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse a root whose files would replace a file the run reads (:meth:`RunOutputs.replaces`).

    An input is in the root's folder when its folder resolves to the same one (symbolic links and ``..``
    followed). For ``N@file`` (a stack's image) and ``block@file`` (a table's block) the file is checked.

    Raises
    ------
    OutputError
        Naming the first input an output would replace.
    """
    folders: dict[str, str] = {}
    folder = _resolved(os.fspath(outputs.root.parent), folders)
    for name in inputs:
        parent, file = os.path.split(_file_of(os.fspath(name)))
        if _resolved(parent, folders) == folder and outputs.replaces(file):
            raise OutputError(
                f"--oroot {outputs.root}: its output {file} would replace {os.fspath(name)}, which the run "
                "reads; give another --oroot"
            )


def _file_of(name: str) -> str:
    """The file of ``N@file`` or ``block@file`` (unless the whole name is a file)."""
    prefix, at, rest = name.partition("@")
    selects = at and rest and "/" not in prefix and os.sep not in prefix and not os.path.exists(name)
    return rest if selects else name


def _resolved(folder: str, cache: dict[str, str]) -> str:
    """`folder` with symbolic links and ``..`` resolved (``""`` is the current folder), cached."""
    if folder not in cache:
        cache[folder] = os.path.realpath(folder or os.curdir)
    return cache[folder]


def check_output_folder(outputs: RunOutputs) -> None:
    """Make the root's folder if missing, check that a file can be created in it and that it has free
    space for :meth:`RunOutputs.estimated_bytes`.

    Raises
    ------
    OutputError
        If the folder cannot be made or written, or has too little free space (the message gives the
        estimate and the free space).
    """
    root = outputs.root
    folder = root.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--oroot {root}: cannot make the folder {folder}: {err.strerror}") from None
    probe = folder / f".{root.name}.{uuid.uuid4().hex[:12]}.probe"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise OutputError(f"--oroot {root}: cannot write in {_folder_text(folder)}: {err.strerror}") from None
    free = shutil.disk_usage(folder).free
    if free < outputs.estimated_bytes():
        raise OutputError(
            f"--oroot {root}: the run writes {outputs.needs_text()} but {_folder_text(folder)} has "
            f"{size_text(free)} free; free some space or give another --oroot"
        )


def _folder_text(folder: Path) -> str:
    return "the current folder" if folder == Path() else os.fspath(folder)


def size_text(n_bytes: float) -> str:
    """A size in bytes as ``512 B``, ``1.5 MB`` or ``2.3 GB`` (powers of 1000)."""
    units = ("B", "kB", "MB", "GB", "TB")
    power = 0
    while n_bytes >= 1000 and power < len(units) - 1:
        n_bytes, power = n_bytes / 1000, power + 1
    return f"{n_bytes:.0f} B" if power == 0 else f"{n_bytes:.1f} {units[power]}"


# --------------------------------------------------------------------------- the lock


def lock_file(root: str | os.PathLike[str]) -> Path:
    """``<root>.lock``: held by the run writing ``<root>_*``."""
    return Path(f"{os.fspath(root)}.lock")


class LockHolder(NamedTuple):
    """The run that holds a lock: its host, process id and start time (ISO 8601)."""

    host: str
    pid: int
    started: str

    @classmethod
    def current(cls) -> LockHolder:
        """This process, now."""
        now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), now)

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        """The holder a lock file names, or None if it names none (empty or foreign)."""
        fields = dict(line.partition(" ")[::2] for line in text.splitlines())
        try:
            return cls(fields["host"], int(fields["pid"]), fields["started"])
        except (KeyError, ValueError):
            return None

    def text(self) -> str:
        """The lock file's content: ``host``, ``pid`` and ``started`` lines."""
        return f"host {self.host}\npid {self.pid}\nstarted {self.started}\n"

    def gone(self) -> bool:
        """Whether the holder is a process of this host that no longer runs (a lock of another host is
        never taken for gone: its processes cannot be seen from here)."""
        return self.host == socket.gethostname() and not psutil.pid_exists(self.pid)

    def description(self) -> str:
        """``pid P on host H, started T``."""
        return f"pid {self.pid} on host {self.host}, started {self.started}"


@dataclass(frozen=True)
class RunLock:
    """``<root>.lock``, held by this process from :meth:`acquire` to :meth:`release`.

    A second run on the same root is refused while the holder runs. A lock of a process of this host
    that is gone (killed, crashed) is taken over with an :class:`OutputWarning`; a lock of another host is
    respected, as is one that names no run (remove it by hand if no run is writing the root).
    """

    path: Path
    holder: LockHolder

    @classmethod
    def acquire(cls, root: str | os.PathLike[str]) -> RunLock:
        """Create ``<root>.lock`` for this process (its folder must exist).

        Raises
        ------
        OutputError
            If another run holds it (the message names its host and pid) or it cannot be created.
        """
        path, holder = lock_file(root), LockHolder.current()
        if _create(path, holder, root):
            return cls(path, holder)
        other = _read_holder(path)
        if other is not None and other.gone():
            warnings.warn(
                f"--oroot {os.fspath(root)}: took over {path} of {other.description()}, which no longer runs",
                OutputWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
        elif path.exists():
            raise OutputError(_held_text(root, path, other))
        if not _create(path, holder, root):  # another run took it at the same moment
            raise OutputError(_held_text(root, path, _read_holder(path)))
        return cls(path, holder)

    def release(self) -> None:
        """Remove the lock file if it is still this run's."""
        if _read_holder(self.path) == self.holder:
            self.path.unlink(missing_ok=True)


def _create(path: Path, holder: LockHolder, root: str | os.PathLike[str]) -> bool:
    """Create the lock file with `holder` in it; False if it exists."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise OutputError(f"--oroot {os.fspath(root)}: cannot create {path}: {err.strerror}") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(holder.text())
    return True


def _read_holder(path: Path) -> LockHolder | None:
    """The holder a lock file names; None if it names none or cannot be read (or is gone)."""
    try:
        return LockHolder.parse(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def _held_text(root: str | os.PathLike[str], path: Path, holder: LockHolder | None) -> str:
    if holder is None:
        return (
            f"--oroot {os.fspath(root)}: {path} exists but names no run; remove it if no run is writing "
            "this root, or give another --oroot"
        )
    return (
        f"--oroot {os.fspath(root)}: another run is writing it ({holder.description()}); wait for it to end "
        f"or give another --oroot (remove {path} if that run is gone)"
    )
