"""What a replay did: counts, rates, lateness against the schedule, errors, and their text.

The report is filled in as the replay runs: the schedule counts what it
reads and schedules, the links what they send, receive and lose, the
replayer the connections.  Lateness (time handed to the socket minus time
due) goes into one `LatencyHistogram` covering the whole replay.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gnurouter.seda.stats import LatencyHistogram
from gnurouter.traces.format import TraceError

#: At most this many error messages are kept (all are counted).
_ERROR_SAMPLES = 50

#: One record handed to a socket: (time it was due, is it a message (not raw), bytes).
SentRecord = tuple[float, bool, int]


def _whole_replay_histogram() -> LatencyHistogram:
    # An infinite window: the percentiles describe the whole replay, not its last seconds.
    return LatencyHistogram(window=math.inf)


@dataclass
class ReplayReport:
    trace: str
    speed: float | None
    loops: int = 0
    records: int = 0
    messages_scheduled: int = 0
    raw_scheduled: int = 0
    messages_out_in_trace: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    raw_sent: int = 0
    unsent: Counter[str] = field(default_factory=Counter)
    trace_span: float = 0.0
    wall_seconds: float = 0.0
    first_send: float | None = None
    last_send: float | None = None
    lateness: LatencyHistogram = field(default_factory=_whole_replay_histogram)
    blocked_seconds: float = 0.0
    connections_opened: int = 0
    connections_established: int = 0
    connections_refused: Counter[str] = field(default_factory=Counter)
    connect_failures: int = 0
    closed_by_target: int = 0
    bye_codes: Counter[int] = field(default_factory=Counter)
    max_concurrent: int = 0
    received_by_type: dict[str, int] = field(default_factory=dict)
    received_bytes: int = 0
    #: Each distinct error text once, in order of first appearance (a refused target
    #: refuses every connection with the same words), with how often it happened.
    errors: list[str] = field(default_factory=list)
    error_repeats: Counter[str] = field(default_factory=Counter)
    error_count: int = 0
    #: Stopped before the trace was done (Ctrl-C, or the router around it stopping).
    interrupted: bool = False
    trace_error: TraceError | None = None

    @property
    def messages_received(self) -> int:
        return sum(self.received_by_type.values())

    @property
    def achieved_rate(self) -> float:
        if self.first_send is None or self.last_send is None or self.last_send <= self.first_send:
            return 0.0
        return self.messages_sent / (self.last_send - self.first_send)

    @property
    def scheduled_rate(self) -> float | None:
        if self.speed is None or self.trace_span <= 0:
            return None
        return self.messages_scheduled / (self.trace_span / self.speed)

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and self.trace_error is None and not self.interrupted

    def error(self, text: str) -> None:
        self.error_count += 1
        if text not in self.error_repeats and len(self.errors) < _ERROR_SAMPLES:
            self.errors.append(text)
        if text in self.errors:
            self.error_repeats[text] += 1

    def error_summary(self) -> list[str]:
        """The distinct errors, each once, with "(xN)" when it happened N > 1 times."""
        return [
            text + (f" (x{self.error_repeats[text]})" if self.error_repeats[text] > 1 else "")
            for text in self.errors
        ]

    def sent(self, written_at: float, records: Sequence[SentRecord]) -> None:
        """Count `records` handed to a socket at `written_at` (a monotonic time)."""
        if not records:
            return
        lateness = []
        for due, is_message, size in records:
            if is_message:
                lateness.append(max(0.0, written_at - due))
            self.bytes_sent += size
        self.messages_sent += len(lateness)
        self.raw_sent += len(records) - len(lateness)
        self.lateness.add_many(lateness)
        if self.first_send is None:
            self.first_send = written_at
        self.last_send = written_at

    def lateness_ms(self) -> dict[str, float]:
        """Lateness percentiles, maximum and mean, in milliseconds (zeros before any send)."""
        summary = self.lateness.summary()
        summary["p999"] = self.lateness.percentile(99.9)
        keys = ("p50", "p90", "p99", "p999", "max", "mean")
        return {key: round(summary[key] * 1e3, 3) for key in keys}

    def to_json(self) -> dict[str, Any]:
        scheduled = self.scheduled_rate
        return {
            "trace": self.trace,
            "speed": "max" if self.speed is None else self.speed,
            "loops": self.loops,
            "records": self.records,
            "trace_span_s": round(self.trace_span, 6),
            "wall_s": round(self.wall_seconds, 3),
            "messages_scheduled": self.messages_scheduled,
            "messages_sent": self.messages_sent,
            "raw_scheduled": self.raw_scheduled,
            "raw_sent": self.raw_sent,
            "bytes_sent": self.bytes_sent,
            "unsent": dict(self.unsent),
            "messages_out_in_trace": self.messages_out_in_trace,
            "scheduled_rate": round(scheduled, 2) if scheduled is not None else None,
            "achieved_rate": round(self.achieved_rate, 2),
            "lateness_ms": self.lateness_ms(),
            "blocked_s": round(self.blocked_seconds, 3),
            "connections": {
                "opened": self.connections_opened,
                "established": self.connections_established,
                "refused": dict(self.connections_refused),
                "connect_failures": self.connect_failures,
                "closed_by_target": self.closed_by_target,
                "max_concurrent": self.max_concurrent,
                "bye_codes": {str(k): v for k, v in sorted(self.bye_codes.items())},
            },
            "received": {
                "messages": self.messages_received,
                "bytes": self.received_bytes,
                "by_type": dict(sorted(self.received_by_type.items(), key=lambda kv: -kv[1])),
            },
            "errors": self.error_count,
            "error_samples": self.error_summary(),
            "interrupted": self.interrupted,
            "trace_error": str(self.trace_error) if self.trace_error else None,
            "ok": self.ok,
        }


def _listed(prefix: str, items: dict[str, Any], item: str) -> str:
    """`prefix` and the items joined by ", ", each formatted with `item` (key k, value v); ""
    when there are none."""
    if not items:
        return ""
    return prefix + ", ".join(item.format(k=k, v=v) for k, v in items.items())


def format_report(report: ReplayReport) -> str:
    data = report.to_json()
    late = data["lateness_ms"]
    conns = data["connections"]
    speed = "max" if report.speed is None else f"{report.speed:g}x"
    scheduled = data["scheduled_rate"]
    unsent = sum(report.unsent.values())
    lines = [
        f"replayed     {report.trace} at {speed}, {report.loops} pass(es): {report.records:,} "
        f"records, trace span {report.trace_span:.3f} s, wall {report.wall_seconds:.3f} s",
        f"sent         {report.messages_sent:,} of {report.messages_scheduled:,} messages"
        + (f" (+{report.raw_sent} raw)" if report.raw_scheduled else "")
        + f", {report.bytes_sent:,} bytes"
        + (
            _listed(f"; unsent {unsent:,}: ", dict(sorted(report.unsent.items())), "{k} {v:,}")
            if unsent
            else ""
        ),
        f"rate         achieved {data['achieved_rate']:,.1f} messages/s"
        + (f", scheduled {scheduled:,.1f}/s" if scheduled is not None else ""),
        f"lateness     p50 {late['p50']:.3f} ms, p90 {late['p90']:.3f} ms, p99 {late['p99']:.3f} "
        f"ms, p99.9 {late['p999']:.3f} ms, max {late['max']:.3f} ms (mean {late['mean']:.3f})"
        + (f"; blocked by the target {data['blocked_s']:.3f} s" if report.blocked_seconds else ""),
        f"connections  {conns['opened']:,} opened, {conns['established']:,} established, "
        f"max {conns['max_concurrent']} at once, {conns['closed_by_target']:,} closed by the "
        f"target"
        + _listed(", refused: ", conns["refused"], "{k} x{v}")
        + (f", {conns['connect_failures']} connect failures" if conns["connect_failures"] else "")
        + _listed(", byes: ", conns["bye_codes"], "{k} x{v}"),
        f"received     {data['received']['messages']:,} messages, "
        f"{data['received']['bytes']:,} bytes"
        + _listed(": ", data["received"]["by_type"], "{k} {v:,}"),
        f"errors       {report.error_count}"
        + (": " + "; ".join(report.error_summary()[:5]) if report.errors else ""),
    ]
    if report.trace_error is not None:
        lines.append(f"DAMAGED      {report.trace_error} (replayed the records before it)")
    if report.interrupted:
        lines.append("INTERRUPTED  stopped before the end of the trace")
    return "\n".join(lines)
