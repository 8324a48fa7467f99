"""What this router says in handshakes, and whether it takes a new neighbour.

We are an ultrapeer.  A neighbour's role comes from its X-Ultrapeer header:

* ``X-Ultrapeer: True``: an ultrapeer, in one of `max_ultrapeers` slots;
* ``X-Ultrapeer: False``: a leaf, in one of `max_leaves` slots; it gets
  queries by its QRP table;
* no X-Ultrapeer at all (0.4, or 0.6 from before ultrapeers): a *legacy*
  node.  It shares the ultrapeer slots and is routed like an ultrapeer that
  exchanges no route tables (it gets every query per TTL), since that is
  what the network looked like to it.  `accept_legacy_peers = false`
  refuses them (403) instead.

`max_peers` caps all of them together.  A full router answers 503 with
``X-Try-Ultrapeers`` taken from the host cache.

Leaves check what we say before they stay (LimeWire's HandshakeResponse
calls an ultrapeer "good" only with X-Degree >= 15, X-Ultrapeer-Query-Routing,
X-Dynamic-Querying and X-Max-TTL < 5, and answers "503 Not Good Ultrapeer"
otherwise).  So we send `X-Degree` = our ultrapeer slots (what we keep open
for ultrapeers, from the configuration, not a constant) and `X-Max-TTL` =
min(max_ttl, 4): the TTL dynamic-querying ultrapeers send queries with.
Messages arriving with more are still relayed, clamped to `max_ttl`.

An ultrapeer we connect to may answer ``X-Ultrapeer-Needed: False`` (leaf
guidance: "become my leaf").  We never become a leaf: we confirm with
``X-Ultrapeer: True`` and stay an ultrapeer; the other side keeps or drops
the link as it likes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gnurouter.config import RouterConfig
from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.peers import Peer, PeerState, PeerTable
from gnurouter.protocol.addresses import format_endpoint, parse_int
from gnurouter.protocol.handshake import ConnectRequest, Headers, negotiate_encoding
from gnurouter.routing.roles import LEAF, LEGACY, ULTRAPEER

log = logging.getLogger(__name__)

#: The highest X-Max-TTL LimeWire leaves accept from an ultrapeer (theirs is < 5).
ADVERTISED_MAX_TTL = 4
#: Hosts listed in X-Try-Ultrapeers: in a refusal, and (fewer) in an acceptance.
TRY_HOSTS_REFUSED = 10
TRY_HOSTS_ACCEPTED = 5


@dataclass(frozen=True)
class Verdict:
    status: int
    reason: str
    headers: Headers
    role: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 200


def peer_role(headers: Headers) -> str:
    """ultrapeer, leaf, or legacy (no X-Ultrapeer header), from a peer's handshake headers."""
    value = headers.get("X-Ultrapeer")
    if value is None:
        return LEGACY
    return ULTRAPEER if value.strip().lower() == "true" else LEAF


def peer_features(headers: Headers) -> set[str]:
    """What a peer said it can do, in the words the router uses."""
    features = set()
    if headers.get("Vendor-Message"):
        features.add("vendor-messages")
    if headers.get("X-Ultrapeer-Query-Routing"):
        features.add("up-qrp")
    if headers.get("X-Query-Routing"):
        features.add("qrp")
    return features


#: The headers servents say where they listen in: LimeWire sends Listen-IP,
#: gtk-gnutella Node (and Listen-IP), older servents X-My-Address.  Every one
#: is learned: a neighbour is never dialled at any address it gave.
LISTEN_ADDRESS_HEADERS = ("Listen-IP", "X-My-Address", "Node")


def advertised_degree(headers: Headers) -> int | None:
    """The X-Degree an ultrapeer advertised (its ultrapeer slots), None if absent or bad."""
    return parse_int(headers.get("X-Degree"), 1, 10_000)


def advertised_max_ttl(headers: Headers) -> int | None:
    """The X-Max-TTL an ultrapeer advertised (the TTL it accepts), None if absent or bad."""
    return parse_int(headers.get("X-Max-TTL"), 1, 255)


class HandshakePool:
    """Incoming sockets still shaking hands: bounded on their own, apart from peer slots.

    A socket that connects and then says nothing (or one byte a second) costs
    a place here, never a neighbour slot, so idle and slowloris sockets can
    never lock newcomers out of the router.  Two bounds, both enforced the
    same way, by closing the *oldest* handshake to make room for the newest:

    * per address (`per_address`): one address cannot hold more handshakes
      than this, and its own oldest goes first (a servent behind the same
      NAT as an attacker still gets in);
    * in all (`limit`): the oldest of all goes.

    An honest servent finishes its handshake in a few round trips, so it is
    always among the youngest; a socket that stalls is the one displaced.
    The deadline (`handshake_timeout`) closes the rest.  Pure bookkeeping: the
    edge asks `admit` for each accepted socket and closes what it is told to.
    """

    def __init__(self, limit: int, per_address: int) -> None:
        self.limit = limit
        self.per_address = per_address
        self._open: OrderedDict[int, Peer] = OrderedDict()  # by peer id, oldest first
        self._by_address: dict[str, OrderedDict[int, Peer]] = {}
        #: Handshakes closed to make room, by which bound did it.
        self.displaced = {"per-address": 0, "total": 0}

    def __len__(self) -> int:
        self._prune()
        return len(self._open)

    def admit(self, peer: Peer) -> list[Peer]:
        """Take `peer`'s handshake in; returns the older handshakes to close for it."""
        self._prune()
        displaced: list[Peer] = []
        same_address = self._by_address.setdefault(peer.address[0], OrderedDict())
        while len(same_address) >= self.per_address:
            _, oldest = same_address.popitem(last=False)
            self._open.pop(oldest.id, None)
            displaced.append(oldest)
        self.displaced["per-address"] += len(displaced)
        while len(self._open) >= self.limit:
            _, oldest = self._open.popitem(last=False)
            self._forget_address(oldest)
            displaced.append(oldest)
            self.displaced["total"] += 1
        self._open[peer.id] = peer
        same_address[peer.id] = peer
        return displaced

    def discard(self, peer: Peer) -> None:
        if self._open.pop(peer.id, None) is not None:
            self._forget_address(peer)

    def _forget_address(self, peer: Peer) -> None:
        host = peer.address[0]
        same_address = self._by_address.get(host)
        if same_address is not None:
            same_address.pop(peer.id, None)
            if not same_address:
                del self._by_address[host]

    def _prune(self) -> None:
        """Forget peers whose handshake is over (established, refused or closed)."""
        done = [peer for peer in self._open.values() if peer.state != PeerState.HANDSHAKING]
        for peer in done:
            self.discard(peer)


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
        # Live limits (the control API tunes these).
        self.max_peers = config.max_peers
        self.max_ultrapeers = config.max_ultrapeers
        self.max_leaves = config.max_leaves
        self.accept_legacy = config.accept_legacy_peers
        self.refused: dict[str, int] = {}
        self.leaf_guidance_declined = 0

    # -- what we are -------------------------------------------------------

    @property
    def degree(self) -> int:
        """X-Degree: the ultrapeer connections we keep (our ultrapeer slots)."""
        return min(self.max_ultrapeers, self.max_peers)

    @property
    def advertised_max_ttl(self) -> int:
        return min(self.config.max_ttl, ADVERTISED_MAX_TTL)

    def slots(self, exclude: Peer | None = None) -> dict[str, tuple[int, int]]:
        """Per role: (taken, limit), counting established neighbours only.

        A socket still shaking hands takes no slot (it lives in the
        `HandshakePool`): slots are checked again when its handshake completes.
        """
        taken = {ULTRAPEER: 0, LEAF: 0, "total": 0}
        for peer in self.peers:
            if peer is exclude or peer.state != PeerState.ESTABLISHED:
                continue
            taken["total"] += 1
            if peer.role == LEAF:
                taken[LEAF] += 1
            elif peer.role in (ULTRAPEER, LEGACY):
                taken[ULTRAPEER] += 1
        return {
            ULTRAPEER: (taken[ULTRAPEER], min(self.max_ultrapeers, self.max_peers)),
            LEAF: (taken[LEAF], self.max_leaves),
            "total": (taken["total"], self.max_peers),
        }

    def _headers(self, peer: Peer) -> list[tuple[str, str]]:
        host, port = self.listen_address()
        ultrapeer = self.config.ultrapeer
        headers = [
            ("User-Agent", self.config.user_agent),
            ("X-Ultrapeer", "True" if ultrapeer else "False"),
            ("X-Query-Routing", "0.2"),
        ]
        if ultrapeer:
            headers.append(("X-Ultrapeer-Query-Routing", "0.1"))
            if self.config.dynamic_querying:
                # Said only because it is true: leaves leave their querying to us.
                headers.append(("X-Dynamic-Querying", "0.1"))
            headers.append(("X-Degree", str(self.degree)))
        headers += [
            ("X-Max-TTL", str(self.advertised_max_ttl)),
            ("Pong-Caching", "0.1"),
            ("GGEP", "0.5"),
            ("Vendor-Message", "0.2"),
            ("Bye-Packet", "0.1"),
            ("Listen-IP", format_endpoint((host, port))),
            ("Remote-IP", peer.address[0]),
        ]
        if self.config.deflate:
            headers.append(("Accept-Encoding", "deflate"))
        return headers

    def try_hosts(self, peer: Peer, limit: int) -> str:
        exclude = {peer.address}
        if peer.listen_address is not None:
            exclude.add(peer.listen_address)
        host, port = self.listen_address()
        exclude.add((host, port))
        return ",".join(
            format_endpoint(address) for address in self.hosts.sample(limit, exclude=exclude)
        )

    # -- decisions ---------------------------------------------------------

    def request_headers(self, peer: Peer) -> Headers:
        """Our `GNUTELLA CONNECT/0.6` block when we initiate."""
        return Headers.from_pairs(self._headers(peer))

    def _refusal(self, peer: Peer, status: int, reason: str) -> Verdict:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        pairs = [("User-Agent", self.config.user_agent)]
        try_hosts = self.try_hosts(peer, TRY_HOSTS_REFUSED)
        if try_hosts:
            pairs.append(("X-Try-Ultrapeers", try_hosts))
        return Verdict(status, reason, Headers.from_pairs(pairs))

    def admit(self, peer: Peer, role: str) -> Verdict | None:
        """None if a `role` peer fits now, else the refusal to give it."""
        if role == LEGACY and not self.accept_legacy:
            return self._refusal(peer, 403, "Old-style servents refused (no X-Ultrapeer)")
        slots = self.slots(exclude=peer)
        taken, limit = slots["total"]
        if taken >= limit:
            return self._refusal(peer, 503, "Too many connections")
        taken, limit = slots[LEAF if role == LEAF else ULTRAPEER]
        if taken >= limit:
            what = "leaves" if role == LEAF else "ultrapeers"
            return self._refusal(peer, 503, f"Too many {what}")
        return None

    def respond(self, peer: Peer, request: ConnectRequest) -> Verdict:
        """Accept or refuse a servent that connected to us."""
        role = peer_role(request.headers)
        refusal = self.admit(peer, role)
        if refusal is not None:
            return refusal
        pairs = self._headers(peer)
        try_hosts = self.try_hosts(peer, TRY_HOSTS_ACCEPTED)
        if try_hosts:
            pairs.append(("X-Try-Ultrapeers", try_hosts))
        pairs.extend(negotiate_encoding(request.headers, we_support_deflate=self.config.deflate))
        return Verdict(200, "OK", Headers.from_pairs(pairs), role)

    def confirm(self, peer: Peer, response_headers: Headers) -> Verdict:
        """Our final reply when we initiated: take the servent that said 200, or refuse it."""
        role = peer_role(response_headers)
        refusal = self.admit(peer, role)
        if refusal is not None:
            return refusal
        pairs = negotiate_encoding(response_headers, we_support_deflate=self.config.deflate)
        needed = response_headers.get("X-Ultrapeer-Needed")
        if role == ULTRAPEER and needed is not None and needed.strip().lower() == "false":
            # Leaf guidance: they have ultrapeers enough and want us as a leaf.
            # We are an ultrapeer with leaves of our own: decline, stay one.
            self.leaf_guidance_declined += 1
            pairs.append(("X-Ultrapeer", "True"))
            log.info("peer %s suggested we become its leaf; staying an ultrapeer", peer.label)
        return Verdict(200, "OK", Headers.from_pairs(pairs), role)

    def confirm_headers(self, response_headers: Headers) -> Headers:
        """Our final `200 OK` block when we initiated the connection (encoding only)."""
        pairs = negotiate_encoding(response_headers, we_support_deflate=self.config.deflate)
        return Headers.from_pairs(pairs)
