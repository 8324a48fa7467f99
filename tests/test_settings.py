"""One declaration per option: the config file, the command line and the control API agree."""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

import pytest
import pytest_twisted

from gnurouter.cli import build_parser, config_from_args
from gnurouter.config import (
    NUMERIC_KINDS,
    ConfigError,
    RouterConfig,
    config_from_mapping,
    format_duration,
    parse_duration,
)
from gnurouter.seda.tuning import ControlError

DEFAULTS = RouterConfig()
NUMERIC = [
    f.name
    for f in dataclasses.fields(RouterConfig)
    if RouterConfig.setting(f.name).kind in NUMERIC_KINDS
]


def just_outside(name: str) -> list[float]:
    """Values a hair beyond each end of the declared range (none below a low of 0)."""
    declared = RouterConfig.setting(name)
    assert declared.low is not None and declared.high is not None
    step = 1 if declared.kind == "int" else max(declared.high * 1e-6, 1e-9)
    values = [declared.high + step]
    if declared.low - step >= 0:
        values.append(declared.low - step)
    return [int(v) if declared.kind == "int" else v for v in values]


@pytest.mark.parametrize("name", NUMERIC)
def test_every_default_is_inside_its_own_declared_range(name: str) -> None:
    RouterConfig.setting(name).check(name, getattr(DEFAULTS, name))


@pytest.mark.parametrize("name", NUMERIC)
def test_the_file_and_the_command_line_refuse_the_same_values(name: str) -> None:
    flag = RouterConfig.setting(name).flag or "--" + name.replace("_", "-")
    for value in just_outside(name):
        with pytest.raises(ConfigError, match=re.escape(name)):
            config_from_mapping({name: value})
        args = build_parser().parse_args(["run", flag, repr(value)])
        with pytest.raises(ConfigError, match=re.escape(name)):
            config_from_args(args)


@pytest_twisted.ensureDeferred
async def test_control_parameters_take_their_range_and_words_from_the_declaration(
    start_router: Any,
) -> None:
    router = start_router()
    tied = [p for p in router.control.describe() if p["setting"] is not None]
    # Most of the live knobs are router options; a regression to restated
    # ranges would show up as parameters without a `setting`.
    assert len(tied) >= 25
    for parameter in tied:
        declared = RouterConfig.setting(parameter["setting"])
        assert parameter["description"] == declared.help
        assert parameter["nullable"] == declared.nullable
        if declared.kind not in NUMERIC_KINDS:
            continue
        assert parameter["low"] == declared.low
        assert parameter["high"] <= declared.high
        for value in just_outside(parameter["setting"]):
            if value > parameter["high"] or value < parameter["low"]:
                with pytest.raises(ControlError, match="outside the allowed range"):
                    router.control.set(parameter["name"], value)


def run_options() -> dict[str, argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = commands.choices["run"]
    return {a.dest: a for a in run._actions}


def test_help_shows_every_default_in_words_the_option_reads_back() -> None:
    options = run_options()
    for f in dataclasses.fields(RouterConfig):
        declared = RouterConfig.setting(f.name)
        default = getattr(DEFAULTS, f.name)
        if not declared.on_command_line:
            assert f.name not in options
            continue
        help_text = options[f.name].help or ""
        if declared.flag or default in (None, [], {}):
            continue
        assert "(default: " in help_text, f"{f.name} shows no default"
        shown = help_text.split("(default: ", 1)[1].rsplit(")", 1)[0]
        if declared.kind == "duration":
            assert parse_duration(shown) == pytest.approx(default)
        elif declared.kind in NUMERIC_KINDS:
            assert float(shown) == pytest.approx(default)


@pytest.mark.parametrize("seconds", [0.0, 0.0001, 0.005, 0.1, 1.0, 2.5, 30.0, 90.0, 600.0, 7200.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
