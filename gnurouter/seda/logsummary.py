"""Per-message log events, summed up: DEBUG one by one, INFO once per interval per peer and reason.

A peer that sends malformed messages (the shipped trace is 2% malformed on
purpose) or whose messages are dropped would otherwise write a log line per
message.  Each event is counted and counted elsewhere too (the metrics); the
log gets it at DEBUG, and at INFO a summary line per peer and reason at most
once per `interval`:

    peer 127.0.0.1:40112: 17 malformed messages dropped in the last 60 s (last: pong ...)

The summary of an interval is written at the first event after it ends, or
when the peer goes (`flush_peer`), so no count is lost however quiet the
peer becomes.  The (peer, reason) pairs kept are bounded: past `max_keys`
everything pending is written out at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Pending:
    count: int
    since: float
    last_detail: str


class EventSummary:
    """`note(peer, reason, detail)`: a DEBUG line now, an INFO summary per interval."""

    def __init__(
        self,
        logger: logging.Logger,
        what: dict[str, str],
        *,
        interval: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`what` names each reason's events in a summary: {"malformed": "malformed messages
        dropped"}; an unnamed reason is shown as "REASON events"."""
        self.logger = logger
        self.what = what
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._window_start: float | None = None
        self.summaries_written = 0
        # A stage may run its handler on several threads.
        self._lock = threading.Lock()

    def note(self, peer: str, reason: str, detail: str, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.logger.debug("peer %s: %s: %s", peer, reason, detail)
        with self._lock:
            self._note(peer, reason, detail, now)

    def _note(self, peer: str, reason: str, detail: str, now: float) -> None:
        if self._window_start is None:
            self._window_start = now
        elif now - self._window_start >= self.interval:
            self._flush(now)
            self._window_start = now
        pending = self._pending.get((peer, reason))
        if pending is None:
            if len(self._pending) >= self.max_keys:
                self._flush(now)
            self._pending[(peer, reason)] = _Pending(1, now, detail)
        else:
            pending.count += 1
            pending.last_detail = detail

    def flush(self, now: float | None = None) -> None:
        """Write every pending summary now (the interval is over, or there are too many)."""
        with self._lock:
            self._flush(self.clock() if now is None else now)

    def _flush(self, now: float) -> None:
        for (peer, reason), pending in self._pending.items():
            self._write(peer, reason, pending, now)
        self._pending.clear()

    def flush_peer(self, peer: str, now: float | None = None) -> None:
        """Write `peer`'s pending summaries now (it is going: its label will not come back)."""
        now = self.clock() if now is None else now
        with self._lock:
            for key in [key for key in self._pending if key[0] == peer]:
                self._write(peer, key[1], self._pending.pop(key), now)

    def _write(self, peer: str, reason: str, pending: _Pending, now: float) -> None:
        self.summaries_written += 1
        self.logger.info(
            "peer %s: %d %s in the last %.0f s (last: %s)",
            peer,
            pending.count,
            self.what.get(reason, reason + " events"),
            max(now - pending.since, 1.0),
            pending.last_detail,
        )
