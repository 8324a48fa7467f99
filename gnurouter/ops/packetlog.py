"""The packet log: one line per routed or dropped message (the original's "logger").

Lines are collected per batch and written as one logging record so a busy
router pays for one handler call and one write per batch, not per message;
rotation is the standard library's `RotatingFileHandler`.

A write that fails while the router runs (the disk is full, the directory was
removed) loses that batch's lines and nothing else: routing goes on, the lines
lost and the failures are counted (the metrics snapshot shows both), and a
warning naming the file and the error is logged at most once a minute.  Each
flush tries again, so the log resumes by itself once the file can be written.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import time
from collections import deque

from gnurouter.ops.lograte import OncePerInterval
from gnurouter.protocol.messages import Message
from gnurouter.stages.router import LogEntry

log = logging.getLogger(__name__)

#: Seconds between two warnings about a packet log that cannot be written.
WRITE_FAILURE_LOG_INTERVAL = 60.0


class _FileHandler(logging.handlers.RotatingFileHandler):
    """Keeps the error of a failed write for `PacketLog.flush` instead of printing a
    "--- Logging error ---" traceback to stderr (once per batch: thousands a minute)."""

    failure: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        self.failure = sys.exc_info()[1]


def format_line(
    when: float, peer_label: str, message: Message, action: str, reason: str | None, fanout: int
) -> str:
    line = (
        f"{when:.6f} {peer_label} {message.type_name} {message.guid.hex()} "
        f"ttl={message.ttl} hops={message.hops} len={len(message.payload)} {action}"
    )
    if reason:
        line += f" reason={reason}"
    if fanout:
        line += f" to={fanout}"
    return line


class PacketLog:
    def __init__(self, path: str | None, *, max_bytes: int, backups: int, tail: int = 200) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pending: list[LogEntry] = []
        self.enabled = path is not None
        self.lines_written = 0
        self.write_failures = 0
        self.lines_lost = 0
        self._failure_logging = OncePerInterval(WRITE_FAILURE_LOG_INTERVAL)
        # The dashboard shows the tail even when no file is kept.
        self._tail: deque[LogEntry] = deque(maxlen=tail)
        self._handler: _FileHandler | None = None
        if path is not None:
            self._handler = _FileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))

    def record(
        self,
        peer_label: str,
        message: Message,
        action: str,
        reason: str | None = None,
        fanout: int = 0,
    ) -> None:
        self.record_many([(time.time(), peer_label, message, action, reason, fanout)])

    def record_many(self, entries: list[LogEntry]) -> None:
        """Raw fields only: formatting waits for flush (the file) or for a tail reader."""
        with self._lock:
            self._tail.extend(entries)
            if self.enabled:
                self._pending.extend(entries)

    @property
    def tail(self) -> list[str]:
        with self._lock:
            entries = list(self._tail)
        return [format_line(*entry) for entry in entries]

    def flush(self) -> None:
        with self._lock:
            if not self._pending or self._handler is None:
                self._pending.clear()
                return
            entries, self._pending = self._pending, []
        text = "\n".join(format_line(*entry) for entry in entries)
        record = logging.LogRecord("gnurouter.packets", logging.INFO, __file__, 0, text, None, None)
        self._handler.failure = None
        self._handler.handle(record)
        failure = self._handler.failure
        if failure is None:
            self.lines_written += len(entries)
            return
        self._handler.failure = None
        self.write_failures += 1
        self.lines_lost += len(entries)
        if self._failure_logging.allow(self.path, time.monotonic()):
            log.warning(
                "packet log %s: cannot write (%s); %d lines lost so far, routing goes on "
                "(this warning: at most once a minute)",
                self.path,
                getattr(failure, "strerror", None) or failure,
                self.lines_lost,
            )

    def close(self) -> None:
        self.flush()
        if self._handler is not None:
            self._handler.close()
