"""UDP datagrams and the GGEP that pings and pongs carry, against gtk-gnutella's encodings."""

from __future__ import annotations

import dataclasses

import pytest

from gnurouter.protocol import GGEPExtension, ProtocolError, encode_ggep, parse_ggep
from gnurouter.protocol.ggep import (
    SCP_F_IPV6,
    SCP_F_ULTRA,
    decode_vlint,
    encode_vlint,
    pack_addresses,
    unpack_addresses,
)
from gnurouter.protocol.messages import (
    Message,
    Ping,
    Pong,
    PongInfo,
    Query,
    new_guid,
    scp_flags,
)
from gnurouter.protocol.udp import (
    LENGTH_MISMATCH,
    MALFORMED,
    MAX_DATAGRAM,
    TOO_LARGE,
    TRUNCATED,
    UNSUPPORTED,
    DatagramError,
    decode_datagram,
    host_cache_ping,
)


def test_ipp_entries_are_ip_in_network_order_then_port_little_endian() -> None:
    # host_ip_port_poke: 4 (or 16) address bytes as they are, then a LE port.
    assert pack_addresses([("1.2.3.4", 6346)], ipv6=False) == b"\x01\x02\x03\x04\xca\x18"
    packed6 = pack_addresses([("2001:db8::1", 6347)], ipv6=True)
    assert packed6 == bytes.fromhex("20010db8000000000000000000000001") + b"\xcb\x18"
    # Each family goes in its own extension: the other is left out.
    mixed = [("1.2.3.4", 6346), ("2001:db8::1", 6347), ("example.com", 1)]
    assert unpack_addresses(pack_addresses(mixed, ipv6=False), ipv6=False) == [mixed[0]]
    assert unpack_addresses(pack_addresses(mixed, ipv6=True), ipv6=True) == [mixed[1]]


@pytest.mark.parametrize(("data", "ipv6"), [(b"\x01" * 7, False), (b"\x01" * 17, True)])
def test_ipp_of_no_whole_number_of_entries_is_refused(data: bytes, ipv6: bool) -> None:
    with pytest.raises(ProtocolError, match="not a multiple"):
        unpack_addresses(data, ipv6=ipv6)


def test_daily_uptime_is_a_little_endian_integer_without_high_zero_bytes() -> None:
    assert encode_vlint(86_400) == b"\x80\x51\x01"
    assert encode_vlint(3600) == b"\x10\x0e"
    assert encode_vlint(0) == b"\x00"  # never empty: gtk-gnutella refuses an empty DU
    assert decode_vlint(b"\x80\x51\x01", "DU") == 86_400
    for bad in (b"", b"\x01" * 5):
        with pytest.raises(ProtocolError, match="DU"):
            decode_vlint(bad, "DU")


def test_a_gtk_gnutella_pong_block_reads_as_it_was_written() -> None:
    # DU = 3600 s, VC = GTKG version 0x12: the shape of pcache.c's pongs.
    block = b"\xc3\x02DU\x42\x10\x0e\x82VC\x45GTKG\x12"
    extensions, _ = parse_ggep(block)
    info = PongInfo.from_ggep(extensions)
    assert (info.vendor, info.vendor_version, info.daily_uptime) == (b"GTKG", 0x12, 3600)
    assert not info.ultrapeer and info.hosts == ()


def test_pong_info_round_trips_in_gtk_gnutella_order() -> None:
    info = PongInfo(
        vendor=b"GNUR",
        vendor_version=1,
        free_leaf_slots=30,
        free_ultrapeer_slots=12,
        daily_uptime=100_000,
        ipv6="2001:db8::5",
        hosts=(("10.0.0.1", 6346), ("10.0.0.2", 6347)),
        hosts6=(("2001:db8::9", 6348),),
    )
    extensions = info.to_ggep()
    assert [e.id for e in extensions] == ["VC", "UP", "DU", "6", "IPP", "IPP6"]
    assert extensions[1].data == b"\x02\x1e\x0c"  # version 0.2, free leaf then ultrapeer slots
    decoded = PongInfo.from_ggep(parse_ggep(encode_ggep(extensions))[0])
    # The uptime advertised is capped at a day, as gtk-gnutella caps it.
    assert decoded == dataclasses.replace(info, daily_uptime=86_400)
    assert decoded.ultrapeer


@pytest.mark.parametrize(
    ("extension", "words"),
    [
        (GGEPExtension("UP", b"\x02\x01"), "UP is 2 bytes"),
        (GGEPExtension("6", b"\x00" * 4), "6 is 4 bytes"),
        (GGEPExtension("VC", b"GT"), "VC is 2 bytes"),
        (GGEPExtension("IPP", b"\x00" * 5), "IPP is 5 bytes"),
    ],
)
def test_known_extensions_with_bad_lengths_are_refused(
    extension: GGEPExtension, words: str
) -> None:
    with pytest.raises(ProtocolError, match=words):
        PongInfo.from_ggep([extension])


def test_scp_flags_follow_ping_type() -> None:
    assert scp_flags(Ping()) is None
    assert scp_flags(Ping((GGEPExtension("SCP"),))) == 0  # no data: any host
    both = Ping((GGEPExtension("SCP", b"\x05"), GGEPExtension("SCP", b"\x00")))
    assert scp_flags(both) == SCP_F_ULTRA | SCP_F_IPV6  # the first counts


def test_host_cache_ping_is_what_uhc_c_sends() -> None:
    message = host_cache_ping(ultrapeer=True, want_ipv6=True, vendor=b"GNUR", vendor_version=1)
    assert (message.ttl, message.hops) == (1, 0)
    body = message.body()
    assert isinstance(body, Ping)
    assert [(e.id, e.data) for e in body.ggep] == [("SCP", b"\x05"), ("VC", b"GNUR\x01")]


def test_a_datagram_is_exactly_one_ping_or_pong() -> None:
    ping = Message.from_body(new_guid(), 1, 0, Ping())
    assert decode_datagram(ping.encode()) == (ping, Ping())
    pong = Message.from_body(new_guid(), 1, 0, Pong(6346, "10.0.0.1", 0, 0))
    assert decode_datagram(pong.encode())[1] == Pong(6346, "10.0.0.1", 0, 0)


@pytest.mark.parametrize(
    ("datagram", "kind"),
    [
        (b"\x00" * 22, TRUNCATED),
        (Message.from_body(new_guid(), 1, 0, Ping()).encode() + b"x", LENGTH_MISMATCH),
        (Message(new_guid(), 0, 1, 0, b"\xc3" * 40).encode()[:-1], LENGTH_MISMATCH),
        (b"\x00" * (MAX_DATAGRAM + 1), TOO_LARGE),
        (Message.from_body(new_guid(), 1, 0, Query(0, "ogg")).encode(), UNSUPPORTED),
        (Message(new_guid(), 1, 1, 0, b"\x01" * 10).encode(), MALFORMED),
        (Message(new_guid(), 0, 1, 0, b"\xc3\x00").encode(), MALFORMED),
    ],
)
def test_hostile_datagrams_are_refused_with_their_kind(datagram: bytes, kind: str) -> None:
    with pytest.raises(DatagramError) as raised:
        decode_datagram(datagram)
    assert raised.value.kind == kind
