"""Handshakes in the shape gtk-gnutella 1.2 and LimeWire 5 send them: roles, slots, refusals."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from gnurouter.protocol.handshake import Headers
from gnurouter.protocol.messages import Bye, MessageType, VendorMessage
from gnurouter.protocol.vendor import MessagesSupported
from tests.fixtures import (
    GTK_GNUTELLA_LEAF,
    GTK_GNUTELLA_ULTRAPEER,
    LIMEWIRE_LEAF,
    LIMEWIRE_ULTRAPEER,
    HeaderPairs,
    Listening,
    RawListener,
    RawPeer,
    block,
    delivered,
    join,
    parse_block,
    raw_connect,
    servent_query,
    shake_hands,
    until,
    wait_for,
)
from tests.live.helpers import limewire_good_ultrapeer


def role_of(router: Any, address_port: int) -> str | None:
    for peer in router.peers:
        if peer.address[1] == address_port:
            return peer.role
    return None


async def handshake_in(
    router: Any, headers: HeaderPairs, final: HeaderPairs
) -> tuple[RawPeer, str, Headers]:
    """Connect with `headers`, read our reply, answer `final`; the RawPeer and our reply."""
    peer = await raw_connect(router.listening_address())
    status, reply = await shake_hands(peer, headers, final)
    return peer, status, reply


@pytest_twisted.ensureDeferred
async def test_limewire_leaf_connecting_to_us_finds_a_good_ultrapeer(start_router: Any) -> None:
    router = start_router()
    headers = (*LIMEWIRE_LEAF, ("Accept-Encoding", "deflate"))
    peer, status, reply = await handshake_in(
        router, headers, [("Content-Encoding", "deflate"), ("X-Ultrapeer", "False")]
    )
    assert status == "GNUTELLA/0.6 200 OK"
    # What LimeWire checks before it keeps an ultrapeer, and what leaves need.
    assert limewire_good_ultrapeer(reply)
    assert reply.get("X-Ultrapeer") == "True" and reply.get("X-Dynamic-Querying") == "0.1"
    assert int(reply.get("X-Degree", "0")) == router.config.max_ultrapeers  # from the limits
    assert reply.get("Content-Encoding") == "deflate"
    await wait_for(router, lambda: len(router.peers.established()) == 1)
    [joined] = router.peers.established()
    assert joined.role == "leaf"
    # It said Vendor-Message, so our Messages Supported arrives unasked, over deflate.
    await peer.message(lambda m: m.type == MessageType.VENDOR)
    [ms] = [m for m in peer.messages if m.type == MessageType.VENDOR]
    body = ms.body()
    assert isinstance(body, VendorMessage) and (body.vendor, body.selector) == (b"\0\0\0\0", 0)
    assert (b"BEAR", 4, 1) in MessagesSupported.decode(body.data).items
    assert ms.ttl == 1 and ms.hops == 0


@pytest_twisted.ensureDeferred
async def test_degree_follows_the_configured_slots(start_router: Any) -> None:
    # With 8 ultrapeer slots we say X-Degree: 8, and a LimeWire leaf refuses us
    # ("503 Not Good Ultrapeer" in its final reply): the router lets it go.
    router = start_router(max_ultrapeers=8, target_peers=0)
    peer = await raw_connect(router.listening_address())
    status, reply = await shake_hands(peer, LIMEWIRE_LEAF, final=None)
    assert status.startswith("GNUTELLA/0.6 200") and reply.get("X-Degree") == "8"
    assert not limewire_good_ultrapeer(reply)
    peer.write(block("GNUTELLA/0.6 503 Not Good Ultrapeer", [("User-Agent", "LimeWire/5.5.16")]))
    await peer.lost
    await wait_for(router, lambda: len(router.peers) == 0)
    assert router.peers.established() == []


@pytest_twisted.ensureDeferred
async def test_gtk_gnutella_leaf_and_ultrapeer_connecting_to_us(start_router: Any) -> None:
    router = start_router()
    _, status, reply = await handshake_in(router, GTK_GNUTELLA_LEAF, [])
    assert status == "GNUTELLA/0.6 200 OK" and reply.get("X-Ultrapeer") == "True"
    _, status, reply = await handshake_in(
        router, (*GTK_GNUTELLA_ULTRAPEER, ("Listen-IP", "127.0.0.1:7010")), []
    )
    assert status == "GNUTELLA/0.6 200 OK"
    await wait_for(router, lambda: len(router.peers.established()) == 2)
    roles = sorted(p.role or "" for p in router.peers.established())
    assert roles == ["leaf", "ultrapeer"]
    # The ultrapeer's listening address joins the host cache as a known ultrapeer.
    await until(lambda: ("127.0.0.1", 7010) in router.hosts)
    entry = router.hosts.get(("127.0.0.1", 7010))
    assert entry is not None and entry.ultrapeer
    snapshot = router.snapshot()
    assert snapshot["router"]["roles"] == {"ultrapeer": 1, "leaf": 1, "legacy": 0}
    assert snapshot["router"]["slots"]["leaf"]["taken"] == 1


@pytest_twisted.ensureDeferred
async def test_we_connect_out_to_an_ultrapeer_and_decline_leaf_guidance(
    start_router: Any,
) -> None:
    router = start_router()
    listener = RawListener()
    listening = Listening(listener)
    try:
        router.connect(listening.address)
        remote = await listener.accepted.get()
        await remote.until(b"\r\n\r\n")
        first, ours, _ = parse_block(bytes(remote.data))
        assert first == "GNUTELLA CONNECT/0.6"
        assert limewire_good_ultrapeer(ours) and ours.get("X-Ultrapeer") == "True"
        assert ours.get("Vendor-Message") and ours.get("Accept-Encoding") == "deflate"
        # A gtk-gnutella ultrapeer with enough ultrapeers guides us to be its leaf.
        remote.write(
            block(
                "GNUTELLA/0.6 200 OK",
                [*GTK_GNUTELLA_ULTRAPEER, ("X-Ultrapeer-Needed", "False")],
            )
        )
        await remote.wait(lambda: bytes(remote.data).count(b"\r\n\r\n") >= 2)
        final = bytes(remote.data).split(b"\r\n\r\n", 1)[1]
        status, confirm, _ = parse_block(final)
        assert status == "GNUTELLA/0.6 200 OK"
        assert confirm.get("X-Ultrapeer") == "True"  # we stay an ultrapeer
        await wait_for(router, lambda: len(router.peers.established()) == 1)
        [peer] = router.peers.established()
        assert peer.role == "ultrapeer" and peer.outgoing
        assert router.policy.leaf_guidance_declined == 1
    finally:
        await listening.stop()


@pytest_twisted.ensureDeferred
async def test_refusal_by_a_full_ultrapeer_teaches_hosts_and_backs_off(start_router: Any) -> None:
    router = start_router()
    listener = RawListener()
    listening = Listening(listener)
    address = listening.address
    try:
        router.hosts.add(address)
        router.connect(address)
        remote = await listener.accepted.get()
        await remote.until(b"\r\n\r\n")
        remote.write(
            block(
                "GNUTELLA/0.6 503 Too many connections",
                [("X-Try-Ultrapeers", "10.1.2.3:6346,10.1.2.4:6347"), ("X-Try", "10.1.2.5:6346")],
            )
        )
        await remote.lost
        await wait_for(router, lambda: len(router.peers) == 0)
        await until(lambda: ("10.1.2.4", 6347) in router.hosts)
        # The refusal counts as a failed attempt: that host backs off.
        await until(lambda: router.hosts.get(address).failures == 1)
        assert router.hosts.get(("10.1.2.4", 6347)).ultrapeer
        assert ("10.1.2.5", 6346) in router.hosts
        refused = router.hosts.get(address)
        assert refused is not None and refused.failures == 1 and refused.retry_at > 0
    finally:
        await listening.stop()


@pytest_twisted.ensureDeferred
async def test_leaf_and_ultrapeer_slots_are_separate_and_full_ones_answer_503(
    start_router: Any,
) -> None:
    router = start_router(max_leaves=1, max_ultrapeers=1, target_peers=0)
    router.hosts.add(("10.20.30.40", 6346), source="x-try-ultrapeers")
    await join(router, headers=LIMEWIRE_LEAF)
    # A second leaf: refused, with ultrapeers to try instead.
    peer, status, reply = await handshake_in(router, GTK_GNUTELLA_LEAF, [])
    assert status == "GNUTELLA/0.6 503 Too many leaves"
    assert reply.get("X-Try-Ultrapeers") == "10.20.30.40:6346"
    await peer.lost
    # An ultrapeer still fits in its own slot; a second one does not.
    await join(router, headers=LIMEWIRE_ULTRAPEER)
    peer, status, _ = await handshake_in(router, GTK_GNUTELLA_ULTRAPEER, [])
    assert status == "GNUTELLA/0.6 503 Too many ultrapeers"
    assert {p.role for p in router.peers.established()} == {"leaf", "ultrapeer"}
    assert router.snapshot()["router"]["refused"] == {
        "Too many leaves": 1,
        "Too many ultrapeers": 1,
    }


@pytest_twisted.ensureDeferred
async def test_old_style_nodes_take_an_ultrapeer_slot_and_get_the_flood(
    start_router: Any,
) -> None:
    router = start_router(max_ultrapeers=1)
    old = await join(router, headers=(("User-Agent", "BearShare 4.2"), ("GGEP", "0.5")))
    [peer] = router.peers.established()
    assert peer.role == "legacy"
    sender = await join(router, headers=LIMEWIRE_LEAF)
    request = servent_query("anything at all")
    sender.send(request)
    relayed = await delivered(old, request)
    assert relayed.payload == request.payload
    # It used the one ultrapeer slot.
    _, status, _ = await handshake_in(router, GTK_GNUTELLA_ULTRAPEER, [])
    assert status == "GNUTELLA/0.6 503 Too many ultrapeers"


@pytest_twisted.ensureDeferred
async def test_old_style_nodes_can_be_refused(start_router: Any) -> None:
    router = start_router(accept_legacy_peers=False)
    peer, status, _ = await handshake_in(router, (("User-Agent", "Gnucleus 1.8"),), [])
    assert status.startswith("GNUTELLA/0.6 403")
    await peer.lost
    assert router.peers.established() == []


@pytest_twisted.ensureDeferred
async def test_bye_codes_on_deliberate_closes(start_router: Any) -> None:
    router = start_router(keepalive_interval=1.0)
    quiet = await join(router, headers=LIMEWIRE_LEAF)
    # Silent past the idle timeout (3 keepalive intervals): Bye 405.
    for peer in router.peers.established():
        peer.last_heard -= 10.0
    router._tick("router", "keepalive")
    await quiet.closed
    [bye] = quiet.messages_of(MessageType.BYE)
    body = bye.body()
    assert isinstance(body, Bye) and body.code == 405
    assert body.reason.startswith("Activity timeout")
