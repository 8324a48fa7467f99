"""Replaying a trace against a router: one real peer link per trace connection, on schedule.

Every trace connection becomes a TCP connection to the target that does the
real 0.6 handshake (`PeerConnection`, as the router itself does), opened
`lead` seconds of wall time before its OPEN record so that the handshake is
over when its first message is due.  Each IN message (and RAW record) is
written at its trace time divided by `speed`; OUT records are only counted
(what the recording node sent).  CLOSE records close the link once
everything before them is written.

Scheduling runs on the reactor with a monotonic clock: one timer wakes the
replayer when the next record is due, and every record due by then is
written, one write per link per wake-up.  The lateness of a message is the
time it was handed to its socket minus the time it was due; it is kept in a
histogram (bounded memory, 1% resolution) for percentiles.  The trace is
read as a stream, at most `lookahead` seconds of it ahead of the clock.

Back-pressure: a link whose socket buffer fills (the target reads slower
than the schedule) holds its messages until the socket drains, and the
reader stops reading ahead while more than `max_pending_bytes` wait; the
time spent so is reported (`blocked_seconds`), and it shows as lateness.
What comes back is counted per message type (headers only, no decoding).
"""

from __future__ import annotations

import logging
import math
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from gnurouter.edge.gctuning import tune_for_serving
from gnurouter.edge.servent import DEFAULT_HEADERS
from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.deflate import Deflater
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.handshake import (
    ConnectResponse,
    HandshakeComplete,
    HandshakeRefused,
    Headers,
    Role,
    negotiate_encoding,
)
from gnurouter.protocol.messages import Message, MessageType, type_name
from gnurouter.traces.format import Direction, Kind, Record, TraceError, TraceReader

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
_HEADER_LENGTH = 23
BYE = int(MessageType.BYE)


#: Queued after the last record of a pass when the trace is replayed again.
_END_OF_PASS: Any = Record(0, 0, 0, 0, b"")


class LatencyHistogram:
    """Non-negative durations in log buckets of ~1% width, from 1 us up: bounded memory."""

    _SCALE = 100.0  # buckets per e-fold

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        micros = seconds * 1e6
        index = int(math.log1p(micros) * self._SCALE)
        counts = self.counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def percentile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-quantile (seconds); 0 when empty."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.max, math.expm1((index + 1) / self._SCALE) / 1e6)
        return self.max

    def summary_ms(self) -> dict[str, float]:
        return {
            "p50": round(self.percentile(0.50) * 1e3, 3),
            "p90": round(self.percentile(0.90) * 1e3, 3),
            "p99": round(self.percentile(0.99) * 1e3, 3),
            "p999": round(self.percentile(0.999) * 1e3, 3),
            "max": round(self.max * 1e3, 3),
            "mean": round(self.total / self.count * 1e3, 3) if self.count else 0.0,
        }


@dataclass
class ReplayOptions:
    speed: float | None = 1.0  # None: as fast as the links take it
    loops: int = 1  # 0: forever
    deflate: bool = False
    lead: float = 0.2
    lookahead: float = 1.0
    max_connections: int = 1000
    max_pending_bytes: int = 16 << 20
    drain: float = 1.0  # seconds to keep reading after the last message
    connect_timeout: float = 10.0
    close_timeout: float = 3.0
    headers: tuple[tuple[str, str], ...] = DEFAULT_HEADERS
    progress: bool = False


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
    unsent: dict[str, int] = field(default_factory=dict)
    trace_span: float = 0.0
    wall_seconds: float = 0.0
    first_send: float | None = None
    last_send: float | None = None
    lateness: LatencyHistogram = field(default_factory=LatencyHistogram)
    blocked_seconds: float = 0.0
    connections_opened: int = 0
    connections_established: int = 0
    connections_refused: dict[str, int] = field(default_factory=dict)
    connect_failures: int = 0
    closed_by_target: int = 0
    bye_codes: dict[int, int] = field(default_factory=dict)
    max_concurrent: int = 0
    received_by_type: dict[str, int] = field(default_factory=dict)
    received_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
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
        return self.error_count == 0 and self.trace_error is None

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < 50:
            self.errors.append(text)

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
            "unsent": self.unsent,
            "messages_out_in_trace": self.messages_out_in_trace,
            "scheduled_rate": round(scheduled, 2) if scheduled is not None else None,
            "achieved_rate": round(self.achieved_rate, 2),
            "lateness_ms": self.lateness.summary_ms(),
            "blocked_s": round(self.blocked_seconds, 3),
            "connections": {
                "opened": self.connections_opened,
                "established": self.connections_established,
                "refused": self.connections_refused,
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
            "error_samples": self.errors,
            "trace_error": str(self.trace_error) if self.trace_error else None,
            "ok": self.ok,
        }


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
            f"; unsent {unsent:,}: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(report.unsent.items()))
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
        + (
            ", refused: " + ", ".join(f"{k} x{v}" for k, v in conns["refused"].items())
            if conns["refused"]
            else ""
        )
        + (f", {conns['connect_failures']} connect failures" if conns["connect_failures"] else "")
        + (
            ", byes: " + ", ".join(f"{k} x{v}" for k, v in conns["bye_codes"].items())
            if conns["bye_codes"]
            else ""
        ),
        f"received     {data['received']['messages']:,} messages, "
        f"{data['received']['bytes']:,} bytes"
        + (
            ": " + ", ".join(f"{k} {v:,}" for k, v in data["received"]["by_type"].items())
            if data["received"]["by_type"]
            else ""
        ),
        f"errors       {report.error_count}"
        + (": " + "; ".join(report.errors[:5]) if report.errors else ""),
    ]
    if report.trace_error is not None:
        lines.append(f"DAMAGED      {report.trace_error} (replayed the records before it)")
    return "\n".join(lines)


# -- one link ---------------------------------------------------------------------------------


@implementer(IPushProducer)
class ReplayLink(protocol.Protocol):
    """One trace connection: handshake, then scheduled writes; counts what comes back."""

    def __init__(self, replayer: Replayer, key: tuple[int, int]) -> None:
        self.replayer = replayer
        self.key = key
        self.connection = PeerConnection(Role.INITIATOR)
        self.established = False
        self.closed = False
        self.close_requested = False
        self.paused = False
        self.paused_at = 0.0
        # (due, data, is_message) waiting for the handshake or a drained socket.
        self.pending: deque[tuple[float, bytes, bool]] = deque()
        self.pending_bytes = 0
        self._fast = False
        self._inflater: Any = None
        self._rest = b""
        self._deflater: Deflater | None = None
        self._closing = False
        self._close_timer: Any = None
        self.lost: defer.Deferred[None] = defer.Deferred()

    @property
    def _wire(self) -> Any:
        return self.transport

    # -- Twisted protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        wire = self._wire
        if hasattr(wire, "setTcpNoDelay"):
            wire.setTcpNoDelay(True)
        wire.registerProducer(self, True)
        pairs = list(self.replayer.options.headers)
        if self.replayer.options.deflate:
            pairs.append(("Accept-Encoding", "deflate"))
        wire.write(self.connection.start(Headers.from_pairs(pairs)))

    def dataReceived(self, data: bytes) -> None:
        report = self.replayer.report
        report.received_bytes += len(data)
        if self._fast:
            if self._inflater is not None:
                try:
                    data = self._inflater.decompress(data)
                except zlib.error as failure:
                    self._protocol_error(f"bad deflate stream from the target: {failure}")
                    return
            self._count(data)
            return
        try:
            events = self.connection.receive_data(data)
        except ProtocolError as failure:
            self._protocol_error(str(failure))
            return
        for event in events:
            if isinstance(event, Message):
                self._counted(event.type, event.payload)
            elif isinstance(event, ConnectResponse) and event.status == 200:
                if self.connection.established:
                    continue
                reply = Headers.from_pairs(
                    negotiate_encoding(
                        event.headers, we_support_deflate=self.replayer.options.deflate
                    )
                )
                self._wire.write(self.connection.confirm(reply))
                self._established()
            elif isinstance(event, HandshakeComplete):
                self._established()
            elif isinstance(event, HandshakeRefused):
                label = f"{event.status} {event.reason}".strip()
                refused = report.connections_refused
                refused[label] = refused.get(label, 0) + 1
        connection = self.connection
        if (
            self.established
            and connection.failed is None
            and connection.buffered == 0
            and not self._fast
        ):
            # From here on walk headers only (and inflate ourselves when deflated).
            self._fast = True
            if connection.deflate_in:
                self._inflater = zlib.decompressobj()
                if connection.stream_bytes_in:
                    self._fast = False  # the zlib stream already started inside PeerConnection
                    self._inflater = None
        if connection.failed is not None:
            self._protocol_error(str(connection.failed))

    def _protocol_error(self, text: str) -> None:
        self.replayer.report.error(f"link {self.key[1]}: protocol error from the target: {text}")
        self._wire.loseConnection()

    def _counted(self, type_: int, payload: bytes) -> None:
        counts = self.replayer.received
        counts[type_] += 1
        if type_ == BYE and len(payload) >= 2:
            code = payload[0] | payload[1] << 8
            codes = self.replayer.report.bye_codes
            codes[code] = codes.get(code, 0) + 1

    def _count(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        unpack = _LENGTH.unpack_from
        counts = self.replayer.received
        pos, size = 0, len(buf)
        while size - pos >= _HEADER_LENGTH:
            end = pos + _HEADER_LENGTH + unpack(buf, pos + 19)[0]
            if end > size:
                break
            type_ = buf[pos + 16]
            if type_ == BYE:
                self._counted(type_, buf[pos + _HEADER_LENGTH : end])
            else:
                counts[type_] += 1
            pos = end
        self._rest = buf[pos:] if pos < size else b""

    def _established(self) -> None:
        if self.established or not self.connection.established:
            return
        self.established = True
        if self.connection.deflate_out:
            self._deflater = Deflater()
        self.replayer.link_established(self)
        self.flush_pending()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self.replayer.link_lost(self, reason)

    # -- IPushProducer: the socket's write buffer ----------------------------------

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.paused_at = time.monotonic()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.replayer.report.blocked_seconds += time.monotonic() - self.paused_at
            self.flush_pending()

    def stopProducing(self) -> None:
        self.pauseProducing()

    # -- sending ---------------------------------------------------------------------

    def flush_pending(self) -> None:
        """Write what waited for the handshake or for the socket to drain."""
        if not self.established or self.closed or not self.pending:
            self._maybe_close()
            return
        replayer = self.replayer
        parts = []
        sent = []
        pending = self.pending
        while pending and not self.paused:
            item = pending.popleft()
            parts.append(item[1])
            sent.append(item)
        self.pending_bytes = sum(len(item[1]) for item in pending)
        if parts:
            self._write(b"".join(parts))
            now = time.monotonic()
            for due, data, is_message in sent:
                replayer.sent(now - due, is_message, len(data), now)
        self._maybe_close()

    def _write(self, data: bytes) -> None:
        if self._deflater is not None:
            data = self._deflater.compress(data)
        self._wire.write(data)

    def request_close(self) -> None:
        self.close_requested = True
        self._maybe_close()

    def _maybe_close(self) -> None:
        """Half-close once everything is written, and read on until the target closes.

        Closing outright while the target's data is still unread makes the
        kernel answer with a reset, and a reset makes the target's kernel drop
        what it has not read yet: the trace's last messages (often a Bye)
        would be lost.  The target closes after our FIN; if it does not
        within `close_timeout`, the link is closed from here.
        """
        if not self.close_requested or self.pending or self.closed or self._closing:
            return
        wire = self._wire
        if wire is None:
            return
        self._closing = True
        if getattr(wire, "producer", None) is not None:
            wire.unregisterProducer()
        wire.loseWriteConnection()
        self._close_timer = self.replayer.reactor.callLater(
            self.replayer.options.close_timeout, wire.abortConnection
        )


class _LinkFactory(protocol.ClientFactory):
    def __init__(self, link: ReplayLink) -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> ReplayLink:
        return self.link

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.link.replayer.connect_failed(self.link, reason)


# -- the replayer ---------------------------------------------------------------------------


class Replayer:
    """Replays `path` against `target`; `run()` returns a Deferred firing with the report."""

    def __init__(
        self,
        reactor: Any,
        path: str,
        target: tuple[str, int],
        options: ReplayOptions | None = None,
        *,
        clock: Any = time.monotonic,
    ) -> None:
        self.reactor = reactor
        self.path = str(path)
        self.target = target
        self.options = options or ReplayOptions()
        self.clock = clock
        self.report = ReplayReport(trace=self.path, speed=self.options.speed)
        self.received = [0] * 256
        self.links: dict[tuple[int, int], ReplayLink] = {}
        self._gone: set[tuple[int, int]] = set()
        self._live = 0
        self._queue: deque[tuple[float, Record, int]] = deque()
        self._opens: deque[tuple[float, Record, int]] = deque()
        self._records: Iterator[Record] | None = None
        self._reader: TraceReader | None = None
        self._loop = 0
        self._t0 = 0.0
        self._first_us: int | None = None
        self._loop_offset_us = 0
        self._last_us = 0
        self._last_due = 0.0
        self._exhausted = False
        self._timer: Any = None
        self.done: defer.Deferred[ReplayReport] = defer.Deferred()
        self._finishing = False
        self._started = 0.0
        self._stopped = False
        self._bar: Any = None
        self._last_progress = 0.0
        lookahead = max(self.options.lookahead, self.options.lead + 0.2)
        self._lookahead = lookahead

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> defer.Deferred[ReplayReport]:
        from gnurouter.traces.progress import progress

        self._bar = progress(None, "replay", unit="msg", enabled=self.options.progress)
        self._started = self.clock()
        # Time 0 of the schedule: far enough ahead for the first handshakes.
        self._t0 = self._started + self.options.lead + 0.05
        self._open_reader()
        self._wake()
        return self.done

    def stop(self) -> None:
        """End now: close every link and report (for a replay inside a stopping router)."""
        self._stopped = True
        self._finish()

    def _open_reader(self) -> None:
        self._reader = TraceReader(self.path)
        self._records = iter(self._reader)
        self._loop += 1
        self.report.loops = self._loop

    def _next_record(self) -> Record | None:
        """The next record, continuing into the next loop; None at the end."""
        while True:
            assert self._records is not None
            try:
                return next(self._records)
            except StopIteration:
                pass
            except TraceError as failure:
                self.report.trace_error = failure
                self._close_reader()
                return None
            self._close_reader()
            loops = self.options.loops
            if self._stopped or (loops and self._loop >= loops):
                return None
            # Next pass: new connections, times continuing 1 ms after this pass.
            # The pass's connections end after its last record (see _wake).
            self._queue.append((self._last_due, _END_OF_PASS, self._loop))
            self._loop_offset_us = self._last_us + 1000
            self._first_us = None
            self._open_reader()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _due(self, record: Record) -> float:
        if self._first_us is None:
            self._first_us = record.time_us
        trace_us = self._loop_offset_us + record.time_us - self._first_us
        self._last_us = trace_us
        self.report.trace_span = trace_us / 1e6
        speed = self.options.speed
        due = self._t0 if speed is None else self._t0 + trace_us / 1e6 / speed
        self._last_due = due
        return due

    def _fill(self, now: float) -> None:
        """Read ahead up to `lookahead` seconds (wall) of schedule."""
        queue = self._queue
        horizon = now + self._lookahead
        pending_bytes = sum(link.pending_bytes for link in self.links.values())
        if pending_bytes > self.options.max_pending_bytes:
            return
        limit = 1000  # records per wake-up: reading never stalls the sending for long
        taken = 0
        while not self._exhausted and (not queue or queue[-1][0] <= horizon) and taken < limit:
            record = self._next_record()
            if record is None:
                self._exhausted = True
                break
            taken += 1
            due = self._due(record)
            item = (due, record, self._loop)
            self.report.records += 1
            kind = record.kind
            if kind == Kind.OPEN:
                self._opens.append(item)
            elif kind == Kind.MESSAGE:
                if record.direction == Direction.OUT:
                    self.report.messages_out_in_trace += 1
                    continue
                self.report.messages_scheduled += 1
                queue.append(item)
            elif kind == Kind.RAW:
                if record.direction == Direction.OUT:
                    continue
                self.report.raw_scheduled += 1
                queue.append(item)
            elif kind == Kind.CLOSE:
                queue.append(item)

    def _wake(self) -> None:
        self._timer = None
        if self._finishing:
            return
        now = self.clock()
        self._fill(now)
        lead = self.options.lead
        opens = self._opens
        while opens and opens[0][0] - lead <= now:
            _, record, loop = opens.popleft()
            self._connect((loop, record.conn))
        queue = self._queue
        links = self.links
        touched: dict[ReplayLink, list[bytes]] = {}
        report = self.report
        sent = 0
        dues: list[tuple[float, bool, int]] = []
        max_batch = 5000 if self.options.speed is None else 1 << 30
        while queue and queue[0][0] <= now and sent < max_batch:
            due, record, loop = queue.popleft()
            if record is _END_OF_PASS:
                for ending in [link for link in touched if link.key[0] == loop]:
                    self._write(ending, touched.pop(ending))
                self._end_loop_connections(loop)
                continue
            key = (loop, record.conn)
            link = links.get(key)
            if link is None:
                if key in self._gone:
                    if record.kind == Kind.MESSAGE:
                        report.unsent["link closed by the target"] = (
                            report.unsent.get("link closed by the target", 0) + 1
                        )
                    continue
                if record.kind == Kind.CLOSE:
                    continue
                link = self._connect(key)  # no OPEN record: open on first use
            if record.kind == Kind.CLOSE:
                parts = touched.pop(link, None)
                if parts:
                    self._write(link, parts)
                link.request_close()
                continue
            if link.closed or link.close_requested:
                if record.kind == Kind.MESSAGE:
                    reason = "link closed by the target" if link.closed else "after close"
                    report.unsent[reason] = report.unsent.get(reason, 0) + 1
                continue
            is_message = record.kind == Kind.MESSAGE
            if link.established and not link.paused and not link.pending:
                parts = touched.get(link)
                if parts is None:
                    parts = touched[link] = []
                parts.append(record.data)
                dues.append((due, is_message, len(record.data)))
                sent += 1
            else:
                link.pending.append((due, record.data, is_message))
                link.pending_bytes += len(record.data)
        for link, parts in touched.items():
            self._write(link, parts)
        if dues:
            # Lateness counts until the bytes are handed to the sockets.
            written = self.clock()
            for due, is_message, size in dues:
                self.sent(written - due, is_message, size, written)
        self._progress(now)
        if self._exhausted and not queue and not opens:
            self._drain_then_finish()
            return
        self._schedule(now)

    def _schedule(self, now: float) -> None:
        candidates = []
        if self._queue:
            candidates.append(self._queue[0][0])
        if self._opens:
            candidates.append(self._opens[0][0] - self.options.lead)
        if not self._exhausted:
            # Keep reading ahead, a bounded chunk per wake-up.
            last = self._queue[-1][0] if self._queue else now
            candidates.append(max(now, last - self._lookahead))
        wake_at = min(candidates) if candidates else now + 0.01
        delay = max(0.0, wake_at - self.clock())
        self._timer = self.reactor.callLater(delay, self._wake)

    def _write(self, link: ReplayLink, parts: list[bytes]) -> None:
        if link.closed:
            return
        link._write(parts[0] if len(parts) == 1 else b"".join(parts))

    def sent(self, lateness: float, is_message: bool, size: int, now: float) -> None:
        report = self.report
        if is_message:
            report.messages_sent += 1
            report.lateness.add(lateness)
        else:
            report.raw_sent += 1
        report.bytes_sent += size
        if report.first_send is None:
            report.first_send = now
        report.last_send = now

    def _progress(self, now: float) -> None:
        if self._bar is not None and now - self._last_progress > 0.25:
            self._last_progress = now
            self._bar.update(self.report.messages_sent - self._bar.n)

    # -- links -----------------------------------------------------------------------

    def _connect(self, key: tuple[int, int]) -> ReplayLink:
        old = self.links.get(key)
        if old is not None and not old.closed:
            return old
        link = ReplayLink(self, key)
        self.links[key] = link
        report = self.report
        report.connections_opened += 1
        self._live += 1
        report.max_concurrent = max(report.max_concurrent, self._live)
        if self._live > self.options.max_connections:
            report.error(f"more than {self.options.max_connections} connections at once")
        host, port = self.target
        self.reactor.connectTCP(
            host, port, _LinkFactory(link), timeout=self.options.connect_timeout
        )
        return link

    def link_established(self, link: ReplayLink) -> None:
        self.report.connections_established += 1

    def connect_failed(self, link: ReplayLink, reason: Failure) -> None:
        self.report.connect_failures += 1
        self.report.error(
            f"connect to {self.target[0]}:{self.target[1]}: {reason.getErrorMessage()}"
        )
        self.link_lost(link, reason)

    def link_lost(self, link: ReplayLink, reason: Failure) -> None:
        if link.closed:
            return
        link.closed = True
        self._live -= 1
        if link.paused:
            link.paused = False
            self.report.blocked_seconds += time.monotonic() - link.paused_at
        if link.pending:
            why = "link closed by the target" if link.established else "handshake failed"
            self.report.unsent[why] = self.report.unsent.get(why, 0) + sum(
                1 for item in link.pending if item[2]
            )
            link.pending.clear()
            link.pending_bytes = 0
        if not link.close_requested and not self._finishing and link.established:
            self.report.closed_by_target += 1
        if self.links.get(link.key) is link:
            del self.links[link.key]
            if not link.close_requested:
                self._gone.add(link.key)  # later records of this connection are unsendable
        if not link.lost.called:
            link.lost.callback(None)

    def _end_loop_connections(self, loop: int) -> None:
        """A pass is over: close its links (the trace ends, so do its connections)."""
        for key, link in list(self.links.items()):
            if key[0] == loop:
                link.request_close()
        self._gone = {key for key in self._gone if key[0] != loop}

    # -- the end ---------------------------------------------------------------------

    def _drain_then_finish(self) -> None:
        """Wait for queued writes, then `drain` seconds for answers, then close and report."""
        if self._finishing:
            return
        if any(link.pending and not link.closed for link in self.links.values()):
            self._timer = self.reactor.callLater(0.01, self._drain_then_finish_check)
            return
        self._timer = self.reactor.callLater(self.options.drain, self._finish)

    def _drain_then_finish_check(self) -> None:
        self._timer = None
        self._drain_then_finish()

    @defer.inlineCallbacks
    def _finish(self) -> Any:
        if self._finishing:
            return
        self._finishing = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._close_reader()
        waiting = []
        for link in list(self.links.values()):
            if not link.closed:
                lost = link.lost
                link.close_requested = True
                link.pending.clear()
                if link.transport is not None:
                    link._maybe_close()
                waiting.append(lost)
        if waiting:
            done = defer.DeferredList(waiting, consumeErrors=True)
            timeout = self.reactor.callLater(5.0, done.cancel)
            try:
                yield done
            except defer.CancelledError:  # pragma: no cover - a link that would not close
                self.report.error("some links did not close within 5 s")
            if timeout.active():
                timeout.cancel()
        report = self.report
        report.wall_seconds = self.clock() - self._started
        report.received_by_type = {type_name(t): n for t, n in enumerate(self.received) if n}
        if self._bar is not None:
            self._bar.update(report.messages_sent - self._bar.n)
            self._bar.close()
        self.done.callback(report)


# -- entry points ----------------------------------------------------------------------------


def run_replay(path: str, target: tuple[str, int], options: ReplayOptions) -> ReplayReport:
    """Run a replay on the global reactor until it ends (the `trace replay` command)."""
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    # As in `gnurouter run`: GC walks show up as lateness.
    tune_for_serving()
    result: list[ReplayReport] = []
    failure: list[Failure] = []
    replayer = Replayer(reactor, path, target, options)

    def start() -> None:
        done = replayer.run()
        done.addCallbacks(result.append, failure.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", replayer.stop)
    reactor.run(installSignalHandlers=True)
    if failure:
        failure[0].raiseException()
    if not result:  # interrupted before the report was made
        replayer.report.error("interrupted")
        return replayer.report
    return result[0]


def attach_replay(reactor: Any, router: Any, args: Any) -> Replayer:
    """`gnurouter run --replay FILE`: a replayer in the router's reactor, over loopback."""
    from gnurouter.stages.catcher import CatcherHandler

    host, port = router.listening_address()
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if "target_peers" not in vars(args):
        catcher = router.stages["catcher"].handler
        if isinstance(catcher, CatcherHandler):
            catcher.target_peers = 0  # replay traffic only, no outgoing connections
    options = ReplayOptions(
        speed=args.replay_speed,
        loops=0 if args.replay_loop else 1,
        lead=getattr(args, "replay_lead", 0.2),
    )
    TraceReader(args.replay).close()  # fail now on a bad file
    replayer = Replayer(reactor, args.replay, (host, port), options)

    def report(result: ReplayReport) -> ReplayReport:
        log.info("replay of %s finished:\n%s", args.replay, format_report(result))
        return result

    def start() -> None:
        replayer.run().addCallback(report)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", replayer.stop)
    log.info("replaying %s against %s:%d", args.replay, host, port)
    return replayer


__all__ = [
    "LatencyHistogram",
    "ReplayLink",
    "ReplayOptions",
    "ReplayReport",
    "Replayer",
    "attach_replay",
    "format_report",
    "run_replay",
]
