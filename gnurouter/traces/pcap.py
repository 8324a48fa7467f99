"""pcap/pcapng interop (dpkt): export a trace as TCP that Wireshark dissects, import captures.

Export synthesises, for every trace connection, a TCP connection between the
node (`--node`, 10.0.0.1:6346 by default) and the peer (its recorded address
when it is an IPv4 address, else one in 198.51.100.0/24): SYN, SYN-ACK, ACK,
the 0.6 handshake, then each MESSAGE/RAW record as data segments (at most
MSS bytes each, seq/ack numbers consistent both ways) at the record's time,
and FIN/FIN/ACK at its CLOSE.  Wireshark's Gnutella dissector then frames
the stream (`tshark -d tcp.port==6346,gnutella`).

Import reads pcap or pcapng (Ethernet, Linux cooked v1/v2, raw IP, BSD
loopback), reassembles every TCP stream (out-of-order segments are held
until the gap fills, retransmissions and overlaps keep the first copy of
each byte, sequence numbers may wrap), and keeps the streams that begin with
a Gnutella handshake.  Each direction's handshake is read passively (a 0.6
CONNECT block and the final 200, or the 0.4 form), deflated directions are
inflated, and the message stream is framed: each message becomes a MESSAGE
record at the time of the packet that completed it.  Bytes that
cannot be framed (an impossible length) become one RAW record and end that
direction.  What could not be used is listed in `problems`.

The node (the recording side, direction OUT) is `node` when one is named, and
otherwise found in the capture by a first pass over it: the endpoint that
takes part in the most Gnutella connections, ties going to the one that
accepted more of them (a router accepts its peers' connections; the peers
accept at most its few outgoing ones).  A connection the node made from
another port of its host counts as its own.  Without a node at all (no
Gnutella connection in the capture) each connection's acceptor is its node,
as it is for the connections a found node is not in.
A named node that takes part in no Gnutella connection is an error
(`NodeNotInCapture`) naming the endpoints that do, and nothing is written.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.framer import HARD_PAYLOAD_CEILING, MessageFramer, PayloadLimits
from gnurouter.traces.format import Direction, Kind, Record, TraceReader, TraceWriter
from gnurouter.traces.progress import progress

MSS = 1448
_PEER_NET = "198.51.100."
_SEQ_MASK = 0xFFFFFFFF
_MAX_OUT_OF_ORDER = 8 << 20
_MAX_HANDSHAKE = 64 << 10

#: Frame as the router would, except that no size short of impossible breaks the stream.
_IMPORT_LIMITS = PayloadLimits(**{name: HARD_PAYLOAD_CEILING for name in (
    "ping", "pong", "bye", "qrp", "vendor", "push", "query", "query_hit", "unknown"
)})  # fmt: skip


# -- export --------------------------------------------------------------------------------


@dataclass
class ExportResult:
    packets: int = 0
    messages: int = 0
    connections: int = 0


class _TcpConn:
    """Both directions of one synthesised TCP connection."""

    def __init__(
        self, client: tuple[str, int], server: tuple[str, int], isn: tuple[int, int]
    ) -> None:
        self.client = client
        self.server = server
        self.seq = {0: isn[0], 1: isn[1]}  # 0: client -> server, 1: server -> client
        self.fin = False


class _PcapOut:
    def __init__(self, path: str | Path, fmt: str) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        if fmt == "pcapng":
            self.writer: Any = dpkt.pcapng.Writer(self.file, snaplen=65535, linktype=1)
        else:
            self.writer = dpkt.pcap.Writer(self.file, snaplen=65535, linktype=1)
        self.packets = 0
        self.last_ts = 0.0
        self._src_mac = b"\x02\x00\x00\x00\x00\x01"
        self._dst_mac = b"\x02\x00\x00\x00\x00\x02"

    def segment(
        self, conn: _TcpConn, side: int, flags: int, data: bytes, ts: float, *, syn: bool = False
    ) -> None:
        src, dst = (conn.client, conn.server) if side == 0 else (conn.server, conn.client)
        tcp = dpkt.tcp.TCP(
            sport=src[1],
            dport=dst[1],
            seq=conn.seq[side] & _SEQ_MASK,
            ack=conn.seq[1 - side] & _SEQ_MASK if flags & dpkt.tcp.TH_ACK else 0,
            flags=flags,
            win=65535,
            data=data,
        )
        ip = dpkt.ip.IP(
            src=socket.inet_aton(src[0]),
            dst=socket.inet_aton(dst[0]),
            p=dpkt.ip.IP_PROTO_TCP,
            ttl=64,
            data=tcp,
        )
        ip.len = len(ip)
        frame = dpkt.ethernet.Ethernet(
            src=self._src_mac, dst=self._dst_mac, type=dpkt.ethernet.ETH_TYPE_IP, data=ip
        )
        self.last_ts = ts = max(ts, self.last_ts)  # captures are in time order
        self.writer.writepkt(bytes(frame), ts=ts)
        self.packets += 1
        conn.seq[side] += len(data) + (1 if syn or flags & dpkt.tcp.TH_FIN else 0)

    def data(self, conn: _TcpConn, side: int, data: bytes, ts: float) -> None:
        flags = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH
        for start in range(0, len(data), MSS):
            self.segment(conn, side, flags, data[start : start + MSS], ts)

    def close(self) -> None:
        self.file.close()


def _peer_address(info: dict[str, Any], conn: int, listen_port: int) -> tuple[str, int]:
    address = info.get("address")
    if isinstance(address, str):
        host, _, port = address.rpartition(":")
        try:
            if ipaddress.ip_address(host).version == 4 and port.isdigit():
                return host, int(port)
        except ValueError:
            pass
    return f"{_PEER_NET}{conn % 250 + 1}", listen_port or 20000 + conn % 40000


def export_pcap(
    trace: str | Path,
    output: str | Path,
    *,
    node: tuple[str, int] = ("10.0.0.1", 6346),
    fmt: str = "pcap",
    user_agent: str = "gnurouter-trace-export/0.1",
) -> ExportResult:
    """Write `trace` as a capture; returns what was written."""
    try:
        socket.inet_aton(node[0])
    except OSError:
        raise ValueError(f"node: {node[0]!r} is not an IPv4 address") from None
    result = ExportResult()
    out = _PcapOut(output, fmt)
    conns: dict[int, _TcpConn] = {}
    in_use: set[tuple[str, int]] = set()
    try:
        with TraceReader(trace) as reader:
            start = reader.header.start_time
            bar = progress(None, "export", unit="rec")
            try:
                for record in reader:
                    bar.update()
                    ts = start + record.time_us / 1e6
                    conn = conns.get(record.conn)
                    if conn is None:
                        if record.kind == Kind.CLOSE:
                            continue
                        info = record.info() if record.kind == Kind.OPEN else {}
                        outgoing = record.kind == Kind.OPEN and record.direction == Direction.OUT
                        conn = _open(out, record.conn, info, outgoing, node, in_use, ts, user_agent)
                        conns[record.conn] = conn
                        result.connections += 1
                        if record.kind == Kind.OPEN:
                            continue
                    # Side 0 is the client.  IN flows towards the node.
                    node_is_client = conn.client == node
                    if record.kind in (Kind.MESSAGE, Kind.RAW):
                        towards_node = record.direction == Direction.IN
                        side = 0 if towards_node != node_is_client else 1
                        out.data(conn, side, record.data, ts)
                        if record.kind == Kind.MESSAGE:
                            result.messages += 1
                    elif record.kind == Kind.CLOSE:
                        by_node = record.direction == Direction.OUT
                        first = 0 if by_node == node_is_client else 1
                        fin = dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK
                        out.segment(conn, first, fin, b"", ts)
                        out.segment(conn, 1 - first, fin, b"", ts + 1e-6)
                        out.segment(conn, first, dpkt.tcp.TH_ACK, b"", ts + 2e-6)
                        del conns[record.conn]
                        in_use.discard(conn.client if conn.server == node else conn.server)
            finally:
                bar.close()
    finally:
        out.close()
    result.packets = out.packets
    return result


def _open(
    out: _PcapOut,
    conn_id: int,
    info: dict[str, Any],
    outgoing: bool,
    node: tuple[str, int],
    in_use: set[tuple[str, int]],
    ts: float,
    user_agent: str,
) -> _TcpConn:
    # A peer we dialled listens on the Gnutella port (Wireshark picks the
    # dissector by the server's port); one that dialled us has an ephemeral one.
    peer = _peer_address(info, conn_id, node[1] if outgoing else 0)
    if peer in in_use or peer == node:
        peer = (f"{_PEER_NET}{conn_id % 250 + 1}", 20000 + conn_id % 40000)
        while peer in in_use:
            peer = (peer[0], peer[1] + 1 if peer[1] < 65535 else 1024)
    in_use.add(peer)
    client, server = (node, peer) if outgoing else (peer, node)
    isn = ((conn_id * 2654435761) & _SEQ_MASK, (conn_id * 40503 + 12345) & _SEQ_MASK)
    conn = _TcpConn(client, server, isn)
    ack = dpkt.tcp.TH_ACK
    out.segment(conn, 0, dpkt.tcp.TH_SYN, b"", ts, syn=True)
    out.segment(conn, 1, dpkt.tcp.TH_SYN | ack, b"", ts + 1e-6, syn=True)
    out.segment(conn, 0, ack, b"", ts + 2e-6)
    agent = f"User-Agent: {user_agent}\r\n".encode()
    out.data(conn, 0, b"GNUTELLA CONNECT/0.6\r\n" + agent + b"X-Ultrapeer: False\r\n\r\n", ts)
    out.data(conn, 1, b"GNUTELLA/0.6 200 OK\r\n" + agent + b"\r\n", ts + 3e-6)
    out.data(conn, 0, b"GNUTELLA/0.6 200 OK\r\n\r\n", ts + 4e-6)
    return conn


# -- import --------------------------------------------------------------------------------


@dataclass
class ImportResult:
    packets: int = 0
    tcp_streams: int = 0
    connections: int = 0
    messages: int = 0
    retransmitted_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    #: The recording node the trace's directions are relative to (None: each acceptor).
    node: tuple[str, int] | None = None


def _packets(path: str | Path) -> Iterator[tuple[float, bytes, int]]:
    """(timestamp, link-layer frame, link type) of every packet of a pcap or pcapng file."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        try:
            if magic == b"\x0a\x0d\x0d\x0a":
                reader: Any = dpkt.pcapng.Reader(handle)
            else:
                reader = dpkt.pcap.Reader(handle)
        except (ValueError, dpkt.dpkt.Error) as error:
            raise ValueError(f"{path}: not a pcap or pcapng capture ({error})") from None
        linktype = reader.datalink()
        for ts, frame in reader:
            yield float(ts), frame, linktype


def _ip_of(frame: bytes, linktype: int) -> Any:
    """The IPv4/IPv6 packet inside a frame, or None."""
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            packet = dpkt.ethernet.Ethernet(frame).data
        elif linktype == dpkt.pcap.DLT_LINUX_SLL:
            packet = dpkt.sll.SLL(frame).data
        elif linktype == 276:  # LINKTYPE_LINUX_SLL2
            packet = dpkt.sll2.SLL2(frame).data
        elif linktype in (dpkt.pcap.DLT_RAW, 12, 14, 101):
            packet = dpkt.ip.IP(frame) if frame[:1] and frame[0] >> 4 == 4 else dpkt.ip6.IP6(frame)
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            packet = dpkt.loopback.Loopback(frame).data
        else:
            return None
    except (dpkt.dpkt.UnpackError, IndexError, struct.error):
        return None
    return packet if isinstance(packet, dpkt.ip.IP | dpkt.ip6.IP6) else None


def _address(ip: Any, raw: bytes) -> str:
    family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
    return socket.inet_ntop(family, raw)


class _Direction:
    """One direction of a TCP stream: reassembly, then the passive Gnutella reading."""

    def __init__(self, conn: _ImportConn, towards_node: bool) -> None:
        self.conn = conn
        self.towards_node = towards_node
        self.isn: int | None = None  # sequence number of the first data byte
        self.next = 0  # offset of the next byte to deliver
        self.held: dict[int, bytes] = {}
        self.held_bytes = 0
        self.finished = False
        self.broken = False
        # Gnutella side
        self.blocks: list[bytes] = []
        self.buffer = bytearray()
        self.streaming = False
        self.deflated = False
        self.inflater: Any = None
        self.framer = MessageFramer(_IMPORT_LIMITS, max_ttl_plus_hops=510)

    def offset_of(self, seq: int) -> int:
        assert self.isn is not None
        rel = (seq - self.isn) & _SEQ_MASK
        # Unwrap relative to what is expected next (streams may pass 4 GiB).
        delta = (rel - self.next) & _SEQ_MASK
        if delta >= 1 << 31:
            delta -= 1 << 32
        return self.next + delta

    def segment(self, seq: int, data: bytes, ts: float, result: ImportResult) -> None:
        if self.broken or not data:
            return
        if self.isn is None:
            self.isn = seq  # no SYN seen: count from here
        start = self.offset_of(seq)
        end = start + len(data)
        if end <= self.next:
            result.retransmitted_bytes += len(data)
            return
        if start > self.next:
            if start not in self.held or len(self.held[start]) < len(data):
                self.held_bytes += len(data) - len(self.held.get(start, b""))
                self.held[start] = data
            if self.held_bytes > _MAX_OUT_OF_ORDER:
                self.conn.problem(f"gap at stream byte {self.next} never filled; rest dropped")
                self.broken = True
                self.held.clear()
            return
        if start < self.next:
            result.retransmitted_bytes += self.next - start
        self._deliver(data[self.next - start :], ts)
        while self.held:
            ready = [offset for offset in self.held if offset <= self.next]
            if not ready:
                break
            for offset in sorted(ready):
                chunk = self.held.pop(offset)
                self.held_bytes -= len(chunk)
                if offset + len(chunk) > self.next:
                    result.retransmitted_bytes += max(0, self.next - offset)
                    self._deliver(chunk[self.next - offset :], ts)
                else:
                    result.retransmitted_bytes += len(chunk)

    def _deliver(self, data: bytes, ts: float) -> None:
        self.next += len(data)
        if self.broken:
            return
        if not self.streaming:
            self.buffer += data
            self._handshake(ts)
            return
        self._stream(data, ts)

    def _handshake(self, ts: float) -> None:
        conn = self.conn
        while not self.streaming:
            text = bytes(self.buffer)
            end = text.find(b"\r\n\r\n")
            size = 4
            lf = text.find(b"\n\n")
            if lf >= 0 and (end < 0 or lf < end):
                end, size = lf, 2
            if end < 0:
                if len(self.buffer) > _MAX_HANDSHAKE:
                    conn.problem("handshake block too long; not a Gnutella stream")
                    self.broken = True
                return
            block = text[:end]
            del self.buffer[: end + size]
            self.blocks.append(block)
            first = block.split(b"\n", 1)[0].strip()
            headers = block.lower()
            says_deflate = b"content-encoding: deflate" in headers
            if first.startswith(b"GNUTELLA CONNECT/"):
                conn.client_saw_connect(self, first)
                if first.endswith(b"/0.4"):
                    self._start_stream(False, ts)
                continue
            if first == b"GNUTELLA OK":
                self._start_stream(False, ts)
                continue
            if first.startswith(b"GNUTELLA/"):
                parts = first.split()
                status = parts[1] if len(parts) > 1 else b""
                if status != b"200":
                    conn.refused(first.decode("latin-1"), ts)
                    self.broken = True
                    return
                # The acceptor's 200 and the initiator's final 200 both end
                # that side's handshake.
                self._start_stream(says_deflate, ts)
                continue
            conn.problem(f"not a Gnutella handshake: {first[:40]!r}")
            self.broken = True
            return

    def _start_stream(self, deflated: bool, ts: float) -> None:
        self.streaming = True
        self.deflated = deflated
        if deflated:
            self.inflater = zlib.decompressobj()
        self.conn.stream_started(ts)
        rest = bytes(self.buffer)
        self.buffer.clear()
        if rest:
            self._stream(rest, ts)

    def _stream(self, data: bytes, ts: float) -> None:
        if self.inflater is not None:
            try:
                data = self.inflater.decompress(data)
            except zlib.error as error:
                self.conn.problem(f"bad deflate stream: {error}")
                self.broken = True
                return
        if not data:
            return
        try:
            messages = self.framer.feed(data)
        except ProtocolError as error:
            self.conn.raw(self.towards_node, data, ts, str(error))
            self.broken = True
            return
        for message in messages:
            self.conn.message(self.towards_node, message.header_bytes() + message.payload, ts)
        if self.framer.failed is not None:
            self.conn.raw(self.towards_node, b"", ts, str(self.framer.failed))
            self.broken = True


class _ImportConn:
    def __init__(
        self,
        importer: _Importer,
        key: tuple[tuple[str, int], tuple[str, int]],
        node_is_server: bool,
        ts: float,
    ) -> None:
        self.importer = importer
        self.client, self.server = key
        self.node_is_server = node_is_server
        self.opened_at = ts
        self.id: int | None = None  # trace connection id, once it is Gnutella
        self.to_server = _Direction(self, towards_node=node_is_server)
        self.to_client = _Direction(self, towards_node=not node_is_server)
        self.fins: set[str] = set()
        self.closed = False
        self.first_closer_is_node: bool | None = None
        self.messages = 0

    def label(self) -> str:
        return f"{self.client[0]}:{self.client[1]} -> {self.server[0]}:{self.server[1]}"

    def problem(self, text: str) -> None:
        self.importer.problem(f"{self.label()}: {text}")

    def client_saw_connect(self, direction: _Direction, first: bytes) -> None:
        self._ensure_open(self.opened_at)

    def refused(self, status: str, ts: float) -> None:
        self._ensure_open(ts)

    def stream_started(self, ts: float) -> None:
        self._ensure_open(ts)

    def _ensure_open(self, ts: float) -> None:
        if self.id is not None:
            return
        self.id = self.importer.new_conn_id()
        peer = self.client if self.node_is_server else self.server
        info = {"address": f"{peer[0]}:{peer[1]}", "capture": True}
        direction = Direction.IN if self.node_is_server else Direction.OUT
        self.importer.emit(self.opened_at, Kind.OPEN, direction, self.id, json.dumps(info).encode())

    def message(self, towards_node: bool, data: bytes, ts: float) -> None:
        self._ensure_open(ts)
        assert self.id is not None
        self.messages += 1
        direction = Direction.IN if towards_node else Direction.OUT
        self.importer.emit(ts, Kind.MESSAGE, direction, self.id, data)

    def raw(self, towards_node: bool, data: bytes, ts: float, why: str) -> None:
        self.problem(f"framing broke ({why}); rest of that direction dropped")
        if data and self.id is not None:
            direction = Direction.IN if towards_node else Direction.OUT
            self.importer.emit(ts, Kind.RAW, direction, self.id, data[:65536])

    def fin(self, from_server: bool, ts: float, reset: bool) -> None:
        from_node = from_server == self.node_is_server
        if self.first_closer_is_node is None:
            self.first_closer_is_node = from_node
        self.fins.add("server" if from_server else "client")
        if (reset or len(self.fins) == 2) and not self.closed:
            self.closed = True
            if self.id is not None:
                direction = Direction.OUT if self.first_closer_is_node else Direction.IN
                reason = b"reset" if reset else b"closed"
                self.importer.emit(ts, Kind.CLOSE, direction, self.id, reason)


class _Importer:
    def __init__(
        self,
        writer: TraceWriter,
        node: tuple[str, int] | None,
        port: int | None,
        *,
        named_node: bool = True,
    ) -> None:
        self.writer = writer
        self.node = node
        # A named node keeps only its own connections; one found in the capture leaves
        # the connections it is not in to their acceptors.
        self.named_node = named_node
        self.port = port
        self.result = ImportResult()
        self.conns: dict[tuple[tuple[str, int], tuple[str, int]], _ImportConn] = {}
        self._next_id = 1
        self._start: float | None = None
        self._last_us = 0

    def problem(self, text: str) -> None:
        self.result.problems.append(text)

    def new_conn_id(self) -> int:
        self._next_id += 1
        self.result.connections += 1
        return self._next_id - 1

    def emit(self, ts: float, kind: int, direction: int, conn: int, data: bytes) -> None:
        assert self._start is not None
        time_us = max(self._last_us, round((ts - self._start) * 1e6))
        self._last_us = time_us
        if kind == Kind.MESSAGE:
            self.result.messages += 1
        self.writer.add(time_us, kind, direction, conn, data)

    def packet(self, ts: float, frame: bytes, linktype: int) -> None:
        self.result.packets += 1
        if self._start is None:
            self._start = ts
        ip = _ip_of(frame, linktype)
        if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
            return
        tcp = ip.data
        src = (_address(ip, ip.src), tcp.sport)
        dst = (_address(ip, ip.dst), tcp.dport)
        if self.port is not None and self.port not in (tcp.sport, tcp.dport):
            return
        flags = tcp.flags
        conn = self.conns.get((src, dst)) or self.conns.get((dst, src))
        if conn is not None and conn.closed and flags & dpkt.tcp.TH_SYN:
            del self.conns[(conn.client, conn.server)]  # the 4-tuple is reused
            conn = None
        if conn is None:
            conn = self._new(src, dst, tcp, ts)
            if conn is None:
                return
        from_client = src == conn.client
        direction = conn.to_server if from_client else conn.to_client
        if flags & dpkt.tcp.TH_SYN:
            direction.isn = (tcp.seq + 1) & _SEQ_MASK
            direction.next = 0
        else:
            direction.segment(tcp.seq, bytes(tcp.data), ts, self.result)
        if flags & dpkt.tcp.TH_RST:
            conn.fin(not from_client, ts, reset=True)
        elif flags & dpkt.tcp.TH_FIN:
            conn.fin(not from_client, ts, reset=False)

    def _new(
        self, src: tuple[str, int], dst: tuple[str, int], tcp: Any, ts: float
    ) -> _ImportConn | None:
        ends = _client_and_server(src, dst, tcp)
        if ends is None:
            return None
        client, server = ends
        node_is_server = True  # no node: each connection's acceptor
        if self.node is not None:
            found = _node_is_server(self.node, client, server)
            if found is None and self.named_node:
                return None
            node_is_server = True if found is None else found
        conn = _ImportConn(self, (client, server), node_is_server, ts)
        self.conns[(client, server)] = conn
        self.result.tcp_streams += 1
        return conn

    def finish(self) -> None:
        for conn in self.conns.values():
            for direction in (conn.to_server, conn.to_client):
                if direction.held and not direction.broken:
                    conn.problem(
                        f"capture ends with a gap at stream byte {direction.next} "
                        f"({direction.held_bytes} bytes after it unused)"
                    )
            if conn.id is None and not conn.closed:
                pass


Endpoint = tuple[str, int]


def _client_and_server(src: Endpoint, dst: Endpoint, tcp: Any) -> tuple[Endpoint, Endpoint] | None:
    """Who dialled and who accepted, from a stream's first captured segment (None: the
    segment is mid-stream or not Gnutella, nothing to frame from)."""
    if tcp.flags & dpkt.tcp.TH_SYN:
        if not tcp.flags & dpkt.tcp.TH_ACK:
            return src, dst
        return dst, src  # SYN-ACK first: the SYN was not captured
    data = bytes(tcp.data)
    if data.startswith(b"GNUTELLA CONNECT/"):
        return src, dst
    if data.startswith(b"GNUTELLA"):
        return dst, src
    return None


def _node_is_server(node: Endpoint, client: Endpoint, server: Endpoint) -> bool | None:
    """Which side of a connection `node` is (port 0: any port of its host), or None.

    Its own address first; then its host, for a connection it made from another port
    (unless both sides are on its host, as on loopback: which one is it then?)."""
    host, port = node
    for side, is_server in ((server, True), (client, False)):
        if side[0] == host and (port == 0 or side[1] == port):
            return is_server
    if (server[0] == host) != (client[0] == host):
        return server[0] == host
    return None


class NodeNotInCapture(ValueError):
    """The named node takes part in none of the capture's Gnutella connections."""


@dataclass
class CaptureScan:
    """The Gnutella connections of a capture, (client, server) each, from a first pass."""

    connections: list[tuple[Endpoint, Endpoint]] = field(default_factory=list)

    def endpoints(self) -> Counter[Endpoint]:
        """How many connections each endpoint takes part in."""
        return Counter(end for pair in self.connections for end in pair)

    def node(self) -> Endpoint | None:
        """The endpoint in the most connections (ties: the one that accepted more)."""
        accepted = Counter(server for _, server in self.connections)
        ranked = sorted(self.endpoints().items(), key=lambda kv: (-kv[1], -accepted[kv[0]]))
        return ranked[0][0] if ranked else None

    def check(self, node: Endpoint) -> None:
        """NodeNotInCapture unless `node` is a side of some connection."""
        if any(_node_is_server(node, *pair) is not None for pair in self.connections):
            return
        seen = ", ".join(
            f"{host}:{port} ({count})" for (host, port), count in self.endpoints().most_common(5)
        )
        raise NodeNotInCapture(
            f"node {node[0]}:{node[1]} is in none of the capture's "
            f"{len(self.connections):,} Gnutella connections"
            + (f"; endpoints seen (connections): {seen}" if seen else "")
        )


def scan_capture(capture: str | Path, port: int | None = None) -> CaptureScan:
    """The first pass: which TCP streams are Gnutella, and who dialled whom."""
    scan = CaptureScan()
    pending: dict[frozenset[Endpoint], tuple[Endpoint, Endpoint]] = {}
    done: set[frozenset[Endpoint]] = set()
    for _, frame, linktype in _packets(capture):
        ip = _ip_of(frame, linktype)
        if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
            continue
        tcp = ip.data
        if port is not None and port not in (tcp.sport, tcp.dport):
            continue
        src = (_address(ip, ip.src), tcp.sport)
        dst = (_address(ip, ip.dst), tcp.dport)
        key = frozenset((src, dst))
        if key in done:
            continue
        ends = pending.get(key) or _client_and_server(src, dst, tcp)
        if ends is None:
            continue
        pending[key] = ends
        if tcp.data:
            # The stream's first bytes say whether it is Gnutella at all.
            done.add(key)
            del pending[key]
            if bytes(tcp.data).startswith(b"GNUTELLA"):
                scan.connections.append(ends)
    return scan


def import_pcap(
    capture: str | Path,
    output: str | Path,
    *,
    node: tuple[str, int] | None = None,
    port: int | None = None,
    producer: str = "gnurouter trace import-pcap",
    created: str | None = None,
) -> ImportResult:
    """Write the Gnutella streams of `capture` as a trace (see the module doc)."""
    scan = scan_capture(capture, port)
    if node is not None:
        scan.check(node)
        found_by = "--node"
    else:
        node = scan.node()
        found_by = "found in the capture"
    packets = _packets(capture)
    first = next(packets, None)
    start = first[0] if first is not None else 0.0
    metadata = {
        "source": str(Path(capture).name),
        "node": f"{node[0]}:{node[1]}" if node else None,
        "node_from": found_by if node else None,
    }
    with TraceWriter(
        output, producer=producer, metadata=metadata, start_time=start, created=created
    ) as writer:
        importer = _Importer(writer, node, port, named_node=found_by == "--node")
        importer.result.node = node
        bar = progress(None, "import", unit="pkt")
        try:
            if first is not None:
                importer.packet(*first)
            for packet in packets:
                importer.packet(*packet)
                bar.update()
        except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as error:
            importer.problem(f"capture ends in a damaged packet ({error}); earlier ones used")
        finally:
            bar.close()
        importer.finish()
    return importer.result


def records_of(path: str | Path) -> list[Record]:
    """All records of a trace (for tests and small traces)."""
    with TraceReader(path) as reader:
        return list(reader)
