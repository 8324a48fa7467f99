"""A bad event, idle sockets and hostile header values, on loopback beside honest servents.

A routing bug costs only its own peer (Bye 500), idle and half-open sockets
take no peer slot, bad header values never reach the host cache, garbage
behind the final 200 OK still gets a Bye, and a control-message burst
cannot crowd other links out of the router queue.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.protocol.messages import Bye, Message, MessageType, new_guid
from gnurouter.seda.stage import HANDLER_ERROR
from tests.fixtures import (
    RawPeer,
    delivered,
    join,
    ping,
    queries,
    query,
    raw_connect,
    shake_hands,
    wait_for,
)


async def raw_from(source: str, router: Any) -> RawPeer:
    return await raw_connect(router.listening_address(), source=source)


@pytest_twisted.ensureDeferred
async def test_a_routing_bug_closes_its_peer_with_bye_and_honest_traffic_is_untouched(
    start_router: Any,
) -> None:
    router = start_router(deflate=False)
    sender, receiver = await join(router), await join(router)
    attacker = await raw_from("127.0.0.2", router)
    await shake_hands(attacker, [("User-Agent", "hostile/1"), ("X-Ultrapeer", "True")])
    await wait_for(router, lambda: len(router.peers.established()) == 3)

    poison = query("poison")
    route = router.routing.route

    def buggy_route(source: int, message: Message, *args: Any) -> Any:
        if message.guid == poison.guid:
            raise KeyError("a bug only this message meets")
        return route(source, message, *args)

    router.routing.route = buggy_route
    honest = queries(200, "honest")
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
        await delivered(receiver, message)
    got = {m.guid for m in receiver.received if m.guid in wanted}
    assert got == wanted
    stage = router.stages["router"]
    assert stage.counters.handler_errors == 1
    assert stage.drop_count(HANDLER_ERROR) == 1
    [bye] = attacker.byes()
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
            peer.abort()
    first.close()
    second.close()


@pytest_twisted.ensureDeferred
async def test_bad_header_values_are_counted_and_never_reach_the_host_cache(
    start_router: Any,
) -> None:
    router = start_router()
    hostile = await raw_from("127.0.0.2", router)
    await shake_hands(
        hostile,
        [
            ("User-Agent", "evil\x01agent"),
            ("X-Ultrapeer", "True"),
            ("Listen-IP", "127.0.0.1:\u00b2"),
            ("X-Try-Ultrapeers", "127.0.0.9:6346, evil\x7fhost:6346, 127.0.0.8:\u00b2, ::1:5"),
            ("X-Try", "127.0.0.1.example:6346"),
        ],
    )
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
    status, headers = await shake_hands(newcomer, [("X-Ultrapeer", "True")], final=None)
    assert status.startswith("GNUTELLA/0.6 200")
    assert headers.get("X-Try-Ultrapeers") == "127.0.0.9:6346"
    newcomer.abort()
    hostile.abort()


@pytest_twisted.ensureDeferred
async def test_bad_bytes_behind_the_final_ok_still_get_a_bye(start_router: Any) -> None:
    router = start_router(deflate=False)
    peer = await raw_from("127.0.0.2", router)
    await shake_hands(peer, [("X-Ultrapeer", "True")], final=None)
    # The final 200 OK and a header announcing a 4 GB payload in one segment.
    peer.write(b"GNUTELLA/0.6 200 OK\r\n\r\n" + new_guid() + b"\x80\x07\x00\xff\xff\xff\xff")
    peer.lost.addTimeout(10, reactor)
    await peer.lost
    [bye] = peer.byes()
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
    honest = queries(150, "honest")
    pings = b"".join(ping().encode() for _ in range(1505))
    for message in honest[:75]:
        sender.send(message)
    flooder.send_raw(pings)
    for message in honest[75:]:
        sender.send(message)
    closed = flooder.closed
    closed.addTimeout(10, reactor)
    await closed
    for message in honest:
        await delivered(receiver, message)
    assert router.stages["router"].drop_count("queue-full") == 0
    # Cut off once refusals pass twice the burst; what follows is ignored.
    assert router.stages["parser"].drop_count("control-rate") > 2 * 500
    assert router.peers.rejected["control-flood"] == 1
    byes = [m.body() for m in flooder.messages_of(MessageType.BYE)]
    assert [(b.code, b.reason) for b in byes if isinstance(b, Bye)] == [
        (400, "Control-message flood")
    ]
