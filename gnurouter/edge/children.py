"""The router's child services: what `RouterService` starts and stops, on Twisted's own seams.

Each is a `twisted.application.service.Service`, so the router is a
`MultiService` of them: started in the order added, stopped in reverse
(timers first, then the ports), each one's stop awaited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import internet, service


class ListeningPort(service.Service):
    """A TCP port listening while the service runs; `address` says where."""

    def __init__(self, reactor: Any, address: tuple[str, int], factory: Any) -> None:
        self.reactor = reactor
        self.configured = address
        self.factory = factory
        self.port: Any = None  # an IListeningPort while running

    def startService(self) -> None:
        host, port = self.configured
        self.port = self.reactor.listenTCP(port, self.factory, interface=host)
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound address (port 0 resolved) while listening, else None."""
        if self.port is None:
            return None
        bound = self.port.getHost()
        return bound.host, bound.port


class Every(internet.TimerService):
    """`fn(*args)` every `interval` seconds on `reactor`'s clock; first call now, or after one.

    TimerService always calls at once; a hosts-file save or a keepalive at
    start is wasted work, so with `now=False` the first call is skipped.
    """

    def __init__(
        self, reactor: Any, interval: float, fn: Callable[..., Any], *args: Any, now: bool = True
    ) -> None:
        super().__init__(interval, fn if now else _after_first(fn), *args)
        self.clock = reactor


def _after_first(fn: Callable[..., Any]) -> Callable[..., Any]:
    calls = 0

    def call(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return fn(*args) if calls > 1 else None

    return call


class Retimed(service.Service):
    """`fn()` again and again, re-reading `interval_of()` before each wait (it is tunable live)."""

    def __init__(self, reactor: Any, interval_of: Callable[[], float], fn: Callable[[], Any]):
        self.reactor = reactor
        self.interval_of = interval_of
        self.fn = fn
        self._call: Any = None

    def startService(self) -> None:
        super().startService()
        self._call = self.reactor.callLater(self.interval_of(), self._run)

    def _run(self) -> None:
        self.fn()
        self._call = self.reactor.callLater(self.interval_of(), self._run)

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
