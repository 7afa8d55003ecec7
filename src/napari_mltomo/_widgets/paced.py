"""Display updates spread over turns of the event loop, so that a widget showing several layers or plots
at once never holds the viewer for longer than one of them takes."""

from __future__ import annotations

import collections
from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer

__all__ = ["PACE_MS", "Paced"]

#: Milliseconds of free event loop between two display updates (each takes 10-170 ms of the GUI thread).
PACE_MS = 40


class Paced:
    """Display updates run one at a time with :data:`PACE_MS` of free event loop after each, so that
    the viewer keeps answering while a widget shows layers and plots. The timer belongs to `owner`:
    updates still queued when it is deleted are dropped."""

    def __init__(self, owner: QObject) -> None:
        self._tasks: collections.deque[Callable[[], object]] = collections.deque()
        self._timer = QTimer(owner)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._next)

    @property
    def busy(self) -> bool:
        """Whether updates are waiting."""
        return bool(self._tasks)

    def add(self, task: Callable[[], object]) -> None:
        """Queue `task`; it runs on a later turn of the event loop."""
        self._tasks.append(task)
        if not self._timer.isActive():
            self._timer.start(0)

    def clear(self) -> None:
        """Drop the updates still waiting."""
        self._tasks.clear()

    def _next(self) -> None:
        if self._tasks:
            self._tasks.popleft()()
            self._timer.start(PACE_MS)
