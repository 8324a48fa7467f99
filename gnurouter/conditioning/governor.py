"""The thread governor: more threads for a blocking stage that falls behind, fewer when it idles.

Sandstorm's governor sampled queue lengths every 2 s and added a thread when
a queue reached a threshold.  This one does the same, and retires threads as
well, with hysteresis so it never flaps: a thread is added only when the
queue is at or above `add_threshold` and at least one sampling interval has
passed since the last change; one is retired only when, for `retire_after`
seconds in a row, the queue stayed under a tenth of the threshold and the
stage's measured busy time shows one thread fewer would have been at most
`retire_utilisation` busy.  For a stage blocking L seconds per event at
arrival rate lambda this settles near Little's n = lambda x L.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gnurouter.seda.stage import Stage


class ThreadGovernor:
    def __init__(
        self,
        stage: Stage,
        *,
        interval: float = 2.0,
        add_threshold: int = 100,
        min_threads: int = 1,
        max_threads: int = 10,
        retire_after: float = 4.0,
        retire_utilisation: float = 0.9,
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
        self._clock = clock
        self._last_busy = stage.counters.busy_seconds
        self._last_sample = clock()
        self._last_change = float("-inf")
        self._quiet_since: float | None = None
        self.busy_threads = 0.0
        self.added = 0
        self.retired = 0
        #: (time, threads, queue length) per sample, for the dashboard and the benchmark.
        self.history: deque[tuple[float, int, int]] = deque(maxlen=600)
        #: Called with the new thread count after every change.
        self.listeners: list[Callable[[int], None]] = []

    def sample(self) -> int:
        """Look at the stage once; returns the change in threads (-1, 0 or +1)."""
        now = self._clock()
        stage = self.stage
        busy = stage.counters.busy_seconds
        elapsed = now - self._last_sample
        self.busy_threads = (busy - self._last_busy) / elapsed if elapsed > 0 else 0.0
        self._last_busy = busy
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
        self.history.append((time.time(), stage.threads, length))
        return change

    def _decide(self, now: float, length: int, threads: int) -> int:
        if threads < self.min_threads:
            return 1
        if threads > self.max_threads:
            return -1
        # 0.9: samples come every `interval`, give or take timer jitter.
        settled = now - self._last_change >= 0.9 * self.interval
        if length >= self.add_threshold:
            self._quiet_since = None
            if threads < self.max_threads and settled:
                self.added += 1
                return 1
            return 0
        if length > self.add_threshold // 10 or threads <= self.min_threads:
            self._quiet_since = None
            return 0
        if self._quiet_since is None:
            self._quiet_since = now
        fewer_would_cope = self.busy_threads <= (threads - 1) * self.retire_utilisation
        if fewer_would_cope and settled and now - self._quiet_since >= self.retire_after:
            self._quiet_since = now
            self.retired += 1
            return -1
        return 0

    def state(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "threads": self.stage.threads,
            "busy_threads": round(self.busy_threads, 3),
            "added": self.added,
            "retired": self.retired,
            "history": [list(entry) for entry in list(self.history)[-60:]],
        }
