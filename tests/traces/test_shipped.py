"""The shipped traces: readable, and rebuilt byte for byte by the documented commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gnurouter.cli import main
from gnurouter.traces.format import TraceReader
from gnurouter.traces.stats import compute_stats

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "traces" / "README.md").read_text()
COMMANDS = re.findall(r"`SOURCE_DATE_EPOCH=(\d+) (gnurouter trace synth [^`]+)`", README)


def test_every_shipped_trace_is_documented() -> None:
    shipped = sorted(path.name for path in (ROOT / "traces").glob("*.gtrace"))
    documented = sorted(Path(shlex.split(command)[3]).name for _, command in COMMANDS)
    assert shipped and shipped == documented
    for path in (ROOT / "traces").glob("*.gtrace"):
        assert path.stat().st_size < 4_000_000  # "a few MB at most"


@pytest.mark.parametrize("epoch, command", COMMANDS, ids=[c.split()[3] for _, c in COMMANDS])
def test_shipped_trace_is_rebuilt_byte_for_byte(
    epoch: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    argv = shlex.split(command)
    shipped = ROOT / argv[3]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "traces").mkdir()
    monkeypatch.setattr("sys.argv", argv)  # the header records the command line
    assert main(argv[1:]) == 0
    assert (tmp_path / argv[3]).read_bytes() == shipped.read_bytes()


def test_shipped_ten_minutes_have_the_documented_statistics() -> None:
    with TraceReader(ROOT / "traces" / "synthetic-10min.gtrace") as reader:
        info = compute_stats(reader, reader.header).to_json()
    assert f"{info['messages']:,} messages" in README
    assert f"{info['rate']['mean_per_s']:.2f} messages/s" in README
    assert info["shares"]["pong"] > 0.5
    assert 10 < info["connections"]["mean_open"] < 14
