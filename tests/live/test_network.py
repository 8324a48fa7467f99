"""A small ultrapeer network on loopback: a leaf's query crosses routers to a sharing leaf.

    asker ── r1 ── r2 ── r3 ── sharer ("free music", "ogg")
                    │      └── bystander ("jazz")
                    └── other ("chess")

r1, r2, r3 are routers (ultrapeers, linked by their own outgoing handshakes);
the others are leaves with QRP tables.  The query goes r1 -> r2 -> r3 by
flooding and only to the leaf whose table matches; the hit retraces the path.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.service import RouterService
from gnurouter.protocol.messages import MessageType
from tests.fixtures import (
    GTK_GNUTELLA_LEAF,
    LIMEWIRE_LEAF,
    LIMEWIRE_ULTRAPEER,
    DecisionWatch,
    at_least_established,
    delivered,
    joined,
    query_hit,
    servent_query,
    until,
    wait_for,
)
from tests.live.helpers import leaf


async def chain(start_router: Callable[..., RouterService], count: int) -> list[RouterService]:
    routers = [start_router() for _ in range(count)]
    for left, right in pairwise(routers):
        left.connect(right.listening_address())
    for index, router in enumerate(routers):
        await at_least_established(router, (index > 0) + (index < count - 1))
    for router in routers:
        assert {p.role for p in router.peers.established()} == {"ultrapeer"}
    return routers


@pytest_twisted.ensureDeferred
async def test_a_leaf_query_reaches_a_sharing_leaf_two_routers_away_and_the_hit_returns(
    start_router: Any,
) -> None:
    r1, r2, r3 = await chain(start_router, 3)
    watch = DecisionWatch(r1, r2, r3)
    asker = await leaf(r1, ["nothing", "shared"], headers=LIMEWIRE_LEAF)
    other = await leaf(r2, ["chess"], headers=GTK_GNUTELLA_LEAF)
    sharer = await leaf(r3, ["free", "music", "ogg"], headers=GTK_GNUTELLA_LEAF)
    bystander = await leaf(r3, ["jazz"], headers=LIMEWIRE_LEAF)

    request = servent_query("free music", ttl=3)
    asker.send(request)
    arrived = await delivered(sharer, request)
    assert arrived.payload == request.payload
    assert (arrived.hops, arrived.ttl) == (3, 1)  # r1, r2, r3 each relayed it once
    # Every router decided once, and forwarded; nobody else's leaf got it.
    await watch.wait_until(lambda: len(watch.for_guid(request.guid)) == 3)
    assert [d.action for _, d in watch.for_guid(request.guid)] == ["forwarded"] * 3
    # A marker flood proves the other leaves had their chance.
    chess, jazz = servent_query("chess", ttl=3), servent_query("jazz", ttl=3)
    asker.send(chess, jazz)
    await delivered(other, chess)
    await delivered(bystander, jazz)
    for quiet in (other, bystander):
        assert not any(m.guid == request.guid for m in quiet.received)

    servent_id = bytes(range(100, 116))
    hit = query_hit(
        request.guid, servent_id, ttl=4, ip="10.9.9.3", speed=1000, size=4096, name="free music.ogg"
    )
    sharer.send(hit)
    back = await asker.next_message(reactor, lambda m: m.type == MessageType.QUERY_HIT)
    assert back.guid == request.guid and back.payload == hit.payload
    assert back.hops == 3
    for quiet in (other, bystander):
        assert not quiet.messages_of(MessageType.QUERY_HIT)


@pytest_twisted.ensureDeferred
async def test_last_hop_queries_follow_the_neighbour_ultrapeers_tables(start_router: Any) -> None:
    # r1's neighbours r2 and r3 each send r1 the merged table of their leaves;
    # a query reaching r1 with one hop left goes only where a leaf may match.
    r1 = start_router()
    r2 = start_router()
    r3 = start_router()
    r2.connect(r1.listening_address())
    r3.connect(r1.listening_address())
    await wait_for(r1, lambda: len(r1.peers.established()) == 2)
    # An ultrapeer's query (a leaf's own would be run by dynamic querying instead).
    asker, [asker_peer] = await joined(r1, headers=LIMEWIRE_ULTRAPEER)
    sharer = await leaf(r2, ["rare", "bootleg"])
    elsewhere = await leaf(r3, ["common"])
    for router in (r2, r3):
        router._tick("router", "routes")  # their QRP updates, now rather than in 10 s

    def tables_in() -> bool:
        infos = [
            r1.routing.peer_info(p.id)
            for p in r1.peers.established()
            if p.role != "leaf" and p is not asker_peer
        ]
        return len(infos) == 2 and all(i is not None and i.table is not None for i in infos)

    await until(tables_in)
    request = servent_query("rare bootleg", ttl=2)  # r1 relays it with TTL 1: the last hop
    asker.send(request)
    await delivered(sharer, request)
    marker = servent_query("common", ttl=2)
    asker.send(marker)
    await delivered(elsewhere, marker)
    assert not any(m.guid == request.guid for m in elsewhere.received)
    # Each neighbour was spared exactly the one query its leaves cannot answer.
    withheld = [
        r1.routing.peer_info(p.id).withheld
        for p in r1.peers.established()
        if p.role == "ultrapeer" and p is not asker_peer
    ]
    assert withheld == [{"qrp-miss": 1}, {"qrp-miss": 1}]
