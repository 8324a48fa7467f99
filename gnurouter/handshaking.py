"""What this router says in handshakes, and whether it takes a new neighbour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gnurouter.config import RouterConfig
from gnurouter.hostcache import HostCache
from gnurouter.peers import Peer, PeerTable
from gnurouter.protocol.handshake import ConnectRequest, Headers, negotiate_encoding


@dataclass(frozen=True)
class Verdict:
    status: int
    reason: str
    headers: Headers

    @property
    def accepted(self) -> bool:
        return self.status == 200


def parse_try_hosts(value: str | None, limit: int = 64) -> list[tuple[str, int]]:
    """'1.2.3.4:6346, 5.6.7.8:6347' -> addresses; malformed entries are skipped."""
    if not value:
        return []
    hosts: list[tuple[str, int]] = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) <= 65535:
            hosts.append((host, int(port)))
            if len(hosts) >= limit:
                break
    return hosts


class HandshakePolicy:
    def __init__(
        self,
        config: RouterConfig,
        peers: PeerTable,
        hosts: HostCache,
        listen_address: Callable[[], tuple[str, int]],
    ) -> None:
        self.config = config
        self.peers = peers
        self.hosts = hosts
        self.listen_address = listen_address

    def _common(self, peer: Peer) -> list[tuple[str, str]]:
        host, port = self.listen_address()
        headers = [
            ("User-Agent", self.config.user_agent),
            ("X-Ultrapeer", "True" if self.config.ultrapeer else "False"),
            ("X-Query-Routing", "0.2"),
            ("X-Ultrapeer-Query-Routing", "0.1"),
            ("Pong-Caching", "0.1"),
            ("GGEP", "0.5"),
            ("Vendor-Message", "0.2"),
            ("Bye-Packet", "0.1"),
            ("X-Max-TTL", str(self.config.max_ttl)),
            ("X-Degree", str(self.config.max_peers)),
            ("Listen-IP", f"{host}:{port}"),
            ("Remote-IP", peer.address[0]),
        ]
        if self.config.deflate:
            headers.append(("Accept-Encoding", "deflate"))
        return headers

    def request_headers(self, peer: Peer) -> Headers:
        """Our `GNUTELLA CONNECT/0.6` block when we initiate."""
        return Headers.from_pairs(self._common(peer))

    def respond(self, peer: Peer, request: ConnectRequest) -> Verdict:
        """Accept or refuse a servent that connected to us."""
        established = self.peers.count(include_handshaking=False)
        if established >= self.config.max_peers:
            try_hosts = ",".join(f"{h}:{p}" for h, p in self.hosts.sample(10))
            pairs = [("User-Agent", self.config.user_agent)]
            if try_hosts:
                pairs.append(("X-Try-Ultrapeers", try_hosts))
            return Verdict(503, "Too many connections", Headers.from_pairs(pairs))
        pairs = self._common(peer)
        pairs.extend(negotiate_encoding(request.headers, we_support_deflate=self.config.deflate))
        return Verdict(200, "OK", Headers.from_pairs(pairs))

    def confirm_headers(self, response_headers: Headers) -> Headers:
        """Our final `200 OK` block when we initiated the connection."""
        pairs = negotiate_encoding(response_headers, we_support_deflate=self.config.deflate)
        return Headers.from_pairs(pairs)
