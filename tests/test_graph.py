"""The stage graph is the whole truth: every event a stage is handed travels a declared edge.

A real router on loopback gets the traffic of a working day in miniature
(handshakes, every routed message type, a refused peer, garbage, timers,
shutdown); every event any stage is handed is recorded with the path it took
(`enqueue` or `housekeeping`) and checked against `graph.STAGE_GRAPH` and
`graph.EXTERNAL_EDGES`.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, endpoints, protocol, reactor

from gnurouter.edge.servent import DEFAULT_HEADERS
from gnurouter.graph import EXTERNAL_EDGES, STAGE_GRAPH, describe
from gnurouter.protocol.messages import (
    Message,
    Ping,
    Pong,
    Query,
    QueryHit,
    QueryHitResult,
    new_guid,
)
from gnurouter.seda.stage import Stage
from tests.conftest import join, wait_for
from tests.fixtures import RawPeer


def declared() -> set[tuple[str, str, str]]:
    edges = [edge for spec in STAGE_GRAPH for edge in spec.edges] + list(EXTERNAL_EDGES)
    return {(edge.target, event, edge.path) for edge in edges for event in edge.events}


class Recorded(set[tuple[str, str, str]]):
    """What the stages were handed, with a Deferred for one record to arrive."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: dict[tuple[str, str, str], defer.Deferred[None]] = {}

    def note(self, item: tuple[str, str, str]) -> None:
        self.add(item)
        waiting = self._waiting.pop(item, None)
        if waiting is not None:
            waiting.callback(None)

    def arrival(self, item: tuple[str, str, str]) -> defer.Deferred[None]:
        if item in self:
            return defer.succeed(None)
        waiting = self._waiting.setdefault(item, defer.Deferred())
        waiting.addTimeout(10, reactor)
        return waiting


def record_everything(stages: dict[str, Stage]) -> Recorded:
    seen = Recorded()
    for name, stage in stages.items():
        enqueue_many, housekeeping = stage.enqueue_many, stage.enqueue_housekeeping

        def many(events: Any, _name: str = name, _inner: Any = enqueue_many) -> list[Any]:
            events = list(events)
            for event in events:
                seen.note((_name, type(event).__name__, "enqueue"))
            return _inner(events)

        def keep(event: Any, _name: str = name, _inner: Any = housekeeping) -> None:
            seen.note((_name, type(event).__name__, "housekeeping"))
            _inner(event)

        stage.enqueue_many = many  # type: ignore[method-assign]

        def one(event: Any, _many: Any = many) -> bool:
            return not _many([event])

        stage.enqueue = one  # type: ignore[method-assign]
        stage.enqueue_housekeeping = keep  # type: ignore[method-assign]
    return seen


@pytest_twisted.ensureDeferred
async def test_every_event_travels_a_declared_edge(start_router: Any) -> None:
    router = start_router(deflate=False, max_peers=3)
    seen = record_everything(router.stages)
    asker, answerer = await join(router), await join(router)
    question = Message.from_body(new_guid(), 3, 0, Query(0, "declared edges"))
    asker.send(question, Message.from_body(new_guid(), 2, 0, Ping()))
    await answerer.next_message(reactor, lambda m: m.guid == question.guid)
    hit = QueryHit(6346, "127.0.0.1", 0, (QueryHitResult(1, 10, "declared.mp3"),), b"\x01" * 16)
    answerer.send(Message.from_body(question.guid, 3, 0, hit))
    await asker.next_message(reactor, lambda m: m.guid == question.guid)
    answerer.send(Message.from_body(new_guid(), 1, 0, Pong(6346, "127.0.0.3", 1, 1)))
    # A third neighbour fills the slots; a fourth is refused; garbage is closed.
    # An ultrapeer with a listening address: the catcher hears it is alive.
    ultrapeer = [*DEFAULT_HEADERS, ("X-Ultrapeer", "True")]
    third = await join(router, headers=(*ultrapeer, ("Listen-IP", "127.0.0.7:6346")))
    await seen.arrival(("catcher", "HostConnected", "housekeeping"))
    host, port = router.listening_address()
    refused = RawPeer()
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, host, port), refused)
    refused.write(b"GNUTELLA CONNECT/0.6\r\nX-Ultrapeer: True\r\n\r\n")
    await refused.lost
    garbage = RawPeer()
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, host, port), garbage)
    garbage.write(b"NOT GNUTELLA\r\n\r\n")
    await garbage.lost
    # A UDP ping on the Gnutella port reaches the udp stage.
    probe = reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")
    probe.write(Message.from_body(new_guid(), 1, 0, Ping()).encode(), (host, port))
    await seen.arrival(("udp", "DatagramReceived", "enqueue"))
    await probe.stopListening()
    # Timers, an outgoing connection that fails, a neighbour that leaves.
    for stage, tick in (("router", "routes"), ("router", "keepalive"), ("catcher", "catch")):
        router._tick(stage, tick)
    router.connect(("127.0.0.1", 1))
    # ITransport is a zope interface, opaque to mypy.
    transport: Any = third.transport
    transport.loseConnection()
    await wait_for(router, lambda: len(router.peers.established()) == 2)
    await seen.arrival(("catcher", "ConnectFailed", "housekeeping"))
    await router.stopService()

    undeclared = seen - declared()
    assert not undeclared, f"events on edges graph.py does not declare: {sorted(undeclared)}"
    # The traffic above reached every stage on more than a handful of edges.
    assert {target for target, _, _ in seen} == {spec.name for spec in STAGE_GRAPH}
    assert len(seen) >= 15


def test_the_published_graph_is_the_declared_one() -> None:
    published = describe()
    assert [stage["name"] for stage in published["stages"]] == [s.name for s in STAGE_GRAPH]
    edges = {(e["from"], e["to"], tuple(e["events"]), e["path"]) for e in published["edges"]}
    expected = {
        (edge.source, edge.target, edge.events, edge.path)
        for edge in [edge for spec in STAGE_GRAPH for edge in spec.edges] + list(EXTERNAL_EDGES)
    }
    assert edges == expected
    assert set(published["sources"]) == {edge.source for edge in EXTERNAL_EDGES}
