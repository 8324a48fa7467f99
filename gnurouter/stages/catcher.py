"""Catcher stage: keeps the router at its target number of ultrapeer neighbours.

It learns addresses (pongs, X-Try-Ultrapeers, handshakes, the hosts file,
--peer, GWebCaches) into the host cache and, on every tick, opens
connections to the best candidates until `target_peers` ultrapeer links
(either direction, plus outgoing ones still shaking hands) are up, within
the free ultrapeer slots.  A lost link is replaced on the next tick.  When
the cache has fewer ready hosts than it needs, it asks the GWebCache
bootstrap (which decides whether etiquette lets it ask now).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.peers import PeerTable
from gnurouter.routing.roles import LEAF
from gnurouter.seda.stage import Stage, report_failure
from gnurouter.stages.events import (
    CatcherEvent,
    ConnectFailed,
    HostConnected,
    HostsLearned,
    Tick,
)


class CatcherHandler:
    def __init__(
        self,
        *,
        hosts: HostCache,
        peers: PeerTable,
        connect: Callable[[tuple[str, int]], None],
        target_peers: int,
        max_peers: int,
        own_addresses: Callable[[], set[tuple[str, int]]],
        max_ultrapeers: int | None = None,
        bootstrap: Any = None,
    ) -> None:
        self.hosts = hosts
        self.peers = peers
        self.connect = connect
        self.target_peers = target_peers
        self.max_peers = max_peers
        self.max_ultrapeers = max_ultrapeers if max_ultrapeers is not None else max_peers
        self.own_addresses = own_addresses
        self.bootstrap = bootstrap  # a GWebCacheBootstrap, or None
        self.attempts = 0
        #: Ticks that wanted more ultrapeers than the host cache could offer.
        self.starved_ticks = 0
        self.bootstrap_requests = 0
        self.stage: Stage[CatcherEvent] | None = None  # set by the graph builder

    def handle_events(self, batch: list[Any]) -> None:
        top_up = False
        for event in batch:
            try:
                if isinstance(event, HostsLearned):
                    self.hosts.add_many(event.hosts, source=event.source, ultrapeer=event.ultrapeer)
                    # Asked for because we were short: use them now, not next tick.
                    top_up = top_up or event.source in ("gwebcache", "uhc")
                elif isinstance(event, ConnectFailed):
                    self.hosts.failed(event.address)
                elif isinstance(event, HostConnected):
                    self.hosts.succeeded(event.address, ultrapeer=event.ultrapeer)
                elif isinstance(event, Tick):
                    top_up = True
            except Exception as error:
                report_failure(self.stage, event, error)
        if top_up:
            try:
                self._top_up()
            except Exception as error:
                report_failure(self.stage, Tick("catcher"), error)

    def ultrapeer_links(self) -> tuple[int, int]:
        """(ultrapeer links up or being set up by us, all live links)."""
        ultrapeers = total = 0
        for peer in self.peers:
            if peer.closing_or_closed:
                continue
            total += 1
            if peer.role is None:
                if peer.outgoing:
                    ultrapeers += 1  # we only connect out to find ultrapeers
            elif peer.role != LEAF:
                ultrapeers += 1
        return ultrapeers, total

    def _top_up(self) -> None:
        ultrapeers, total = self.ultrapeer_links()
        wanted = min(
            self.target_peers - ultrapeers,
            self.max_ultrapeers - ultrapeers,
            self.max_peers - total,
        )
        if wanted <= 0:
            return
        exclude = self.peers.addresses() | self.own_addresses()
        candidates = self.hosts.candidates(exclude, wanted)
        for address in candidates:
            self.attempts += 1
            self.connect(address)
        if len(candidates) < wanted:
            self.starved_ticks += 1
            if self.bootstrap is not None and self.bootstrap.wanted():
                self.bootstrap_requests += 1
