"""Dynamic querying of our leaves' queries, decision by decision (no sockets, a manual clock)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from gnurouter.protocol.messages import (
    QUERY_F_LEAF_GUIDED,
    QUERY_F_MARK,
    Message,
    VendorMessage,
)
from gnurouter.protocol.vendor import (
    MessagesSupported,
    query_status_response,
)
from gnurouter.routing.dynamic import horizon
from gnurouter.routing.router import Router
from tests.fixtures import (
    ManualClock,
    qrp_messages,
    query,
    query_hit,
    routing_router,
    servent_query,
    targets,
)

LEAF, OTHER_LEAF = 100, 101
ULTRAPEERS = list(range(1, 9))


def network(clock: ManualClock, **rules: Any) -> Router:
    """Eight ultrapeer neighbours (degree 30, max TTL 4) and two leaves."""
    router = routing_router(clock, dq_round_interval=3.7, **rules)
    for peer in ULTRAPEERS:
        router.peer_joined(peer, "ultrapeer", degree=30, max_ttl=4)
    router.peer_joined(LEAF, "leaf", vendor_messages=True)
    router.peer_joined(OTHER_LEAF, "leaf", vendor_messages=True)
    return router


def copies(sends: Iterable[tuple[Message, Sequence[int]]]) -> dict[int, int]:
    """Ultrapeer -> TTL of the copy it was sent."""
    found = {}
    for message, peers in sends:
        for peer in peers:
            if peer in ULTRAPEERS:
                found[peer] = message.ttl
    return found


def hits(router: Router, request: Message, source: int, results: int) -> None:
    for index in range(results):
        decision = router.route(source, query_hit(request.guid, index=index))
        assert targets(decision) == {LEAF}


def run_rounds(
    router: Router, clock: ManualClock, seconds: float
) -> list[tuple[Message, list[int]]]:
    """Every round due within `seconds`, looked at every quarter second as the stage does."""
    sent = []
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.25
        sent.extend(router.dynamic_query_rounds())
    return sent


def test_a_leaf_query_is_probed_at_three_ultrapeers_with_a_low_ttl() -> None:
    clock = ManualClock()
    router = network(clock)
    request = servent_query("free music", ttl=4)
    decision = router.route(LEAF, request)
    assert decision.reason == "dynamic-query"
    probe = copies(decision.sends)
    assert len(probe) == 3
    assert all(ttl <= 2 for ttl in probe.values())
    # The other leaf has no table: not a leaf query's target (nor anyone's) meanwhile.
    assert OTHER_LEAF not in targets(decision)
    assert all(m.hops == 1 for m, _ in decision.sends)


def test_a_leaf_query_reaches_matching_leaves_at_once() -> None:
    clock = ManualClock()
    router = network(clock)
    for message in qrp_messages(["free", "music"]):
        router.route(OTHER_LEAF, message)
    decision = router.route(LEAF, servent_query("free music", ttl=4))
    assert OTHER_LEAF in targets(decision)


def test_a_popular_query_stops_after_the_probe_and_its_state_goes() -> None:
    clock = ManualClock()
    router = network(clock)
    request = servent_query("popular", ttl=4)
    probed = copies(router.route(LEAF, request).sends)
    first = next(iter(probed))
    hits(router, request, first, 60)  # more than the 50 a leaf wants
    later = run_rounds(router, clock, 60)
    assert not copies(later)  # no ultrapeer beyond the probe
    assert len(router.dynamic) == 0
    [summary] = router.dynamic.recent
    assert summary["outcome"] == "enough" and summary["hits"] == 60
    assert summary["ultrapeers"] == 3


def test_a_rare_query_goes_on_one_ultrapeer_per_round_until_none_is_left() -> None:
    clock = ManualClock()
    router = network(clock)
    request = servent_query("rare", ttl=4)
    probed = copies(router.route(LEAF, request).sends)
    # Nothing until the probe's wait is over (3 * (1.5 + 3.7) s).
    assert not copies(run_rounds(router, clock, 15.0))
    reached = dict(probed)
    rounds: list[float] = []
    while len(router.dynamic):
        sent = copies(router.dynamic_query_rounds())
        if sent:
            assert len(sent) == 1  # one more ultrapeer per round
            rounds.append(clock.now)
            reached.update(sent)
        clock.now += 0.25
        assert clock.now < 2000, "the query never ended"
    assert set(reached) == set(ULTRAPEERS)
    # No results at all: the later rounds use the highest TTL the neighbour takes.
    assert max(reached.values()) == 4
    gaps = [b - a for a, b in pairwise(rounds)]
    assert all(gap >= 1.5 for gap in gaps)
    assert router.dynamic.recent[-1]["outcome"] == "no-ultrapeers"


def test_results_lower_the_ttl_of_the_next_rounds() -> None:
    clock = ManualClock()
    router = network(clock)
    request = servent_query("medium", ttl=4)
    probed = copies(router.route(LEAF, request).sends)
    hits(router, request, next(iter(probed)), 30)  # 30 of 50 after a small horizon
    [(message, [peer])] = [s for s in run_rounds(router, clock, 16.0) if copies([s])]
    assert peer not in probed
    assert message.ttl < 4


def test_the_leaf_is_asked_what_it_kept_and_its_answer_ends_the_query() -> None:
    clock = ManualClock()
    router = network(clock)
    router.route(LEAF, MessagesSupported(((b"BEAR", 11, 1), (b"BEAR", 12, 1))).message())
    request = servent_query("guided", ttl=4)
    router.route(LEAF, request)
    # After the probe's three ultrapeers, the next step is a Query Status Request.
    sent = run_rounds(router, clock, 16.0)
    [(asked, [to])] = sent
    assert to == LEAF and asked.guid == request.guid
    vendor = asked.body()
    assert isinstance(vendor, VendorMessage)
    assert (vendor.vendor, vendor.selector, vendor.version) == (b"BEAR", 11, 1)
    # It kept 150: our share (a third) is the 50 it wants.
    decision = router.route(LEAF, query_status_response(request.guid, 150))
    assert not copies(decision.sends)
    assert len(router.dynamic) == 0
    assert router.dynamic.recent[-1]["outcome"] == "enough"


def test_a_guided_leaf_that_kept_little_gets_the_next_round_at_once() -> None:
    clock = ManualClock()
    router = network(clock)
    request = servent_query("guided", ttl=4, hops=0)
    flagged = query("guided", ttl=4, flags=QUERY_F_MARK | QUERY_F_LEAF_GUIDED, guid=request.guid)
    router.route(LEAF, flagged)
    [(asked, _)] = run_rounds(router, clock, 16.0)
    assert asked.guid == request.guid
    decision = router.route(LEAF, query_status_response(request.guid, 3))
    assert len(copies(decision.sends)) == 1


def test_a_stop_from_the_leaf_ends_the_query_and_others_cannot_stop_it() -> None:
    clock = ManualClock()
    router = network(clock)
    request = servent_query("stop me", ttl=4)
    router.route(LEAF, request)
    router.route(OTHER_LEAF, query_status_response(request.guid, 0xFFFF))
    assert len(router.dynamic) == 1  # not its query
    router.route(LEAF, query_status_response(request.guid, 0xFFFF))
    assert len(router.dynamic) == 0
    assert router.dynamic.recent[-1]["outcome"] == "stopped-by-leaf"


def test_a_malformed_query_status_is_dropped() -> None:
    router = network(ManualClock())
    request = servent_query("x", ttl=4)
    router.route(LEAF, request)
    bad = query_status_response(request.guid, 1)
    bad = Message(bad.guid, bad.type, bad.ttl, bad.hops, bad.payload + b"\x00")
    assert router.route(LEAF, bad).reason == "vendor-malformed"


def test_a_departing_leaf_takes_its_queries_state_along() -> None:
    clock = ManualClock()
    router = network(clock)
    for index in range(3):
        router.route(LEAF, servent_query(f"q{index}", ttl=4))
    assert len(router.dynamic) == 3
    router.peer_left(LEAF)
    assert len(router.dynamic) == 0
    assert not run_rounds(router, clock, 30)


def test_state_is_bounded_per_leaf() -> None:
    clock = ManualClock()
    router = network(clock)
    limit = router.dynamic.max_queries_per_leaf
    for index in range(limit + 5):
        router.route(LEAF, servent_query(f"q{index}", ttl=4))
    assert len(router.dynamic) == limit
    assert router.dynamic.outcomes["displaced"] == 5


def test_queries_from_ultrapeers_are_flooded_as_before() -> None:
    router = network(ManualClock())
    decision = router.route(1, servent_query("relayed", ttl=4, hops=1))
    assert decision.reason is None
    assert targets(decision) == set(ULTRAPEERS) - {1}


def test_with_dynamic_querying_off_a_leaf_query_is_flooded() -> None:
    router = network(ManualClock(), dynamic_querying=False)
    decision = router.route(LEAF, servent_query("flood", ttl=4))
    assert set(ULTRAPEERS) <= targets(decision)


def test_horizon_follows_the_degree_and_ttl() -> None:
    # One host at TTL 1; a degree-30 neighbour at TTL 2 reaches itself and 29 more,
    # less a fifth for the second hop.
    assert horizon(30, 1) == 1
    assert horizon(30, 2) == int((1 + 29) * 0.8)
    assert horizon(30, 3) > horizon(30, 2) > horizon(6, 2)
