"""UDP ping and pong decisions (sans I/O): what is answered, with what, and what is refused."""

from __future__ import annotations

from typing import Any

from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.udp import (
    MAX_AMPLIFICATION,
    MAX_PACKED_HOSTS,
    OVERALL_RATE,
    SOURCE_RATE,
    UNSOLICITED,
    OwnHost,
    UdpHosts,
    UdpLimits,
)
from gnurouter.protocol.ggep import SCP_F_IPV6, SCP_F_NO_IPV4, SCP_F_ULTRA, GGEPExtension
from gnurouter.protocol.messages import Message, MessageType, Ping, Pong, PongInfo, new_guid
from gnurouter.protocol.udp import TRUNCATED, decode_datagram
from tests.fixtures import ManualClock

ME = OwnHost(
    port=6346,
    ipv4="192.0.2.1",
    ipv6=None,
    free_leaf_slots=20,
    free_ultrapeer_slots=10,
    daily_uptime=7200,
    addresses=frozenset({("192.0.2.1", 6346)}),
)
PINGER = ("198.51.100.7", 40000)


def service(
    clock: ManualClock, *, per_source: tuple[float, int] = (1.0, 3), overall: int = 1000
) -> tuple[UdpHosts, HostCache, list[tuple[str, Any, str]]]:
    hosts = HostCache(clock=clock)
    logged: list[tuple[str, Any, str]] = []
    udp = UdpHosts(
        hosts,
        lambda: ME,
        UdpLimits(per_source[0], per_source[1], overall, overall),
        clock=clock,
        log_refusal=lambda reason, source, detail: logged.append((reason, source, detail)),
    )
    return udp, hosts, logged


def ping(*ggep: GGEPExtension) -> bytes:
    return Message.from_body(new_guid(), 1, 0, Ping(tuple(ggep))).encode()


def scp(flags: int) -> bytes:
    return ping(GGEPExtension("SCP", bytes((flags,))))


def pong_of(data: bytes) -> tuple[Message, Pong, PongInfo]:
    message, body = decode_datagram(data)
    assert isinstance(body, Pong)
    return message, body, PongInfo.from_ggep(body.ggep)


def test_a_ping_gets_our_pong_with_the_extensions_gtk_gnutella_sends() -> None:
    udp, _, _ = service(ManualClock())
    request = ping()
    outcome = udp.receive(request, PINGER)
    [(reply, to)] = outcome.replies
    message, body, info = pong_of(reply)
    assert to == PINGER and message.guid == request[:16] and (message.ttl, message.hops) == (1, 0)
    assert (body.ip, body.port) == ("192.0.2.1", 6346)
    assert (info.vendor, info.free_ultrapeer_slots, info.free_leaf_slots) == (b"GNUR", 10, 20)
    assert info.daily_uptime == 7200 and info.hosts == ()
    assert len(reply) <= MAX_AMPLIFICATION * len(request)


def test_scp_gets_packed_hosts_within_the_amplification_bound() -> None:
    clock = ManualClock()
    udp, hosts, _ = service(clock)
    for index in range(200):
        hosts.add((f"10.0.{index // 250}.{index % 250 + 1}", 6346), source="x-try-ultrapeers")
        hosts.add((f"2001:db8::{index + 1:x}", 6346), source="x-try-ultrapeers")
    hosts.add(PINGER, source="pong")
    for flags in (0, SCP_F_IPV6, SCP_F_NO_IPV4):
        request = scp(flags)
        outcome = udp.receive(request, PINGER)
        [(reply, _)] = outcome.replies
        _, _, info = pong_of(reply)
        assert len(reply) <= MAX_AMPLIFICATION * len(request)
        assert PINGER not in info.hosts and ("192.0.2.1", 6346) not in info.hosts
        assert 0 < len(info.hosts) + len(info.hosts6) <= MAX_PACKED_HOSTS
        assert bool(info.hosts) == (not flags & SCP_F_NO_IPV4)
        assert bool(info.hosts6) == bool(flags & (SCP_F_IPV6 | SCP_F_NO_IPV4))
        assert all(":" not in host for host, _ in info.hosts)
        assert all(":" in host for host, _ in info.hosts6)
        clock.now += 10
    # A padded request buys a bigger answer only in proportion: never a bigger ratio.
    assert udp.largest_ratio <= MAX_AMPLIFICATION


def test_a_flood_from_one_address_is_capped_and_counted() -> None:
    clock = ManualClock()
    udp, _, logged = service(clock, per_source=(0.5, 3))
    answers = [udp.receive(ping(), (PINGER[0], 40000 + n)).replies for n in range(100)]
    assert sum(1 for replies in answers if replies) == 3  # the burst, whatever the port
    assert udp.refused == {SOURCE_RATE: 97}
    assert logged[0][:2] == (SOURCE_RATE, (PINGER[0], 40003))
    clock.now += 2.0  # one token back at 0.5/s
    assert udp.receive(ping(), PINGER).replies
    assert not udp.receive(ping(), PINGER).replies
    # Another address has its own budget, until the overall one runs out.
    assert udp.receive(ping(), ("198.51.100.8", 1)).replies


def test_many_sources_meet_the_overall_cap() -> None:
    udp, _, _ = service(ManualClock(), overall=10)
    answered = sum(bool(udp.receive(ping(), (f"10.9.0.{n}", 1)).replies) for n in range(1, 50))
    assert answered == 10 and udp.refused == {OVERALL_RATE: 39}


def test_only_pongs_to_our_own_pings_are_taken() -> None:
    clock = ManualClock()
    udp, _, logged = service(clock)
    stray = Message.from_body(new_guid(), 1, 0, Pong(1, "10.0.0.1", 0, 0)).encode()
    assert udp.receive(stray, PINGER).learned == []
    assert udp.refused == {UNSOLICITED: 1} and logged[0][1] == PINGER

    cache = ("203.0.113.9", 9999)
    request = udp.host_cache_request(cache)
    packed = PongInfo(hosts=(("10.1.1.1", 6346), ("10.1.1.2", 6346)), hosts6=(("2001:db8::1", 1),))
    answer = Pong(9999, "203.0.113.9", 0, 0, packed.to_ggep())
    outcome = udp.receive(Message.from_body(request[:16], 1, 0, answer).encode(), cache)
    [learned] = outcome.learned
    assert (learned.source, learned.ultrapeer) == ("uhc", True)
    assert learned.hosts == [("10.1.1.1", 6346), ("10.1.1.2", 6346), ("2001:db8::1", 1)]
    assert outcome.cache_answered == (cache, 3)
    # The same GUID twice, or a pong after the timeout: unsolicited.
    assert udp.receive(Message.from_body(request[:16], 1, 0, answer).encode(), cache).learned == []
    late = udp.host_cache_request(cache)
    clock.now += 31
    assert udp.receive(Message.from_body(late[:16], 1, 0, answer).encode(), cache).learned == []
    assert udp.refused == {UNSOLICITED: 3}


def test_an_ultrapeer_pinger_is_checked_back_before_it_is_cached() -> None:
    udp, hosts, _ = service(ManualClock())
    request = scp(SCP_F_ULTRA)
    pong, check = udp.receive(request, PINGER).replies
    assert len(pong[0]) + len(check[0]) <= MAX_AMPLIFICATION * len(request)
    check_message, check_body = decode_datagram(check[0])
    assert check_message.type == MessageType.PING and check_body == Ping()
    assert PINGER not in hosts  # a forged source plants nothing
    # Only the pong to our check-back ping, which a spoofer never sees, vouches for it.
    info = PongInfo(free_leaf_slots=1, free_ultrapeer_slots=1)
    answer = Pong(PINGER[1], PINGER[0], 0, 0, info.to_ggep())
    [learned] = udp.receive(Message.from_body(check[0][:16], 1, 0, answer).encode(), PINGER).learned
    assert (learned.hosts, learned.source, learned.ultrapeer) == ([PINGER], "udp-pong", True)


def test_garbage_is_counted_and_logged_with_its_source() -> None:
    udp, _, logged = service(ManualClock())
    assert udp.receive(b"\x00" * 5, PINGER).replies == []
    assert udp.refused == {TRUNCATED: 1} and logged == [(TRUNCATED, PINGER, logged[0][2])]
