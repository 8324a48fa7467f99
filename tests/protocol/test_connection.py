"""Two PeerConnections wired back to back, and link compression on its own."""

from __future__ import annotations

import zlib

import pytest

from gnurouter.protocol import (
    Bye,
    Deflater,
    HandshakeComplete,
    Headers,
    Inflater,
    Message,
    PeerConnection,
    Ping,
    Pong,
    ProtocolError,
    Query,
    Role,
    negotiate_encoding,
    new_guid,
)
from gnurouter.protocol.connection import Event

UA = [("User-Agent", "gnurouter-test/1.0")]


def connect(
    *, initiator_deflate: bool, acceptor_deflate: bool
) -> tuple[PeerConnection, PeerConnection, list[bytes], list[bytes]]:
    """Run a full handshake in memory; returns both ends and the wire bytes each sent."""
    initiator = PeerConnection(Role.INITIATOR)
    acceptor = PeerConnection(Role.ACCEPTOR)
    to_acceptor: list[bytes] = []
    to_initiator: list[bytes] = []

    offer = [("Accept-Encoding", "deflate")] if initiator_deflate else []
    to_acceptor.append(initiator.start(Headers([*UA, *offer])))
    [request] = acceptor.receive_data(to_acceptor[-1])
    accept_offer = [("Accept-Encoding", "deflate")] if acceptor_deflate else []
    encoding = negotiate_encoding(request.headers, we_support_deflate=acceptor_deflate)  # type: ignore[union-attr]
    to_initiator.append(acceptor.accept(Headers([*UA, *accept_offer, *encoding])))
    [response] = initiator.receive_data(to_initiator[-1])
    encoding = negotiate_encoding(response.headers, we_support_deflate=initiator_deflate)  # type: ignore[union-attr]
    to_acceptor.append(initiator.confirm(Headers(encoding)))
    events = acceptor.receive_data(to_acceptor[-1])
    assert isinstance(events[-1], HandshakeComplete)
    [complete] = initiator.receive_data(b"")
    assert isinstance(complete, HandshakeComplete)
    return initiator, acceptor, to_acceptor, to_initiator


def traffic(n: int) -> list[Message]:
    out: list[Message] = []
    for i in range(n):
        out.append(Message.from_body(new_guid(), 4, 0, Query(0x8000, f"search term {i % 7}")))
        out.append(Message.from_body(new_guid(), 1, 0, Ping()))
        out.append(Message.from_body(new_guid(), 1, 2, Pong(6346, f"10.0.{i % 256}.1", i, i * 10)))
    return out


def messages_of(events: list[Event]) -> list[Message]:
    return [e for e in events if isinstance(e, Message)]


@pytest.mark.parametrize(
    ("initiator_deflate", "acceptor_deflate", "expect_in", "expect_out"),
    [(True, True, True, True), (True, False, False, False), (False, True, False, False)],
)
def test_deflate_negotiation(
    initiator_deflate: bool, acceptor_deflate: bool, expect_in: bool, expect_out: bool
) -> None:
    initiator, acceptor, _, _ = connect(
        initiator_deflate=initiator_deflate, acceptor_deflate=acceptor_deflate
    )
    assert (initiator.deflate_in, initiator.deflate_out) == (expect_in, expect_out)
    assert (acceptor.deflate_in, acceptor.deflate_out) == (expect_in, expect_out)


def test_back_to_back_deflated_exchange_both_ways() -> None:
    initiator, acceptor, _, _ = connect(initiator_deflate=True, acceptor_deflate=True)
    batch = traffic(50)

    # Initiator -> acceptor, in several batches, each ending with a sync flush.
    raw = initiator.send(batch[:60]) + initiator.send(batch[60:])
    received: list[Message] = []
    for i in range(0, len(raw), 97):  # arbitrary TCP segmentation
        received.extend(messages_of(acceptor.receive_data(raw[i : i + 97])))
    assert received == batch

    # The wire really is one zlib stream: a fresh decompressor reads it whole.
    encoded = b"".join(m.encode() for m in batch)
    assert zlib.decompressobj().decompress(raw) == encoded
    assert len(raw) < len(encoded)  # random GUIDs cap the gain

    # Acceptor -> initiator.
    back = acceptor.send(list(reversed(batch)))
    assert messages_of(initiator.receive_data(back)) == list(reversed(batch))
    assert zlib.decompressobj().decompress(back) == b"".join(m.encode() for m in reversed(batch))

    # Counters line up on both ends.
    assert initiator.stream_bytes_out == acceptor.stream_bytes_in == len(raw)
    assert initiator.uncompressed_bytes_out == acceptor.uncompressed_bytes_in == len(encoded)
    assert acceptor.stream_bytes_out == initiator.stream_bytes_in == len(back)


def test_each_send_is_decodable_on_its_own_arrival() -> None:
    initiator, acceptor, _, _ = connect(initiator_deflate=True, acceptor_deflate=True)
    for message in traffic(5):
        # Z_SYNC_FLUSH per batch: nothing waits in the compressor.
        assert messages_of(acceptor.receive_data(initiator.send([message]))) == [message]


def test_handshake_bytes_are_counted() -> None:
    initiator, acceptor, to_acceptor, to_initiator = connect(
        initiator_deflate=False, acceptor_deflate=False
    )
    assert initiator.bytes_out == acceptor.bytes_in == sum(map(len, to_acceptor))
    assert acceptor.bytes_out == initiator.bytes_in == sum(map(len, to_initiator))
    assert initiator.send([]) == b""


def test_final_reply_and_deflated_messages_in_one_segment() -> None:
    initiator = PeerConnection(Role.INITIATOR)
    acceptor = PeerConnection(Role.ACCEPTOR)
    acceptor.receive_data(initiator.start(Headers([*UA, ("Accept-Encoding", "deflate")])))
    initiator.receive_data(
        acceptor.accept(Headers([("Accept-Encoding", "deflate"), ("Content-Encoding", "deflate")]))
    )
    final = initiator.confirm(Headers([("Content-Encoding", "deflate")]))
    batch = traffic(3)
    events = acceptor.receive_data(final + initiator.send(batch))
    assert messages_of(events) == batch


def test_send_bye_after_protocol_error() -> None:
    initiator, acceptor, _, _ = connect(initiator_deflate=True, acceptor_deflate=True)
    oversized = Message(bytes(16), 0x80, 1, 0, b"q" * 5000)  # above the 1 KiB query limit
    with pytest.raises(ProtocolError) as info:
        acceptor.receive_data(initiator.send([oversized]))
    error = info.value
    assert error.bye_code == 400
    assert acceptor.failed is error
    with pytest.raises(ProtocolError):
        acceptor.receive_data(b"")
    # The Bye still goes out, compressed like everything else on that link.
    events = initiator.receive_data(acceptor.send_bye(error.bye_code, str(error)))
    [bye] = messages_of(events)
    assert (bye.ttl, bye.hops) == (1, 0)
    assert bye.body() == Bye(400, str(error))


def test_messages_before_a_bad_header_are_delivered_then_the_link_fails() -> None:
    initiator, acceptor, _, _ = connect(initiator_deflate=False, acceptor_deflate=False)
    good = traffic(1)
    bad_header = bytes(16) + b"\x80\x01\x00" + (60000).to_bytes(4, "little")
    events = acceptor.receive_data(initiator.send(good) + bad_header)
    assert messages_of(events) == good
    assert acceptor.failed is not None
    with pytest.raises(ProtocolError, match="query payload of 60000 bytes"):
        acceptor.receive_data(b"")


# -- Deflater / Inflater ------------------------------------------------------------


def test_deflater_inflater_roundtrip_in_pieces() -> None:
    deflater, inflater = Deflater(), Inflater()
    chunks = [bytes([i]) * (i * 37) for i in range(1, 30)]
    for chunk in chunks:
        assert inflater.decompress(deflater.compress(chunk)) == chunk


def test_corrupt_stream() -> None:
    inflater = Inflater()
    with pytest.raises(ProtocolError, match="corrupt deflate stream") as info:
        inflater.decompress(b"this is not zlib at all")
    assert info.value.bye_code == 501
    with pytest.raises(ProtocolError, match="corrupt deflate stream"):
        inflater.decompress(b"")


def test_zip_bomb_is_refused() -> None:
    bomb = zlib.compress(b"\x00" * (8 * 1024 * 1024), 9)
    assert len(bomb) < 10_000
    inflater = Inflater(max_output=1024 * 1024)
    with pytest.raises(ProtocolError, match="deflate stream expands beyond 1048576 bytes"):
        inflater.decompress(bomb)


def test_output_exactly_at_the_limit_is_fine() -> None:
    data = b"a" * 4096
    inflater = Inflater(max_output=4096)
    assert inflater.decompress(Deflater().compress(data)) == data


def test_data_after_the_end_of_the_stream() -> None:
    finished = zlib.compress(b"hello")
    with pytest.raises(ProtocolError, match="after the end of the deflate stream"):
        Inflater().decompress(finished + b"extra")
    inflater = Inflater()
    assert inflater.decompress(finished) == b"hello"
    with pytest.raises(ProtocolError, match="after the end of the deflate stream"):
        inflater.decompress(b"more")


def test_zip_bomb_through_a_connection() -> None:
    conn = PeerConnection(Role.ACCEPTOR, max_inflate_chunk=64 * 1024)
    conn.receive_data(b"GNUTELLA CONNECT/0.6\r\nAccept-Encoding: deflate\r\n\r\n")
    conn.accept(Headers([("Content-Encoding", "deflate")]))
    compressor = zlib.compressobj(9)
    bomb = compressor.compress(b"\x00" * (4 * 1024 * 1024)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(ProtocolError, match="expands beyond 65536 bytes"):
        conn.receive_data(b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + bomb)


def test_send_bye_is_shaped_like_gtk_gnutellas() -> None:
    _, acceptor, _, _ = connect(initiator_deflate=False, acceptor_deflate=False)
    wire = acceptor.send_bye(502, "Send Queue Full", server="gnurouter/0.1")
    assert wire[16:23] == b"\x02\x01\x00" + (len(wire) - 23).to_bytes(4, "little")
    assert wire[23:] == b"\xf6\x01Send Queue Full\r\nServer: gnurouter/0.1\r\n\r\n\x00"
    assert acceptor.send_bye(200, "Shutting down", server="gnurouter/0.1")[23:] == (
        b"\xc8\x00Shutting down\x00"
    )
