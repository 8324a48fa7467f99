"""Statistics of a trace, computed in one streaming pass (`gnurouter trace info`).

Memory is constant in the number of records: per-second message counts take
one integer per second of trace, open connections one entry each.  Messages
are classified with the router's own rules, the framer's header check
(`MessageFramer.check_header`) and the parser's payload check
(`protocol.messages.validate`), so "malformed" here means exactly what a
router replaying the trace would drop and count as malformed.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.messages import HEADER_LENGTH, Message, decode_header, type_name, validate
from gnurouter.traces.format import Direction, Kind, Record, TraceHeader

#: Judges headers with the limits a router has by default (never fed: only
#: `check_header` is used, so it never enters its failed state).
_ROUTER_FRAMER = MessageFramer()


def classify(data: bytes) -> tuple[int, str | None]:
    """(type, None) for a message the router accepts; (type, why) when it would not.

    `why` is "framing" for a header the framer rejects (the link would be
    closed), or "malformed" for a payload the parser drops and counts.
    """
    guid, type_, ttl, hops, length = decode_header(data)
    if _ROUTER_FRAMER.check_header(type_, ttl, hops, length) is not None:
        return type_, "framing"
    try:
        validate(Message(guid, type_, ttl, hops, data[HEADER_LENGTH:]))
    except ProtocolError:
        return type_, "malformed"
    return type_, None


@dataclass
class TraceStats:
    header: TraceHeader | None = None
    file_bytes: int | None = None
    records: int = 0
    first_us: int | None = None
    last_us: int = 0
    messages: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    message_bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    malformed_by_type: dict[str, int] = field(default_factory=dict)
    framing_breaking: int = 0
    raw_records: int = 0
    raw_bytes: int = 0
    opens: int = 0
    closes: int = 0
    connections: int = 0
    max_open: int = 0
    open_seconds: float = 0.0  # integral of open connections over time
    lifetimes: list[float] = field(default_factory=list)
    per_second: array[int] = field(default_factory=lambda: array("I"))
    error: str | None = None
    error_offset: int | None = None

    @property
    def span(self) -> float:
        return 0.0 if self.first_us is None else (self.last_us - self.first_us) / 1e6

    @property
    def duration(self) -> float:
        """From the trace start (time 0) to the last record."""
        return self.last_us / 1e6

    def to_json(self) -> dict[str, Any]:
        counts = list(self.per_second)
        total = sum(self.messages.values())
        mean = total / self.duration if self.duration > 0 else 0.0
        # Whole seconds only: a last partial second would read as a lull.
        full = counts[: int(self.duration)] or counts
        var = statistics.pvariance(full) if len(full) > 1 else 0.0
        second_mean = statistics.fmean(full) if full else 0.0
        ordered = sorted(full)

        def pct(q: float) -> int:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0

        lifetimes = sorted(self.lifetimes)
        return {
            "file": {
                "bytes": self.file_bytes,
                "version": ".".join(map(str, self.header.version)) if self.header else None,
                "producer": self.header.producer if self.header else None,
                "created": self.header.created if self.header else None,
                "start_time": self.header.start_time if self.header else None,
                "metadata": self.header.metadata if self.header else None,
            },
            "records": self.records,
            "duration_s": round(self.duration, 6),
            "messages": total,
            "messages_in": self.messages["in"],
            "messages_out": self.messages["out"],
            "message_bytes": self.message_bytes,
            "rate": {
                "mean_per_s": round(mean, 3),
                "per_second_p50": pct(0.5),
                "per_second_p99": pct(0.99),
                "per_second_max": ordered[-1] if ordered else 0,
                "peak_to_mean": round(ordered[-1] / second_mean, 3) if second_mean else 0.0,
                "index_of_dispersion": round(var / second_mean, 3) if second_mean else 0.0,
                "cv": round(math.sqrt(var) / second_mean, 3) if second_mean else 0.0,
            },
            "by_type": dict(sorted(self.by_type.items(), key=lambda kv: -kv[1])),
            "shares": {
                name: round(count / total, 4)
                for name, count in sorted(self.by_type.items(), key=lambda kv: -kv[1])
            }
            if total
            else {},
            "malformed": self.malformed,
            "malformed_share": round(self.malformed / total, 4) if total else 0.0,
            "malformed_by_type": self.malformed_by_type,
            "framing_breaking": self.framing_breaking,
            "raw_records": self.raw_records,
            "raw_bytes": self.raw_bytes,
            "connections": {
                "total": self.connections,
                "opens": self.opens,
                "closes": self.closes,
                "mean_open": round(self.open_seconds / self.duration, 3) if self.duration else 0.0,
                "max_open": self.max_open,
                "lifetime_median_s": round(statistics.median(lifetimes), 3) if lifetimes else None,
                "lifetime_mean_s": round(statistics.fmean(lifetimes), 3) if lifetimes else None,
            },
            "error": self.error,
            "error_offset": self.error_offset,
        }


def compute_stats(
    records: Iterable[Record],
    header: TraceHeader | None = None,
    *,
    on_record: Callable[[Record], None] | None = None,
) -> TraceStats:
    """Accumulate statistics over `records` (any iterable; consumed once)."""
    stats = TraceStats(header=header)
    open_since: dict[int, int] = {}
    seen: set[int] = set()
    per_second = stats.per_second
    names: dict[int, str] = {}
    last_change = 0
    for record in records:
        if on_record is not None:
            on_record(record)
        time_us, kind, direction, conn, data = record
        stats.records += 1
        if stats.first_us is None:
            stats.first_us = time_us
        # Open connections are integrated over time, between changes.
        stats.open_seconds += len(open_since) * (time_us - last_change) / 1e6
        last_change = time_us
        stats.last_us = time_us
        if conn not in seen and kind != Kind.CLOSE:
            seen.add(conn)
            stats.connections += 1
            open_since[conn] = time_us
            stats.max_open = max(stats.max_open, len(open_since))
        if kind == Kind.MESSAGE:
            stats.messages["out" if direction == Direction.OUT else "in"] += 1
            stats.message_bytes += len(data)
            second = time_us // 1_000_000
            while len(per_second) <= second:
                per_second.append(0)
            per_second[second] += 1
            type_, problem = classify(data)
            name = names.get(type_)
            if name is None:
                name = names[type_] = type_name(type_)
            stats.by_type[name] = stats.by_type.get(name, 0) + 1
            if problem == "malformed":
                stats.malformed += 1
                stats.malformed_by_type[name] = stats.malformed_by_type.get(name, 0) + 1
            elif problem == "framing":
                stats.framing_breaking += 1
        elif kind == Kind.OPEN:
            stats.opens += 1
        elif kind == Kind.CLOSE:
            stats.closes += 1
            opened = open_since.pop(conn, None)
            if opened is not None:
                stats.lifetimes.append((time_us - opened) / 1e6)
        elif kind == Kind.RAW:
            stats.raw_records += 1
            stats.raw_bytes += len(data)
    return stats


def _si(value: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(value) < 1000:
            return f"{value:.1f} {unit}B" if unit else f"{value:.0f} B"
        value /= 1000
    return f"{value:.1f} TB"


def format_stats(info: dict[str, Any], path: str) -> str:
    """The human-readable `trace info` report."""
    f = info["file"]
    rate = info["rate"]
    conns = info["connections"]
    lines = [
        f"trace        {path}"
        + (f" ({_si(f['bytes'])})" if f["bytes"] is not None else "")
        + (f", format {f['version']}" if f["version"] else ""),
        f"producer     {f['producer']}",
        f"created      {f['created']}",
    ]
    metadata = f.get("metadata") or {}
    for key, value in metadata.items():
        if isinstance(value, dict):
            text = " ".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        lines.append(f"{'metadata' if key == next(iter(metadata)) else '':<12} {key}: {text}")
    total = info["messages"]
    lines += [
        f"duration     {info['duration_s']:.3f} s",
        f"records      {info['records']:,}: {total:,} messages (in {info['messages_in']:,}, "
        f"out {info['messages_out']:,}), {conns['opens']:,} opens, {conns['closes']:,} closes, "
        f"{info['raw_records']:,} raw",
        f"bytes        {_si(info['message_bytes'])} of messages"
        + (f", {info['message_bytes'] / total:.1f} B on average" if total else ""),
        f"rate         {rate['mean_per_s']:.2f} messages/s on average; per second "
        f"p50 {rate['per_second_p50']}, p99 {rate['per_second_p99']}, "
        f"max {rate['per_second_max']}",
        f"burstiness   peak/mean {rate['peak_to_mean']:.2f}, index of dispersion "
        f"{rate['index_of_dispersion']:.2f} (1 = Poisson), CV {rate['cv']:.2f}",
        "mix          "
        + ", ".join(
            f"{name} {info['by_type'][name]:,} ({share * 100:.1f}%)"
            for name, share in info["shares"].items()
        ),
        f"malformed    {info['malformed']:,} ({info['malformed_share'] * 100:.2f}%)"
        + (
            ": " + ", ".join(f"{k} {v:,}" for k, v in sorted(info["malformed_by_type"].items()))
            if info["malformed_by_type"]
            else ""
        )
        + (
            f"; {info['framing_breaking']:,} framing-breaking headers"
            if info["framing_breaking"]
            else ""
        ),
        f"connections  {conns['total']:,} in all; open at once: mean {conns['mean_open']:.2f}, "
        f"max {conns['max_open']}"
        + (
            f"; lifetime median {conns['lifetime_median_s']:.2f} s, "
            f"mean {conns['lifetime_mean_s']:.2f} s"
            if conns["lifetime_median_s"] is not None
            else ""
        ),
    ]
    if info.get("error"):
        lines.append(
            f"DAMAGED      {info['error']} (statistics cover the records before byte "
            f"{info['error_offset']})"
        )
    return "\n".join(lines)
