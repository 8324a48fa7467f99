"""Application-specific filtering: shed queries, and only queries, when the router falls behind.

This is the SEDA router's "threshold only the number of query packets
processed": every other message type and every timer passes untouched.
Queries are limited by an admission rate (a token bucket, which the
response-time controller may steer) and by how many may wait at once; when
the cap is reached the configured shedding order picks the victim among the
queued queries and the newcomer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from gnurouter.conditioning.classes import QUERY
from gnurouter.config import SHED_ORDERS
from gnurouter.protocol.messages import Message, MessageType
from gnurouter.seda.stage import E, Stage


class QueuedQuery(Protocol):
    """An event of the QUERY class, as the router stage queues it (`MessageArrived`)."""

    @property
    def message(self) -> Message: ...


class QueryFilter:
    rate_reason = "query-rate"
    shed_reason = "query-shed"

    def __init__(
        self,
        *,
        max_queued: int | None = 200,
        rate: float | None = None,
        burst: int = 100,
        order: str = "highest-hops",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if order not in SHED_ORDERS:
            raise ValueError(f"shedding order must be one of {', '.join(SHED_ORDERS)}")
        self.enabled = True
        self.max_queued = max_queued
        self.rate = rate
        self.burst = burst
        self.order = order
        #: The admission rate a controller sets (response-time control); it
        #: applies even with the filter itself off, and wins over `rate`.
        self.steered_rate: float | None = None
        self._clock = clock
        self._tokens = float(burst)
        self._refilled = clock()

    @property
    def active(self) -> bool:
        return self.enabled or self.steered_rate is not None

    def admit(self, stage: Stage[E], event: E) -> str | None:
        steered = self.steered_rate
        if not self.active or stage.class_of(event) != QUERY:
            return None
        rate = steered if steered is not None else self.rate
        if rate is not None and not self._take_token(rate):
            return self.rate_reason
        if not self.enabled or self.max_queued is None:
            return None
        if stage.class_length(QUERY) < self.max_queued:
            return None
        if self.order == "newest":
            return self.shed_reason
        if self.order == "oldest":
            return (
                None
                if stage.evict(
                    QUERY,
                    lambda queue: _oldest(cast("Sequence[tuple[float, QueuedQuery]]", queue)),
                    self.shed_reason,
                )
                is not None
                else (self.shed_reason)
            )
        # Only QUERY-class events get here, and the router stage classifies
        # only messages as QUERY.
        newcomer_hops = cast(QueuedQuery, event).message.hops
        victim = stage.evict(
            QUERY,
            lambda queue: _highest_hops_above(
                cast("Sequence[tuple[float, QueuedQuery]]", queue), newcomer_hops
            ),
            self.shed_reason,
        )
        return None if victim is not None else self.shed_reason

    def _take_token(self, rate: float) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _oldest(queue: Sequence[tuple[float, QueuedQuery]]) -> int | None:
    """Index of the oldest queued query (replies held behind queries are not shed here)."""
    for index, item in enumerate(queue):
        if item[1].message.type == MessageType.QUERY:
            return index
    return None


def _highest_hops_above(queue: Sequence[tuple[float, QueuedQuery]], hops: int) -> int | None:
    """Index of the newest queued query with the most hops, if it has more than `hops`.

    Ties go to the newcomer: it is refused rather than an equal queued one
    shed, so a query already waiting is never replaced by an equal one.
    """
    best_index = None
    best_hops = hops
    for index in range(len(queue) - 1, -1, -1):
        message = queue[index][1].message
        candidate_hops = message.hops
        if candidate_hops > best_hops and message.type == MessageType.QUERY:
            best_hops = candidate_hops
            best_index = index
    return best_index
