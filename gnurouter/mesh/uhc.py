"""Bootstrap through UDP host caches (UHC), before the GWebCaches.

When the catcher is short of hosts it asks `BootstrapChain.wanted()`: one
UDP host cache at a time gets a ping with GGEP "SCP" (see
`gnurouter.mesh.udp`), and while its pong is awaited (`UHC_TIMEOUT`, as
gtk-gnutella's uhc.c) nothing else is asked.  A cache that answered with
hosts is left alone for an hour (gtk-gnutella's UHC_RETRY_AFTER, and our
GWebCache etiquette); one that did not answer, or answered with no host,
backs off like a failed GWebCache (one minute doubling to an hour).  Only
when no UDP host cache is ready are the GWebCaches asked.  `--no-bootstrap`
switches both off (the GWebCache bootstrap's `enabled`, live-tunable as
`bootstrap.enabled`).

No cache is built in: `--uhc HOST:PORT` (repeatable, or `uhc = [...]` in
the TOML file) names them.  gtk-gnutella ships its own list in
src/core/uhc.c (`boot_hosts`); docs/architecture.md says which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gnurouter.mesh.bootstrap import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    REFRESH_AFTER_SUCCESS,
    GWebCacheBootstrap,
)
from gnurouter.protocol.addresses import format_endpoint

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Seconds to wait for a host cache's pong (gtk-gnutella's UHC_TIMEOUT).
UHC_TIMEOUT = 20.0


@dataclass
class UhcState:
    address: Address
    requests: int = 0
    failures: int = 0
    retry_at: float = 0.0
    hosts_received: int = 0
    last_error: str | None = None


class UhcBootstrap:
    """Which UDP host cache to ask next, and when each may be asked again."""

    def __init__(
        self,
        caches: list[Address],
        *,
        request: Callable[[Address], None],
        clock: Callable[[], float] = time.monotonic,
        timeout: float = UHC_TIMEOUT,
    ) -> None:
        self.caches = {address: UhcState(address) for address in caches}
        self.request = request
        self.timeout = timeout
        self._clock = clock
        self._in_flight: tuple[UhcState, float] | None = None
        self.requests = 0
        self.failures = 0
        self.hosts_received = 0

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def next_cache(self, now: float) -> UhcState | None:
        ready = [state for state in self.caches.values() if state.retry_at <= now]
        # The least asked first: the load spreads over every cache.
        return min(ready, key=lambda state: state.requests, default=None)

    def wanted(self) -> bool:
        """Ask a cache if one may be asked (True), or say one is being asked (True)."""
        now = self._clock()
        if self._in_flight is not None:
            asked, deadline = self._in_flight
            if now < deadline:
                return True
            self._failed(asked, f"no answer within {self.timeout:g}s", now)
        state = self.next_cache(now)
        if state is None:
            return False
        state.requests += 1
        self.requests += 1
        self._in_flight = (state, now + self.timeout)
        log.info("asking UDP host cache %s for hosts", format_endpoint(state.address))
        self.request(state.address)
        return True

    def answered(self, address: Address, hosts: int) -> None:
        """Cache `address` answered our ping, packing `hosts` hosts."""
        state = self.caches.get(address)
        if state is None:
            return
        now = self._clock()
        if self._in_flight is not None and self._in_flight[0] is state:
            self._in_flight = None
        if hosts == 0:
            self._failed(state, "answered with no host", now)
            return
        state.failures = 0
        state.last_error = None
        state.retry_at = now + REFRESH_AFTER_SUCCESS
        state.hosts_received += hosts
        self.hosts_received += hosts
        log.info("UDP host cache %s: %d hosts", format_endpoint(address), hosts)

    def _failed(self, state: UhcState, reason: str, now: float) -> None:
        if self._in_flight is not None and self._in_flight[0] is state:
            self._in_flight = None
        self.failures += 1
        state.failures += 1
        state.last_error = reason
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (state.failures - 1))
        state.retry_at = now + delay
        where = format_endpoint(state.address)
        log.info("UDP host cache %s: %s; next try in %.0fs", where, reason, delay)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "hosts_received": self.hosts_received,
            "in_flight": self._in_flight is not None,
            "caches": [
                {
                    "address": format_endpoint(state.address),
                    "requests": state.requests,
                    "failures": state.failures,
                    "hosts_received": state.hosts_received,
                    "last_error": state.last_error,
                }
                for state in self.caches.values()
            ],
        }


class BootstrapChain:
    """What the catcher asks when short of hosts: UDP host caches, then GWebCaches."""

    def __init__(self, uhc: UhcBootstrap, gwebcache: GWebCacheBootstrap) -> None:
        self.uhc = uhc
        self.gwebcache = gwebcache

    def wanted(self) -> bool:
        if not self.gwebcache.enabled:
            return False  # --no-bootstrap: not one datagram either
        return self.uhc.wanted() or self.gwebcache.wanted()
