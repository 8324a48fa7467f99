"""The replay schedule on its own: what is due when, pass after pass, with no reactor or socket."""

from __future__ import annotations

import io

import pytest

from gnurouter.protocol.messages import Message, Ping
from gnurouter.traces.format import Direction, Kind, TraceReader, TraceWriter
from gnurouter.traces.replay import ReplayReport, ReplaySchedule
from gnurouter.traces.replay.schedule import END_OF_PASS

PING = Message.from_body(bytes(16), 1, 0, Ping()).encode()
T0 = 100.0


def trace_bytes() -> bytes:
    """Connection 1 opens at 0 s, sends a message at 1 s and raw bytes at 1.5 s, the node
    answers at 2 s, the connection closes at 3 s."""
    out = io.BytesIO()
    writer = TraceWriter(out, producer="test", compress=0)
    writer.open(0, 1)
    writer.message(1_000_000, 1, PING)
    writer.add(1_500_000, Kind.RAW, Direction.IN, 1, b"garbage")
    writer.message(2_000_000, 1, PING, Direction.OUT)
    writer.close_connection(3_000_000, 1)
    writer.end_block()
    return out.getvalue()


def schedule_of(
    data: bytes, *, speed: float | None = 2.0, loops: int = 1
) -> tuple[ReplaySchedule, ReplayReport]:
    report = ReplayReport(trace="test", speed=speed)
    schedule = ReplaySchedule(
        lambda: TraceReader(io.BytesIO(data)),
        report,
        speed=speed,
        loops=loops,
        lead=0.2,
        lookahead=1.0,
    )
    schedule.start(T0)
    return schedule, report


def drain(schedule: ReplaySchedule, now: float) -> list[tuple[float, int, int]]:
    """(due, kind, pass) of every record due by `now`."""
    due = []
    while (item := schedule.next_due(now)) is not None:
        due.append((item.at, item.record.kind, item.pass_number))
    return due


def test_records_fall_due_at_their_trace_time_over_the_speed() -> None:
    schedule, report = schedule_of(trace_bytes(), speed=2.0)
    schedule.read_ahead(T0)
    # The OPEN is handed out `lead` early; nothing else is due at t0.
    assert schedule.due_opens(T0 - 0.3) == []
    assert schedule.due_opens(T0 - 0.2) == [(1, 1)]
    assert drain(schedule, T0) == []
    assert schedule.wake_at(T0) == pytest.approx(T0 + 0.5)
    schedule.read_ahead(T0 + 0.5)
    assert drain(schedule, T0 + 0.8) == [(T0 + 0.5, Kind.MESSAGE, 1), (T0 + 0.75, Kind.RAW, 1)]
    schedule.read_ahead(T0 + 1.5)
    # The OUT message is counted, never sent.
    assert drain(schedule, T0 + 1.5) == [(T0 + 1.5, Kind.CLOSE, 1)]
    schedule.read_ahead(T0 + 1.5)
    assert schedule.finished
    assert (report.records, report.messages_scheduled, report.raw_scheduled) == (5, 1, 1)
    assert report.messages_out_in_trace == 1
    assert report.trace_span == 3.0 and report.loops == 1


def test_at_full_speed_everything_is_due_at_once() -> None:
    schedule, _ = schedule_of(trace_bytes(), speed=None)
    schedule.read_ahead(T0)
    assert [at for at, _, _ in drain(schedule, T0)] == [T0, T0, T0]


def test_passes_follow_each_other_with_connections_of_their_own() -> None:
    schedule, report = schedule_of(trace_bytes(), speed=1.0, loops=2)
    due: list[tuple[float, int, int]] = []
    opens = []
    now = T0
    while not schedule.finished:
        schedule.read_ahead(now)
        opens += schedule.due_opens(now)
        due += drain(schedule, now)
        now = schedule.wake_at(now)
    assert opens == [(1, 1), (2, 1)]
    kinds = [(kind, number) for _, kind, number in due]
    assert kinds == [
        (Kind.MESSAGE, 1), (Kind.RAW, 1), (Kind.CLOSE, 1), (END_OF_PASS.kind, 1),
        (Kind.MESSAGE, 2), (Kind.RAW, 2), (Kind.CLOSE, 2),
    ]  # fmt: skip
    # The second pass starts 1 ms of trace time after the first one's last record.
    assert due[4][0] == pytest.approx(T0 + 3.001 + 1.0)
    assert report.loops == 2 and report.messages_scheduled == 2


def test_damage_ends_the_schedule_after_the_intact_records() -> None:
    data = trace_bytes()
    schedule, report = schedule_of(data[:-3], speed=None)
    schedule.read_ahead(T0)
    assert drain(schedule, T0) == []  # the only block is damaged
    assert schedule.finished
    assert report.trace_error is not None and report.records == 0


def test_stop_reads_no_further() -> None:
    schedule, report = schedule_of(trace_bytes(), speed=None, loops=0)
    schedule.read_ahead(T0)
    passes, records = report.loops, report.records
    assert passes > 1  # forever, a bounded chunk per call
    schedule.stop()
    schedule.read_ahead(T0)
    assert (report.loops, report.records) == (passes, records)
    drain(schedule, T0)
    schedule.due_opens(T0)
    assert schedule.finished
