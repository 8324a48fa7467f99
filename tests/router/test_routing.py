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
    QueryHit,
    QueryHitResult,
    VendorMessage,
    new_guid,
)
from gnurouter.routing import LOCAL, Decision, Router, RouteTable, RoutingRules


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OWN_PONG = Pong(port=6346, ip="127.0.0.1", files=0, kbytes=0)


def make_router(clock: Clock, **rules: object) -> Router:
    router = Router(RoutingRules(**rules), lambda: OWN_PONG, clock)  # type: ignore[arg-type]
    for peer in (1, 2, 3):
        router.peer_joined(peer)
    return router


def query(ttl: int = 7, hops: int = 0, guid: bytes | None = None) -> Message:
    return Message.from_body(guid or new_guid(), ttl, hops, Query(flags=0, criteria="ogg"))


def hit(guid: bytes, servent_id: bytes, ttl: int = 7) -> Message:
    body = QueryHit(
        port=6346,
        ip="10.0.0.9",
        speed=100,
        results=(QueryHitResult(index=1, size=10, name="a.ogg"),),
        servent_id=servent_id,
    )
    return Message.from_body(guid, ttl, 0, body)


def targets(decision: Decision) -> set[int]:
    return {peer for _, peers in decision.sends for peer in peers}


def sent_to(decision: Decision, peer: int) -> list[Message]:
    return [message for message, peers in decision.sends if peer in peers]


def test_query_floods_to_all_other_peers_with_ttl_decremented() -> None:
    router = make_router(Clock())
    decision = router.route(1, query(ttl=5, hops=1))
    assert decision.action == "forwarded"
    assert targets(decision) == {2, 3}
    [relayed] = sent_to(decision, 2)
    assert (relayed.ttl, relayed.hops) == (4, 2) and sent_to(decision, 3) == [relayed]


def test_duplicate_is_keyed_by_guid_and_type() -> None:
    router = make_router(Clock())
    guid = new_guid()
    assert router.route(1, query(guid=guid)).action == "forwarded"
    assert router.route(2, query(guid=guid)).reason == "duplicate"
    # A ping with the same GUID is a different message, not a duplicate.
    ping = Message.from_body(guid, 3, 0, Ping())
    assert router.route(1, ping).reason != "duplicate"


@pytest.mark.parametrize(("ttl", "hops"), [(1, 0), (0, 3), (1, 6)])
def test_expired_ttl_is_never_forwarded(ttl: int, hops: int) -> None:
    decision = make_router(Clock()).route(1, query(ttl=ttl, hops=hops))
    assert decision.reason == "ttl-expired" and not decision.sends


def test_hops_plus_ttl_is_clamped_to_max_ttl() -> None:
    router = make_router(Clock(), max_ttl=7)
    decision = router.route(1, query(ttl=15, hops=2))
    [relayed] = sent_to(decision, 2)
    assert relayed.hops == 3 and relayed.hops + relayed.ttl == 7
    # Hops already at the maximum: nothing left to relay.
    assert router.route(1, query(ttl=3, hops=7)).reason == "ttl-expired"


def test_query_hit_follows_reverse_route_and_teaches_push_route() -> None:
    router = make_router(Clock())
    request = query()
    router.route(1, request)
    servent_id = b"S" * 16
    decision = router.route(3, hit(request.guid, servent_id))
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
    router = make_router(Clock())
    pong = Message.from_body(new_guid(), 5, 0, Pong(port=1, ip="10.1.1.1", files=0, kbytes=0))
    assert router.route(2, pong).reason == "no-route"
    assert router.route(2, hit(new_guid(), b"Z" * 16)).reason == "no-route"


def test_reply_to_departed_peer_is_dropped_as_route_gone() -> None:
    router = make_router(Clock())
    request = query()
    router.route(1, request)
    router.peer_left(1)
    assert router.route(2, hit(request.guid, b"Q" * 16)).reason == "route-gone"


def test_routes_expire_by_age_one_by_one() -> None:
    clock = Clock()
    router = make_router(clock, route_ttl=60.0)
    old = query()
    router.route(1, old)
    clock.now += 30
    young = query()
    router.route(1, young)
    clock.now += 31  # old is 61 s old, young 31 s
    assert router.expire() == 1
    assert router.route(3, hit(old.guid, b"A" * 16)).reason == "no-route"
    assert router.route(3, hit(young.guid, b"B" * 16)).action == "routed"


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
    clock = Clock()
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
    clock = Clock()
    router = make_router(clock)
    router.pong_cache.add(Pong(port=1, ip="10.0.0.1", files=0, kbytes=0), 1, 2, clock.now)
    decision = router.route(1, Message.from_body(new_guid(), 1, 0, Ping()))
    assert [m.body() for m, _ in decision.sends] == [OWN_PONG]


def test_ping_flood_from_one_peer_is_rate_limited() -> None:
    clock = Clock()
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
    router = make_router(Clock())
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
    decision = make_router(Clock()).route(1, Message.from_body(new_guid(), 1, 0, body))  # type: ignore[arg-type]
    assert not decision.sends


def test_vendor_message_with_hops_is_dropped() -> None:
    message = Message.from_body(new_guid(), 2, 1, VendorMessage(b"LIME", 5, 1, b""))
    assert make_router(Clock()).route(1, message).reason == "vendor-not-hop-by-hop"


def test_flood_ping_mode_forwards_like_a_query() -> None:
    router = make_router(Clock(), ping_mode="flood")
    decision = router.route(1, Message.from_body(new_guid(), 3, 0, Ping()))
    assert decision.action == "forwarded" and targets(decision) == {2, 3}
