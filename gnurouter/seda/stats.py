"""Small, bounded statistics kept by stages and peers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hdrh.histogram import HdrHistogram

# Microsecond resolution up to one hour, two significant digits: about 30 KB
# per histogram whatever the load.
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000
_DIGITS = 2


class LatencyHistogram:
    """Percentiles of a duration over a sliding window, in bounded memory (HdrHistogram).

    Two histograms take turns: samples go into `current`; every `window`
    seconds it becomes `previous` and a fresh one starts.  Percentiles cover
    both, so they describe the last one to two windows: recent enough for a
    live view, long enough to be stable.
    """

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._current = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._previous = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._rotated_at = clock()
        self.count = 0
        self.total = 0.0

    def _rotate_if_due(self, now: float) -> None:
        if now - self._rotated_at >= self.window:
            self._previous, self._current = self._current, self._previous
            self._current.reset()
            if now - self._rotated_at >= 2 * self.window:
                self._previous.reset()  # nothing recent enough to keep
            self._rotated_at = now

    def add(self, seconds: float) -> None:
        micros = min(_HIGHEST_US, max(_LOWEST_US, int(seconds * 1_000_000)))
        with self._lock:
            self._rotate_if_due(self._clock())
            self._current.record_value(micros)
            self.count += 1
            self.total += seconds

    def _merged(self) -> HdrHistogram:
        with self._lock:
            self._rotate_if_due(self._clock())
            merged = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
            merged.add(self._previous)
            merged.add(self._current)
        return merged

    def summary(self) -> dict[str, float]:
        """p50/p90/p99/max/mean of the window, in seconds (zeros when empty)."""
        merged = self._merged()
        if merged.get_total_count() == 0:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
        scale = 1_000_000.0
        return {
            "p50": merged.get_value_at_percentile(50) / scale,
            "p90": merged.get_value_at_percentile(90) / scale,
            "p99": merged.get_value_at_percentile(99) / scale,
            "max": merged.get_max_value() / scale,
            "mean": merged.get_mean_value() / scale,
        }

    def percentile(self, percent: float) -> float:
        merged = self._merged()
        if merged.get_total_count() == 0:
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
