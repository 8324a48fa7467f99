"""Queue thresholding: the simplest admission policy, a maximum queue length per stage."""

from __future__ import annotations

from typing import Any

from gnurouter.seda.stage import Stage


class QueueThreshold:
    """Refuse an event when the stage already holds `limit` events (None: unbounded).

    Housekeeping events never pass through admission, so a full queue can
    delay a timer but never lose it.
    """

    reason = "queue-full"

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def admit(self, stage: Stage, event: Any) -> str | None:
        if self.limit is not None and stage.queue_length >= self.limit:
            return self.reason
        return None


def threshold_of(stage: Stage) -> QueueThreshold | None:
    for controller in stage.admission:
        if isinstance(controller, QueueThreshold):
            return controller
    return None
