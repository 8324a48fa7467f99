"""Links as real servents open them: 0.6 with deflate, 0.4, refusals, Bye on close and shutdown."""

from __future__ import annotations

import zlib
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.messages import Bye, Message, MessageType, Ping, new_guid
from tests.fixtures import (
    GTK_GNUTELLA_ULTRAPEER,
    DecisionWatch,
    block,
    delivered,
    join,
    parse_block,
    queries,
    query,
    raw_connect,
    wait_for,
)


@pytest_twisted.ensureDeferred
async def test_deflate_link_from_a_gtk_gnutella_shaped_ultrapeer(start_router: Any) -> None:
    router = start_router()
    other = await join(router)
    peer = await raw_connect(router.listening_address())
    peer.write(
        block("GNUTELLA CONNECT/0.6", (*GTK_GNUTELLA_ULTRAPEER, ("Accept-Encoding", "deflate")))
    )
    await peer.until(b"\r\n\r\n")
    head, _, rest = bytes(peer.data).partition(b"\r\n\r\n")
    assert head.startswith(b"GNUTELLA/0.6 200")
    _, reply, _ = parse_block(bytes(peer.data))
    assert reply.get("Content-Encoding") == "deflate"
    assert reply.get("X-Ultrapeer") == "True"
    assert reply.get("User-Agent")
    # Our final 200 accepts deflate the other way too; from here both
    # directions are one zlib stream each.
    peer.write(block("GNUTELLA/0.6 200 OK", [("Content-Encoding", "deflate")]))
    await wait_for(router, lambda: len(router.peers.established()) == 2)
    compressor = zlib.compressobj()
    request = query("deflated", ttl=4)
    peer.write(compressor.compress(request.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))
    relayed = await other.next_message(reactor, lambda m: m.type == MessageType.QUERY)
    assert relayed.guid == request.guid and relayed.payload == request.payload
    # And the router's output to the deflate peer is a valid zlib stream.
    ping = Message.from_body(new_guid(), 1, 0, Ping())
    peer.write(compressor.compress(ping.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))
    decompressor = zlib.decompressobj()
    framer = MessageFramer()
    messages = framer.feed(decompressor.decompress(rest))
    consumed = len(head) + 4 + len(rest)
    while not any(m.type == MessageType.PONG for m in messages):
        await peer.more_than(consumed)
        messages += framer.feed(decompressor.decompress(bytes(peer.data[consumed:])))
        consumed = len(peer.data)
    pong = next(m for m in messages if m.type == MessageType.PONG)
    assert pong.guid == ping.guid


@pytest_twisted.ensureDeferred
async def test_gnutella_04_connect_is_accepted(start_router: Any) -> None:
    router = start_router()
    other = await join(router)
    peer = await raw_connect(router.listening_address())
    peer.write(b"GNUTELLA CONNECT/0.4\n\n")
    await peer.until(b"GNUTELLA OK\n\n")
    assert bytes(peer.data).startswith(b"GNUTELLA OK\n\n")
    request = query("old school")
    peer.write(request.encode())
    relayed = await delivered(other, request)
    assert relayed.payload == request.payload


@pytest_twisted.ensureDeferred
async def test_full_router_refuses_with_503_and_try_ultrapeers(start_router: Any) -> None:
    router = start_router(max_peers=1)
    router.hosts.add(("10.20.30.40", 6346))
    await join(router)
    peer = await raw_connect(router.listening_address())
    peer.write(
        block("GNUTELLA CONNECT/0.6", [("User-Agent", "LimeWire/5.5.16"), ("X-Ultrapeer", "False")])
    )
    await peer.lost
    head = bytes(peer.data).split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("GNUTELLA/0.6 503")
    assert "X-Try-Ultrapeers: 10.20.30.40:6346" in head


@pytest_twisted.ensureDeferred
async def test_shutdown_sends_bye_to_every_peer(start_router: Any) -> None:
    router = start_router()
    servents = [await join(router) for _ in range(2)]
    await router.stopService()
    for servent in servents:
        await servent.closed
        byes = servent.messages_of(MessageType.BYE)
        assert len(byes) == 1
        body = byes[0].body()
        assert isinstance(body, Bye) and body.code == 200


@pytest_twisted.ensureDeferred
async def test_bye_from_peer_closes_the_link(start_router: Any) -> None:
    router = start_router()
    servent = await join(router)
    servent.send(Message.from_body(new_guid(), 1, 0, Bye(200, "going away")))
    await servent.closed
    await wait_for(router, lambda: len(router.peers) == 0)


@pytest_twisted.ensureDeferred
async def test_malformed_payload_is_dropped_counted_and_link_kept(start_router: Any) -> None:
    router = start_router()
    watch = DecisionWatch(router)
    sender = await join(router)
    receiver = await join(router)
    # A pong must be 14 bytes (+GGEP): 5 bytes is malformed, but framed fine.
    bad = Message(new_guid(), MessageType.PONG, 3, 0, b"\x01\x02\x03\x04\x05")
    good = query("after bad")
    sender.send(bad, good)
    await delivered(receiver, good)
    parser = router.stages["parser"]
    assert parser.drops["malformed"]["pong"] == 1
    assert [e.message.guid for e, _ in watch.seen if e.message.guid == bad.guid] == []
    snapshot = router.snapshot()
    [sender_row] = [p for p in snapshot["peers"] if p["malformed"] == 1]
    assert sender_row["state"] == "established"


@pytest_twisted.ensureDeferred
async def test_silent_socket_is_closed_when_its_handshake_times_out(start_router: Any) -> None:
    router = start_router(handshake_timeout=0.2, route_cleanup_interval=0.1)
    peer = await raw_connect(router.listening_address())
    lost = peer.lost
    lost.addTimeout(10, reactor)
    await lost
    assert peer.data == b""
    await wait_for(router, lambda: len(router.peers) == 0)


@pytest_twisted.ensureDeferred
async def test_a_burst_reaches_every_neighbour_in_order_through_few_connection_events(
    start_router: Any,
) -> None:
    # No conditioning: the default query filter would shed part of the burst.
    router = start_router(conditioning="none")
    sender = await join(router)
    receivers = [await join(router, deflate=True), await join(router)]
    connection = router.stages["connection"]
    before = connection.counters.enqueued
    burst = queries(300, "burst")
    sender.send(*burst)
    for receiver in receivers:
        await delivered(receiver, burst[-1])
        relayed = [m for m in receiver.received if m.type == MessageType.QUERY]
        assert [m.guid for m in relayed] == [m.guid for m in burst]
        assert {(m.ttl, m.hops) for m in relayed} == {(2, 1)}
        assert [m.payload for m in relayed] == [m.payload for m in burst]
    # Consecutive queries for the same neighbours travel as one event.
    assert connection.counters.enqueued - before < len(burst) / 4
