"""Links as real servents open them: 0.6 with deflate, 0.4, refusals, Bye on close and shutdown."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import defer, endpoints, protocol, reactor

from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.handshake import Headers
from gnurouter.protocol.messages import Bye, Message, MessageType, Ping, Query, new_guid
from tests.conftest import DecisionWatch, join, wait_for


class RawPeer(protocol.Protocol):
    """Speaks literal bytes and records everything it hears."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._waiting: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for entry in list(self._waiting):
            condition, waiting = entry
            if condition():
                self._waiting.remove(entry)
                waiting.callback(None)

    def _wait(self, condition: Callable[[], bool], timeout: float) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if condition():
            waiting.callback(None)
        else:
            self._waiting.append((condition, waiting))
            waiting.addTimeout(timeout, reactor)
        return waiting

    def until(self, marker: bytes, timeout: float = 10.0) -> defer.Deferred[None]:
        return self._wait(lambda: marker in self.data, timeout)

    def more_than(self, length: int, timeout: float = 10.0) -> defer.Deferred[None]:
        return self._wait(lambda: len(self.data) > length, timeout)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


async def raw_connect(address: tuple[str, int]) -> RawPeer:
    peer = RawPeer()
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, *address), peer)
    return peer


GTK_GNUTELLA_ULTRAPEER = (
    b"GNUTELLA CONNECT/0.6\r\n"
    b"User-Agent: gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)\r\n"
    b"Pong-Caching: 0.1\r\n"
    b"Bye-Packet: 0.1\r\n"
    b"GGEP: 0.5\r\n"
    b"Vendor-Message: 0.2\r\n"
    b"Remote-IP: 127.0.0.1\r\n"
    b"Accept-Encoding: deflate\r\n"
    b"X-Token: ignored-by-us\r\n"
    b"X-Max-TTL: 4\r\n"
    b"X-Degree: 32\r\n"
    b"X-Query-Routing: 0.2\r\n"
    b"X-Ultrapeer-Query-Routing: 0.1\r\n"
    b"X-Dynamic-Querying: 0.1\r\n"
    b"X-Ultrapeer: True\r\n"
    b"\r\n"
)


@pytest_twisted.ensureDeferred
async def test_deflate_link_from_a_gtk_gnutella_shaped_ultrapeer(start_router: Any) -> None:
    router = start_router()
    other = await join(router)
    peer = await raw_connect(router.listening_address())
    peer.transport.write(GTK_GNUTELLA_ULTRAPEER)
    await peer.until(b"\r\n\r\n")
    head, _, rest = bytes(peer.data).partition(b"\r\n\r\n")
    assert head.startswith(b"GNUTELLA/0.6 200")
    reply = Headers.from_pairs(
        tuple(line.split(": ", 1))
        for line in head.decode().split("\r\n")[1:]  # type: ignore[misc]
    )
    assert reply.get("Content-Encoding") == "deflate"
    assert reply.get("X-Ultrapeer") == "True"
    assert reply.get("User-Agent")
    # Our final 200 accepts deflate the other way too; from here both
    # directions are one zlib stream each.
    peer.transport.write(b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n")
    await wait_for(router, lambda: len(router.peers.established()) == 2)
    compressor = zlib.compressobj()
    request = Message.from_body(new_guid(), 4, 0, Query(flags=0, criteria="deflated"))
    peer.transport.write(
        compressor.compress(request.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    )
    relayed = await other.next_message(reactor, lambda m: m.type == MessageType.QUERY)
    assert relayed.guid == request.guid and relayed.payload == request.payload
    # And the router's output to the deflate peer is a valid zlib stream.
    ping = Message.from_body(new_guid(), 1, 0, Ping())
    peer.transport.write(compressor.compress(ping.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH))
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
    peer.transport.write(b"GNUTELLA CONNECT/0.4\n\n")
    await peer.until(b"GNUTELLA OK\n\n")
    assert bytes(peer.data).startswith(b"GNUTELLA OK\n\n")
    request = Message.from_body(new_guid(), 3, 0, Query(flags=0, criteria="old school"))
    peer.transport.write(request.encode())
    relayed = await other.next_message(reactor, lambda m: m.guid == request.guid)
    assert relayed.payload == request.payload


@pytest_twisted.ensureDeferred
async def test_full_router_refuses_with_503_and_try_ultrapeers(start_router: Any) -> None:
    router = start_router(max_peers=1)
    router.hosts.add(("10.20.30.40", 6346))
    await join(router)
    peer = await raw_connect(router.listening_address())
    peer.transport.write(
        b"GNUTELLA CONNECT/0.6\r\nUser-Agent: LimeWire/5.5.16\r\nX-Ultrapeer: False\r\n\r\n"
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
    good = Message.from_body(new_guid(), 3, 0, Query(flags=0, criteria="after bad"))
    sender.send(bad, good)
    await receiver.next_message(reactor, lambda m: m.guid == good.guid)
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
    burst = [
        Message.from_body(new_guid(), 3, 0, Query(flags=0, criteria=f"burst {i}"))
        for i in range(300)
    ]
    sender.send(*burst)
    for receiver in receivers:
        await receiver.next_message(reactor, lambda m: m.guid == burst[-1].guid)
        relayed = [m for m in receiver.received if m.type == MessageType.QUERY]
        assert [m.guid for m in relayed] == [m.guid for m in burst]
        assert {(m.ttl, m.hops) for m in relayed} == {(2, 1)}
        assert [m.payload for m in relayed] == [m.payload for m in burst]
    # Consecutive queries for the same neighbours travel as one event.
    assert connection.counters.enqueued - before < len(burst) / 4
