"""The option table: the command line is generated from it, and its defaults are the engine's."""

from __future__ import annotations

import dataclasses

import pytest

from napari_mltomo.argv import build_parser, options_to_argv
from napari_mltomo.core.params import MLParams
from napari_mltomo.options import OPTIONS, default_values, params_from_options


def test_parser_defaults_are_the_table_defaults() -> None:
    parser, long_options = build_parser()
    parsed = vars(parser.parse_args([]))
    assert parsed == default_values()
    assert long_options == {flag for option in OPTIONS for flag in option.flags if flag.startswith("--")}


def test_table_defaults_give_the_engine_defaults() -> None:
    """The values no option sets are decided by the inputs; every other field comes from the table."""
    params = params_from_options(default_values(), n_classes=1, fractions=None, pixel_size_A=1.0)
    assert params == MLParams()
    set_by_options = {option.field for option in OPTIONS if option.field}
    assert set_by_options | {"n_classes", "fractions", "pixel_size_A", "significance"} == {
        field.name for field in dataclasses.fields(MLParams)
    }


def test_every_help_line_gives_the_default() -> None:
    for option in OPTIONS:
        if option.kind is not bool and option.default is not None:
            assert f"(default: {option.default})" in option.help_text, option.name


@pytest.mark.parametrize(
    "values",
    [
        {"input": "a.xmd", "nref": 3, "ang": 12.5, "perturb": True, "eps": 1e-7, "dim": 16},
        {"input": "dir with space/a.xmd", "oroot": "out/r", "frac": "0.2,0.8", "no_SMALLANGLE": True},
    ],
)
def test_argv_round_trip(values: dict[str, object]) -> None:
    parser, _ = build_parser()
    parsed = vars(parser.parse_args(options_to_argv(values)))
    assert parsed == {**default_values(), **values}
