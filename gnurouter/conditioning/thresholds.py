"""Queue thresholding: a maximum queue length per stage."""

from __future__ import annotations

from collections.abc import Sequence

from gnurouter.seda.stage import E, SomeStage, Stage


class QueueThreshold:
    """Refuse an event when the stage already holds `limit` events (None: unbounded).

    With `displace` on, a full queue makes room for an event of a more
    important class by shedding the newest event of the least important
    non-empty class, so a queue full of queries still takes a pong.  (The
    original thresholded plain FIFO queues: a full queue refused everything.)
    Housekeeping events never pass through admission, so a full queue can
    delay a timer but never lose it.
    """

    reason = "queue-full"

    def __init__(self, limit: int | None, *, displace: bool = True) -> None:
        self.limit = limit
        self.displace = displace
        self.enabled = True

    @property
    def active(self) -> bool:
        return self.enabled and self.limit is not None

    def admit(self, stage: Stage[E], event: E) -> str | None:
        if not self.enabled or self.limit is None or stage.queue_length < self.limit:
            return None
        if self.displace and len(stage.classes) > 1:
            rank = stage.classes.index(stage.class_of(event))
            for victim_class in reversed(stage.classes[rank + 1 :]):
                if (
                    stage.class_length(victim_class)
                    and stage.evict(victim_class, _newest, "queue-full-displaced") is not None
                ):
                    return None
        return self.reason


def _newest(queue: Sequence[object]) -> int | None:
    return len(queue) - 1 if queue else None


def threshold_of(stage: SomeStage) -> QueueThreshold | None:
    for controller in stage.admission:
        if isinstance(controller, QueueThreshold):
            return controller
    return None
