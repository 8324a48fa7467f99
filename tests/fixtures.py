"""What many test modules share: hand-built messages, peers and routers, and ways to wait.

* messages: `query`, `servent_query`, `queries`, `ping`, `query_hit`, `qrp_messages`, `vendor`;
* routing decisions without sockets: `routing_router`, `ManualClock`, `OWN_PONG`, `targets`;
* stages by hand: `ManualExecutor`, `ImmediateExecutor`, `NoLink`, `handshaking_peer`;
* routers on loopback (started by conftest's `start_router` fixture) and servents:
  `join`, `joined`, `honest_pair`, `exchange`, `answer`, `local_address`, `handler_errors`;
* waiting without sleeping: `wait_for`, `at_least_established`, `until`, `delivered`,
  `DecisionWatch`, `Conditions`;
* handshakes byte for byte: the header sets of real servents, `block`, `parse_block`,
  `RawPeer`, `raw_connect`, `shake_hands`, `RawListener`, `Listening`;
* a router in process on a manual clock with in-memory transports: `InProcessRouter`.

Pytest fixtures live in conftest.py; test modules import everything else from here.
"""

from __future__ import annotations

import itertools
import os
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gnurouter.config import RouterConfig
from gnurouter.edge.network import GnutellaWire
from gnurouter.edge.servent import ServentProtocol, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.mesh.peers import Peer
from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.handshake import Headers, Role
from gnurouter.protocol.messages import (
    QRP_COMPRESSOR_DEFLATE,
    QUERY_F_MARK,
    Bye,
    Message,
    MessageType,
    Ping,
    Pong,
    Query,
    QueryHit,
    QueryHitResult,
    RouteTablePatch,
    VendorMessage,
    new_guid,
)
from gnurouter.protocol.qrp import QrpTable, build_update
from gnurouter.routing.decisions import Decision, RoutingRules
from gnurouter.routing.router import Router
from gnurouter.stages.events import MessageArrived
from gnurouter.stages.router import RouterHandler

#: The checkout's root (benchmarks/, examples/, var/ hang off it).
ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"

HeaderPairs = Sequence[tuple[str, str]]


def require(condition: bool, what: str) -> None:
    """Skip locally when a system dependency is missing, but fail loudly in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is missing")
    pytest.skip(f"{what} is not available")


# -- hand-built messages -------------------------------------------------------------


def query(
    criteria: str = "ogg",
    ttl: int = 3,
    hops: int = 0,
    *,
    flags: int = 0,
    guid: bytes | None = None,
    extensions: bytes = b"",
) -> Message:
    return Message.from_body(guid or new_guid(), ttl, hops, Query(flags, criteria, extensions))


def servent_query(criteria: str, ttl: int = 4, hops: int = 0) -> Message:
    """A query as LimeWire and gtk-gnutella send one: new-format flags, TTL 4."""
    return query(criteria, ttl, hops, flags=QUERY_F_MARK)


def queries(count: int, tag: str, **kwargs: Any) -> list[Message]:
    """`count` queries for "`tag` 0", "`tag` 1", ..."""
    return [query(f"{tag} {index}", **kwargs) for index in range(count)]


def ping(ttl: int = 1, hops: int = 0) -> Message:
    return Message.from_body(new_guid(), ttl, hops, Ping())


def query_hit(
    guid: bytes,
    servent_id: bytes = b"S" * 16,
    *,
    ttl: int = 7,
    ip: str = "10.0.0.9",
    speed: int = 100,
    index: int = 1,
    size: int = 10,
    name: str = "a.ogg",
) -> Message:
    """A hit with one result, answering the query `guid`."""
    result = QueryHitResult(index=index, size=size, name=name)
    body = QueryHit(port=6346, ip=ip, speed=speed, results=(result,), servent_id=servent_id)
    return Message.from_body(guid, ttl, 0, body)


def qrp_messages(
    words: list[str], *, bits: int = 16, previous: QrpTable | None = None, chunk: int = 1024
) -> list[Message]:
    """RESET + PATCH (or PATCH alone, against `previous`) as a leaf sends its table:
    4-bit entries, infinity 7, deflated, cut in `chunk`-byte messages."""
    table = QrpTable.from_words(words, bits)
    old = previous.resized_bits(bits) if previous is not None else None
    bodies = build_update(old, table.resized_bits(bits), chunk=chunk)
    assert all(
        b.compressor == QRP_COMPRESSOR_DEFLATE for b in bodies if isinstance(b, RouteTablePatch)
    )
    return [Message.from_body(new_guid(), 1, 0, body) for body in bodies]


def vendor(vendor_code: bytes, selector: int, version: int, data: bytes) -> Message:
    return Message.from_body(bytes(16), 1, 0, VendorMessage(vendor_code, selector, version, data))


# -- routing decisions, no sockets ---------------------------------------------------------

OWN_PONG = Pong(port=6346, ip="127.0.0.1", files=0, kbytes=0)


class ManualClock:
    """A clock that moves only when the test sets `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def routing_router(
    clock: Callable[[], float] | None = None, *, peers: Iterable[int] = (), **rules: Any
) -> Router:
    """A `Router` answering pings with `OWN_PONG`, with `peers` joined as ultrapeers."""
    router = Router(RoutingRules(**rules), lambda: OWN_PONG, clock or time.monotonic)
    for peer in peers:
        router.peer_joined(peer)
    return router


def targets(decision: Decision) -> set[int]:
    """Every peer a decision sends anything to."""
    return {peer for _, peers in decision.sends for peer in peers}


# -- stages by hand ----------------------------------------------------------------------------


class ManualExecutor:
    """Runs scheduled work only when the test says so, to freeze a stage mid-load."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.pending.append(fn)

    def call_in_thread(self, fn: Callable[[], None]) -> None:
        self.pending.append(fn)

    def run(self) -> None:
        while self.pending:
            self.pending.pop(0)()


class ImmediateExecutor:
    """Runs scheduled work at once, on the caller's thread."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        fn()

    def call_in_thread(self, fn: Callable[[], None]) -> None:
        fn()


class NoLink:
    """A `PeerLink` that goes nowhere and never clogs."""

    write_paused = False

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def write_paused_for(self) -> float:
        return 0.0


def handshaking_peer(host: str, port: int = 40000) -> Peer:
    """An incoming peer still shaking hands, on a link that goes nowhere."""
    return Peer((host, port), NoLink(), PeerConnection(Role.ACCEPTOR), outgoing=False)


# -- waiting without sleeping ----------------------------------------------------------------


class Conditions:
    """Deferreds that fire once their condition holds, re-checked on `check()`."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []

    def wait(self, condition: Callable[[], bool], timeout: float = 10.0) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if condition():
            waiting.callback(None)
        else:
            self._waiting.append((condition, waiting))
            waiting.addTimeout(timeout, reactor)
        return waiting

    def check(self) -> None:
        for entry in list(self._waiting):
            condition, waiting = entry
            if waiting.called:  # timed out
                self._waiting.remove(entry)
            elif condition():
                self._waiting.remove(entry)
                waiting.callback(None)


class DecisionWatch:
    """Turns a router's routing decisions into awaitable conditions (no sleeping)."""

    def __init__(self, *routers: RouterService) -> None:
        self.routers = routers
        self.seen: list[tuple[MessageArrived, Decision]] = []
        self._conditions = Conditions()
        for router in routers:
            handler = router.stages["router"].handler
            assert isinstance(handler, RouterHandler)
            handler.observers.append(self._observe)

    def _observe(self, event: MessageArrived, decision: Decision) -> None:
        # May run on a router worker thread: hop to the reactor thread.
        reactor.callFromThread(self._record, event, decision)

    def _record(self, event: MessageArrived, decision: Decision) -> None:
        self.seen.append((event, decision))
        self._conditions.check()

    def for_guid(self, guid: bytes) -> list[tuple[MessageArrived, Decision]]:
        return [(e, d) for e, d in self.seen if e.message.guid == guid]

    def wait_until(
        self, condition: Callable[[], bool], timeout: float = 10.0
    ) -> defer.Deferred[None]:
        return self._conditions.wait(condition, timeout)


def wait_for(
    router: RouterService, condition: Callable[[], bool], timeout: float = 10.0
) -> defer.Deferred[None]:
    """A Deferred that fires once `condition` holds, re-checked whenever a peer changes state."""
    done: defer.Deferred[None] = defer.Deferred()

    def check(_peer: object = None) -> None:
        if not done.called and condition():
            router.peers.listeners.remove(check)
            done.callback(None)

    router.peers.listeners.append(check)
    check()
    if not done.called:
        done.addTimeout(timeout, reactor)
    return done


def at_least_established(
    router: RouterService, count: int, timeout: float = 10.0
) -> defer.Deferred[None]:
    """Fires once `router` has `count` or more established neighbours."""
    return wait_for(router, lambda: len(router.peers.established()) >= count, timeout)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition` holds, checking on every reactor turn (bounded)."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise TimeoutError("condition not met in time")
        await task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005


async def delivered(servent: ServentProtocol, message: Message, timeout: float = 10) -> Message:
    """The copy of `message` (by GUID) that reaches `servent`: whatever the router
    routed to it before has arrived too."""
    return await servent.next_message(reactor, lambda m: m.guid == message.guid, timeout)


# -- servents on a router on loopback ------------------------------------------------------------


async def joined(router: RouterService, **kwargs: Any) -> tuple[ServentProtocol, list[Peer]]:
    """Connect a servent (`connect_servent` options) and wait until the router, too,
    counts it as established; the servent and the router's new peers."""
    before = {peer.id for peer in router.peers.established()}
    servent = await connect_servent(reactor, *router.listening_address(), **kwargs)
    await wait_for(router, lambda: len({p.id for p in router.peers.established()} - before) >= 1)
    return servent, [p for p in router.peers.established() if p.id not in before]


async def join(router: RouterService, **kwargs: Any) -> ServentProtocol:
    """Connect a servent and wait until the router, too, counts it as established."""
    servent, _ = await joined(router, **kwargs)
    return servent


async def exchange(
    sender: ServentProtocol, answerer: ServentProtocol, count: int, tag: str
) -> None:
    """`count` queries from `sender`, every one answered by `answerer`: all must arrive, once."""
    requests = queries(count, tag, ttl=4)
    wanted = {request.guid for request in requests}
    sender.send(*requests)
    arrived: set[bytes] = set()
    while arrived != wanted:
        message = await answerer.next_message(
            reactor, lambda m: m.type == MessageType.QUERY and m.guid in wanted
        )
        assert message.guid not in arrived, "an honest query arrived twice"
        arrived.add(message.guid)
    await answer(sender, answerer, requests)


async def answer(
    sender: ServentProtocol, answerer: ServentProtocol, requests: list[Message]
) -> None:
    """`answerer` answers every one of `requests` with a hit; wait until all reach `sender`."""
    wanted = {request.guid for request in requests}
    answerer.send(*(query_hit(request.guid) for request in requests))
    answered: set[bytes] = set()
    while answered != wanted:
        message = await sender.next_message(
            reactor, lambda m: m.type == MessageType.QUERY_HIT and m.guid in wanted
        )
        answered.add(message.guid)


async def honest_pair(router: RouterService) -> tuple[ServentProtocol, ServentProtocol]:
    """Two servents on `router` that have exchanged a few queries and hits."""
    sender = await join(router)
    answerer = await join(router)
    await exchange(sender, answerer, 5, "warm-up")
    return sender, answerer


def local_address(servent: ServentProtocol) -> tuple[str, int]:
    """The servent's end of its link (the router's label for it is "host:port")."""
    address = cast(Any, servent.transport).getHost()  # zope interfaces are opaque to mypy
    return address.host, address.port


def handler_errors(router: RouterService) -> dict[str, int]:
    """Handler errors by stage, for the stages that had any."""
    return {
        name: stage.counters.handler_errors
        for name, stage in router.stages.items()
        if stage.counters.handler_errors
    }


# -- handshakes byte for byte ---------------------------------------------------------------
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

#: What gtk-gnutella's leaves and ultrapeers both begin with.
GTK_GNUTELLA = (
    ("User-Agent", "gtk-gnutella/1.2.2 (2022-02-25; GTK2; Linux x86_64)"),
    ("Pong-Caching", "0.1"),
    ("Bye-Packet", "0.1"),
    ("GGEP", "0.5"),
    ("Vendor-Message", "0.2"),
    ("Remote-IP", "127.0.0.1"),
    ("X-Token", "ignored-by-us"),
    ("X-Max-TTL", "4"),
)

GTK_GNUTELLA_LEAF = (
    *GTK_GNUTELLA,
    ("X-Query-Routing", "0.2"),
    ("X-Ultrapeer", "False"),
    ("X-Dynamic-Querying", "0.1"),
    ("X-Features", "tls/1.0, browse/1.0, sflag/0.1"),
)

GTK_GNUTELLA_ULTRAPEER = (
    *GTK_GNUTELLA,
    ("X-Degree", "32"),
    ("X-Query-Routing", "0.2"),
    ("X-Ultrapeer-Query-Routing", "0.1"),
    ("X-Dynamic-Querying", "0.1"),
    ("X-Ultrapeer", "True"),
)


def block(first_line: str, headers: HeaderPairs) -> bytes:
    """One handshake block: its first line, its headers, the blank line."""
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


class RawPeer(protocol.Protocol):
    """Speaks literal handshake bytes, then frames (and inflates) what follows."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.ready: defer.Deferred[RawPeer] = defer.Deferred()
        self._conditions = Conditions()
        self.stream_start: int | None = None
        self.inflate = False
        self._decompressor: Any = None
        self._framer = MessageFramer()
        self._consumed = 0
        self.messages: list[Message] = []
        self.deflate_out = False
        self._compressor: Any = None

    @property
    def _wire(self) -> Any:
        # A TCP transport; Twisted's zope interfaces are opaque to mypy.
        return self.transport

    def connectionMade(self) -> None:
        if not self.ready.called:
            self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._frame()
        self._conditions.check()

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
        return self._conditions.wait(condition, timeout)

    def until(self, marker: bytes, timeout: float = 10.0) -> defer.Deferred[None]:
        return self.wait(lambda: marker in self.data, timeout)

    def more_than(self, length: int, timeout: float = 10.0) -> defer.Deferred[None]:
        return self.wait(lambda: len(self.data) > length, timeout)

    def message(self, predicate: Callable[[Message], bool]) -> defer.Deferred[None]:
        return self.wait(lambda: any(predicate(m) for m in self.messages))

    def byes(self) -> list[Bye]:
        """The Byes among the messages after the first handshake block, framed afresh."""
        stream = bytes(self.data).split(b"\r\n\r\n", 1)[1]
        found = []
        for message in MessageFramer().feed(stream):
            if message.type == MessageType.BYE:
                body = message.body()
                assert isinstance(body, Bye)
                found.append(body)
        return found

    def send(self, *messages: Message) -> None:
        data = b"".join(m.encode() for m in messages)
        if self.deflate_out:
            if self._compressor is None:
                self._compressor = zlib.compressobj()
            data = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self._wire.write(data)

    def write(self, data: bytes) -> None:
        self._wire.write(data)

    def abort(self) -> None:
        self._wire.abortConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.lost.called:
            self.lost.callback(None)


async def raw_connect(address: tuple[str, int], *, source: str | None = None) -> RawPeer:
    """A `RawPeer` connected to `address` (from the local address `source`, if given)."""
    peer = RawPeer()
    bind = (source, 0) if source is not None else None
    endpoint = endpoints.TCP4ClientEndpoint(reactor, *address, bindAddress=bind)
    await endpoints.connectProtocol(endpoint, peer)
    return peer


async def shake_hands(
    peer: RawPeer, headers: HeaderPairs, final: HeaderPairs | None = ()
) -> tuple[str, Headers]:
    """Send a 0.6 CONNECT with `headers` and read the reply: its status line and headers.

    When it is a 200 and `final` is not None, answer 200 OK with `final` and
    frame what follows (inflated if the router said so; deflated if `final` does).
    """
    peer.write(block("GNUTELLA CONNECT/0.6", headers))
    await peer.until(b"\r\n\r\n")
    status, reply, _ = parse_block(bytes(peer.data))
    if final is not None and status.startswith("GNUTELLA/0.6 200"):
        peer.write(block("GNUTELLA/0.6 200 OK", final))
        peer.start_stream(
            len(bytes(peer.data).partition(b"\r\n\r\n")[0]) + 4,
            inflate=reply.get("Content-Encoding") == "deflate",
            deflate=("Content-Encoding", "deflate") in final,
        )
    return status, reply


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


class Listening:
    """`factory` listening on a free port of 127.0.0.1 until `stop()`."""

    def __init__(self, factory: protocol.Factory[Any]) -> None:
        # Twisted's zope interfaces are opaque to mypy (it takes listenTCP's port for self).
        self._port: Any = cast(Any, reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.address: tuple[str, int] = ("127.0.0.1", self._port.getHost().port)

    async def stop(self) -> None:
        await self._port.stopListening()


# -- a router in process ----------------------------------------------------------------------


class ManualReactor(task.Clock):
    """A clock the stages can schedule on; `drain()` runs whatever is due now."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, f, *args, **kwargs)

    def due(self) -> list[Any]:
        return list(self.getDelayedCalls())

    def drain(self) -> None:
        # Only what is due: a closing wire's abort timer (10 s ahead) stays pending.
        while any(call.getTime() <= self.seconds() for call in self.due()):
            self.advance(0)


class MemoryTransport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


@dataclass
class Link:
    """One in-memory connection to an `InProcessRouter`."""

    wire: GnutellaWire
    transport: MemoryTransport
    taken: int = 0  # bytes of transport.value() already read

    def fresh(self) -> bytes:
        """What the router wrote since the last call."""
        data = self.transport.value()[self.taken :]
        self.taken += len(data)
        return data


class InProcessRouter:
    """A `RouterService` on a manual clock with in-memory transports (as
    benchmarks/pipeline_cpu.py runs one): no socket, no thread, deterministic."""

    def __init__(self, config: RouterConfig) -> None:
        self.reactor = ManualReactor()
        self.router = RouterService(config, reactor=self.reactor)
        self.router.executor.start()
        self._ports = itertools.count(20_000)

    def stop(self) -> None:
        self.router.executor.stop()

    def open(self, *, outgoing: bool, host: str = "127.0.0.2") -> Link:
        address = IPv4Address("TCP", host, next(self._ports))
        wire = GnutellaWire(self.router.factory, outgoing=outgoing)
        transport = MemoryTransport(peerAddress=address)
        wire.makeConnection(transport)
        self.reactor.drain()
        return Link(wire, transport)

    def send(self, link: Link, data: bytes) -> bytes:
        """Deliver `data` as the socket would; return what the router wrote back."""
        link.wire.dataReceived(data)
        self.reactor.drain()
        return link.fresh()

    def close(self, link: Link) -> None:
        link.wire.connectionLost(Failure(ConnectionDone()))
        self.reactor.drain()

    def handler_errors(self) -> dict[str, int]:
        return handler_errors(self.router)

    def cached(self) -> list[tuple[str, int]]:
        return list(self.router.hosts._hosts)

    def rejected(self, name: str) -> int:
        """Peers refused for a bad value of header `name`."""
        return self.router.peers.rejected.get(f"bad-header:{name.lower()}", 0)
