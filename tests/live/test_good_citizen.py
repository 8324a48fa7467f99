"""What an ultrapeer owes its neighbours, over real sockets: leaf hygiene, no dials to
servents already here, a flush before closing a half-closed link, Hops-Flow under overload."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.network import GnutellaWire
from gnurouter.protocol.messages import Message, MessageType, Ping, Pong, VendorMessage, new_guid
from gnurouter.routing.hopsflow import NO_LIMIT
from gnurouter.stages.catcher import CatcherHandler
from tests.fixtures import (
    GTK_GNUTELLA_ULTRAPEER,
    LIMEWIRE_LEAF,
    LIMEWIRE_ULTRAPEER,
    DecisionWatch,
    Listening,
    RawListener,
    delivered,
    join,
    joined,
    queries,
    raw_connect,
    shake_hands,
    until,
)
from tests.live.helpers import leaf


def is_hops_flow(message: Message) -> bool:
    """BEAR/4 (the version is not checked: any Hops-Flow)."""
    return message.type == MessageType.VENDOR and message.payload[:6] == b"BEAR\x04\x00"


def pong_from(ip: str, port: int) -> Pong:
    return Pong(port=port, ip=ip, files=1, kbytes=1)


@pytest_twisted.ensureDeferred
async def test_leaf_pings_reach_no_leaf_and_leaves_get_no_leaf_pongs(start_router: Any) -> None:
    router = start_router()
    watch = DecisionWatch(router)
    asker = await leaf(router, headers=LIMEWIRE_LEAF)
    other = await leaf(router, headers=LIMEWIRE_LEAF, answer_pings=pong_from("10.7.0.2", 6346))
    ultrapeer = await join(
        router, headers=LIMEWIRE_ULTRAPEER, answer_pings=pong_from("10.7.0.3", 6346)
    )
    # Our keepalives: both answer with their own pong (hops 0).
    router._tick("router", "keepalive")
    await watch.wait_until(
        lambda: sum(e.message.type == MessageType.PONG for e, _ in watch.seen) >= 2
    )
    request = Message.from_body(new_guid(), 4, 0, Ping())
    asker.send(request)
    relayed = await delivered(ultrapeer, request)
    assert relayed.hops == 1
    [(_, decision)] = watch.for_guid(request.guid)
    assert other.router_peer_id not in {p for _, peers in decision.sends for p in peers}
    answers = [m.body() for m in asker.received if m.type == MessageType.PONG]
    addresses = {(b.ip, b.port) for b in answers if isinstance(b, Pong)}
    assert ("10.7.0.3", 6346) in addresses  # the ultrapeer's pong
    assert ("10.7.0.2", 6346) not in addresses  # never the other leaf's
    assert not any(m.guid == request.guid for m in other.received)
    # The leaf's own pong taught us where it listens, and nothing to the catcher.
    [peer] = [p for p in router.peers if p.id == other.router_peer_id]
    assert ("10.7.0.2", 6346) in peer.listen_addresses
    await until(lambda: ("10.7.0.3", 6346) in router.hosts)  # the ultrapeer's, learned
    assert ("10.7.0.2", 6346) not in router.hosts


@pytest_twisted.ensureDeferred
async def test_a_servent_announced_by_node_only_is_not_dialled_while_connected(
    start_router: Any,
) -> None:
    listener = RawListener()
    listening = Listening(listener)
    router = start_router(target_peers=3)
    catcher = router.stages["catcher"].handler
    assert isinstance(catcher, CatcherHandler)
    host, port = listening.address
    headers = [*GTK_GNUTELLA_ULTRAPEER, ("Node", f"{host}:{port}")]
    servent = await raw_connect(router.listening_address())
    status, _ = await shake_hands(servent, headers)
    assert status.startswith("GNUTELLA/0.6 200")
    await until(lambda: len(router.peers.established()) == 1)
    router.hosts.add(listening.address)  # learned somewhere else meanwhile
    starved = catcher.starved_ticks
    router._tick("catcher", "catch")
    await until(lambda: catcher.starved_ticks > starved)
    assert listener.count == 0
    # Gone, it is a candidate again: the catcher dials it.
    servent.abort()
    await until(lambda: not router.peers.established())
    router._tick("catcher", "catch")
    await listener.accepted.get()
    assert listener.count == 1
    await listening.stop()


@pytest_twisted.ensureDeferred
async def test_a_half_closed_peer_gets_what_its_last_messages_asked_for(start_router: Any) -> None:
    router = start_router()
    peer = await raw_connect(router.listening_address())
    status, _ = await shake_hands(peer, LIMEWIRE_ULTRAPEER)
    assert status.startswith("GNUTELLA/0.6 200")
    await until(lambda: len(router.peers.established()) == 1)
    [joined_peer] = router.peers.established()
    keepalive = Message.from_body(new_guid(), 1, 0, Ping())
    peer.send(keepalive)
    peer._wire.loseWriteConnection()  # FIN right behind it: it still reads
    await peer.lost
    pongs = [m for m in peer.messages if m.type == MessageType.PONG and m.guid == keepalive.guid]
    assert len(pongs) == 1
    # Closed by us without a Bye, and forgotten by routing.
    assert not peer.byes()
    await until(lambda: router.routing.peer_info(joined_peer.id) is None)


@pytest_twisted.ensureDeferred
async def test_a_peer_closed_by_us_is_forgotten_and_its_wire_leaves_no_abort_behind(
    start_router: Any,
) -> None:
    router = start_router()
    servent, [peer] = await joined(router, headers=LIMEWIRE_ULTRAPEER)
    wire = peer.link
    assert isinstance(wire, GnutellaWire)
    servent.send(Message.from_body(new_guid(), 1, 0, Ping()))
    servent.close()
    await servent.closed
    await until(lambda: router.routing.peer_info(peer.id) is None)
    # Its socket went at once: the 10 s "did not take its last bytes" abort is disarmed.
    assert wire._abort_call is None


@pytest_twisted.ensureDeferred
async def test_hops_flow_slows_the_biggest_feeder_while_overloaded_and_is_lifted_after(
    start_router: Any,
) -> None:
    # One thread, no shedding: every query waits its turn (5 ms each).
    router = start_router(
        query_delay=0.005,
        conditioning="none",
        hops_flow_delay_target=0.05,
        hops_flow_hold=0.3,
        hops_flow_neighbours=1,
    )
    feeder = await join(router, headers=LIMEWIRE_ULTRAPEER)
    quiet = await join(router, headers=LIMEWIRE_ULTRAPEER)
    feeder.send(*queries(600, "flood", ttl=3, hops=2))  # 3 s of work
    sent = await feeder.next_message(reactor, is_hops_flow, timeout=15)
    body = sent.body()
    assert isinstance(body, VendorMessage) and (body.vendor, body.selector) == (b"BEAR", 4)
    assert body.data[0] == 3  # far-travelled queries first
    snapshot = {p["id"]: p for p in router.snapshot()["peers"]}
    assert [row["hops_flow_sent"] for row in snapshot.values()].count(3) == 1
    assert not any(is_hops_flow(m) for m in quiet.received)
    await feeder.next_message(
        reactor, lambda m: is_hops_flow(m) and m.payload[-1] == NO_LIMIT, timeout=20
    )
    # Lower by one each hold it stayed overloaded, never below 1, then lifted.
    values = [m.payload[-1] for m in feeder.received if is_hops_flow(m)]
    assert values[0] == 3 and values[-1] == NO_LIMIT
    assert values[:-1] == sorted(values[:-1], reverse=True) and min(values) >= 1
    assert router.snapshot()["router"]["hops_flow"]["limits"] == {}
