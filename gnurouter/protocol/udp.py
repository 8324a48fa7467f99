"""Gnutella over UDP: one message per datagram, with the TCP stream's 23-byte header.

Servents answer UDP pings on their Gnutella port, and UDP host caches
(UHC) answer a ping carrying GGEP "SCP" with a pong packing ultrapeers'
addresses in "IPP" (and "IPP6"): gtk-gnutella's pcache.c and uhc.c are the
reference.  This module only turns datagrams into messages and back, strictly:
a datagram is exactly one message, its header's length is the datagram's,
and only pings and pongs are taken.  Each refusal is a `DatagramError` whose
`kind` names the counter it goes to.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.ggep import SCP_F_IPV6, SCP_F_ULTRA, GGEPExtension
from gnurouter.protocol.messages import (
    HEADER_LENGTH,
    Message,
    MessageType,
    Ping,
    Pong,
    decode_header,
    new_guid,
)

#: The largest datagram read.  A pong packing 30 IPv6 hosts is about 600
#: bytes; nothing we answer (pings, pongs) is legitimately much larger.
MAX_DATAGRAM = 2048

#: Refusal kinds, each a counter (and a log line) of its own.
TRUNCATED = "truncated"
LENGTH_MISMATCH = "length-mismatch"
TOO_LARGE = "too-large"
MALFORMED = "malformed"
UNSUPPORTED = "unsupported-type"


class DatagramError(ProtocolError):
    """A datagram that is no acceptable message; `kind` is one of the kinds above."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind

    def __reduce__(self) -> tuple[object, ...]:
        return (DatagramError, (self.kind, self.reason))


def decode_datagram(data: bytes, max_size: int = MAX_DATAGRAM) -> tuple[Message, Ping | Pong]:
    """The one ping or pong a datagram carries, decoded; else `DatagramError`."""
    if len(data) > max_size:
        raise DatagramError(TOO_LARGE, f"datagram of {len(data)} bytes exceeds {max_size}")
    if len(data) < HEADER_LENGTH:
        raise DatagramError(TRUNCATED, f"datagram of {len(data)} bytes is shorter than a header")
    guid, type_, ttl, hops, length = decode_header(data)
    carried = len(data) - HEADER_LENGTH
    if length != carried:
        raise DatagramError(
            LENGTH_MISMATCH, f"header announces {length} payload bytes, datagram carries {carried}"
        )
    if type_ not in (MessageType.PING, MessageType.PONG):
        raise DatagramError(UNSUPPORTED, f"message type 0x{type_:02x} is not taken over UDP")
    message = Message(guid, type_, ttl, hops, bytes(data[HEADER_LENGTH:]))
    try:
        body = message.body()
    except ProtocolError as error:
        raise DatagramError(MALFORMED, f"{message.type_name}: {error}") from None
    assert isinstance(body, Ping | Pong)
    return message, body


def host_cache_ping(
    *,
    ultrapeer: bool,
    want_ipv6: bool,
    vendor: bytes,
    vendor_version: int,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> Message:
    """The ping a servent sends a UDP host cache: TTL 1, "SCP" then "VC" (gtk-gnutella's
    build_ping_msg with uhc=TRUE): the cache may cluster answers by vendor."""
    flags = (SCP_F_ULTRA if ultrapeer else 0) | (SCP_F_IPV6 if want_ipv6 else 0)
    ping = Ping(
        (
            GGEPExtension("SCP", bytes((flags,))),
            GGEPExtension("VC", vendor + bytes((vendor_version,))),
        )
    )
    return Message.from_body(new_guid(random_bytes), 1, 0, ping)


def plain_ping(random_bytes: Callable[[int], bytes] = os.urandom) -> Message:
    """A bare TTL-1 ping (23 bytes): "are you there, and who are you?"."""
    return Message.from_body(new_guid(random_bytes), 1, 0, Ping())
