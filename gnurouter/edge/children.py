"""The router's child services: what `RouterService` starts and stops, on Twisted's own seams.

Each is a `twisted.application.service.Service`, so the router is a
`MultiService` of them: started in the order added, stopped in reverse
(timers first, then the ports), each one's stop awaited.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.application import internet, service

#: Twisted's listen backlog when none is given (and the most a port needs
#: that only a few clients use, such as the control endpoint).
DEFAULT_BACKLOG = 50


def accept_backlog(max_peers: int, max_handshakes: int) -> int:
    """A listen backlog for a port that may see every peer slot and handshake connect at once.

    Connections the reactor has not accepted yet wait in the kernel's accept
    queue; one that finds it full has its SYN dropped and retried after a
    second (then two, four...).  A restart, or a burst of leaves coming back
    after an outage, connects up to every slot at once.  (The kernel caps
    the backlog at net.core.somaxconn: 4096 since Linux 5.4.)
    """
    return max(DEFAULT_BACKLOG, max_peers + max_handshakes)


class ListeningPort(service.Service):
    """A TCP port listening while the service runs; `address` says where."""

    def __init__(
        self,
        reactor: Any,
        address: tuple[str, int],
        factory: Any,
        *,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        self.reactor = reactor
        self.configured = address
        self.factory = factory
        self.backlog = backlog
        self.port: Any = None  # an IListeningPort while running

    def startService(self) -> None:
        host, port = self.configured
        self.port = self.reactor.listenTCP(port, self.factory, backlog=self.backlog, interface=host)
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


class DualStackPort(ListeningPort):
    """`::` as two sockets, IPv4 and IPv6-only, on one port number: IPv4 peers are
    then seen as a.b.c.d, never as ::ffff:a.b.c.d (whatever net.ipv6.bindv6only says)."""

    port6: Any = None

    def startService(self) -> None:
        self.port = self.reactor.listenTCP(
            self.configured[1], self.factory, backlog=self.backlog, interface="0.0.0.0"
        )
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", self.port.getHost().port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            self.port6 = self.reactor.adoptStreamPort(sock.fileno(), socket.AF_INET6, self.factory)
        finally:
            sock.close()  # the reactor holds its own duplicate
        service.Service.startService(self)

    def stopService(self) -> Any:
        port6, self.port6 = self.port6, None
        if port6 is not None:
            port6.stopListening()
        return super().stopService()

    @property
    def address(self) -> tuple[str, int] | None:
        bound = super().address
        return ("::", bound[1]) if bound is not None else None


def listening_port(
    reactor: Any, address: tuple[str, int], factory: Any, *, backlog: int = DEFAULT_BACKLOG
) -> ListeningPort:
    """A `ListeningPort`, dual-stack (`DualStackPort`) for `::`."""
    kind = DualStackPort if address[0] == "::" else ListeningPort
    return kind(reactor, address, factory, backlog=backlog)


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
