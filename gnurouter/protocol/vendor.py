"""Vendor message payloads (0x31), sans I/O: "Messages Supported" and "Hops Flow".

A vendor message is a 4-byte vendor code, a 16-bit selector and a 16-bit
version (both little-endian), then its own payload; see
`gnurouter.protocol.messages.VendorMessage`.  Vendor messages are
hop-by-hop: TTL 1, hops 0, never forwarded.

* Messages Supported (vendor 0000, selector 0, version 0): a 16-bit count,
  then one (vendor, selector, version) triple of 8 bytes per message the
  sender understands.  Each side sends its own list once the link is up.
* Hops Flow (BEAR, selector 4, version 1): one byte, "send me no query whose
  hop count is at least this" (0: no queries at all); servents use it as
  flow control.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.messages import Message, VendorMessage

MESSAGES_SUPPORTED = (b"\x00\x00\x00\x00", 0, 0)
HOPS_FLOW = (b"BEAR", 4, 1)
#: The GUID vendor messages carry (gtk-gnutella sends all zeroes).
BLANK_GUID = bytes(16)

#: Names for the metrics, by (vendor, selector); the version is shown apart.
KNOWN_NAMES: dict[tuple[bytes, int], str] = {
    (b"\x00\x00\x00\x00", 0): "Messages Supported",
    (b"\x00\x00\x00\x00", 10): "Features Supported",
    (b"BEAR", 4): "Hops Flow",
    (b"BEAR", 7): "TCP Connect Back",
    (b"BEAR", 11): "Query Status Request",
    (b"BEAR", 12): "Query Status Response",
    (b"GTKG", 7): "UDP Connect Back",
    (b"GTKG", 9): "Time Sync Request",
    (b"GTKG", 10): "Time Sync Reply",
    (b"LIME", 5): "UDP Crawler Ping",
    (b"LIME", 11): "OOB Reply Ack",
    (b"LIME", 12): "OOB Reply Indication",
    (b"LIME", 21): "Push-Proxy Request",
    (b"LIME", 22): "Push-Proxy Acknowledgment",
}

_COUNT = struct.Struct("<H")
_ITEM = struct.Struct("<4sHH")


def vendor_label(vendor: bytes, selector: int, version: int) -> str:
    """ "BEAR/4v1" (as gtk-gnutella prints them), with the known name if any."""
    code = vendor.decode("latin-1") if vendor.strip(b"\x00") else "0000"
    label = f"{code}/{selector}v{version}"
    name = KNOWN_NAMES.get((vendor, selector))
    return f"{label} {name}" if name else label


@dataclass(frozen=True, slots=True)
class MessagesSupported:
    items: tuple[tuple[bytes, int, int], ...]

    def encode(self) -> bytes:
        return _COUNT.pack(len(self.items)) + b"".join(
            _ITEM.pack(vendor, selector, version) for vendor, selector, version in self.items
        )

    @classmethod
    def decode(cls, data: bytes) -> MessagesSupported:
        if len(data) < _COUNT.size:
            raise ProtocolError("messages supported payload has no count")
        (count,) = _COUNT.unpack_from(data)
        expected = _COUNT.size + count * _ITEM.size
        if len(data) != expected:
            raise ProtocolError(
                f"messages supported payload is {len(data)} bytes, expected {expected} "
                f"for {count} entries"
            )
        items = tuple(_ITEM.unpack_from(data, _COUNT.size + i * _ITEM.size) for i in range(count))
        return cls(items)

    def message(self) -> Message:
        vendor, selector, version = MESSAGES_SUPPORTED
        body = VendorMessage(vendor, selector, version, self.encode())
        return Message.from_body(BLANK_GUID, 1, 0, body)


def hops_flow_message(hops: int) -> Message:
    vendor, selector, version = HOPS_FLOW
    body = VendorMessage(vendor, selector, version, bytes((hops,)))
    return Message.from_body(BLANK_GUID, 1, 0, body)


def decode_hops_flow(data: bytes) -> int:
    if len(data) != 1:
        raise ProtocolError(f"hops flow payload is {len(data)} bytes, expected 1")
    return data[0]


# -- leaf guidance for dynamic querying (gtk-gnutella vmsg.c) -------------------
#
# Query Status Request (BEAR, selector 11, version 1): an ultrapeer asks the
# leaf whose query it is running how many results it kept so far; empty
# payload, and the message's GUID is the query's.  The leaf answers with a
# Query Status Response (BEAR, 12, 1) under the same GUID: two bytes,
# little-endian, results kept (at most 0xFFFE); 0xFFFF means "stop this query".

QUERY_STATUS_REQUEST = (b"BEAR", 11, 1)
QUERY_STATUS_RESPONSE = (b"BEAR", 12, 1)
#: A Query Status Response's "stop querying for me" value.
STOP_QUERY = 0xFFFF

_KEPT = struct.Struct("<H")


def query_status_request(query_guid: bytes) -> Message:
    vendor, selector, version = QUERY_STATUS_REQUEST
    return Message.from_body(query_guid, 1, 0, VendorMessage(vendor, selector, version))


def query_status_response(query_guid: bytes, kept: int) -> Message:
    vendor, selector, version = QUERY_STATUS_RESPONSE
    body = VendorMessage(vendor, selector, version, _KEPT.pack(min(kept, STOP_QUERY)))
    return Message.from_body(query_guid, 1, 0, body)


def decode_query_status(data: bytes) -> int:
    """Results kept (or `STOP_QUERY`) from a Query Status Response payload."""
    if len(data) != _KEPT.size:
        raise ProtocolError(f"query status payload is {len(data)} bytes, expected {_KEPT.size}")
    (kept,) = _KEPT.unpack(data)
    return int(kept)
