"""Small, bounded statistics kept by stages and peers."""

from __future__ import annotations

from collections import deque


class SampleWindow:
    """The most recent samples of a quantity, for percentiles without unbounded memory.

    A fixed count rather than a fixed time span keeps memory constant under any
    load; at thousands of events per second 4096 samples is the last second or
    two, which is what an operator watching a live queue cares about.
    """

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        # deque.append with maxlen is atomic under the GIL, so worker threads
        # may add without a lock; the running totals tolerate a rare lost add.
        self._samples.append(value)
        self.count += 1
        self.total += value

    def percentile(self, fraction: float) -> float:
        samples = sorted(self._samples)
        if not samples:
            return 0.0
        index = min(len(samples) - 1, max(0, round(fraction * (len(samples) - 1))))
        return samples[index]

    def summary(self) -> dict[str, float]:
        samples = sorted(self._samples)
        if not samples:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}

        def at(fraction: float) -> float:
            return samples[min(len(samples) - 1, round(fraction * (len(samples) - 1)))]

        return {
            "p50": at(0.50),
            "p90": at(0.90),
            "p99": at(0.99),
            "max": samples[-1],
            "mean": sum(samples) / len(samples),
        }


class RateMeter:
    """Turns a cumulative counter into a per-second rate between two readings."""

    def __init__(self) -> None:
        self._last_value: float | None = None
        self._last_time = 0.0
        self.rate = 0.0

    def update(self, value: float, now: float) -> float:
        if self._last_value is not None and now > self._last_time:
            self.rate = (value - self._last_value) / (now - self._last_time)
        self._last_value = value
        self._last_time = now
        return self.rate
