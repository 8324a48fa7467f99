"""The packet log: one line per routed or dropped message (the original's "logger").

Lines are collected per batch and written as one logging record so a busy
router pays for one handler call and one write per batch, not per message;
rotation is the standard library's `RotatingFileHandler`.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
import time
from collections import deque

from gnurouter.protocol.messages import Message


class PacketLog:
    def __init__(self, path: str | None, *, max_bytes: int, backups: int, tail: int = 200) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.enabled = path is not None
        self.lines_written = 0
        # The dashboard shows the tail even when no file is kept.
        self.tail: deque[str] = deque(maxlen=tail)
        self._handler: logging.Handler | None = None
        if path is not None:
            self._handler = logging.handlers.RotatingFileHandler(
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
        line = (
            f"{time.time():.6f} {peer_label} {message.type_name} {message.guid.hex()} "
            f"ttl={message.ttl} hops={message.hops} len={len(message.payload)} {action}"
        )
        if reason:
            line += f" reason={reason}"
        if fanout:
            line += f" to={fanout}"
        with self._lock:
            self.tail.append(line)
            if self.enabled:
                self._pending.append(line)

    def flush(self) -> None:
        with self._lock:
            if not self._pending or self._handler is None:
                self._pending.clear()
                return
            lines, self._pending = self._pending, []
        record = logging.LogRecord(
            "gnurouter.packets", logging.INFO, __file__, 0, "\n".join(lines), None, None
        )
        self._handler.handle(record)
        self.lines_written += len(lines)

    def close(self) -> None:
        self.flush()
        if self._handler is not None:
            self._handler.close()
