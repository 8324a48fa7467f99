"""IPv6 on ::1: handshakes, routing between an IPv4 and an IPv6 peer, X-Try-Ultrapeers, UDP."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.servent import DEFAULT_HEADERS, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.protocol.ggep import GGEPExtension
from gnurouter.protocol.messages import NO_IPV4
from gnurouter.protocol.udp import decode_datagram
from tests.edge.test_udp import UdpClient, ping, pong_info
from tests.fixtures import (
    at_least_established,
    exchange,
    raw_connect,
    require,
    shake_hands,
    until,
)

pytestmark = pytest.mark.network


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _needs_ipv6() -> None:
    require(ipv6_loopback(), "IPv6 loopback (::1)")


@pytest_twisted.ensureDeferred
async def test_handshake_over_ipv6_says_where_we_listen(start_router: Any) -> None:
    router: RouterService = start_router(listen=("::1", 0))
    host, port = router.listening_address()
    assert host == "::1"
    peer = await raw_connect(("::1", port))
    status, reply = await shake_hands(peer, DEFAULT_HEADERS)
    assert status.startswith("GNUTELLA/0.6 200")
    assert reply.get("Listen-IP") == f"[::1]:{port}"
    assert reply.get("Remote-IP") == "::1"
    await at_least_established(router, 1)
    [established] = router.peers.established()
    assert established.address[0] == "::1" and established.label.startswith("[::1]:")


@pytest_twisted.ensureDeferred
async def test_dual_stack_routes_between_an_ipv4_and_an_ipv6_peer(start_router: Any) -> None:
    router: RouterService = start_router(listen=("::", 0))
    _, port = router.listening_address()
    over_ipv4 = await connect_servent(reactor, "127.0.0.1", port)
    over_ipv6 = await connect_servent(reactor, "::1", port)
    await at_least_established(router, 2)
    # IPv4 peers are seen as IPv4, never as ::ffff:127.0.0.1.
    assert {peer.address[0] for peer in router.peers.established()} == {"127.0.0.1", "::1"}
    await exchange(over_ipv4, over_ipv6, 3, "four to six")
    await exchange(over_ipv6, over_ipv4, 3, "six to four")


@pytest_twisted.ensureDeferred
async def test_x_try_ultrapeers_carries_and_teaches_ipv6_hosts(start_router: Any) -> None:
    router: RouterService = start_router(listen=("::1", 0))
    router.hosts.add(("2001:db8::7", 6346), source="x-try-ultrapeers")
    peer = await raw_connect(router.listening_address())
    offered = (*DEFAULT_HEADERS, ("X-Try-Ultrapeers", "[2001:db8::8]:6347,10.0.0.8:6346"))
    status, reply = await shake_hands(peer, offered)
    assert status.startswith("GNUTELLA/0.6 200")
    assert "[2001:db8::7]:6346" in (reply.get("X-Try-Ultrapeers") or "").split(",")
    await until(lambda: ("2001:db8::8", 6347) in router.hosts)
    assert router.hosts.breakdown()["by_family"] == {"ipv4": 1, "ipv6": 2}


@pytest_twisted.ensureDeferred
async def test_udp_pong_over_ipv6_carries_the_address_in_ggep_6(start_router: Any) -> None:
    router: RouterService = start_router(listen=("::1", 0))
    router.hosts.add_many([("2001:db8::1", 6346), ("10.0.0.1", 6346)], source="uhc")
    client = UdpClient("::1")
    try:
        request = ping(GGEPExtension("SCP", b"\x04"))  # wants IPv6 too
        client.send(request, router.listening_address())
        [answer] = await client.wait(1)
        _, body, info = pong_info(answer)
        assert body.ip == NO_IPV4 and info.ipv6 == "::1"
        assert info.hosts == (("10.0.0.1", 6346),) and info.hosts6 == (("2001:db8::1", 6346),)
        assert decode_datagram(answer)[0].guid == request[:16]
    finally:
        await client.close()
