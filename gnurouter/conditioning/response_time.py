"""Response-time control (Welsh & Culler, USITS 2003) for queries at the router stage.

Every `interval` the controller reads the recent `percentile` of query
response time (queueing + routing) and steers the query filter's admission
rate: multiplicative decrease when over `target`, additive increase when
under it.  It bounds delay by admitting only what the stage can serve in
time, whatever the offered load, where a fixed queue length only bounds
delay for one service rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gnurouter.conditioning.classes import QUERY
from gnurouter.conditioning.query_filter import QueryFilter
from gnurouter.seda.stage import SomeStage


class ResponseTimeController:
    def __init__(
        self,
        stage: SomeStage,
        query_filter: QueryFilter,
        *,
        target: float = 0.100,
        percentile: float = 90.0,
        interval: float = 1.0,
        min_rate: float = 5.0,
        max_rate: float = 100_000.0,
        increase: float = 10.0,
        decrease: float = 0.8,
        response_of: Callable[[float], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.query_filter = query_filter
        self.enabled = True
        self.target = target
        self.percentile = percentile
        self.interval = interval
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.increase = increase
        self.decrease = decrease
        self._response_of = response_of or (lambda pct: stage.class_response[QUERY].percentile(pct))
        self.observed = 0.0
        self.adjustments = 0
        self._clock = clock
        self._last_taken = stage.class_taken[QUERY]
        self._last_sample = clock()

    def sample(self) -> float | None:
        """One control step; returns the new query rate (None while disabled)."""
        if not self.enabled:
            self.query_filter.steered_rate = None
            return None
        observed = self._response_of(self.percentile)
        self.observed = observed
        now = self._clock()
        taken = self.stage.class_taken[QUERY]
        elapsed = max(1e-3, now - self._last_sample)
        completed_rate = (taken - self._last_taken) / elapsed
        self._last_taken = taken
        self._last_sample = now
        rate = self.query_filter.steered_rate
        if rate is None:
            rate = self.max_rate
        if observed > self.target:
            # Cut from what the stage actually served, not from a rate it
            # never reached: one step lands near capacity instead of thirty.
            rate = max(self.min_rate, min(rate, completed_rate) * self.decrease)
        elif observed > 0:
            rate = min(self.max_rate, rate + self.increase)
        self.query_filter.steered_rate = rate
        self.adjustments += 1
        return rate

    def state(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "rate": self.query_filter.steered_rate,
            "observed_ms": round(self.observed * 1000, 3),
            "target_ms": self.target * 1000,
            "percentile": self.percentile,
        }
