"""What leaves get and give: no relayed pings, no leaf pongs, and no flood for a tableless leaf."""

from __future__ import annotations

from typing import Any

from gnurouter.protocol.ggep import GGEPExtension
from gnurouter.protocol.messages import Message, Pong
from gnurouter.routing.decisions import Decision
from gnurouter.routing.router import Router
from tests.fixtures import (
    OWN_PONG,
    ManualClock,
    ping,
    qrp_messages,
    routing_router,
    servent_query,
    targets,
)

UP_A, UP_B, LEAF_A, LEAF_B = 1, 2, 10, 11


def neighbourhood(clock: ManualClock, **rules: Any) -> Router:
    router = routing_router(clock, flood_tableless_leaves=False, **rules)
    router.peer_joined(UP_A, "ultrapeer")
    router.peer_joined(UP_B, "ultrapeer")
    router.peer_joined(LEAF_A, "leaf")
    router.peer_joined(LEAF_B, "leaf")
    return router


def pong_to(request: Message, ip: str, port: int, hops: int, *ultrapeer: bool) -> Message:
    ggep = (GGEPExtension("UP", b"\x01\x02\x03"),) if ultrapeer and ultrapeer[0] else ()
    return Message.from_body(request.guid, 7, hops, Pong(port, ip, 0, 0, ggep))


def test_a_leaf_ping_goes_to_ultrapeers_only() -> None:
    router = neighbourhood(ManualClock())
    decision = router.route(LEAF_A, ping(ttl=4))
    relayed = {peer for message, peers in decision.sends if message.hops == 1 for peer in peers}
    assert relayed == {UP_A, UP_B}


def test_flooded_pings_skip_leaves_too() -> None:
    router = neighbourhood(ManualClock(), ping_mode="flood")
    assert targets(router.route(UP_A, ping(ttl=4))) == {UP_B}


def test_leaf_pongs_are_neither_cached_nor_learned_but_say_where_it_listens() -> None:
    clock = ManualClock()
    router = neighbourhood(clock)
    request = ping(ttl=4)
    router.route(UP_A, request)  # UP_A pings; our leaves are not asked
    own = pong_to(request, "10.0.0.5", 6346, 0)
    decision = router.route(LEAF_A, own)  # a leaf answering anyway (or a stale route)
    assert decision.learned_hosts == ()
    assert decision.sender_listens_at == ("10.0.0.5", 6346)
    assert len(router.pong_cache) == 0


def test_ultrapeer_pongs_are_cached_and_a_neighbours_own_pong_names_its_address() -> None:
    router = neighbourhood(ManualClock())
    request = ping(ttl=4)
    router.route(LEAF_A, request)
    decision = router.route(UP_A, pong_to(request, "10.0.0.7", 6346, 0))
    assert decision.sender_listens_at == ("10.0.0.7", 6346)
    assert list(decision.learned_hosts) == [("10.0.0.7", 6346)]
    relayed = router.route(UP_B, pong_to(request, "10.0.0.8", 6346, 2))
    assert relayed.sender_listens_at is None
    assert len(router.pong_cache) == 2


def test_leaves_are_answered_with_ultrapeer_pongs_only() -> None:
    clock = ManualClock()
    router = neighbourhood(clock)
    request = ping(ttl=4)
    router.route(UP_A, request)
    router.route(UP_B, pong_to(request, "10.0.1.1", 6346, 2))  # a leaf somewhere
    router.route(UP_B, pong_to(request, "10.0.1.2", 6346, 2, True))  # GGEP UP
    clock.now += 10
    addresses = pong_ips(router.route(LEAF_B, ping(ttl=2)))
    assert "10.0.1.2" in addresses and "10.0.1.1" not in addresses
    assert OWN_PONG.ip in addresses  # and our own
    clock.now += 10
    assert pong_ips(router.route(UP_A, ping(ttl=2))) >= {"10.0.1.1", "10.0.1.2"}


def pong_ips(decision: Decision) -> set[str]:
    return {body.ip for message, _ in decision.sends if isinstance(body := message.body(), Pong)}


def test_a_tableless_leaf_gets_no_query_until_its_grace_ends_then_last_hop_ones_only() -> None:
    clock = ManualClock()
    router = neighbourhood(clock, tableless_leaf_grace=20.0)
    ending = servent_query("ending here", ttl=1, hops=3)
    travelling = servent_query("travelling on", ttl=3, hops=1)
    assert LEAF_A not in targets(router.route(UP_A, ending))
    clock.now += 21
    assert LEAF_A not in targets(router.route(UP_A, travelling))
    last_hop = router.route(UP_A, servent_query("ending again", ttl=1, hops=3))
    assert {LEAF_A, LEAF_B} <= targets(last_hop)
    assert router.leaves_without_table() == 2
    # Once its table is in, the table decides.
    for message in qrp_messages(["other"]):
        router.route(LEAF_A, message)
    assert router.leaves_without_table() == 1
    assert LEAF_A not in targets(router.route(UP_A, servent_query("ending", ttl=1, hops=3)))


def test_flooding_tableless_leaves_stays_an_option() -> None:
    router = routing_router(ManualClock(), flood_tableless_leaves=True)
    router.peer_joined(UP_A, "ultrapeer")
    router.peer_joined(LEAF_A, "leaf")
    assert LEAF_A in targets(router.route(UP_A, servent_query("anything", ttl=3, hops=1)))
