"""UDP stage: datagrams on the Gnutella port, answered and learned from.

Each `DatagramReceived` goes through `UdpHosts` (gnurouter/mesh/udp.py,
the decisions: rate limits, pongs, packed hosts); its answers leave through
the `DatagramLink` (the socket, at the edge) and the hosts it teaches go to
the catcher.  `AskHostCache` (from the UHC bootstrap, when the catcher is
short of hosts) sends a host cache request.  A pong from a host cache we
asked tells the bootstrap it answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gnurouter.mesh.udp import Outcome, UdpHosts
from gnurouter.mesh.uhc import UhcBootstrap
from gnurouter.seda.stage import Sink, Stage, report_failure
from gnurouter.stages.events import HostsLearned

Address = tuple[str, int]


@dataclass(slots=True)
class DatagramReceived:
    source: Address
    data: bytes
    kind: str = "datagram"


@dataclass(slots=True)
class AskHostCache:
    address: Address
    kind: str = "uhc-request"


UdpEvent = DatagramReceived | AskHostCache


class DatagramLink(Protocol):
    """Where datagrams leave (the edge's UDP port); names are resolved there."""

    def send(self, data: bytes, address: Address) -> None: ...


class UdpHandler:
    def __init__(
        self,
        *,
        udp: UdpHosts,
        link: DatagramLink,
        catcher: Sink[HostsLearned],
        uhc: UhcBootstrap | None = None,
    ) -> None:
        self.udp = udp
        self.link = link
        self.catcher = catcher
        self.uhc = uhc
        self.stage: Stage[UdpEvent] | None = None  # set by the graph builder

    def handle_events(self, batch: list[Any]) -> None:
        for event in batch:
            try:
                if isinstance(event, DatagramReceived):
                    self._carry_out(self.udp.receive(event.data, event.source))
                elif isinstance(event, AskHostCache):
                    self.link.send(self.udp.host_cache_request(event.address), event.address)
            except Exception as error:
                report_failure(self.stage, event, error)

    def _carry_out(self, outcome: Outcome) -> None:
        for data, address in outcome.replies:
            self.link.send(data, address)
        for learned in outcome.learned:
            self.catcher.enqueue_housekeeping(
                HostsLearned(learned.hosts, source=learned.source, ultrapeer=learned.ultrapeer)
            )
        if outcome.cache_answered is not None and self.uhc is not None:
            self.uhc.answered(*outcome.cache_answered)
