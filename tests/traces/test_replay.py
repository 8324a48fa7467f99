"""Replaying traces against real routers on loopback: exact counts on both sides."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, utils

from gnurouter.stages.parser import ParserHandler
from gnurouter.traces.format import Kind, TraceReader, TraceWriter
from gnurouter.traces.replay import Replayer, ReplayOptions, attach_replay, format_report
from gnurouter.traces.synth import SynthConfig, Synthesizer
from tests.conftest import DecisionWatch, wait_for
from tests.traces.capture import bounded

pytestmark = pytest.mark.network


def write_synth(path: Path, block_bytes: int = 65536, **config: Any) -> Synthesizer:
    synthesizer = Synthesizer(SynthConfig(**config))
    metadata = synthesizer.metadata()
    with TraceWriter(path, producer="test", metadata=metadata, block_bytes=block_bytes) as writer:
        for record in synthesizer:
            writer.write(record)
    return synthesizer


def parser_of(router: Any) -> ParserHandler:
    handler = router.stages["parser"].handler
    assert isinstance(handler, ParserHandler)
    return handler


@pytest_twisted.ensureDeferred
async def test_replay_sends_every_message_and_the_router_logs_every_one(
    start_router: Any, tmp_path: Path
) -> None:
    trace = tmp_path / "s.gtrace"
    synth = write_synth(trace, duration=20, seed=4, malformed=0.05, framing_errors=0.15)
    summary = synth.summary
    assert summary.framing_errors > 0 and summary.malformed > 0
    # A peer sending more than max_malformed_per_peer bad payloads is closed,
    # and its later messages would be unsendable: not what this test counts.
    router = start_router(conditioning="none", max_peers=200, max_malformed_per_peer=1_000_000)
    watch = DecisionWatch(router)
    parser = parser_of(router)
    options = ReplayOptions(speed=10.0, drain=0.3)
    replayer = Replayer(reactor, str(trace), router.listening_address(), options)
    report = await bounded(replayer.run(), 30)

    # The replayer's side: everything in the trace went out on its own link.
    assert report.ok, report.errors
    assert report.messages_scheduled == report.messages_sent == summary.messages
    assert report.raw_sent == summary.framing_errors
    assert report.connections_opened == report.connections_established == summary.connections
    assert not report.unsent
    assert report.lateness.count == summary.messages

    # The router's side: every message framed, each either routed (a decision
    # in its log) or dropped as malformed by the parser; every framing error seen.
    def logged() -> int:
        return len(watch.seen) + parser.malformed

    await watch.wait_until(lambda: logged() >= summary.messages, timeout=15)
    assert len(watch.seen) == summary.messages - summary.malformed
    assert parser.malformed == summary.malformed
    assert parser.protocol_errors == summary.framing_errors
    by_type: dict[str, int] = {}
    for event, _ in watch.seen:
        by_type[event.message.type_name] = by_type.get(event.message.type_name, 0) + 1
    assert sum(by_type.values()) == len(watch.seen)
    assert by_type.get("query", 0) > 0 and by_type.get("pong", 0) > by_type.get("query", 0)

    # What came back is what the router sent to the replay's links.
    await wait_for(router, lambda: len(router.peers) == 0)
    sent_by_router = router.peers.departed.messages_out
    # The replay half-closes its links; the router routes what came before the
    # FIN, closes its side after what is queued, and counts only what it wrote.
    assert report.messages_received == sent_by_router, (sent_by_router, report.messages_received)
    assert report.received_by_type.get("query", 0) > 0
    assert sum(report.bye_codes.values()) == report.received_by_type.get("bye", 0)


@pytest_twisted.ensureDeferred
async def test_replay_keeps_the_schedule_and_loops(start_router: Any, tmp_path: Path) -> None:
    trace = tmp_path / "s.gtrace"
    synth = write_synth(trace, duration=4, seed=8, malformed=0.0, framing_errors=0.0)
    router = start_router(conditioning="none", max_peers=200)
    options = ReplayOptions(speed=2.0, loops=2, drain=0.2)
    report = await bounded(Replayer(reactor, str(trace), router.listening_address(), options).run())
    assert report.ok, report.errors
    assert report.loops == 2
    assert report.messages_sent == 2 * synth.summary.messages
    # The second pass reopens every connection.
    assert report.connections_opened == 2 * synth.summary.connections
    # Wall time follows the schedule: two passes of ~4 s at 2x, plus the drain.
    span = report.trace_span / 2.0
    assert 3.0 < span < 4.5 and report.wall_seconds >= span
    assert abs(report.achieved_rate - report.scheduled_rate) / report.scheduled_rate < 0.1
    late = report.lateness_ms()
    assert late["p50"] < 20 and late["max"] < 500, late


@pytest_twisted.ensureDeferred
async def test_replay_of_a_damaged_trace_uses_the_records_before_the_damage(
    start_router: Any, tmp_path: Path
) -> None:
    trace = tmp_path / "s.gtrace"
    write_synth(trace, 4096, duration=10, seed=2, malformed=0.0, framing_errors=0.0)
    data = trace.read_bytes()
    truncated = tmp_path / "cut.gtrace"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    intact = 0
    try:
        with TraceReader(truncated) as reader:
            for record in reader:
                intact += record.kind == Kind.MESSAGE
    except Exception as error:
        damage = error
    assert intact > 0
    router = start_router(conditioning="none")
    options = ReplayOptions(speed=None, drain=0.2)
    report = await bounded(
        Replayer(reactor, str(truncated), router.listening_address(), options).run()
    )
    assert report.trace_error is not None
    assert report.trace_error.offset == damage.offset  # type: ignore[attr-defined]
    assert report.messages_sent == intact


@pytest_twisted.ensureDeferred
async def test_run_replay_and_record_in_one_router(start_router: Any, tmp_path: Path) -> None:
    """`gnurouter run --replay X --record Y`: what the router records is what was replayed."""
    trace = tmp_path / "s.gtrace"
    synth = write_synth(trace, duration=6, seed=6)
    recorded = tmp_path / "recorded.gtrace"
    router = start_router(record=str(recorded), conditioning="none", target_peers=4)
    args = argparse.Namespace(
        replay=str(trace), replay_speed=10.0, replay_loop=False, replay_lead=0.2
    )  # no --target-peers given: the catcher is switched off
    replayer = attach_replay(reactor, router, args)
    report = await bounded(replayer.done)
    assert report.messages_sent == synth.summary.messages
    assert router.stages["catcher"].handler.target_peers == 0
    await wait_for(router, lambda: len(router.peers) == 0)
    port = router.listening_address()[1]
    await router.stopService()
    with TraceReader(recorded) as reader:
        records = list(reader)
        assert reader.header.metadata["node"] == f"127.0.0.1:{port}"
    messages = [r.data for r in records if r.kind == Kind.MESSAGE]
    with TraceReader(trace) as reader:
        original = [r.data for r in reader if r.kind == Kind.MESSAGE]
    # Everything the router received, in per-connection order.
    assert sorted(messages) == sorted(original)
    assert sum(r.kind == Kind.OPEN for r in records) == synth.summary.connections
    assert sum(r.kind == Kind.CLOSE for r in records) == synth.summary.connections
    assert router.recorder.stats()["dropped"] == 0


@pytest_twisted.ensureDeferred
async def test_trace_replay_command(start_router: Any, tmp_path: Path) -> None:
    trace = tmp_path / "s.gtrace"
    synth = write_synth(trace, duration=3, seed=3, framing_errors=0.0)
    router = start_router(conditioning="none")
    host, port = router.listening_address()
    args = ["-m", "gnurouter", "trace", "replay", str(trace), "--target", f"{host}:{port}",
            "--speed", "max", "--json"]  # fmt: skip
    out, err, code = await bounded(
        utils.getProcessOutputAndValue(sys.executable, args, env=dict(os.environ), path=os.getcwd())
    )
    assert code == 0, err
    import json

    report = json.loads(out)
    assert report["messages_sent"] == synth.summary.messages
    assert report["connections"]["established"] == synth.summary.connections
    assert report["ok"] is True

    args = ["-m", "gnurouter", "trace", "replay", str(tmp_path / "missing.gtrace"),
            "--target", f"{host}:{port}"]  # fmt: skip
    out, err, code = await bounded(
        utils.getProcessOutputAndValue(sys.executable, args, env=dict(os.environ), path=os.getcwd())
    )
    assert code == 2 and err.count(b"\n") == 1 and b"error" in err


@pytest_twisted.ensureDeferred
async def test_a_refused_target_is_one_error_with_its_count(tmp_path: Path) -> None:
    trace = tmp_path / "s.gtrace"
    synth = write_synth(trace, duration=3, seed=3, framing_errors=0.0)
    assert synth.summary.connections > 1
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = ReplayOptions(speed=None, drain=0.1)
    report = await bounded(Replayer(reactor, str(trace), ("127.0.0.1", port), options).run(), 30)
    assert report.error_count == report.connect_failures == synth.summary.connections
    [summary] = report.error_summary()
    assert summary.startswith(f"connect to 127.0.0.1:{port}: ")
    assert summary.endswith(f"(x{synth.summary.connections})")
    errors_line = format_report(report).splitlines()[-1]
    assert errors_line.count("connect to") == 1, errors_line


@pytest_twisted.ensureDeferred
async def test_a_replay_stopped_early_says_so(
    start_router: Any, tmp_path: Path, caplog: Any
) -> None:
    trace = tmp_path / "s.gtrace"
    write_synth(trace, duration=60, seed=3, framing_errors=0.0)
    router = start_router(conditioning="none")
    args = argparse.Namespace(replay=str(trace), replay_speed=1.0, replay_loop=True)
    with caplog.at_level(logging.INFO, logger="gnurouter.traces"):
        replayer = attach_replay(reactor, router, args)
        await wait_for(router, lambda: len(router.peers.established()) >= 1)
        replayer.stop()  # as the router's shutdown does
        report = await bounded(replayer.done)
    assert report.interrupted and not report.ok
    assert format_report(report).splitlines()[-1].startswith("INTERRUPTED")
    said = [r.getMessage() for r in caplog.records if "replay of" in r.getMessage()]
    assert len(said) == 1 and " stopped with the router:" in said[0]
    assert " finished" not in said[0]
