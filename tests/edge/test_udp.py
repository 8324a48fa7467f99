"""UDP on the Gnutella port, over real loopback sockets: pongs, host caches, floods, bootstrap."""

from __future__ import annotations

from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from gnurouter.edge.service import RouterService
from gnurouter.mesh.udp import MAX_AMPLIFICATION, SOURCE_RATE
from gnurouter.protocol.ggep import GGEPExtension
from gnurouter.protocol.messages import Message, Ping, Pong, PongInfo, new_guid
from gnurouter.protocol.udp import decode_datagram
from tests.fixtures import until, wait_for

pytestmark = pytest.mark.network

TIMEOUT = 10.0


class UdpClient(protocol.DatagramProtocol):
    """A UDP socket on loopback that keeps what it receives."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.port: Any = reactor.listenUDP(0, self, interface=host)
        self.address = (host, self.port.getHost().port)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.port.write(data, address)

    async def wait(self, count: int) -> list[bytes]:
        await until(lambda: len(self.received) >= count, TIMEOUT)
        return [data for data, _ in self.received]

    async def close(self) -> None:
        await defer.maybeDeferred(self.port.stopListening)


def ping(*ggep: GGEPExtension) -> bytes:
    return Message.from_body(new_guid(), 1, 0, Ping(tuple(ggep))).encode()


def pong_info(data: bytes) -> tuple[Message, Pong, PongInfo]:
    message, body = decode_datagram(data)
    assert isinstance(body, Pong)
    return message, body, PongInfo.from_ggep(body.ggep)


@pytest_twisted.ensureDeferred
async def test_a_udp_ping_gets_a_pong_and_scp_gets_cached_hosts(start_router: Any) -> None:
    router: RouterService = start_router()
    address = router.listening_address()
    cached = [(f"10.20.0.{n}", 6346) for n in range(1, 41)]
    router.hosts.add_many(cached, source="x-try-ultrapeers")
    client = UdpClient()
    try:
        plain = ping()
        client.send(plain, address)
        [first] = await client.wait(1)
        message, body, info = pong_info(first)
        assert message.guid == plain[:16] and body.port == address[1]
        assert info.vendor == b"GNUR" and info.ultrapeer and info.hosts == ()
        assert client.received[0][1] == address  # answered from the Gnutella port itself

        request = ping(GGEPExtension("SCP", b"\x00"))
        client.send(request, address)
        _, second = await client.wait(2)
        _, _, info = pong_info(second)
        assert 20 <= len(info.hosts) <= 30 and set(info.hosts) <= set(cached)
        assert len(second) <= MAX_AMPLIFICATION * len(request)
        udp = router.snapshot()["router"]["udp"]
        assert udp["answered"] == 2 and udp["listening"]
        assert "udp" in router.snapshot()["stages"]
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_a_flood_of_pings_from_one_address_is_capped(start_router: Any) -> None:
    router: RouterService = start_router(udp_burst_per_source=3, udp_rate_per_source=0.001)
    router.hosts.add_many([(f"10.30.0.{n}", 6346) for n in range(1, 60)], source="uhc")
    address = router.listening_address()
    client, other = UdpClient(), UdpClient("127.0.0.2")
    try:
        requests = [ping(GGEPExtension("SCP", b"\x04")) for _ in range(200)]
        for request in requests:
            client.send(request, address)
        await until(lambda: router.udp.refused.get(SOURCE_RATE, 0) == 197, TIMEOUT)
        # Another address is still answered: the cap is per source.
        other.send(ping(), address)
        await other.wait(1)
        assert len(client.received) == 3
        for data, _ in client.received:
            assert len(data) <= MAX_AMPLIFICATION * len(requests[0])
        assert router.snapshot()["router"]["udp"]["refused"] == {SOURCE_RATE: 197}
        # Hostile garbage: counted, and the router still answers.
        other.send(b"\xff" * 10, address)
        await until(lambda: router.udp.refused.get("truncated") == 1, TIMEOUT)
    finally:
        await client.close()
        await other.close()


@pytest_twisted.ensureDeferred
async def test_an_empty_router_finds_ultrapeers_through_one_udp_host_cache(
    start_router: Any,
) -> None:
    cache: RouterService = start_router(max_peers=20, max_ultrapeers=20)
    cache_address = cache.listening_address()
    # Three ultrapeers connect to the cache: it learns where they listen.
    ultrapeers = [start_router(peers=[cache_address], target_peers=1) for _ in range(3)]
    await wait_for(cache, lambda: len(cache.peers.established()) == 3, TIMEOUT)
    await until(lambda: len(cache.hosts) >= 3, TIMEOUT)

    newcomer: RouterService = start_router(target_peers=3, uhc=[cache_address])
    assert len(newcomer.hosts) == 0
    await wait_for(newcomer, lambda: len(newcomer.peers.established()) >= 3, TIMEOUT)
    learned = cast(dict[str, int], newcomer.hosts.breakdown()["by_source"])
    assert learned.get("uhc", 0) >= 2
    state = newcomer.snapshot()["router"]["udp"]["host_caches"]
    assert state["requests"] == 1 and state["hosts_received"] >= 2
    listening = {router.listening_address() for router in ultrapeers}
    assert {peer.address for peer in newcomer.peers.established()} & listening


@pytest_twisted.ensureDeferred
async def test_no_bootstrap_sends_no_host_cache_ping(start_router: Any) -> None:
    listener = UdpClient()
    try:
        router: RouterService = start_router(
            target_peers=1, uhc=[listener.address], bootstrap_enabled=False
        )
        router._tick("catcher", "catch")
        await until(lambda: router.stages["catcher"].counters.processed >= 2, TIMEOUT)
        assert listener.received == [] and router.uhc.requests == 0
        router.control.set("bootstrap.enabled", True)
        router._tick("catcher", "catch")
        [request] = await listener.wait(1)
        _, body = decode_datagram(request)
        assert isinstance(body, Ping) and [e.id for e in body.ggep] == ["SCP", "VC"]
    finally:
        await listener.close()


# tshark's Gnutella dissector registers for TCP only; this hands it UDP payloads too.
_UDP_GNUTELLA_LUA = """
local udp_gnutella = Proto("gnutella_udp", "Gnutella over UDP")
function udp_gnutella.dissector(buffer, info, tree)
  return DissectorTable.get("tcp.port"):get_dissector(6346):call(buffer, info, tree)
end
DissectorTable.get("udp.port"):add(%d, udp_gnutella)
"""


@pytest.mark.external
@pytest_twisted.ensureDeferred
async def test_tshark_decodes_our_udp_pongs(start_router: Any, tmp_path: Any) -> None:
    import shutil
    import xml.etree.ElementTree as ET

    from twisted.internet import utils

    from tests.fixtures import require
    from tests.traces.capture import bounded, start_capture, stop_capture

    require(shutil.which("tshark") is not None, "tshark")
    router: RouterService = start_router()
    router.hosts.add_many([(f"10.40.0.{n}", 6346) for n in range(1, 31)], source="uhc")
    address = router.listening_address()
    pcap = tmp_path / "udp.pcap"
    capture, _ = await start_capture(address[1], pcap, udp=True)
    client = UdpClient()
    try:
        client.send(ping(GGEPExtension("SCP", b"\x00")), address)
        [pong] = await client.wait(1)
        await capture.wait_for(lambda: client.address[1] in capture.udp_ports)
        await stop_capture(capture)
    finally:
        await client.close()
        if not capture.ended.called:
            await stop_capture(capture, kill=True)
    script = tmp_path / "udp_gnutella.lua"
    script.write_text(_UDP_GNUTELLA_LUA % address[1])
    tshark = shutil.which("tshark")
    assert tshark is not None
    args = ["-n", "-r", str(pcap), "-X", f"lua_script:{script}", "-T", "pdml"]
    out, err, code = await bounded(utils.getProcessOutputAndValue(tshark, args), 60)
    assert code == 0, err.decode(errors="replace")
    packets = [p for p in ET.fromstring(out).iter("packet") if p.find("proto[@name='gnutella']")]
    shown = {
        field.get("name"): field.get("show")
        for packet in packets
        for field in packet.iter("field")
        if (field.get("name") or "").startswith("gnutella.")
    }
    # The ping and the pong; nothing malformed, no dissector error.
    assert len(packets) == 2
    assert b"_ws.malformed" not in out and b"_ws.expert" not in out and b"Lua Error" not in out
    _, body, info = pong_info(pong)
    assert shown["gnutella.pong.port"] == str(body.port)
    assert shown["gnutella.pong.ip"] == body.ip
    assert shown["gnutella.header.size"] == str(len(pong) - 23)
    assert len(info.hosts) >= 20  # IPP, within the amplification bound
