"""Catcher stage: keeps the router at its target number of neighbours.

It learns addresses (pongs, X-Try-Ultrapeers, the hosts file, --peer) into
the host cache and, on every tick, opens connections to the best candidates
until enough outgoing links are up or being set up.  Unlike the original,
which only reacted once it had fallen to two peers, it tops up continuously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gnurouter.events import ConnectFailed, HostsLearned, Tick
from gnurouter.hostcache import HostCache
from gnurouter.peers import PeerTable


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
    ) -> None:
        self.hosts = hosts
        self.peers = peers
        self.connect = connect
        self.target_peers = target_peers
        self.max_peers = max_peers
        self.own_addresses = own_addresses
        self.attempts = 0

    def handle_events(self, batch: list[Any]) -> None:
        top_up = False
        for event in batch:
            if isinstance(event, HostsLearned):
                self.hosts.add_many(event.hosts)
            elif isinstance(event, ConnectFailed):
                self.hosts.failed(event.address)
            elif isinstance(event, Tick):
                top_up = True
        if top_up:
            self._top_up()

    def _top_up(self) -> None:
        outgoing = self.peers.count(outgoing=True)
        total = self.peers.count()
        wanted = min(self.target_peers - outgoing, self.max_peers - total)
        if wanted <= 0:
            return
        exclude = self.peers.addresses() | self.own_addresses()
        for address in self.hosts.candidates(exclude, wanted):
            self.attempts += 1
            self.connect(address)
