"""Roles, QRP and Hops-Flow as pure routing decisions (no sockets)."""

from __future__ import annotations

from gnurouter.protocol.messages import Message, VendorMessage
from gnurouter.routing.roles import LEAF, LEGACY, ULTRAPEER
from gnurouter.routing.router import Router
from tests.fixtures import qrp_messages, routing_router, servent_query, targets


def give_table(r: Router, peer: int, words: list[str]) -> None:
    for message in qrp_messages(words, bits=12, chunk=4096):
        decision = r.route(peer, message)
        assert decision.close is None


def test_queries_flood_ultrapeers_and_reach_leaves_by_table() -> None:
    r = routing_router()
    r.peer_joined(1, ULTRAPEER)
    r.peer_joined(2, ULTRAPEER)
    r.peer_joined(3, LEAF)
    r.peer_joined(4, LEAF)
    r.peer_joined(5, LEGACY)
    give_table(r, 3, ["cello"])
    give_table(r, 4, ["flute"])
    assert targets(r.route(1, servent_query("cello suites"))) == {2, 5}  # "suites" is in no table
    assert targets(r.route(1, servent_query("cello"))) == {2, 3, 5}
    # From a leaf: to the ultrapeers and the other matching leaf, not back.
    assert targets(r.route(4, servent_query("cello"))) == {1, 2, 3, 5}


def test_a_spent_ttl_still_reaches_matching_leaves_with_ttl_one() -> None:
    r = routing_router()
    r.peer_joined(1, ULTRAPEER)
    r.peer_joined(2, ULTRAPEER)
    r.peer_joined(3, LEAF)
    give_table(r, 3, ["cello"])
    decision = r.route(1, servent_query("cello", ttl=1, hops=2))
    [(relayed, peers)] = decision.sends
    assert peers == [3] and (relayed.ttl, relayed.hops) == (1, 3)
    assert r.route(1, servent_query("viola", ttl=1)).reason == "ttl-expired"


def test_tableless_leaves_follow_the_rule() -> None:
    flooding = routing_router(flood_tableless_leaves=True)
    strict = routing_router()  # the default: no flood for a leaf without a table
    for r in (flooding, strict):
        r.peer_joined(1, ULTRAPEER)
        r.peer_joined(2, LEAF)
    assert targets(flooding.route(1, servent_query("anything"))) == {2}
    assert strict.route(1, servent_query("anything")).reason == "no-other-peers"


def test_hops_flow_is_per_peer_and_zero_means_nothing() -> None:
    r = routing_router()
    for peer in (1, 2, 3):
        r.peer_joined(peer, ULTRAPEER)

    def hops_flow(peer: int, value: int) -> None:
        body = VendorMessage(b"BEAR", 4, 1, bytes([value]))
        assert r.route(peer, Message.from_body(bytes(16), 1, 0, body)).reason == "hops-flow"

    hops_flow(2, 2)
    hops_flow(3, 0)
    assert targets(r.route(1, servent_query("a", hops=0))) == {2}  # arrives with hops 1 < 2
    assert r.route(1, servent_query("b", hops=1)).reason == "no-other-peers"  # hops 2 >= 2
    info = r.peer_info(3)
    assert info is not None and info.withheld == {"hops-flow": 2}
    hops_flow(3, 255)
    assert targets(r.route(1, servent_query("c", hops=1))) == {3}


def test_qrp_and_vendor_messages_are_never_forwarded() -> None:
    r = routing_router()
    r.peer_joined(1, LEAF)
    r.peer_joined(2, ULTRAPEER)
    for message in qrp_messages(["x"], bits=10, chunk=4096):
        assert not r.route(1, message).sends
    unknown = VendorMessage(b"ABCD", 1, 1, b"")
    decision = r.route(1, Message.from_body(bytes(16), 1, 0, unknown))
    assert decision.reason == "vendor-ignored" and not decision.sends and decision.close is None


def test_greeting_goes_only_to_peers_that_speak_vendor_messages() -> None:
    r = routing_router()
    assert r.peer_joined(1, LEAF, vendor_messages=False) == []
    [greeting] = r.peer_joined(2, LEAF, vendor_messages=True)
    assert greeting.ttl == 1 and greeting.hops == 0 and greeting.guid == bytes(16)
