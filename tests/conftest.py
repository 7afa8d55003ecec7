"""Shared pytest configuration and fixtures."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Refuse to start a ``gui`` test without an X display.

    pytest-xvfb starts Xvfb and sets ``DISPLAY`` when Xvfb is installed. Without a display Qt aborts
    the whole pytest process, so a ``gui`` test is skipped instead on a developer machine, and
    fails cleanly on CI (``CI`` set), where a missing Xvfb is a broken set-up, not a reason to skip.
    This hook runs before any fixture, so no ``QApplication`` has been created yet.
    """
    if item.get_closest_marker("gui") is None or os.environ.get("DISPLAY"):
        return
    message = "no X display for a gui test: install xvfb (see .ci/run) so pytest-xvfb can start it"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
