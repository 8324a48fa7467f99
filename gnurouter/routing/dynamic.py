"""Dynamic querying for our leaves' queries, free of I/O (gtk-gnutella's src/core/dq.c).

A leaf relies on its ultrapeer to query the network for it a little at a
time: a leaf's query is never flooded to every ultrapeer at the leaf's TTL.
It goes first to the leaves whose QRP tables match, then as a *probe* to a
few ultrapeer neighbours at a low TTL; then, one ultrapeer per round, to the
others, each time at the TTL the results so far call for (few results: a
high TTL; many: a low one), until the leaf has enough results, the
estimated horizon is reached, no ultrapeer is left, or the query's lifetime
runs out.  Hits are counted as they are routed back to the leaf; a leaf
that speaks the Query Status vendor messages is asked how many results it
*kept* every few ultrapeers, and its answer (or its "stop") steers the rest.

The constants are gtk-gnutella's (its names in brackets).  What one leaf or
all leaves may have in flight is bounded, and a query's state goes as soon
as the query ends: only its summary stays, in a bounded list for the
metrics, and the leaf's totals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gnurouter.protocol.messages import Message
from gnurouter.protocol.vendor import STOP_QUERY, query_status_request

#: Ultrapeers the probe goes to [DQ_PROBE_UP].
PROBE_ULTRAPEERS = 3
#: Highest TTL of the probe.  gtk-gnutella probes at the leaf's TTL less one
#: or two when many ultrapeers may match; LimeWire probes at 2 at most (1
#: for popular content), which keeps the probe's horizon small whatever TTL
#: the leaf chose: we do the same.
PROBE_MAX_TTL = 2
#: Highest TTL any round uses [DQ_MAX_TTL].
MAX_TTL = 5
#: Seconds between rounds [DQ_QUERY_TIMEOUT], and the least it comes down to
#: for rare content [DQ_MIN_TIMEOUT, DQ_TIMEOUT_ADJUST].
ROUND_INTERVAL = 3.7
MIN_ROUND_INTERVAL = 1.5
ROUND_INTERVAL_STEP = 0.1
#: The wait after the probe, per ultrapeer probed, in round intervals: the
#: probe's results tell how popular the query is, so they get a round and
#: 1.5 s more each [DQ_PROBE_TIMEOUT + DQ_QUERY_TIMEOUT] (a ratio, so that a
#: shorter configured interval shortens it too).
PROBE_WAIT_ROUNDS = (1.5 + ROUND_INTERVAL) / ROUND_INTERVAL
#: A query is dropped after this long, whatever happens [DQ_MAX_LIFETIME].
LIFETIME = 600.0
#: Stop once the estimated horizon reaches this many ultrapeers [DQ_MAX_HORIZON].
MAX_HORIZON = 500_000
#: Past this horizon, few results shorten the wait between rounds
#: [DQ_MIN_HORIZON, DQ_LOW_RESULTS].
MIN_HORIZON = 3000
LOW_RESULTS = 10
#: Results wanted for a leaf [DQ_LEAF_RESULTS]; a SHA1 query wants 25 times
#: fewer [DQ_SHA1_DECIMATOR].
LEAF_RESULTS = 50
SHA1_DECIMATOR = 25
#: Results seen (kept or not) that end a query anyway: the leaf is assumed
#: to keep at least 5% of them [DQ_PERCENT_KEPT].
PERCENT_KEPT = 5
#: A leaf's "kept" counts the results of all its ultrapeers: ours is taken
#: as a third of it [DQ_AVG_ULTRA_NODES].
ULTRAPEERS_PER_LEAF = 3
#: Ask for guidance after every this many ultrapeers queried [DQ_STAT_THRESHOLD].
STATUS_EVERY = 3
#: Seconds to wait for a Query Status Response [DQ_STATUS_TIMEOUT]; after
#: this many unanswered ones the leaf is no longer asked [DQ_MAX_STAT_TIMEOUT].
STATUS_TIMEOUT = 40.0
MAX_STATUS_TIMEOUTS = 2
#: Each hop loses a fifth of the theoretical horizon (cycles, flow control)
#: [DQ_FUZZY_FACTOR]; degrees above 50 count as 50 [MAX_DEGREE].
FUZZY_FACTOR = 0.80
MAX_DEGREE = 50
#: Queries in flight per leaf and in all: a leaf's oldest query ends when it
#: starts one more (real leaves run a handful of searches at once).
MAX_QUERIES_PER_LEAF = 16
MAX_QUERIES = 10_000
#: Finished queries whose summary the metrics keep.
RECENT_KEPT = 32
#: What a neighbour is assumed to advertise when it says nothing (LimeWire's
#: defaults for a missing X-Degree / X-Max-TTL).
DEFAULT_DEGREE = 6
DEFAULT_MAX_TTL = 4


def horizon(degree: int, ttl: int) -> int:
    """Ultrapeers a query sent at `ttl` to a neighbour of `degree` may reach.

    sum((degree - 1) ** i for i < ttl), less a fifth per hop beyond the first.
    """
    fanout = min(max(degree, 1), MAX_DEGREE) - 1
    hops = min(max(ttl, 1), MAX_TTL)
    return int(sum(fanout**i for i in range(hops)) * FUZZY_FACTOR ** (hops - 1))


@dataclass(frozen=True, slots=True)
class Candidate:
    """An ultrapeer neighbour a round may query: what routing knows of it now.

    `matches` is its last-hop QRP verdict for the query, None when it sent
    no table (then it may route anything).
    """

    peer_id: int
    degree: int
    max_ttl: int
    matches: bool | None


@dataclass
class DynamicQuery:
    """One leaf query being run: what was sent where, and what came back."""

    guid: bytes
    leaf: int
    message: Message
    ttl: int
    started: float
    max_results: int
    leaf_guided: bool
    #: Ultrapeers sent the query, and the TTL each got (in order).
    queried: dict[int, int] = field(default_factory=dict)
    horizon: int = 0
    rounds: int = 0
    results: int = 0
    #: Results since the last Query Status Response.
    new_results: int = 0
    #: What the leaf last said it kept (of all its ultrapeers' results).
    kept: int = 0
    guided: bool = False
    waiting_status: bool = False
    status_timeouts: int = 0
    #: `len(queried)` when the leaf last told us what it kept.
    queried_at_status: int = 0
    interval: float = ROUND_INTERVAL
    #: When the next round (or the end of a wait for status) is due.
    next_at: float = 0.0

    @property
    def finish_results(self) -> int:
        return self.max_results * 100 // PERCENT_KEPT

    def kept_results(self) -> int:
        """Our share of what the leaf has: its word when it gave it, else the hits we routed."""
        if self.guided:
            return self.kept // ULTRAPEERS_PER_LEAF + self.new_results
        return self.results

    def summary(self, now: float, outcome: str) -> dict[str, object]:
        return {
            "leaf": self.leaf,
            "guid": self.guid.hex(),
            "outcome": outcome,
            "rounds": self.rounds,
            "ultrapeers": len(self.queried),
            "ttls": list(self.queried.values()),
            "horizon": self.horizon,
            "hits": self.results,
            "kept": self.kept if self.guided else None,
            "seconds": round(now - self.started, 3),
        }


@dataclass
class LeafTotals:
    queries: int = 0
    ultrapeers: int = 0
    hits: int = 0
    status_requests: int = 0
    status_responses: int = 0


Send = tuple[Message, Sequence[int]]


class DynamicQuerying:
    """Every leaf query in flight, by GUID; driven by the router under its lock."""

    def __init__(
        self,
        *,
        probe_ultrapeers: int = PROBE_ULTRAPEERS,
        round_interval: float = ROUND_INTERVAL,
        lifetime: float = LIFETIME,
        max_queries_per_leaf: int = MAX_QUERIES_PER_LEAF,
        max_queries: int = MAX_QUERIES,
    ) -> None:
        self.probe_ultrapeers = probe_ultrapeers
        self.round_interval = round_interval
        self.lifetime = lifetime
        self.max_queries_per_leaf = max_queries_per_leaf
        self.max_queries = max_queries
        self.active: dict[bytes, DynamicQuery] = {}
        self._by_leaf: dict[int, dict[bytes, None]] = {}
        self.leaves: dict[int, LeafTotals] = {}
        self.recent: deque[dict[str, object]] = deque(maxlen=RECENT_KEPT)
        #: Queries ended, by why ("enough", "horizon", "no-ultrapeers", ...).
        self.outcomes: dict[str, int] = {}
        self.launched = 0
        self.messages_sent = 0

    def __len__(self) -> int:
        return len(self.active)

    # -- starting ------------------------------------------------------------

    def launch(
        self,
        leaf: int,
        message: Message,
        *,
        sha1: bool,
        leaf_guided: bool,
        now: float,
        candidates: Sequence[Candidate],
    ) -> list[Send]:
        """Start running `message` (hops 0, from `leaf`); returns the probe to send."""
        mine = self._by_leaf.setdefault(leaf, {})
        while len(mine) >= self.max_queries_per_leaf:
            self.end(self.active[next(iter(mine))], now, "displaced")
        while len(self.active) >= self.max_queries:
            self.end(next(iter(self.active.values())), now, "displaced")
        wanted = LEAF_RESULTS // SHA1_DECIMATOR if sha1 else LEAF_RESULTS
        query = DynamicQuery(
            guid=message.guid,
            leaf=leaf,
            message=message,
            ttl=max(1, min(message.ttl, MAX_TTL)),
            started=now,
            max_results=wanted,
            leaf_guided=leaf_guided,
            interval=self.round_interval,
        )
        self.active[query.guid] = query
        mine[query.guid] = None
        self.launched += 1
        self.leaves.setdefault(leaf, LeafTotals()).queries += 1
        return self._probe(query, now, candidates)

    def _probe(
        self, query: DynamicQuery, now: float, candidates: Sequence[Candidate]
    ) -> list[Send]:
        # Ultrapeers that may hold it (or whose leaves may): a last-hop match
        # or no table at all.
        able = [c for c in candidates if c.matches is not False]
        if not able:
            # Nothing matches anywhere near: rare content, go round by round.
            return self.advance(query, now, candidates)
        ttl = min(query.ttl, PROBE_MAX_TTL)
        # Many ultrapeers able to answer: the content is common (dq.c).
        if len(able) > 6 * self.probe_ultrapeers:
            ttl -= 1
        if len(able) > 3 * self.probe_ultrapeers:
            ttl -= 1
        ttl = max(ttl, 1)
        probed = able[: self.probe_ultrapeers]
        sends = [self._send(query, c, min(ttl, c.max_ttl)) for c in probed]
        query.rounds = 1
        query.next_at = now + len(probed) * PROBE_WAIT_ROUNDS * query.interval
        return sends

    def _send(self, query: DynamicQuery, candidate: Candidate, ttl: int) -> Send:
        query.queried[candidate.peer_id] = ttl
        query.horizon += horizon(candidate.degree, ttl)
        self.messages_sent += 1
        self.leaves[query.leaf].ultrapeers += 1
        return query.message.forwarded(ttl, 1), (candidate.peer_id,)

    # -- what comes back ---------------------------------------------------------

    def hits(self, guid: bytes, leaf: int, count: int) -> None:
        """`count` results routed back to `leaf` for the query `guid` (if we run it)."""
        query = self.active.get(guid)
        if query is None or query.leaf != leaf:
            return
        query.results += count
        query.new_results += count
        self.leaves[leaf].hits += count

    def status(self, guid: bytes, leaf: int, kept: int, now: float) -> DynamicQuery | None:
        """The leaf's Query Status Response; returns the query when a round is due now."""
        query = self.active.get(guid)
        if query is None or query.leaf != leaf:
            return None  # not a query of this leaf's: a neighbour's word on others' is ignored
        self.leaves[leaf].status_responses += 1
        if kept == STOP_QUERY:
            self.end(query, now, "stopped-by-leaf")
            return None
        query.kept = kept
        query.guided = query.leaf_guided = True
        query.queried_at_status = len(query.queried)
        query.new_results = 0
        if query.waiting_status:
            query.waiting_status = False
            query.next_at = now
            return query
        return None

    # -- rounds ------------------------------------------------------------------

    def due(self, now: float) -> list[DynamicQuery]:
        """Queries whose next step is due (the lifetime is checked here too)."""
        due = []
        for query in list(self.active.values()):
            if now - query.started >= self.lifetime:
                self.end(query, now, "lifetime")
            elif now >= query.next_at:
                due.append(query)
        return due

    def advance(
        self, query: DynamicQuery, now: float, candidates: Sequence[Candidate]
    ) -> list[Send]:
        """The query's next step: one more ultrapeer, a status request, or its end."""
        timed_out = query.waiting_status
        if timed_out:
            # No answer in time: go on without one; a leaf that never answers is not asked again.
            query.waiting_status = False
            query.status_timeouts += 1
            if not query.guided and query.status_timeouts >= MAX_STATUS_TIMEOUTS:
                query.leaf_guided = False
        results = query.kept_results()
        if query.horizon >= MAX_HORIZON:
            return self.end(query, now, "horizon")
        if results >= query.max_results or query.results > query.finish_results:
            return self.end(query, now, "enough")
        if not timed_out and self._wants_status(query):
            query.waiting_status = True
            query.next_at = now + STATUS_TIMEOUT
            self.leaves[query.leaf].status_requests += 1
            self.messages_sent += 1
            return [(query_status_request(query.guid), (query.leaf,))]
        fresh = [c for c in candidates if c.peer_id not in query.queried]
        # Ultrapeers that may match first (dq.c sorts by queue size, then match).
        fresh.sort(key=lambda c: c.matches is False)
        for candidate in fresh:
            ttl = self._ttl(query, candidate, len(fresh))
            if ttl == 1 and candidate.matches is False:
                continue  # last hop only, and nothing of its would answer
            send = self._send(query, candidate, ttl)
            query.rounds += 1
            if query.horizon > MIN_HORIZON and results < LOW_RESULTS * query.horizon / MIN_HORIZON:
                # Rare content: do not make the leaf wait as long.
                query.interval = max(MIN_ROUND_INTERVAL, query.interval - ROUND_INTERVAL_STEP)
            query.next_at = now + query.interval
            return [send]
        return self.end(query, now, "no-ultrapeers")

    def _wants_status(self, query: DynamicQuery) -> bool:
        return (
            query.leaf_guided
            and len(query.queried) - query.queried_at_status >= STATUS_EVERY
            and query.rounds > 0
        )

    @staticmethod
    def _ttl(query: DynamicQuery, candidate: Candidate, connections: int) -> int:
        """The TTL that reaches the hosts the missing results need, split over the
        ultrapeers left; rounded down to stay conservative (dq_select_ttl)."""
        highest = max(1, min(candidate.max_ttl, query.ttl))
        needed = query.max_results - query.kept_results()
        per_ultrapeer = query.results / max(query.horizon, 1)
        hosts_per_connection = needed / max(per_ultrapeer, 1e-6) / connections
        for ttl in range(highest, 0, -1):
            if horizon(candidate.degree, ttl) <= hosts_per_connection:
                return ttl
        return highest

    # -- ending ----------------------------------------------------------------------

    def end(self, query: DynamicQuery, now: float, outcome: str) -> list[Send]:
        """Forget a query (its summary stays in `recent`); returns no sends."""
        if self.active.pop(query.guid, None) is None:
            return []
        mine = self._by_leaf.get(query.leaf)
        if mine is not None:
            mine.pop(query.guid, None)
            if not mine:
                del self._by_leaf[query.leaf]
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.recent.append(query.summary(now, outcome))
        return []

    def leaf_left(self, leaf: int, now: float) -> None:
        for guid in list(self._by_leaf.get(leaf, ())):
            self.end(self.active[guid], now, "leaf-gone")
        self.leaves.pop(leaf, None)

    def queries_of(self, leaf: int) -> Iterable[DynamicQuery]:
        return (self.active[guid] for guid in self._by_leaf.get(leaf, ()))

    def snapshot(self) -> dict[str, object]:
        return {
            "active": len(self.active),
            "launched": self.launched,
            "messages_sent": self.messages_sent,
            "outcomes": dict(self.outcomes),
            "recent": list(self.recent),
            "leaves": {
                str(leaf): {
                    "queries": totals.queries,
                    "ultrapeers_queried": totals.ultrapeers,
                    "hits": totals.hits,
                    "status_requests": totals.status_requests,
                    "status_responses": totals.status_responses,
                }
                # Copied at C speed first: the metrics read this from another thread.
                for leaf, totals in list(self.leaves.items())
            },
        }
