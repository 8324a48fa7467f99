"""CoDel (RFC 8289) on stage queues: bound how long events wait, not how many there are.

An event class whose *minimum* sojourn time has stayed above `target` for a
whole `interval` is in a standing queue; CoDel then drops at dequeue, at
intervals shrinking as interval/sqrt(count), until sojourn times fall back
under target.  It needs no per-deployment queue length: 5 ms / 100 ms suit
any link speed.  Applied per message class, it sheds queries that would be
stale by the time they are routed while leaving control traffic alone.
"""

from __future__ import annotations

import math
from typing import Any

from gnurouter.seda.stage import E, Stage


class CoDel:
    """The RFC 8289 state machine for one queue, decided one dequeued event at a time."""

    def __init__(self, target: float = 0.005, interval: float = 0.100) -> None:
        self.target = target
        self.interval = interval
        self.first_above_time = 0.0
        self.drop_next = 0.0
        self.count = 0
        self.last_count = 0
        self.dropping = False
        self.drops = 0

    def _control_law(self, start: float) -> float:
        return start + self.interval / math.sqrt(max(1, self.count))

    def _ok_to_drop(self, sojourn: float, now: float, backlog: int) -> bool:
        # An empty queue after this event is no standing queue (RFC's maxpacket test).
        if sojourn < self.target or backlog == 0:
            self.first_above_time = 0.0
            return False
        if self.first_above_time == 0.0:
            self.first_above_time = now + self.interval
            return False
        return now >= self.first_above_time

    def should_drop(self, sojourn: float, now: float, backlog: int) -> bool:
        ok_to_drop = self._ok_to_drop(sojourn, now, backlog)
        if self.dropping:
            if not ok_to_drop:
                self.dropping = False
                return False
            if now >= self.drop_next:
                self.count += 1
                self.drop_next = self._control_law(self.drop_next)
                self.drops += 1
                return True
            return False
        if ok_to_drop:
            self.dropping = True
            # Resume near the previous drop rate if we were dropping recently.
            delta = self.count - self.last_count
            if delta > 1 and now - self.drop_next < 16 * self.interval:
                self.count = delta
            else:
                self.count = 1
            self.last_count = self.count
            self.drop_next = self._control_law(now)
            self.drops += 1
            return True
        return False

    def state(self) -> dict[str, Any]:
        return {
            "dropping": self.dropping,
            "count": self.count,
            "drops": self.drops,
            "target_ms": self.target * 1000,
            "interval_ms": self.interval * 1000,
        }


class CoDelPolicy:
    """A dequeue policy running one CoDel instance per message class it governs."""

    reason = "codel"

    def __init__(self, queues: dict[str, CoDel], enabled_classes: set[str]) -> None:
        self.queues = queues
        #: The classes CoDel currently governs (a subset of `queues`).
        self.enabled_classes = enabled_classes

    def governs(self, event_class: str) -> bool:
        return event_class in self.enabled_classes

    def on_dequeue(
        self, stage: Stage[E], event_class: str, sojourn: float, now: float, event: E
    ) -> str | None:
        if event_class not in self.enabled_classes:
            return None
        codel = self.queues[event_class]
        if codel.should_drop(sojourn, now, stage.class_length(event_class)):
            return self.reason
        return None
