"""The router: one routing decision per message, free of I/O.

Routing decisions, free of I/O: which neighbours a message goes to, or why it goes nowhere.

The rules follow the Gnutella 0.6 draft and what gtk-gnutella enforces, and
fix the original Sandstorm router's mistakes: an expired TTL is never
forwarded, hops + TTL is clamped, duplicates are keyed by (GUID, type) so a
query and a ping that share a GUID do not shadow each other, and routes expire
one by one by age instead of the whole table being wiped every 30 seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.messages import (
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
    decode_qrp,
    new_guid,
)
from gnurouter.protocol.qrp import (
    QRP_BYE_CODE,
    UP_TABLE_BITS,
    QrpError,
    QrpLimitError,
    QrpReceiver,
    QueryKeys,
    build_update,
)
from gnurouter.protocol.vendor import (
    HOPS_FLOW,
    MESSAGES_SUPPORTED,
    QUERY_STATUS_REQUEST,
    QUERY_STATUS_RESPONSE,
    MessagesSupported,
    decode_hops_flow,
    decode_query_status,
    vendor_label,
)
from gnurouter.routing.decisions import Decision, RoutingRules, _drop
from gnurouter.routing.dynamic import (
    DEFAULT_DEGREE,
    DEFAULT_MAX_TTL,
    Candidate,
    DynamicQuerying,
)
from gnurouter.routing.hopsflow import HopsFlowController, HopsFlowPolicy
from gnurouter.routing.neighbours import (
    _UNSOLICITED,
    NO_HOPS_FLOW,
    MergedTable,
    PeerRouting,
    PendingQrp,
    QrpUpdatePlan,
)
from gnurouter.routing.roles import LEAF, LOCAL, ROLES, ULTRAPEER
from gnurouter.routing.tables import PongCache, RouteTable, TokenBucket, _seen_key

#: The vendor messages we answer, listed in our Messages Supported: leaves
#: answer Query Status Requests only from ultrapeers that list them.
SUPPORTED_VENDOR_MESSAGES = (HOPS_FLOW, QUERY_STATUS_REQUEST, QUERY_STATUS_RESPONSE)

#: The GGEP extension a pong carries when its host is an ultrapeer.
GGEP_ULTRAPEER = "UP"

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
        self._leaves: set[int] = set()
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
        #: The leaves' tables, merged one change at a time (what `_merged` is made of).
        self._leaf_tables = MergedTable(UP_TABLE_BITS)
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
        #: Our leaves' queries, run a few ultrapeers at a time.
        self.dynamic = DynamicQuerying(
            probe_ultrapeers=rules.dq_probe_ultrapeers,
            round_interval=rules.dq_round_interval,
            lifetime=rules.dq_lifetime,
        )
        #: What each ultrapeer neighbour advertised: (X-Degree, X-Max-TTL).
        self._advertised: dict[int, tuple[int, int]] = {}
        #: Leaves with no QRP table (and no flood for them): since when, and
        #: their routing, for the queries that end here (see `_last_hop_leaves`).
        self._tableless_since: dict[int, float] = {}
        self._last_hop_only: dict[int, PeerRouting] = {}
        #: The Hops-Flow limits we asked of our neighbours (the router stage drives it).
        self.hops_flow = HopsFlowController(HopsFlowPolicy())
        #: Queries received per neighbour since the caller last took them
        #: (`take_query_sources`): who feeds us most, for Hops-Flow.
        self.query_sources: dict[int, int] = {}

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
        degree: int | None = None,
        max_ttl: int | None = None,
    ) -> list[Message]:
        """Record a new neighbour; returns what to send it first (our Messages Supported).

        `degree` and `max_ttl` are what an ultrapeer advertised (X-Degree,
        X-Max-TTL), for dynamic querying's horizon estimates.
        """
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        info = PeerRouting(peer_id, role, vendor_messages=vendor_messages, up_qrp=up_qrp)
        self._peers.add(peer_id)
        self._info[peer_id] = info
        if role == LEAF:
            self._leaves.add(peer_id)
            self._tableless_since[peer_id] = self._clock()
        else:
            self._advertised[peer_id] = (
                degree if degree is not None else DEFAULT_DEGREE,
                max_ttl if max_ttl is not None else DEFAULT_MAX_TTL,
            )
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
        self._leaves.discard(peer_id)
        self._ping_budgets.pop(peer_id, None)
        info = self._info.pop(peer_id, None)
        self._flood_targets.clear()
        self._flooded.discard(peer_id)
        self._checked.pop(peer_id, None)
        self._last_hop_only.pop(peer_id, None)
        self._tableless_since.pop(peer_id, None)
        self._advertised.pop(peer_id, None)
        self.query_sources.pop(peer_id, None)
        if info is not None and info.leaf:
            self._merged = None
            self._leaf_tables.remove(peer_id)
            self.dynamic.leaf_left(peer_id, self._clock())

    def _classify(self, info: PeerRouting) -> None:
        """Put a neighbour where per-query routing will find it."""
        peer_id = info.id
        self._flood_targets.clear()
        self._flooded.discard(peer_id)
        self._checked.pop(peer_id, None)
        self._last_hop_only.pop(peer_id, None)
        if peer_id not in self._peers:
            return
        limited = info.hops_flow < NO_HOPS_FLOW
        if info.leaf:
            if info.table is not None:
                self._tableless_since.pop(peer_id, None)
                self._checked[peer_id] = info
            elif not self.rules.flood_tableless_leaves:
                # Its table is on its way, or lost: not every query meanwhile
                # (see `_last_hop_leaves`).
                self._tableless_since.setdefault(peer_id, self._clock())
                self._last_hop_only[peer_id] = info
            elif limited:
                self._checked[peer_id] = info
            else:
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
        self.dynamic.probe_ultrapeers = rules.dq_probe_ultrapeers
        self.dynamic.round_interval = rules.dq_round_interval
        self.dynamic.lifetime = rules.dq_lifetime
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

    def leaves_without_table(self) -> int:
        """Leaves that have sent no complete QRP table (yet, or ever)."""
        return sum(1 for info in list(self._info.values()) if info.leaf and info.table is None)

    def take_query_sources(self) -> dict[int, int]:
        """Queries received per neighbour since the last call (and start counting anew)."""
        sources, self.query_sources = self.query_sources, {}
        return sources

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
                self._merged = self._leaf_tables.bits()
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
            return self._route_query(source, message, self._clock() if now is None else now, body)
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
        targets = self._ping_targets(source)
        if not targets:
            return Decision("consumed", "no-other-peers")
        return Decision("forwarded", sends=[(message.forwarded(ttl, hops), targets)])

    def _ping_targets(self, source: int) -> list[int]:
        """Where a relayed ping goes: ultrapeers only, as gtk-gnutella does (a
        leaf is no hub: it answers for itself, through our keepalives)."""
        leaves = self._leaves
        return [peer for peer in self._peers if peer != source and peer not in leaves]

    def _route_query(
        self, source: int, message: Message, now: float, body: object = None
    ) -> Decision:
        if message.ttl == 0:
            return _drop("ttl-expired")  # before recording: a dead query holds no route
        if not self.seen.add_if_new(message.guid, source, now):  # _seen_key(guid, QUERY)
            return _drop("duplicate")
        sources = self.query_sources
        sources[source] = sources.get(source, 0) + 1
        if message.hops == 0 and source in self._leaves and self.rules.dynamic_querying:
            return self._launch_dynamic(source, message, now, body)
        ttl, hops = self._next_ttl(message)
        if not self._checked:  # the common case: nobody needs a look
            if ttl <= 0:
                if self._last_hop_only:
                    return self._to_leaves(message, hops, self._last_hop_leaves(source, hops, now))
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
        if ttl <= 0 and self._last_hop_only:
            leaves.extend(self._last_hop_leaves(source, hops, now))
        if not targets and not leaves:
            if ttl <= 0:
                return _drop("ttl-expired")
            return Decision("consumed", "no-other-peers")
        if ttl > 0:
            targets.extend(leaves)
            return Decision("forwarded", sends=[(message.forwarded(ttl, hops), targets)])
        return self._to_leaves(message, hops, leaves)

    @staticmethod
    def _to_leaves(message: Message, hops: int, leaves: list[int]) -> Decision:
        """A query whose TTL is spent here, for leaves only."""
        if not leaves:
            return _drop("ttl-expired")
        # A leaf is part of this node: it still gets the query, with TTL 1
        # since no message may travel with TTL 0 (as gtk-gnutella's
        # qrt_route_query does).
        return Decision("forwarded", "to-leaves", sends=[(message.forwarded(1, hops), leaves)])

    def _last_hop_leaves(self, source: int, hops: int, now: float) -> list[int]:
        """Leaves without a QRP table that get a query ending here.

        Not every query (a leaf whose table was lost would get the whole
        flood: issue 19 measured 76% of leaves reached instead of 1%), and
        nothing during `tableless_leaf_grace` after it joined (its table is
        on its way), but a query at its last hop: it would go nowhere else.
        """
        grace = self.rules.tableless_leaf_grace
        since = self._tableless_since
        return [
            peer_id
            for peer_id, info in self._last_hop_only.items()
            if peer_id != source
            and now - since.get(peer_id, now) >= grace
            and hops < info.hops_flow
        ]

    # -- dynamic querying ------------------------------------------------------

    def _launch_dynamic(self, source: int, message: Message, now: float, body: object) -> Decision:
        """A leaf's own query: to the matching leaves now, to the ultrapeers a few at a time."""
        ttl, hops = self._next_ttl(message)
        ultrapeers: list[int] = []
        leaves: list[int] = []
        # TTL 0 here: `_checked_targets` picks only leaves (by QRP), as dq.c's dq_sendto_leaves.
        self._checked_targets(source, message, 0, hops, ultrapeers, leaves)
        leaves.extend(p for p in self._flooded if p != source and p in self._leaves)
        sends: list[tuple[Message, Sequence[int]]] = []
        if leaves:
            sends.append((message.forwarded(max(ttl, 1), hops), leaves))
        query = body if isinstance(body, Query) else Query.decode(message.payload)
        keys = QueryKeys.from_payload(message.payload)
        sends.extend(
            self.dynamic.launch(
                source,
                message,
                sha1=bool(keys.urns),
                leaf_guided=query.leaf_guided or self._speaks_guidance(source),
                now=now,
                candidates=self._candidates(source, keys),
            )
        )
        if not sends:
            return Decision("consumed", "no-other-peers")
        return Decision("forwarded", "dynamic-query", sends=sends)

    def _speaks_guidance(self, leaf: int) -> bool:
        """Whether the leaf listed Query Status Request in its Messages Supported
        (LimeWire does not flag its queries as leaf-guided, dq.c notes)."""
        info = self._info.get(leaf)
        listed = info.supported_vendor_messages if info is not None else None
        prefix = vendor_label(*QUERY_STATUS_REQUEST).split(" ")[0]
        return bool(listed) and any(label.split(" ")[0] == prefix for label in listed or ())

    def _candidates(self, leaf: int, keys: QueryKeys) -> list[Candidate]:
        """The ultrapeer neighbours a leaf's query may go to now, with their QRP verdicts."""
        found = []
        advertised = self._advertised
        for peer_id, info in list(self._info.items()):
            # Our copy arrives with hops 1: a Hops-Flow of 1 or less refuses it.
            if info.leaf or peer_id == leaf or info.closing or info.hops_flow <= 1:
                continue
            degree, max_ttl = advertised.get(peer_id, (DEFAULT_DEGREE, DEFAULT_MAX_TTL))
            table = info.table
            matches = None if table is None else table.matches(keys)
            found.append(Candidate(peer_id, degree, max_ttl, matches))
        return found

    def dynamic_query_rounds(self, now: float | None = None) -> list[tuple[Message, list[int]]]:
        """The next step of every leaf query that is due one (call it a few times a second)."""
        now = self._clock() if now is None else now
        sends: list[tuple[Message, list[int]]] = []
        for query in self.dynamic.due(now):
            keys = QueryKeys.from_payload(query.message.payload)
            for message, targets in self.dynamic.advance(
                query, now, self._candidates(query.leaf, keys)
            ):
                sends.append((message, list(targets)))
        return sends

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
                    self._leaf_tables.set(info.id, item.table)

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
        if key[:2] == QUERY_STATUS_RESPONSE[:2]:
            return self._query_status(source, message, vendor_message)
        # Unknown to us: ignored, never forwarded, and no reason to close the link.
        return Decision("consumed", "vendor-ignored")

    def _query_status(
        self, source: int, message: Message, vendor_message: VendorMessage
    ) -> Decision:
        """A leaf's word on a query we run for it: results kept, or "stop"."""
        try:
            kept = decode_query_status(vendor_message.data)
        except ProtocolError:
            return _drop("vendor-malformed")
        now = self._clock()
        query = self.dynamic.status(message.guid, source, kept, now)
        if query is None:
            return Decision("consumed", "query-status")
        keys = QueryKeys.from_payload(query.message.payload)
        sends = self.dynamic.advance(query, now, self._candidates(source, keys))
        return Decision("forwarded" if sends else "consumed", "query-status", sends=sends)

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
                now,
                exclude_peer=source,
                limit=rules.pongs_per_ping,
                ultrapeers_only=source in self._leaves,
            ):
                pong = Message.from_body(message.guid, reply_ttl, cached.hops, cached.pong)
                replies.append((pong, to_source))
        decision = Decision("answered", sends=replies)
        # Pong-Caching: answer from the cache, and relay only often enough to
        # keep the cache fresh rather than flooding every ping.
        ttl, hops = self._next_ttl(message)
        if ttl > 0 and now - self._last_ping_forward >= rules.ping_refresh_interval:
            self._last_ping_forward = now
            targets = self._ping_targets(source)
            if targets:
                decision.sends.append((message.forwarded(ttl, hops), targets))
        return decision

    def _ping_refused(self, source: int, now: float) -> Decision:
        """A ping over budget; past `ping_flood_refusals` in a window, the peer is cut off."""
        info = self._info.get(source)
        if info is None or info.closing:
            return _drop("ping-rate")
        rules = self.rules
        refused = info.ping_refusals.refuse(now, rules.ping_flood_window)
        if refused <= rules.ping_flood_refusals or not rules.ping_flood_refusals:
            return _drop("ping-rate")
        return self._cut_off(
            info,
            "ping-flood",
            FLOOD_BYE_CODE,
            f"Ping flood: {refused} pings over the rate limit "
            f"({rules.ping_rate_per_peer:g}/s) within {rules.ping_flood_window:g}s",
        )

    def _route_reply(self, source: int, message: Message, request_kind: int) -> Decision:
        target = self.seen.lookup(_seen_key(message.guid, request_kind), self._clock())
        if target is None:
            return _drop("no-route")
        if target == LOCAL:
            return Decision("consumed", "reply-to-us")
        unroutable = self._unroutable(source, target, message)
        if unroutable is not None:
            return unroutable
        return Decision(
            "routed", sends=[(message.forwarded(message.ttl - 1, message.hops + 1), [target])]
        )

    def _unroutable(self, source: int, target: int, message: Message) -> Decision | None:
        """The drop for a reply or push whose route leads nowhere useful, else None."""
        if target == source:
            return _drop("reply-to-sender")
        if target not in self._peers:
            return _drop("route-gone")
        if message.ttl <= 1:
            return _drop("ttl-expired")
        return None

    def _route_pong(self, source: int, message: Message, body: object) -> Decision:
        pong = body if isinstance(body, Pong) else message.body()
        assert isinstance(pong, Pong)
        decision = self._route_reply(source, message, PING)
        if decision.reason in _UNSOLICITED:
            # Not an answer to any ping we saw: neither the pong cache nor
            # the host cache takes it (both are shared by every peer).
            return decision
        usable = pong.port and pong.ip != "0.0.0.0"
        if usable and message.hops == 0:
            # The neighbour's own pong: where it listens (never dial it while it is here).
            decision.sender_listens_at = (pong.ip, pong.port)
        if source in self._leaves:
            # A leaf is no ultrapeer candidate, and its pong is for no one else.
            return decision
        ultrapeer = message.hops == 0 or any(ext.id == GGEP_ULTRAPEER for ext in pong.ggep)
        self.pong_cache.add(pong, message.hops + 1, source, self._clock(), ultrapeer=ultrapeer)
        if usable:
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
        if self.dynamic.active and decision.sends:
            # A hit for a query we run for a leaf: counted on its way back.
            self.dynamic.hits(message.guid, decision.sends[0][1][0], message.payload[0])
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
        unroutable = self._unroutable(source, target, message)
        if unroutable is not None:
            return unroutable
        ttl, hops = self._next_ttl(message)
        if ttl <= 0:
            return _drop("ttl-expired")
        return Decision("routed", sends=[(message.forwarded(ttl, hops), [target])])
