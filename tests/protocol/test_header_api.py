"""The public header API (one coding of the 23-byte layout), `validate` and `check_header`."""

from __future__ import annotations

import random
import struct

import pytest

from gnurouter.protocol import (
    HEADER,
    HEADER_FIELDS,
    HEADER_LENGTH,
    HOPS_OFFSET,
    LENGTH_OFFSET,
    TTL_OFFSET,
    TYPE_OFFSET,
    Message,
    MessageFramer,
    Pong,
    ProtocolError,
    Query,
    decode_header,
    new_guid,
    payload_length,
    validate,
)

GUID = bytes(range(16))


def test_header_structs_and_offsets_describe_the_encoded_header() -> None:
    message = Message(GUID, 0x81, 5, 2, b"x" * 70)
    wire = b"junk" + message.encode()
    assert HEADER.size == HEADER_FIELDS.size == HEADER_LENGTH
    assert HEADER.unpack_from(wire, 4) == decode_header(wire[4:]) == (GUID, 0x81, 5, 2, 70)
    assert HEADER_FIELDS.unpack_from(wire, 4) == (0x81, 5, 2, 70)
    fields = (wire[4 + TYPE_OFFSET], wire[4 + TTL_OFFSET], wire[4 + HOPS_OFFSET])
    assert fields == (0x81, 5, 2)
    assert int.from_bytes(wire[4 + LENGTH_OFFSET : 4 + HEADER_LENGTH], "little") == 70
    assert payload_length(wire, 4) == 70
    assert payload_length(memoryview(message.encode())) == 70


def test_payload_length_needs_a_whole_header() -> None:
    with pytest.raises(struct.error):
        payload_length(b"x" * (HEADER_LENGTH - 1))


def test_validate_checks_queries_only_for_their_nul_and_decodes_the_rest() -> None:
    query = Message.from_body(GUID, 3, 0, Query(flags=0, criteria="words"))
    assert validate(query) is None
    with pytest.raises(ProtocolError, match="NUL"):
        validate(Message(GUID, 0x80, 3, 0, b"\x00\x00no terminator"))
    pong = Pong(6346, "127.0.0.1", 3, 40)
    assert validate(Message.from_body(GUID, 1, 0, pong)) == pong
    with pytest.raises(ProtocolError, match="pong payload"):
        validate(Message(GUID, 0x01, 1, 0, b"short"))


def test_new_guid_takes_its_randomness_from_the_caller() -> None:
    first = new_guid(random.Random(5).randbytes)
    assert first == new_guid(random.Random(5).randbytes)
    assert first[8] == 0xFF and first[15] == 0x00
    assert new_guid() != new_guid()


@pytest.mark.parametrize(
    "fields, bye_code",
    [
        ((0x80, 3, 0, 100), None),
        ((0x80, 3, 0, 5000), 400),  # over the query limit
        ((0x80, 3, 0, 0x1_0000_0000 - 1), 501),  # over the hard ceiling
        ((0x00, 40, 30, 0), 403),  # TTL + hops
    ],
)
def test_check_header_judges_a_header_as_feed_does(
    fields: tuple[int, int, int, int], bye_code: int | None
) -> None:
    error = MessageFramer().check_header(*fields)
    assert (error.bye_code if error is not None else None) == bye_code
    wire = HEADER.pack(GUID, *fields)
    if bye_code is None:
        MessageFramer().feed(wire)
    else:
        with pytest.raises(ProtocolError) as raised:
            MessageFramer().feed(wire)
        assert raised.value.bye_code == bye_code
