"""The handshake against byte-for-byte transcripts in the shapes real servents send."""

from __future__ import annotations

import zlib

import pytest

from gnurouter.protocol import (
    ConnectRequest,
    ConnectResponse,
    Handshake,
    HandshakeComplete,
    HandshakeLimits,
    HandshakeRefused,
    Headers,
    Message,
    PeerConnection,
    Ping,
    Pong,
    ProtocolError,
    Query,
    Role,
    negotiate_encoding,
)

GUID = bytes(range(16))

# A gtk-gnutella 1.2 ultrapeer connecting to us (header set as in its nodes.c).
GTKG_CONNECT = (
    b"GNUTELLA CONNECT/0.6\r\n"
    b"Node: 198.51.100.20:6346\r\n"
    b"Remote-IP: 203.0.113.7\r\n"
    b"User-Agent: gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)\r\n"
    b"Pong-Caching: 0.1\r\n"
    b"Bye-Packet: 0.1\r\n"
    b"GGEP: 0.5\r\n"
    b"Vendor-Message: 0.2\r\n"
    b"Accept-Encoding: deflate\r\n"
    b"X-Token: GTKG/1.2.2 1646471472 Oqz+6Q==\r\n"
    b"X-Live-Since: Sat, 05 Mar 2022 10:11:12 +0100\r\n"
    b"X-Ultrapeer: True\r\n"
    b"X-Query-Routing: 0.2\r\n"
    b"X-Ultrapeer-Query-Routing: 0.1\r\n"
    b"X-Degree: 32\r\n"
    b"X-Max-TTL: 4\r\n"
    b"X-Dynamic-Querying: 0.1\r\n"
    b"X-Ext-Probes: 0.1\r\n"
    b"X-Requeries: False\r\n"
    b"Listen-IP: 198.51.100.20:6346\r\n"
    b"X-Features: tls/1.0, browse/1.0, fwalt/0.1, dht/1.0\r\n"
    b"\r\n"
)

# A LimeWire 4 leaf connecting to us, without compression. LimeWire writes
# "Listen-IP:" with no space and a trailing space after its final "200 OK".
LIMEWIRE_CONNECT = (
    b"GNUTELLA CONNECT/0.6\r\n"
    b"User-Agent: LimeWire/4.18.8\r\n"
    b"X-Requeries: false\r\n"
    b"Listen-IP:192.0.2.55:6346\r\n"
    b"Remote-IP: 203.0.113.7\r\n"
    b"X-Max-TTL: 3\r\n"
    b"X-Dynamic-Querying: 0.1\r\n"
    b"X-Version: 4.18.8\r\n"
    b"X-Query-Routing: 0.1\r\n"
    b"X-Ultrapeer: False\r\n"
    b"X-Degree: 15\r\n"
    b"X-Ultrapeer-Query-Routing: 0.1\r\n"
    b"GGEP: 0.5\r\n"
    b"Vendor-Message: 0.1\r\n"
    b"Pong-Caching: 0.1\r\n"
    b"\r\n"
)
LIMEWIRE_FINAL = b"GNUTELLA/0.6 200 OK \r\n\r\n"

OUR_HEADERS = Headers.from_pairs(
    [
        ("User-Agent", "gnurouter/0.1"),
        ("X-Ultrapeer", "True"),
        ("X-Query-Routing", "0.2"),
        ("Accept-Encoding", "deflate"),
    ]
)

MESSAGES = [
    Message.from_body(GUID, 1, 0, Ping()),
    Message.from_body(bytes(16), 4, 0, Query(0x8000, "lime")),
    Message.from_body(GUID, 1, 1, Pong(6346, "198.51.100.20", 10, 1000)),
]
RAW_STREAM = b"".join(m.encode() for m in MESSAGES)


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj()
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


# -- a gtk-gnutella ultrapeer connects to us, with deflate ---------------------


def test_gtk_gnutella_ultrapeer_with_deflate() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    [request] = conn.receive_data(GTKG_CONNECT)
    assert isinstance(request, ConnectRequest)
    assert request.version == "0.6"
    headers = request.headers
    assert headers.get("user-agent") == "gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)"
    assert headers.get("X-ULTRAPEER") == "True"
    assert headers.get("Listen-IP") == "198.51.100.20:6346"
    assert "Bye-Packet" in headers
    assert len(headers) == 20

    encoding = negotiate_encoding(headers, we_support_deflate=True)
    assert encoding == [("Content-Encoding", "deflate")]
    reply = conn.accept(Headers.from_pairs([*OUR_HEADERS.pairs, *encoding]))
    assert reply == (
        b"GNUTELLA/0.6 200 OK\r\n"
        b"User-Agent: gnurouter/0.1\r\n"
        b"X-Ultrapeer: True\r\n"
        b"X-Query-Routing: 0.2\r\n"
        b"Accept-Encoding: deflate\r\n"
        b"Content-Encoding: deflate\r\n"
        b"\r\n"
    )
    assert not conn.established

    # gtk-gnutella's third step, immediately followed by its deflated stream.
    final = b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n"
    events = conn.receive_data(final + deflated(RAW_STREAM))
    response, complete, *messages = events
    assert response == ConnectResponse(200, "OK", Headers([("Content-Encoding", "deflate")]))
    assert isinstance(complete, HandshakeComplete)
    assert complete.deflate_in and complete.deflate_out
    assert complete.version == "0.6"
    assert complete.their_headers.get("User-Agent", "").startswith("gtk-gnutella/1.2.2")
    assert complete.their_headers.get("Content-Encoding") == "deflate"
    assert complete.our_headers.get("Content-Encoding") == "deflate"
    assert messages == MESSAGES
    assert conn.established and conn.deflate_in and conn.deflate_out
    assert conn.uncompressed_bytes_in == len(RAW_STREAM)
    assert conn.bytes_in == len(GTKG_CONNECT) + len(final) + conn.stream_bytes_in


def test_gtk_gnutella_transcript_one_byte_at_a_time() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    events: list[object] = []
    for i in range(len(GTKG_CONNECT)):
        events.extend(conn.receive_data(GTKG_CONNECT[i : i + 1]))
    assert [type(e) for e in events] == [ConnectRequest]
    conn.accept(Headers([("Content-Encoding", "deflate")]))
    wire = b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + deflated(RAW_STREAM)
    events = []
    for i in range(len(wire)):
        events.extend(conn.receive_data(wire[i : i + 1]))
    assert events[2:] == MESSAGES


# -- a LimeWire leaf connects to us, no deflate ------------------------------------


def test_limewire_leaf_without_deflate() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    [request] = conn.receive_data(LIMEWIRE_CONNECT)
    assert isinstance(request, ConnectRequest)
    assert request.headers.get("Listen-IP") == "192.0.2.55:6346"
    assert request.headers.get("X-Ultrapeer") == "False"
    assert negotiate_encoding(request.headers, we_support_deflate=True) == []
    conn.accept(Headers([("User-Agent", "gnurouter/0.1"), ("X-Ultrapeer", "True")]))

    # The final 200 OK (with LimeWire's trailing space) and raw messages in one segment.
    events = conn.receive_data(LIMEWIRE_FINAL + RAW_STREAM)
    response, complete, *messages = events
    assert response == ConnectResponse(200, "OK", Headers())
    assert isinstance(complete, HandshakeComplete)
    assert not complete.deflate_in and not complete.deflate_out
    assert complete.their_headers.get("User-Agent") == "LimeWire/4.18.8"
    assert messages == MESSAGES
    assert conn.stream_bytes_in == conn.uncompressed_bytes_in == len(RAW_STREAM)
    assert conn.send(MESSAGES) == RAW_STREAM


# -- 0.4 -------------------------------------------------------------------------------


def test_gnutella_04_connect() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    [request] = conn.receive_data(b"GNUTELLA CONNECT/0.4\n\n")
    assert request == ConnectRequest("0.4", Headers())
    assert conn.accept(OUR_HEADERS) == b"GNUTELLA OK\n\n"
    assert conn.established  # no third step in 0.4
    assert conn.version == "0.4"
    complete, *messages = conn.receive_data(RAW_STREAM)
    assert complete == HandshakeComplete("0.4", Headers(), Headers(), False, False)
    assert messages == MESSAGES


def test_gnutella_04_refusal_is_just_a_close() -> None:
    handshake = Handshake(Role.ACCEPTOR)
    handshake.receive_data(b"GNUTELLA CONNECT/0.4\n\n")
    assert handshake.refuse(503, "Full", Headers()) == b""
    assert handshake.refused


# -- refusals ------------------------------------------------------------------------

TRY = "198.51.100.1:6346,198.51.100.2:6347,198.51.100.3:6346"


def test_we_refuse_with_try_ultrapeers() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    conn.receive_data(LIMEWIRE_CONNECT)
    data = conn.refuse(
        503,
        "Too many connections",
        Headers([("User-Agent", "gnurouter/0.1"), ("X-Try-Ultrapeers", TRY)]),
    )
    assert data == (
        b"GNUTELLA/0.6 503 Too many connections\r\n"
        b"User-Agent: gnurouter/0.1\r\n"
        b"X-Try-Ultrapeers: 198.51.100.1:6346,198.51.100.2:6347,198.51.100.3:6346\r\n"
        b"\r\n"
    )
    [refused] = conn.receive_data(b"")
    assert isinstance(refused, HandshakeRefused)
    assert (refused.status, refused.reason, refused.by_us) == (503, "Too many connections", True)
    assert refused.headers.get("X-Try-Ultrapeers") == TRY
    assert conn.handshake.refusal == refused
    assert not conn.established
    assert conn.receive_data(b"whatever the peer still sends") == []


def test_peer_refuses_us_with_try_ultrapeers() -> None:
    conn = PeerConnection(Role.INITIATOR)
    conn.start(OUR_HEADERS)
    events = conn.receive_data(
        b"GNUTELLA/0.6 503 Service unavailable\r\n"
        b"User-Agent: gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)\r\n"
        b"X-Try-Ultrapeers: 198.51.100.1:6346, 198.51.100.2:6347\r\n"
        b"X-Try-Ultrapeers: 198.51.100.3:6346\r\n"
        b"Remote-IP: 203.0.113.7\r\n"
        b"\r\n"
    )
    [refused] = events
    assert isinstance(refused, HandshakeRefused)
    assert (refused.status, refused.reason, refused.by_us) == (503, "Service unavailable", False)
    assert refused.headers.get("X-Try-Ultrapeers") == (
        "198.51.100.1:6346, 198.51.100.2:6347, 198.51.100.3:6346"
    )


def test_acceptor_sees_the_initiator_refuse_in_its_final_reply() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    conn.receive_data(GTKG_CONNECT)
    conn.accept(OUR_HEADERS)
    [refused] = conn.receive_data(b"GNUTELLA/0.6 503 We are a leaf now\r\n\r\n")
    assert refused == HandshakeRefused(503, "We are a leaf now", Headers(), by_us=False)


def test_initiator_refuses_after_the_response() -> None:
    conn = PeerConnection(Role.INITIATOR)
    conn.start(OUR_HEADERS)
    conn.receive_data(b"GNUTELLA/0.6 200 OK\r\nX-Ultrapeer: False\r\n\r\n")
    assert conn.refuse(503, "Leaves only", Headers()) == b"GNUTELLA/0.6 503 Leaves only\r\n\r\n"


# -- us as initiator ------------------------------------------------------------------


def test_we_initiate_to_a_gtk_gnutella_ultrapeer() -> None:
    conn = PeerConnection(Role.INITIATOR)
    request = conn.start(OUR_HEADERS)
    assert request == (
        b"GNUTELLA CONNECT/0.6\r\n"
        b"User-Agent: gnurouter/0.1\r\n"
        b"X-Ultrapeer: True\r\n"
        b"X-Query-Routing: 0.2\r\n"
        b"Accept-Encoding: deflate\r\n"
        b"\r\n"
    )
    [response] = conn.receive_data(
        b"GNUTELLA/0.6 200 OK\r\n"
        b"User-Agent: gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)\r\n"
        b"Pong-Caching: 0.1\r\n"
        b"Bye-Packet: 0.1\r\n"
        b"GGEP: 0.5\r\n"
        b"Vendor-Message: 0.2\r\n"
        b"Remote-IP: 203.0.113.7\r\n"
        b"Accept-Encoding: deflate\r\n"
        b"Content-Encoding: deflate\r\n"
        b"X-Ultrapeer: True\r\n"
        b"X-Ultrapeer-Needed: False\r\n"
        b"X-Query-Routing: 0.2\r\n"
        b"\r\n"
    )
    assert isinstance(response, ConnectResponse)
    assert response.status == 200
    assert not conn.established
    encoding = negotiate_encoding(response.headers, we_support_deflate=True)
    final = conn.confirm(Headers(encoding))
    assert final == b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n"
    assert conn.established and conn.deflate_in and conn.deflate_out
    # Messages can go out at once; the HandshakeComplete event follows on the next call.
    assert zlib.decompressobj().decompress(conn.send(MESSAGES)) == RAW_STREAM
    complete, *messages = conn.receive_data(deflated(RAW_STREAM))
    assert isinstance(complete, HandshakeComplete)
    assert complete.our_headers.get("User-Agent") == "gnurouter/0.1"
    assert complete.our_headers.get("Content-Encoding") == "deflate"
    assert complete.their_headers.get("X-Ultrapeer-Needed") == "False"
    assert messages == MESSAGES


def test_leaf_guidance_final_headers_replace_earlier_ones() -> None:
    conn = PeerConnection(Role.INITIATOR)
    conn.start(Headers([("X-Ultrapeer", "True"), ("User-Agent", "gnurouter/0.1")]))
    conn.receive_data(b"GNUTELLA/0.6 200 OK\r\nX-Ultrapeer-Needed: False\r\n\r\n")
    conn.confirm(Headers([("X-Ultrapeer", "False")]))
    [complete] = conn.receive_data(b"")
    assert isinstance(complete, HandshakeComplete)
    assert complete.our_headers.get("X-Ultrapeer") == "False"
    assert complete.our_headers.get("User-Agent") == "gnurouter/0.1"


# -- headers ------------------------------------------------------------------------------


def test_headers_case_insensitive_repeated_and_folded() -> None:
    handshake = Handshake(Role.ACCEPTOR)
    [request] = handshake.receive_data(
        b"GNUTELLA CONNECT/0.6\r\n"
        b"user-agent: Foo/1.0\r\n"
        b"X-Try-Ultrapeers: 1.2.3.4:6346,\r\n"
        b" 5.6.7.8:6346\r\n"
        b"X-TRY-ULTRAPEERS: 9.9.9.9:6346\r\n"
        b"Empty:\r\n"
        b"\r\n"
    )
    assert isinstance(request, ConnectRequest)
    headers = request.headers
    assert headers.get("User-Agent") == "Foo/1.0"
    assert headers.get("x-try-ultrapeers") == "1.2.3.4:6346, 5.6.7.8:6346, 9.9.9.9:6346"
    assert headers.get("Empty") == ""
    assert headers.get("Missing") is None
    assert headers.get("Missing", "x") == "x"
    assert "USER-AGENT" in headers and "Missing" not in headers
    assert len(headers) == 3
    assert headers.items() == [
        ("user-agent", "Foo/1.0"),
        ("X-Try-Ultrapeers", "1.2.3.4:6346, 5.6.7.8:6346, 9.9.9.9:6346"),
        ("Empty", ""),
    ]


def test_bare_lf_line_endings_are_accepted() -> None:
    handshake = Handshake(Role.ACCEPTOR)
    [request] = handshake.receive_data(b"GNUTELLA CONNECT/0.6\nUser-Agent: Old/0.1\n\n")
    assert isinstance(request, ConnectRequest)
    assert request.headers.get("User-Agent") == "Old/0.1"


def test_later_versions_are_spoken_as_06() -> None:
    [request] = Handshake(Role.ACCEPTOR).receive_data(b"GNUTELLA CONNECT/0.7\r\n\r\n")
    assert request == ConnectRequest("0.6", Headers())


def test_accept_encoding_variants() -> None:
    def offered(value: str) -> bool:
        return bool(
            negotiate_encoding(Headers([("Accept-Encoding", value)]), we_support_deflate=True)
        )

    assert offered("deflate")
    assert offered("gzip, DEFLATE")
    assert offered("deflate;q=0.5")
    assert not offered("deflate;q=0")
    assert not offered("gzip")
    assert (
        negotiate_encoding(Headers([("Accept-Encoding", "deflate")]), we_support_deflate=False)
        == []
    )


def test_header_encode_rejects_line_breaks() -> None:
    with pytest.raises(ValueError):
        Headers([("X-Evil", "a\r\nInjected: yes")]).encode()


# -- misbehaving peers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "data", "problem"),
    [
        (Role.ACCEPTOR, b"GET / HTTP/1.1\r\n\r\n", "expected 'GNUTELLA CONNECT/<version>'"),
        (Role.ACCEPTOR, b"GNUTELLA CONNECT/0.5\r\n\r\n", "unsupported protocol version 0.5"),
        (Role.ACCEPTOR, b"\r\n", "starts with an empty line"),
        (
            Role.ACCEPTOR,
            b"GNUTELLA CONNECT/0.6\r\nNo colon here\r\n\r\n",
            "malformed handshake header",
        ),
        (
            Role.ACCEPTOR,
            b"GNUTELLA CONNECT/0.6\r\nBad Name: x\r\n\r\n",
            "malformed handshake header",
        ),
        (Role.ACCEPTOR, b"GNUTELLA CONNECT/0.6\r\n folded\r\n\r\n", "continuation line without"),
        (Role.INITIATOR, b"HTTP/1.1 200 OK\r\n\r\n", "malformed handshake status line"),
        (Role.INITIATOR, b"GNUTELLA OK\r\n\r\n", "malformed handshake status line"),
        (Role.INITIATOR, b"GNUTELLA/0.6 2000 OK\r\n\r\n", "malformed handshake status line"),
        (Role.INITIATOR, b"GNUTELLA/0.4 200 OK\r\n\r\n", "unsupported protocol version"),
    ],
)
def test_garbage(role: Role, data: bytes, problem: str) -> None:
    handshake = Handshake(role)
    if role is Role.INITIATOR:
        handshake.start(OUR_HEADERS)
    with pytest.raises(ProtocolError, match=problem):
        handshake.receive_data(data)
    # A failed handshake stays failed.
    with pytest.raises(ProtocolError, match=problem):
        handshake.receive_data(b"GNUTELLA/0.6 200 OK\r\n\r\n")


def test_over_long_line_is_refused_before_its_end_arrives() -> None:
    handshake = Handshake(Role.ACCEPTOR, HandshakeLimits(max_line_length=100))
    handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: ")
    with pytest.raises(ProtocolError, match="handshake line longer than 100 bytes"):
        handshake.receive_data(b"x" * 100)


def test_over_long_complete_line() -> None:
    handshake = Handshake(Role.ACCEPTOR, HandshakeLimits(max_line_length=100))
    with pytest.raises(ProtocolError, match="handshake line longer than 100 bytes"):
        handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\nX: " + b"y" * 100 + b"\r\n\r\n")


def test_too_many_headers() -> None:
    handshake = Handshake(Role.ACCEPTOR, HandshakeLimits(max_headers=10))
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(11))
    with pytest.raises(ProtocolError, match="more than 10 handshake headers"):
        handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\n" + lines + b"\r\n")


def test_exactly_max_headers_is_fine() -> None:
    handshake = Handshake(Role.ACCEPTOR, HandshakeLimits(max_headers=10))
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(10))
    [request] = handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\n" + lines + b"\r\n")
    assert isinstance(request, ConnectRequest)
    assert len(request.headers) == 10


def test_block_too_big() -> None:
    handshake = Handshake(Role.ACCEPTOR, HandshakeLimits(max_total_bytes=1000))
    lines = b"".join(b"X-Header-%03d: %s\r\n" % (i, b"v" * 40) for i in range(30))
    with pytest.raises(ProtocolError, match="handshake block larger than 1000 bytes"):
        handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\n" + lines)


def test_default_limits_follow_gtk_gnutella() -> None:
    assert HandshakeLimits() == HandshakeLimits(
        max_line_length=4096, max_headers=128, max_total_bytes=16384
    )


def test_peer_chattering_before_our_decision_is_bounded() -> None:
    handshake = Handshake(Role.ACCEPTOR, HandshakeLimits(max_total_bytes=1000))
    handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\n\r\n")
    handshake.receive_data(b"x" * 1000)
    with pytest.raises(ProtocolError, match="before our reply"):
        handshake.receive_data(b"x")


def test_calls_in_the_wrong_state_are_local_errors() -> None:
    with pytest.raises(RuntimeError):
        Handshake(Role.ACCEPTOR).start(OUR_HEADERS)
    with pytest.raises(RuntimeError):
        Handshake(Role.INITIATOR).confirm(OUR_HEADERS)
    with pytest.raises(RuntimeError):
        Handshake(Role.ACCEPTOR).accept(OUR_HEADERS)
    with pytest.raises(RuntimeError):
        Handshake(Role.INITIATOR).refuse(503, "x", Headers())
    with pytest.raises(RuntimeError):
        PeerConnection(Role.INITIATOR).send(MESSAGES)
    handshake = Handshake(Role.ACCEPTOR)
    handshake.receive_data(b"GNUTELLA CONNECT/0.6\r\n\r\n")
    with pytest.raises(ValueError):
        handshake.refuse(200, "OK", Headers())
