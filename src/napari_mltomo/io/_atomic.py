"""Atomic file replacement: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds.

    The temporary file lives in the same directory (so the rename is atomic on POSIX and
    Windows) and keeps the target's suffix, so writers that look at the extension still work.
    Readers never see a half-written file: they see the old file or the complete new one.
    If the block raises, the temporary file is removed and the target is left untouched.

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
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), os.fspath(target)) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
