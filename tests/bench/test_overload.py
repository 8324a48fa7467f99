"""The overload benchmark end to end, at a small scale: real processes, real links."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gnurouter.bench.loadgen import LoadGenerator


def bench(tmp_path: Path, *args: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gnurouter",
            "bench",
            "overload",
            "--settle",
            "0",
            "--warmup",
            "0",
            "--out",
            str(tmp_path),
            "--docs",
            str(tmp_path / "overload.md"),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.network
def test_one_point_measures_every_message_type_and_writes_the_report(tmp_path: Path) -> None:
    outcome = bench(tmp_path, "--rates", "300", "--policies", "default", "--duration", "1.5")
    [point] = outcome["results"]
    load = point["load"]
    assert point["policy"] == "default" and point["rate"] == 300
    # Offered what was asked: 300/s for 1.5 s, in bursts of 10.
    assert 0.9 * 450 <= load["offered"] <= 1.1 * 450
    assert abs(sum(load["sent"].values()) + load["sent_untimed"] - load["offered"]) == 0
    # Well below capacity nothing timed is lost, and every type was timed.
    for kind in ("ping", "pong", "query", "query-hit"):
        assert load["received"][kind] == load["sent"][kind] > 0, kind
        assert load["latency"][kind]["p50_ms"] <= load["latency"][kind]["p99_ms"]
    # Queries block 20 ms in the router stage: their latency shows it.
    assert load["latency"]["query"]["p50_ms"] >= 20
    assert point["samples"] and point["peak_rss_mb"] > 0
    report = (tmp_path / "overload.md").read_text()
    assert "| 100 | 13.34 / 27.27 | 12.63 / 27.39 |" in report  # the original's figures
    for name in ("overload-latency.png", "overload-goodput.png", "overload-over-time.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.network
def test_unconditioned_router_is_reported_collapsed(tmp_path: Path) -> None:
    outcome = bench(
        tmp_path, "--rates", "3000", "--policies", "none", "--duration", "4", "--queue-limit", "800"
    )
    [point] = outcome["results"]
    assert point["collapsed"] is not None
    assert point["collapsed"]["queue"] > 800
    assert point["collapsed"]["t"] < 4 + 1


def test_bad_arguments_give_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (["--rates", "0"], ["--policies", "bogus"], ["--query-share", "1.5"]):
        result = subprocess.run(
            [sys.executable, "-m", "gnurouter", "bench", "overload", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert (
            result.stderr.startswith("gnurouter: error: ") and len(result.stderr.splitlines()) == 1
        )


def test_generator_mix_has_the_requested_query_share() -> None:
    class Link:
        on_message = None

        def __init__(self) -> None:
            self.sent: list = []

        def send(self, *messages: object) -> None:
            self.sent.extend(messages)

    links = [Link(), Link(), Link()]
    generator = LoadGenerator(links, rate=1000, burst=10, query_share=0.15, seed=7)  # type: ignore[arg-type]
    for number in range(2000):
        generator.send_burst(due=float(number))
    sent = [m for link in links for m in link.sent]
    assert len(sent) == 20_000
    queries = sum(1 for m in sent if m.type == 0x80)
    assert abs(queries / len(sent) - 0.15) < 0.01
    pongs = sum(1 for m in sent if m.type == 0x01)
    assert pongs / len(sent) > 0.4  # the trace's pongs: over half of the non-queries
