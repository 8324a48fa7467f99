"""Leaves on one router: QRP decides which queries reach them; vendor messages; flags intact."""

from __future__ import annotations

import base64
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.protocol.ggep import GGEPExtension, encode_ggep
from gnurouter.protocol.messages import (
    Bye,
    Message,
    MessageType,
    Ping,
    Query,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
    new_guid,
)
from gnurouter.protocol.qrp import QrpReceiver, QrpTable, QueryKeys
from gnurouter.protocol.vendor import MessagesSupported
from tests.fixtures import (
    GTK_GNUTELLA_ULTRAPEER,
    LIMEWIRE_LEAF,
    LIMEWIRE_ULTRAPEER,
    DecisionWatch,
    delivered,
    join,
    qrp_messages,
    servent_query,
    until,
    vendor,
)
from tests.live.helpers import leaf

NO_VENDOR_LEAF = tuple(pair for pair in LIMEWIRE_LEAF if pair[0] != "Vendor-Message")


def got(servent: Any, message: Message) -> bool:
    return any(m.guid == message.guid for m in servent.received)


@pytest_twisted.ensureDeferred
async def test_only_matching_queries_reach_a_leaf_and_a_patch_changes_what_matches(
    start_router: Any,
) -> None:
    router = start_router(flood_tableless_leaves=True)  # the watcher gets everything
    watch = DecisionWatch(router)
    sharer = await leaf(router, ["free", "music", "ogg"])
    watcher = await leaf(router)  # no table: a marker for "everything routed so far"
    asker = await join(router, headers=LIMEWIRE_ULTRAPEER)
    hit, miss, half = servent_query("Free Music"), servent_query("jazz"), servent_query("free jazz")
    marker = servent_query("marker")
    asker.send(hit, miss, half, marker)
    relayed = await delivered(sharer, hit)
    assert relayed.payload == hit.payload and relayed.hops == 1 and relayed.ttl == 3
    await delivered(watcher, marker)
    assert not got(sharer, miss) and not got(sharer, half)
    [(_, decision)] = watch.for_guid(miss.guid)
    sharer_id = sharer.router_peer_id
    assert all(sharer_id not in targets for _, targets in decision.sends)
    info = router.routing.peer_info(sharer_id)
    assert info is not None and info.withheld["qrp-miss"] == 3  # miss, half, marker

    # The leaf shares jazz now, and no more music: a PATCH, no RESET.
    before = info.table
    update = qrp_messages(["free", "jazz", "ogg"], previous=before)
    assert [m.body().__class__ for m in update] == [RouteTablePatch]
    sharer.send(*update)
    await until(lambda: info.table is not before)
    again_hit, again_miss, marker2 = (
        servent_query("free jazz"),
        servent_query("free music"),
        servent_query("marker"),
    )
    asker.send(again_hit, again_miss, marker2)
    await delivered(sharer, again_hit)
    await delivered(watcher, marker2)
    assert not got(sharer, again_miss)
    snapshot = {p["id"]: p for p in router.snapshot()["peers"]}
    assert snapshot[sharer_id]["role"] == "leaf"
    assert snapshot[sharer_id]["qrp_table"]["slots"] == 65536
    assert snapshot[sharer_id]["qrp_table"]["set"] == 3


@pytest_twisted.ensureDeferred
async def test_expired_queries_still_reach_matching_leaves_with_ttl_1(start_router: Any) -> None:
    router = start_router()
    sharer = await leaf(router, ["last", "hop"])
    other_up = await join(router, headers=LIMEWIRE_ULTRAPEER)
    asker = await join(router, headers=LIMEWIRE_ULTRAPEER)
    last = servent_query("last hop", ttl=1, hops=2)
    marker = servent_query("marker", ttl=2)
    asker.send(last, marker)
    relayed = await delivered(sharer, last)
    assert (relayed.ttl, relayed.hops) == (1, 3) and relayed.payload == last.payload
    await delivered(other_up, marker)
    assert not got(other_up, last)  # its TTL is spent for ultrapeers


@pytest_twisted.ensureDeferred
async def test_leaves_without_a_table_get_the_flood_only_when_configured(
    start_router: Any,
) -> None:
    flooding = start_router(flood_tableless_leaves=True)
    quiet = await leaf(flooding)
    asker = await join(flooding, headers=LIMEWIRE_ULTRAPEER)
    request = servent_query("whatever")
    asker.send(request)
    await delivered(quiet, request)

    strict = start_router(flood_tableless_leaves=False)
    quiet = await leaf(strict)
    watcher = await join(strict, headers=GTK_GNUTELLA_ULTRAPEER)
    asker = await join(strict, headers=LIMEWIRE_ULTRAPEER)
    request, marker = servent_query("whatever"), servent_query("marker")
    asker.send(request, marker)
    await delivered(watcher, marker)
    assert not got(quiet, request)
    # The switch is live.
    strict.control.set("router.flood_tableless_leaves", True)
    later = servent_query("whatever else")
    asker.send(later)
    await delivered(quiet, later)


@pytest_twisted.ensureDeferred
async def test_hops_flow_stops_queries_at_or_above_the_hop_count(start_router: Any) -> None:
    router = start_router(flood_tableless_leaves=True)  # the busy leaf has no table
    busy = await leaf(router)
    watcher = await join(router, headers=GTK_GNUTELLA_ULTRAPEER)
    asker = await join(router, headers=LIMEWIRE_ULTRAPEER)
    # "Send me no query with hops >= 2" (BEAR/4v1), then a ping to know it was read.
    busy.send(vendor(b"BEAR", 4, 1, bytes([2])))
    probe = Message.from_body(new_guid(), 1, 0, Ping())
    busy.send(probe)
    await delivered(busy, probe)
    near, far, marker = (
        servent_query("near", hops=0),
        servent_query("far", hops=1),
        servent_query("marker", hops=3),
    )
    asker.send(near, far, marker)
    got_near = await delivered(busy, near)
    assert got_near.hops == 1
    await delivered(watcher, marker)
    assert not got(busy, far) and not got(busy, marker)
    info = router.routing.peer_info(busy.router_peer_id)
    assert info is not None and info.hops_flow == 2 and info.withheld["hops-flow"] == 2
    [row] = [p for p in router.snapshot()["peers"] if p["id"] == busy.router_peer_id]
    assert row["hops_flow"] == 2 and row["queries_withheld"] == {"hops-flow": 2}
    # Hops-Flow 0: no queries at all; flow control for ultrapeers too.
    watcher.send(vendor(b"BEAR", 4, 1, bytes([0])))
    busy.send(vendor(b"BEAR", 4, 1, bytes([255])))
    probe = Message.from_body(new_guid(), 1, 0, Ping())
    watcher.send(probe)
    await delivered(watcher, probe)
    blocked, marker = servent_query("blocked"), servent_query("marker two")
    asker.send(blocked, marker)
    await delivered(busy, marker)
    assert not got(watcher, blocked) and got(busy, blocked)


@pytest_twisted.ensureDeferred
async def test_messages_supported_answered_and_unknown_vendor_messages_ignored(
    start_router: Any,
) -> None:
    router = start_router()
    # It never said Vendor-Message, so it gets our list only once it sends its own.
    peer = await leaf(router, headers=NO_VENDOR_LEAF)
    other = await join(router, headers=LIMEWIRE_ULTRAPEER)
    assert not peer.messages_of(MessageType.VENDOR)
    theirs = MessagesSupported(((b"BEAR", 4, 1), (b"LIME", 21, 2)))
    peer.send(theirs.message())
    answer = await peer.next_message(reactor, lambda m: m.type == MessageType.VENDOR)
    body = answer.body()
    assert isinstance(body, VendorMessage)
    # Hops Flow, and the Query Status pair dynamic querying asks leaves with.
    assert set(MessagesSupported.decode(body.data).items) == {
        (b"BEAR", 4, 1),
        (b"BEAR", 11, 1),
        (b"BEAR", 12, 1),
    }
    # Unknown vendor messages: ignored, not forwarded, the link stays up.
    unknown = vendor(b"ZZZZ", 99, 3, b"whatever this is")
    peer.send(unknown, unknown)
    probe = Message.from_body(new_guid(), 1, 0, Ping())
    peer.send(probe)
    await delivered(peer, probe)
    marker = servent_query("marker")
    peer.send(marker)
    await delivered(other, marker)
    vendor_bodies = [m.body() for m in other.received if m.type == MessageType.VENDOR]
    assert unknown.body() not in vendor_bodies
    assert not peer.closed.called
    [row] = [p for p in router.snapshot()["peers"] if p["id"] == peer.router_peer_id]
    assert row["vendor_messages"] == {"ZZZZ/99v3": 2, "0000/0v0 Messages Supported": 1}
    assert row["supported_vendor_messages"] == [
        "BEAR/4v1 Hops Flow",
        "LIME/21v2 Push-Proxy Request",
    ]
    # Sending it again gets no second answer (no ping-pong of lists).
    peer.send(theirs.message(), probe2 := Message.from_body(new_guid(), 1, 0, Ping()))
    await delivered(peer, probe2)
    assert len(peer.messages_of(MessageType.VENDOR)) == 1


@pytest_twisted.ensureDeferred
async def test_flags_ggep_and_extensions_are_relayed_byte_for_byte(start_router: Any) -> None:
    router = start_router()
    sharer = await leaf(router, ["bach", "cello"])
    up = await join(router, headers=GTK_GNUTELLA_ULTRAPEER)
    asker = await join(router, headers=LIMEWIRE_ULTRAPEER)
    digest = bytes(range(20, 40))
    urn = ("urn:sha1:" + base64.b32encode(digest).decode()).encode()
    extensions = (
        urn
        + b"\x1c"
        + encode_ggep([GGEPExtension("H", b"\x01" + digest), GGEPExtension("M", b"\x04")])
        + b"\x1c"
        + b'<?xml version="1.0"?><audios><audio title="cello"/></audios>'
    )
    # LimeWire writes its flags little-endian: 0x00C0 | max hits -> bytes C0 20;
    # read big-endian (as gtk-gnutella does) that is the new-format mark + firewalled.
    payload = bytes([0xC0, 0x20]) + b"Bach Cello\x00" + extensions
    request = Message(new_guid(), MessageType.QUERY, 3, 0, payload)
    decoded = request.body()
    assert isinstance(decoded, Query) and decoded.is_new_flags_format
    assert decoded.requester_firewalled and decoded.max_hits == 0x20
    # The URN routes it: the leaf's table has the words but not the SHA1.
    assert QueryKeys.from_payload(payload).urns
    table = QrpTable.from_words(["bach", "cello", urn.decode()], 16)
    sharer.send(*qrp_messages(["bach", "cello", urn.decode()]))
    info = router.routing.peer_info(sharer.router_peer_id)
    await until(lambda: info is not None and info.table == table)
    asker.send(request)
    to_up = await delivered(up, request)
    to_leaf = await delivered(sharer, request)
    assert to_up.payload == payload and to_leaf.payload == payload


@pytest_twisted.ensureDeferred
async def test_a_broken_qrp_update_closes_the_link_with_bye_413(start_router: Any) -> None:
    router = start_router()
    peer = await leaf(router)
    peer.send(Message.from_body(new_guid(), 1, 0, RouteTablePatch(1, 1, 0, 4, b"\x00" * 8)))
    await peer.closed
    [bye] = peer.messages_of(MessageType.BYE)
    body = bye.body()
    assert isinstance(body, Bye) and body.code == 413 and "RESET" in body.reason
    assert router.routing.qrp_errors == 1


@pytest_twisted.ensureDeferred
async def test_ultrapeer_neighbours_get_our_leaves_merged_table(start_router: Any) -> None:
    router = start_router()
    await leaf(router, ["opera", "verdi"])
    neighbour = await join(router, headers=LIMEWIRE_ULTRAPEER)
    plain = await join(
        router,
        headers=tuple(
            pair for pair in LIMEWIRE_ULTRAPEER if pair[0] != "X-Ultrapeer-Query-Routing"
        ),
    )
    router._tick("router", "routes")  # the 10 s timer, fired now
    reset = await neighbour.next_message(reactor, lambda m: m.type == MessageType.QRP)
    receiver = QrpReceiver()
    body = reset.body()
    assert isinstance(body, RouteTableReset) and body.infinity == 7
    receiver.handle(body)
    while receiver.table is None:
        patch = await neighbour.next_message(reactor, lambda m: m.type == MessageType.QRP)
        patch_body = patch.body()
        assert isinstance(patch_body, RouteTablePatch)
        receiver.handle(patch_body)
    assert receiver.table.matches(QueryKeys.from_criteria("verdi opera"))
    assert not receiver.table.matches(QueryKeys.from_criteria("wagner"))
    # Only ultrapeers that said X-Ultrapeer-Query-Routing get one.
    marker = servent_query("marker")
    neighbour.send(marker)
    await delivered(plain, marker)
    assert not plain.messages_of(MessageType.QRP)
