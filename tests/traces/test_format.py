"""The trace file format: round trips, damage detection with offsets, streaming."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest

from gnurouter.protocol.messages import Message, Ping, Pong, Query, new_guid
from gnurouter.traces.format import (
    BLOCK_HEADER_SIZE,
    MAGIC,
    Direction,
    Kind,
    Record,
    TraceError,
    TraceReader,
    TraceWriter,
)


def sample_records(count: int = 500) -> list[Record]:
    """Every kind and direction, multi-byte varints, one message bigger than a block."""
    records: list[Record] = []
    t = 0
    records.append(Record(t, Kind.OPEN, Direction.IN, 1, b'{"address":"127.0.0.1:5000"}'))
    records.append(Record(t, Kind.OPEN, Direction.OUT, 300, b""))
    for i in range(count):
        t += (i * 7919) % 300_000  # deltas from 0 to 0.3 s: 1..3-byte varints
        conn = 1 if i % 3 else 300
        body: Query | Ping | Pong
        if i % 5 == 0:
            body = Query(flags=0, criteria=f"query {i}")
        elif i % 5 == 1:
            body = Ping()
        else:
            body = Pong(port=6346, ip="127.0.0.1", files=i, kbytes=i * 2)
        message = Message.from_body(new_guid(), 7, i % 7, body)
        direction = Direction.OUT if i % 4 == 0 else Direction.IN
        records.append(Record(t, Kind.MESSAGE, direction, conn, message.encode()))
    big = Message(new_guid(), 0x81, 3, 2, bytes(range(256)) * 300)  # 76.8 kB
    records.append(Record(t, Kind.MESSAGE, Direction.IN, 1, big.encode()))
    records.append(Record(t + 1, Kind.RAW, Direction.IN, 300, b"\x00garbage\xff"))
    records.append(Record(t + 2, Kind.CLOSE, Direction.OUT, 300, b"we closed"))
    records.append(Record(t + 2, Kind.CLOSE, Direction.IN, 1, b""))
    return records


def write(path: Path | io.BytesIO, records: list[Record], **kwargs: object) -> TraceWriter:
    options: dict[str, object] = {"producer": "test", "metadata": {"k": [1, 2]}}
    options.update(kwargs)
    writer = TraceWriter(path, **options)  # type: ignore[arg-type]
    for record in records:
        writer.write(record)
    writer.close()
    return writer


def block_offsets(data: bytes) -> list[int]:
    """Where each block starts, from the file's own length fields."""
    (json_len,) = struct.unpack_from("<I", data, 12)
    offset = 16 + json_len + 4
    offsets = []
    while offset < len(data):
        offsets.append(offset)
        (stored,) = struct.unpack_from("<I", data, offset + 8)
        offset += BLOCK_HEADER_SIZE + stored
    assert offset == len(data)
    return offsets


def read_until_error(data: bytes) -> tuple[list[Record], TraceError | None]:
    got: list[Record] = []
    try:
        with TraceReader(io.BytesIO(data)) as reader:
            for record in reader:
                got.append(record)
    except TraceError as error:
        return got, error
    return got, None


@pytest.mark.parametrize("compress", [0, 6])
def test_round_trip_every_kind(tmp_path: Path, compress: int) -> None:
    records = sample_records()
    path = tmp_path / "t.gtrace"
    writer = write(path, records, compress=compress, block_bytes=4096, start_time=1234.5)
    assert writer.blocks > 3 and writer.records == len(records)
    with TraceReader(path) as reader:
        assert reader.header.producer == "test"
        assert reader.header.metadata == {"k": [1, 2]}
        assert reader.header.start_time == 1234.5
        assert reader.header.version == (1, 0)
        assert list(reader) == records
        assert reader.blocks == writer.blocks
    assert path.stat().st_size == writer.bytes_written


def test_gzip_is_transparent(tmp_path: Path) -> None:
    records = sample_records(100)
    path = tmp_path / "t.gtrace.gz"
    write(path, records)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(path.read_bytes())[:8] == MAGIC
    with TraceReader(path) as reader:
        assert list(reader) == records


def test_records_must_be_in_time_order_and_messages_whole(tmp_path: Path) -> None:
    writer = TraceWriter(tmp_path / "t.gtrace", producer="test")
    writer.add(10, Kind.OPEN, Direction.IN, 1, b"")
    with pytest.raises(ValueError, match="time order"):
        writer.add(9, Kind.CLOSE, Direction.IN, 1, b"")
    message = Message.from_body(new_guid(), 1, 0, Ping()).encode()
    with pytest.raises(ValueError, match="one whole Gnutella message"):
        writer.add(10, Kind.MESSAGE, Direction.IN, 1, message + b"x")
    with pytest.raises(ValueError, match="one whole Gnutella message"):
        writer.add(10, Kind.MESSAGE, Direction.IN, 1, message[:20])
    writer.close()


def test_truncation_anywhere_names_the_offset_and_keeps_earlier_records() -> None:
    records = sample_records(300)
    buffer = io.BytesIO()
    write(buffer, records, block_bytes=2048)
    data = buffer.getvalue()
    offsets = block_offsets(data)
    assert len(offsets) > 4
    # Count the records of each block by reading block by block.
    per_block: list[int] = []
    for index in range(len(offsets)):
        end = offsets[index + 1] if index + 1 < len(offsets) else len(data)
        complete, error = read_until_error(data[:end])
        assert error is None
        per_block.append(len(complete) - sum(per_block))
    header_size = offsets[0]
    cuts = list(range(1, header_size)) + [
        cut for start in offsets for cut in (start + 1, start + 20, start + BLOCK_HEADER_SIZE + 3)
    ]
    for cut in cuts:
        if cut >= len(data):
            continue
        got, error = read_until_error(data[:cut])
        assert error is not None, f"cut at {cut} went unnoticed"
        if cut < header_size:
            assert error.offset <= cut
            assert got == []
            continue
        damaged = max(i for i, start in enumerate(offsets) if start < cut)
        assert error.offset == offsets[damaged], (cut, error)
        assert "truncated" in error.reason
        assert f"at byte {offsets[damaged]}" in str(error)
        assert got == records[: sum(per_block[:damaged])]
    # A cut exactly at a block boundary is a shorter, valid trace.
    got, error = read_until_error(data[: offsets[3]])
    assert error is None and got == records[: sum(per_block[:3])]


@pytest.mark.parametrize("compress", [0, 6])
def test_corruption_is_caught_by_the_checksum(compress: int) -> None:
    records = sample_records(300)
    buffer = io.BytesIO()
    write(buffer, records, block_bytes=2048, compress=compress)
    data = buffer.getvalue()
    offsets = block_offsets(data)
    kept = len(read_until_error(data[: offsets[2]])[0])
    for position in (offsets[2] + 5, offsets[2] + 20, offsets[2] + BLOCK_HEADER_SIZE + 7):
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        got, error = read_until_error(bytes(damaged))
        assert error is not None
        assert error.offset == offsets[2]
        assert got == records[:kept]
    # A damaged header is reported at byte 0 and yields nothing.
    damaged = bytearray(data)
    damaged[20] ^= 0x01
    got, error = read_until_error(bytes(damaged))
    assert error is not None and error.offset == 0 and got == []
    assert "checksum" in error.reason


def test_not_a_trace_and_future_versions() -> None:
    with pytest.raises(TraceError) as caught:
        TraceReader(io.BytesIO(b"GNUTELLA CONNECT/0.6\r\n\r\n"))
    assert caught.value.offset == 0 and "not a gnurouter trace" in str(caught.value)
    future = MAGIC + struct.pack("<HHI", 2, 0, 2) + b"{}"
    future += struct.pack("<I", zlib.crc32(future))
    with pytest.raises(TraceError, match=r"version 2\.0 is not supported"):
        TraceReader(io.BytesIO(future))


def test_a_record_cut_inside_a_valid_block_names_its_own_offset() -> None:
    """A writer bug (not a disk error): the block checksum holds, the record does not."""
    header = json.dumps({"producer": "bad writer"}).encode()
    head = MAGIC + struct.pack("<HHI", 1, 0, len(header)) + header
    head += struct.pack("<I", zlib.crc32(head))
    good = bytes([Kind.CLOSE, 5, 1, 2]) + b"ok"
    bad = bytes([Kind.CLOSE, 1, 1, 50]) + b"short"
    raw = good + bad
    block = struct.pack("<4sHHIIIQ", b"GBLK", 0, 0, len(raw), len(raw), 2, 0)
    block += struct.pack("<I", zlib.crc32(raw, zlib.crc32(block))) + raw
    got, error = read_until_error(head + block)
    assert got == [Record(5, Kind.CLOSE, Direction.IN, 1, b"ok")]
    assert error is not None
    assert error.offset == len(head) + BLOCK_HEADER_SIZE + len(good)
    assert "record 2" in error.reason


def test_unknown_record_kinds_from_a_newer_minor_version_are_skipped() -> None:
    buffer = io.BytesIO()
    writer = TraceWriter(buffer, producer="newer")
    writer.add(1, Kind.OPEN, Direction.IN, 1, b"")
    writer.add(2, 9, Direction.IN, 1, b"future stuff")
    writer.add(3, Kind.CLOSE, Direction.IN, 1, b"")
    writer.close()
    with TraceReader(io.BytesIO(buffer.getvalue())) as reader:
        assert [r.kind for r in reader] == [Kind.OPEN, Kind.CLOSE]
        assert reader.unknown_records == 1


def test_reading_is_streamed_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.gtrace"
    payload = Message.from_body(new_guid(), 7, 0, Query(flags=0, criteria="x" * 60)).encode()
    with TraceWriter(path, producer="test", compress=0) as writer:
        for i in range(150_000):
            writer.message(i * 10, i % 12, payload)
    size = path.stat().st_size
    assert size > 12_000_000
    tracemalloc.start()
    try:
        count = 0
        with TraceReader(path) as reader:
            for _ in reader:
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 150_000
    assert peak < 1_000_000, f"reading a {size}-byte trace peaked at {peak} bytes"
