"""Log lines about hostile traffic, at most one per key and interval.

A flood must not write the log full: each refusal is counted elsewhere, and
its log line (naming the source's address) is written once a minute per key.
The keys remembered are bounded too, since a flood from many addresses
(IPv6 gives an attacker plenty) would otherwise grow them without limit.
"""

from __future__ import annotations

import math
from collections.abc import Hashable


class OncePerInterval:
    """`allow(key, now)` is true at most once per `interval` seconds for each key."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable, now: float) -> bool:
        if now - self._last.get(key, -math.inf) < self.interval:
            return False
        if len(self._last) >= self.max_keys:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
            if len(self._last) >= self.max_keys:
                # All recent: forgetting them costs at most some extra log lines.
                self._last.clear()
        self._last[key] = now
        return True
