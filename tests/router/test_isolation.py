"""One bad event costs only itself; handshakes take no peer slots; bad header values stay out.

The stage tests drive a `Stage` by hand; the rest run a real router on
loopback with real sockets, honest servents beside the hostile one.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import endpoints, reactor

from gnurouter.mesh.handshaking import HandshakePool
from gnurouter.mesh.peers import Peer, PeerState
from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.handshake import Role
from gnurouter.protocol.messages import Bye, Message, MessageType, Ping, Query, new_guid
from gnurouter.seda.stage import HANDLER_ERROR, Stage, report_failure
from tests.conftest import join, wait_for
from tests.live.helpers import RawPeer, block, parse_block

# -- the stage framework ---------------------------------------------------------


class Immediate:
    def call_soon(self, fn: Any) -> None:
        fn()

    def call_in_thread(self, fn: Any) -> None:
        fn()


class Item:
    def __init__(self, value: int, peer: Any = None) -> None:
        self.value = value
        self.peer = peer
        self.kind = "item"


class FailsOnOdd:
    """A handler with per-event isolation that raises for odd values."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.stage: Stage | None = None

    def handle_events(self, batch: list[Any]) -> None:
        for event in batch:
            try:
                if event.value % 2:
                    raise RuntimeError(f"odd {event.value}")
                self.handled.append(event.value)
            except Exception as error:
                report_failure(self.stage, event, error)


def test_a_failing_event_costs_only_itself() -> None:
    handler = FailsOnOdd()
    reported: list[tuple[str, list[Any]]] = []
    stage = Stage(
        "parser",
        handler,
        Immediate(),
        on_handler_error=lambda s, error, events: reported.append((str(error), events)),
    )
    handler.stage = stage
    stage.drain_now()
    events = [Item(value) for value in range(6)]
    stage.enqueue_many(events)
    stage.drain_now()
    assert handler.handled == [0, 2, 4]
    assert stage.counters.handler_errors == 3
    assert stage.drops[HANDLER_ERROR] == {"item": 3}
    assert [(text, [e.value for e in failed]) for text, failed in reported] == [
        ("odd 1", [1]),
        ("odd 3", [3]),
        ("odd 5", [5]),
    ]


def test_an_error_escaping_the_handler_is_caught_and_the_stage_goes_on() -> None:
    class Broken:
        calls = 0

        def handle_events(self, batch: list[Any]) -> None:
            Broken.calls += 1
            if Broken.calls == 1:
                raise ValueError("bug outside any per-event try")

    errors: list[BaseException] = []
    stage = Stage(
        "router", Broken(), Immediate(), on_handler_error=lambda s, e, ev: errors.append(e)
    )
    stage.enqueue_many([Item(1), Item(2)])
    stage.drain_now()
    stage.enqueue(Item(3))
    stage.drain_now()
    assert Broken.calls == 2
    assert stage.counters.handler_errors == 1
    assert stage.drop_count(HANDLER_ERROR) == 2
    # The traceback is gone: its frames would keep the batch's peers alive.
    assert errors[0].__traceback__ is None


def test_a_handler_outside_a_stage_sees_its_errors() -> None:
    handler = FailsOnOdd()
    try:
        handler.handle_events([Item(1)])
    except RuntimeError as error:
        assert "odd 1" in str(error)
    else:
        raise AssertionError("the error was swallowed without a stage to report to")


# -- the handshake pool ------------------------------------------------------------


class NoLink:
    write_paused = False

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def write_paused_for(self) -> float:
        return 0.0


def handshaking_peer(host: str, port: int = 40000) -> Peer:
    return Peer((host, port), NoLink(), PeerConnection(Role.ACCEPTOR), outgoing=False)


def test_handshake_pool_displaces_the_oldest_of_an_address_then_of_all() -> None:
    pool = HandshakePool(limit=4, per_address=2)
    first, second = handshaking_peer("127.0.0.2"), handshaking_peer("127.0.0.2")
    assert pool.admit(first) == []
    assert pool.admit(second) == []
    # A third from the same address takes the place of that address's oldest.
    third = handshaking_peer("127.0.0.2")
    assert pool.admit(third) == [first]
    assert pool.displaced == {"per-address": 1, "total": 0}
    others = [handshaking_peer("127.0.0.3"), handshaking_peer("127.0.0.4")]
    for peer in others:
        assert pool.admit(peer) == []
    # Full: the newcomer takes the place of the oldest handshake of all.
    assert pool.admit(handshaking_peer("127.0.0.5")) == [second]
    assert pool.displaced == {"per-address": 1, "total": 1}
    assert len(pool) == 4


def test_handshake_pool_forgets_finished_handshakes() -> None:
    pool = HandshakePool(limit=2, per_address=2)
    done, waiting = handshaking_peer("127.0.0.2"), handshaking_peer("127.0.0.2")
    pool.admit(done)
    pool.admit(waiting)
    done.state = PeerState.ESTABLISHED
    assert len(pool) == 1
    assert pool.admit(handshaking_peer("127.0.0.2")) == []


# -- on loopback ---------------------------------------------------------------------


def query(criteria: str) -> Message:
    return Message.from_body(new_guid(), 3, 0, Query(0, criteria))


async def raw_from(source: str, router: Any) -> RawPeer:
    peer = RawPeer()
    host, port = router.listening_address()
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, bindAddress=(source, 0))
    await endpoints.connectProtocol(endpoint, peer)
    return peer


def byes(peer: RawPeer) -> list[Bye]:
    stream = bytes(peer.data).split(b"\r\n\r\n", 1)[1]
    found = []
    for message in MessageFramer().feed(stream):
        if message.type == MessageType.BYE:
            body = message.body()
            assert isinstance(body, Bye)
            found.append(body)
    return found


@pytest_twisted.ensureDeferred
async def test_a_routing_bug_closes_its_peer_with_bye_and_honest_traffic_is_untouched(
    start_router: Any,
) -> None:
    router = start_router(deflate=False)
    sender, receiver = await join(router), await join(router)
    attacker = await raw_from("127.0.0.2", router)
    attacker.write(
        block("GNUTELLA CONNECT/0.6", [("User-Agent", "hostile/1"), ("X-Ultrapeer", "True")])
    )
    await attacker.until(b"\r\n\r\n")
    attacker.write(b"GNUTELLA/0.6 200 OK\r\n\r\n")
    await wait_for(router, lambda: len(router.peers.established()) == 3)

    poison = query("poison")
    route = router.routing.route

    def buggy_route(source: int, message: Message, *args: Any) -> Any:
        if message.guid == poison.guid:
            raise KeyError("a bug only this message meets")
        return route(source, message, *args)

    router.routing.route = buggy_route
    honest = [query(f"honest {n}") for n in range(200)]
    # The poisoned query travels between honest ones, so they share batches.
    for message in honest[:100]:
        sender.send(message)
    attacker.write(poison.encode())
    for message in honest[100:]:
        sender.send(message)
    lost = attacker.lost
    lost.addTimeout(10, reactor)
    await lost
    wanted = {m.guid for m in honest}
    for message in honest:
        await receiver.next_message(reactor, lambda m, g=message.guid: m.guid == g)
    got = {m.guid for m in receiver.received if m.guid in wanted}
    assert got == wanted
    stage = router.stages["router"]
    assert stage.counters.handler_errors == 1
    assert stage.drop_count(HANDLER_ERROR) == 1
    [bye] = byes(attacker)
    assert bye.code == 500


@pytest_twisted.ensureDeferred
async def test_idle_sockets_take_no_peer_slot_and_newcomers_get_in(start_router: Any) -> None:
    router = start_router(max_peers=2, max_handshakes=8, max_handshakes_per_address=4)
    # Idle sockets from the honest servents' own address, and from others.
    idle = [await raw_from("127.0.0.1", router) for _ in range(6)]
    await wait_for(router, lambda: router.handshakes.displaced["per-address"] >= 2)
    crowd = [await raw_from(f"127.0.0.{n}", router) for n in range(3, 9)]
    await wait_for(router, lambda: router.handshakes.displaced["total"] >= 2)
    # Both peer slots are still free for servents that complete their handshake.
    first, second = await join(router), await join(router)
    assert len(router.peers.established()) == 2
    for peer in (*idle, *crowd):
        if peer.transport is not None:
            peer.transport.abortConnection()
    first.transport.loseConnection()
    second.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_bad_header_values_are_counted_and_never_reach_the_host_cache(
    start_router: Any,
) -> None:
    router = start_router()
    hostile = await raw_from("127.0.0.2", router)
    hostile.write(
        block(
            "GNUTELLA CONNECT/0.6",
            [
                ("User-Agent", "evil\x01agent"),
                ("X-Ultrapeer", "True"),
                ("Listen-IP", "127.0.0.1:\u00b2"),
                ("X-Try-Ultrapeers", "127.0.0.9:6346, evil\x7fhost:6346, 127.0.0.8:\u00b2, ::1:5"),
                ("X-Try", "127.0.0.1.example:6346"),
            ],
        )
    )
    await hostile.until(b"\r\n\r\n")
    hostile.write(b"GNUTELLA/0.6 200 OK\r\n\r\n")
    await wait_for(router, lambda: len(router.peers.established()) == 1)
    await wait_for(router, lambda: len(router.hosts) >= 1)
    assert [address for address in router.hosts._hosts] == [("127.0.0.9", 6346)]
    rejected = router.peers.rejected
    assert rejected["bad-header:listen-ip"] == 1
    assert rejected["bad-header:x-try-ultrapeers"] == 1
    assert rejected["bad-header:x-try"] == 1
    [peer] = router.peers.established()
    assert peer.listen_address is None
    assert "\x01" not in peer.user_agent
    # A newcomer is answered with headers built from clean values only.
    newcomer = await raw_from("127.0.0.3", router)
    newcomer.write(block("GNUTELLA CONNECT/0.6", [("X-Ultrapeer", "True")]))
    await newcomer.until(b"\r\n\r\n")
    status, headers, _ = parse_block(bytes(newcomer.data))
    assert status.startswith("GNUTELLA/0.6 200")
    assert headers.get("X-Try-Ultrapeers") == "127.0.0.9:6346"
    newcomer.transport.abortConnection()  # type: ignore[union-attr]
    hostile.transport.abortConnection()  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_bad_bytes_behind_the_final_ok_still_get_a_bye(start_router: Any) -> None:
    router = start_router(deflate=False)
    peer = await raw_from("127.0.0.2", router)
    peer.write(block("GNUTELLA CONNECT/0.6", [("X-Ultrapeer", "True")]))
    await peer.until(b"\r\n\r\n")
    # The final 200 OK and a header announcing a 4 GB payload in one segment.
    peer.write(b"GNUTELLA/0.6 200 OK\r\n\r\n" + new_guid() + b"\x80\x07\x00\xff\xff\xff\xff")
    peer.lost.addTimeout(10, reactor)
    await peer.lost
    [bye] = byes(peer)
    assert bye.code >= 400


@pytest_twisted.ensureDeferred
async def test_a_control_burst_cannot_crowd_other_links_out_of_the_router_queue(
    start_router: Any,
) -> None:
    # Control messages are never displaced at the router stage; without a
    # per-link budget one write of 1,505 pings filled its queue (threshold
    # 1000) and other links' queries were refused as queue-full.
    router = start_router(deflate=False)
    sender, receiver = await join(router), await join(router)
    flooder = await join(router)
    # Fewer than the query filter's 200 queued queries: nothing is shed as load.
    honest = [query(f"honest {n}") for n in range(150)]
    pings = b"".join(Message.from_body(new_guid(), 1, 0, Ping()).encode() for _ in range(1505))
    for message in honest[:75]:
        sender.send(message)
    flooder.transport.write(pings)  # type: ignore[union-attr]
    for message in honest[75:]:
        sender.send(message)
    closed = flooder.closed
    closed.addTimeout(10, reactor)
    await closed
    for message in honest:
        await receiver.next_message(reactor, lambda m, g=message.guid: m.guid == g)
    assert router.stages["router"].drop_count("queue-full") == 0
    # Cut off once refusals pass twice the burst; what follows is ignored.
    assert router.stages["parser"].drop_count("control-rate") > 2 * 500
    assert router.peers.rejected["control-flood"] == 1
    byes = [m.body() for m in flooder.messages_of(MessageType.BYE)]
    assert [(b.code, b.reason) for b in byes if isinstance(b, Bye)] == [
        (400, "Control-message flood")
    ]
