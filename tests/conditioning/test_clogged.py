"""A neighbour that stops reading: its queue sheds least important first, then it is closed.

The slow peer is a real socket with a 4 KB receive buffer that does the
handshake and then never reads again, like a servent behind a saturated
modem.  Meanwhile a sender floods queries through the router to a fast peer.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from gnurouter.conditioning.clogged import OutputQueueLimits, PeerOutputQueue, importance
from gnurouter.protocol.messages import (
    Bye,
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    VendorMessage,
    new_guid,
)
from tests.fixtures import delivered, join, queries, query, query_hit, wait_for

SLOW_SERVENT_ID = bytes(range(100, 116))


def handshake_then_stop_reading(address: tuple[str, int]) -> socket.socket:
    """Blocking: a 0.6 handshake on a socket with a tiny receive window."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.settimeout(10)
    sock.connect(address)
    sock.sendall(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: slow-modem/1.0\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        assert chunk, "router closed during the handshake"
        reply += chunk
    assert reply.startswith(b"GNUTELLA/0.6 200")
    sock.sendall(b"GNUTELLA/0.6 200 OK\r\n\r\n")
    return sock


@pytest_twisted.ensureDeferred
async def test_slow_peer_sheds_queries_first_then_is_closed_with_bye_502(
    start_router: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Clogged-peer handling alone: nothing else may shed the flood.
    router = start_router(
        conditioning="clogged", peer_output_max_bytes=32 * 1024, peer_output_max_messages=400
    )
    router.factory.close_timeout = 0.5
    sender = await join(router)
    fast = await join(router)
    slow = await threads.deferToThread(handshake_then_stop_reading, router.listening_address())
    try:
        await wait_for(router, lambda: len(router.peers.established()) == 3)
        [slow_peer] = [p for p in router.peers if p.user_agent == "slow-modem/1.0"]
        # The slow peer answers a query (a write, not a read): its servent id
        # is now routable, so pushes for it will head into its clogged queue.
        anchor = query("anchor 0")
        sender.send(anchor)
        await delivered(fast, anchor)  # routed: route known
        hit = query_hit(
            anchor.guid, SLOW_SERVENT_ID, ttl=3, ip="10.0.0.7", speed=10, size=5, name="x"
        )
        await threads.deferToThread(slow.sendall, hit.encode())
        await sender.next_message(reactor, lambda m: m.type == MessageType.QUERY_HIT)

        # Phase 1: a query flood. The slow peer's queue fills and sheds
        # queries; the fast peer gets every single one.
        connection = router.stages["connection"]
        sent = 0
        for round_number in range(200):
            batch = queries(500, f"flood {round_number}")
            sender.send(*batch)
            sent += len(batch)
            await delivered(fast, batch[-1])
            if slow_peer.counters.drops.get("peer-clogged", 0) > 0:
                break
        assert slow_peer.link.write_paused
        assert set(connection.drops["peer-clogged"]) == {"query"}
        assert slow_peer.output.count <= 400 and slow_peer.output.bytes <= 32 * 1024
        assert slow_peer.established  # shedding queries was enough
        fast_queries = [m for m in fast.received if m.type == MessageType.QUERY]
        assert len(fast_queries) == sent + 1  # every flood query and the anchor
        for peer in router.peers:
            if peer is not slow_peer:
                assert "peer-clogged" not in peer.counters.drops

        # Phase 2: pushes may never be dropped; once they alone overflow the
        # queue, the peer is closed with Bye 502 and the log says who.
        for _ in range(20):
            pushes = [
                Message.from_body(new_guid(), 3, 0, Push(SLOW_SERVENT_ID, 1, "10.0.0.1", 6346))
                for _ in range(200)
            ]
            sender.send(*pushes)
            probe = query("probe 0")
            sender.send(probe)
            await delivered(fast, probe)
            if not slow_peer.established:
                break
        await wait_for(router, lambda: slow_peer not in list(router.peers))
        assert "push" not in connection.drops["peer-clogged"]  # shed: never; discarded at close
        assert connection.drops["closed-clogged"]["push"] > 0
        messages = [r.getMessage() for r in caplog.records]
        assert any(slow_peer.label in m and "Bye 502" in m for m in messages), messages
        # The fast peer still routes.
        after = query("after 0")
        sender.send(after)
        await delivered(fast, after)
    finally:
        slow.close()


def test_shedding_order_follows_gtk_gnutella() -> None:
    def message(body: Any, hops: int = 0, ttl: int = 3) -> Message:
        return Message.from_body(new_guid(), ttl, hops, body)

    far_query = message(Query(0, "far"), hops=5)
    near_query = message(Query(0, "near"), hops=1)
    ping = message(Ping(), hops=2)
    relayed_pong = message(Pong(1, "10.0.0.1", 0, 0), hops=2)
    own_pong = message(Pong(2, "10.0.0.2", 0, 0), hops=0)
    near_hit = message(QueryHit(1, "10.0.0.3", 1, (), bytes(16)), hops=1)
    far_hit = message(QueryHit(1, "10.0.0.3", 1, (), bytes(16)), hops=4)
    push = message(Push(bytes(16), 1, "10.0.0.4", 1))
    bye = message(Bye(200, "bye"))
    vendor = message(VendorMessage(b"GTKG", 1, 1, b""))
    queue = PeerOutputQueue()
    limits = OutputQueueLimits(max_bytes=1 << 20, max_messages=4)
    everything = [push, far_hit, bye, near_query, relayed_pong, own_pong, ping]
    everything += [near_hit, far_query, vendor]
    outcome = limits.offer(queue, everything)
    # Six had to go: least important first, and never a Bye, push, vendor or own pong.
    assert outcome.dropped == [ping, far_query, near_query, relayed_pong, near_hit, far_hit]
    assert not outcome.clogged
    assert queue.take_all() == [push, bye, own_pong, vendor]
    # A fifth undroppable message cannot fit: that is a clogged peer.
    again = limits.offer(
        queue, [push, bye, own_pong, vendor, message(Push(bytes(16), 2, "10.0.0.5", 1))]
    )
    assert again.clogged and not again.dropped
    assert importance(far_hit) > importance(near_hit)  # replies: more hops, more valuable
    assert importance(near_query) > importance(far_query)  # requests: the reverse
