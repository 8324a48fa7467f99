"""Cutting a byte stream into Gnutella messages, with per-type size limits.

The limits are enforced on the header, before the payload is buffered, so a
peer announcing a 4 GiB message costs 23 bytes of memory, not 4 GiB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.messages import (
    HEADER,
    HEADER_LENGTH,
    Message,
    MessageType,
    _make_message,
    type_name,
)

#: No payload may be longer, whatever the configuration. gtk-gnutella reads
#: the size field as 16 bits (GTA_SIZE_MASK) and rejects anything larger as
#: "Invalid size (greater than 64 KiB without flags)"; a length beyond that
#: means a desynchronised or hostile stream.
HARD_PAYLOAD_CEILING = 0xFFFF

#: gtk-gnutella nodes.c MAX_GGEP_PAYLOAD: the GGEP it tolerates in a ping,
#: pong or push.
_MAX_GGEP_PAYLOAD = 1536
#: gtk-gnutella's other_messages_kick_size default (gnet_props.ag), applied
#: to every type that is not a query or a query hit.
_OTHER_MESSAGES_KICK_SIZE = 40960


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """Largest payload accepted per message type; anything bigger ends the link.

    Defaults are gtk-gnutella's "kick" sizes (the point where it disconnects,
    not where it stops relaying): see DEFAULT_PAYLOAD_LIMITS.
    """

    ping: int
    pong: int
    bye: int
    qrp: int
    vendor: int
    push: int
    query: int
    query_hit: int
    unknown: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"payload limit {f.name!r} must be an integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"payload limit {f.name!r} must be positive, got {value}")
            if value > HARD_PAYLOAD_CEILING:
                raise ValueError(
                    f"payload limit {f.name!r} is {value}, above the hard ceiling of "
                    f"{HARD_PAYLOAD_CEILING} bytes"
                )

    def for_type(self, type_: int) -> int:
        name = _LIMIT_FIELD_BY_TYPE.get(type_)
        return getattr(self, name) if name is not None else self.unknown

    @classmethod
    def from_mapping(cls, m: Mapping[str, int]) -> PayloadLimits:
        """Defaults overridden by `m` (as read from a config file).

        Unknown keys and non-positive or too-large values raise `ValueError`.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(m) - set(names))
        if unknown:
            raise ValueError(
                f"unknown payload limit(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(names)}"
            )
        values = {name: getattr(DEFAULT_PAYLOAD_LIMITS, name) for name in names}
        values.update(m)
        return cls(**values)


_LIMIT_FIELD_BY_TYPE: dict[int, str] = {
    MessageType.PING: "ping",
    MessageType.PONG: "pong",
    MessageType.BYE: "bye",
    MessageType.QRP: "qrp",
    MessageType.VENDOR: "vendor",
    MessageType.VENDOR_STANDARD: "vendor",
    MessageType.PUSH: "push",
    MessageType.QUERY: "query",
    MessageType.QUERY_HIT: "query_hit",
}

DEFAULT_PAYLOAD_LIMITS = PayloadLimits(
    # A ping is empty or one GGEP block (nodes.c MAX_GGEP_PAYLOAD = 1536).
    ping=_MAX_GGEP_PAYLOAD,
    # 14 fixed bytes + GGEP (same MAX_GGEP_PAYLOAD).
    pong=14 + _MAX_GGEP_PAYLOAD,
    # nodes.c BYE_MAX_SIZE = 4096.
    bye=4096,
    # Everything else: other_messages_kick_size = 40960 (gnet_props.ag).
    qrp=_OTHER_MESSAGES_KICK_SIZE,
    vendor=_OTHER_MESSAGES_KICK_SIZE,
    # 26 fixed bytes + GGEP (MAX_GGEP_PAYLOAD).
    push=26 + _MAX_GGEP_PAYLOAD,
    # search_queries_kick_size = 1024 (gnet_props.ag, also its maximum).
    query=1024,
    # search_answers_kick_size = 65536 (gnet_props.ag), capped at the 16-bit
    # size gtk-gnutella accepts at all. It relays hits only up to 16 KiB
    # (search_answers_forward_size); that is routing policy, not framing.
    query_hit=HARD_PAYLOAD_CEILING,
    unknown=_OTHER_MESSAGES_KICK_SIZE,
)

#: hops + TTL beyond which a header is taken as garbage. This is a sanity
#: bound, far above routing policy: gtk-gnutella's hard_ttl_limit (15) drops
#: messages, and that belongs to the router, which also counts TTL 0.
DEFAULT_MAX_TTL_PLUS_HOPS = 64

_TOO_LARGE_BYE = 400
_IMPOSSIBLE_BYE = 501
_BAD_TTL_BYE = 403


class MessageFramer:
    """Turns a byte stream (any chunking) into `Message`s.

    Error contract: when a bad header arrives, `feed()` returns the complete
    messages that preceded it in the same call and records the error in
    `failed`; if no message preceded it, `feed()` raises at once. Every later
    `feed()` raises the recorded error: the framer never resynchronises, the
    caller must disconnect. So callers check `failed` after a successful
    `feed()` (after handling the messages it returned).
    """

    __slots__ = ("_buffer", "_failed", "_limits", "_max_ttl_plus_hops", "limits")

    def __init__(
        self,
        limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS,
        *,
        max_ttl_plus_hops: int = DEFAULT_MAX_TTL_PLUS_HOPS,
    ) -> None:
        self.limits = limits
        # A flat table indexed by type keeps the per-message check to one lookup.
        self._limits = tuple(limits.for_type(t) for t in range(256))
        self._max_ttl_plus_hops = max_ttl_plus_hops
        self._buffer = bytearray()
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    @property
    def failed(self) -> ProtocolError | None:
        return self._failed

    def check_header(self, type_: int, ttl: int, hops: int, length: int) -> ProtocolError | None:
        """The error a header with these fields ends the stream with; None if it is framed.

        `feed()` applies the same rule; this lets a caller judge one header
        (a recorded message, say) without feeding a stream.
        """
        limit = self._limits[type_]
        if length > limit:
            if length > HARD_PAYLOAD_CEILING:
                return ProtocolError(
                    f"impossible length: {type_name(type_)} header announces a "
                    f"{length}-byte payload (hard ceiling {HARD_PAYLOAD_CEILING})",
                    bye_code=_IMPOSSIBLE_BYE,
                )
            return ProtocolError(
                f"{type_name(type_)} payload of {length} bytes exceeds the {limit}-byte limit",
                bye_code=_TOO_LARGE_BYE,
            )
        if ttl + hops > self._max_ttl_plus_hops:
            return ProtocolError(
                f"bad TTL: {type_name(type_)} with TTL {ttl} + hops {hops} exceeds "
                f"{self._max_ttl_plus_hops}",
                bye_code=_BAD_TTL_BYE,
            )
        return None

    def feed(self, data: bytes) -> list[Message]:
        """Add `data`; return the messages it completed (see the class doc for errors)."""
        if self._failed is not None:
            raise self._failed
        buffer = self._buffer
        messages: list[Message] = []
        error: ProtocolError | None = None
        unpack = HEADER.unpack_from
        limits = self._limits
        max_ttl_plus_hops = self._max_ttl_plus_hops
        append = messages.append

        if buffer:
            buffer += data
            source: bytes | memoryview = memoryview(buffer)
        else:
            # Common case: nothing pending, parse the caller's bytes in place.
            source = data
        size = len(source)
        pos = 0
        try:
            while size - pos >= HEADER_LENGTH:
                guid, type_, ttl, hops, length = unpack(source, pos)
                if length > limits[type_] or ttl + hops > max_ttl_plus_hops:
                    error = self.check_header(type_, ttl, hops, length)
                    break
                start = pos + HEADER_LENGTH
                end = start + length
                if end > size:
                    break
                append(_make_message(guid, type_, ttl, hops, bytes(source[start:end])))
                pos = end
        finally:
            if isinstance(source, memoryview):
                source.release()

        if error is not None:
            self._failed = error
            buffer.clear()
            if not messages:
                raise error
            return messages
        if buffer:
            del buffer[:pos]
        elif pos < size:
            buffer += data[pos:]
        return messages
