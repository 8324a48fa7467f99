"""Property tests: framing is chunking-independent, and hostile bytes only ever
produce ProtocolError (never IndexError, struct.error, UnicodeError, ...)."""

from __future__ import annotations

import contextlib
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gnurouter.protocol import (
    DEFAULT_PAYLOAD_LIMITS,
    Bye,
    GGEPExtension,
    Headers,
    Message,
    MessageFramer,
    MessageType,
    PeerConnection,
    Ping,
    Pong,
    ProtocolError,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    QueryHitTrailer,
    Role,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
    encode_ggep,
    parse_extension_area,
    parse_ggep,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN_TYPES = [int(t) for t in MessageType]

# -- strategies ---------------------------------------------------------------------

guids = st.binary(min_size=16, max_size=16)
ips = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ggep_ids = st.text(
    st.characters(min_codepoint=1, max_codepoint=255), min_size=1, max_size=15
).filter(lambda s: len(s.encode("latin-1")) <= 15)
ggep_exts = st.lists(st.builds(GGEPExtension, ggep_ids, st.binary(max_size=80)), max_size=3).map(
    tuple
)
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    type_ = draw(st.sampled_from([*KNOWN_TYPES, 0x99, 0xFF]))
    ttl = draw(st.integers(0, 40))
    hops = draw(st.integers(0, 64 - ttl))
    limit = min(DEFAULT_PAYLOAD_LIMITS.for_type(type_), 300)
    payload = draw(st.binary(max_size=limit))
    return Message(draw(guids), type_, ttl, hops, payload)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


query_hit_results = st.builds(
    QueryHitResult,
    u32,
    u32,
    text,
    st.binary(max_size=30).map(lambda b: b.replace(b"\x00", b"\x01")),
)
bodies = st.one_of(
    st.builds(Ping, ggep_exts),
    st.builds(Pong, u16, ips, u32, u32, ggep_exts),
    st.builds(Bye, u16, text.map(lambda s: s.replace("\r", "").replace("\n", "").strip())),
    st.builds(
        RouteTableReset,
        st.integers(0, 31).map(lambda e: 1 << e),
        st.integers(1, 255),
    ),
    st.integers(1, 255).flatmap(
        lambda size: st.builds(
            RouteTablePatch,
            st.integers(1, size),
            st.just(size),
            st.sampled_from([0, 1]),
            st.sampled_from([1, 2, 4, 8]),
            st.binary(max_size=100),
        )
    ),
    st.builds(
        VendorMessage,
        st.binary(min_size=4, max_size=4),
        u16,
        u16,
        st.binary(max_size=50),
        st.booleans(),
    ),
    st.builds(Push, guids, u32, ips, u16, ggep_exts),
    st.builds(Query, u16, text, st.binary(max_size=60)),
    st.builds(
        QueryHit,
        u16,
        ips,
        u32,
        st.lists(query_hit_results, max_size=5).map(tuple),
        guids,
        st.none()
        | st.builds(
            QueryHitTrailer,
            st.binary(min_size=4, max_size=4),
            st.binary(max_size=4),
            st.binary(max_size=20),
        ),
    ),
)


# -- properties ------------------------------------------------------------------------


@SETTINGS
@given(st.lists(messages(), max_size=12), st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_yields_the_same_messages(batch: list[Message], cuts: list[int]) -> None:
    stream = b"".join(m.encode() for m in batch)
    framer = MessageFramer()
    out: list[Message] = []
    for piece in chunked(stream, cuts):
        out.extend(framer.feed(piece))
    assert out == batch
    assert framer.buffered == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=4))
def test_one_byte_at_a_time(batch: list[Message]) -> None:
    stream = b"".join(m.encode() for m in batch)
    framer = MessageFramer()
    out: list[Message] = []
    for i in range(len(stream)):
        out.extend(framer.feed(stream[i : i + 1]))
    assert out == batch


@SETTINGS
@given(bodies, guids, st.integers(0, 255), st.integers(0, 255))
def test_every_body_roundtrips(body: object, guid: bytes, ttl: int, hops: int) -> None:
    message = Message.from_body(guid, ttl, hops, body)  # type: ignore[arg-type]
    assert message.body() == body
    assert Message.from_body(guid, ttl, hops, message.body()).payload == message.payload


@SETTINGS
@given(ggep_exts.filter(bool), st.booleans())
def test_ggep_roundtrips(exts: tuple[GGEPExtension, ...], nul_free: bool) -> None:
    block = encode_ggep(exts, nul_free=nul_free)
    if nul_free:
        assert b"\x00" not in block
    assert parse_ggep(block + b"tail") == (exts, len(block))


def _only_protocol_errors(framer_input: list[bytes]) -> None:
    framer = MessageFramer()
    for piece in framer_input:
        try:
            out = framer.feed(piece)
        except ProtocolError:
            return
        for message in out:
            try:
                body = message.body()
            except ProtocolError:
                continue
            if isinstance(body, Query):
                with contextlib.suppress(ProtocolError):
                    body.parsed_extensions()
            if isinstance(body, QueryHit) and body.trailer is not None:
                with contextlib.suppress(ProtocolError):
                    body.trailer.ggep()


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(0, 3000), max_size=10))
def test_random_bytes_only_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    _only_protocol_errors(chunked(data, cuts))


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    batch = draw(
        st.lists(
            st.builds(Message.from_body, guids, st.integers(0, 7), st.integers(0, 7), bodies),
            min_size=1,
            max_size=5,
        )
    )
    data = bytearray(b"".join(m.encode() for m in batch))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        if kind == "flip" and pos < len(data):
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif pos < len(data):
            del data[pos : pos + draw(st.integers(1, 4))]
    return bytes(data)


@SETTINGS
@given(mutated_streams(), st.lists(st.integers(0, 3000), max_size=10))
def test_mutated_streams_only_raise_protocol_error(data: bytes, cuts: list[int]) -> None:
    _only_protocol_errors(chunked(data, cuts))


@SETTINGS
@given(st.sampled_from(KNOWN_TYPES), st.binary(max_size=300))
def test_random_payloads_only_raise_protocol_error(type_: int, payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Message(bytes(16), type_, 1, 0, payload).body()
    with contextlib.suppress(ProtocolError):
        parse_extension_area(payload)


def _deflated_link() -> PeerConnection:
    conn = PeerConnection(Role.ACCEPTOR, max_inflate_chunk=256 * 1024)
    conn.receive_data(b"GNUTELLA CONNECT/0.6\r\nAccept-Encoding: deflate\r\n\r\n")
    conn.accept(Headers([("Accept-Encoding", "deflate"), ("Content-Encoding", "deflate")]))
    conn.receive_data(b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n")
    assert conn.established and conn.deflate_in
    return conn


def _feed_connection(conn: PeerConnection, pieces: list[bytes]) -> None:
    for piece in pieces:
        try:
            events = conn.receive_data(piece)
        except ProtocolError:
            return
        for event in events:
            if isinstance(event, Message):
                with contextlib.suppress(ProtocolError):
                    event.body()


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(0, 3000), max_size=10))
def test_connection_random_bytes_after_deflate_handshake(data: bytes, cuts: list[int]) -> None:
    _feed_connection(_deflated_link(), chunked(data, cuts))


@SETTINGS
@given(mutated_streams(), st.lists(st.integers(0, 3000), max_size=10), st.booleans())
def test_connection_mutated_deflated_streams(
    data: bytes, cuts: list[int], mutate_wire: bool
) -> None:
    compressor = zlib.compressobj()
    wire = bytearray(compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))
    if mutate_wire and wire:
        # Corrupt the compressed bytes too, not just what they decode to.
        wire[len(wire) // 2] ^= 0x5A
    _feed_connection(_deflated_link(), chunked(bytes(wire), cuts))


@SETTINGS
@given(
    st.lists(
        st.builds(Message.from_body, guids, st.integers(0, 7), st.integers(0, 7), bodies),
        max_size=8,
    ),
    st.lists(st.integers(0, 5000), max_size=15),
)
def test_deflated_link_delivers_any_chunking(batch: list[Message], cuts: list[int]) -> None:
    conn = _deflated_link()
    compressor = zlib.compressobj()
    wire = compressor.compress(b"".join(m.encode() for m in batch)) + compressor.flush(
        zlib.Z_SYNC_FLUSH
    )
    out: list[Message] = []
    for piece in chunked(wire, cuts):
        out.extend(e for e in conn.receive_data(piece) if isinstance(e, Message))
    assert out == batch


@SETTINGS
@given(
    st.binary(max_size=600), st.lists(st.integers(0, 700), max_size=8), st.sampled_from(list(Role))
)
def test_handshake_garbage_only_raises_protocol_error(
    data: bytes, cuts: list[int], role: Role
) -> None:
    conn = PeerConnection(role)
    if role is Role.INITIATOR:
        conn.start(Headers([("User-Agent", "x")]))
    _feed_connection(conn, chunked(data, cuts))
