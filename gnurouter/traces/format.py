"""The gnurouter trace format (`.gtrace`), version 1.0: a streamed, checksummed record log.

Byte layout (all integers little-endian; the full description with examples
is in traces/README.md):

    file     := header block*
    header   := magic "\\x89GTRACE\\n" (8)  major u16  minor u16  json_len u32
                json (json_len bytes, UTF-8 object)  crc32 u32 (of everything before it)
    block    := "GBLK" (4)  flags u16  reserved u16  stored_len u32  raw_len u32
                count u32  base_us u64  crc32 u32 (of the 28 bytes before it + data)
                data (stored_len bytes; zlib-deflated when flags bit 0 is set)
    record   := tag u8  delta_us varint  conn varint  length varint  bytes

`tag` is the record kind (low 7 bits: 1 message, 2 open, 3 close, 4 raw) plus
0x80 when the direction is OUT (sent by the node that recorded the trace).
Times are microseconds since the trace start (`start_time` in the header, a
Unix time): a block carries the time of its first record's predecessor as
`base_us`, and each record the delta from the record before it, so every
block decodes on its own.

A file is read block by block (constant memory, whatever its size).  Any
damage, a bad magic, a checksum mismatch or a file that ends inside a block,
raises one `TraceError` whose `offset` is the byte where the damage starts;
every record yielded before it came from an intact block and can be used.
Files ending in `.gz` (or starting with the gzip magic) are read and written
through gzip transparently; offsets then count decompressed bytes.

Versioning: a reader accepts any file with its own major version.  Minor
versions only add things that old readers can skip: header keys, and record
kinds (skipped and counted in `TraceReader.unknown_records`).  Anything else
is a new major version, which old readers refuse with a clear message.
"""

from __future__ import annotations

import datetime
import enum
import gzip
import io
import json
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

from gnurouter.protocol.messages import HEADER_LENGTH, payload_length

MAGIC = b"\x89GTRACE\n"
VERSION_MAJOR = 1
VERSION_MINOR = 0
BLOCK_MAGIC = b"GBLK"
FLAG_ZLIB = 0x0001

_FILE_HEADER = struct.Struct("<8sHHI")
_CRC = struct.Struct("<I")
_BLOCK_HEADER = struct.Struct("<4sHHIIIQ")
BLOCK_HEADER_SIZE = _BLOCK_HEADER.size + _CRC.size  # 32

#: Bounds that tell a damaged length field from a real one.
MAX_HEADER_JSON = 1 << 20
MAX_BLOCK_BYTES = 16 << 20
DEFAULT_BLOCK_BYTES = 64 << 10


class Kind(enum.IntEnum):
    MESSAGE = 1  # one whole Gnutella message: 23-byte header + payload
    OPEN = 2  # a connection opened; data = UTF-8 JSON object (address, family 4 or 6, ...)
    CLOSE = 3  # a connection closed; data = UTF-8 reason
    RAW = 4  # stream bytes that are not a whole message (framing-breaking input)


class Direction(enum.IntEnum):
    IN = 0  # from the remote peer to the node that recorded the trace
    OUT = 1  # from that node to the remote peer (for OPEN: the node initiated)


_KINDS = frozenset(int(k) for k in Kind)


class Record(NamedTuple):
    """One trace record.  `time_us` counts microseconds from the trace start."""

    time_us: int
    kind: int
    direction: int
    conn: int
    data: bytes

    @property
    def time(self) -> float:
        return self.time_us / 1e6

    def info(self) -> dict[str, Any]:
        """The JSON object of an OPEN record ({} when empty or not JSON)."""
        try:
            value = json.loads(self.data) if self.data else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class TraceError(Exception):
    """The file is not a readable trace from `offset` on; records before it are intact."""

    def __init__(self, reason: str, offset: int, path: str | None = None) -> None:
        self.reason = reason
        self.offset = offset
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{reason} at byte {offset}")


@dataclass
class TraceHeader:
    version: tuple[int, int]
    producer: str
    created: str
    start_time: float
    metadata: dict[str, Any] = field(default_factory=dict)
    size: int = 0  # bytes, so the first block starts at this offset

    def to_json(self) -> dict[str, Any]:
        return {
            "producer": self.producer,
            "created": self.created,
            "start_time": self.start_time,
            "metadata": self.metadata,
        }


def is_one_message(data: bytes) -> bool:
    """Whether `data` is exactly one whole Gnutella message, as a MESSAGE record must be."""
    return len(data) >= HEADER_LENGTH and payload_length(data) == len(data) - HEADER_LENGTH


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# -- varints -----------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0x80:
        out.append(value)
        return
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        byte = data[pos]  # IndexError past the end: the caller reports it
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


# -- writing -----------------------------------------------------------------------


def _open_for_writing(target: str | Path | IO[bytes]) -> tuple[IO[bytes], bool]:
    if isinstance(target, str | Path):
        path = str(target)
        if path.endswith(".gz"):
            return cast(IO[bytes], gzip.open(path, "wb")), True
        return open(path, "wb"), True
    return target, False


class TraceWriter:
    """Writes a trace record by record, one checksummed block at a time.

    Records must come in time order (equal times are fine).  Nothing is
    buffered beyond the current block (`block_bytes` of record data), and
    `end_block()` writes that block now: a recorder calls it periodically so a
    crash loses at most the records since the last call.
    """

    def __init__(
        self,
        target: str | Path | IO[bytes],
        *,
        producer: str,
        metadata: Mapping[str, Any] | None = None,
        start_time: float | None = None,
        created: str | None = None,
        compress: int = 6,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        import time

        if not 0 <= compress <= 9:
            raise ValueError("compress must be a zlib level 0..9 (0 = store)")
        if not 1024 <= block_bytes <= MAX_BLOCK_BYTES // 2:
            raise ValueError(f"block_bytes must be within 1024..{MAX_BLOCK_BYTES // 2}")
        self._file, self._owned = _open_for_writing(target)
        self.compress = compress
        self.block_bytes = block_bytes
        self.header = TraceHeader(
            version=(VERSION_MAJOR, VERSION_MINOR),
            producer=producer,
            created=created or now_iso(),
            start_time=time.time() if start_time is None else start_time,
            metadata=dict(metadata or {}),
        )
        text = json.dumps(self.header.to_json(), sort_keys=True, separators=(",", ":")).encode()
        if len(text) > MAX_HEADER_JSON:
            raise ValueError("trace header metadata is too large")
        head = _FILE_HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(text)) + text
        head += _CRC.pack(zlib.crc32(head))
        self._file.write(head)
        self.header.size = len(head)
        self.bytes_written = len(head)
        self._buffer = bytearray()
        self._count = 0
        self._base_us = 0
        self._last_us = 0
        self.records = 0
        self.blocks = 0
        self.closed = False

    def add(self, time_us: int, kind: int, direction: int, conn: int, data: bytes) -> None:
        if time_us < self._last_us:
            raise ValueError(
                f"records must be in time order: {time_us} us after {self._last_us} us"
            )
        if conn < 0:
            raise ValueError("connection ids are non-negative")
        if kind == Kind.MESSAGE and not is_one_message(data):
            raise ValueError("a MESSAGE record holds exactly one whole Gnutella message")
        if self._count == 0:
            self._base_us = self._last_us
        buffer = self._buffer
        buffer.append(kind | (0x80 if direction else 0))
        _put_varint(buffer, time_us - self._last_us)
        _put_varint(buffer, conn)
        _put_varint(buffer, len(data))
        buffer += data
        self._last_us = time_us
        self._count += 1
        self.records += 1
        if len(buffer) >= self.block_bytes:
            self.end_block()

    def write(self, record: Record) -> None:
        self.add(record.time_us, record.kind, record.direction, record.conn, record.data)

    def message(self, time_us: int, conn: int, data: bytes, direction: int = Direction.IN) -> None:
        self.add(time_us, Kind.MESSAGE, direction, conn, data)

    def open(
        self,
        time_us: int,
        conn: int,
        direction: int = Direction.IN,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        data = json.dumps(dict(info), separators=(",", ":")).encode() if info else b""
        self.add(time_us, Kind.OPEN, direction, conn, data)

    def close_connection(
        self, time_us: int, conn: int, reason: str = "", direction: int = Direction.IN
    ) -> None:
        """Direction IN: the remote side closed (or it is unknown); OUT: the node did."""
        self.add(time_us, Kind.CLOSE, direction, conn, reason.encode())

    def end_block(self) -> None:
        """Write the records added since the last block as one block (no-op if none)."""
        if not self._count:
            return
        raw = bytes(self._buffer)
        flags = 0
        stored = raw
        if self.compress:
            packed = zlib.compress(raw, self.compress)
            if len(packed) < len(raw):
                stored, flags = packed, FLAG_ZLIB
        head = _BLOCK_HEADER.pack(
            BLOCK_MAGIC, flags, 0, len(stored), len(raw), self._count, self._base_us
        )
        crc = zlib.crc32(stored, zlib.crc32(head))
        self._file.write(head + _CRC.pack(crc) + stored)
        self.bytes_written += BLOCK_HEADER_SIZE + len(stored)
        self.blocks += 1
        self._buffer.clear()
        self._count = 0

    def flush(self) -> None:
        self.end_block()
        self._file.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_block()
        self._file.flush()
        if self._owned:
            self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading -----------------------------------------------------------------------


def _open_for_reading(source: str | Path | IO[bytes]) -> tuple[IO[bytes], bool, str | None]:
    path: str | None
    if isinstance(source, str | Path):
        path = str(source)
        handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by TraceReader.close
        owned = True
    else:
        name = getattr(source, "name", None)
        handle, owned, path = source, False, name if isinstance(name, str) else None
    peek = handle.read(2)
    if peek == b"\x1f\x8b":
        handle.seek(0)
        return cast(IO[bytes], gzip.GzipFile(fileobj=handle, mode="rb")), owned, path
    # Put the two bytes back: a plain file seeks, anything else is wrapped.
    try:
        handle.seek(0)
        return handle, owned, path
    except (OSError, io.UnsupportedOperation):
        return cast(IO[bytes], io.BufferedReader(_Prefixed(peek, handle))), owned, path


class _Prefixed(io.RawIOBase):
    """A non-seekable stream with bytes already read put back in front."""

    def __init__(self, prefix: bytes, rest: IO[bytes]) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class TraceReader:
    """Iterates over a trace's records block by block, in constant memory.

    The header is read and checked on construction (`TraceError` if it is not
    a trace).  Iteration yields `Record`s and raises `TraceError` at the first
    damaged byte.  `offset` is the position after the last complete block read.
    """

    def __init__(self, source: str | Path | IO[bytes]) -> None:
        self._file, self._owned, self.path = _open_for_reading(source)
        self.offset = 0
        self.blocks = 0
        self.records = 0
        self.unknown_records = 0
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def _error(self, reason: str, offset: int) -> TraceError:
        return TraceError(reason, offset, self.path)

    def _read(self, size: int) -> bytes:
        try:
            return self._file.read(size)
        except (EOFError, OSError, zlib.error) as error:  # a damaged gzip wrapper
            raise self._error(f"unreadable data ({error})", self.offset) from error

    def _read_header(self) -> TraceHeader:
        head = self._read(_FILE_HEADER.size)
        if len(head) < 8 or head[:8] != MAGIC:
            raise self._error("not a gnurouter trace (bad magic)", 0)
        if len(head) < _FILE_HEADER.size:
            raise self._error("truncated file header", len(head))
        _, major, minor, length = _FILE_HEADER.unpack(head)
        if major != VERSION_MAJOR:
            raise self._error(
                f"trace format version {major}.{minor} is not supported "
                f"(this reader reads {VERSION_MAJOR}.x)",
                8,
            )
        if length > MAX_HEADER_JSON:
            raise self._error(f"header length {length} is implausible", 12)
        text = self._read(length)
        crc = self._read(_CRC.size)
        if len(text) < length or len(crc) < _CRC.size:
            raise self._error("truncated file header", _FILE_HEADER.size + len(text))
        if _CRC.unpack(crc)[0] != zlib.crc32(head + text):
            raise self._error("file header checksum mismatch", 0)
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("not an object")
            header = TraceHeader(
                version=(major, minor),
                producer=str(fields.get("producer", "")),
                created=str(fields.get("created", "")),
                start_time=float(fields.get("start_time", 0.0)),
                metadata=dict(fields.get("metadata") or {}),
            )
        except (ValueError, TypeError) as error:
            raise self._error(f"file header is not valid JSON ({error})", 16) from error
        header.size = _FILE_HEADER.size + length + _CRC.size
        self.offset = header.size
        return header

    def __iter__(self) -> Iterator[Record]:
        while True:
            block = self._next_block()
            if block is None:
                return
            yield from self._decode(*block)

    def _next_block(self) -> tuple[bytes, int, int, int, bool] | None:
        """(records, count, base_us, offset, stored raw) of the next intact block; None at EOF."""
        start = self.offset
        head = self._read(BLOCK_HEADER_SIZE)
        if not head:
            return None
        if len(head) < BLOCK_HEADER_SIZE:
            raise self._error(
                f"truncated: the file ends {len(head)} bytes into a block header", start
            )
        magic, flags, _, stored_len, raw_len, count, base_us = _BLOCK_HEADER.unpack_from(head)
        if magic != BLOCK_MAGIC:
            raise self._error(f"corrupt: no block marker (found {magic!r})", start)
        if stored_len > MAX_BLOCK_BYTES or raw_len > MAX_BLOCK_BYTES:
            raise self._error(
                f"corrupt: implausible block size ({stored_len} stored, {raw_len} raw)", start
            )
        stored = self._read(stored_len)
        if len(stored) < stored_len:
            raise self._error(
                f"truncated: a block of {stored_len} bytes is cut off after {len(stored)}",
                start,
            )
        crc = _CRC.unpack_from(head, _BLOCK_HEADER.size)[0]
        if crc != zlib.crc32(stored, zlib.crc32(head[: _BLOCK_HEADER.size])):
            raise self._error("corrupt: block checksum mismatch", start)
        if flags & FLAG_ZLIB:
            try:
                raw = zlib.decompress(stored, bufsize=max(raw_len, 1))
            except zlib.error as error:
                raise self._error(f"corrupt: block does not inflate ({error})", start) from error
        else:
            raw = stored
        if len(raw) != raw_len:
            raise self._error(
                f"corrupt: block holds {len(raw)} bytes of records, header says {raw_len}", start
            )
        self.offset = start + BLOCK_HEADER_SIZE + stored_len
        self.blocks += 1
        return raw, count, base_us, start, not flags & FLAG_ZLIB

    def _decode(
        self, raw: bytes, count: int, base_us: int, start: int, stored_is_raw: bool
    ) -> Iterator[Record]:
        """The records of one checksummed block, decoded one at a time as they are taken."""
        now = base_us
        pos = 0
        end = len(raw)
        seen = 0
        record_at = 0
        message_kind = int(Kind.MESSAGE)  # a plain int compares faster than the enum
        try:
            while pos < end:
                record_at = pos
                tag = raw[pos]
                pos += 1
                # Single-byte varints are the common case: inline them.
                value = raw[pos]
                if value < 0x80:
                    pos += 1
                else:
                    value, pos = _get_varint(raw, pos)
                now += value
                conn = raw[pos]
                if conn < 0x80:
                    pos += 1
                else:
                    conn, pos = _get_varint(raw, pos)
                length = raw[pos]
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = _get_varint(raw, pos)
                data = raw[pos : pos + length]
                pos += length
                if pos > end:
                    raise ValueError("record runs past the end of its block")
                seen += 1
                kind = tag & 0x7F
                if kind not in _KINDS:
                    self.unknown_records += 1
                    continue
                if kind == message_kind and not is_one_message(data):
                    raise ValueError("message record is not one whole Gnutella message")
                self.records += 1
                yield Record(now, kind, tag >> 7, conn, data)
        except (IndexError, ValueError) as error:
            detail = str(error) if isinstance(error, ValueError) else "record cut off"
            where = start + BLOCK_HEADER_SIZE + record_at if stored_is_raw else start
            raise self._error(
                f"corrupt: record {seen + 1} of the block at byte {start} ({detail})", where
            ) from error
        if seen != count:
            raise self._error(f"corrupt: block holds {seen} records, header says {count}", start)

    def close(self) -> None:
        if self._owned or isinstance(self._file, gzip.GzipFile):
            self._file.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_header(path: str | Path) -> TraceHeader:
    with TraceReader(path) as reader:
        return reader.header
