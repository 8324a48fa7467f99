"""Routing decisions, free of I/O: which neighbours a message goes to, or why it goes nowhere.

The rules follow the Gnutella 0.6 draft and what gtk-gnutella enforces, and
fix the original Sandstorm router's mistakes: an expired TTL is never
forwarded, hops + TTL is clamped, duplicates are keyed by (GUID, type) so a
query and a ping that share a GUID do not shadow each other, and routes expire
one by one by age instead of the whole table being wiped every 30 seconds.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gnurouter.protocol.messages import (
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    QueryHit,
    new_guid,
)

#: The peer id under which this router records routes for messages it originated.
LOCAL = 0

PING = MessageType.PING
PONG = MessageType.PONG
BYE = MessageType.BYE
QRP = MessageType.QRP
VENDOR = MessageType.VENDOR
VENDOR_STANDARD = MessageType.VENDOR_STANDARD
PUSH = MessageType.PUSH
QUERY = MessageType.QUERY
QUERY_HIT = MessageType.QUERY_HIT


class RouteTable:
    """Key -> (peer id, time recorded), expiring entry by entry after `max_age` seconds.

    Insertion order is time order, so expiry pops from the front and stops at
    the first young entry: cleanup costs what it removes, not the table size.
    `max_entries` bounds memory whatever the traffic; the oldest entry goes first.
    """

    def __init__(self, max_age: float, max_entries: int) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: OrderedDict[object, tuple[int, float]] = OrderedDict()
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add_if_new(self, key: object, peer_id: int, now: float) -> bool:
        """Record a route unless the key is already known (a duplicate)."""
        entries = self._entries
        if key in entries:
            return False
        entries[key] = (peer_id, now)
        if len(entries) > self.max_entries:
            self._bound()
        return True

    def set(self, key: object, peer_id: int, now: float) -> None:
        """Record or refresh a route (push routes follow the latest query hit)."""
        self._entries.pop(key, None)
        self._entries[key] = (peer_id, now)
        self._bound()

    def lookup(self, key: object, now: float) -> int | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > self.max_age:
            return None
        return entry[0]

    def expire(self, now: float) -> int:
        cutoff = now - self.max_age
        removed = 0
        entries = self._entries
        while entries:
            key = next(iter(entries))
            if entries[key][1] >= cutoff:
                break
            entries.popitem(last=False)
            removed += 1
        self.expired += removed
        return removed

    def _bound(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1


@dataclass
class CachedPong:
    pong: Pong
    hops: int
    seen: float
    from_peer: int


class PongCache:
    """Recently seen pongs, one per host, freshest last (Pong-Caching 0.1)."""

    def __init__(self, size: int, max_age: float = 120.0) -> None:
        self.size = size
        self.max_age = max_age
        self._pongs: OrderedDict[tuple[str, int], CachedPong] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pongs)

    def add(self, pong: Pong, hops: int, from_peer: int, now: float) -> None:
        key = (pong.ip, pong.port)
        self._pongs.pop(key, None)
        self._pongs[key] = CachedPong(pong, hops, now, from_peer)
        while len(self._pongs) > self.size:
            self._pongs.popitem(last=False)

    def fresh(self, now: float, *, exclude_peer: int, limit: int) -> list[CachedPong]:
        chosen: list[CachedPong] = []
        for cached in reversed(self._pongs.values()):
            if len(chosen) >= limit or now - cached.seen > self.max_age:
                break
            if cached.from_peer != exclude_peer:
                chosen.append(cached)
        return chosen


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class RoutingRules:
    max_ttl: int = 7
    route_ttl: float = 600.0
    route_table_max: int = 200_000
    ping_mode: str = "cache"
    ping_refresh_interval: float = 5.0
    pong_cache_size: int = 50
    pongs_per_ping: int = 10
    ping_rate_per_peer: float = 1.0
    ping_burst_per_peer: int = 5


class Decision:
    """What to do with one message: where it goes, and a word for the packet log.

    A plain slotted class: one is made per routed message, and a dataclass
    with list factories costs several times more to build.
    """

    __slots__ = ("action", "learned_hosts", "reason", "sends")

    def __init__(
        self,
        action: str,
        reason: str | None = None,
        sends: list[tuple[Message, list[int]]] | None = None,
    ) -> None:
        self.action = action
        self.reason = reason
        #: Each message to send, with the ids of the peers it goes to.
        self.sends: list[tuple[Message, list[int]]] = sends if sends is not None else []
        #: Addresses of servents this message told us about (pongs).
        self.learned_hosts: list[tuple[str, int]] = []

    @property
    def dropped(self) -> bool:
        return self.action == "dropped"

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, reason={self.reason!r}, sends={len(self.sends)})"


def _drop(reason: str) -> Decision:
    return Decision("dropped", reason)


class Router:
    """The routing state of one router: route tables, pong cache and per-peer ping budgets.

    Not thread-safe: the router stage serialises calls when it runs on several threads.
    """

    def __init__(
        self,
        rules: RoutingRules,
        own_pong: Callable[[], Pong],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self._own_pong = own_pong
        self._clock = clock
        self.seen = RouteTable(rules.route_ttl, rules.route_table_max)
        self.push_routes = RouteTable(rules.route_ttl, rules.route_table_max)
        self.pong_cache = PongCache(rules.pong_cache_size)
        self._peers: set[int] = set()
        self._ping_budgets: dict[int, TokenBucket] = {}
        self._last_ping_forward = float("-inf")

    # -- neighbours ------------------------------------------------------

    @property
    def peers(self) -> frozenset[int]:
        return frozenset(self._peers)

    def peer_joined(self, peer_id: int) -> None:
        self._peers.add(peer_id)

    def peer_left(self, peer_id: int) -> None:
        # Routes through the departed peer stay until they age out; a lookup
        # that lands on them is dropped as "route-gone", which is what it is.
        self._peers.discard(peer_id)
        self._ping_budgets.pop(peer_id, None)

    def apply_rules(self, rules: RoutingRules) -> None:
        self.rules = rules
        for table in (self.seen, self.push_routes):
            table.max_age = rules.route_ttl
            table.max_entries = rules.route_table_max
        self.pong_cache.size = rules.pong_cache_size

    # -- housekeeping ----------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        return self.seen.expire(now) + self.push_routes.expire(now)

    def originate_ping(self, ttl: int = 1) -> Message:
        """A ping of our own (keepalive or pong-cache refresh); its pongs stop here."""
        message = Message.from_body(new_guid(), ttl, 0, Ping())
        self.seen.add_if_new((message.guid, PING), LOCAL, self._clock())
        return message

    # -- routing ---------------------------------------------------------

    def route(self, source: int, message: Message, body: object = None) -> Decision:
        """Decide what happens to `message`, which arrived from peer `source`.

        `body` is the decoded payload when the caller already has it; the
        router decodes only what it needs otherwise.
        """
        kind = message.type
        if kind == QUERY:
            return self._flood(source, message, QUERY)
        if kind == QUERY_HIT:
            return self._route_query_hit(source, message, body)
        if kind == PONG:
            return self._route_pong(source, message, body)
        if kind == PING:
            return self._route_ping(source, message)
        if kind == PUSH:
            return self._route_push(source, message, body)
        if kind == BYE:
            return Decision("closed-by-peer")
        if kind == QRP:
            return Decision("consumed", "hop-by-hop")
        if kind in (VENDOR, VENDOR_STANDARD):
            if message.hops != 0 or message.ttl != 1:
                return _drop("vendor-not-hop-by-hop")
            return Decision("consumed", "hop-by-hop")
        return _drop("unknown-type")

    def _next_ttl(self, message: Message) -> tuple[int, int]:
        """TTL and hops for a relayed copy, with hops + TTL clamped to `max_ttl`."""
        hops = message.hops + 1
        ttl = message.ttl - 1
        if hops + ttl > self.rules.max_ttl:
            ttl = self.rules.max_ttl - hops
        return ttl, hops

    def _flood(self, source: int, message: Message, kind: int) -> Decision:
        now = self._clock()
        if not self.seen.add_if_new((message.guid, kind), source, now):
            return _drop("duplicate")
        if message.ttl == 0:
            return _drop("ttl-expired")
        ttl, hops = self._next_ttl(message)
        if ttl <= 0:
            return _drop("ttl-expired")
        targets = [peer for peer in self._peers if peer != source]
        if not targets:
            return Decision("consumed", "no-other-peers")
        return Decision("forwarded", sends=[(message.forwarded(ttl, hops), targets)])

    def _route_ping(self, source: int, message: Message) -> Decision:
        rules = self.rules
        if rules.ping_mode == "flood":
            return self._flood(source, message, PING)
        now = self._clock()
        if not self.seen.add_if_new((message.guid, PING), source, now):
            return _drop("duplicate")
        budget = self._ping_budgets.get(source)
        if budget is None:
            budget = TokenBucket(rules.ping_rate_per_peer, rules.ping_burst_per_peer, now)
            self._ping_budgets[source] = budget
        if not budget.take(now):
            return _drop("ping-rate")
        reply_ttl = message.hops + 1
        to_source = [source]
        replies = [(Message.from_body(message.guid, reply_ttl, 0, self._own_pong()), to_source)]
        is_keepalive = message.hops == 0 and message.ttl <= 1
        if not is_keepalive:
            for cached in self.pong_cache.fresh(
                now, exclude_peer=source, limit=rules.pongs_per_ping
            ):
                pong = Message.from_body(message.guid, reply_ttl, cached.hops, cached.pong)
                replies.append((pong, to_source))
        decision = Decision("answered", sends=replies)
        # Pong-Caching: answer from the cache, and relay only often enough to
        # keep the cache fresh rather than flooding every ping.
        ttl, hops = self._next_ttl(message)
        if ttl > 0 and now - self._last_ping_forward >= rules.ping_refresh_interval:
            self._last_ping_forward = now
            targets = [peer for peer in self._peers if peer != source]
            if targets:
                decision.sends.append((message.forwarded(ttl, hops), targets))
        return decision

    def _route_reply(self, source: int, message: Message, request_kind: int) -> Decision:
        target = self.seen.lookup((message.guid, request_kind), self._clock())
        if target is None:
            return _drop("no-route")
        if target == LOCAL:
            return Decision("consumed", "reply-to-us")
        if target == source:
            return _drop("reply-to-sender")
        if target not in self._peers:
            return _drop("route-gone")
        if message.ttl <= 1:
            return _drop("ttl-expired")
        return Decision(
            "routed", sends=[(message.forwarded(message.ttl - 1, message.hops + 1), [target])]
        )

    def _route_pong(self, source: int, message: Message, body: object) -> Decision:
        pong = body if isinstance(body, Pong) else message.body()
        assert isinstance(pong, Pong)
        now = self._clock()
        self.pong_cache.add(pong, message.hops + 1, source, now)
        decision = self._route_reply(source, message, PING)
        if pong.port and pong.ip != "0.0.0.0":
            decision.learned_hosts.append((pong.ip, pong.port))
        return decision

    def _route_query_hit(self, source: int, message: Message, body: object) -> Decision:
        servent_id = (
            body.servent_id
            if isinstance(body, QueryHit)
            else QueryHit.servent_id_of(message.payload)
        )
        self.push_routes.set(servent_id, source, self._clock())
        return self._route_reply(source, message, QUERY)

    def _route_push(self, source: int, message: Message, body: object) -> Decision:
        push = body if isinstance(body, Push) else message.body()
        assert isinstance(push, Push)
        now = self._clock()
        if not self.seen.add_if_new((message.guid, PUSH), source, now):
            return _drop("duplicate")
        target = self.push_routes.lookup(push.servent_id, now)
        if target is None:
            return _drop("no-push-route")
        if target == source:
            return _drop("reply-to-sender")
        if target not in self._peers:
            return _drop("route-gone")
        if message.ttl <= 1:
            return _drop("ttl-expired")
        ttl, hops = self._next_ttl(message)
        if ttl <= 0:
            return _drop("ttl-expired")
        return Decision("routed", sends=[(message.forwarded(ttl, hops), [target])])
