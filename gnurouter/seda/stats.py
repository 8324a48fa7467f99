"""Small, bounded statistics kept by stages and peers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from hdrh.histogram import HdrHistogram

# Microsecond resolution up to ten minutes, two significant digits: a few KB
# per histogram whatever the load (longer waits are recorded as ten minutes).
_LOWEST_US = 1
_HIGHEST_US = 600_000_000
_DIGITS = 2


class LatencyHistogram:
    """Percentiles of a duration over a sliding window, in bounded memory (HdrHistogram).

    Two histograms take turns: samples go into `current`; every `window`
    seconds it becomes `previous` and a fresh one starts.  Percentiles cover
    both, so they describe the last one to two windows: recent enough for a
    live view, long enough to be stable.  The mean is kept from running sums
    (hdrh's own mean walks every bucket in Python: milliseconds per call).
    """

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._current = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._previous = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        # [sum of seconds, count] for the current and previous windows.
        self._current_sum = [0.0, 0]
        self._previous_sum = [0.0, 0]
        self._rotated_at = clock()
        self.count = 0
        self.total = 0.0

    def _rotate_if_due(self, now: float) -> None:
        if now - self._rotated_at >= self.window:
            self._previous, self._current = self._current, self._previous
            self._previous_sum, self._current_sum = self._current_sum, [0.0, 0]
            self._current.reset()
            if now - self._rotated_at >= 2 * self.window:
                self._previous.reset()  # nothing recent enough to keep
                self._previous_sum = [0.0, 0]
            self._rotated_at = now

    def add(self, seconds: float, weight: int = 1) -> None:
        self.add_many((seconds,), (weight,))

    def add_many(self, samples: Sequence[float], weights: Sequence[int] | None = None) -> None:
        """Record durations under one lock and one clock reading.

        `weights[i]` is how many events `samples[i]` stands for (1 each by
        default): a stage records a few samples of a batch, weighted so that
        percentiles still describe events, not batches (hdrh's `record_value`
        is Python code, about a microsecond per call).
        """
        if not samples:
            return
        if weights is None:
            weights = (1,) * len(samples)
        total = sum(seconds * weight for seconds, weight in zip(samples, weights, strict=True))
        events = sum(weights)
        with self._lock:
            self._rotate_if_due(self._clock())
            record = self._current.record_value
            for seconds, weight in zip(samples, weights, strict=True):
                record(min(_HIGHEST_US, max(_LOWEST_US, int(seconds * 1_000_000))), weight)
            self._current_sum[0] += total
            self._current_sum[1] += events
            self.count += events
            self.total += total

    def _merged(self) -> tuple[HdrHistogram, float, float]:
        with self._lock:
            self._rotate_if_due(self._clock())
            merged = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
            merged.add(self._previous)
            merged.add(self._current)
            total = self._previous_sum[0] + self._current_sum[0]
            count = self._previous_sum[1] + self._current_sum[1]
        return merged, total, count

    def summary(self) -> dict[str, float]:
        """p50/p90/p99/max/mean of the window, in seconds (zeros when empty)."""
        merged, total, count = self._merged()
        if count == 0:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
        scale = 1_000_000.0
        values = merged.get_percentile_to_value_dict([50.0, 90.0, 99.0])
        return {
            "p50": values[50.0] / scale,
            "p90": values[90.0] / scale,
            "p99": values[99.0] / scale,
            "max": merged.get_max_value() / scale,
            "mean": total / count,
        }

    def percentile(self, percent: float) -> float:
        merged, _, count = self._merged()
        if count == 0:
            return 0.0
        return float(merged.get_value_at_percentile(percent)) / 1_000_000.0


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


class MetricsSampler:
    """Turns cumulative counters into per-second rates, once per tick."""

    def __init__(self) -> None:
        self._meters: dict[str, RateMeter] = {}
        self.rates: dict[str, float] = {}

    def update(self, values: dict[str, float], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for name, value in values.items():
            meter = self._meters.setdefault(name, RateMeter())
            self.rates[name] = meter.update(value, now)

    def rate(self, name: str) -> float:
        return round(self.rates.get(name, 0.0), 3)
