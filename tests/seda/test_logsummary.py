"""Per-message log events: DEBUG each, one INFO summary per peer and reason per interval."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest_twisted

from gnurouter.seda.logsummary import EventSummary
from tests.fixtures import LIMEWIRE_ULTRAPEER, join, query, until

WHAT = {"malformed": "malformed messages dropped"}


def summary(caplog: Any, **kwargs: Any) -> EventSummary:
    caplog.set_level(logging.DEBUG, logger="test.summary")
    return EventSummary(logging.getLogger("test.summary"), WHAT, **kwargs)


def info_lines(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_each_event_is_debug_and_an_interval_gives_one_info_line_per_peer_and_reason(
    caplog: Any,
) -> None:
    events = summary(caplog, interval=60.0)
    for second in range(30):
        events.note("10.0.0.1:1", "malformed", f"pong #{second}", now=float(second))
        events.note("10.0.0.2:2", "malformed", "ping", now=float(second))
    events.note("10.0.0.1:1", "clogged", "query", now=30.0)
    assert info_lines(caplog) == []  # the interval is not over
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 61
    events.note("10.0.0.1:1", "malformed", "pong #61", now=61.0)  # the next interval begins
    assert sorted(info_lines(caplog)) == [
        "peer 10.0.0.1:1: 1 clogged events in the last 31 s (last: query)",
        "peer 10.0.0.1:1: 30 malformed messages dropped in the last 61 s (last: pong #29)",
        "peer 10.0.0.2:2: 30 malformed messages dropped in the last 61 s (last: ping)",
    ]
    # The event that opened the new interval is summed up in it, not lost.
    events.flush(now=70.0)
    assert info_lines(caplog)[-1] == (
        "peer 10.0.0.1:1: 1 malformed messages dropped in the last 9 s (last: pong #61)"
    )


def test_a_departing_peer_gets_its_summary_at_once(caplog: Any) -> None:
    events = summary(caplog)
    events.note("10.0.0.1:1", "malformed", "pong", now=0.0)
    events.note("10.0.0.2:2", "malformed", "ping", now=0.0)
    events.flush_peer("10.0.0.1:1", now=5.0)
    assert info_lines(caplog) == [
        "peer 10.0.0.1:1: 1 malformed messages dropped in the last 5 s (last: pong)"
    ]
    events.flush_peer("10.0.0.1:1", now=6.0)  # nothing left for it
    assert len(info_lines(caplog)) == 1


def test_pending_pairs_are_bounded(caplog: Any) -> None:
    events = summary(caplog, max_keys=10)
    for peer in range(25):
        events.note(f"10.0.0.{peer}:1", "malformed", "pong", now=1.0)
    # Past ten pairs everything pending is written out: 20 summaries so far, 5 pending.
    assert events.summaries_written == 20 and len(info_lines(caplog)) == 20


@pytest_twisted.ensureDeferred
async def test_router_logs_malformed_messages_as_one_summary_when_the_peer_goes(
    start_router: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="gnurouter")
    router = start_router()
    sender = await join(router, headers=LIMEWIRE_ULTRAPEER)
    # A query whose criteria have no NUL terminator: dropped as malformed, the link kept.
    sender.send(*[replace(query(str(n)), payload=b"\x00\x00no terminator") for n in range(5)])
    parser = router.stages["parser"].handler
    await until(lambda: parser.malformed == 5)
    assert not [r for r in caplog.records if "malformed" in r.getMessage()]
    transport: Any = sender.transport  # ITransport is a zope interface, opaque to mypy
    transport.loseConnection()
    await until(lambda: not router.peers.established())
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "5 malformed messages dropped" in lines[0] and "query" in lines[0]
