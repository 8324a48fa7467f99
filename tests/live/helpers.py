"""Servents as today's real ones look on the wire, for tests against live routers."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, task

from gnurouter.edge.servent import ServentProtocol, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.handshake import Headers
from gnurouter.protocol.messages import (
    QRP_COMPRESSOR_DEFLATE,
    Message,
    Query,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
    new_guid,
)
from gnurouter.protocol.qrp import QrpTable
from tests.conftest import wait_for

# -- header sets -------------------------------------------------------------
# Shaped like what gtk-gnutella 1.2 and LimeWire 5.5 send: the header names
# and values their sources write (gtk-gnutella nodes.c, LimeWire's
# HeaderNames/LeafHeaders/UltrapeerHeaders), addresses set for loopback.
# Reconstructed from source, not captured from the wire.

LIMEWIRE_LEAF = (
    ("User-Agent", "LimeWire/5.5.16"),
    ("X-Requeries", "false"),
    ("X-Query-Routing", "0.2"),
    ("X-Ultrapeer", "False"),
    ("X-Max-TTL", "3"),
    ("X-Dynamic-Querying", "0.1"),
    ("X-Version", "5.5.16"),
    ("X-Locale-Pref", "en"),
    ("GGEP", "0.5"),
    ("Vendor-Message", "0.2"),
    ("X-Ext-Probes", "0.1"),
    ("Pong-Caching", "0.1"),
    ("X-Guess", "0.1"),
    ("Listen-IP", "127.0.0.1:6348"),
    ("Remote-IP", "127.0.0.1"),
)

GTK_GNUTELLA_LEAF = (
    ("User-Agent", "gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)"),
    ("Pong-Caching", "0.1"),
    ("Bye-Packet", "0.1"),
    ("GGEP", "0.5"),
    ("Vendor-Message", "0.2"),
    ("Remote-IP", "127.0.0.1"),
    ("X-Token", "ignored-by-us"),
    ("X-Max-TTL", "4"),
    ("X-Query-Routing", "0.2"),
    ("X-Ultrapeer", "False"),
    ("X-Dynamic-Querying", "0.1"),
    ("X-Features", "tls/1.0, browse/1.0, sflag/0.1"),
)

GTK_GNUTELLA_ULTRAPEER = (
    ("User-Agent", "gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)"),
    ("Pong-Caching", "0.1"),
    ("Bye-Packet", "0.1"),
    ("GGEP", "0.5"),
    ("Vendor-Message", "0.2"),
    ("Remote-IP", "127.0.0.1"),
    ("X-Token", "ignored-by-us"),
    ("X-Max-TTL", "4"),
    ("X-Degree", "32"),
    ("X-Query-Routing", "0.2"),
    ("X-Ultrapeer-Query-Routing", "0.1"),
    ("X-Dynamic-Querying", "0.1"),
    ("X-Ultrapeer", "True"),
)

LIMEWIRE_ULTRAPEER = (
    ("User-Agent", "LimeWire/5.5.16"),
    ("X-Requeries", "false"),
    ("X-Query-Routing", "0.2"),
    ("X-Ultrapeer", "True"),
    ("X-Degree", "32"),
    ("X-Ultrapeer-Query-Routing", "0.1"),
    ("X-Max-TTL", "3"),
    ("X-Dynamic-Querying", "0.1"),
    ("X-Version", "5.5.16"),
    ("GGEP", "0.5"),
    ("Vendor-Message", "0.2"),
    ("X-Ext-Probes", "0.1"),
    ("Pong-Caching", "0.1"),
    ("X-Guess", "0.1"),
    ("Listen-IP", "127.0.0.1:6349"),
    ("Remote-IP", "127.0.0.1"),
)


def block(first_line: str, headers: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> bytes:
    return (first_line + "\r\n").encode() + Headers.from_pairs(headers).encode() + b"\r\n"


def parse_block(data: bytes) -> tuple[str, Headers, bytes]:
    """(first line, headers, rest) of a handshake block at the start of `data`."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    pairs = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        pairs.append((name.strip(), value.strip()))
    return lines[0], Headers.from_pairs(pairs), rest


def limewire_good_ultrapeer(headers: Headers) -> bool:
    """LimeWire 5's HandshakeResponse GOOD_ULTRAPEER, which its leaves require.

    X-Degree >= 15 (6 if absent), X-Ultrapeer-Query-Routing >= 0.1,
    X-Max-TTL < 5 (4 if absent) and X-Dynamic-Querying >= 0.1.
    """

    def version(name: str) -> float:
        try:
            return float(headers.get(name, "0"))
        except ValueError:
            return 0.0

    try:
        degree = int(headers.get("X-Degree", "6"))
        max_ttl = int(headers.get("X-Max-TTL", "4"))
    except ValueError:
        return False
    return (
        degree >= 15
        and version("X-Ultrapeer-Query-Routing") >= 0.1
        and max_ttl < 5
        and version("X-Dynamic-Querying") >= 0.1
    )


# -- waiting -------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition` holds, checking on every reactor turn (bounded)."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise TimeoutError("condition not met in time")
        await task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005


# -- raw peers -----------------------------------------------------------------


class RawPeer(protocol.Protocol):
    """Speaks literal handshake bytes, then frames (and inflates) what follows."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.ready: defer.Deferred[RawPeer] = defer.Deferred()
        self._waiting: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        self.stream_start: int | None = None
        self.inflate = False
        self._decompressor: Any = None
        self._framer = MessageFramer()
        self._consumed = 0
        self.messages: list[Message] = []
        self.deflate_out = False
        self._compressor: Any = None

    def connectionMade(self) -> None:
        if not self.ready.called:
            self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._frame()
        for entry in list(self._waiting):
            condition, waiting = entry
            if condition():
                self._waiting.remove(entry)
                waiting.callback(None)

    def _frame(self) -> None:
        if self.stream_start is None:
            return
        fresh = bytes(self.data[max(self._consumed, self.stream_start) :])
        self._consumed = len(self.data)
        if self.inflate:
            if self._decompressor is None:
                self._decompressor = zlib.decompressobj()
            fresh = self._decompressor.decompress(fresh)
        self.messages.extend(self._framer.feed(fresh))

    def start_stream(self, offset: int, *, inflate: bool = False, deflate: bool = False) -> None:
        """Messages start at byte `offset` of what we received."""
        self.stream_start = offset
        self.inflate = inflate
        self.deflate_out = deflate
        self._frame()

    def wait(self, condition: Callable[[], bool], timeout: float = 10.0) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if condition():
            waiting.callback(None)
        else:
            self._waiting.append((condition, waiting))
            waiting.addTimeout(timeout, reactor)
        return waiting

    def until(self, marker: bytes, timeout: float = 10.0) -> defer.Deferred[None]:
        return self.wait(lambda: marker in self.data, timeout)

    def message(self, predicate: Callable[[Message], bool]) -> defer.Deferred[None]:
        return self.wait(lambda: any(predicate(m) for m in self.messages))

    def send(self, *messages: Message) -> None:
        data = b"".join(m.encode() for m in messages)
        if self.deflate_out:
            if self._compressor is None:
                self._compressor = zlib.compressobj()
            data = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self.transport.write(data)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


async def raw_connect(address: tuple[str, int]) -> RawPeer:
    peer = RawPeer()
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, *address), peer)
    return peer


class RawListener(protocol.Factory):
    """A listening socket whose connections are `RawPeer`s (a servent we connect out to)."""

    def __init__(self) -> None:
        self.accepted: defer.DeferredQueue[RawPeer] = defer.DeferredQueue()
        self.count = 0

    def buildProtocol(self, addr: Any) -> RawPeer:
        peer = RawPeer()
        self.count += 1
        peer.ready.addCallback(self.accepted.put)
        return peer


# -- leaves with route tables ----------------------------------------------------


def qrp_messages(
    words: list[str], *, bits: int = 16, previous: QrpTable | None = None
) -> list[Message]:
    """RESET + PATCH (or PATCH alone, against `previous`) as a leaf sends its table:
    4-bit entries, infinity 7, deflated, cut in 1 KiB messages."""
    from gnurouter.protocol.qrp import build_update

    table = QrpTable.from_words(words, bits)
    old = format(previous.mask, f"0{previous.slots}b") if previous is not None else None
    bodies = build_update(old, format(table.mask, f"0{table.slots}b"), chunk=1024)
    assert all(
        b.compressor == QRP_COMPRESSOR_DEFLATE for b in bodies if isinstance(b, RouteTablePatch)
    )
    return [Message.from_body(new_guid(), 1, 0, body) for body in bodies]


def is_reset(message: Message) -> bool:
    return message.type == 0x30 and isinstance(message.body(), RouteTableReset)


async def leaf(
    router: RouterService,
    words: list[str] | None = None,
    headers: tuple[tuple[str, str], ...] = LIMEWIRE_LEAF,
    **kwargs: Any,
) -> ServentProtocol:
    """A leaf joined to `router`; with `words`, its QRP table is installed before return."""
    before = {p.id for p in router.peers.established()}
    servent = await connect_servent(reactor, *router.listening_address(), headers=headers, **kwargs)
    await wait_for(router, lambda: len({p.id for p in router.peers.established()} - before) >= 1)
    [peer] = [p for p in router.peers.established() if p.id not in before]
    servent.router_peer_id = peer.id  # type: ignore[attr-defined]
    if words is not None:
        servent.send(*qrp_messages(words))

        def installed() -> bool:
            info = router.routing.peer_info(peer.id)
            return info is not None and info.table is not None

        await until(installed)
    return servent


def query(
    criteria: str, ttl: int = 4, hops: int = 0, flags: int = 0x8000, extensions: bytes = b""
) -> Message:
    return Message.from_body(new_guid(), ttl, hops, Query(flags, criteria, extensions))


def vendor(vendor_code: bytes, selector: int, version: int, data: bytes) -> Message:
    return Message.from_body(bytes(16), 1, 0, VendorMessage(vendor_code, selector, version, data))
