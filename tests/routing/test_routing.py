"""The routing rules as pure decisions (no sockets): one test per rule of the 0.6 draft."""

from __future__ import annotations

import pytest

from gnurouter.protocol.messages import (
    Bye,
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    VendorMessage,
    new_guid,
)
from gnurouter.routing.decisions import Decision
from gnurouter.routing.roles import LOCAL
from gnurouter.routing.roles import ULTRAPEER as ULTRAPEER_ROLE
from gnurouter.routing.router import Router
from gnurouter.routing.tables import RouteTable
from tests.fixtures import (
    OWN_PONG,
    ManualClock,
    ping,
    qrp_messages,
    query,
    query_hit,
    routing_router,
    targets,
)


def make_router(clock: ManualClock, **rules: object) -> Router:
    """A router with ultrapeers 1, 2 and 3 joined."""
    return routing_router(clock, peers=(1, 2, 3), **rules)


def sent_to(decision: Decision, peer: int) -> list[Message]:
    return [message for message, peers in decision.sends if peer in peers]


def test_query_floods_to_all_other_peers_with_ttl_decremented() -> None:
    router = make_router(ManualClock())
    decision = router.route(1, query(ttl=5, hops=1))
    assert decision.action == "forwarded"
    assert targets(decision) == {2, 3}
    [relayed] = sent_to(decision, 2)
    assert (relayed.ttl, relayed.hops) == (4, 2) and sent_to(decision, 3) == [relayed]


def test_duplicate_is_keyed_by_guid_and_type() -> None:
    router = make_router(ManualClock())
    guid = new_guid()
    assert router.route(1, query(guid=guid)).action == "forwarded"
    assert router.route(2, query(guid=guid)).reason == "duplicate"
    # A ping with the same GUID is a different message, not a duplicate.
    ping = Message.from_body(guid, 3, 0, Ping())
    assert router.route(1, ping).reason != "duplicate"


@pytest.mark.parametrize(("ttl", "hops"), [(1, 0), (0, 3), (1, 6)])
def test_expired_ttl_is_never_forwarded(ttl: int, hops: int) -> None:
    decision = make_router(ManualClock()).route(1, query(ttl=ttl, hops=hops))
    assert decision.reason == "ttl-expired" and not decision.sends


def test_hops_plus_ttl_is_clamped_to_max_ttl() -> None:
    router = make_router(ManualClock(), max_ttl=7)
    decision = router.route(1, query(ttl=15, hops=2))
    [relayed] = sent_to(decision, 2)
    assert relayed.hops == 3 and relayed.hops + relayed.ttl == 7
    # Hops already at the maximum: nothing left to relay.
    assert router.route(1, query(ttl=3, hops=7)).reason == "ttl-expired"


def test_query_hit_follows_reverse_route_and_teaches_push_route() -> None:
    router = make_router(ManualClock())
    request = query()
    router.route(1, request)
    servent_id = b"S" * 16
    decision = router.route(3, query_hit(request.guid, servent_id))
    assert decision.action == "routed" and targets(decision) == {1}
    push = Message.from_body(new_guid(), 7, 0, Push(servent_id, 1, "10.0.0.1", 6346))
    routed = router.route(1, push)
    assert routed.action == "routed" and targets(routed) == {3}
    assert (
        router.route(
            2, Message.from_body(new_guid(), 7, 0, Push(b"X" * 16, 1, "10.0.0.1", 1))
        ).reason
        == "no-push-route"
    )


def test_reply_without_route_is_dropped() -> None:
    router = make_router(ManualClock())
    pong = Message.from_body(new_guid(), 5, 0, Pong(port=1, ip="10.1.1.1", files=0, kbytes=0))
    assert router.route(2, pong).reason == "no-route"
    assert router.route(2, query_hit(new_guid(), b"Z" * 16)).reason == "no-route"


def test_reply_to_departed_peer_is_dropped_as_route_gone() -> None:
    router = make_router(ManualClock())
    request = query()
    router.route(1, request)
    router.peer_left(1)
    assert router.route(2, query_hit(request.guid, b"Q" * 16)).reason == "route-gone"


def test_routes_expire_by_age_one_by_one() -> None:
    clock = ManualClock()
    router = make_router(clock, route_ttl=60.0)
    old = query()
    router.route(1, old)
    clock.now += 30
    young = query()
    router.route(1, young)
    clock.now += 31  # old is 61 s old, young 31 s
    assert router.expire() == 1
    assert router.route(3, query_hit(old.guid, b"A" * 16)).reason == "no-route"
    assert router.route(3, query_hit(young.guid, b"B" * 16)).action == "routed"


def test_route_table_is_bounded() -> None:
    table = RouteTable(max_age=600, max_entries=100)
    for index in range(250):
        table.add_if_new(index, 1, 0.0)
        assert len(table) <= 100
    assert len(table) + table.evicted == 250
    # The oldest went, in order: whatever is left is the most recent run of keys.
    kept = [index for index in range(250) if table.lookup(index, 0.0) == 1]
    assert kept == list(range(250 - len(table), 250))
    assert len(table) >= 100 - 100 // 64 - 1


def test_ping_is_answered_from_pong_cache_not_flooded_every_time() -> None:
    clock = ManualClock()
    router = make_router(clock, ping_refresh_interval=5.0)
    for index in range(3):
        pong = Pong(port=6000 + index, ip=f"10.0.0.{index}", files=index, kbytes=1)
        router.pong_cache.add(pong, 1, 2, clock.now)
    first = router.route(1, Message.from_body(new_guid(), 7, 0, Ping()))
    replies = sent_to(first, 1)
    assert replies[0].body() == OWN_PONG
    assert {m.body().port for m in replies[1:]} == {6000, 6001, 6002}  # type: ignore[union-attr]
    assert all(m.ttl == 1 for m in replies)
    assert targets(first) == {1, 2, 3}  # first ping also refreshes the cache
    second = router.route(1, Message.from_body(new_guid(), 7, 0, Ping()))
    assert targets(second) == {1}  # within the refresh interval: answered only


def test_keepalive_ping_gets_only_our_pong() -> None:
    clock = ManualClock()
    router = make_router(clock)
    router.pong_cache.add(Pong(port=1, ip="10.0.0.1", files=0, kbytes=0), 1, 2, clock.now)
    decision = router.route(1, Message.from_body(new_guid(), 1, 0, Ping()))
    assert [m.body() for m, _ in decision.sends] == [OWN_PONG]


def test_ping_flood_from_one_peer_is_rate_limited() -> None:
    clock = ManualClock()
    router = make_router(clock, ping_rate_per_peer=1.0, ping_burst_per_peer=3)
    reasons = [
        router.route(1, Message.from_body(new_guid(), 1, 0, Ping())).reason for _ in range(5)
    ]
    assert reasons.count("ping-rate") == 2
    clock.now += 1.0
    assert router.route(1, Message.from_body(new_guid(), 1, 0, Ping())).reason != "ping-rate"
    # Another peer has its own budget.
    assert router.route(2, Message.from_body(new_guid(), 1, 0, Ping())).reason != "ping-rate"


def test_pong_for_our_own_ping_is_consumed_and_feeds_hosts() -> None:
    router = make_router(ManualClock())
    ping = router.originate_ping()
    pong = Message.from_body(ping.guid, 1, 0, Pong(port=6347, ip="10.2.2.2", files=3, kbytes=9))
    decision = router.route(2, pong)
    assert decision.action == "consumed" and decision.learned_hosts == [("10.2.2.2", 6347)]
    assert router.seen.lookup((ping.guid, MessageType.PING), 1000.0) == LOCAL


@pytest.mark.parametrize(
    "body",
    [Bye(200, "bye"), VendorMessage(b"GTKG", 1, 1, b"")],
)
def test_hop_by_hop_messages_are_never_forwarded(body: object) -> None:
    decision = make_router(ManualClock()).route(1, Message.from_body(new_guid(), 1, 0, body))  # type: ignore[arg-type]
    assert not decision.sends


def test_vendor_message_with_hops_is_dropped() -> None:
    message = Message.from_body(new_guid(), 2, 1, VendorMessage(b"LIME", 5, 1, b""))
    assert make_router(ManualClock()).route(1, message).reason == "vendor-not-hop-by-hop"


def test_flood_ping_mode_forwards_like_a_query() -> None:
    router = make_router(ManualClock(), ping_mode="flood")
    decision = router.route(1, Message.from_body(new_guid(), 3, 0, Ping()))
    assert decision.action == "forwarded" and targets(decision) == {2, 3}


# -- limits: what one peer may insert into shared tables ---------------------------------


def test_refused_pings_leave_no_trace_in_the_route_table() -> None:
    router = make_router(ManualClock(), ping_burst_per_peer=5, ping_flood_refusals=10**9)
    reasons = [router.route(1, ping()).reason for _ in range(10_000)]
    assert reasons.count("ping-rate") == 10_000 - 5
    assert len(router.seen) == 5  # only the answered ones hold a route


def test_a_peer_that_keeps_flooding_pings_is_cut_off_once() -> None:
    clock = ManualClock()
    router = make_router(
        clock, ping_burst_per_peer=5, ping_flood_refusals=10, ping_flood_window=60.0
    )
    decisions = [router.route(1, ping()) for _ in range(15)]
    assert [d.reason for d in decisions[5:]] == ["ping-rate"] * 10
    assert all(d.close is None for d in decisions)
    cut = router.route(1, ping())
    assert cut.dropped and cut.reason == "ping-flood"
    assert cut.close is not None and cut.close[0] == 400 and "Ping flood" in cut.close[1]
    assert router.cutoffs == {"ping-flood": 1}
    # Whatever else arrives before the link is gone is dropped, not cut again.
    later = [router.route(1, ping()) for _ in range(50)]
    assert all(d.close is None for d in later)
    assert router.cutoffs == {"ping-flood": 1}
    # Its neighbours keep their own budgets.
    assert router.route(2, ping()).action == "answered"


def test_refusals_spread_thinly_over_time_are_tolerated() -> None:
    clock = ManualClock()
    router = make_router(
        clock, ping_rate_per_peer=1.0, ping_burst_per_peer=1, ping_flood_refusals=10
    )
    for _ in range(30):  # a minute at a time, a few pings too many each time
        decisions = [router.route(1, ping()) for _ in range(10)]
        assert all(d.close is None for d in decisions)
        clock.now += 61.0
    assert not router.cutoffs


def test_one_peer_cannot_evict_everyone_elses_routes() -> None:
    router = make_router(ManualClock(), route_table_max=640, route_share_max=0.25)
    honest = [query() for _ in range(100)]
    for request in honest[:50]:
        assert router.route(2, request).action == "forwarded"
    for index in range(20_000):  # fresh GUIDs from one peer, far past the bound
        assert router.route(1, query()).action == "forwarded"
        if index % 400 == 0:  # honest traffic goes on meanwhile
            assert router.route(2, honest[50 + index // 400]).action == "forwarded"
    assert len(router.seen) <= 640
    # Every eviction was the flooder's own: it may fill free room, never
    # take anybody else's.
    assert router.seen.evicted == router.seen.evicted_over_share >= 20_000 - 640
    routed = [router.route(3, query_hit(request.guid, b"H" * 16)) for request in honest]
    assert all(d.action == "routed" and targets(d) == {2} for d in routed)
    assert router.limit_counters()["routes_evicted_over_share"] == router.seen.evicted_over_share


def test_without_a_share_limit_the_flood_evicts_everyone() -> None:
    # The same flood with the limit off: what the limit prevents.
    router = make_router(ManualClock(), route_table_max=640, route_share_max=1.0)
    honest = [query() for _ in range(100)]
    for request in honest:
        router.route(2, request)
    for _ in range(20_000):
        router.route(1, query())
    reasons = {router.route(3, query_hit(request.guid, b"H" * 16)).reason for request in honest}
    assert reasons == {"no-route"}


def test_a_lone_busy_peer_is_routed_as_before() -> None:
    router = make_router(ManualClock(), route_table_max=640, route_share_max=0.25)
    requests = [query() for _ in range(5000)]
    assert all(router.route(1, r).action == "forwarded" for r in requests)
    assert 630 <= len(router.seen) <= 640
    kept = [r for r in requests if router.seen.lookup(r.guid, 1000.0) is not None]
    assert kept == requests[-len(kept) :]  # the newest, as before


def test_route_table_owner_counts_stay_exact() -> None:
    import random

    rng = random.Random(3)
    table = RouteTable(max_age=50.0, max_entries=500, max_share=0.3)
    now = 0.0
    for step in range(20_000):
        now += rng.random() * 0.05
        peer = rng.choice((1, 1, 1, 2, 3, 4))
        key = rng.randrange(3000)
        if rng.random() < 0.2:
            table.set(key, peer, now)
        else:
            table.add_if_new(key, peer, now)
        if step % 997 == 0:
            table.expire(now)
        if step % 101 == 0:
            recount: dict[int, int] = {}
            for owner, _ in table._entries.values():
                recount[owner] = recount.get(owner, 0) + 1
            assert table.count_owners() == recount
        assert len(table) <= 500


def test_a_push_for_an_unknown_servent_records_nothing() -> None:
    router = make_router(ManualClock())
    before = len(router.seen)
    for _ in range(1000):
        push = Message.from_body(new_guid(), 7, 0, Push(new_guid(), 1, "10.0.0.1", 6346))
        assert router.route(1, push).reason == "no-push-route"
    assert len(router.seen) == before


def test_unsolicited_replies_teach_nothing_shared() -> None:
    router = make_router(ManualClock())
    for index in range(200):
        pong = Message.from_body(
            new_guid(), 5, 0, Pong(port=1000 + index, ip=f"10.7.0.{index}", files=0, kbytes=0)
        )
        decision = router.route(2, pong)
        assert decision.reason == "no-route" and not decision.learned_hosts
        assert router.route(2, query_hit(new_guid(), new_guid())).reason == "no-route"
    assert len(router.pong_cache) == 0
    assert len(router.push_routes) == 0


def test_vendor_message_labels_per_peer_are_bounded() -> None:
    router = make_router(ManualClock())
    for index in range(1000):
        vendor = index.to_bytes(4, "big")
        router.route(1, Message.from_body(new_guid(), 1, 0, VendorMessage(vendor, 1, 1, b"")))
    info = router.peer_info(1)
    assert info is not None
    assert len(info.vendor_messages) <= 65 and sum(info.vendor_messages.values()) == 1000


# -- QRP limits and deferred QRP work --------------------------------------------------------


def test_a_table_larger_than_the_cap_cuts_its_leaf_off() -> None:
    from gnurouter.protocol.messages import RouteTableReset
    from gnurouter.routing.roles import LEAF

    router = make_router(ManualClock())
    router.peer_joined(4, LEAF)
    decision = router.route(4, Message.from_body(new_guid(), 1, 0, RouteTableReset(1 << 24, 7)))
    assert decision.dropped and decision.reason == "qrp-table-too-large"
    assert decision.close is not None and decision.close[0] == 413
    assert router.cutoffs == {"qrp-table-too-large": 1}
    follow_up = router.route(4, qrp_messages(["late"])[0])
    assert follow_up.reason == "closing" and follow_up.close is None


def test_a_leaf_resetting_over_and_over_is_cut_off() -> None:
    from gnurouter.protocol.qrp import QrpLimits
    from gnurouter.routing.roles import LEAF

    clock = ManualClock()
    router = make_router(clock, qrp_limits=QrpLimits(reset_burst=2, update_burst=2))
    router.peer_joined(4, LEAF)
    outcomes: list[Decision] = []
    for _ in range(3):
        outcomes.extend(router.route(4, m) for m in qrp_messages(["song", "album"]))
    assert outcomes[-1].reason in ("qrp-reset-rate", "qrp-update-rate", "closing")
    assert sum(d.close is not None for d in outcomes) == 1
    assert set(router.cutoffs) <= {"qrp-reset-rate", "qrp-update-rate"}
    assert sum(router.cutoffs.values()) == 1


def test_deferred_qrp_is_applied_by_process_and_installed_by_commit() -> None:
    from gnurouter.routing.roles import LEAF

    router = make_router(ManualClock())
    router.peer_joined(4, LEAF)
    router.defer_qrp = True
    decisions = [router.route(4, m) for m in qrp_messages(["free", "music"])]
    info = router.peer_info(4)
    assert info is not None and info.table is None and info.qrp is not None
    assert info.qrp.resets == 0  # nothing applied yet: routing only queued them
    assert router.qrp_deferred == len(decisions)
    pending = router.take_qrp_pending()
    assert router.take_qrp_pending() == []
    processed = router.process_qrp(pending)
    assert info.table is None  # built, not yet swapped in
    assert decisions[-1].reason == "qrp-table"
    router.commit_qrp(processed)
    assert info.table is not None and info.table.slots == 1 << 16
    # Installed: the leaf now only gets what it matches.
    assert 4 in targets(
        router.route(1, Message.from_body(new_guid(), 3, 0, Query(0, "free music")))
    )
    assert 4 not in targets(router.route(1, Message.from_body(new_guid(), 3, 0, Query(0, "other"))))


def test_qrp_update_steps_add_up_to_the_whole() -> None:
    from gnurouter.routing.roles import LEAF

    router = make_router(ManualClock())
    router.peer_joined(5, ULTRAPEER_ROLE, up_qrp=True)
    router.peer_joined(4, LEAF)
    for message in qrp_messages(["free", "music"]):
        router.route(4, message)
    plan = router.plan_qrp_updates()
    assert [info.id for info, _ in plan.due] == [5]
    sends = router.finish_qrp_updates(router.build_qrp_updates(plan))
    assert sends and all(ids == [5] for _, ids in sends)
    assert router.qrp_updates() == []  # sent: nothing due until the interval passes


def test_a_bug_applying_one_qrp_update_costs_only_its_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    from gnurouter.protocol.qrp import QrpReceiver
    from gnurouter.routing.roles import LEAF

    router = make_router(ManualClock())
    router.peer_joined(4, LEAF)
    router.peer_joined(5, LEAF)
    router.defer_qrp = True
    original = QrpReceiver.handle

    def broken_for_peer_4(self: QrpReceiver, body: object, now: float | None = None) -> bool:
        if self is router.peer_info(4).qrp:  # type: ignore[union-attr]
            raise RuntimeError("bug")
        return original(self, body, now)  # type: ignore[arg-type]

    monkeypatch.setattr(QrpReceiver, "handle", broken_for_peer_4)
    bad = [router.route(4, m) for m in qrp_messages(["a", "b"])]
    good = [router.route(5, m) for m in qrp_messages(["a", "b"])]
    router.commit_qrp(router.process_qrp(router.take_qrp_pending()))
    assert bad[0].reason == "qrp-error" and bad[0].close == (500, bad[0].close[1])  # type: ignore[index]
    assert all(d.close is None and d.reason == "closing" for d in bad[1:])
    assert good[-1].reason == "qrp-table" and router.peer_info(5).table is not None  # type: ignore[union-attr]
