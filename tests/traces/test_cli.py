"""`gnurouter trace info/export-pcap/import-pcap` on damaged and good input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gnurouter.cli import main
from gnurouter.traces.format import Kind, TraceError, TraceReader, TraceWriter
from gnurouter.traces.synth import SynthConfig, Synthesizer


def small_trace(path: Path) -> int:
    messages = 0
    with TraceWriter(path, producer="test", block_bytes=2048) as writer:
        for record in Synthesizer(SynthConfig(duration=10, seed=1)):
            writer.write(record)
            messages += record.kind == Kind.MESSAGE
    return messages


def test_info_on_a_truncated_trace_reports_the_intact_part_and_the_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.gtrace"
    small_trace(path)
    cut = tmp_path / "cut.gtrace"
    cut.write_bytes(path.read_bytes()[:-100])
    intact = 0
    with pytest.raises(TraceError) as caught, TraceReader(cut) as reader:
        for record in reader:
            intact += record.kind == Kind.MESSAGE
    assert main(["trace", "info", str(cut), "--json"]) == 2
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert info["messages"] == intact > 0
    assert info["error_offset"] == caught.value.offset
    assert err.count("\n") == 1 and f"at byte {caught.value.offset}" in err
    assert main(["trace", "info", str(cut)]) == 2
    assert "DAMAGED" in capsys.readouterr().out


def test_info_refuses_a_file_that_is_not_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.gtrace"
    path.write_text("hello")
    assert main(["trace", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a gnurouter trace" in err and "at byte 0" in err


def test_pcap_round_trip_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.gtrace"
    messages = small_trace(path)
    pcap = tmp_path / "t.pcapng"
    assert main(["trace", "export-pcap", str(path), str(pcap)]) == 0
    assert "(pcapng)" in capsys.readouterr().out
    back = tmp_path / "back.gtrace"
    assert main(["trace", "import-pcap", str(pcap), str(back), "--node", "10.0.0.1:6346"]) == 0
    assert f"{messages:,} messages" in capsys.readouterr().out
    with TraceReader(path) as a, TraceReader(back) as b:
        original = [r.data for r in a if r.kind == Kind.MESSAGE]
        imported = [r.data for r in b if r.kind == Kind.MESSAGE]
    assert sorted(original) == sorted(imported)


def test_import_pcap_with_a_node_not_in_the_capture_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.gtrace"
    small_trace(path)
    pcap = tmp_path / "t.pcapng"
    assert main(["trace", "export-pcap", str(path), str(pcap)]) == 0
    capsys.readouterr()
    back = tmp_path / "back.gtrace"
    assert main(["trace", "import-pcap", str(pcap), str(back), "--node", "127.0.0.1:6346"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gnurouter: error: node 127.0.0.1:6346 ")
    assert "10.0.0.1:6346" in err and not back.exists()
    assert main(["trace", "import-pcap", str(pcap), str(back)]) == 0
    assert "node 10.0.0.1:6346 (found in the capture)" in capsys.readouterr().out
