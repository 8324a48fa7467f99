"""Route tables (reverse paths, push routes), the pong cache and per-peer token buckets."""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

from gnurouter.protocol.messages import (
    MessageType,
    Pong,
)

_QUERY = MessageType.QUERY


def _seen_key(guid: bytes, kind: int) -> object:
    """The route table key of a message: (GUID, type), or for a query its bare GUID.

    Queries are most of the traffic, and a bare key saves building a tuple
    for each; a tuple never equals a bytes object, so the two cannot collide.
    """
    return guid if kind == _QUERY else (guid, kind)


_owner = itemgetter(0)


class RouteTable:
    """Key -> (peer id, time recorded), expiring entry by entry after `max_age` seconds.

    A plain dict: insertion order is time order (a refreshed route moves to
    the end), so expiry walks from the front and stops at the first young
    entry, costing what it removes, not the table size.  `max_entries`
    bounds memory whatever the traffic: past it the oldest entries go, a
    sixty-fourth of the table at a time so that a table at its bound does not
    pay a walk past freshly deleted slots on every insert.

    No one peer may crowd the others out: while one owns more than
    `max_share` of `max_entries`, a full table evicts that peer's own oldest
    entries instead of everyone's oldest (`evicted_over_share` counts
    them).  A lone busy neighbour is routed as before (its entries are the
    oldest anyway); a flooding one only churns its own routes.

    Ownership costs an insert nothing: `owned` (entries per peer id) is
    brought up to date in bulk, at C speed, from the entries added since the
    last count (the end of the dict) when it is needed: at the bound, on
    `set()`, and by `count_owners()`.
    """

    def __init__(self, max_age: float, max_entries: int, max_share: float = 1.0) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.max_share = max_share
        self._entries: dict[object, tuple[int, float]] = {}
        #: Entries per peer id, for the first `_counted` entries (peers with
        #: none are absent); `count_owners()` makes it cover them all.
        self.owned: dict[int, int] = {}
        self._counted = 0
        self.expired = 0
        self.evicted = 0
        self.evicted_over_share = 0

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
        entries = self._entries
        if key in entries:
            # Wherever the old entry sits, it must be counted to be uncounted.
            self.count_owners()
            self._disown(entries.pop(key)[0], 1)
            self._counted -= 1
        entries[key] = (peer_id, now)
        if len(entries) > self.max_entries:
            self._bound()

    def lookup(self, key: object, now: float) -> int | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > self.max_age:
            return None
        return entry[0]

    def count_owners(self) -> dict[int, int]:
        """`owned`, brought up to date (counts the entries added since the last call)."""
        entries = self._entries
        fresh = len(entries) - self._counted
        if fresh > 0:
            owned = self.owned
            added = Counter(map(_owner, islice(reversed(entries.values()), fresh)))
            for peer_id, count in added.items():
                owned[peer_id] = owned.get(peer_id, 0) + count
        self._counted = len(entries)
        return self.owned

    def share_of(self, peer_id: int) -> float:
        """The fraction of `max_entries` that `peer_id` owns."""
        owned = self.count_owners()
        return owned.get(peer_id, 0) / self.max_entries if self.max_entries else 0.0

    def _disown(self, peer_id: int, count: int) -> None:
        owned = self.owned
        left = owned.get(peer_id, 0) - count
        if left > 0:
            owned[peer_id] = left
        else:
            owned.pop(peer_id, None)

    def expire(self, now: float) -> int:
        cutoff = now - self.max_age
        entries = self._entries
        stale = []
        for key, (_, recorded) in entries.items():
            if recorded >= cutoff:
                break
            stale.append(key)
        counted = min(len(stale), self._counted)
        if counted:
            # The front of the dict is the counted part: uncount what goes.
            gone = Counter(entries[key][0] for key in stale[:counted])
            for peer_id, count in gone.items():
                self._disown(peer_id, count)
            self._counted -= counted
        for key in stale:
            del entries[key]
        self.expired += len(stale)
        return len(stale)

    def _bound(self) -> None:
        entries = self._entries
        while len(entries) > self.max_entries:
            batch = len(entries) - self.max_entries + self.max_entries // 64
            owned = self.count_owners()
            front = Counter(map(_owner, islice(entries.values(), batch)))
            hog = max(owned, key=owned.__getitem__)
            over = owned[hog] > self.max_share * self.max_entries
            if over and front.get(hog, 0) < batch:
                # Over its share: the hog's own oldest go, nobody else's.  A
                # walk from the front (time order) past other peers' entries;
                # it finds `batch` of the hog's unless the bound itself just
                # shrank a lot (then the next round goes by age).
                oldest = []
                for key, (peer_id, _) in entries.items():
                    if peer_id == hog:
                        oldest.append(key)
                        if len(oldest) >= batch:
                            break
                for key in oldest:
                    del entries[key]
                self._disown(hog, len(oldest))
                self.evicted_over_share += len(oldest)
                self.evicted += len(oldest)
                self._counted = len(entries)
                continue
            # Everyone's oldest (all the hog's own when it holds the front,
            # as a lone busy neighbour does).
            oldest = list(islice(entries, batch))
            for key in oldest:
                del entries[key]
            for peer_id, count in front.items():
                self._disown(peer_id, count)
            if over:
                self.evicted_over_share += len(oldest)
            self._counted = len(entries)
            self.evicted += len(oldest)


@dataclass
class CachedPong:
    pong: Pong
    hops: int
    seen: float
    from_peer: int
    #: Whether its host is an ultrapeer (GGEP "UP", or our ultrapeer neighbour itself).
    ultrapeer: bool = False


class PongCache:
    """Recently seen pongs, one per host, freshest last (Pong-Caching 0.1)."""

    def __init__(self, size: int, max_age: float = 120.0) -> None:
        self.size = size
        self.max_age = max_age
        self._pongs: OrderedDict[tuple[str, int], CachedPong] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pongs)

    def add(
        self, pong: Pong, hops: int, from_peer: int, now: float, *, ultrapeer: bool = False
    ) -> None:
        key = (pong.ip, pong.port)
        self._pongs.pop(key, None)
        self._pongs[key] = CachedPong(pong, hops, now, from_peer, ultrapeer)
        while len(self._pongs) > self.size:
            self._pongs.popitem(last=False)

    def fresh(
        self, now: float, *, exclude_peer: int, limit: int, ultrapeers_only: bool = False
    ) -> list[CachedPong]:
        """The freshest pongs not learned from `exclude_peer` (a leaf asks for
        ultrapeers only: it can connect to nothing else)."""
        chosen: list[CachedPong] = []
        for cached in reversed(self._pongs.values()):
            if len(chosen) >= limit or now - cached.seen > self.max_age:
                break
            if cached.from_peer != exclude_peer and (cached.ultrapeer or not ultrapeers_only):
                chosen.append(cached)
        return chosen


class RefusalWindow:
    """How many refusals a peer earned in the current window.

    A budget (`TokenBucket`) refuses what is over it; a peer that keeps being
    refused for a whole window is flooding, and is cut off by the caller.
    """

    __slots__ = ("count", "since")

    def __init__(self) -> None:
        self.count = 0
        self.since = float("-inf")

    def refuse(self, now: float, window: float) -> int:
        """Count one refusal at `now`; returns the count in the window of `window` seconds."""
        if now - self.since > window:
            self.since, self.count = now, 0
        self.count += 1
        return self.count


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
