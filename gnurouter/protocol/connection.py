"""One peer link, sans I/O: handshake, then (optionally deflated) message framing.

    conn = PeerConnection(Role.ACCEPTOR)
    for event in conn.receive_data(bytes_from_socket):
        ...                      # ConnectRequest -> conn.accept(headers) / conn.refuse(...)
    wire = conn.send([message, ...])

Every method that produces output returns the bytes to write; nothing here
reads or writes a socket. A `ProtocolError` from `receive_data()` means the
link is unusable: send a Bye with `error.bye_code` if the handshake is over
(`send_bye()`), then close. Once raised, the same error is raised again by
every later `receive_data()`.

A deflated link is inflated against an `InflateBudget` (ratio and rate, see
`gnurouter.protocol.deflate`); pass the caller's monotonic clock as
`receive_data(data, now=...)` for the rate bound to apply.
"""

from __future__ import annotations

from collections.abc import Iterable

from gnurouter.protocol.deflate import (
    DEFAULT_DEFLATE,
    DEFAULT_INFLATE_LIMITS,
    DEFAULT_MAX_INFLATE_CHUNK,
    Deflater,
    InflateBudget,
    InflateLimits,
    Inflater,
)
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.framer import (
    DEFAULT_MAX_TTL_PLUS_HOPS,
    DEFAULT_PAYLOAD_LIMITS,
    MessageFramer,
    PayloadLimits,
)
from gnurouter.protocol.handshake import (
    DEFAULT_HANDSHAKE_LIMITS,
    ConnectRequest,
    ConnectResponse,
    Handshake,
    HandshakeComplete,
    HandshakeLimits,
    HandshakeRefused,
    Headers,
    Role,
)
from gnurouter.protocol.messages import Bye, Message, encode_all, new_guid

Event = ConnectRequest | ConnectResponse | HandshakeComplete | HandshakeRefused | Message


class PeerConnection:
    """The protocol state of one link (what h11's Connection is to HTTP).

    Counters: `bytes_in` / `bytes_out` count every byte on the wire,
    handshake included; `stream_bytes_in` / `stream_bytes_out` the message
    stream as it crossed the wire (compressed if deflated), and
    `uncompressed_bytes_in` / `uncompressed_bytes_out` the same stream
    inflated, so uncompressed / stream is the compression ratio.

    Framing errors follow `MessageFramer`'s contract: messages that precede
    a bad header are returned, `failed` is set, and the next
    `receive_data()` raises; check `failed` after handling the events.
    """

    def __init__(
        self,
        role: Role,
        *,
        payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
        handshake_limits: HandshakeLimits = DEFAULT_HANDSHAKE_LIMITS,
        max_ttl_plus_hops: int = DEFAULT_MAX_TTL_PLUS_HOPS,
        max_inflate_chunk: int = DEFAULT_MAX_INFLATE_CHUNK,
        inflate_limits: InflateLimits = DEFAULT_INFLATE_LIMITS,
    ) -> None:
        self.role = role
        self.handshake = Handshake(role, handshake_limits)
        self._framer = MessageFramer(payload_limits, max_ttl_plus_hops=max_ttl_plus_hops)
        if inflate_limits.max_rate and inflate_limits.rate_burst < max_inflate_chunk:
            raise ValueError("inflate rate_burst must hold one full read (max_inflate_chunk)")
        self._max_inflate_chunk = max_inflate_chunk
        self._inflate_limits = inflate_limits
        self._inflater: Inflater | None = None
        self._deflater: Deflater | None = None
        #: How our side of a deflated link compresses: set before the
        #: handshake completes (the parser picks LEAF_DEFLATE for leaves).
        self.deflate_settings = DEFAULT_DEFLATE
        self._established = False
        self._streaming = False
        self._failed: ProtocolError | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.stream_bytes_in = 0
        self.stream_bytes_out = 0
        self.uncompressed_bytes_in = 0
        self.uncompressed_bytes_out = 0

    # -- state ---------------------------------------------------------------

    @property
    def established(self) -> bool:
        """True once the handshake succeeded (right after our confirm() or 0.4 accept())."""
        return self._established

    @property
    def deflate_in(self) -> bool:
        return self._inflater is not None

    @property
    def inflate_budget(self) -> InflateBudget | None:
        """The inflated link's budget (ratio, rate, counters); None if not deflated."""
        return self._inflater.budget if self._inflater is not None else None

    @property
    def deflate_out(self) -> bool:
        return self._deflater is not None

    @property
    def version(self) -> str | None:
        return self.handshake.version

    @property
    def failed(self) -> ProtocolError | None:
        return self._failed or self._framer.failed

    @property
    def buffered(self) -> int:
        """Inflated bytes waiting for the rest of their message."""
        return self._framer.buffered

    # -- handshake decisions -------------------------------------------------

    def start(self, headers: Headers) -> bytes:
        return self._out(self.handshake.start(headers))

    def accept(self, headers: Headers) -> bytes:
        data = self.handshake.accept(headers)
        self._establish_if_complete()
        return self._out(data)

    def confirm(self, headers: Headers) -> bytes:
        data = self.handshake.confirm(headers)
        self._establish_if_complete()
        return self._out(data)

    def refuse(self, status: int, reason: str, headers: Headers) -> bytes:
        return self._out(self.handshake.refuse(status, reason, headers))

    def _out(self, data: bytes) -> bytes:
        self.bytes_out += len(data)
        return data

    def _establish_if_complete(self) -> None:
        result = self.handshake.result
        if result is None or self._established:
            return
        self._established = True
        if result.deflate_in:
            self._inflater = Inflater(self._max_inflate_chunk, InflateBudget(self._inflate_limits))
        if result.deflate_out:
            self._deflater = Deflater(self.deflate_settings)

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> list[Event]:
        """Events for `data`: handshake events, then messages once established.

        Bytes following the end of the handshake in the same chunk (the
        initiator's final 200 OK with deflated messages right behind it) are
        inflated and framed in the same call.  `now` (the caller's monotonic
        clock, seconds) drives the inflate rate bound; without it only the
        ratio and per-read bounds apply.  A stream past its inflate budget
        raises `InflateBudgetExceeded` (a `ProtocolError`, Bye 400) before
        any message of the offending read is framed.
        """
        failed = self.failed
        if failed is not None:
            self._failed = failed
            raise failed
        self.bytes_in += len(data)
        events: list[Event] = []
        try:
            if not self._streaming:
                events.extend(self.handshake.receive_data(data))
                if not self.handshake.complete:
                    return events
                self._establish_if_complete()
                self._streaming = True
                data = self.handshake.take_leftover()
            if data:
                events.extend(self._receive_stream(data, now))
        except ProtocolError as error:
            self._failed = error
            raise
        return events

    def _receive_stream(self, data: bytes, now: float | None) -> list[Message]:
        self.stream_bytes_in += len(data)
        if self._inflater is not None:
            data = self._inflater.decompress(data, now)
        self.uncompressed_bytes_in += len(data)
        if not data:
            return []
        return self._framer.feed(data)

    # -- output --------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> bytes:
        """Wire bytes for a batch: encoded, then deflated with one sync flush if negotiated."""
        return self.send_encoded(encode_all(messages))

    def send_encoded(self, data: bytes) -> bytes:
        """Wire bytes for messages already encoded back to back (`encode_all`).

        Lets a caller encode a message once for every link it goes to.
        """
        if not self._established:
            raise RuntimeError("cannot send messages before the handshake is complete")
        if not data:
            return b""
        self.uncompressed_bytes_out += len(data)
        if self._deflater is not None:
            data = self._deflater.compress(data)
        self.stream_bytes_out += len(data)
        self.bytes_out += len(data)
        return data

    def send_bye(self, code: int, reason: str, *, server: str | None = None) -> bytes:
        """A Bye (TTL 1, hops 0, as the Bye-Packet proposal requires), ready to write.

        With `server`, codes other than 200 carry a "Server:" header, as
        gtk-gnutella's Byes do.
        """
        headers = (("Server", server),) if server and code != 200 else ()
        return self.send([Message.from_body(new_guid(), 1, 0, Bye(code, reason, headers))])
