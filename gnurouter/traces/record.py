"""Recording what a router receives (`gnurouter run --record FILE`).

The parser stage calls the recorder when one is set (one attribute check per
chunk when recording is off):

* `opened(peer)` when a socket comes up: an OPEN record (direction IN when
  the peer connected to us, OUT when we dialled it), with its address;
* `received(peer, events)` with what one chunk of the peer's stream framed
  into: a MESSAGE record (direction IN) per message, malformed ones included,
  all stamped with the time the parser framed the chunk;
* `closed(peer, reason)` when the socket is gone: a CLOSE record (OUT when
  we closed it, IN when the peer did), with the reason.

The hot path only appends a tuple to a bounded deque.  A writer thread
encodes the records and writes checksummed blocks, ending a block every
`flush_interval` seconds so a crash loses at most that much.  If the disk
cannot keep up and `max_pending` chunks are waiting, new entries are dropped
and counted (`dropped`), never blocking routing: a trace with drops says so
in `stats()` and in the log when it is closed.

Not recorded: the handshake bytes (the replayer does its own real
handshake), the bytes of a stream after a framing error (the CLOSE reason
says what happened), and what the router sends.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnurouter.mesh.peers import Peer, PeerState
from gnurouter.ops.lograte import OncePerInterval
from gnurouter.protocol.addresses import format_endpoint
from gnurouter.protocol.messages import Message
from gnurouter.traces.format import Direction, Kind, TraceWriter

log = logging.getLogger(__name__)

_OPEN, _MESSAGES, _CLOSE = 0, 1, 2


class TraceRecorder:
    DRAIN_INTERVAL = 0.05

    def __init__(
        self,
        path: str | Path,
        *,
        producer: str,
        metadata: Mapping[str, Any] | None = None,
        max_pending: int = 200_000,
        flush_interval: float = 0.5,
        compress: int = 1,
    ) -> None:
        self.path = str(path)
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.dropped = 0  # chunks (or open/close events) not recorded: the writer fell behind
        self.dropped_messages = 0
        self.write_errors = 0
        self._error_logging = OncePerInterval(60.0)
        self._queue: deque[tuple[int, int, int, Any]] = deque()
        # Entries (a message or an open/close) queued and written, each counter
        # written by one side only, so their difference needs no lock.
        self._queued = 0
        self._written = 0
        self._t0 = time.monotonic_ns()
        self._writer = TraceWriter(
            path,
            producer=producer,
            metadata=metadata,
            start_time=time.time(),
            compress=compress,
        )
        self._last_us = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trace-recorder", daemon=True)
        self._thread.start()

    # -- called by the parser stage (any thread) -----------------------------------------

    def opened(self, peer: Peer) -> None:
        self._put(_OPEN, peer, (peer.address, peer.outgoing))

    def received(self, peer: Peer, events: list[Any]) -> None:
        if events:
            self._put(_MESSAGES, peer, events)

    def closed(self, peer: Peer, reason: str) -> None:
        by_us = peer.state == PeerState.CLOSING
        self._put(_CLOSE, peer, (peer.close_reason or reason, by_us))

    def _put(self, what: int, peer: Peer, payload: Any) -> None:
        size = len(payload) if what == _MESSAGES else 1
        if self._queued - self._written + size > self.max_pending:
            self.dropped += 1
            if what == _MESSAGES:
                self.dropped_messages += sum(1 for e in payload if isinstance(e, Message))
            return
        self._queued += size
        self._queue.append((time.monotonic_ns(), what, peer.id, payload))

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        while True:
            self._wake.wait(min(self.DRAIN_INTERVAL, max(0.0, next_flush - time.monotonic())))
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                if time.monotonic() >= next_flush or stopping:
                    self._writer.flush()
                    next_flush = time.monotonic() + self.flush_interval
            except OSError as error:
                # What was queued is lost and counted; routing never waits for the disk.
                self.write_errors += 1
                if self._error_logging.allow(self.path, time.monotonic()):
                    log.error(
                        "trace recorder: cannot write %s: %s (%d failed writes so far; "
                        "this error: at most once a minute)",
                        self.path,
                        error,
                        self.write_errors,
                    )
                self._queue.clear()
                self._written = self._queued
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        writer = self._writer
        t0 = self._t0
        last = self._last_us
        add = writer.add
        message_kind = Kind.MESSAGE
        incoming = Direction.IN
        written = 0
        while queue:
            stamp, what, conn, payload = queue.popleft()
            written += len(payload) if what == _MESSAGES else 1
            # Stamps from several parser threads may interleave: keep time order.
            now = max(last, (stamp - t0) // 1000)
            last = now
            if what == _MESSAGES:
                for event in payload:
                    if type(event) is Message:
                        add(now, message_kind, incoming, conn, event.header_bytes() + event.payload)
            elif what == _OPEN:
                (host, port), outgoing = payload
                info = {
                    "address": format_endpoint((host, port)),
                    "family": 6 if ":" in host else 4,
                    "outgoing": outgoing,
                }
                data = json.dumps(info, separators=(",", ":")).encode()
                add(now, Kind.OPEN, Direction.OUT if outgoing else incoming, conn, data)
            else:
                reason, by_us = payload
                data = str(reason).encode("utf-8", "replace")[:1000]
                add(now, Kind.CLOSE, Direction.OUT if by_us else incoming, conn, data)
        self._last_us = last
        self._written += written

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Write everything queued and close the file (blocks until done)."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        try:
            self._drain()
        finally:
            self._writer.close()
        if self.dropped:
            log.warning(
                "trace %s: %d entries (%d messages) were not recorded: the disk fell behind",
                self.path,
                self.dropped,
                self.dropped_messages,
            )
        log.info("trace %s: %d records written", self.path, self._writer.records)

    def stats(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "records": self._writer.records,
            "bytes": self._writer.bytes_written,
            "pending": self._queued - self._written,
            "dropped": self.dropped,
            "dropped_messages": self.dropped_messages,
            "write_errors": self.write_errors,
        }


def recorder_for(router: Any) -> TraceRecorder:
    """The recorder `gnurouter run --record FILE` attaches to a router."""
    from gnurouter.traces.cli import producer

    host, port = router.listening_address()
    return TraceRecorder(
        router.config.record,
        producer=producer("run --record"),
        metadata={"node": f"{host}:{port}", "user_agent": router.config.user_agent},
    )
