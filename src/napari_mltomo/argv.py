"""``ml_tomo`` arguments and option values, both ways: the ``argparse`` parser generated from the option table
(:data:`napari_mltomo.options.OPTIONS`), which also reads single-dash long spellings such as ``-missing``,
and the arguments that give a set of option values.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from napari_mltomo.options import GROUPS, OPTIONS, PROG

__all__ = [
    "CommandParser",
    "HelpExit",
    "UsageError",
    "build_parser",
    "command_line",
    "normalise_argv",
    "option_values",
    "options_to_argv",
    "parse_argv",
    "stored_argv",
]

_BY_NAME = {option.name: option for option in OPTIONS}


def options_to_argv(values: Mapping[str, Any]) -> list[str]:
    """The ``ml_tomo`` arguments giving `values` (options at their default are left out)."""
    argv: list[str] = []
    for name, value in values.items():
        option = _BY_NAME[name]
        if value is None or value == option.default:
            continue
        if option.kind is bool:
            argv.append(option.flags[-1])
        else:
            argv += [option.flags[-1], str(value)]
    return argv


def command_line(values: Mapping[str, Any]) -> str:
    """The ``ml_tomo`` command giving `values` (options at their default left out)."""
    return shlex.join([PROG, *options_to_argv(values)])


# --------------------------------------------------------------------------- the parser


class UsageError(ValueError):
    """The command line itself is wrong (an unknown option, a missing or malformed value)."""


class HelpExit(Exception):
    """argparse finished on its own (``--help``); ``args[0]`` is the exit status."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing a usage block and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise HelpExit(status)


def build_parser() -> tuple[CommandParser, frozenset[str]]:
    """The argument parser generated from the option table, and its long option names (``--name``)."""
    parser = CommandParser(
        prog=PROG,
        description=(
            "Align and classify subtomograms with missing Fourier regions by maximum likelihood "
            "(Scheres et al. 2009, Structure 17:1563)."
        ),
        epilog=(
            f"'{PROG} demo [DIR]' writes a synthetic data set to DIR and runs a 3-class refinement on it; "
            f"'{PROG} export RUN --to relion|relion30|dynamo -o FILE' writes a run's particles for RELION or "
            "Dynamo."
        ),
        allow_abbrev=False,
    )
    sections = {title: parser.add_argument_group(title) for title in GROUPS}
    for option in OPTIONS:
        section = sections[option.group]
        if option.kind is bool:
            section.add_argument(*option.flags, dest=option.name, action="store_true", help=option.help_text)
        else:
            section.add_argument(
                *option.flags,
                dest=option.name,
                type=option.kind,
                default=option.default,
                metavar=option.metavar,
                help=option.help_text.replace("%", "%%"),
            )
    long_options = frozenset(flag for option in OPTIONS for flag in option.flags if flag.startswith("--"))
    return parser, long_options


def normalise_argv(argv: Sequence[str], long_options: frozenset[str]) -> list[str]:
    """Turn single-dash long options (``-missing``, ``-iter=5``) into ``--missing``, ``--iter=5``.

    Only names that are long options of the parser are changed, so values such as ``-1`` and the
    short options ``-i``/``-o``/``-h`` pass through.
    """
    normalised = []
    for arg in argv:
        name = arg.partition("=")[0]
        if arg.startswith("-") and not arg.startswith("--") and "-" + name in long_options:
            arg = "-" + arg
        normalised.append(arg)
    return normalised


def parse_argv(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """``ml_tomo`` arguments parsed (:class:`UsageError` if they are wrong), and the normalised arguments."""
    parser, long_options = build_parser()
    normalised = normalise_argv(argv, long_options)
    return parser.parse_args(normalised), normalised


def option_values(argv: Sequence[str]) -> dict[str, Any]:
    """The option values (names as in the option table) of ``ml_tomo`` arguments, for the widget."""
    return vars(parse_argv(argv)[0])


def stored_argv(command_line: str) -> list[str]:
    """The arguments of a command line stored by a run (its logs' header), without the program name."""
    words = shlex.split(command_line)
    return words[1:] if words[:1] == [PROG] else words
