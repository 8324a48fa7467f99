"""Routing decisions, free of I/O: which neighbours a message goes to, or why it goes nowhere.

The rules follow the Gnutella 0.6 draft and what gtk-gnutella enforces, and
fix the original Sandstorm router's mistakes: an expired TTL is never
forwarded, hops + TTL is clamped, duplicates are keyed by (GUID, type) so a
query and a ping that share a GUID do not shadow each other, and routes expire
one by one by age instead of the whole table being wiped every 30 seconds.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.messages import (
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    QueryHit,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
    decode_qrp,
    new_guid,
)
from gnurouter.protocol.qrp import (
    DEFAULT_QRP_LIMITS,
    QRP_BYE_CODE,
    UP_TABLE_BITS,
    QrpError,
    QrpLimitError,
    QrpLimits,
    QrpReceiver,
    QrpTable,
    QueryKeys,
    build_update,
    merge_tables,
)
from gnurouter.protocol.vendor import (
    HOPS_FLOW,
    MESSAGES_SUPPORTED,
    MessagesSupported,
    decode_hops_flow,
    vendor_label,
)

#: The peer id under which this router records routes for messages it originated.
LOCAL = 0

#: Neighbour roles, from the handshake's X-Ultrapeer header.
ULTRAPEER = "ultrapeer"
LEAF = "leaf"
#: A servent that sent no X-Ultrapeer at all (0.4, or 0.6 from before
#: ultrapeers): routed like an ultrapeer neighbour that does no QRP.
LEGACY = "legacy"
ROLES = (ULTRAPEER, LEAF, LEGACY)
#: Hops-Flow value meaning "no limit" (the byte on the wire tops out at 255).
NO_HOPS_FLOW = 256
#: The vendor messages we answer, listed in our Messages Supported.
SUPPORTED_VENDOR_MESSAGES = (HOPS_FLOW,)
#: Distinct vendor message labels counted per peer; the rest go under
#: "other" (a peer inventing vendor codes must not grow our memory).
MAX_VENDOR_LABELS = 64
#: Bye code for a peer cut off for flooding: the Bye-Packet proposal's 4xx
#: ("the User did something wrong"); there is no dedicated code.
FLOOD_BYE_CODE = 400

PING = MessageType.PING
PONG = MessageType.PONG
BYE = MessageType.BYE
QRP = MessageType.QRP
VENDOR = MessageType.VENDOR
VENDOR_STANDARD = MessageType.VENDOR_STANDARD
PUSH = MessageType.PUSH
QUERY = MessageType.QUERY
QUERY_HIT = MessageType.QUERY_HIT


def _seen_key(guid: bytes, kind: int) -> object:
    """The route table key of a message: (GUID, type), or for a query its bare GUID.

    Queries are most of the traffic, and a bare key saves building a tuple
    for each; a tuple never equals a bytes object, so the two cannot collide.
    """
    return guid if kind == QUERY else (guid, kind)


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
    #: Pings refused by the rate limit that get a peer cut off (Bye 400)
    #: when more arrive within `ping_flood_window` seconds: 1000 in 10 s is
    #: a peer pinging at 100 times its budget for ten seconds.  Today's
    #: servents ping every few seconds at most (keepalives, pong-cache
    #: refreshes); a 0.4-era neighbour relaying everyone's pings (what the
    #: synthetic traces model: ~12 pings/s per link, bursts of 50 in a
    #: second) stays far below, even replayed at 10x.  A refused ping costs
    #: little (it leaves no route behind); this is for the peer that only
    #: floods (the attack ran at 10,000/s).  0 never cuts a peer off.
    ping_flood_refusals: int = 1000
    ping_flood_window: float = 10.0
    #: Largest share of `route_table_max` one peer may own before a full
    #: table evicts its routes rather than everyone's (see `RouteTable`):
    #: one neighbour flooding new GUIDs (queries, pings, pushes) can then
    #: only churn its own routes, and the others keep 75% of the table.
    route_share_max: float = 0.25
    #: Table size cap and RESET / update pacing per peer (see `QrpLimits`).
    qrp_limits: QrpLimits = DEFAULT_QRP_LIMITS
    #: A leaf that has not sent a complete route table yet gets queries as
    #: before QRP (flooded per TTL); once it has one, only what it matches.
    flood_tableless_leaves: bool = True
    #: Least seconds between two QRP updates to one ultrapeer neighbour.
    qrp_update_interval: float = 300.0


class Decision:
    """What to do with one message: where it goes, and a word for the packet log.

    A plain slotted class: one is made per routed message, and a dataclass
    with list factories costs several times more to build.
    """

    __slots__ = ("action", "close", "learned_hosts", "reason", "sends")

    def __init__(
        self,
        action: str,
        reason: str | None = None,
        sends: list[tuple[Message, Sequence[int]]] | None = None,
    ) -> None:
        self.action = action
        self.reason = reason
        #: Each message to send, with the ids of the peers it goes to.  A
        #: flood's id tuple is shared by every decision with the same sender
        #: (see `Router._flood_targets`): read it, never change it.
        self.sends: list[tuple[Message, Sequence[int]]] = sends if sends is not None else []
        #: Addresses of servents this message told us about (pongs).
        self.learned_hosts: Sequence[tuple[str, int]] = ()
        #: (Bye code, reason) when the sender must be disconnected for it.
        self.close: tuple[int, str] | None = None

    @property
    def dropped(self) -> bool:
        return self.action == "dropped"

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, reason={self.reason!r}, sends={len(self.sends)})"


def _drop(reason: str) -> Decision:
    return Decision("dropped", reason)


class PeerRouting:
    """What routing knows of one neighbour: role, route table, flow control, counters."""

    __slots__ = (
        "closing",
        "hops_flow",
        "id",
        "messages_supported_sent",
        "ping_refusals",
        "ping_refusals_since",
        "qrp",
        "qrp_updates_sent",
        "queries_sent",
        "role",
        "sent_table",
        "sent_table_at",
        "supported_vendor_messages",
        "table",
        "up_qrp",
        "vendor_messages",
        "vendor_messages_enabled",
        "withheld",
    )

    def __init__(self, peer_id: int, role: str, *, vendor_messages: bool, up_qrp: bool) -> None:
        self.id = peer_id
        self.role = role
        self.hops_flow = NO_HOPS_FLOW
        self.qrp: QrpReceiver | None = None
        #: The route table queries are matched against: the receiver's last
        #: complete table, swapped in under the routing lock once built.
        self.table: QrpTable | None = None
        #: A close was decided (a limit was crossed): further messages are
        #: dropped without another close.
        self.closing = False
        #: Pings refused by the rate limit in the current flood window.
        self.ping_refusals = 0
        self.ping_refusals_since = float("-inf")
        #: Whether the peer said it speaks vendor messages (Vendor-Message header).
        self.vendor_messages_enabled = vendor_messages
        #: Whether it exchanges route tables between ultrapeers (X-Ultrapeer-Query-Routing).
        self.up_qrp = up_qrp
        self.messages_supported_sent = False
        self.supported_vendor_messages: tuple[str, ...] | None = None
        #: Vendor messages received, by label ("BEAR/4v1 Hops Flow": n).
        self.vendor_messages: dict[str, int] = {}
        #: Queries not sent to this peer, by reason ("hops-flow", "qrp-miss").
        self.withheld: dict[str, int] = {}
        self.queries_sent = 0
        #: The merged table last sent to this ultrapeer ('0'/'1' slots) and when.
        self.sent_table: str | None = None
        self.sent_table_at = float("-inf")
        self.qrp_updates_sent = 0

    @property
    def leaf(self) -> bool:
        return self.role == LEAF

    def withhold(self, reason: str) -> None:
        self.withheld[reason] = self.withheld.get(reason, 0) + 1

    def count_vendor_message(self, label: str) -> None:
        counts = self.vendor_messages
        if label not in counts and len(counts) >= MAX_VENDOR_LABELS:
            label = "other"
        counts[label] = counts.get(label, 0) + 1

    def snapshot(self) -> dict[str, object]:
        table = self.table
        receiver = self.qrp
        return {
            "role": self.role,
            "hops_flow": None if self.hops_flow >= NO_HOPS_FLOW else self.hops_flow,
            "qrp_table": (
                {
                    "slots": table.slots,
                    "set": table.set_count,
                    "fill": round(table.fill_ratio, 4),
                    "tables_installed": receiver.tables_installed if receiver else 0,
                    "bytes": receiver.nbytes if receiver else table.nbytes,
                }
                if table is not None
                else None
            ),
            "qrp_messages": (receiver.resets + receiver.patches) if receiver else 0,
            "queries_sent": self.queries_sent,
            "queries_withheld": dict(self.withheld),
            "vendor_messages": dict(self.vendor_messages),
            "supported_vendor_messages": (
                list(self.supported_vendor_messages)
                if self.supported_vendor_messages is not None
                else None
            ),
            "qrp_updates_sent": self.qrp_updates_sent,
            "ping_refusals": self.ping_refusals,
        }


@dataclass
class QrpUpdatePlan:
    """Ultrapeer neighbours due a QRP update, with what each last got, and our merged table."""

    merged: str
    due: list[tuple[PeerRouting, str | None]]


#: `_route_reply` outcomes for a reply that answers nothing we routed.
_UNSOLICITED = frozenset({"no-route", "reply-to-sender"})


class PendingQrp:
    """One QRP message on its way through `Router.process_qrp` / `commit_qrp`."""

    __slots__ = ("body", "decision", "error", "info", "now", "table")

    def __init__(
        self,
        info: PeerRouting,
        body: RouteTableReset | RouteTablePatch,
        now: float,
        decision: Decision,
    ) -> None:
        self.info = info
        self.body = body
        self.now = now
        self.decision = decision
        #: The table the message completed, to install.
        self.table: QrpTable | None = None
        #: An unexpected exception applying it (a bug): the caller logs it.
        self.error: Exception | None = None


class Router:
    """The routing state of one router: route tables, pong cache, per-peer ping
    budgets, and what each neighbour is (role, QRP table, Hops-Flow).

    Queries flood to ultrapeer (and legacy) neighbours per TTL and reach a
    leaf only when its QRP table says it may match (or, until it has one,
    per `RoutingRules.flood_tableless_leaves`).  The common case stays one
    list comprehension: peers that need no per-query check sit in `_flooded`,
    the others in `_checked`.

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
        self.seen = RouteTable(rules.route_ttl, rules.route_table_max, rules.route_share_max)
        self.push_routes = RouteTable(rules.route_ttl, rules.route_table_max, rules.route_share_max)
        self.pong_cache = PongCache(rules.pong_cache_size)
        self._peers: set[int] = set()
        self._info: dict[int, PeerRouting] = {}
        #: Get every query with TTL left, unchecked.
        self._flooded: set[int] = set()
        #: Need a look per query: leaves with tables, Hops-Flow, ultrapeers with tables.
        self._checked: dict[int, PeerRouting] = {}
        #: `_flooded` minus the sender, per sender: built once per change of
        #: the neighbour set instead of once per query.
        self._flood_targets: dict[int, tuple[int, ...]] = {}
        self._ping_budgets: dict[int, TokenBucket] = {}
        self._last_ping_forward = float("-inf")
        self._merged: str | None = None  # union of the leaves' tables, for our ultrapeers
        self.qrp_errors = 0
        #: Peers cut off for crossing a limit, by limit ("ping-flood",
        #: "qrp-table-too-large", "qrp-reset-rate", "qrp-update-rate").
        self.cutoffs: dict[str, int] = {}
        #: When set (the router stage does), QRP messages are only queued by
        #: `route()`; the caller applies them outside its lock with
        #: `take_qrp_pending()` / `process_qrp()` / `commit_qrp()`, so a big
        #: table never holds up query routing.  `qrp_deferred` counts the
        #: queued ones, for the caller to notice there is work.
        self.defer_qrp = False
        self.qrp_deferred = 0
        self._qrp_pending: list[PendingQrp] = []

    # -- neighbours ------------------------------------------------------

    @property
    def peers(self) -> frozenset[int]:
        return frozenset(self._peers)

    def peer_info(self, peer_id: int) -> PeerRouting | None:
        return self._info.get(peer_id)

    def peer_joined(
        self,
        peer_id: int,
        role: str = ULTRAPEER,
        *,
        vendor_messages: bool = False,
        up_qrp: bool = False,
    ) -> list[Message]:
        """Record a new neighbour; returns what to send it first (our Messages Supported)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        info = PeerRouting(peer_id, role, vendor_messages=vendor_messages, up_qrp=up_qrp)
        self._peers.add(peer_id)
        self._info[peer_id] = info
        self._classify(info)
        if role == LEAF:
            self._merged = None
        greeting = []
        if vendor_messages:
            info.messages_supported_sent = True
            greeting.append(self.messages_supported())
        return greeting

    def peer_left(self, peer_id: int) -> None:
        # Routes through the departed peer stay until they age out; a lookup
        # that lands on them is dropped as "route-gone", which is what it is.
        self._peers.discard(peer_id)
        self._ping_budgets.pop(peer_id, None)
        info = self._info.pop(peer_id, None)
        self._flood_targets.clear()
        self._flooded.discard(peer_id)
        self._checked.pop(peer_id, None)
        if info is not None and info.leaf:
            self._merged = None

    def _classify(self, info: PeerRouting) -> None:
        """Put a neighbour where per-query routing will find it."""
        peer_id = info.id
        self._flood_targets.clear()
        self._flooded.discard(peer_id)
        self._checked.pop(peer_id, None)
        if peer_id not in self._peers:
            return
        limited = info.hops_flow < NO_HOPS_FLOW
        if info.leaf:
            if info.table is not None or limited:
                self._checked[peer_id] = info
            elif self.rules.flood_tableless_leaves:
                self._flooded.add(peer_id)
        elif limited or info.table is not None:
            self._checked[peer_id] = info
        else:
            self._flooded.add(peer_id)

    def apply_rules(self, rules: RoutingRules) -> None:
        self.rules = rules
        for table in (self.seen, self.push_routes):
            table.max_age = rules.route_ttl
            table.max_entries = rules.route_table_max
            table.max_share = rules.route_share_max
        self.pong_cache.size = rules.pong_cache_size
        for info in self._info.values():
            self._classify(info)
        self._merged = None

    def limit_counters(self) -> dict[str, object]:
        """What the routing limits did: peers cut off, by limit, and routes
        evicted because their peer held more than its share of a table.

        Reads counters only (safe from another thread, as the metrics
        snapshot calls it): no count is brought up to date here.
        """
        return {
            "cutoffs": dict(self.cutoffs),
            "routes_evicted_over_share": self.seen.evicted_over_share,
            "push_routes_evicted_over_share": self.push_routes.evicted_over_share,
        }

    def _cut_off(self, info: PeerRouting, limit: str, code: int, reason: str) -> Decision:
        """A dropped message whose sender is closed with Bye `code` for crossing `limit`."""
        info.closing = True
        self.cutoffs[limit] = self.cutoffs.get(limit, 0) + 1
        decision = _drop(limit)
        decision.close = (code, reason)
        return decision

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys(ROLES, 0)
        for info in self._info.values():
            found[info.role] += 1
        return found

    # -- housekeeping ----------------------------------------------------

    def now(self) -> float:
        """This router's clock, for callers that route a batch at one reading."""
        return self._clock()

    def expire(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        return self.seen.expire(now) + self.push_routes.expire(now)

    def originate_ping(self, ttl: int = 1) -> Message:
        """A ping of our own (keepalive or pong-cache refresh); its pongs stop here."""
        message = Message.from_body(new_guid(), ttl, 0, Ping())
        self.seen.add_if_new((message.guid, PING), LOCAL, self._clock())
        return message

    def messages_supported(self) -> Message:
        return MessagesSupported(SUPPORTED_VENDOR_MESSAGES).message()

    def merged_table(self) -> str:
        """What our leaves may answer, as a table of 2**UP_TABLE_BITS slots.

        A leaf that gets every query (no table yet, `flood_tableless_leaves`)
        makes it a full table: last-hop queries must reach it too.
        """
        if self._merged is None:
            slots = 1 << UP_TABLE_BITS
            leaves = [info for info in self._info.values() if info.leaf]
            if self.rules.flood_tableless_leaves and any(i.table is None for i in leaves):
                self._merged = "1" * slots
            else:
                tables = [i.table for i in leaves if i.table is not None]
                self._merged = merge_tables(tables, UP_TABLE_BITS) if tables else "0" * slots
        return self._merged

    def qrp_updates(self, now: float | None = None) -> list[tuple[Message, list[int]]]:
        """Route-table updates due to ultrapeer neighbours that exchange them.

        A neighbour gets our merged table as soon as it is up, then a patch
        when it changed, at most every `qrp_update_interval` seconds
        (gtk-gnutella settled on 5 minutes: inter-ultrapeer QRP traffic is
        not worth more).  The three steps are public so that a caller with
        a lock holds it only for the first and last (the router stage):
        `plan_qrp_updates()` (who is due, the merged table),
        `build_qrp_updates()` (deflating the patches, pure) and
        `finish_qrp_updates()` (recording what was sent).
        """
        return self.finish_qrp_updates(self.build_qrp_updates(self.plan_qrp_updates(now)))

    def plan_qrp_updates(self, now: float | None = None) -> QrpUpdatePlan:
        now = self._clock() if now is None else now
        due = [
            info
            for info in self._info.values()
            if info.up_qrp
            and not info.leaf
            and (
                info.sent_table is None
                or now - info.sent_table_at >= self.rules.qrp_update_interval
            )
        ]
        if not due:
            return QrpUpdatePlan("", [])
        for info in due:
            info.sent_table_at = now
        return QrpUpdatePlan(self.merged_table(), [(info, info.sent_table) for info in due])

    @staticmethod
    def build_qrp_updates(
        plan: QrpUpdatePlan,
    ) -> list[tuple[PeerRouting, str, list[Message]]]:
        built = []
        for info, sent in plan.due:
            bodies = build_update(sent, plan.merged)
            if bodies:
                messages = [Message.from_body(new_guid(), 1, 0, body) for body in bodies]
                built.append((info, plan.merged, messages))
        return built

    def finish_qrp_updates(
        self, built: list[tuple[PeerRouting, str, list[Message]]]
    ) -> list[tuple[Message, list[int]]]:
        sends: list[tuple[Message, list[int]]] = []
        for info, merged, messages in built:
            if self._info.get(info.id) is not info:
                continue  # gone meanwhile
            info.sent_table = merged
            info.qrp_updates_sent += 1
            sends.extend((message, [info.id]) for message in messages)
        return sends

    # -- routing ---------------------------------------------------------

    def route(
        self, source: int, message: Message, body: object = None, now: float | None = None
    ) -> Decision:
        """Decide what happens to `message`, which arrived from peer `source`.

        `body` is the decoded payload when the caller already has it; the
        router decodes only what it needs otherwise.  `now` (this router's
        clock) lets a caller routing a batch read the clock once.
        """
        kind = message.type
        if kind == QUERY:
            return self._route_query(source, message, self._clock() if now is None else now)
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
            return self._route_qrp(source, message, body)
        if kind in (VENDOR, VENDOR_STANDARD):
            if message.hops != 0 or message.ttl != 1:
                return _drop("vendor-not-hop-by-hop")
            return self._route_vendor(source, message, body)
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
        if message.ttl == 0:
            return _drop("ttl-expired")
        if not self.seen.add_if_new(_seen_key(message.guid, kind), source, now):
            return _drop("duplicate")
        ttl, hops = self._next_ttl(message)
        if ttl <= 0:
            return _drop("ttl-expired")
        targets = [peer for peer in self._peers if peer != source]
        if not targets:
            return Decision("consumed", "no-other-peers")
        return Decision("forwarded", sends=[(message.forwarded(ttl, hops), targets)])

    def _route_query(self, source: int, message: Message, now: float) -> Decision:
        if message.ttl == 0:
            return _drop("ttl-expired")  # before recording: a dead query holds no route
        if not self.seen.add_if_new(message.guid, source, now):  # _seen_key(guid, QUERY)
            return _drop("duplicate")
        ttl, hops = self._next_ttl(message)
        if not self._checked:  # the common case: nobody needs a look
            if ttl <= 0:
                return _drop("ttl-expired")
            flood = self._flood_targets.get(source)
            if flood is None:
                flood = tuple(peer for peer in self._flooded if peer != source)
                self._flood_targets[source] = flood
            if not flood:
                return Decision("consumed", "no-other-peers")
            return Decision("forwarded", sends=[(message.forwarded(ttl, hops), flood)])
        targets = [peer for peer in self._flooded if peer != source] if ttl > 0 else []
        leaves: list[int] = []
        self._checked_targets(source, message, ttl, hops, targets, leaves)
        if not targets and not leaves:
            if ttl <= 0:
                return _drop("ttl-expired")
            return Decision("consumed", "no-other-peers")
        if ttl > 0:
            targets.extend(leaves)
            return Decision("forwarded", sends=[(message.forwarded(ttl, hops), targets)])
        # Expired here, but a leaf is part of this node: it still gets the
        # query, with TTL 1 since no message may travel with TTL 0 (as
        # gtk-gnutella's qrt_route_query does).
        return Decision("forwarded", "to-leaves", sends=[(message.forwarded(1, hops), leaves)])

    def _checked_targets(
        self,
        source: int,
        message: Message,
        ttl: int,
        hops: int,
        targets: list[int],
        leaves: list[int],
    ) -> None:
        """Add the neighbours that need a look (QRP tables, Hops-Flow) and pass it."""
        keys: QueryKeys | None = None
        flood_tableless = self.rules.flood_tableless_leaves
        for peer_id, info in self._checked.items():
            if peer_id == source:
                continue
            if info.leaf:
                if hops >= info.hops_flow:
                    info.withhold("hops-flow")
                    continue
                table = info.table
                if table is None:
                    if flood_tableless and ttl > 0:
                        targets.append(peer_id)
                    continue
                if keys is None:
                    keys = QueryKeys.from_payload(message.payload)
                if table.matches(keys):
                    leaves.append(peer_id)
                    info.queries_sent += 1
                else:
                    info.withhold("qrp-miss")
                continue
            if ttl <= 0:
                continue
            if hops >= info.hops_flow:
                info.withhold("hops-flow")
                continue
            table = info.table
            if ttl == 1 and table is not None:
                # Last hop: the neighbour will only hand it to its leaves.
                if keys is None:
                    keys = QueryKeys.from_payload(message.payload)
                if not table.matches(keys):
                    info.withhold("qrp-miss")
                    continue
            targets.append(peer_id)

    def _route_qrp(self, source: int, message: Message, body: object) -> Decision:
        info = self._info.get(source)
        if info is None:
            return _drop("peer-unknown")
        if info.closing:
            return _drop("closing")
        if not isinstance(body, RouteTableReset | RouteTablePatch):
            try:
                body = decode_qrp(message.payload)
            except ProtocolError as error:
                info.closing = True
                self.qrp_errors += 1
                decision = _drop("qrp-invalid")
                decision.close = (QRP_BYE_CODE, str(error))
                return decision
        assert isinstance(body, RouteTableReset | RouteTablePatch)
        if info.qrp is None:
            info.qrp = QrpReceiver(limits=self.rules.qrp_limits)
        decision = Decision("consumed", "qrp-reset" if isinstance(body, RouteTableReset) else "qrp")
        pending = PendingQrp(info, body, self._clock(), decision)
        if self.defer_qrp:
            self._qrp_pending.append(pending)
            self.qrp_deferred += 1
            return decision
        self.commit_qrp(self.process_qrp([pending]))
        return decision

    def take_qrp_pending(self) -> list[PendingQrp]:
        """The QRP messages `route()` queued (with `defer_qrp`), in arrival order."""
        pending = self._qrp_pending
        self._qrp_pending = []
        return pending

    @staticmethod
    def process_qrp(pending: list[PendingQrp]) -> list[PendingQrp]:
        """Apply queued QRP messages to their peers' receivers: the costly part.

        Touches nothing but each peer's `QrpReceiver` and the decisions
        (made final here: "qrp-table" when a table completes, a drop with a
        close when a message breaks the protocol or a limit), so it runs
        outside the routing lock; calls must not overlap each other (they
        would interleave one peer's sequence).  Returns what
        `commit_qrp()` needs.
        """
        failed: set[int] = set()
        for item in pending:
            info, decision = item.info, item.decision
            receiver = info.qrp
            if info.closing or info.id in failed or receiver is None:
                decision.action, decision.reason = "dropped", "closing"
                continue
            try:
                installed = receiver.handle(item.body, item.now)
            except QrpError as error:
                failed.add(info.id)
                decision.action = "dropped"
                decision.reason = error.limit if isinstance(error, QrpLimitError) else "qrp-invalid"
                decision.close = (QRP_BYE_CODE, str(error))
                continue
            except Exception as error:  # a bug: it costs this peer only
                failed.add(info.id)
                item.error = error
                decision.action, decision.reason = "dropped", "qrp-error"
                decision.close = (500, "Internal error applying a QRP update")
                continue
            if installed and receiver.table is not None:
                decision.reason = "qrp-table"
                item.table = receiver.table
                if info.leaf:
                    # The merge for our ultrapeers reads this fold: make it
                    # here rather than under the lock.
                    item.table.folded_mask(UP_TABLE_BITS)
        return pending

    def commit_qrp(self, processed: list[PendingQrp]) -> None:
        """Install what `process_qrp()` completed (under the routing lock: cheap)."""
        for item in processed:
            info, decision = item.info, item.decision
            if decision.close is not None:
                self.qrp_errors += 1
                info.closing = True
                if decision.reason not in ("qrp-invalid", "qrp-error", None):
                    self.cutoffs[decision.reason] = self.cutoffs.get(decision.reason, 0) + 1
            elif item.table is not None and self._info.get(info.id) is info:
                info.table = item.table
                self._classify(info)
                if info.leaf:
                    self._merged = None

    def _route_vendor(self, source: int, message: Message, body: object) -> Decision:
        info = self._info.get(source)
        if info is None:
            return _drop("peer-unknown")
        vendor_message = body if isinstance(body, VendorMessage) else message.body()
        if not isinstance(vendor_message, VendorMessage):
            return _drop("vendor-malformed")
        key = (vendor_message.vendor, vendor_message.selector, vendor_message.version)
        info.count_vendor_message(vendor_label(*key))
        if key[:2] == MESSAGES_SUPPORTED[:2]:
            try:
                supported = MessagesSupported.decode(vendor_message.data)
            except ProtocolError:
                return _drop("vendor-malformed")
            info.supported_vendor_messages = tuple(vendor_label(*item) for item in supported.items)
            if info.messages_supported_sent:
                return Decision("consumed", "messages-supported")
            # They speak vendor messages without having said so: answer once.
            info.messages_supported_sent = True
            return Decision("answered", sends=[(self.messages_supported(), [source])])
        if key[:2] == HOPS_FLOW[:2]:
            try:
                hops = decode_hops_flow(vendor_message.data)
            except ProtocolError:
                return _drop("vendor-malformed")
            info.hops_flow = hops
            self._classify(info)
            return Decision("consumed", "hops-flow")
        # Unknown to us: ignored, never forwarded, and no reason to close the link.
        return Decision("consumed", "vendor-ignored")

    def _route_ping(self, source: int, message: Message) -> Decision:
        rules = self.rules
        if rules.ping_mode == "flood":
            return self._flood(source, message, PING)
        now = self._clock()
        # The budget first: a refused ping must leave no trace in the route
        # table, or one peer's flood of fresh GUIDs fills it (and evicts
        # everyone's routes) without ever being answered.
        budget = self._ping_budgets.get(source)
        if budget is None:
            budget = TokenBucket(rules.ping_rate_per_peer, rules.ping_burst_per_peer, now)
            self._ping_budgets[source] = budget
        if not budget.take(now):
            return self._ping_refused(source, now)
        if not self.seen.add_if_new((message.guid, PING), source, now):
            return _drop("duplicate")
        reply_ttl = message.hops + 1
        to_source = [source]
        own = Message.from_body(message.guid, reply_ttl, 0, self._own_pong())
        replies: list[tuple[Message, Sequence[int]]] = [(own, to_source)]
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

    def _ping_refused(self, source: int, now: float) -> Decision:
        """A ping over budget; past `ping_flood_refusals` in a window, the peer is cut off."""
        info = self._info.get(source)
        if info is None or info.closing:
            return _drop("ping-rate")
        rules = self.rules
        if now - info.ping_refusals_since > rules.ping_flood_window:
            info.ping_refusals_since = now
            info.ping_refusals = 0
        info.ping_refusals += 1
        if info.ping_refusals <= rules.ping_flood_refusals or not rules.ping_flood_refusals:
            return _drop("ping-rate")
        return self._cut_off(
            info,
            "ping-flood",
            FLOOD_BYE_CODE,
            f"Ping flood: {info.ping_refusals} pings over the rate limit "
            f"({rules.ping_rate_per_peer:g}/s) within {rules.ping_flood_window:g}s",
        )

    def _route_reply(self, source: int, message: Message, request_kind: int) -> Decision:
        target = self.seen.lookup(_seen_key(message.guid, request_kind), self._clock())
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
        decision = self._route_reply(source, message, PING)
        if decision.reason in _UNSOLICITED:
            # Not an answer to any ping we saw: neither the pong cache nor
            # the host cache takes it (both are shared by every peer).
            return decision
        self.pong_cache.add(pong, message.hops + 1, source, self._clock())
        if pong.port and pong.ip != "0.0.0.0":
            decision.learned_hosts = [(pong.ip, pong.port)]
        return decision

    def _route_query_hit(self, source: int, message: Message, body: object) -> Decision:
        decision = self._route_reply(source, message, QUERY)
        if decision.reason in _UNSOLICITED:
            return decision  # answers no query we saw: it teaches no push route
        servent_id = (
            body.servent_id
            if isinstance(body, QueryHit)
            else QueryHit.servent_id_of(message.payload)
        )
        self.push_routes.set(servent_id, source, self._clock())
        return decision

    def _route_push(self, source: int, message: Message, body: object) -> Decision:
        push = body if isinstance(body, Push) else message.body()
        assert isinstance(push, Push)
        now = self._clock()
        # Only a push we can route is recorded: one with an unknown servent
        # ID would otherwise cost a route-table entry per fresh GUID.
        target = self.push_routes.lookup(push.servent_id, now)
        if target is None:
            return _drop("no-push-route")
        if not self.seen.add_if_new((message.guid, PUSH), source, now):
            return _drop("duplicate")
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
