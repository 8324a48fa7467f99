"""The synthesiser: determinism, the original run's statistics, the knobs; synth -> file -> info."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gnurouter.cli import main
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.messages import HEADER_LENGTH, Message, decode_header, validate
from gnurouter.traces.format import Kind, TraceReader
from gnurouter.traces.stats import compute_stats
from gnurouter.traces.synth import ORIGINAL_RATE, SynthConfig, Synthesizer, parse_mix


def stats_of(config: SynthConfig) -> dict:
    synthesizer = Synthesizer(config)
    return compute_stats(synthesizer).to_json()


def test_same_seed_same_records_other_seed_other_records() -> None:
    config = SynthConfig(duration=30, seed=7)
    first = list(Synthesizer(config))
    assert first == list(Synthesizer(SynthConfig(duration=30, seed=7)))
    assert first != list(Synthesizer(SynthConfig(duration=30, seed=8)))
    times = [record.time_us for record in first]
    assert times == sorted(times)


def test_defaults_have_the_statistics_of_the_original_run() -> None:
    info = stats_of(SynthConfig(duration=900, seed=1))
    rate = info["rate"]
    assert abs(rate["mean_per_s"] - ORIGINAL_RATE) / ORIGINAL_RATE < 0.12
    assert info["shares"]["pong"] > 0.5  # "more than half of all packets were pongs"
    assert 0.13 < info["shares"]["query"] < 0.17
    assert 9 < info["connections"]["mean_open"] < 15  # "about 12 open at any time"
    assert info["connections"]["total"] > 200  # churn: lifetimes of ~22 s over 15 min
    assert rate["index_of_dispersion"] > 30  # very bursty (Poisson: 1)
    assert rate["peak_to_mean"] > 3
    assert 0.015 < info["malformed_share"] < 0.025


def test_burstiness_and_mix_knobs_move_the_statistics() -> None:
    calm = stats_of(SynthConfig(duration=300, burstiness=1.0, seed=2))["rate"]
    wild = stats_of(SynthConfig(duration=300, burstiness=10.0, seed=2))["rate"]
    assert calm["index_of_dispersion"] < 6  # Poisson events carrying short trains
    assert wild["index_of_dispersion"] > 10 * calm["index_of_dispersion"]
    assert abs(calm["mean_per_s"] - ORIGINAL_RATE) / ORIGINAL_RATE < 0.05

    queries = stats_of(SynthConfig(duration=120, query_share=0.4, rate=500, seed=3))
    assert 0.37 < queries["shares"]["query"] < 0.43
    assert abs(queries["rate"]["mean_per_s"] - 500) / 500 < 0.15

    no_pongs = stats_of(SynthConfig(duration=60, mix=parse_mix("pong=0"), seed=4))
    assert "pong" not in no_pongs["by_type"]
    clean = stats_of(SynthConfig(duration=60, malformed=0.0, framing_errors=0.0, seed=5))
    assert clean["malformed"] == 0 and clean["raw_records"] == 0


def test_malformed_messages_are_exactly_those_the_parser_rejects() -> None:
    synthesizer = Synthesizer(SynthConfig(duration=120, malformed=0.1, seed=9))
    rejected = 0
    for record in synthesizer:
        if record.kind != Kind.MESSAGE:
            continue
        guid, type_, ttl, hops, _ = decode_header(record.data)
        try:
            # The rule the router's parser applies (stages/parser.py calls it).
            validate(Message(guid, type_, ttl, hops, record.data[HEADER_LENGTH:]))
        except ProtocolError:
            rejected += 1
    assert synthesizer.summary.malformed > 500
    assert rejected == synthesizer.summary.malformed


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="burstiness"):
        SynthConfig(burstiness=0.5).validate()
    with pytest.raises(ValueError, match="unknown message type"):
        parse_mix("pongs=1")
    with pytest.raises(ValueError, match="at least one"):
        SynthConfig(mix={name: 0.0 for name in parse_mix("")}).validate()


def test_synth_file_info_round_trip_with_exact_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.gtrace"
    args = ["--duration", "90s", "--seed", "11", "--malformed", "0.05", "--framing-errors", "0.1"]
    assert main(["trace", "synth", str(path), *args]) == 0
    capsys.readouterr()
    expected = Synthesizer(SynthConfig(duration=90, seed=11, malformed=0.05, framing_errors=0.1))
    records = list(expected)
    summary = expected.summary

    assert main(["trace", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == len(records)
    assert info["messages"] == summary.messages == sum(summary.by_type.values())
    assert info["by_type"] == summary.by_type
    assert info["malformed"] == summary.malformed
    assert info["raw_records"] == summary.framing_errors > 0
    assert info["connections"]["opens"] == summary.connections
    assert info["connections"]["closes"] == summary.closes
    assert info["file"]["producer"].startswith("gnurouter ")
    assert info["file"]["metadata"]["synth"]["seed"] == 11
    with TraceReader(path) as reader:
        assert list(reader) == records

    assert main(["trace", "info", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"{summary.messages:,} messages" in text and "index of dispersion" in text


def test_synth_is_byte_identical_with_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setattr("sys.argv", ["gnurouter", "trace", "synth", "X", "--seed", "3"])
    for name in ("a.gtrace", "b.gtrace"):
        path = str(tmp_path / name)
        assert main(["trace", "synth", path, "--duration", "20s", "--seed", "3"]) == 0
    assert (tmp_path / "a.gtrace").read_bytes() == (tmp_path / "b.gtrace").read_bytes()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["trace", "synth", "x.gtrace", "--duration", "soon"], "duration"),
        (["trace", "synth", "x.gtrace", "--malformed", "2"], "outside 0..1"),
        (["trace", "synth", "x.gtrace", "--mix", "pong"], "TYPE=WEIGHT"),
        (["trace", "info", "/nonexistent/trace.gtrace"], "No such file"),
        (["trace", "replay", "x.gtrace", "--target", "nowhere"], "HOST:PORT"),
        (["trace", "replay", "x.gtrace", "--target", "127.0.0.1:1", "--speed", "fast"], "speed"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = int(exit_.code or 0)  # argparse errors
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and needle in err


def test_synth_refuses_to_overwrite_a_file_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kept.gtrace"
    path.write_bytes(b"someone's recording")
    assert main(["trace", "synth", str(path), "--duration", "5s"]) == 2
    assert capsys.readouterr().err == f"gnurouter: error: {path} exists; --force overwrites it\n"
    assert path.read_bytes() == b"someone's recording"
    assert main(["trace", "synth", str(path), "--duration", "5s", "--force"]) == 0
    with TraceReader(path) as reader:
        assert any(True for _ in reader)
