"""Framing: any chunking, per-type limits enforced on the header, and the error contract."""

from __future__ import annotations

import pytest

from gnurouter.protocol import (
    DEFAULT_PAYLOAD_LIMITS,
    HARD_PAYLOAD_CEILING,
    Message,
    MessageFramer,
    PayloadLimits,
    ProtocolError,
)

GUID = bytes(range(16))


def msg(
    type_: int = 0x80, payload: bytes = b"\x00\x00q\x00", ttl: int = 3, hops: int = 1
) -> Message:
    return Message(GUID, type_, ttl, hops, payload)


def header(type_: int, length: int, ttl: int = 1, hops: int = 0) -> bytes:
    return GUID + bytes((type_, ttl, hops)) + length.to_bytes(4, "little")


STREAM_MESSAGES = [msg(), msg(0x00, b""), msg(0x01, b"\x00" * 14), msg(0x81, b"x" * 500)]
STREAM = b"".join(m.encode() for m in STREAM_MESSAGES)


def test_one_chunk() -> None:
    framer = MessageFramer()
    assert framer.feed(STREAM) == STREAM_MESSAGES
    assert framer.buffered == 0


def test_one_byte_at_a_time() -> None:
    framer = MessageFramer()
    out: list[Message] = []
    for i in range(len(STREAM)):
        out.extend(framer.feed(STREAM[i : i + 1]))
        assert framer.buffered == (i + 1) - sum(len(m.encode()) for m in out)
    assert out == STREAM_MESSAGES


def test_split_inside_header_and_payload() -> None:
    framer = MessageFramer()
    assert framer.feed(STREAM[:10]) == []
    assert framer.feed(STREAM[10:30]) == [STREAM_MESSAGES[0]]
    assert framer.feed(STREAM[30:]) == STREAM_MESSAGES[1:]


def test_ttl_zero_is_not_a_framing_error() -> None:
    assert MessageFramer().feed(msg(ttl=0, hops=7).encode()) == [msg(ttl=0, hops=7)]


def test_empty_feed() -> None:
    assert MessageFramer().feed(b"") == []


@pytest.mark.parametrize(
    ("type_", "name", "limit"),
    [
        (0x00, "ping", DEFAULT_PAYLOAD_LIMITS.ping),
        (0x01, "pong", DEFAULT_PAYLOAD_LIMITS.pong),
        (0x02, "bye", DEFAULT_PAYLOAD_LIMITS.bye),
        (0x30, "qrp", DEFAULT_PAYLOAD_LIMITS.qrp),
        (0x31, "vendor", DEFAULT_PAYLOAD_LIMITS.vendor),
        (0x32, "vendor-std", DEFAULT_PAYLOAD_LIMITS.vendor),
        (0x40, "push", DEFAULT_PAYLOAD_LIMITS.push),
        (0x80, "query", DEFAULT_PAYLOAD_LIMITS.query),
        (0x81, "query-hit", DEFAULT_PAYLOAD_LIMITS.query_hit),
        (0x99, "0x99", DEFAULT_PAYLOAD_LIMITS.unknown),
    ],
)
def test_limit_is_enforced_on_the_header_alone(type_: int, name: str, limit: int) -> None:
    framer = MessageFramer()
    assert framer.feed(header(type_, limit)) == []  # at the limit: waits for the payload
    framer = MessageFramer()
    if limit == HARD_PAYLOAD_CEILING:
        with pytest.raises(ProtocolError, match="impossible length"):
            framer.feed(header(type_, limit + 1))
        return
    with pytest.raises(ProtocolError) as info:
        framer.feed(header(type_, limit + 1))
    assert str(info.value) == f"{name} payload of {limit + 1} bytes exceeds the {limit}-byte limit"
    assert info.value.bye_code == 400


def test_defaults_follow_gtk_gnutella() -> None:
    assert (
        PayloadLimits(
            ping=1536,
            pong=1550,
            bye=4096,
            qrp=40960,
            vendor=40960,
            push=1562,
            query=1024,
            query_hit=65535,
            unknown=40960,
        )
        == DEFAULT_PAYLOAD_LIMITS
    )


def test_impossible_length() -> None:
    with pytest.raises(ProtocolError, match="impossible length") as info:
        MessageFramer().feed(header(0x81, 0xFFFFFFFF))
    assert info.value.bye_code == 501


def test_bad_ttl() -> None:
    framer = MessageFramer(max_ttl_plus_hops=15)
    assert framer.feed(header(0x80, 0, ttl=10, hops=5)) != []
    with pytest.raises(
        ProtocolError, match="bad TTL: query with TTL 10 \\+ hops 6 exceeds 15"
    ) as info:
        framer.feed(header(0x80, 0, ttl=10, hops=6))
    assert info.value.bye_code == 403


def test_error_contract_across_chunks() -> None:
    framer = MessageFramer()
    good = msg().encode()
    assert framer.feed(good + good[:5]) == [msg()]
    # The rest of the second message and a bad header arrive together: the
    # message comes out, the error waits for the next call.
    assert framer.feed(good[5:] + header(0x80, 5000)) == [msg()]
    assert isinstance(framer.failed, ProtocolError)
    with pytest.raises(ProtocolError, match="query payload of 5000 bytes"):
        framer.feed(b"")


def test_messages_before_a_bad_header_are_returned_and_failed_is_set() -> None:
    framer = MessageFramer()
    good = msg().encode()
    out = framer.feed(good + good + header(0x80, 5000) + good)
    assert out == [msg(), msg()]
    assert framer.failed is not None
    assert "query payload of 5000 bytes" in str(framer.failed)
    # Never resynchronises: every later feed raises the same error.
    for _ in range(2):
        with pytest.raises(ProtocolError) as info:
            framer.feed(good)
        assert info.value is framer.failed


def test_bad_header_alone_raises_immediately() -> None:
    framer = MessageFramer()
    with pytest.raises(ProtocolError):
        framer.feed(header(0x80, 5000))
    assert framer.failed is not None


def test_custom_limits() -> None:
    framer = MessageFramer(PayloadLimits.from_mapping({"query": 256}))
    assert framer.feed(header(0x80, 256)) == []
    with pytest.raises(ProtocolError, match="exceeds the 256-byte limit"):
        MessageFramer(PayloadLimits.from_mapping({"query": 256})).feed(header(0x80, 257))


def test_from_mapping_keeps_defaults_for_missing_keys() -> None:
    limits = PayloadLimits.from_mapping({"ping": 100, "query_hit": 16384})
    assert limits.ping == 100
    assert limits.query_hit == 16384
    assert limits.pong == DEFAULT_PAYLOAD_LIMITS.pong
    assert limits.for_type(0x81) == 16384
    assert limits.for_type(0x32) == limits.vendor
    assert limits.for_type(0x77) == limits.unknown


@pytest.mark.parametrize(
    ("mapping", "problem"),
    [
        ({"queries": 10}, "unknown payload limit\\(s\\) 'queries'; known: ping, pong"),
        ({"ping": 0}, "'ping' must be positive, got 0"),
        ({"ping": -5}, "'ping' must be positive"),
        ({"query": HARD_PAYLOAD_CEILING + 1}, "above the hard ceiling"),
        ({"query": "1024"}, "must be an integer"),
        ({"query": True}, "must be an integer"),
    ],
)
def test_from_mapping_errors(mapping: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        PayloadLimits.from_mapping(mapping)  # type: ignore[arg-type]
