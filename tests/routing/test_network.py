"""Four routers on loopback, with servents at the edges: the routing rules end to end.

Topology (router links), chosen so that a flood has two paths to most routers
and duplicates must be suppressed:

    r1 ── r2
    │ \\    │
    r4 ── r3

Each router also has one servent: s1 at r1, s2 at r2, s3 at r3, s4 at r4.
They say no X-Ultrapeer (old-style servents, routed like ultrapeers): a leaf
would have its queries run by dynamic querying and get no relayed pings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.servent import DEFAULT_HEADERS, ServentProtocol, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.protocol.messages import (
    Bye,
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    QueryHit,
    new_guid,
)
from tests.fixtures import (
    DecisionWatch,
    at_least_established,
    delivered,
    query,
    query_hit,
    raw_connect,
    shake_hands,
)

LINKS = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
EDGE_HEADERS = tuple(pair for pair in DEFAULT_HEADERS if pair[0] != "X-Ultrapeer")


async def build_network(
    start_router: Callable[..., RouterService], **config: Any
) -> list[RouterService]:
    routers = [start_router(**config) for _ in range(4)]
    degree = [0, 0, 0, 0]
    for a, b in LINKS:
        routers[a].connect(routers[b].listening_address())
        degree[a] += 1
        degree[b] += 1
    for router, wanted in zip(routers, degree, strict=True):
        await at_least_established(router, wanted)
    return routers


async def attach_servents(routers: list[RouterService]) -> list[ServentProtocol]:
    servents = []
    for index, router in enumerate(routers):
        host, port = router.listening_address()
        pong = Pong(port=7000 + index, ip=f"10.9.9.{index + 1}", files=index, kbytes=index)
        servents.append(
            await connect_servent(reactor, host, port, answer_pings=pong, headers=EDGE_HEADERS)
        )
    for index, router in enumerate(routers):
        await at_least_established(router, sum(1 for link in LINKS if index in link) + 1)
    return servents


@pytest_twisted.ensureDeferred
async def test_query_floods_once_and_hit_and_push_route_back(start_router: Any) -> None:
    routers = await build_network(start_router)
    watch = DecisionWatch(*routers)
    s1, s2, s3, s4 = await attach_servents(routers)

    request = query("free music", ttl=7)
    s1.send(request)
    copies = [await delivered(servent, request) for servent in (s2, s3, s4)]
    # Every router relays a flood once, to every router neighbour but the one
    # it heard it from first, so routers receive 2|E| - n + 1 copies in all;
    # all but n of them are duplicates.
    expected_receptions = 2 * len(LINKS) - len(routers) + 1

    await watch.wait_until(lambda: len(watch.for_guid(request.guid)) >= expected_receptions)
    decisions = [d for _, d in watch.for_guid(request.guid)]
    assert sum(d.action == "forwarded" for d in decisions) == len(routers)
    assert sum(d.reason == "duplicate" for d in decisions) == expected_receptions - len(routers)
    for servent in (s2, s3, s4):
        assert [m.guid for m in servent.received].count(request.guid) == 1
    assert not any(m.guid == request.guid for m in s1.received)
    for copy in copies:
        assert copy.payload == request.payload  # relayed byte for byte
        assert copy.hops >= 1 and copy.hops + copy.ttl <= request.ttl

    # s3 answers; the hit retraces the query's path to s1 only.
    servent_id = bytes(range(16))
    hit = query_hit(
        request.guid,
        servent_id,
        ip="10.9.9.3",
        speed=1000,
        index=5,
        size=4096,
        name="free music.ogg",
    )
    s3.send(hit)
    got = await s1.next_message(reactor, lambda m: m.type == MessageType.QUERY_HIT)
    assert got.guid == request.guid and got.payload == hit.payload
    assert QueryHit.servent_id_of(got.payload) == servent_id

    # A push for that servent id follows the hit's path back to s3.
    push = Message.from_body(new_guid(), 7, 0, Push(servent_id, 5, "10.9.9.1", 6346))
    s1.send(push)
    arrived = await s3.next_message(reactor, lambda m: m.type == MessageType.PUSH)
    assert arrived.guid == push.guid and arrived.payload == push.payload
    assert not s2.messages_of(MessageType.QUERY_HIT) and not s2.messages_of(MessageType.PUSH)
    assert not s4.messages_of(MessageType.QUERY_HIT) and not s4.messages_of(MessageType.PUSH)


@pytest_twisted.ensureDeferred
async def test_pongs_route_back_to_the_pinger(start_router: Any) -> None:
    routers = await build_network(start_router)
    s1, s2, s3, s4 = await attach_servents(routers)
    ping = Message.from_body(new_guid(), 7, 0, Ping())
    s1.send(ping)
    wanted = {("10.9.9.2", 7001), ("10.9.9.3", 7002), ("10.9.9.4", 7003)}
    routers_wanted = {router.listening_address()[1] for router in routers}
    seen_servents: set[tuple[str, int]] = set()
    seen_routers: set[int] = set()
    while not (wanted <= seen_servents and routers_wanted <= seen_routers):
        pong = await s1.next_message(reactor, lambda m: m.type == MessageType.PONG)
        assert pong.guid == ping.guid
        body = pong.body()
        assert isinstance(body, Pong)
        seen_servents.add((body.ip, body.port))
        seen_routers.add(body.port)
    # Nobody else gets replies that were meant for s1.
    for servent in (s2, s3, s4):
        assert not any(m.type == MessageType.PONG and m.guid == ping.guid for m in servent.received)


@pytest_twisted.ensureDeferred
async def test_duplicates_and_expired_ttl_are_dropped(start_router: Any) -> None:
    routers = await build_network(start_router, max_ttl=7)
    watch = DecisionWatch(routers[0])
    s1, s2, _, _ = await attach_servents(routers)

    first = query("once", ttl=7)
    s1.send(first)
    await delivered(s2, first)
    s1.send(first)  # the same GUID again, straight from the same servent
    await watch.wait_until(
        lambda: any(d.reason == "duplicate" for _, d in watch.for_guid(first.guid))
    )

    expiring = query("expires", ttl=1)
    s1.send(expiring)
    await watch.wait_until(lambda: bool(watch.for_guid(expiring.guid)))
    [(_, decision)] = watch.for_guid(expiring.guid)
    assert decision.reason == "ttl-expired" and not decision.sends

    clamped = query("clamped", ttl=12)  # above max_ttl: relayed with hops+ttl clamped
    s1.send(clamped)
    relayed = await delivered(s2, clamped)
    assert relayed.hops + relayed.ttl <= 7

    # A marker query sent after the others reached s2 through r1: by FIFO on
    # the r1 links, the duplicate and the expired query would have arrived first.
    marker = query("marker", ttl=7)
    s1.send(marker)
    await delivered(s2, marker)
    assert [m.guid for m in s2.received].count(first.guid) == 1
    assert not any(m.guid == expiring.guid for m in s2.received)


@pytest_twisted.ensureDeferred
async def test_garbage_peer_is_disconnected_and_others_keep_routing(start_router: Any) -> None:
    routers = await build_network(start_router)
    s1, s2, s3, s4 = await attach_servents(routers)
    raw = await raw_connect(routers[0].listening_address())
    await shake_hands(raw, [("User-Agent", "garbage/1.0")], final=None)
    assert raw.data.startswith(b"GNUTELLA/0.6 200")
    raw.write(b"GNUTELLA/0.6 200 OK\r\n\r\n")
    # A good query, then in the same segment a header announcing a 4 GB
    # payload: the query is still routed, and nothing can frame past the rest.
    good = query("before the garbage", ttl=7)
    raw.write(good.encode() + b"\x00" * 16 + b"\x80\x07\x00" + b"\xff\xff\xff\xff" + b"junk")
    lost = raw.lost
    lost.addTimeout(10, reactor)
    await lost
    assert routers[0].stages["parser"].handler.protocol_errors >= 1  # type: ignore[attr-defined]
    await delivered(s1, good)
    # It was told why, with a Bye, before the router closed the link.
    [body] = raw.byes()
    assert isinstance(body, Bye) and body.code >= 400 and "length" in body.reason.lower()

    after = query("still routing", ttl=7)
    s1.send(after)
    for servent in (s2, s3, s4):
        await delivered(servent, after)
