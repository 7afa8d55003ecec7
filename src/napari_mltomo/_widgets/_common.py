"""Small helpers shared by the widgets."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from napari.utils.notifications import show_error

from napari_mltomo.inputs import error_text

__all__ = ["notify_error", "report_errors"]

_F = TypeVar("_F", bound=Callable[..., Any])


def report_errors(action: _F) -> _F:
    """Run a widget action; a file or value error becomes one notification line instead of a traceback."""

    @functools.wraps(action)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except (OSError, ValueError) as err:
            notify_error(err)
            return None

    return wrapper  # type: ignore[return-value]


def notify_error(err: BaseException) -> None:
    """Show an error a user can cause as one notification line."""
    show_error(error_text(err))
