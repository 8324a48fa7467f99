"""Input flow control: stream stages slow the sockets down instead of dropping bytes.

A byte chunk cannot be dropped without desynchronising the Gnutella stream,
so the reader and parser are never thresholded by refusal.  When either holds
more than `pause_length` events, every peer that delivers more bytes is paused
(TCP pushes back on the sender); once both have drained below half of that,
the paused peers resume.  Loss, when it must happen, happens later at message
granularity where the router can choose what to shed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from gnurouter.seda.stage import SomeStage


class Pausable(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class InputFlowControl:
    def __init__(self, stages: Sequence[SomeStage], pause_length: int) -> None:
        self.stages = list(stages)
        self.pause_length = pause_length
        self._paused: list[Pausable] = []
        self._lock = threading.Lock()
        self.pauses = 0

    def _backlog(self) -> int:
        return max(stage.queue_length for stage in self.stages)

    def after_input(self, link: Pausable) -> None:
        """Called after a link's bytes were queued: pause it if the stages are behind."""
        if self._backlog() >= self.pause_length:
            with self._lock:
                self._paused.append(link)
                self.pauses += 1
            link.pause_reading()

    def release_if_drained(self) -> None:
        if not self._paused or self._backlog() > self.pause_length // 2:
            return
        with self._lock:
            paused, self._paused = self._paused, []
        for link in paused:
            link.resume_reading()

    @property
    def paused_links(self) -> int:
        return len(self._paused)
