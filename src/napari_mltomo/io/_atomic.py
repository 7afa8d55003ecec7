"""Atomic file replacement: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PAUSE_VARIABLE", "atomic_path", "fault_point", "temporary_target"]

#: The environment variable of the fault-injection hook (see :func:`fault_point`).
PAUSE_VARIABLE = "NAPARI_MLTOMO_PAUSE"
#: ``.<stem>.<12 hex digits>.tmp<suffix>``: the temporary name of ``<stem><suffix>``.
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.[0-9a-f]{12}\.tmp(?P<suffix>(\.[^.]*)?)")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds.

    The temporary file lives in the same directory (so the rename is atomic on POSIX and
    Windows) and keeps the target's suffix, so writers that look at the extension still work.
    Readers never see a half-written file: they see the old file or the complete new one.
    If the block raises, the temporary file is removed and the target is left untouched; a killed
    process leaves it behind (:func:`temporary_target` recognises it).

    Parameters
    ----------
    path : str or os.PathLike
        Final destination. Its directory must exist.

    Yields
    ------
    Path
        Where to write. It does not exist yet; the block must create it.

    Raises
    ------
    OSError
        From a failed write or rename, naming `path` (not the temporary file).

    Examples
    --------
    >>> with atomic_path("run_it000001.doc") as tmp:  # doctest: +SKIP
    ...     tmp.write_text(text)
    """
    target = Path(path)
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
    try:
        yield temporary
        fault_point(f"rename {target.name}")
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), os.fspath(target)) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def temporary_target(path: str | os.PathLike[str]) -> Path | None:
    """The file that `path` was going to become, if `path` is a temporary name of :func:`atomic_path`."""
    path = Path(path)
    match = _TEMPORARY.fullmatch(path.name)
    return path.with_name(match["stem"] + match["suffix"]) if match else None


def fault_point(name: str) -> None:
    """Test hook for the fault tests (``tests/faces/test_faults.py``); does nothing in normal use.

    With ``NAPARI_MLTOMO_PAUSE=NAME@SECONDS`` in the environment, the run prints ``ml_tomo: paused at NAME``
    on stderr and sleeps `SECONDS` when it reaches the point `name`, so that a test can kill it there.
    The points are ``rename FILE`` (before a written file takes its name) and ``STAGE chunk I/N``
    (a chunk of particles of a pass is done, before the run checks whether it must stop).
    """
    point, _, seconds = os.environ.get(PAUSE_VARIABLE, "").rpartition("@")
    if point != name:
        return
    print(f"ml_tomo: paused at {name}", file=sys.stderr, flush=True)
    time.sleep(float(seconds))
