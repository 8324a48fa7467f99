"""GGEP 0.5 blocks and extension areas, against the spec's own examples."""

from __future__ import annotations

import zlib

import pytest

from gnurouter.protocol import (
    GGEPExtension,
    ProtocolError,
    encode_ggep,
    parse_extension_area,
    parse_ggep,
)
from gnurouter.protocol.ggep import MAX_INFLATED_LENGTH, _cobs_decode, _cobs_encode


@pytest.mark.parametrize(
    ("length", "wire"),
    [
        # The "Boundary Cases" table of the GGEP 0.51 document.
        (0, b"\x40"),
        (63, b"\x7f"),
        (64, b"\x81\x40"),
        (4095, b"\xbf\x7f"),
        (4096, b"\x81\x80\x40"),
        (262143, b"\xbf\xbf\x7f"),
    ],
)
def test_length_encoding_boundary_cases(length: int, wire: bytes) -> None:
    block = encode_ggep([GGEPExtension("X", b"a" * length)])
    assert block[:3] == b"\xc3\x81X"
    assert block[3 : 3 + len(wire)] == wire
    assert parse_ggep(block) == ((GGEPExtension("X", b"a" * length),), len(block))


def test_parse_reports_bytes_consumed_and_stops_at_last_extension() -> None:
    block = b"\xc3\x02DU\x42\x10\x0e\x82VC\x45GTKG\x12"
    exts, used = parse_ggep(block + b"\x1ctrailing")
    assert exts == (GGEPExtension("DU", b"\x10\x0e"), GGEPExtension("VC", b"GTKG\x12"))
    assert used == len(block)


def test_cobs_encoded_extension() -> None:
    # "AB\0CD" COBS-encoded is 03 'A' 'B' 03 'C' 'D'.
    block = b"\xc3\xc1Z\x46\x03AB\x03CD"
    assert parse_ggep(block)[0] == (GGEPExtension("Z", b"AB\x00CD"),)


def test_deflated_extension() -> None:
    data = b"hello " * 100
    packed = zlib.compress(data)
    block = b"\xc3\xa1Z" + bytes((0x80 | (len(packed) >> 6), 0x40 | (len(packed) & 0x3F))) + packed
    assert parse_ggep(block)[0] == (GGEPExtension("Z", data),)


def test_cobs_then_deflate_are_undone_in_that_order() -> None:
    data = bytes(range(256)) * 4
    wire_data = _cobs_encode(zlib.compress(data))
    assert b"\x00" not in wire_data
    block = b"\xc3\xe1Z" + bytes((0x80 | (len(wire_data) >> 6), 0x40 | (len(wire_data) & 0x3F)))
    assert parse_ggep(block + wire_data)[0] == (GGEPExtension("Z", data),)


def test_nul_free_encoding_uses_cobs_only_when_needed() -> None:
    plain = encode_ggep([GGEPExtension("A", b"abc")], nul_free=True)
    assert plain == b"\xc3\x81A\x43abc"
    with_nul = encode_ggep([GGEPExtension("LF", b"\x00\x00\x01\x00\x00")], nul_free=True)
    assert b"\x00" not in with_nul
    assert with_nul[1] & 0x40  # COBS flag
    assert parse_ggep(with_nul)[0] == (GGEPExtension("LF", b"\x00\x00\x01\x00\x00"),)


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x00", b"a" * 253, b"a" * 254, b"a" * 255, b"a" * 254 + b"\x00b"]
)
def test_cobs_roundtrip(data: bytes) -> None:
    encoded = _cobs_encode(data)
    assert b"\x00" not in encoded
    assert _cobs_decode(encoded) == data


def test_encode_nothing_is_no_block() -> None:
    assert encode_ggep([]) == b""


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (b"", "does not start with the magic byte 0xC3"),
        (b"\xc4\x81A\x40", "does not start with the magic byte 0xC3"),
        (b"\xc3", "ends before its last extension"),
        (b"\xc3\x01A\x40", "ends before its last extension"),
        (b"\xc3\x80\x40", "ID length of 0"),
        (b"\xc3\x91A\x40", "reserved flag bit"),
        (b"\xc3\x83AB", "ID is truncated"),
        (b"\xc3\x82A\x00\x40", "ID contains a NUL"),
        (b"\xc3\x81A", "truncated length"),
        (b"\xc3\x81A\x05", "malformed length byte"),
        (b"\xc3\x81A\xc1", "malformed length byte"),
        (b"\xc3\x81A\x81\x81\x81\x40", "longer than 3 bytes"),
        (b"\xc3\x81A\x45ab", "needs 5 data bytes, 2 remain"),
        (b"\xc3\xc1A\x42\x05a", "COBS data is truncated"),
        (b"\xc3\xc1A\x42\x00a", "NUL code byte"),
        (b"\xc3\xa1A\x43abc", "corrupt deflated data"),
        (b"\xc3\xa1A\x42x\x9c", "truncated deflate stream"),
    ],
)
def test_malformed_blocks(block: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_ggep(block)


def test_deflate_bomb_is_refused() -> None:
    packed = zlib.compress(b"\x00" * (MAX_INFLATED_LENGTH * 4))
    length = len(packed)
    header = bytes((0x80 | (length >> 6), 0x40 | (length & 0x3F)))
    with pytest.raises(ProtocolError, match="inflates beyond"):
        parse_ggep(b"\xc3\xa1Z" + header + packed)


@pytest.mark.parametrize(
    "ext",
    [GGEPExtension("", b""), GGEPExtension("0123456789ABCDEF", b""), GGEPExtension("A\x00", b"")],
)
def test_encode_rejects_bad_ids(ext: GGEPExtension) -> None:
    with pytest.raises(ValueError):
        encode_ggep([ext])


def test_extension_area_peaceful_coexistence() -> None:
    area = parse_extension_area(
        b"urn:sha1:PLSTHIPQGSSZTS5FJUPAKUZWUGYQYPFB\x1c"
        b'<?xml version="1.0"?><audios/>\x1c'
        b"\xc3\x81H\x41\x01"
        b"\xc3\x82GU\x40"  # a second block right behind the first
        b"\x1clegacy\x00"
    )
    assert area.urns == ("urn:sha1:PLSTHIPQGSSZTS5FJUPAKUZWUGYQYPFB",)
    assert area.xml == ('<?xml version="1.0"?><audios/>',)
    assert area.ggep == (GGEPExtension("H", b"\x01"), GGEPExtension("GU", b""))
    assert area.other == (b"legacy",)
    assert area.ggep_get("GU") == b""
    assert area.ggep_get("nope") is None


def test_extension_area_empty() -> None:
    area = parse_extension_area(b"")
    assert (area.urns, area.ggep, area.xml, area.other) == ((), (), (), ())
