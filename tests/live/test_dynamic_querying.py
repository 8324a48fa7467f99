"""Dynamic querying on loopback: two leaves and eight test ultrapeers around one router.

A leaf's query first reaches at most the probe's three ultrapeers, at TTL 2
or less; more ultrapeers get it, one per round, only while results are
short; a leaf that says it kept enough stops it; the query's state is gone
at the end.  Rounds are 0.2 s apart here instead of 3.7 s.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.servent import ServentProtocol
from gnurouter.edge.service import RouterService
from gnurouter.ops.prometheus import registry_for, render
from gnurouter.protocol.messages import Message, MessageType, QueryHit, QueryHitResult
from gnurouter.protocol.vendor import MessagesSupported, query_status_response
from tests.fixtures import LIMEWIRE_LEAF, LIMEWIRE_ULTRAPEER, delivered, join, servent_query, until
from tests.live.helpers import Leaf, leaf

ROUND = 0.2


async def neighbourhood(
    start_router: Any,
) -> tuple[RouterService, list[ServentProtocol], Leaf, Leaf]:
    router: RouterService = start_router(dq_round_interval=ROUND)
    ultrapeers = [await join(router, headers=LIMEWIRE_ULTRAPEER) for _ in range(8)]
    asker = await leaf(router, ["nothing"], headers=LIMEWIRE_LEAF)
    sharer = await leaf(router, ["popular", "song"], headers=LIMEWIRE_LEAF)
    return router, ultrapeers, asker, sharer


def copies_of(ultrapeers: list[ServentProtocol], request: Message) -> list[Message]:
    return [m for up in ultrapeers for m in up.received if m.guid == request.guid]


def hit_with(request: Message, results: int) -> Message:
    found = tuple(
        QueryHitResult(index, 1000, f"popular song {index}.ogg") for index in range(results)
    )
    body = QueryHit(6346, "10.0.0.9", 1000, found, b"S" * 16)
    return Message.from_body(request.guid, 4, 0, body)


@pytest_twisted.ensureDeferred
async def test_a_popular_query_stops_at_the_probe(start_router: Any) -> None:
    router, ultrapeers, asker, sharer = await neighbourhood(start_router)
    request = servent_query("popular song", ttl=4)
    asker.send(request)
    await delivered(sharer, request)  # the matching leaf at once
    await until(lambda: len(copies_of(ultrapeers, request)) == 3)
    probed = [up for up in ultrapeers if any(m.guid == request.guid for m in up.received)]
    assert all(m.ttl <= 2 and m.hops == 1 for m in copies_of(ultrapeers, request))
    # One probed ultrapeer's network answers with 60 results: more than the leaf wants.
    probed[0].send(hit_with(request, 60))
    back = await asker.next_message(reactor, lambda m: m.type == MessageType.QUERY_HIT)
    assert back.guid == request.guid
    await until(lambda: len(router.routing.dynamic) == 0, timeout=10)
    assert len(copies_of(ultrapeers, request)) == 3  # nobody beyond the probe
    summary = router.snapshot()["router"]["dynamic_querying"]
    [done] = [q for q in summary["recent"] if q["guid"] == request.guid.hex()]
    assert done["outcome"] == "enough" and done["hits"] == 60 and done["ultrapeers"] == 3
    text = render(registry_for(router.snapshot)).decode()
    assert "gnurouter_dynamic_queries_total 1.0" in text
    assert 'gnurouter_dynamic_queries_ended_total{outcome="enough"} 1.0' in text


@pytest_twisted.ensureDeferred
async def test_a_rare_query_reaches_more_ultrapeers_one_round_at_a_time(start_router: Any) -> None:
    router, ultrapeers, asker, _ = await neighbourhood(start_router)
    request = servent_query("rare bootleg", ttl=4)
    asker.send(request)
    await until(lambda: len(copies_of(ultrapeers, request)) == 3)
    running = router.routing.dynamic.active[request.guid]
    assert len(running.queried) == 3  # the probe, and nothing more yet
    await until(lambda: len(router.routing.dynamic) == 0, timeout=20)
    arrived = copies_of(ultrapeers, request)
    assert len(arrived) == 8  # all of them, once each
    assert sorted(m.ttl for m in arrived)[:3] == [2, 2, 2]
    assert max(m.ttl for m in arrived) == 3  # what they said they take (X-Max-TTL 3)
    [done] = router.routing.dynamic.recent
    assert done["outcome"] == "no-ultrapeers" and done["rounds"] == 6


@pytest_twisted.ensureDeferred
async def test_the_leaf_guides_the_query_and_its_answer_stops_it(start_router: Any) -> None:
    router, ultrapeers, asker, _ = await neighbourhood(start_router)
    # It lists the Query Status Request: it will be asked what it kept.
    asker.send(MessagesSupported(((b"BEAR", 11, 1), (b"BEAR", 12, 1))).message())
    request = servent_query("guided search", ttl=4)
    asker.send(request)
    asked = await asker.next_message(
        reactor, lambda m: m.type == MessageType.VENDOR and m.guid == request.guid, timeout=10
    )
    assert asked.payload[:8] == b"BEAR\x0b\x00\x01\x00"  # BEAR/11v1, empty
    assert len(copies_of(ultrapeers, request)) == 3
    asker.send(query_status_response(request.guid, 200))  # plenty, from all its ultrapeers
    await until(lambda: len(router.routing.dynamic) == 0)
    assert len(copies_of(ultrapeers, request)) == 3
    assert router.routing.dynamic.recent[-1]["outcome"] == "enough"
    totals = router.snapshot()["router"]["dynamic_querying"]["leaves"][str(asker.router_peer_id)]
    assert totals["status_requests"] == 1 and totals["status_responses"] == 1


@pytest_twisted.ensureDeferred
async def test_a_leaf_that_leaves_takes_its_queries_state_with_it(start_router: Any) -> None:
    router, ultrapeers, asker, _ = await neighbourhood(start_router)
    request = servent_query("rare again", ttl=4)
    asker.send(request)
    await until(lambda: len(copies_of(ultrapeers, request)) == 3)
    asker.close()
    await until(lambda: len(router.routing.dynamic) == 0)
    assert router.routing.dynamic.recent[-1]["outcome"] == "leaf-gone"
    assert router.snapshot()["router"]["dynamic_querying"]["launched"] == 1
