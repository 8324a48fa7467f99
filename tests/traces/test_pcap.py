"""pcap interop: tshark dissects exported traces; captures of the router import as traces."""

from __future__ import annotations

import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import dpkt
import pytest
import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.servent import ServentProtocol, connect_servent
from gnurouter.protocol.messages import (
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    decode_header,
    new_guid,
)
from gnurouter.traces.format import Direction, Kind, Record, TraceWriter, read_header
from gnurouter.traces.pcap import (
    CaptureScan,
    NodeNotInCapture,
    export_pcap,
    import_pcap,
    records_of,
)
from gnurouter.traces.synth import SynthConfig, Synthesizer
from tests.conftest import require, wait_for
from tests.traces.capture import Decoded, bounded, decode_gnutella, start_capture, stop_capture

NODE = ("10.0.0.1", 6346)


def synth_trace(path: Path, **config: Any) -> list[Record]:
    synthesizer = Synthesizer(SynthConfig(**config))
    records = []
    with TraceWriter(path, producer="test", start_time=1_700_000_000.0) as writer:
        for record in synthesizer:
            writer.write(record)
            records.append(record)
    return records


def messages_by_conn(
    records: list[Record], direction: int = Direction.IN
) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = defaultdict(list)
    for record in records:
        if record.kind == Kind.MESSAGE and record.direction == direction:
            found[record.conn].append(record.data)
    return found


@pytest.mark.external
@pytest_twisted.ensureDeferred
async def test_exported_pcap_is_dissected_as_gnutella(tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "tshark")
    trace = tmp_path / "t.gtrace"
    records = synth_trace(trace, duration=8, seed=21, malformed=0.0, framing_errors=0.0)
    # An OUT message and a message bigger than one segment, too.
    with TraceWriter(tmp_path / "extra.gtrace", producer="test") as writer:
        for record in records:
            writer.write(record)
        last = records[-1].time_us
        writer.open(last + 1, 999, Direction.OUT, {"address": "192.0.2.9:6346"})
        hit = Message.from_body(
            new_guid(), 5, 1,
            QueryHit(6346, "192.0.2.9", 1000, tuple(
                QueryHitResult(i, 1000 + i, f"long result name number {i:04d}.ogg")
                for i in range(80)
            ), bytes(range(16))),
        )  # fmt: skip
        writer.message(last + 2, 999, hit.encode(), Direction.OUT)
        query = Message.from_body(new_guid(), 4, 2, Query(0, "exported query"))
        writer.message(last + 3, 999, query.encode(), Direction.IN)
    records = records_of(tmp_path / "extra.gtrace")
    pcap = tmp_path / "t.pcapng"
    result = export_pcap(tmp_path / "extra.gtrace", pcap, node=NODE, fmt="pcapng")
    messages = [r for r in records if r.kind == Kind.MESSAGE]
    assert result.messages == len(messages) and len(hit.encode()) > 1448

    decoded = await decode_gnutella(pcap, NODE[1])
    assert len(decoded) == len(messages)
    # Per connection and direction, tshark sees exactly the trace's messages, in order.
    seen: dict[tuple[tuple[str, int], tuple[str, int]], list[tuple]] = defaultdict(list)
    for d in decoded:
        seen[(d.src, d.dst)].append(d.header)
    expected_flows = defaultdict(list)
    peer_of: dict[int, tuple[str, int]] = {}
    by_conn_in = messages_by_conn(records, Direction.IN)
    by_conn_out = messages_by_conn(records, Direction.OUT)
    headers_of = lambda datas: [decode_header(d) for d in datas]  # noqa: E731
    remaining = dict(seen)
    for conn in sorted(set(by_conn_in) | set(by_conn_out)):
        ins = headers_of(by_conn_in.get(conn, []))
        outs = headers_of(by_conn_out.get(conn, []))
        match = [
            flow
            for flow in remaining
            if flow[1] == NODE
            and remaining[flow] == ins
            and remaining.get((NODE, flow[0]), []) == outs
        ]
        assert match, f"connection {conn}: no flow carries its messages"
        peer_of[conn] = match[0][0]
        del remaining[match[0]]
        remaining.pop((NODE, match[0][0]), None)
        expected_flows[conn] = ins
    assert not remaining
    assert peer_of[999] == ("192.0.2.9", 6346)

    flows: dict[tuple[tuple[str, int], tuple[str, int]], list[Decoded]] = defaultdict(list)
    for d in decoded:
        flows[(d.src, d.dst)].append(d)
    pairs: list[tuple[bytes, Decoded]] = []
    for conn, peer in peer_of.items():
        pairs += zip(by_conn_in.get(conn, []), flows[(peer, NODE)], strict=True)
        pairs += zip(by_conn_out.get(conn, []), flows[(NODE, peer)], strict=True)
    assert len(pairs) == len(messages)
    checked = 0
    for data, d in pairs:
        message = Message(*decode_header(data)[:4], data[23:])
        body = message.body()
        if isinstance(body, Pong):
            assert d.one("gnutella.pong.ip") == body.ip
            assert int(d.one("gnutella.pong.port")) == body.port
            assert int(d.one("gnutella.pong.files")) == body.files
        elif isinstance(body, Push):
            assert bytes.fromhex(d.one("gnutella.push.servent_id")) == body.servent_id
            assert int(d.one("gnutella.push.index")) == body.file_index
        elif isinstance(body, Query):
            assert d.one("gnutella.query.search") == body.criteria
        elif isinstance(body, QueryHit):
            assert int(d.one("gnutella.queryhit.count")) == len(body.results)
            assert d.fields["gnutella.queryhit.hit.name"] == [r.name for r in body.results]
            assert bytes.fromhex(d.one("gnutella.queryhit.servent_id")) == body.servent_id
        else:
            continue
        checked += 1
    [d_hit] = [d for d in decoded if d.header[0] == hit.guid]
    assert d_hit.src == NODE and d_hit.one("gnutella.queryhit.count") == "80"
    assert checked > 100


def test_import_reassembles_reordered_duplicated_and_overlapping_segments(tmp_path: Path) -> None:
    trace = tmp_path / "t.gtrace"
    records = synth_trace(trace, duration=6, seed=5)
    pcap = tmp_path / "t.pcap"
    export_pcap(trace, pcap, node=NODE)
    with open(pcap, "rb") as handle:
        packets = [(ts, bytes(frame)) for ts, frame in dpkt.pcap.Reader(handle)]
    rng = random.Random(1)
    mangled: list[tuple[float, bytes]] = []
    for ts, frame in packets:
        eth = dpkt.ethernet.Ethernet(frame)
        tcp = eth.data.data
        data = bytes(tcp.data)
        roll = rng.random()
        if len(data) > 10 and roll < 0.3:
            # Split into two overlapping segments, sent in reverse order.
            cut = rng.randrange(5, len(data) - 3)
            first = _with_payload(eth, tcp.seq, data[: cut + 3])
            second = _with_payload(eth, tcp.seq + cut, data[cut:])
            mangled += [(ts, second), (ts, first)]
        elif data and roll < 0.45:
            mangled += [(ts, frame), (ts, frame)]  # a retransmission
        else:
            mangled.append((ts, frame))
    # Swap some neighbours (packets of one flow arrive out of order).
    for i in range(0, len(mangled) - 1, 7):
        mangled[i], mangled[i + 1] = mangled[i + 1], mangled[i]
    with open(tmp_path / "mangled.pcap", "wb") as handle:
        writer = dpkt.pcap.Writer(handle, snaplen=65535)
        for ts, frame in mangled:
            writer.writepkt(frame, ts=ts)
    result = import_pcap(tmp_path / "mangled.pcap", tmp_path / "back.gtrace")
    assert result.retransmitted_bytes > 0
    assert not [p for p in result.problems if "gap" in p]
    back = records_of(tmp_path / "back.gtrace")
    original = messages_by_conn(records)
    imported = messages_by_conn(back)
    assert sorted(original.values()) == sorted(imported.values())
    assert sum(len(v) for v in imported.values()) == sum(r.kind == Kind.MESSAGE for r in records)
    # Framing-breaking bytes come back as RAW records, closes as CLOSE records.
    assert sum(r.kind == Kind.RAW for r in back) == sum(r.kind == Kind.RAW for r in records)
    assert sum(r.kind == Kind.CLOSE for r in back) == sum(r.kind == Kind.CLOSE for r in records)


def _with_payload(eth: Any, seq: int, data: bytes) -> bytes:
    tcp = dpkt.tcp.TCP(
        sport=eth.data.data.sport, dport=eth.data.data.dport, seq=seq & 0xFFFFFFFF,
        ack=eth.data.data.ack, flags=eth.data.data.flags, win=65535, data=data,
    )  # fmt: skip
    ip = dpkt.ip.IP(src=eth.data.src, dst=eth.data.dst, p=dpkt.ip.IP_PROTO_TCP, data=tcp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=eth.src, dst=eth.dst, type=eth.type, data=ip))


def test_import_rejects_a_file_that_is_not_a_capture(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pcap"
    bogus.write_bytes(b"this is not a capture at all")
    with pytest.raises(ValueError, match="not a pcap"):
        import_pcap(bogus, tmp_path / "out.gtrace")


@pytest.mark.external
@pytest.mark.network
@pytest_twisted.ensureDeferred
async def test_import_of_a_loopback_capture_of_the_router(
    start_router: Any, tmp_path: Path
) -> None:
    require(shutil.which("tshark") is not None, "tshark")
    router = start_router()
    host, port = router.listening_address()
    pcap = tmp_path / "router.pcapng"
    capture, _ = await start_capture(port, pcap)
    try:
        plain = await connect_servent(reactor, host, port)
        packed = await connect_servent(reactor, host, port, deflate=True)
        await wait_for(router, lambda: len(router.peers.established()) >= 2)
        assert packed.connection.deflate_in and packed.connection.deflate_out
        # ITransport is a zope interface, opaque to mypy.
        local = {s: cast(Any, s.transport).getHost() for s in (plain, packed)}
        sent: dict[ServentProtocol, list[Message]] = {plain: [], packed: []}

        def send(servent: ServentProtocol, message: Message) -> None:
            sent[servent].append(message)
            servent.send(message)

        query = Message.from_body(new_guid(), 5, 0, Query(0, "captured query"))
        send(plain, query)
        await packed.next_message(reactor, lambda m: m.guid == query.guid)
        ping = Message.from_body(new_guid(), 3, 0, Ping())
        send(plain, ping)
        await plain.next_message(reactor, lambda m: m.guid == ping.guid and m.type == 1)
        hit = Message.from_body(
            query.guid, 5, 0,
            QueryHit(6346, "192.0.2.7", 100, (QueryHitResult(1, 2, "captured.ogg"),), bytes(16)),
        )  # fmt: skip
        send(packed, hit)
        await plain.next_message(reactor, lambda m: m.type == MessageType.QUERY_HIT)
        for i in range(50):  # enough to span several segments and deflate flushes
            send(packed, Message.from_body(new_guid(), 4, 1, Query(0, f"bulk {i} " + "x" * 40)))
        marker = Message.from_body(new_guid(), 5, 0, Query(0, "marker"))
        send(packed, marker)
        await plain.next_message(reactor, lambda m: m.guid == marker.guid)
        for servent in (plain, packed):
            servent.close()
        for servent in (plain, packed):
            await bounded(servent.closed)
        await capture.wait_for(lambda: capture.fins >= 4)
        await stop_capture(capture)
    finally:
        if not capture.ended.called:
            await stop_capture(capture, kill=True)

    out = tmp_path / "router.gtrace"
    result = import_pcap(pcap, out, node=(host, port))
    assert result.connections == 2, result.problems
    assert not result.problems
    records = records_of(out)
    opens = [r for r in records if r.kind == Kind.OPEN]
    assert [r.direction for r in opens] == [Direction.IN, Direction.IN]  # both dialled the router
    conn_of = {}
    for servent in (plain, packed):
        address = f"{local[servent].host}:{local[servent].port}"
        [record] = [r for r in opens if r.info()["address"] == address]
        conn_of[servent] = record.conn
    ins = messages_by_conn(records, Direction.IN)
    outs = messages_by_conn(records, Direction.OUT)
    for servent, conn in conn_of.items():
        assert ins[conn] == [m.encode() for m in sent[servent]]
        assert outs[conn] == [m.encode() for m in servent.received]
    closes = [r for r in records if r.kind == Kind.CLOSE]
    assert sorted(r.conn for r in closes) == sorted(conn_of.values())
    assert all(r.direction == Direction.IN for r in closes)  # the servents closed first


def test_export_then_import_with_their_defaults_round_trips(tmp_path: Path) -> None:
    trace = tmp_path / "t.gtrace"
    pings = [Message.from_body(new_guid(), 1, 0, Ping()).encode() for _ in range(4)]
    with TraceWriter(trace, producer="test", start_time=1_700_000_000.0) as writer:
        # One connection a peer made to the node, one the node made: taking each
        # connection's acceptor for the node would turn the second one around.
        writer.open(0, 1, Direction.IN, {"address": "192.0.2.5:40000"})
        writer.open(1000, 2, Direction.OUT, {"address": "192.0.2.6:6346"})
        for n, ping in enumerate(pings):
            conn = 1 + n % 2
            writer.message(2000 + n * 1000, conn, ping, Direction.IN if n < 2 else Direction.OUT)
        writer.close_connection(9000, 1)
        writer.close_connection(9500, 2, "done", Direction.OUT)
    records = records_of(trace)
    pcap = tmp_path / "t.pcapng"
    export_pcap(trace, pcap, fmt="pcapng")  # the default node, 10.0.0.1:6346
    back = tmp_path / "back.gtrace"
    result = import_pcap(pcap, back)  # no node: found in the capture
    assert result.node == NODE
    header = read_header(back)
    assert header.metadata["node"] == "10.0.0.1:6346"
    assert header.metadata["node_from"] == "found in the capture"
    imported = records_of(back)
    for kind in (Kind.OPEN, Kind.MESSAGE, Kind.CLOSE):
        assert [(r.direction, r.conn) for r in imported if r.kind == kind] == [
            (r.direction, r.conn) for r in records if r.kind == kind
        ], kind
    assert [r.data for r in imported if r.kind == Kind.MESSAGE] == pings


def test_found_node_is_the_endpoint_in_most_connections() -> None:
    router, other = ("192.0.2.1", 6346), ("192.0.2.9", 6346)
    scan = CaptureScan(
        [
            (("198.51.100.1", 40001), router),
            (("198.51.100.2", 40002), router),
            (("192.0.2.1", 51000), other),  # the router dialled out from another port
        ]
    )
    assert scan.node() == router
    # One connection each way: the acceptor of the most connections wins the tie.
    assert CaptureScan([(other, router)]).node() == router


def test_a_node_in_none_of_the_connections_is_refused_naming_what_was_seen(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "t.gtrace"
    synth_trace(trace, duration=4, seed=2)
    pcap = tmp_path / "t.pcap"
    export_pcap(trace, pcap)
    out = tmp_path / "out.gtrace"
    with pytest.raises(NodeNotInCapture) as refused:
        import_pcap(pcap, out, node=("127.0.0.1", 6346))
    assert "node 127.0.0.1:6346 is in none of the capture's" in str(refused.value)
    assert "10.0.0.1:6346" in str(refused.value)
    assert not out.exists()
    # Any port of the right host is the node.
    assert import_pcap(pcap, out, node=("10.0.0.1", 0)).connections > 0
