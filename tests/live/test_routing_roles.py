"""Roles, QRP and Hops-Flow as pure routing decisions (no sockets)."""

from __future__ import annotations

from gnurouter.protocol.messages import Message, Pong, Query, VendorMessage, new_guid
from gnurouter.protocol.qrp import QrpTable, build_update
from gnurouter.routing.decisions import RoutingRules
from gnurouter.routing.roles import LEAF, LEGACY, ULTRAPEER
from gnurouter.routing.router import Router

OWN_PONG = Pong(port=6346, ip="127.0.0.1", files=0, kbytes=0)


def router(**rules: object) -> Router:
    return Router(RoutingRules(**rules), lambda: OWN_PONG)  # type: ignore[arg-type]


def query(text: str, ttl: int = 3, hops: int = 0) -> Message:
    return Message.from_body(new_guid(), ttl, hops, Query(0x8000, text))


def give_table(r: Router, peer: int, words: list[str]) -> None:
    table = QrpTable.from_words(words, 12)
    for body in build_update(None, format(table.mask, f"0{table.slots}b")):
        decision = r.route(peer, Message.from_body(new_guid(), 1, 0, body))
        assert decision.close is None


def targets(decision: object) -> set[int]:
    return {p for _, peers in decision.sends for p in peers}  # type: ignore[attr-defined]


def test_queries_flood_ultrapeers_and_reach_leaves_by_table() -> None:
    r = router()
    r.peer_joined(1, ULTRAPEER)
    r.peer_joined(2, ULTRAPEER)
    r.peer_joined(3, LEAF)
    r.peer_joined(4, LEAF)
    r.peer_joined(5, LEGACY)
    give_table(r, 3, ["cello"])
    give_table(r, 4, ["flute"])
    assert targets(r.route(1, query("cello suites"))) == {2, 5}  # "suites" is in no table
    assert targets(r.route(1, query("cello"))) == {2, 3, 5}
    # From a leaf: to the ultrapeers and the other matching leaf, not back.
    assert targets(r.route(4, query("cello"))) == {1, 2, 3, 5}


def test_a_spent_ttl_still_reaches_matching_leaves_with_ttl_one() -> None:
    r = router()
    r.peer_joined(1, ULTRAPEER)
    r.peer_joined(2, ULTRAPEER)
    r.peer_joined(3, LEAF)
    give_table(r, 3, ["cello"])
    decision = r.route(1, query("cello", ttl=1, hops=2))
    [(relayed, peers)] = decision.sends
    assert peers == [3] and (relayed.ttl, relayed.hops) == (1, 3)
    assert r.route(1, query("viola", ttl=1)).reason == "ttl-expired"


def test_tableless_leaves_follow_the_rule() -> None:
    flooding = router()
    strict = router(flood_tableless_leaves=False)
    for r in (flooding, strict):
        r.peer_joined(1, ULTRAPEER)
        r.peer_joined(2, LEAF)
    assert targets(flooding.route(1, query("anything"))) == {2}
    assert strict.route(1, query("anything")).reason == "no-other-peers"


def test_hops_flow_is_per_peer_and_zero_means_nothing() -> None:
    r = router()
    for peer in (1, 2, 3):
        r.peer_joined(peer, ULTRAPEER)

    def hops_flow(peer: int, value: int) -> None:
        body = VendorMessage(b"BEAR", 4, 1, bytes([value]))
        assert r.route(peer, Message.from_body(bytes(16), 1, 0, body)).reason == "hops-flow"

    hops_flow(2, 2)
    hops_flow(3, 0)
    assert targets(r.route(1, query("a", hops=0))) == {2}  # arrives with hops 1 < 2
    assert r.route(1, query("b", hops=1)).reason == "no-other-peers"  # hops 2 >= 2
    info = r.peer_info(3)
    assert info is not None and info.withheld == {"hops-flow": 2}
    hops_flow(3, 255)
    assert targets(r.route(1, query("c", hops=1))) == {3}


def test_qrp_and_vendor_messages_are_never_forwarded() -> None:
    r = router()
    r.peer_joined(1, LEAF)
    r.peer_joined(2, ULTRAPEER)
    table = QrpTable.from_words(["x"], 10)
    for body in build_update(None, format(table.mask, f"0{table.slots}b")):
        assert not r.route(1, Message.from_body(new_guid(), 1, 0, body)).sends
    unknown = VendorMessage(b"ABCD", 1, 1, b"")
    decision = r.route(1, Message.from_body(bytes(16), 1, 0, unknown))
    assert decision.reason == "vendor-ignored" and not decision.sends and decision.close is None


def test_greeting_goes_only_to_peers_that_speak_vendor_messages() -> None:
    r = router()
    assert r.peer_joined(1, LEAF, vendor_messages=False) == []
    [greeting] = r.peer_joined(2, LEAF, vendor_messages=True)
    assert greeting.ttl == 1 and greeting.hops == 0 and greeting.guid == bytes(16)
