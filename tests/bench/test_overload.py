"""The overload benchmark end to end, at a small scale: real processes, real links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gnurouter.bench.loadgen import LoadGenerator
from gnurouter.bench.overload import publish
from gnurouter.protocol.messages import Message, MessageType
from gnurouter.protocol.vendor import hops_flow_message
from tests.fixtures import ROOT


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


@pytest.mark.network
def test_a_run_writes_only_under_its_out_directory(tmp_path: Path) -> None:
    # Run from a copy of the repository's layout: docs/results/ exists and must not change.
    published = tmp_path / "docs" / "results"
    published.mkdir(parents=True)
    (published / "overload.md").write_text("the full run's report\n")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "gnurouter", "bench", "overload", "--rates", "200"),
            *("--policies", "default", "--duration", "1", "--warmup", "0", "--settle", "0"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in written if not p.startswith("var/bench/")] == ["docs/results/overload.md"]
    assert "var/bench/overload.md" in written and "var/bench/overload.json" in written
    assert (published / "overload.md").read_text() == "the full run's report\n"


def test_publish_copies_the_report_and_plots(tmp_path: Path) -> None:
    out, published = tmp_path / "var" / "bench", tmp_path / "docs" / "results"
    out.mkdir(parents=True)
    (out / "overload.md").write_text("![overload-latency](overload-latency.png)\n")
    (out / "overload-latency.png").write_bytes(b"png")
    (out / "overload.json").write_text("{}")
    copied = publish(out, published)
    assert sorted(p.name for p in copied) == ["overload-latency.png", "overload.md"]
    assert sorted(p.name for p in published.iterdir()) == ["overload-latency.png", "overload.md"]


def test_bad_arguments_give_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (
        ["--rates", "0"],
        ["--policies", "bogus"],
        ["--query-share", "1.5"],
        ["--quick", "--publish"],  # only a full run is published
        ["--rates", "100", "--publish"],
    ):
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


def test_a_generator_honouring_hops_flow_sheds_queries_at_the_source() -> None:
    class Link:
        on_message: Any = None

        def __init__(self) -> None:
            self.sent: list[Message] = []

        def send(self, *messages: Message) -> None:
            self.sent.extend(messages)

    links = [Link(), Link(), Link()]
    generator = LoadGenerator(
        links,  # type: ignore[arg-type]
        rate=1000,
        burst=10,
        query_share=0.5,
        seed=7,
        honour_hops_flow=True,
    )
    links[0].on_message(hops_flow_message(2))  # link 0: only queries of 0 or 1 hops
    for number in range(500):
        generator.send_burst(due=float(number))
    first = [m for m in links[0].sent if m.type == MessageType.QUERY]
    others = [m for link in links[1:] for m in link.sent if m.type == MessageType.QUERY]
    assert first and max(m.hops for m in first) == 1
    assert max(m.hops for m in others) > 1  # the others carry far-travelled queries still
    assert generator.shed_at_source > 0 and generator.hops_flow_received == 1
    links[0].on_message(hops_flow_message(255))  # lifted
    shed = generator.shed_at_source
    for number in range(500, 600):
        generator.send_burst(due=float(number))
    assert generator.shed_at_source == shed
    assert max(m.hops for m in links[0].sent if m.type == MessageType.QUERY) > 1
