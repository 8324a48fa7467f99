"""GGEP (Gnutella Generic Extension Protocol 0.5) blocks and legacy extension areas.

The format follows the GGEP 0.51 document (shipped as gtk-gnutella's
doc/gnutella/GGEP): a block is the magic byte 0xC3 followed by extensions,
each made of a flags byte, a 1-15 byte ID, a 1-3 byte length and the data.
Decoding undoes COBS before inflating, as the document requires.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from gnurouter.protocol.errors import ProtocolError

GGEP_MAGIC = 0xC3

#: Flag bits of an extension header (GGEP 0.51, "Extension Header Flags").
FLAG_LAST = 0x80
FLAG_COBS = 0x40
FLAG_DEFLATE = 0x20
FLAG_RESERVED = 0x10
ID_LENGTH_MASK = 0x0F

#: Three 6-bit length chunks are the most the encoding allows (2**18 - 1).
MAX_DATA_LENGTH = (1 << 18) - 1

#: Ceiling on what one deflated extension may inflate to. No Gnutella message
#: may exceed 64 KiB (gtk-gnutella rejects larger sizes as "invalid size"), so
#: data that inflates beyond that can only be a decompression bomb.
MAX_INFLATED_LENGTH = 64 * 1024

#: Separator between legacy extensions (HUGE URNs, XML, GGEP) in query and
#: query-hit extension areas ("Peaceful Co-Existence", GGEP appendix B).
EXTENSION_SEPARATOR = 0x1C


@dataclass(frozen=True, slots=True)
class GGEPExtension:
    """One extension; `data` is the decoded data (COBS and deflate undone).

    IDs are bytes on the wire; they are held as str through latin-1 so the
    mapping is lossless for any byte except NUL, which IDs may not contain.
    """

    id: str
    data: bytes = b""


def _cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        i += 1
        if code == 0:
            raise ProtocolError("GGEP COBS data contains a NUL code byte")
        end = i + code - 1
        if end > n:
            raise ProtocolError("GGEP COBS data is truncated")
        out += data[i:end]
        i = end
        # The zero implied by the last block is the encoder's sentinel, not data.
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def _cobs_encode(data: bytes) -> bytes:
    out = bytearray()
    for block in data.split(b"\x00"):
        while len(block) >= 0xFE:
            out.append(0xFF)
            out += block[:0xFE]
            block = block[0xFE:]
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def _inflate(data: bytes, ext_id: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_INFLATED_LENGTH + 1)
    except zlib.error as error:
        raise ProtocolError(
            f"GGEP extension {ext_id!r} has corrupt deflated data: {error}"
        ) from None
    if len(out) > MAX_INFLATED_LENGTH or inflater.unconsumed_tail:
        raise ProtocolError(
            f"GGEP extension {ext_id!r} inflates beyond {MAX_INFLATED_LENGTH} bytes"
        )
    if not inflater.eof:
        raise ProtocolError(f"GGEP extension {ext_id!r} has a truncated deflate stream")
    return out


def parse_ggep(data: bytes) -> tuple[tuple[GGEPExtension, ...], int]:
    """Parse the GGEP block at the start of `data`.

    Returns the extensions and the number of bytes the block occupies, so
    callers can carry on with whatever follows it (another block, a 0x1C
    separator, a NUL). Any malformation raises `ProtocolError`.
    """
    n = len(data)
    if n == 0 or data[0] != GGEP_MAGIC:
        raise ProtocolError("GGEP block does not start with the magic byte 0xC3")
    pos = 1
    extensions: list[GGEPExtension] = []
    while True:
        if pos >= n:
            raise ProtocolError("GGEP block ends before its last extension")
        flags = data[pos]
        pos += 1
        id_length = flags & ID_LENGTH_MASK
        if id_length == 0:
            raise ProtocolError("GGEP extension has an ID length of 0")
        if flags & FLAG_RESERVED:
            raise ProtocolError("GGEP extension has the reserved flag bit set")
        if pos + id_length > n:
            raise ProtocolError("GGEP extension ID is truncated")
        raw_id = data[pos : pos + id_length]
        if 0 in raw_id:
            raise ProtocolError("GGEP extension ID contains a NUL byte")
        ext_id = raw_id.decode("latin-1")
        pos += id_length

        length = 0
        for _ in range(3):
            if pos >= n:
                raise ProtocolError(f"GGEP extension {ext_id!r} has a truncated length")
            chunk = data[pos]
            pos += 1
            length = (length << 6) | (chunk & 0x3F)
            marker = chunk & 0xC0
            if marker == 0x40:
                break
            if marker != 0x80:
                raise ProtocolError(f"GGEP extension {ext_id!r} has a malformed length byte")
        else:
            raise ProtocolError(f"GGEP extension {ext_id!r} has a length longer than 3 bytes")

        end = pos + length
        if end > n:
            raise ProtocolError(
                f"GGEP extension {ext_id!r} needs {length} data bytes, {n - pos} remain"
            )
        payload = bytes(data[pos:end])
        pos = end
        if flags & FLAG_COBS:
            payload = _cobs_decode(payload)
        if flags & FLAG_DEFLATE:
            payload = _inflate(payload, ext_id)
        extensions.append(GGEPExtension(ext_id, payload))
        if flags & FLAG_LAST:
            return tuple(extensions), pos


def _encode_length(length: int) -> bytes:
    if length < 0x40:
        return bytes((0x40 | length,))
    if length < 0x1000:
        return bytes((0x80 | (length >> 6), 0x40 | (length & 0x3F)))
    return bytes((0x80 | (length >> 12), 0x80 | ((length >> 6) & 0x3F), 0x40 | (length & 0x3F)))


def encode_ggep(extensions: Iterable[GGEPExtension], *, nul_free: bool = False) -> bytes:
    """Encode extensions as one GGEP block; no extensions gives b"" (no block).

    Data is written raw unless `nul_free` is set and it contains a NUL: then it
    is COBS-encoded, as GGEP requires wherever a NUL would end the area (query
    hit result extensions). Compression is never applied: the document says
    to compress only when it makes a material difference, which is the
    sender's call, not the codec's.
    """
    exts = list(extensions)
    if not exts:
        return b""
    out = bytearray((GGEP_MAGIC,))
    last = len(exts) - 1
    for index, ext in enumerate(exts):
        raw_id = ext.id.encode("latin-1")
        if not 1 <= len(raw_id) <= 15:
            raise ValueError(f"GGEP extension ID {ext.id!r} must be 1-15 bytes")
        if 0 in raw_id:
            raise ValueError(f"GGEP extension ID {ext.id!r} contains a NUL byte")
        data = ext.data
        flags = len(raw_id)
        if nul_free and 0 in data:
            data = _cobs_encode(data)
            flags |= FLAG_COBS
        if len(data) > MAX_DATA_LENGTH:
            raise ValueError(f"GGEP extension {ext.id!r} data exceeds {MAX_DATA_LENGTH} bytes")
        if index == last:
            flags |= FLAG_LAST
        out.append(flags)
        out += raw_id
        out += _encode_length(len(data))
        out += data
    return bytes(out)


@dataclass(frozen=True, slots=True)
class ExtensionArea:
    """The pieces of a query or query-hit result extension area, in wire order.

    `urns` are HUGE URNs ("urn:sha1:..."), `xml` rich-query/metadata XML,
    `ggep` the extensions of every GGEP block, `other` any legacy item this
    codec does not recognise (kept rather than rejected: old servents put all
    sorts of things there and the router relays them untouched anyway).
    """

    urns: tuple[str, ...] = ()
    ggep: tuple[GGEPExtension, ...] = ()
    xml: tuple[str, ...] = ()
    other: tuple[bytes, ...] = ()

    def ggep_get(self, ext_id: str) -> bytes | None:
        for ext in self.ggep:
            if ext.id == ext_id:
                return ext.data
        return None


def parse_extension_area(data: bytes) -> ExtensionArea:
    """Split an extension area per GGEP appendix B ("Peaceful Co-Existence").

    GGEP blocks are recognised by their magic byte; everything else runs to
    the next 0x1C separator (or NUL, which some servents use to end the
    area). Bad GGEP raises `ProtocolError`.
    """
    urns: list[str] = []
    xml: list[str] = []
    ggep: list[GGEPExtension] = []
    other: list[bytes] = []
    pos = 0
    n = len(data)
    while pos < n:
        byte = data[pos]
        if byte == EXTENSION_SEPARATOR or byte == 0:
            pos += 1
            continue
        if byte == GGEP_MAGIC:
            exts, used = parse_ggep(data[pos:])
            ggep.extend(exts)
            pos += used
            continue
        end = n
        for stop in (data.find(b"\x1c", pos), data.find(b"\x00", pos)):
            if 0 <= stop < end:
                end = stop
        item = bytes(data[pos:end])
        pos = end
        if item[:4].lower() == b"urn:":
            urns.append(item.decode("ascii", errors="replace"))
        elif item[:1] == b"<":
            xml.append(item.decode("utf-8", errors="replace"))
        else:
            other.append(item)
    return ExtensionArea(tuple(urns), tuple(ggep), tuple(xml), tuple(other))


# -- typed payloads of the extensions pings and pongs carry ----------------------
# As gtk-gnutella writes and reads them (src/core/ggep_type.c, pcache.c,
# ggep_type.h).  "IPP" and "IPP6" pack addresses: the IP in network order,
# then the port little-endian (host_ip_port_poke); "DU" is a little-endian
# integer with its high zero bytes left out (ggep_vlint_encode); "VC" is a
# 4-letter vendor code and a version byte; "UP" the X-Query-Routing version,
# free leaf slots and free ultrapeer slots, one byte each; "6" an IPv6 address.

#: "SCP" flag bits (ggep_type.h): the pinger is an ultrapeer (wants ultrapeer
#: slots), supports TLS, also wants IPv6 addresses, wants no IPv4 addresses.
SCP_F_ULTRA = 0x01
SCP_F_TLS = 0x02
SCP_F_IPV6 = 0x04
SCP_F_NO_IPV4 = 0x08

IPP_ENTRY_LENGTH = 6
IPP6_ENTRY_LENGTH = 18
#: "DU" holds a 32-bit number of seconds (ggept_du_extract: 1 to 4 bytes).
MAX_VLINT_BYTES = 4


def pack_addresses(addresses: Iterable[tuple[str, int]], *, ipv6: bool) -> bytes:
    """IPv4 (or IPv6) endpoints packed as "IPP" (or "IPP6") data; others are skipped."""
    out = bytearray()
    for host, port in addresses:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue  # a DNS name cannot be packed
        if (address.version == 6) != ipv6 or not 0 < port <= 0xFFFF:
            continue
        out += address.packed
        out += port.to_bytes(2, "little")
    return bytes(out)


def unpack_addresses(data: bytes, *, ipv6: bool) -> list[tuple[str, int]]:
    """ "IPP" / "IPP6" data -> (host, port) pairs; a length that is no whole number
    of entries raises `ProtocolError` (gtk-gnutella drops such a pong too)."""
    size = IPP6_ENTRY_LENGTH if ipv6 else IPP_ENTRY_LENGTH
    if len(data) % size:
        name = "IPP6" if ipv6 else "IPP"
        raise ProtocolError(f"GGEP {name} is {len(data)} bytes, not a multiple of {size}")
    found: list[tuple[str, int]] = []
    for offset in range(0, len(data), size):
        raw = data[offset : offset + size - 2]
        address: ipaddress.IPv4Address | ipaddress.IPv6Address
        address = ipaddress.IPv6Address(raw) if ipv6 else ipaddress.IPv4Address(raw)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        port = int.from_bytes(data[offset + size - 2 : offset + size], "little")
        found.append((str(address), port))
    return found


def encode_vlint(value: int) -> bytes:
    """Little-endian without high zero bytes; 0 is written as one zero byte, since
    gtk-gnutella's own reader refuses an empty "DU"."""
    if not 0 <= value < 1 << (8 * MAX_VLINT_BYTES):
        raise ValueError(f"{value} does not fit in {MAX_VLINT_BYTES} bytes")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "little")


def decode_vlint(data: bytes, what: str) -> int:
    if not 1 <= len(data) <= MAX_VLINT_BYTES:
        raise ProtocolError(f"GGEP {what} is {len(data)} bytes, expected 1 to {MAX_VLINT_BYTES}")
    return int.from_bytes(data, "little")
