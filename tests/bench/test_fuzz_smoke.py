"""The fuzz benchmark runs clean on a small budget, and it does notice a crash when there is one."""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

import pytest

from gnurouter.protocol.errors import ProtocolError
from tests.fixtures import ROOT

SCRIPT = ROOT / "benchmarks" / "fuzz.py"


def load_fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gnurouter_bench_fuzz", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    return load_fuzz()


def test_small_fuzz_run_reports_no_crash() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *("--inputs", "3000", "--seed", "1", "--json", "--name", "smoke-test"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    result = json.loads(done.stdout)
    assert result["inputs"] == 3000
    assert set(result["targets"]) == {"framer", "handshake", "parser", "control"}
    for name, target in result["targets"].items():
        assert target["inputs"] == target["quota"] > 0, name
        assert target["inputs_per_second"] > 0, name
        assert target["reached"], name  # the inputs got somewhere (handshakes, messages...)
    # The same figures are on disk, and only under var/fuzz/.
    written = json.loads((ROOT / "var" / "fuzz" / "smoke-test.json").read_text())
    assert written["inputs"] == 3000 and written["crashes"] == result["crashes"]

    assert result["crashes"] == 0, json.dumps(
        [t["examples"] for t in result["targets"].values() if t["examples"]], indent=1
    )[:6000]
    assert done.returncode == 0


def test_bad_arguments_are_refused() -> None:
    for argv, message in (
        (["--inputs", "0"], "--inputs must be within"),
        (["--name", "../escape"], "--name must be a plain file name"),
        (["--targets", "framer,nope"], "unknown target(s) nope"),
    ):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (argv, done.stderr)
        assert message in done.stderr, (argv, done.stderr)


# -- crash detection ---------------------------------------------------------------------


def faulty_target(fuzz: ModuleType) -> Any:
    """Inputs 0..9: 3 raises KeyError (a crash), 5 ProtocolError (declared), 7 breaks an oracle."""

    def run(value: int) -> None:
        if value == 3:
            raise KeyError("injected")
        if value == 5:
            raise ProtocolError("refused as the protocol says")
        fuzz.check(value != 7, "injected oracle failure")

    return fuzz.Target("faulty", (ProtocolError,), lambda rng: rng.randrange(10), run)


def test_the_runner_counts_undeclared_exceptions_as_crashes(fuzz: ModuleType) -> None:
    target = faulty_target(fuzz)
    rng = random.Random(42)
    expected = [rng.randrange(10) for _ in range(500)]
    result = fuzz.TargetResult("faulty", ["ProtocolError"], quota=500)
    assert fuzz.run_target(target, random.Random(42), 500, result) is True
    assert result.inputs == 500
    assert result.declared_errors == expected.count(5)
    assert result.crashes == expected.count(3) + expected.count(7)
    signatures = result.signatures
    assert sum(signatures.values()) == result.crashes
    key_errors = [s for s in signatures if s.startswith("KeyError at ")]
    assert len(key_errors) == 1 and signatures[key_errors[0]] == expected.count(3)
    assert signatures["InvariantViolation: injected oracle failure"] == expected.count(7)
    # The first crash of each kind is kept with its input, for a reproducer.
    first = {crash.error.split("(")[0]: crash for crash in result.examples}
    assert first["KeyError"].index == expected.index(3)
    assert first["KeyError"].input == "3"
    assert first["InvariantViolation"].input == "7"


def test_main_exits_1_and_prints_the_crash(
    fuzz: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    disabled_before = logging.root.manager.disable
    status = fuzz.main(
        ["--inputs", "200", "--seed", "3", "--name", "smoke-crash-test", "--quiet"],
        targets=[faulty_target(fuzz)],
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "crash in faulty" in out and "KeyError('injected')" in out
    assert "input: 3" in out
    written = json.loads((ROOT / "var" / "fuzz" / "smoke-crash-test.json").read_text())
    assert written["crashes"] > 0
    assert written["targets"]["faulty"]["examples"][0]["input"] in ("3", "7")
    assert logging.root.manager.disable == disabled_before  # main() put logging back


def test_a_clean_target_exits_0(fuzz: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    clean = fuzz.Target("clean", (ProtocolError,), lambda rng: rng.random(), lambda value: None)
    assert fuzz.main(["--inputs", "100", "--name", "smoke-clean-test", "--quiet"], [clean]) == 0
    assert "crash in" not in capsys.readouterr().out


def test_a_handler_failure_in_the_parser_stage_is_a_crash(fuzz: ModuleType) -> None:
    """The parser catches a bug's exception and reports it (report_failure): still a crash."""
    rig = fuzz.ParserRig()

    def broken_respond(peer: Any, request: Any) -> Any:
        raise RuntimeError("injected policy bug")

    rig.policy.respond = broken_respond
    target = fuzz.Target("parser", (), rig.generate, rig.run)
    result = fuzz.TargetResult("parser", [], quota=40)
    logging.disable(logging.CRITICAL)
    try:
        fuzz.run_target(target, random.Random(5), 40, result)
    finally:
        logging.disable(logging.NOTSET)
    reported = [s for s in result.signatures if "reported by a handler" in s]
    assert reported, result.signatures
    assert any(s.startswith("RuntimeError") for s in reported)
    assert any("injected policy bug" in crash.error for crash in result.examples)


def test_the_inputs_depend_on_the_seed_only(fuzz: ModuleType) -> None:
    def inputs(seed: int, *, with_other: bool = False) -> list[float]:
        values: list[float] = []
        recorder = fuzz.Target("recorder", (), lambda rng: rng.random(), values.append)
        other = fuzz.Target("other", (), lambda rng: rng.random(), lambda value: None)
        fuzz.run_all([recorder, other] if with_other else [recorder], 100, seed)
        return values

    assert inputs(1) == inputs(1) != inputs(2)
    # A target's inputs do not depend on which other targets run beside it.
    assert inputs(1, with_other=True) == inputs(1)[:50]


def test_the_time_cap_stops_a_run(fuzz: ModuleType) -> None:
    slow = fuzz.Target("slow", (), lambda rng: 0, lambda value: time.sleep(0.01))
    (result,) = fuzz.run_all([slow], 10_000, 1, seconds=0.2)
    assert 1 <= result.inputs < 100
