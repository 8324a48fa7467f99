"""Message header and payload codecs, checked against hand-written wire bytes."""

from __future__ import annotations

import struct

import pytest

from gnurouter.protocol import (
    GUID_LENGTH,
    HEADER_LENGTH,
    Bye,
    GGEPExtension,
    Message,
    MessageType,
    Opaque,
    Ping,
    Pong,
    ProtocolError,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    QueryHitTrailer,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
    decode_header,
    decode_qrp,
    encode_ggep,
    new_guid,
)

GUID = bytes(range(16))
SERVENT = bytes(range(0xA0, 0xB0))
SHA1_URN = b"urn:sha1:PLSTHIPQGSSZTS5FJUPAKUZWUGYQYPFB"


def roundtrip(body: object) -> None:
    message = Message.from_body(GUID, 3, 1, body)  # type: ignore[arg-type]
    assert message.body() == body
    wire = message.encode()
    assert decode_header(wire) == (GUID, message.type, 3, 1, len(wire) - HEADER_LENGTH)


# -- header ---------------------------------------------------------------------


def test_header_layout_is_guid_type_ttl_hops_le32_length() -> None:
    message = Message(GUID, MessageType.QUERY, 7, 2, b"abc")
    assert message.encode() == GUID + b"\x80\x07\x02\x03\x00\x00\x00abc"
    assert message.header_bytes() == GUID + b"\x80\x07\x02\x03\x00\x00\x00"
    assert len(message.header_bytes()) == HEADER_LENGTH


def test_decode_header_reads_little_endian_length() -> None:
    data = GUID + b"\x81\x05\x02" + struct.pack("<I", 70000) + b"..."
    assert decode_header(data) == (GUID, 0x81, 5, 2, 70000)
    assert decode_header(memoryview(data)) == (GUID, 0x81, 5, 2, 70000)


def test_decode_header_too_short() -> None:
    with pytest.raises(ProtocolError, match="message header is 10 bytes, expected 23"):
        decode_header(b"x" * 10)


def test_new_guid_is_marked_as_modern_servents_do() -> None:
    guids = {new_guid() for _ in range(50)}
    assert len(guids) == 50
    for guid in guids:
        assert len(guid) == GUID_LENGTH
        assert guid[8] == 0xFF
        assert guid[15] == 0x00


def test_forwarded_keeps_guid_type_and_payload_bytes() -> None:
    # A query with flags and extensions this codec would normalise if it
    # re-encoded: forwarding must not touch a byte of the payload.
    payload = b"\xe4\x00mp3\x00" + SHA1_URN + b"\x1c\xc3\x81M\x41\x04\x00"
    message = Message(GUID, MessageType.QUERY, 4, 1, payload)
    relayed = message.forwarded(3, 2)
    assert (relayed.guid, relayed.type, relayed.payload) == (GUID, 0x80, payload)
    assert (relayed.ttl, relayed.hops) == (3, 2)
    assert relayed.encode()[HEADER_LENGTH:] == payload
    assert relayed == Message(GUID, 0x80, 3, 2, payload)


def test_forwarded_rejects_out_of_range_ttl() -> None:
    with pytest.raises(ValueError):
        Message(GUID, 0, 1, 0, b"").forwarded(256, 0)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"guid": b"short"}, "GUID"),
        ({"ttl": 300}, "one byte"),
        ({"type": -1}, "one byte"),
    ],
)
def test_message_validates_fields(kwargs: dict[str, object], problem: str) -> None:
    fields: dict[str, object] = {"guid": GUID, "type": 0, "ttl": 1, "hops": 0, "payload": b""}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=problem):
        Message(**fields)  # type: ignore[arg-type]


def test_type_names() -> None:
    names = {
        t: Message(GUID, t, 1, 0, b"").type_name
        for t in (0x00, 0x01, 0x02, 0x30, 0x31, 0x32, 0x40, 0x80, 0x81, 0x99)
    }
    assert names == {
        0x00: "ping",
        0x01: "pong",
        0x02: "bye",
        0x30: "qrp",
        0x31: "vendor",
        0x32: "vendor-std",
        0x40: "push",
        0x80: "query",
        0x81: "query-hit",
        0x99: "0x99",
    }


def test_messages_are_immutable_and_hashable() -> None:
    message = Message(GUID, 0, 1, 0, b"")
    with pytest.raises(AttributeError):
        message.ttl = 5  # type: ignore[misc]
    assert len({message, Message(GUID, 0, 1, 0, b"")}) == 1


# -- ping / pong ------------------------------------------------------------------


def test_empty_ping() -> None:
    assert Message(GUID, 0, 1, 0, b"").body() == Ping()
    assert Ping().encode() == b""
    roundtrip(Ping())


def test_ping_with_ggep_from_wire_bytes() -> None:
    # GGEP "SCP" (support cached pongs, 1 data byte) as the last extension.
    body = Message(GUID, 0, 1, 0, b"\xc3\x83SCP\x41\x01").body()
    assert body == Ping((GGEPExtension("SCP", b"\x01"),))
    roundtrip(body)


def test_ping_payload_that_is_not_ggep() -> None:
    with pytest.raises(ProtocolError, match="ping payload has 3 trailing bytes that are not"):
        Message(GUID, 0, 1, 0, b"abc").body()


def test_pong_from_wire_bytes() -> None:
    payload = b"\xca\x18" + b"\xc0\xa8\x01\x02" + b"\x64\x00\x00\x00" + b"\x00\x08\x00\x00"
    assert Message(GUID, 1, 1, 2, payload).body() == Pong(6346, "192.168.1.2", 100, 2048)
    assert Pong(6346, "192.168.1.2", 100, 2048).encode() == payload


def test_pong_with_ggep_from_wire_bytes() -> None:
    ggep = b"\xc3\x02DU\x42\x10\x0e\x82VC\x45GTKG\x12"
    payload = b"\xca\x18\x0a\x00\x00\x01" + b"\x00" * 8 + ggep
    pong = Message(GUID, 1, 1, 0, payload).body()
    assert pong == Pong(
        6346,
        "10.0.0.1",
        0,
        0,
        (GGEPExtension("DU", b"\x10\x0e"), GGEPExtension("VC", b"GTKG\x12")),
    )
    assert pong.encode() == payload


def test_pong_roundtrip_with_ggep() -> None:
    roundtrip(Pong(6346, "82.1.2.3", 42, 123456, (GGEPExtension("UP", b"\x01\x02\x03"),)))


def test_pong_too_short() -> None:
    with pytest.raises(ProtocolError) as info:
        Message(GUID, 1, 1, 0, b"\x00" * 10).body()
    assert str(info.value) == "pong payload is 10 bytes, expected 14 or 14+GGEP"
    assert info.value.bye_code == 400


def test_pong_with_bad_ggep() -> None:
    with pytest.raises(ProtocolError, match="GGEP extension 'DU' needs 5 data bytes, 1 remain"):
        Message(GUID, 1, 1, 0, b"\x00" * 14 + b"\xc3\x82DU\x45x").body()


def test_pong_encode_rejects_bad_ip_and_port() -> None:
    with pytest.raises(ValueError):
        Pong(6346, "1.2.3", 0, 0).encode()
    with pytest.raises(ValueError):
        Pong(70000, "1.2.3.4", 0, 0).encode()


# -- bye ----------------------------------------------------------------------------


def test_bye_short_form_from_wire_bytes() -> None:
    payload = b"\xc8\x00Shutting Down\x00"
    assert Message(GUID, 2, 1, 0, payload).body() == Bye(200, "Shutting Down")
    assert Bye(200, "Shutting Down").encode() == payload


def test_bye_with_headers_as_in_the_proposal() -> None:
    payload = b"\xf6\x01Send Queue Full (40960 bytes)\r\nServer: gtk-gnutella/1.2.2\r\n\r\n\x00"
    bye = Message(GUID, 2, 1, 0, payload).body()
    assert bye == Bye(502, "Send Queue Full (40960 bytes)", (("Server", "gtk-gnutella/1.2.2"),))
    assert bye.encode() == payload


@pytest.mark.parametrize(
    "text", [b"Too many duplicates", b"Too many duplicates\r\n", b"Too many duplicates\n\x00junk"]
)
def test_bye_decode_tolerates_missing_nul_and_bare_line_ends(text: bytes) -> None:
    assert Bye.decode(b"\x91\x01" + text) == Bye(401, "Too many duplicates")


def test_bye_too_short() -> None:
    with pytest.raises(ProtocolError, match="bye payload is 1 bytes"):
        Bye.decode(b"\x01")


def test_bye_roundtrip() -> None:
    roundtrip(Bye(400, "Too large query (2048 bytes)"))


def test_bye_reason_must_be_one_line() -> None:
    with pytest.raises(ValueError):
        Bye(200, "a\r\nb").encode()


# -- QRP -----------------------------------------------------------------------------


def test_qrp_reset_from_wire_bytes() -> None:
    payload = b"\x00\x00\x00\x01\x00\x07"
    assert decode_qrp(payload) == RouteTableReset(65536, 7)
    assert Message(GUID, 0x30, 1, 0, payload).body() == RouteTableReset(65536, 7)
    assert RouteTableReset(65536, 7).encode() == payload


def test_qrp_patch_from_wire_bytes() -> None:
    payload = b"\x01\x01\x02\x01\x04" + b"x\x9c..."
    assert decode_qrp(payload) == RouteTablePatch(1, 2, 1, 4, b"x\x9c...")
    roundtrip(RouteTablePatch(2, 2, 0, 8, bytes(range(64))))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "qrp payload is empty"),
        (b"\x05abc", "qrp variant 0x05 is unknown"),
        (b"\x00\x00\x00\x01\x00", "qrp reset payload is 5 bytes, expected 6"),
        (b"\x00\x00\x30\x00\x00\x07", "not a power of two"),
        (b"\x00\x00\x00\x01\x00\x00", "infinity is 0"),
        (b"\x01\x01\x01", "qrp patch payload is 3 bytes, expected at least 5"),
        (b"\x01\x03\x02\x00\x04", "sequence 3 of 2"),
        (b"\x01\x00\x02\x00\x04", "sequence 0 of 2"),
        (b"\x01\x01\x01\x02\x04", "compressor 0x02"),
        (b"\x01\x01\x01\x00\x03", "3 bits"),
    ],
)
def test_qrp_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem) as info:
        Message(GUID, 0x30, 1, 0, payload).body()
    assert info.value.bye_code == 413


# -- vendor messages -------------------------------------------------------------------


def test_vendor_message_from_wire_bytes() -> None:
    payload = b"BEAR\x04\x00\x01\x00" + b"\x05"  # BEAR/4v1: hops-flow 5
    assert Message(GUID, 0x31, 1, 0, payload).body() == VendorMessage(b"BEAR", 4, 1, b"\x05")
    standard = Message(GUID, 0x32, 1, 0, payload).body()
    assert standard == VendorMessage(b"BEAR", 4, 1, b"\x05", standard=True)
    assert standard.type == 0x32
    assert VendorMessage(b"BEAR", 4, 1, b"\x05").type == 0x31


def test_vendor_message_roundtrip_both_types() -> None:
    roundtrip(VendorMessage(b"GTKG", 7, 2, b"data"))
    roundtrip(VendorMessage(b"\x00\x00\x00\x00", 0, 0, b"", standard=True))


def test_vendor_message_too_short() -> None:
    with pytest.raises(
        ProtocolError, match="vendor message payload is 6 bytes, expected at least 8"
    ):
        Message(GUID, 0x31, 1, 0, b"GTKG\x01\x00").body()


# -- push ------------------------------------------------------------------------------


def test_push_from_wire_bytes() -> None:
    payload = SERVENT + b"\x07\x00\x00\x00" + b"\x52\x01\x02\x03" + b"\xca\x18"
    assert Message(GUID, 0x40, 7, 0, payload).body() == Push(SERVENT, 7, "82.1.2.3", 6346)


def test_push_with_ggep_roundtrip() -> None:
    roundtrip(Push(SERVENT, 0x7FFFFFFD, "10.1.2.3", 6346, (GGEPExtension("TLS"),)))


def test_push_wrong_length() -> None:
    with pytest.raises(ProtocolError, match="push payload is 25 bytes, expected 26 or 26\\+GGEP"):
        Push.decode(b"\x00" * 25)
    with pytest.raises(ProtocolError, match="push payload has 1 trailing bytes"):
        Push.decode(b"\x00" * 27)


# -- query --------------------------------------------------------------------------


QUERY_WIRE = (
    b"\xe0\x00"  # marker + firewalled + XML, big-endian
    + b"free music\x00"
    + SHA1_URN
    + b"\x1c"
    + b"\xc3\x81M\x41\x04"  # GGEP M (media type: audio)
    + b"\x00"
)


def test_query_from_wire_bytes() -> None:
    query = Message(GUID, 0x80, 4, 0, QUERY_WIRE).body()
    assert isinstance(query, Query)
    assert query.flags == 0xE000
    assert query.criteria == "free music"
    assert query.extensions == SHA1_URN + b"\x1c\xc3\x81M\x41\x04\x00"
    assert query.encode() == QUERY_WIRE
    assert query.is_new_flags_format
    assert query.requester_firewalled
    assert query.wants_xml
    assert not query.leaf_guided
    assert not query.out_of_band
    assert query.max_hits == 0
    area = query.parsed_extensions()
    assert area.urns == (SHA1_URN.decode(),)
    assert area.ggep == (GGEPExtension("M", b"\x04"),)
    assert area.ggep_get("M") == b"\x04"


def test_query_flag_bits_match_gtk_gnutella_and_limewire() -> None:
    # LimeWire reads the field little-endian and tests 0x0080 / 0x0004; the
    # same bytes are gtk-gnutella's big-endian QUERY_F_MARK / QUERY_F_OOB_REPLY.
    query = Query.decode(b"\x84\x00x\x00")
    assert query.is_new_flags_format and query.out_of_band
    assert not query.requester_firewalled
    assert Query.decode(b"\x98\x20x\x00").leaf_guided
    assert Query.decode(b"\x98\x20x\x00").ggep_h_allowed
    assert Query.decode(b"\x98\x20x\x00").max_hits == 0x20


def test_legacy_min_speed_query() -> None:
    query = Query.decode(b"\x40\x00legacy\x00")  # 64 kB/s, little-endian, no marker
    assert not query.is_new_flags_format
    assert not query.requester_firewalled  # 0x4000 means nothing without the marker
    assert query.min_speed == 64
    assert query.max_hits is None


def test_query_keeps_invalid_utf8_raw() -> None:
    query = Query.decode(b"\x80\x00caf\xe9\x00")
    assert query.criteria == "caf\ufffd"
    assert query.criteria_bytes == b"caf\xe9"
    assert query.encode() == b"\x80\x00caf\xe9\x00"


def test_query_roundtrip_with_urn_and_ggep() -> None:
    extensions = SHA1_URN + b"\x1c" + encode_ggep([GGEPExtension("H", b"\x01" + b"\xaa" * 20)])
    roundtrip(Query(0x8000 | 0x0400, "linux iso", extensions))
    roundtrip(Query(0, ""))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"\x00", "query payload is 1 bytes, expected at least 3"),
        (b"\x00\x00abc", "query criteria has no NUL terminator"),
    ],
)
def test_query_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        Message(GUID, 0x80, 1, 0, payload).body()


def test_query_bad_ggep_is_reported_by_parsed_extensions() -> None:
    query = Query.decode(b"\x80\x00x\x00\xc3\x05")
    with pytest.raises(ProtocolError, match="GGEP"):
        query.parsed_extensions()


# -- query hit --------------------------------------------------------------------------

HIT_WIRE = (
    b"\x02"  # two results
    + b"\xca\x18"  # port 6346
    + b"\x0a\x00\x00\x01"  # 10.0.0.1
    + b"\xe8\x03\x00\x00"  # speed 1000
    + b"\x07\x00\x00\x00"
    + b"\xd2\x04\x00\x00"
    + b"song.mp3\x00"
    + SHA1_URN
    + b"\x00"
    + b"\x08\x00\x00\x00"
    + b"\x00\x10\x00\x00"
    + b"other.ogg\x00"
    + b"\x00"
    + b"GTKG"
    + b"\x02"
    + b"\x21\x21"
    + b"\xc3\x82BH\x40"  # trailer: open data, GGEP BH
    + SERVENT
)


def test_query_hit_from_wire_bytes() -> None:
    hit = Message(GUID, 0x81, 5, 2, HIT_WIRE).body()
    assert hit == QueryHit(
        6346,
        "10.0.0.1",
        1000,
        (
            QueryHitResult(7, 1234, "song.mp3", SHA1_URN),
            QueryHitResult(8, 4096, "other.ogg", b""),
        ),
        SERVENT,
        QueryHitTrailer(b"GTKG", b"\x21\x21", b"\xc3\x82BH\x40"),
    )
    assert hit.encode() == HIT_WIRE
    assert QueryHit.servent_id_of(HIT_WIRE) == SERVENT
    trailer = hit.trailer
    assert trailer is not None
    assert trailer.needs_push is True  # push bit: roles of the two bytes swapped
    assert trailer.has_ggep is True
    assert trailer.busy is None  # not flagged as meaningful
    assert trailer.ggep() == (GGEPExtension("BH", b""),)
    assert hit.results[0].parsed_extensions().urns == (SHA1_URN.decode(),)


def test_query_hit_without_trailer() -> None:
    hit = QueryHit(6346, "1.2.3.4", 50, (QueryHitResult(1, 2, "a"),), SERVENT)
    roundtrip(hit)
    assert QueryHit.decode(hit.encode()).trailer is None


def test_query_hit_roundtrip_with_ggep_results_and_trailer() -> None:
    # GGEP data containing NUL must be COBS-encoded inside a result.
    ext = (
        SHA1_URN
        + b"\x1c"
        + encode_ggep([GGEPExtension("LF", b"\x00\x00\x00\x00\x01")], nul_free=True)
    )
    assert b"\x00" not in ext
    results = tuple(QueryHitResult(i, 1000 * i, f"file {i}.txt", ext) for i in range(5))
    trailer = QueryHitTrailer(b"LIME", b"\x1c\x31", encode_ggep([GGEPExtension("PUSH", b"abcdef")]))
    hit = QueryHit(6346, "203.0.113.9", 3000, results, SERVENT, trailer)
    roundtrip(hit)
    decoded = QueryHit.decode(hit.encode())
    assert decoded.results[0].parsed_extensions().ggep == (
        GGEPExtension("LF", b"\x00\x00\x00\x00\x01"),
    )
    assert decoded.trailer is not None
    assert decoded.trailer.ggep() == (GGEPExtension("PUSH", b"abcdef"),)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (HIT_WIRE[:20], "query hit payload is 20 bytes, expected at least 27"),
        (b"\x03" + HIT_WIRE[1:], "result 3 of 3: name has no NUL terminator"),
        (
            b"\x03" + HIT_WIRE[1 : HIT_WIRE.index(b"GTKG")] + SERVENT,
            "query hit claims 3 results but result 3 is truncated",
        ),
        (
            b"\x01\xca\x18\x0a\x00\x00\x01\xe8\x03\x00\x00"
            + b"\x01\x00\x00\x00" * 2
            + b"noterminator"
            + SERVENT,
            "result 1 of 1: name has no NUL terminator",
        ),
        (
            b"\x01\xca\x18\x0a\x00\x00\x01\xe8\x03\x00\x00"
            + b"\x01\x00\x00\x00" * 2
            + b"name\x00ext"
            + SERVENT,
            "result 1 of 1: extensions have no NUL terminator",
        ),
        (
            b"\x00\xca\x18\x0a\x00\x00\x01\xe8\x03\x00\x00" + b"GTK" + SERVENT,
            "query hit trailer is 3 bytes, expected at least 5",
        ),
        (
            b"\x00\xca\x18\x0a\x00\x00\x01\xe8\x03\x00\x00" + b"GTKG\x09\x01" + SERVENT,
            "open data size 9 exceeds the 1 bytes left",
        ),
    ],
)
def test_query_hit_errors(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        Message(GUID, 0x81, 1, 0, payload).body()


def test_servent_id_of_short_payload() -> None:
    with pytest.raises(ProtocolError, match="query hit payload is 16 bytes"):
        QueryHit.servent_id_of(SERVENT)


def test_query_hit_result_rejects_nul_in_extensions() -> None:
    with pytest.raises(ValueError, match="nul_free"):
        QueryHitResult(1, 1, "x", b"a\x00b").encode()


# -- unknown ---------------------------------------------------------------------------


def test_unknown_type_is_opaque() -> None:
    body = Message(GUID, 0x99, 1, 0, b"\x01\x02").body()
    assert body == Opaque(0x99, b"\x01\x02")
    roundtrip(body)
