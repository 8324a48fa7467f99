"""Gnutella 0.6 messages: the 23-byte header and a codec for every payload type.

`Message` is what the router moves around: header fields plus the payload as
raw bytes. Payloads are decoded lazily by `Message.body()` and never
re-encoded when a message is forwarded, so flags, GGEP blocks and vendor
extensions the router does not understand reach the next hop byte for byte.

Multi-byte integers are little-endian unless a comment says otherwise; IPv4
addresses are in network order and exposed as dotted strings.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeAlias

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.ggep import (
    GGEP_MAGIC,
    ExtensionArea,
    GGEPExtension,
    decode_vlint,
    encode_ggep,
    encode_vlint,
    pack_addresses,
    parse_extension_area,
    parse_ggep,
    unpack_addresses,
)

HEADER_LENGTH = 23
GUID_LENGTH = 16

#: The message header: GUID, type, TTL, hops, payload length. The one place
#: its layout is written down; everything else derives from these structs.
_HEADER_FIELDS_FORMAT = "BBBI"
HEADER = struct.Struct(f"<{GUID_LENGTH}s{_HEADER_FIELDS_FORMAT}")
#: The same header with its GUID skipped: (type, ttl, hops, payload length)
#: in one C call, for code that walks a raw stream without building messages.
HEADER_FIELDS = struct.Struct(f"<{GUID_LENGTH}x{_HEADER_FIELDS_FORMAT}")
#: Where the single-byte fields and the length start, for code that rewrites
#: or peeks at one field of a header in place.
TYPE_OFFSET = GUID_LENGTH
TTL_OFFSET = TYPE_OFFSET + 1
HOPS_OFFSET = TTL_OFFSET + 1
LENGTH_OFFSET = HOPS_OFFSET + 1
assert HEADER.size == HEADER_FIELDS.size == HEADER_LENGTH == LENGTH_OFFSET + 4
_PONG = struct.Struct("<H4BII")
_PUSH = struct.Struct("<16sI4BH")
_BYE_CODE = struct.Struct("<H")
_QRP_RESET = struct.Struct("<BIB")
_QRP_PATCH = struct.Struct("<BBBBB")
_VENDOR = struct.Struct("<4sHH")
# The query "minimum speed" field became a bit field that servents read
# big-endian: gtk-gnutella's QUERY_F_* are big-endian masks, and LimeWire's
# little-endian masks (0x0080 marker, ...) name the very same bits.
_QUERY_FLAGS = struct.Struct(">H")
_QUERY_MIN_SPEED = struct.Struct("<H")
_QHIT_HEAD = struct.Struct("<BH4BI")
_QHIT_RESULT = struct.Struct("<II")

_U32_MAX = 0xFFFFFFFF


class MessageType(enum.IntEnum):
    PING = 0x00
    PONG = 0x01
    BYE = 0x02
    QRP = 0x30
    VENDOR = 0x31
    VENDOR_STANDARD = 0x32
    PUSH = 0x40
    QUERY = 0x80
    QUERY_HIT = 0x81


_TYPE_NAMES: dict[int, str] = {
    MessageType.PING: "ping",
    MessageType.PONG: "pong",
    MessageType.BYE: "bye",
    MessageType.QRP: "qrp",
    MessageType.VENDOR: "vendor",
    MessageType.VENDOR_STANDARD: "vendor-std",
    MessageType.PUSH: "push",
    MessageType.QUERY: "query",
    MessageType.QUERY_HIT: "query-hit",
}


def type_name(type_: int) -> str:
    """ "ping", "query-hit", ... or "0x%02x" for types this codec does not know."""
    name = _TYPE_NAMES.get(type_)
    return name if name is not None else f"0x{type_:02x}"


def new_guid(random_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """A random message GUID marked the way modern servents mark theirs.

    Byte 8 = 0xFF flags a "new" servent and byte 15 = 0x00 the protocol
    version; gtk-gnutella checks exactly these bytes (muid[8] == 0xff) to
    detect peers that understand pong caching.  `random_bytes(n)` supplies
    the randomness (a seeded `random.Random().randbytes` for reproducible
    traffic).
    """
    guid = bytearray(random_bytes(GUID_LENGTH))
    guid[8] = 0xFF
    guid[15] = 0x00
    return bytes(guid)


def decode_header(data: bytes | bytearray | memoryview) -> tuple[bytes, int, int, int, int]:
    """(guid, type, ttl, hops, payload length) of the 23-byte header at the start of `data`."""
    if len(data) < HEADER_LENGTH:
        raise ProtocolError(f"message header is {len(data)} bytes, expected {HEADER_LENGTH}")
    guid, type_, ttl, hops, length = HEADER.unpack_from(data)
    return guid, type_, ttl, hops, length


def payload_length(data: bytes | bytearray | memoryview, offset: int = 0) -> int:
    """The payload length announced by the header at `offset` of `data`.

    No check beyond the bounds (`struct.error` when fewer than 23 bytes are
    there): for callers that already know a header is present.
    """
    length: int = HEADER_FIELDS.unpack_from(data, offset)[3]
    return length


def _ip_to_str(a: int, b: int, c: int, d: int) -> str:
    return f"{a}.{b}.{c}.{d}"


def _ip_to_bytes(ip: str) -> bytes:
    return ipaddress.IPv4Address(ip).packed


def _pack(packer: struct.Struct, *values: object) -> bytes:
    try:
        return packer.pack(*values)
    except struct.error as error:
        raise ValueError(f"value out of range for the wire format: {error}") from None


def _parse_ggep_tail(data: bytes, what: str) -> tuple[GGEPExtension, ...]:
    """Parse one or more GGEP blocks that must fill `data` completely."""
    extensions: list[GGEPExtension] = []
    pos = 0
    while pos < len(data):
        if data[pos] != GGEP_MAGIC:
            raise ProtocolError(
                f"{what} has {len(data) - pos} trailing bytes that are not a GGEP block"
            )
        exts, used = parse_ggep(data[pos:])
        extensions.extend(exts)
        pos += used
    return tuple(extensions)


# -- bodies ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Empty, or a GGEP block (SCP, DNA, IP, ... requests)."""

    TYPE: ClassVar[int] = MessageType.PING

    ggep: tuple[GGEPExtension, ...] = ()

    @property
    def type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        return encode_ggep(self.ggep)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if not payload:
            return cls()
        return cls(_parse_ggep_tail(payload, "ping payload"))


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[int] = MessageType.PONG
    FIXED_LENGTH: ClassVar[int] = _PONG.size

    port: int
    ip: str
    files: int
    kbytes: int
    ggep: tuple[GGEPExtension, ...] = ()

    @property
    def type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        head = _pack(_PONG, self.port, *_ip_to_bytes(self.ip), self.files, self.kbytes)
        return head + encode_ggep(self.ggep)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) < _PONG.size:
            raise ProtocolError(
                f"pong payload is {len(payload)} bytes, expected {_PONG.size} or {_PONG.size}+GGEP"
            )
        port, a, b, c, d, files, kbytes = _PONG.unpack_from(payload)
        ggep = _parse_ggep_tail(payload[_PONG.size :], "pong payload")
        return cls(port, _ip_to_str(a, b, c, d), files, kbytes, ggep)


@dataclass(frozen=True, slots=True)
class Bye:
    """Code + reason, per the Bye-Packet 0.1 proposal (gtk-gnutella doc/gnutella/bye).

    The reason is a NUL-terminated string, optionally followed by HTTP-like
    headers after a CRLF. Encoding writes `reason` NUL, or, when headers are
    given, `reason` CRLF headers CRLF NUL: byte for byte what gtk-gnutella's
    node_bye_v() sends (it adds "Server: <version>" for every code but 200).
    Decoding tolerates a missing NUL and bare LF line ends.
    """

    TYPE: ClassVar[int] = MessageType.BYE

    code: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        if any(ch in self.reason for ch in "\r\n\x00"):
            raise ValueError("bye reason must be a single line without NUL")
        text = self.reason
        if self.headers:
            lines = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
            text = f"{text}\r\n{lines}\r\n"
        return _pack(_BYE_CODE, self.code) + text.encode("utf-8") + b"\x00"

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) < _BYE_CODE.size:
            raise ProtocolError(
                f"bye payload is {len(payload)} bytes, expected a 2-byte code and a reason"
            )
        (code,) = _BYE_CODE.unpack_from(payload)
        raw = payload[_BYE_CODE.size :]
        nul = raw.find(b"\x00")
        if nul >= 0:
            raw = raw[:nul]
        lines = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                break
            name, sep, value = line.partition(":")
            if sep:
                headers.append((name.strip(), value.strip()))
        return cls(code, lines[0].rstrip("\r"), tuple(headers))


QRP_RESET = 0x00
QRP_PATCH = 0x01
QRP_COMPRESSOR_NONE = 0x00
QRP_COMPRESSOR_DEFLATE = 0x01
_QRP_ENTRY_BITS = (1, 2, 4, 8)
#: gtk-gnutella answers a broken QRP update with "413 Invalid QRP table ...".
_QRP_BYE_CODE = 413


@dataclass(frozen=True, slots=True)
class RouteTableReset:
    TYPE: ClassVar[int] = MessageType.QRP

    table_length: int
    infinity: int

    @property
    def type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        return _pack(_QRP_RESET, QRP_RESET, self.table_length, self.infinity)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != _QRP_RESET.size:
            raise ProtocolError(
                f"qrp reset payload is {len(payload)} bytes, expected {_QRP_RESET.size}",
                bye_code=_QRP_BYE_CODE,
            )
        variant, length, infinity = _QRP_RESET.unpack(payload)
        if variant != QRP_RESET:
            raise ProtocolError(
                f"qrp variant is 0x{variant:02x}, expected reset", bye_code=_QRP_BYE_CODE
            )
        # gtk-gnutella (qrp.c, qrt_handle_reset) refuses both conditions.
        if length == 0 or length & (length - 1):
            raise ProtocolError(
                f"qrp table length {length} is not a power of two", bye_code=_QRP_BYE_CODE
            )
        if infinity < 1:
            raise ProtocolError("qrp infinity is 0, expected at least 1", bye_code=_QRP_BYE_CODE)
        return cls(length, infinity)


@dataclass(frozen=True, slots=True)
class RouteTablePatch:
    TYPE: ClassVar[int] = MessageType.QRP

    seq_no: int
    seq_size: int
    compressor: int
    entry_bits: int
    data: bytes

    @property
    def type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        head = _pack(
            _QRP_PATCH, QRP_PATCH, self.seq_no, self.seq_size, self.compressor, self.entry_bits
        )
        return head + self.data

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) < _QRP_PATCH.size:
            raise ProtocolError(
                f"qrp patch payload is {len(payload)} bytes, expected at least {_QRP_PATCH.size}",
                bye_code=_QRP_BYE_CODE,
            )
        variant, seq_no, seq_size, compressor, entry_bits = _QRP_PATCH.unpack_from(payload)
        if variant != QRP_PATCH:
            raise ProtocolError(
                f"qrp variant is 0x{variant:02x}, expected patch", bye_code=_QRP_BYE_CODE
            )
        if not 1 <= seq_no <= seq_size:
            raise ProtocolError(
                f"qrp patch sequence {seq_no} of {seq_size} is out of range",
                bye_code=_QRP_BYE_CODE,
            )
        if compressor not in (QRP_COMPRESSOR_NONE, QRP_COMPRESSOR_DEFLATE):
            raise ProtocolError(
                f"qrp patch compressor 0x{compressor:02x} is unknown", bye_code=_QRP_BYE_CODE
            )
        if entry_bits not in _QRP_ENTRY_BITS:
            raise ProtocolError(
                f"qrp patch entry size of {entry_bits} bits is not 1, 2, 4 or 8",
                bye_code=_QRP_BYE_CODE,
            )
        return cls(seq_no, seq_size, compressor, entry_bits, payload[_QRP_PATCH.size :])


def decode_qrp(payload: bytes) -> RouteTableReset | RouteTablePatch:
    """Decode a QRP (0x30) payload, dispatching on its variant byte."""
    if not payload:
        raise ProtocolError("qrp payload is empty, expected a variant byte", bye_code=_QRP_BYE_CODE)
    variant = payload[0]
    if variant == QRP_RESET:
        return RouteTableReset.decode(payload)
    if variant == QRP_PATCH:
        return RouteTablePatch.decode(payload)
    raise ProtocolError(f"qrp variant 0x{variant:02x} is unknown", bye_code=_QRP_BYE_CODE)


@dataclass(frozen=True, slots=True)
class VendorMessage:
    """Vendor (0x31) or standard vendor (0x32) message: vendor code, selector, version, data."""

    TYPE: ClassVar[int] = MessageType.VENDOR

    vendor: bytes
    selector: int
    version: int
    data: bytes = b""
    standard: bool = False

    @property
    def type(self) -> int:
        return MessageType.VENDOR_STANDARD if self.standard else MessageType.VENDOR

    def encode(self) -> bytes:
        if len(self.vendor) != 4:
            raise ValueError(f"vendor code must be 4 bytes, got {len(self.vendor)}")
        return _pack(_VENDOR, self.vendor, self.selector, self.version) + self.data

    @classmethod
    def decode(cls, payload: bytes, *, standard: bool = False) -> Self:
        if len(payload) < _VENDOR.size:
            raise ProtocolError(
                f"vendor message payload is {len(payload)} bytes, expected at least {_VENDOR.size}"
            )
        vendor, selector, version = _VENDOR.unpack_from(payload)
        return cls(vendor, selector, version, payload[_VENDOR.size :], standard)


@dataclass(frozen=True, slots=True)
class Push:
    TYPE: ClassVar[int] = MessageType.PUSH
    FIXED_LENGTH: ClassVar[int] = _PUSH.size

    servent_id: bytes
    file_index: int
    ip: str
    port: int
    ggep: tuple[GGEPExtension, ...] = ()

    @property
    def type(self) -> int:
        return self.TYPE

    def encode(self) -> bytes:
        if len(self.servent_id) != GUID_LENGTH:
            raise ValueError(f"servent id must be {GUID_LENGTH} bytes")
        head = _pack(_PUSH, self.servent_id, self.file_index, *_ip_to_bytes(self.ip), self.port)
        return head + encode_ggep(self.ggep)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) < _PUSH.size:
            raise ProtocolError(
                f"push payload is {len(payload)} bytes, expected {_PUSH.size} or {_PUSH.size}+GGEP"
            )
        servent_id, index, a, b, c, d, port = _PUSH.unpack_from(payload)
        ggep = _parse_ggep_tail(payload[_PUSH.size :], "push payload")
        return cls(servent_id, index, _ip_to_str(a, b, c, d), port, ggep)


# Query flag bits, big-endian (gtk-gnutella search.h QUERY_F_*; LimeWire's
# QueryRequest SPECIAL_*_MASK name the same bits read little-endian).
QUERY_F_MARK = 0x8000
QUERY_F_FIREWALLED = 0x4000
QUERY_F_XML = 0x2000
QUERY_F_LEAF_GUIDED = 0x1000
QUERY_F_GGEP_H = 0x0800
QUERY_F_OOB_REPLY = 0x0400
QUERY_F_FW_TO_FW = 0x0200
QUERY_F_MAX_HITS = 0x00FF


@dataclass(frozen=True, slots=True)
class Query:
    """Flags, NUL-terminated criteria, then the raw extension area.

    `flags` holds the first two payload bytes read big-endian, so bit 15 is
    the "new format" marker (gtk-gnutella QUERY_F_MARK). `extensions` is
    everything after the criteria's NUL, kept raw (HUGE URNs, GGEP, XML,
    separated by 0x1C); `parsed_extensions()` splits it. `raw_criteria`
    keeps the criteria bytes when they are not valid UTF-8.
    """

    TYPE: ClassVar[int] = MessageType.QUERY

    flags: int
    criteria: str
    extensions: bytes = b""
    raw_criteria: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def type(self) -> int:
        return self.TYPE

    @property
    def criteria_bytes(self) -> bytes:
        if self.raw_criteria is not None:
            return self.raw_criteria
        return self.criteria.encode("utf-8")

    @property
    def is_new_flags_format(self) -> bool:
        return bool(self.flags & QUERY_F_MARK)

    def _flag(self, bit: int) -> bool:
        return self.flags & (QUERY_F_MARK | bit) == QUERY_F_MARK | bit

    @property
    def requester_firewalled(self) -> bool:
        return self._flag(QUERY_F_FIREWALLED)

    @property
    def wants_xml(self) -> bool:
        return self._flag(QUERY_F_XML)

    @property
    def leaf_guided(self) -> bool:
        return self._flag(QUERY_F_LEAF_GUIDED)

    @property
    def ggep_h_allowed(self) -> bool:
        return self._flag(QUERY_F_GGEP_H)

    @property
    def out_of_band(self) -> bool:
        return self._flag(QUERY_F_OOB_REPLY)

    @property
    def firewall_to_firewall(self) -> bool:
        return self._flag(QUERY_F_FW_TO_FW)

    @property
    def max_hits(self) -> int | None:
        """Hits wanted (0 = unlimited) in the new format, None in the legacy one."""
        return self.flags & QUERY_F_MAX_HITS if self.is_new_flags_format else None

    @property
    def min_speed(self) -> int:
        """The legacy minimum speed (kB/s, little-endian); 0 in the new flags format."""
        if self.is_new_flags_format:
            return 0
        (speed,) = _QUERY_MIN_SPEED.unpack(_QUERY_FLAGS.pack(self.flags))
        return int(speed)

    def parsed_extensions(self) -> ExtensionArea:
        return parse_extension_area(self.extensions)

    def encode(self) -> bytes:
        criteria = self.criteria_bytes
        if b"\x00" in criteria:
            raise ValueError("query criteria must not contain NUL")
        return _pack(_QUERY_FLAGS, self.flags) + criteria + b"\x00" + self.extensions

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) < 3:
            raise ProtocolError(
                f"query payload is {len(payload)} bytes, "
                "expected at least 3 (flags + NUL-terminated criteria)"
            )
        nul = payload.find(b"\x00", 2)
        if nul < 0:
            raise ProtocolError("query criteria has no NUL terminator")
        (flags,) = _QUERY_FLAGS.unpack_from(payload)
        raw = payload[2:nul]
        try:
            criteria = raw.decode("utf-8")
            kept: bytes | None = None
        except UnicodeDecodeError:
            criteria = raw.decode("utf-8", errors="replace")
            kept = raw
        return cls(flags, criteria, payload[nul + 1 :], kept)


@dataclass(frozen=True, slots=True)
class QueryHitResult:
    """One result: file index, size, NUL-terminated name, NUL-terminated extensions."""

    index: int
    size: int
    name: str
    extensions: bytes = b""
    raw_name: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def name_bytes(self) -> bytes:
        return self.raw_name if self.raw_name is not None else self.name.encode("utf-8")

    def parsed_extensions(self) -> ExtensionArea:
        return parse_extension_area(self.extensions)

    def encode(self) -> bytes:
        name = self.name_bytes
        if b"\x00" in name or b"\x00" in self.extensions:
            raise ValueError(
                "query hit result name and extensions must not contain NUL "
                "(encode GGEP with nul_free=True)"
            )
        return (
            _pack(_QHIT_RESULT, self.index, self.size) + name + b"\x00" + self.extensions + b"\x00"
        )


#: Open-data flag bits of the query hit trailer (the Clip2 / BearShare
#: "QHD"): byte 0 holds values and byte 1 says which values are meaningful,
#: except for the push bit, whose two roles are swapped (LimeWire QueryReply).
QHD_PUSH = 0x01
QHD_BUSY = 0x04
QHD_UPLOADED = 0x08
QHD_SPEED_MEASURED = 0x10
QHD_GGEP = 0x20


@dataclass(frozen=True, slots=True)
class QueryHitTrailer:
    """Vendor code, open data (flag bytes) and the private area (where GGEP lives)."""

    vendor: bytes
    open_data: bytes
    private_data: bytes = b""

    def _qhd_flag(self, bit: int) -> bool | None:
        if len(self.open_data) < 2:
            return None
        values, meaningful = self.open_data[0], self.open_data[1]
        if bit == QHD_PUSH:
            values, meaningful = meaningful, values
        if not meaningful & bit:
            return None
        return bool(values & bit)

    @property
    def needs_push(self) -> bool | None:
        return self._qhd_flag(QHD_PUSH)

    @property
    def busy(self) -> bool | None:
        return self._qhd_flag(QHD_BUSY)

    @property
    def has_uploaded(self) -> bool | None:
        return self._qhd_flag(QHD_UPLOADED)

    @property
    def speed_measured(self) -> bool | None:
        return self._qhd_flag(QHD_SPEED_MEASURED)

    @property
    def has_ggep(self) -> bool | None:
        return self._qhd_flag(QHD_GGEP)

    def ggep(self) -> tuple[GGEPExtension, ...]:
        """GGEP extensions of the private area; the block starts at the first 0xC3
        (GGEP "QHD Private Data": older servents put their own bytes before it)."""
        start = self.private_data.find(bytes((GGEP_MAGIC,)))
        if start < 0:
            return ()
        exts, _ = parse_ggep(self.private_data[start:])
        return exts

    def encode(self) -> bytes:
        if len(self.vendor) != 4:
            raise ValueError(f"vendor code must be 4 bytes, got {len(self.vendor)}")
        if len(self.open_data) > 0xFF:
            raise ValueError("query hit open data is limited to 255 bytes")
        return self.vendor + bytes((len(self.open_data),)) + self.open_data + self.private_data


@dataclass(frozen=True, slots=True)
class QueryHit:
    TYPE: ClassVar[int] = MessageType.QUERY_HIT
    MIN_LENGTH: ClassVar[int] = _QHIT_HEAD.size + GUID_LENGTH

    port: int
    ip: str
    speed: int
    results: tuple[QueryHitResult, ...]
    servent_id: bytes
    trailer: QueryHitTrailer | None = None

    @property
    def type(self) -> int:
        return self.TYPE

    @staticmethod
    def servent_id_of(payload: bytes) -> bytes:
        """The servent ID (last 16 bytes) without decoding anything else.

        Push routing needs only this, and it is on the hot path.
        """
        if len(payload) < QueryHit.MIN_LENGTH:
            raise ProtocolError(
                f"query hit payload is {len(payload)} bytes, "
                f"expected at least {QueryHit.MIN_LENGTH}"
            )
        return payload[-GUID_LENGTH:]

    def encode(self) -> bytes:
        if len(self.results) > 0xFF:
            raise ValueError("a query hit carries at most 255 results")
        if len(self.servent_id) != GUID_LENGTH:
            raise ValueError(f"servent id must be {GUID_LENGTH} bytes")
        parts = [
            _pack(_QHIT_HEAD, len(self.results), self.port, *_ip_to_bytes(self.ip), self.speed)
        ]
        parts.extend(result.encode() for result in self.results)
        if self.trailer is not None:
            parts.append(self.trailer.encode())
        parts.append(self.servent_id)
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = len(payload)
        if n < cls.MIN_LENGTH:
            raise ProtocolError(
                f"query hit payload is {n} bytes, expected at least {cls.MIN_LENGTH}"
            )
        count, port, a, b, c, d, speed = _QHIT_HEAD.unpack_from(payload)
        limit = n - GUID_LENGTH
        pos = _QHIT_HEAD.size
        results: list[QueryHitResult] = []
        unpack_result = _QHIT_RESULT.unpack_from
        for number in range(1, count + 1):
            if pos + _QHIT_RESULT.size > limit:
                raise ProtocolError(
                    f"query hit claims {count} results but result {number} is truncated"
                )
            index, size = unpack_result(payload, pos)
            pos += _QHIT_RESULT.size
            name_end = payload.find(b"\x00", pos, limit)
            if name_end < 0:
                raise ProtocolError(
                    f"query hit result {number} of {count}: name has no NUL terminator"
                )
            ext_end = payload.find(b"\x00", name_end + 1, limit)
            if ext_end < 0:
                raise ProtocolError(
                    f"query hit result {number} of {count}: extensions have no NUL terminator"
                )
            raw_name = payload[pos:name_end]
            try:
                name = raw_name.decode("utf-8")
                kept: bytes | None = None
            except UnicodeDecodeError:
                name = raw_name.decode("utf-8", errors="replace")
                kept = raw_name
            results.append(QueryHitResult(index, size, name, payload[name_end + 1 : ext_end], kept))
            pos = ext_end + 1
        trailer = None
        rest = payload[pos:limit]
        if rest:
            if len(rest) < 5:
                raise ProtocolError(
                    f"query hit trailer is {len(rest)} bytes, expected at least 5 "
                    "(vendor code + open data size)"
                )
            open_size = rest[4]
            if 5 + open_size > len(rest):
                raise ProtocolError(
                    f"query hit trailer open data size {open_size} exceeds "
                    f"the {len(rest) - 5} bytes left"
                )
            trailer = QueryHitTrailer(rest[:4], rest[5 : 5 + open_size], rest[5 + open_size :])
        return cls(port, _ip_to_str(a, b, c, d), speed, tuple(results), payload[limit:], trailer)


@dataclass(frozen=True, slots=True)
class Opaque:
    """A payload of a type this codec does not know, kept as is."""

    type: int
    payload: bytes

    def encode(self) -> bytes:
        return self.payload

    @classmethod
    def decode(cls, payload: bytes, *, type_: int = 0) -> Self:
        return cls(type_, payload)


Body: TypeAlias = (
    Ping
    | Pong
    | Bye
    | RouteTableReset
    | RouteTablePatch
    | VendorMessage
    | Push
    | Query
    | QueryHit
    | Opaque
)


def _decode_vendor_standard(payload: bytes) -> VendorMessage:
    return VendorMessage.decode(payload, standard=True)


_DECODERS: dict[int, Callable[[bytes], Body]] = {
    MessageType.PING: Ping.decode,
    MessageType.PONG: Pong.decode,
    MessageType.BYE: Bye.decode,
    MessageType.QRP: decode_qrp,
    MessageType.VENDOR: VendorMessage.decode,
    MessageType.VENDOR_STANDARD: _decode_vendor_standard,
    MessageType.PUSH: Push.decode,
    MessageType.QUERY: Query.decode,
    MessageType.QUERY_HIT: QueryHit.decode,
}


# -- the message ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One Gnutella message: header fields and the raw payload."""

    guid: bytes
    type: int
    ttl: int
    hops: int
    payload: bytes

    def __post_init__(self) -> None:
        # Only user-built messages pass here: the framer and forwarded() use
        # _make_message, which skips __init__ for speed on values it checked.
        if len(self.guid) != GUID_LENGTH:
            raise ValueError(f"message GUID must be {GUID_LENGTH} bytes, got {len(self.guid)}")
        if not (0 <= self.type <= 0xFF and 0 <= self.ttl <= 0xFF and 0 <= self.hops <= 0xFF):
            raise ValueError("message type, TTL and hops must each fit in one byte")
        if len(self.payload) > _U32_MAX:
            raise ValueError("message payload too large for the 32-bit length field")

    @property
    def type_name(self) -> str:
        name = _TYPE_NAMES.get(self.type)
        return name if name is not None else f"0x{self.type:02x}"

    def header_bytes(self) -> bytes:
        return HEADER.pack(self.guid, self.type, self.ttl, self.hops, len(self.payload))

    def encode(self) -> bytes:
        header = HEADER.pack(self.guid, self.type, self.ttl, self.hops, len(self.payload))
        return header + self.payload

    def forwarded(self, ttl: int, hops: int) -> Message:
        """The same message (GUID, type, payload bytes) with a new TTL and hop count."""
        if not (0 <= ttl <= 0xFF and 0 <= hops <= 0xFF):
            raise ValueError(f"TTL {ttl} and hops {hops} must each fit in one byte")
        return _make_message(self.guid, self.type, ttl, hops, self.payload)

    def body(self) -> Body:
        """The decoded payload: `ProtocolError` if malformed, `Opaque` for unknown types."""
        decoder = _DECODERS.get(self.type)
        if decoder is None:
            return Opaque(self.type, self.payload)
        return decoder(self.payload)

    @classmethod
    def from_body(cls, guid: bytes, ttl: int, hops: int, body: Body) -> Message:
        return cls(guid, body.type, ttl, hops, body.encode())


def validate(message: Message) -> Body | None:
    """Check that a payload is well-formed; decode it where routing needs its fields.

    The rule the router's parser applies to every message (and `trace info`
    to count malformed ones): a query is relayed byte for byte and routing
    never reads its fields, so it is only checked for the NUL that ends its
    criteria and None is returned; every other type is fully decoded and its
    body returned.  A malformed payload raises `ProtocolError`.
    """
    if message.type == MessageType.QUERY:
        payload = message.payload
        if len(payload) >= 3 and payload.find(b"\x00", 2) >= 0:
            return None
    return message.body()


def encode_all(messages: Iterable[Message]) -> bytes:
    """The wire form of several messages, back to back."""
    pack = HEADER.pack
    parts: list[bytes] = []
    for message in messages:
        payload = message.payload
        parts.append(pack(message.guid, message.type, message.ttl, message.hops, len(payload)))
        parts.append(payload)
    return b"".join(parts)


_new_object = object.__new__
_set_guid = Message.__dict__["guid"].__set__
_set_type = Message.__dict__["type"].__set__
_set_ttl = Message.__dict__["ttl"].__set__
_set_hops = Message.__dict__["hops"].__set__
_set_payload = Message.__dict__["payload"].__set__


def _make_message(guid: bytes, type_: int, ttl: int, hops: int, payload: bytes) -> Message:
    """Build a Message from already-validated fields, about twice as fast as
    the frozen dataclass __init__ (which goes through object.__setattr__)."""
    message: Message = _new_object(Message)
    _set_guid(message, guid)
    _set_type(message, type_)
    _set_ttl(message, ttl)
    _set_hops(message, hops)
    _set_payload(message, payload)
    return message


# -- what pings and pongs say in GGEP: UDP host caches, IPv6 ------------------------
# gtk-gnutella's pcache.c (build_pong_msg, ping_type, pong_extract_metadata)
# is the reference: most of the living network runs it.

#: The "UP" version byte: X-Query-Routing 0.2 (pcache.c `local_meta.version_up`).
UP_VERSION = 0x02
#: gtk-gnutella caps the daily uptime it advertises at one day.
MAX_DAILY_UPTIME = 86_400
#: The legacy IPv4 field of a pong from a host without IPv4 (ipv6-ready.c): the
#: real address travels in GGEP "6".
NO_IPV4 = "127.0.0.0"
_GGEP_IPV6_LENGTH = 16


def scp_flags(ping: Ping) -> int | None:
    """The "SCP" flags of a ping (a host cache request): None without "SCP",
    0 when it carries no data ("any host", as gtk-gnutella reads it); the first
    "SCP" counts, as in gtk-gnutella's ping_type()."""
    for extension in ping.ggep:
        if extension.id == "SCP":
            return extension.data[0] if extension.data else 0
    return None


@dataclass(frozen=True, slots=True)
class PongInfo:
    """The GGEP a pong carries about its host and, from a host cache, about others.

    `free_ultrapeer_slots` / `free_leaf_slots` come from "UP" (only an
    ultrapeer sends it), `daily_uptime` from "DU" (seconds), `vendor` and
    `vendor_version` from "VC", `ipv6` from "6", `hosts` and `hosts6` from
    "IPP" and "IPP6".  Extensions this codec does not know are ignored.
    """

    vendor: bytes | None = None
    vendor_version: int = 0
    free_leaf_slots: int | None = None
    free_ultrapeer_slots: int | None = None
    daily_uptime: int | None = None
    ipv6: str | None = None
    hosts: tuple[tuple[str, int], ...] = ()
    hosts6: tuple[tuple[str, int], ...] = ()

    @property
    def ultrapeer(self) -> bool:
        return self.free_ultrapeer_slots is not None

    def to_ggep(self) -> tuple[GGEPExtension, ...]:
        """The extensions in gtk-gnutella's order: VC, UP, DU, 6, IPP, IPP6."""
        out: list[GGEPExtension] = []
        if self.vendor is not None:
            if len(self.vendor) != 4:
                raise ValueError(f"vendor code must be 4 bytes, got {len(self.vendor)}")
            out.append(GGEPExtension("VC", self.vendor + bytes((self.vendor_version,))))
        if self.free_ultrapeer_slots is not None:
            leaves = min(self.free_leaf_slots or 0, 0xFF)
            ultrapeers = min(self.free_ultrapeer_slots, 0xFF)
            out.append(GGEPExtension("UP", bytes((UP_VERSION, leaves, ultrapeers))))
        if self.daily_uptime is not None:
            uptime = min(self.daily_uptime, MAX_DAILY_UPTIME)
            out.append(GGEPExtension("DU", encode_vlint(uptime)))
        if self.ipv6 is not None:
            out.append(GGEPExtension("6", ipaddress.IPv6Address(self.ipv6).packed))
        if self.hosts:
            out.append(GGEPExtension("IPP", pack_addresses(self.hosts, ipv6=False)))
        if self.hosts6:
            out.append(GGEPExtension("IPP6", pack_addresses(self.hosts6, ipv6=True)))
        return tuple(out)

    @classmethod
    def from_ggep(cls, extensions: Iterable[GGEPExtension]) -> Self:
        """Read the extensions strictly: a known one with a bad length raises `ProtocolError`."""
        fields: dict[str, Any] = {}
        seen: set[str] = set()
        for extension in extensions:
            ext_id, data = extension.id, extension.data
            if ext_id in seen:
                continue  # the first of each counts
            seen.add(ext_id)
            if ext_id == "VC":
                if len(data) < 4:
                    raise ProtocolError(f"GGEP VC is {len(data)} bytes, expected 4 or 5")
                fields["vendor"] = data[:4]
                fields["vendor_version"] = data[4] if len(data) > 4 else 0
            elif ext_id == "UP":
                if len(data) < 3:
                    raise ProtocolError(f"GGEP UP is {len(data)} bytes, expected 3")
                fields["free_leaf_slots"] = data[1]
                fields["free_ultrapeer_slots"] = data[2]
            elif ext_id == "DU":
                fields["daily_uptime"] = decode_vlint(data, "DU")
            elif ext_id == "6":
                if len(data) != _GGEP_IPV6_LENGTH:
                    raise ProtocolError(f"GGEP 6 is {len(data)} bytes, expected 16")
                fields["ipv6"] = str(ipaddress.IPv6Address(data))
            elif ext_id == "IPP":
                fields["hosts"] = tuple(unpack_addresses(data, ipv6=False))
            elif ext_id == "IPP6":
                fields["hosts6"] = tuple(unpack_addresses(data, ipv6=True))
        return cls(**fields)
