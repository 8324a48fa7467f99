"""The thread governor: more threads for a blocking stage that falls behind, fewer when it idles.

Sandstorm's governor sampled queue lengths every 2 s and added a thread when
a queue reached a threshold.  This one does the same, and retires threads as
well, with hysteresis so it never flaps: a thread is added only when the
queue is at or above `add_threshold` (or, beyond the original, when every
thread was busy and work is waiting) and at least one sampling interval has
passed since the last change; one is retired only when, for `retire_after`
seconds in a row, the queue stayed under a tenth of the threshold and the
stage's measured busy time shows one thread fewer would have been at most
`retire_utilisation` busy.  Beyond the original, it also sizes by demand:
from the rate of events offered to the pool (admitted or shed) and their
measured service time, Little's law gives the threads the load needs
(n = lambda x L), and the governor moves there in one step instead of one
thread per interval.  It settles at ceil(n / retire_utilisation).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gnurouter.seda.stage import SomeStage


class ThreadGovernor:
    def __init__(
        self,
        stage: SomeStage,
        *,
        interval: float = 2.0,
        add_threshold: int = 100,
        min_threads: int = 1,
        max_threads: int = 10,
        retire_after: float = 4.0,
        retire_utilisation: float = 0.9,
        add_when_saturated: bool = True,
        size_by_demand: bool = True,
        size_for_bursts: bool = False,
        burst_memory: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.enabled = True
        self.interval = interval
        self.add_threshold = add_threshold
        self.min_threads = min_threads
        self.max_threads = max_threads
        self.retire_after = retire_after
        self.retire_utilisation = retire_utilisation
        self.add_when_saturated = add_when_saturated
        self._clock = clock
        self._last_busy = stage.counters.worker_busy_seconds
        self._last_events = stage.counters.worker_events
        self._last_offered = 0
        self.service_time = 0.0
        self.demand = 0.0
        self.size_by_demand = size_by_demand
        self.size_for_bursts = size_for_bursts
        #: Peak simultaneous demand for pool threads, per recent interval.
        self.peaks: deque[int] = deque(maxlen=burst_memory)
        self._last_sample = clock()
        self._last_change = float("-inf")
        self._quiet_since: float | None = None
        self.busy_threads = 0.0
        self.added = 0
        self.retired = 0
        #: (time, threads, queue length, demand in threads) per sample, for
        #: the dashboard and the benchmark.
        self.history: deque[tuple[float, int, int, float]] = deque(maxlen=600)
        #: Called with the new thread count after every change.
        self.listeners: list[Callable[[int], None]] = []

    def sample(self) -> int:
        """Look at the stage once; returns the change in threads."""
        now = self._clock()
        stage = self.stage
        counters = stage.counters
        busy = counters.worker_busy_seconds
        events = counters.worker_events
        offered = self._offered_to_workers()
        elapsed = now - self._last_sample
        if elapsed > 0:
            self.busy_threads = (busy - self._last_busy) / elapsed
            served = events - self._last_events
            service = (busy - self._last_busy) / served if served else 0.0
            if service:
                self.service_time = service
            # Little's law on what is offered, admitted or not: the threads
            # this load needs, whatever the shedding policies let through.
            self.demand = (offered - self._last_offered) / elapsed * self.service_time
        self._last_busy = busy
        self._last_events = events
        self._last_offered = offered
        self.peaks.append(stage.take_peak_worker_demand())
        self._last_sample = now
        length = stage.queue_length
        threads = stage.threads
        change = 0
        if self.enabled:
            change = self._decide(now, length, threads)
        if change:
            stage.threads = threads + change
            self._last_change = now
            for listener in self.listeners:
                listener(stage.threads)
        self.history.append((time.time(), stage.threads, length, round(self.demand, 3)))
        return change

    def _offered_to_workers(self) -> int:
        stage = self.stage
        if stage.runs_on_loop:
            return 0
        return sum(
            count
            for event_class, count in stage.class_offered.items()
            if event_class not in stage.express
        )

    @property
    def wanted_threads(self) -> int:
        """Threads for the measured load: enough to keep its mean demand at most
        `retire_utilisation` busy, and enough for the largest burst of the last
        few intervals to find a thread each (a blocking stage's idle threads
        only sleep, while a burst that queues behind blocked threads waits)."""
        by_demand = math.ceil(self.demand / self.retire_utilisation - 1e-9) if self.demand else 0
        by_bursts = max(self.peaks, default=0) if self.size_for_bursts else 0
        wanted = max(by_demand, by_bursts)
        return max(self.min_threads, min(self.max_threads, wanted))

    def _decide(self, now: float, length: int, threads: int) -> int:
        if not self.stage.blocking:
            # A stage that never blocks runs on the event loop: more Python
            # threads would only contend for the GIL.
            return 0
        if threads < self.min_threads:
            return self.min_threads - threads
        if threads > self.max_threads:
            return self.max_threads - threads
        # 0.9: samples come every `interval`, give or take timer jitter.
        settled = now - self._last_change >= 0.9 * self.interval
        wanted = self.wanted_threads if self.size_by_demand else threads
        # Beyond the original: a stage whose threads are all busy with work
        # waiting needs another even when shedding policies keep its queue
        # short of the threshold, and with demand sizing it gets all it
        # needs at once rather than one thread per interval.
        saturated = (
            self.add_when_saturated
            and self.busy_threads >= self.retire_utilisation * threads
            and length >= max(1, self.add_threshold // 10)
        )
        recent_burst = self.peaks[-1] if self.peaks else 0
        wants_more = wanted > threads and (length > 0 or recent_burst > threads)
        if length >= self.add_threshold or saturated or wants_more:
            self._quiet_since = None
            if threads < self.max_threads and settled:
                step = max(1, wanted - threads)
                self.added += 1
                return min(step, self.max_threads - threads)
            return 0
        if length > self.add_threshold // 10 or threads <= self.min_threads:
            self._quiet_since = None
            return 0
        if self._quiet_since is None:
            self._quiet_since = now
        fewer_would_cope = self.busy_threads <= (threads - 1) * self.retire_utilisation
        if (
            fewer_would_cope
            and wanted < threads
            and settled
            and now - self._quiet_since >= self.retire_after
        ):
            self._quiet_since = now
            self.retired += 1
            return -1
        return 0

    def state(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "threads": self.stage.threads,
            "busy_threads": round(self.busy_threads, 3),
            "demand_threads": round(self.demand, 3),
            "wanted_threads": self.wanted_threads,
            "burst_peaks": list(self.peaks),
            "added": self.added,
            "retired": self.retired,
            "history": [list(entry) for entry in list(self.history)[-60:]],
        }
