"""The UDP side of the Gnutella port: datagrams to the udp stage, and the link its answers leave by.

The UDP socket listens on the same port number as the TCP one (so a ping's
source port is where its sender listens, as servents expect).  On `::` it
is two sockets, IPv4 and IPv6-only, as the TCP side is (see
`gnurouter.edge.children.listen_tcp`): addresses are never IPv4-mapped.
Host caches named by DNS name are resolved here, at the edge.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import protocol

from gnurouter.seda.stage import Stage
from gnurouter.stages.udp import DatagramReceived

log = logging.getLogger(__name__)

Address = tuple[str, int]

#: Datagrams waiting for the udp stage; past this a flood is dropped at the socket.
MAX_QUEUED_DATAGRAMS = 1000
QUEUE_FULL = "queue-full"
SEND_FAILED = "send-failed"


class DatagramWire(protocol.DatagramProtocol):
    """One UDP socket: each datagram becomes a `DatagramReceived` for the udp stage."""

    def __init__(self, stage: Stage[Any], refuse: Callable[[str, Address, str], None]) -> None:
        self.stage = stage
        self.refuse = refuse

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        source = (str(addr[0]), int(addr[1]))
        if self.stage.queue_length >= MAX_QUEUED_DATAGRAMS:
            self.refuse(QUEUE_FULL, source, f"udp stage holds {MAX_QUEUED_DATAGRAMS} datagrams")
            return
        if not self.stage.enqueue(DatagramReceived(source, data)):
            self.refuse(QUEUE_FULL, source, "udp stage refused the datagram")


class UdpPorts(service.Service):
    """The UDP socket(s) while the router runs, and the `DatagramLink` the udp stage sends by."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port_of: Callable[[], int],
        refuse: Callable[[str, Address, str], None],
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port_of = port_of
        self.refuse = refuse
        #: The udp stage's inlet, set once the graph is built (before the port opens).
        self.stage: Stage[Any] | None = None
        self.ports: dict[int, Any] = {}  # address family (4, 6) -> IListeningPort
        self.resolve_failures = 0

    def startService(self) -> None:
        port = self.port_of()
        if self.host == "::":
            self.ports[4] = self.reactor.listenUDP(port, self._wire(), interface="0.0.0.0")
            self.ports[6] = _adopt_ipv6_only(self.reactor, port, self._wire())
        else:
            family = 6 if ":" in self.host else 4
            self.ports[family] = self.reactor.listenUDP(port, self._wire(), interface=self.host)
        super().startService()

    def _wire(self) -> DatagramWire:
        if self.stage is None:
            raise RuntimeError("UdpPorts started before the udp stage was wired")
        return DatagramWire(self.stage, self.refuse)

    def stopService(self) -> Any:
        super().stopService()
        ports, self.ports = self.ports, {}
        for port in ports.values():
            port.stopListening()

    @property
    def address(self) -> Address | None:
        port = self.ports.get(4) or self.ports.get(6)
        if port is None:
            return None
        bound = port.getHost()
        return bound.host, bound.port

    def send(self, data: bytes, address: Address) -> None:
        host, port = address
        try:
            family = ipaddress.ip_address(host).version
        except ValueError:
            self._resolve_then_send(data, address)
            return
        udp = self.ports.get(family)
        if udp is None:
            self.refuse(SEND_FAILED, address, f"no IPv{family} UDP socket")
            return
        try:
            udp.write(data, (host, port))
        except OSError as error:
            self.refuse(SEND_FAILED, address, str(error))

    def _resolve_then_send(self, data: bytes, address: Address) -> None:
        name, port = address

        def resolved(ip: str) -> None:
            self.send(data, (ip, port))

        def failed(failure: Any) -> None:
            self.resolve_failures += 1
            log.info("cannot resolve UDP host cache %s: %s", name, failure.getErrorMessage())

        self.reactor.resolve(name).addCallbacks(resolved, failed)


def _adopt_ipv6_only(reactor: Any, port: int, wire: DatagramWire) -> Any:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
        sock.setblocking(False)
        return reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET6, wire)
    finally:
        sock.close()  # the reactor holds its own duplicate
