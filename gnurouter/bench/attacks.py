"""Hostile peers, and an honest-traffic probe to see what they cost: for tests and the benchmark.

Every attack is an ``async`` function ``attack(reactor, host, port, **params)``
that runs on the Twisted reactor it is given, against a router listening on
``host:port`` (loopback only), and returns a JSON-ready dict: how many
attacking links there were, how many the router cut off and how fast, which
Bye codes arrived before the close, and attack-specific numbers.  Every loop
is bounded both in count and in time, so an attack ends even against a router
that never defends itself (then ``not_cut`` says so).

``tests/security/test_hostile.py`` runs them against an in-process router on the
test's reactor with small counts; ``benchmarks/attacks.py`` runs each one in a
process of its own (``python -m gnurouter.bench.attacks NAME --target
HOST:PORT``) against a router process, while an `HonestProbe` in the driver
measures what honest peers go through.

The attacks (`ATTACKS` maps the names to the functions):

``garbage``      links that finish the 0.6 handshake, then send bytes that
                 cannot be framed; some wait for the router's Bye, some
                 ("hit and run") close at once.
``bad-headers``  handshakes whose Listen-IP / X-My-Address / X-Try-Ultrapeers /
                 X-Try / Node / X-Degree / X-Max-TTL / Remote-IP / User-Agent
                 values are hostile ("127.0.0.1:²", bare CR, control bytes,
                 10 KB hosts); after each, a new honest servent must get 200
                 with a well-formed X-Try-Ultrapeers.
``slowloris``    sockets that connect and say nothing, and sockets that send
                 their handshake one byte a second, held open while a new
                 honest servent's time to be accepted is measured.
``deflate``      a deflate link carrying zeros (23 zero bytes frame as a
                 TTL-0 ping), each write inflating to just under the router's
                 1 MiB per-read cap.
``qrp``          a leaf sending RESET (2**24 slots) and one small deflated
                 PATCH that inflates to the whole table, over and over.
``ping-flood``   pings with fresh GUIDs, as fast as the socket takes them.
``non-reader``   an ultrapeer link with a 4 KB receive window that never reads
                 and pings every few seconds, while a feeder's queries are
                 flooded to it.
``bye-segment``  the initiator's final ``GNUTELLA/0.6 200 OK`` and unframeable
                 bytes in one TCP segment: the router must still say Bye.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import socket
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any

from twisted.internet import defer, endpoints, protocol, task, threads
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from gnurouter.edge.servent import ServentProtocol
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.messages import (
    Bye,
    Message,
    MessageType,
    Ping,
    Query,
    QueryHit,
    QueryHitResult,
    RouteTablePatch,
    RouteTableReset,
    new_guid,
)

HOST = "127.0.0.1"
ATTACKER_AGENT = "gnurouter-attacker/0.1"
NON_READER_AGENT = "gnurouter-non-reader/0.1"
FINAL_OK = b"GNUTELLA/0.6 200 OK\r\n\r\n"
HEADER_LENGTH = 23

#: Bytes no framer can accept, each a different reason: a header with TTL +
#: hops of 510; a ping announcing a 4 GiB payload; a ping announcing 64 KiB.
GARBAGE = (
    b"\xff" * 64,
    b"\x00" * 16 + b"\x00\x07\x00" + b"\xff\xff\xff\xff" + b"junk" * 8,
    b"\x11" * 16 + b"\x00\x07\x00" + struct.pack("<I", 0xFFFF) + b"\x00" * 32,
)

# -- small tools -----------------------------------------------------------------


class Flag:
    """A one-shot event many can wait for, each with its own timeout (no shared Deferred)."""

    def __init__(self) -> None:
        self.is_set = False
        self.at: float | None = None
        self._waiters: list[defer.Deferred[bool]] = []

    def set(self) -> None:
        if self.is_set:
            return
        self.is_set = True
        self.at = time.monotonic()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(True)

    def wait(self, reactor: Any, timeout: float) -> defer.Deferred[bool]:
        """Fires True once set, or False after `timeout` seconds."""
        waiting: defer.Deferred[bool] = defer.Deferred()
        if self.is_set:
            waiting.callback(True)
            return waiting
        self._waiters.append(waiting)

        def expire() -> None:
            if not waiting.called:
                self._waiters.remove(waiting)
                waiting.callback(False)

        call = reactor.callLater(timeout, expire)
        waiting.addBoth(lambda result: (call.active() and call.cancel(), result)[1])
        return waiting


def sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    """Pacing an attack (never a substitute for awaiting a condition)."""
    return task.deferLater(reactor, seconds, lambda: None)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(ordered[len(ordered) // 2], 4),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 4),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


def header_block(first_line: str, headers: Iterable[tuple[str, str] | bytes]) -> bytes:
    """A handshake block written as given: values may carry any byte a hostile peer likes.

    A `bytes` item is one raw line (continuation lines included) without its final CRLF.
    """
    lines = [first_line.encode()]
    for item in headers:
        if isinstance(item, bytes):
            lines.append(item)
        else:
            name, value = item
            lines.append(f"{name}: {value}".encode("utf-8", "surrogateescape"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def connect_block(
    extra: Iterable[tuple[str, str] | bytes] = (),
    *,
    ultrapeer: bool | None = True,
    agent: str = ATTACKER_AGENT,
) -> bytes:
    headers: list[tuple[str, str] | bytes] = [("User-Agent", agent)]
    if ultrapeer is not None:
        headers.append(("X-Ultrapeer", "True" if ultrapeer else "False"))
    headers.append(("Vendor-Message", "0.2"))  # the router greets us: we know it took the 200
    headers.extend(extra)
    return header_block("GNUTELLA CONNECT/0.6", headers)


def parse_block(data: bytes) -> tuple[int | None, dict[str, str], int]:
    """(status, headers, end offset) of the first handshake block in `data`."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None, {}, -1
    lines = data[:end].decode("latin-1").split("\r\n")
    status: int | None = None
    parts = lines[0].split(" ", 2)
    if len(parts) >= 2 and parts[1].isdigit():
        status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers, end + 4


def well_formed_endpoint(entry: str) -> bool:
    """ "1.2.3.4:6346" or "[v6]:6346": an IP literal and a port 1..65535, nothing else."""
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) <= 65535:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host.isascii() or any(ch.isspace() or ord(ch) < 0x20 or ch == "\x7f" for ch in host):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def try_header_problems(value: str | None, *, required: bool = True) -> list[str]:
    """What is wrong with an X-Try-Ultrapeers value we were given (empty list: nothing)."""
    if value is None:
        return ["no X-Try-Ultrapeers header"] if required else []
    problems = []
    if len(value) > 4096:
        problems.append(f"X-Try-Ultrapeers is {len(value)} characters long")
    entries = [item.strip() for item in value.split(",")]
    if required and not any(entries):
        problems.append("X-Try-Ultrapeers is empty")
    for entry in entries:
        if entry and not well_formed_endpoint(entry):
            problems.append(f"malformed X-Try-Ultrapeers entry {entry[:80]!r}")
    return problems


def tcp_state(sock: socket.socket) -> int | None:
    """Linux tcpi_state of a socket (1 established, 7 closed, 8 close-wait), None if unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return None
    return info[0] if info else None


TCP_ESTABLISHED = 1


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (Linux VmRSS), 0 if unknown."""
    return _status_kib(pid, "VmRSS:") * 1024


def peak_rss_bytes(pid: int | None = None) -> int:
    """Peak resident set size since start or the last `reset_peak_rss` (VmHWM)."""
    return _status_kib(pid, "VmHWM:") * 1024


def reset_peak_rss(pid: int | None = None) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        with open(f"/proc/{pid or 'self'}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kib(pid: int | None, field: str) -> int:
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid or 'self'}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def bye_of(message: Message) -> Bye | None:
    """The Bye a message carries; None for any other message or an undecodable Bye."""
    if message.type != MessageType.BYE:
        return None
    try:
        body = message.body()
    except ProtocolError:
        return None
    return body if isinstance(body, Bye) else None


# -- a raw hostile client ----------------------------------------------------------


@implementer(IPushProducer)
class RawClient(protocol.Protocol):
    """A socket that speaks raw bytes.  It keeps the router's first handshake block,
    frames what the router sends after it (counting types, keeping Byes) and
    notes when the connection ends; it registers as its transport's producer
    so a flooder can write exactly as fast as the socket takes it."""

    MAX_KEPT = 64 * 1024

    def __init__(self) -> None:
        self.head = bytearray()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.replied = Flag()
        self.greeted = Flag()  # first message after the handshake
        self.lost = Flag()
        self.bye_flag = Flag()
        self.lost_reason = ""
        self.opened_at = 0.0
        self.byes: list[tuple[int, str]] = []
        self.messages_in: dict[int, int] = {}
        self.stream_bytes = 0
        self.unframeable = False
        self._framer = MessageFramer()
        self.paused = False
        self.resumed = Flag()

    @property
    def closed_at(self) -> float | None:
        return self.lost.at

    def connectionMade(self) -> None:
        self.opened_at = time.monotonic()
        transport: Any = self.transport
        transport.setTcpNoDelay(True)
        transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if self.status is None and not self.replied.is_set:
            self.head += data
            status, headers, end = parse_block(bytes(self.head))
            if end < 0:
                if len(self.head) > self.MAX_KEPT:
                    self.replied.set()
                return
            self.status, self.headers = status, headers
            data = bytes(self.head[end:])
            del self.head[end:]
            self.replied.set()
        self._stream(data)

    def _stream(self, data: bytes) -> None:
        if not data or self.unframeable:
            return
        self.stream_bytes += len(data)
        try:
            messages = self._framer.feed(data)
        except ProtocolError:
            self.unframeable = True
            return
        for message in messages:
            self.messages_in[message.type] = self.messages_in.get(message.type, 0) + 1
            bye = bye_of(message)
            if bye is not None:
                self.byes.append((bye.code, bye.reason[:200]))
                self.bye_flag.set()
        if messages:
            self.greeted.set()
        if self._framer.failed is not None:
            self.unframeable = True

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost_reason = reason.getErrorMessage()
        self.lost.set()
        self.replied.set()
        self.resumed.set()

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self) -> None:
        self.paused = True
        self.resumed = Flag()

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumed.set()

    def stopProducing(self) -> None:
        self.paused = True

    def write(self, data: bytes) -> None:
        if not self.lost.is_set and self.transport is not None:
            transport: Any = self.transport
            transport.write(data)

    def close(self) -> None:
        if not self.lost.is_set and self.transport is not None:
            transport: Any = self.transport
            transport.unregisterProducer()
            transport.loseConnection()

    def abort(self) -> None:
        if not self.lost.is_set and self.transport is not None:
            transport: Any = self.transport
            transport.abortConnection()


async def open_raw(reactor: Any, host: str, port: int, timeout: float = 5.0) -> RawClient:
    client = RawClient()
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    await endpoints.connectProtocol(endpoint, client)  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated
    return client


async def raw_handshake(
    reactor: Any,
    host: str,
    port: int,
    extra: Iterable[tuple[str, str] | bytes] = (),
    *,
    ultrapeer: bool | None = True,
    timeout: float = 5.0,
) -> RawClient:
    """Connect and send our CONNECT block; `status` is the router's answer (None: no answer)."""
    client = await open_raw(reactor, host, port, timeout)
    client.write(connect_block(extra, ultrapeer=ultrapeer))
    await client.replied.wait(reactor, timeout)
    return client


class Tally:
    """The common part of every attack's result."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.started = time.monotonic()
        self.attackers = 0
        self.cut_seconds: list[float] = []
        self.not_cut = 0
        self.byes: dict[str, int] = {}
        self.bye_before_close = 0
        self.refused: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.extra: dict[str, Any] = {}

    def error(self, what: str) -> None:
        key = what[:120]
        if key in self.errors or len(self.errors) < 20:
            self.errors[key] = self.errors.get(key, 0) + 1

    def refusal(self, status: int | None) -> None:
        key = str(status) if status is not None else "no-answer"
        self.refused[key] = self.refused.get(key, 0) + 1

    def cut(self, seconds: float, client: RawClient | ServentProtocol | None = None) -> None:
        self.cut_seconds.append(seconds)
        codes = _bye_codes(client)
        for code in codes:
            self.byes[str(code)] = self.byes.get(str(code), 0) + 1
        if codes:
            self.bye_before_close += 1

    def result(self) -> dict[str, Any]:
        return {
            "attack": self.name,
            "params": self.params,
            "seconds": round(time.monotonic() - self.started, 3),
            "attackers": self.attackers,
            "cut": len(self.cut_seconds),
            "not_cut": self.not_cut,
            "cut_seconds": summary(self.cut_seconds),
            "byes": self.byes,
            "bye_before_close": self.bye_before_close,
            "refused": self.refused,
            "errors": self.errors,
            **self.extra,
        }


def _bye_codes(client: RawClient | ServentProtocol | None) -> list[int]:
    if isinstance(client, RawClient):
        return [code for code, _ in client.byes]
    if isinstance(client, ServentProtocol):
        return [bye.code for bye in map(bye_of, client.received) if bye is not None]
    return []


async def tallied_handshake(tally: Tally, reactor: Any, host: str, port: int) -> RawClient | None:
    """`raw_handshake`, or None with the failure counted as a connect error."""
    try:
        return await raw_handshake(reactor, host, port, timeout=5.0)
    except Exception as error:
        tally.error(f"connect: {type(error).__name__}: {error}")
        return None


async def tallied_connect(
    tally: Tally,
    reactor: Any,
    host: str,
    port: int,
    servent: ServentProtocol,
    *,
    what: str = "handshake",
) -> bool:
    """`connect_attacker`, or False with the failure counted as a `what` error."""
    try:
        await connect_attacker(reactor, host, port, servent)
    except Exception as error:
        tally.error(f"{what}: {type(error).__name__}: {error}")
        return False
    return True


async def cut_within(
    tally: Tally, reactor: Any, client: RawClient, sent: float, wait_cut: float
) -> None:
    """A cut if the router closes `client` within `wait_cut` s, else one more not cut."""
    if await client.lost.wait(reactor, wait_cut):
        tally.cut((client.closed_at or sent) - sent, client)
    else:
        tally.not_cut += 1


async def cut_or_abort(
    tally: Tally,
    reactor: Any,
    started: float,
    lost: Flag,
    client: RawClient | ServentProtocol,
    abort: Callable[[], None],
) -> None:
    """The end of a one-link attack: a cut if the router closed the link, else abort it."""
    if lost.is_set and lost.at is not None:
        tally.cut(lost.at - started, client)
    else:
        tally.not_cut = 1
        abort()
        await lost.wait(reactor, 5.0)


async def bounded_gather(
    count: int, concurrency: int, run: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """run(0..count-1), at most `concurrency` at once."""
    semaphore = defer.DeferredSemaphore(max(1, concurrency))

    def start(index: int) -> defer.Deferred[None]:
        return defer.ensureDeferred(run(index))

    waiting = [semaphore.run(start, i) for i in range(count)]
    await defer.DeferredList(waiting, consumeErrors=True)


# -- 1. garbage after the handshake ------------------------------------------------


async def garbage_after_handshake(
    reactor: Any,
    host: str,
    port: int,
    *,
    connections: int = 300,
    concurrency: int = 20,
    hit_and_run_every: int = 2,
    wait_cut: float = 5.0,
    time_limit: float = 120.0,
) -> dict[str, Any]:
    """`connections` links (at most `concurrency` at a time) that complete the
    handshake, wait for the router's greeting, then send unframeable bytes.
    Every `hit_and_run_every`-th one closes right after its garbage (the
    router sees the bytes and the close together); the others wait up to
    `wait_cut` s for the router to close them."""
    tally = Tally("garbage", dict(locals_params(locals())))
    deadline = time.monotonic() + time_limit
    tally.extra["hit_and_run"] = 0

    async def one(index: int) -> None:
        if time.monotonic() > deadline:
            tally.error("time limit reached before this connection")
            return
        tally.attackers += 1
        client = await tallied_handshake(tally, reactor, host, port)
        if client is None:
            return
        try:
            if client.status != 200:
                tally.refusal(client.status)
                client.close()
                await client.lost.wait(reactor, 5.0)
                return
            client.write(FINAL_OK)
            await client.greeted.wait(reactor, 2.0)
            sent = time.monotonic()
            client.write(GARBAGE[index % len(GARBAGE)])
            if hit_and_run_every and index % hit_and_run_every == 0:
                tally.extra["hit_and_run"] += 1
                client.close()
                await client.lost.wait(reactor, 5.0)
                return
            await cut_within(tally, reactor, client, sent, wait_cut)
        finally:
            client.abort()

    await bounded_gather(connections, concurrency, one)
    return tally.result()


def locals_params(values: dict[str, Any]) -> dict[str, Any]:
    """The keyword parameters of an attack, for its result (no reactor, no host)."""
    return {
        key: value
        for key, value in values.items()
        if key not in ("reactor", "host", "port") and isinstance(value, int | float | str | bool)
    }


# -- 2. hostile header values ------------------------------------------------------

_LONG = "1" * 3000
_LONG_HOST_LINES = (  # one 10 KB host, written as continuation lines under the 4 KB line cap
    f"{_LONG}\r\n {_LONG}\r\n {_LONG}\r\n {'1' * 1000}:6346"
).encode()

#: (name, lines of our CONNECT block, lines of our final 200 block)
BAD_HEADER_CASES: list[tuple[str, list[bytes], list[bytes]]] = [
    ("listen-ip-superscript-port", [b"Listen-IP: 127.0.0.1:\xc2\xb2"], []),
    ("x-my-address-superscript-port", [b"X-My-Address: 127.0.0.1:\xc2\xb2"], []),
    (
        "listen-ip-fullwidth-digits",
        ["Listen-IP: \uff11\uff12\uff17.\uff10.\uff10.\uff11:\uff16\uff13\uff14\uff16".encode()],
        [],
    ),
    ("listen-ip-bare-cr", [b"Listen-IP: 10.1.0.1\r:6346"], []),
    ("listen-ip-control-bytes", [b"Listen-IP: 10.1.0.\x01\x7f\x1b[2J:6346"], []),
    ("listen-ip-nul", [b"Listen-IP: 10.1.0.2\x00:6346"], []),
    ("listen-ip-10kb-host", [b"Listen-IP: " + _LONG_HOST_LINES], []),
    ("x-my-address-10kb-host", [b"X-My-Address: " + _LONG_HOST_LINES], []),
    (
        "x-try-ultrapeers-bare-cr-and-nul",
        [b"X-Try-Ultrapeers: 10.1.0.3\rX-Evil: yes:6346, 10.1.0.4\x00:6346, 10.1.0.5:6346"],
        [],
    ),
    (
        "x-try-ultrapeers-superscript-ports",
        [
            "X-Try-Ultrapeers: 10.1.0.6:\u00b2,10.1.0.7:\uff16\uff13\uff14\uff16,"
            "10.1.0.8:99999999999999999999".encode()
        ],
        [],
    ),
    ("x-try-ultrapeers-10kb-host", [b"X-Try-Ultrapeers: " + _LONG_HOST_LINES], []),
    (
        "x-try-ultrapeers-in-final-200",
        [],
        [b"X-Try-Ultrapeers: 10.1.0.9\r:6346,\x1b]0;pwned\x07:6346," + _LONG_HOST_LINES],
    ),
    ("x-try-control-bytes", [b"X-Try: 10.1.0.10\x0b:6346, \x1b[31m:6346, 10.1.0.11\r:6346"], []),
    ("node-superscript-and-cr", [b"Node: 127.0.0.1:\xc2\xb2", b"Node: 10.1.0.12\r:6346"], []),
    (
        "x-degree-values",
        [b"X-Degree: \xc2\xb2", b"X-Degree: " + b"9" * 4000, b"X-Degree: -1"],
        [],
    ),
    ("x-max-ttl-values", [b"X-Max-TTL: \xc2\xb2", b"X-Max-TTL: 1e9", b"X-Max-TTL: -7"], []),
    (
        "remote-ip-control-and-long",
        [b"Remote-IP: \x00\x01\r\x7f", b"Remote-IP: " + _LONG_HOST_LINES],
        [],
    ),
    ("user-agent-control-and-long", [b"User-Agent: \x1b[2J\r\x00evil " + _LONG_HOST_LINES], []),
    (
        "invalid-utf8-everywhere",
        [b"Listen-IP: \xff\xfe\xfd:6346", b"X-Try-Ultrapeers: \xc0\xaf:1"],
        [],
    ),
]
BAD_HEADER_NAMES = [name for name, _, _ in BAD_HEADER_CASES]
#: A legitimate host the attack advertises first, so X-Try-Ultrapeers is never empty.
SEED_HOSTS = "1.2.3.4:6346,5.6.7.8:6347"


async def honest_accept(reactor: Any, host: str, port: int, timeout: float = 5.0) -> dict[str, Any]:
    """Connect a new honest servent: its time to be accepted, the status and X-Try-Ultrapeers."""
    started = time.monotonic()
    servent = ServentProtocol(keep_inbox=False)
    outcome: dict[str, Any] = {"accepted": False, "seconds": None, "status": None}
    try:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
        await endpoints.connectProtocol(endpoint, servent)  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated
        established = servent.established
        established.addTimeout(max(0.1, timeout - (time.monotonic() - started)), reactor)
        await established
        outcome["accepted"] = True
        outcome["status"] = 200
        outcome["seconds"] = round(time.monotonic() - started, 4)
    except Exception as error:
        outcome["error"] = f"{type(error).__name__}: {error}"[:200]
        if servent.refusal is not None:
            outcome["status"] = servent.refusal.status
    result = servent.connection.handshake.result
    theirs = None
    if result is not None:
        theirs = result.their_headers
    elif servent.refusal is not None:
        theirs = servent.refusal.headers
    if theirs is not None:
        outcome["x_try_ultrapeers"] = theirs.get("X-Try-Ultrapeers")
    if servent.transport is not None:
        servent.close()
        closed = servent.closed
        closed.addTimeout(5, reactor)
        with contextlib.suppress(Exception):
            await closed
    return outcome


async def bad_headers(
    reactor: Any,
    host: str,
    port: int,
    *,
    cases: str = "all",
    rounds: int = 1,
    seed: bool = True,
    time_limit: float = 60.0,
) -> dict[str, Any]:
    """Every case of `BAD_HEADER_CASES` (or the comma-separated names in `cases`),
    `rounds` times; after each, a new honest servent must get 200 and a
    well-formed, non-empty X-Try-Ultrapeers."""
    tally = Tally("bad-headers", locals_params(locals()))
    deadline = time.monotonic() + time_limit
    wanted = None if cases == "all" else set(cases.split(","))
    chosen = [case for case in BAD_HEADER_CASES if wanted is None or case[0] in wanted]
    if seed:
        client = await raw_handshake(reactor, host, port, [("X-Try-Ultrapeers", SEED_HOSTS)])
        if client.status == 200:
            client.write(FINAL_OK)
            await client.greeted.wait(reactor, 2.0)
        client.close()
        await client.lost.wait(reactor, 5.0)
    outcomes: list[dict[str, Any]] = []
    for _ in range(max(1, rounds)):
        for name, request_lines, final_lines in chosen:
            if time.monotonic() > deadline:
                tally.error("time limit reached")
                break
            outcomes.append(
                await one_bad_header_case(reactor, host, port, name, request_lines, final_lines)
            )
            tally.attackers += 1
    failed = [o for o in outcomes if o["problems"]]
    accept_times = [o["honest"]["seconds"] for o in outcomes if o["honest"]["seconds"] is not None]
    tally.extra.update(
        {
            "cases": len(outcomes),
            "honest_accepted": sum(1 for o in outcomes if o["honest"]["accepted"]),
            "honest_accept_seconds": summary(accept_times),
            "failed_cases": [{"case": o["case"], "problems": o["problems"][:5]} for o in failed],
            "attacker_status": {o["case"]: o["attacker_status"] for o in outcomes},
        }
    )
    return tally.result()


async def one_bad_header_case(
    reactor: Any,
    host: str,
    port: int,
    name: str,
    request_lines: list[bytes],
    final_lines: list[bytes],
) -> dict[str, Any]:
    """One hostile handshake, then one honest servent; what went wrong, if anything."""
    problems: list[str] = []
    attacker_status: int | None = None
    try:
        client = await raw_handshake(reactor, host, port, request_lines, timeout=3.0)
        attacker_status = client.status
        if client.status == 200:
            client.write(header_block("GNUTELLA/0.6 200 OK", final_lines))
            # Greeted (or closed): the router has read the final block.
            greeted = client.greeted.wait(reactor, 2.0)
            await defer.DeferredList(
                [greeted, client.lost.wait(reactor, 2.0)], fireOnOneCallback=True
            )
        client.close()
        await client.lost.wait(reactor, 3.0)
    except Exception as error:
        problems.append(f"attacker: {type(error).__name__}: {error}"[:200])
    honest = await honest_accept(reactor, host, port, timeout=3.0)
    if not honest["accepted"]:
        problems.append(
            f"honest servent not accepted: status {honest['status']} {honest.get('error', '')}"
        )
    problems.extend(try_header_problems(honest.get("x_try_ultrapeers")))
    return {
        "case": name,
        "attacker_status": attacker_status,
        "honest": honest,
        "problems": problems,
    }


# -- 3. half-open sockets and slowloris ---------------------------------------------


class HeldSockets:
    """Idle sockets (connect, say nothing) and slowloris sockets (one byte of a
    never-ending handshake every `byte_interval` s), held until `release()`."""

    SLOW_BLOCK = b"GNUTELLA CONNECT/0.6\r\nUser-Agent: " + b"slowloris-" * 400

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.idle: list[RawClient] = []
        self.slow: list[RawClient] = []
        self.failed = 0
        self._trickle: task.LoopingCall | None = None
        self._position = 0

    async def open(
        self,
        host: str,
        port: int,
        *,
        idle: int,
        slow: int,
        byte_interval: float = 1.0,
        wave: int = 50,
    ) -> None:
        async def connect(kind: list[RawClient]) -> None:
            try:
                kind.append(await open_raw(self.reactor, host, port, timeout=5.0))
            except Exception:
                self.failed += 1

        # Waves: the listen backlog is short, and a dropped SYN costs a 1 s retry.
        for kind, count in ((self.idle, idle), (self.slow, slow)):
            for start in range(0, count, wave):
                await defer.DeferredList(
                    [defer.ensureDeferred(connect(kind)) for _ in range(min(wave, count - start))]
                )
        if self.slow:
            self._trickle = task.LoopingCall(self._drip)
            self._trickle.clock = self.reactor
            self._trickle.start(byte_interval, now=True)

    def _drip(self) -> None:
        position = self._position % len(self.SLOW_BLOCK)
        byte = self.SLOW_BLOCK[position : position + 1]
        self._position += 1
        for client in self.slow:
            client.write(byte)

    def closed_by_router(self) -> dict[str, int]:
        return {
            "idle": sum(1 for c in self.idle if c.lost.is_set),
            "slow": sum(1 for c in self.slow if c.lost.is_set),
        }

    async def release(self) -> None:
        if self._trickle is not None and self._trickle.running:
            self._trickle.stop()
        clients = [*self.idle, *self.slow]
        for client in clients:
            client.abort()
        await defer.DeferredList([c.lost.wait(self.reactor, 5.0) for c in clients])


async def slowloris(
    reactor: Any,
    host: str,
    port: int,
    *,
    idle: int = 500,
    slow: int = 200,
    byte_interval: float = 1.0,
    hold: float = 6.0,
    probes: int = 3,
) -> dict[str, Any]:
    """Hold `idle` silent and `slow` slowloris sockets for `hold` s, and meanwhile
    time `probes` new honest servents from connect to 200 (target < 1 s)."""
    tally = Tally("slowloris", locals_params(locals()))
    held = HeldSockets(reactor)
    started = time.monotonic()
    try:
        await held.open(host, port, idle=idle, slow=slow, byte_interval=byte_interval)
        tally.attackers = len(held.idle) + len(held.slow)
        opened = time.monotonic()
        accepts = []
        for number in range(max(1, probes)):
            # Spread the probes over the hold time; the first once all sockets are in.
            due = opened + 0.5 + number * max(0.0, hold - 1.0) / max(1, probes)
            if due > time.monotonic():
                await sleep(reactor, due - time.monotonic())
            accepts.append(await honest_accept(reactor, host, port, timeout=5.0))
        remaining = opened + hold - time.monotonic()
        if remaining > 0:
            await sleep(reactor, remaining)
        closed = held.closed_by_router()
        for client in [*held.idle, *held.slow]:
            if client.lost.is_set and client.closed_at is not None:
                tally.cut(client.closed_at - client.opened_at, client)
        tally.not_cut = tally.attackers - len(tally.cut_seconds)
        seconds = [a["seconds"] if a["accepted"] else float("inf") for a in accepts]
        tally.extra.update(
            {
                "open_failed": held.failed,
                "open_seconds": round(opened - started, 3),
                "closed_by_router": closed,
                "honest_accepts": accepts,
                "honest_accept_seconds": max(seconds) if seconds else None,
                "honest_accepted": sum(1 for a in accepts if a["accepted"]),
            }
        )
    finally:
        await held.release()
    return tally.result()


# -- 4. deflate bomb -----------------------------------------------------------------


class DeflateAttacker(ServentProtocol):
    """A servent offering deflate whose outgoing stream is whatever the attack writes."""

    def __init__(self, *, ultrapeer: bool = True) -> None:
        headers = [
            ("User-Agent", ATTACKER_AGENT),
            ("X-Ultrapeer", "True" if ultrapeer else "False"),
            ("X-Query-Routing", "0.2"),
            ("Bye-Packet", "0.1"),
        ]
        super().__init__(headers=headers, deflate=True, keep_inbox=False)
        self.lost = Flag()
        self.keep = 0

    def _message(self, message: Message) -> None:
        # Keep Byes (and a few others) only: the router may send a lot.
        if message.type == MessageType.BYE or self.keep < 64:
            self.keep += 1
            self.received.append(message)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self.lost.set()


async def connect_attacker(
    reactor: Any, host: str, port: int, servent: ServentProtocol, timeout: float = 5.0
) -> None:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    await endpoints.connectProtocol(endpoint, servent)  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated
    established = servent.established
    established.addTimeout(timeout, reactor)
    await established


def zero_stream(inflated_per_write: int) -> Iterator[bytes]:
    """Sync-flushed pieces of one zlib stream, each inflating to `inflated_per_write` zeros.

    Once the window is all zeros every piece compresses to the same bytes, so
    they are computed once (compressing 1 MiB costs milliseconds; sending
    ~1 KB costs nothing), unless zlib says otherwise.
    """
    compressor = zlib.compressobj(9)
    zeros = bytes(inflated_per_write)
    pieces = [compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    yield from pieces
    steady = pieces[1] == pieces[2]
    while True:
        yield (
            pieces[2]
            if steady
            else compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
        )


async def deflate_bomb(
    reactor: Any,
    host: str,
    port: int,
    *,
    inflated_per_write: int = 960 * 1024,
    interval: float = 0.01,
    duration: float = 10.0,
) -> dict[str, Any]:
    """Zeros through a deflate link: each write (a sync-flushed piece of one zlib
    stream of about 1 KB) inflates to `inflated_per_write` bytes, just under
    the 1 MiB the router allows one read to expand to; a write every
    `interval` s, for at most `duration` s or until the router cuts us."""
    tally = Tally("deflate", locals_params(locals()))
    servent = DeflateAttacker()
    tally.attackers = 1
    if not await tallied_connect(tally, reactor, host, port, servent):
        return tally.result()
    if not servent.connection.deflate_out:
        tally.error("the router did not accept a deflated stream from us")
    pieces = zero_stream(inflated_per_write)
    started = time.monotonic()
    writes = compressed = 0
    transport: Any = servent.transport
    while not servent.lost.is_set and time.monotonic() - started < duration:
        data = next(pieces)
        transport.write(data)
        writes += 1
        compressed += len(data)
        await servent.lost.wait(reactor, interval)
    await cut_or_abort(tally, reactor, started, servent.lost, servent, transport.abortConnection)
    tally.extra.update(
        {
            "writes": writes,
            "compressed_bytes": compressed,
            "inflated_bytes": writes * inflated_per_write,
            "deflate_accepted": servent.connection.deflate_out,
        }
    )
    return tally.result()


# -- 5. QRP table bomb -------------------------------------------------------------------


def qrp_bomb_messages(slots: int = 1 << 24, entry_bits: int = 4) -> bytes:
    """A RESET for `slots` slots and one deflated PATCH covering all of them
    (every entry "unchanged": zeros, ~1000:1), encoded."""
    raw = bytes(slots * entry_bits // 8)
    data = zlib.compress(raw, 9)
    reset = Message.from_body(new_guid(), 1, 0, RouteTableReset(slots, 7))
    patch = Message.from_body(new_guid(), 1, 0, RouteTablePatch(1, 1, 1, entry_bits, data))
    return reset.encode() + patch.encode()


async def qrp_bomb(
    reactor: Any,
    host: str,
    port: int,
    *,
    slots: int = 1 << 24,
    interval: float = 0.05,
    rounds: int = 400,
    duration: float = 10.0,
) -> dict[str, Any]:
    """A leaf sending RESET(`slots`) + a small PATCH inflating to the whole
    table, every `interval` s, at most `rounds` times or `duration` s."""
    tally = Tally("qrp", locals_params(locals()))
    wire = qrp_bomb_messages(slots)
    servent = DeflateAttacker(ultrapeer=False)
    tally.attackers = 1
    if not await tallied_connect(tally, reactor, host, port, servent):
        return tally.result()
    started = time.monotonic()
    sent = 0
    outgoing = zlib.compressobj() if servent.connection.deflate_out else None
    transport: Any = servent.transport
    while not servent.lost.is_set and sent < rounds and time.monotonic() - started < duration:
        data = wire
        if outgoing is not None:
            data = outgoing.compress(wire) + outgoing.flush(zlib.Z_SYNC_FLUSH)
        transport.write(data)
        sent += 1
        await servent.lost.wait(reactor, interval)
    if not servent.lost.is_set:
        # Give the router the time to get through what it has been sent.
        await servent.lost.wait(reactor, 2.0)
    await cut_or_abort(tally, reactor, started, servent.lost, servent, transport.abortConnection)
    tally.extra.update({"rounds_sent": sent, "bytes_per_round": len(wire)})
    return tally.result()


# -- 6. ping flood ---------------------------------------------------------------------------

_PING_TAIL = bytes((MessageType.PING, 7, 0)) + struct.pack("<I", 0)


def fresh_pings(count: int) -> bytes:
    """`count` pings (TTL 7, hops 0), each with a fresh random GUID."""
    guids = os.urandom(16 * count)
    tail = _PING_TAIL
    return b"".join(guids[i : i + 16] + tail for i in range(0, 16 * count, 16))


async def ping_flood(
    reactor: Any,
    host: str,
    port: int,
    *,
    max_pings: int = 500_000,
    batch: int = 500,
    duration: float = 10.0,
) -> dict[str, Any]:
    """One ultrapeer link writing pings with fresh GUIDs as fast as its socket
    takes them: at most `max_pings`, for at most `duration` s."""
    tally = Tally("ping-flood", locals_params(locals()))
    tally.attackers = 1
    client = await tallied_handshake(tally, reactor, host, port)
    if client is None:
        return tally.result()
    if client.status != 200:
        tally.refusal(client.status)
        client.abort()
        return tally.result()
    client.write(FINAL_OK)
    await client.greeted.wait(reactor, 2.0)
    started = time.monotonic()
    sent = 0
    while not client.lost.is_set and sent < max_pings and time.monotonic() - started < duration:
        if client.paused:
            await client.resumed.wait(reactor, 0.05)
            continue
        count = min(batch, max_pings - sent)
        client.write(fresh_pings(count))
        sent += count
        # Let the reactor write (and read) between batches.
        await sleep(reactor, 0)
    if not client.lost.is_set:
        await client.lost.wait(reactor, 2.0)
    await cut_or_abort(tally, reactor, started, client.lost, client, client.abort)
    tally.extra.update(
        {
            "pings_sent": sent,
            "send_seconds": round(time.monotonic() - started, 3),
            "messages_received": {str(k): v for k, v in client.messages_in.items()},
        }
    )
    return tally.result()


# -- 7. the peer that never reads ----------------------------------------------------------


def _blocking_handshake(host: str, port: int, rcvbuf: int, timeout: float) -> socket.socket:
    """A 0.6 handshake on a socket whose receive window is tiny (set before connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(connect_block(ultrapeer=True, agent=NON_READER_AGENT))
        reply = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in reply:
            if time.monotonic() > deadline or len(reply) > 65536:
                raise ConnectionError("no handshake reply")
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            reply += chunk
        status, _, _ = parse_block(reply)
        if status != 200:
            raise ConnectionError(f"refused with {status}")
        sock.sendall(FINAL_OK)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


async def non_reader(
    reactor: Any,
    host: str,
    port: int,
    *,
    feed_rate: float = 2000.0,
    criteria_bytes: int = 200,
    ping_interval: float = 2.0,
    rcvbuf: int = 4096,
    duration: float = 40.0,
) -> dict[str, Any]:
    """An ultrapeer link that never reads (4 KB window) but pings every
    `ping_interval` s, while a feeder servent sends `feed_rate` queries/s that
    the router floods to it; until the router drops it or `duration` s."""
    tally = Tally("non-reader", locals_params(locals()))
    tally.attackers = 1
    try:
        sock = await threads.deferToThread(_blocking_handshake, host, port, rcvbuf, 5.0)
    except Exception as error:
        tally.error(f"handshake: {type(error).__name__}: {error}")
        return tally.result()
    feeder = ServentProtocol(keep_inbox=False)
    await tallied_connect(tally, reactor, host, port, feeder, what="feeder")
    started = time.monotonic()
    cut = Flag()
    pings = queries = 0
    last_ping = 0.0
    pad = "x" * max(0, criteria_bytes - 20)

    def tick() -> None:
        nonlocal pings, queries, last_ping
        if cut.is_set:
            return
        now = time.monotonic()
        state = tcp_state(sock)
        if state is not None and state != TCP_ESTABLISHED:
            cut.set()
            return
        if now - last_ping >= ping_interval:
            last_ping = now
            try:
                sock.send(Message.from_body(new_guid(), 1, 0, Ping()).encode())
                pings += 1
            except BlockingIOError:
                pass
            except OSError as error:
                if error.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                    cut.set()
                    return
        if feeder.connection.established and not feeder.closed.called:
            due = int((now - started) * feed_rate) - queries
            if due > 0:
                due = min(due, 1000)
                feeder.send(
                    *(
                        Message.from_body(new_guid(), 3, 0, Query(0, f"feed {queries + i} {pad}"))
                        for i in range(due)
                    )
                )
                queries += due

    ticker = task.LoopingCall(tick)
    ticker.clock = reactor
    ticker.start(0.02, now=True)
    try:
        await cut.wait(reactor, duration)
    finally:
        if ticker.running:
            ticker.stop()
    if cut.is_set and cut.at is not None:
        tally.cut(cut.at - started)
    else:
        tally.not_cut = 1
    sock.close()
    if feeder.transport is not None and not feeder.closed.called:
        feeder.close()
    tally.extra.update({"pings_sent": pings, "feeder_queries": queries})
    return tally.result()


# -- 8. garbage in the final 200's segment ---------------------------------------------------


async def bye_in_final_segment(
    reactor: Any,
    host: str,
    port: int,
    *,
    connections: int = 20,
    concurrency: int = 10,
    wait_cut: float = 5.0,
) -> dict[str, Any]:
    """`GNUTELLA/0.6 200 OK\\r\\n\\r\\n` and unframeable bytes in one write (one
    segment): the router must send a Bye before it closes."""
    tally = Tally("bye-segment", locals_params(locals()))

    async def one(index: int) -> None:
        tally.attackers += 1
        client = await tallied_handshake(tally, reactor, host, port)
        if client is None:
            return
        try:
            if client.status != 200:
                tally.refusal(client.status)
                return
            sent = time.monotonic()
            client.write(FINAL_OK + GARBAGE[index % len(GARBAGE)])
            await cut_within(tally, reactor, client, sent, wait_cut)
        finally:
            client.abort()

    await bounded_gather(connections, concurrency, one)
    tally.extra["closed_without_bye"] = len(tally.cut_seconds) - tally.bye_before_close
    return tally.result()


ATTACKS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "garbage": garbage_after_handshake,
    "bad-headers": bad_headers,
    "slowloris": slowloris,
    "deflate": deflate_bomb,
    "qrp": qrp_bomb,
    "ping-flood": ping_flood,
    "non-reader": non_reader,
    "bye-segment": bye_in_final_segment,
}


# -- the honest probe ------------------------------------------------------------------------

PROBE_TAG = b"honest-probe "


class HonestProbe:
    """Two honest servents (leaves) exchanging queries and query hits through the router.

    Each sends queries tagged with `PROBE_TAG`; the other answers every one
    it receives with a query hit at once.  Every message is stamped when
    sent and timed when it arrives (both ends are in this process, so one
    clock), and counted in the phase (`phase`) it was sent in.  Direction
    "a>b" is a's queries and b's hits for them; "b>a" the reverse.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.a: ServentProtocol | None = None
        self.b: ServentProtocol | None = None
        self.phase = "warmup"
        self._queries: dict[bytes, tuple[float, str, str]] = {}  # guid -> sent, phase, direction
        self._hits: dict[bytes, tuple[float, str, str]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.unexpected = 0
        self._sender: task.LoopingCall | None = None
        self._started = 0.0
        self._sent_by_clock = 0
        self._rate = 0.0
        self._limit = 0
        self._settled = Flag()
        self._progress = Flag()
        self.total_sent = 0

    async def connect(self, host: str, port: int) -> None:
        from gnurouter.edge.servent import connect_servent

        self.a = await connect_servent(
            self.reactor, host, port, keep_inbox=False, on_message=lambda m: self._arrived("a", m)
        )
        self.b = await connect_servent(
            self.reactor, host, port, keep_inbox=False, on_message=lambda m: self._arrived("b", m)
        )

    def _phase_stats(self, phase: str) -> dict[str, Any]:
        stats = self.stats.get(phase)
        if stats is None:
            stats = {
                "sent": {"a>b": 0, "b>a": 0},
                "delivered": {"a>b": 0, "b>a": 0},
                "queries_sent": 0,
                "queries_delivered": 0,
                "hits_sent": 0,
                "hits_delivered": 0,
                "latency": [],
            }
            self.stats[phase] = stats
        return stats

    def _arrived(self, side: str, message: Message) -> None:
        now = time.monotonic()
        progress, self._progress = self._progress, Flag()
        progress.set()
        if (
            message.type == MessageType.QUERY
            and message.payload[2 : 2 + len(PROBE_TAG)] == PROBE_TAG
        ):
            sent = self._queries.pop(message.guid, None)
            if sent is None:
                self.duplicates += 1
                return
            at, phase, direction = sent
            if direction[0] == side:
                self.unexpected += 1  # our own query came back to us
                return
            stats = self._phase_stats(phase)
            stats["delivered"][direction] += 1
            stats["queries_delivered"] += 1
            self._sample(stats, now - at)
            self._answer(side, message, phase, direction)
        elif message.type == MessageType.QUERY_HIT:
            sent = self._hits.pop(message.guid, None)
            if sent is None:
                return  # not ours, or a duplicate: counted by the router's tests, not here
            at, phase, direction = sent
            stats = self._phase_stats(phase)
            stats["delivered"][direction] += 1
            stats["hits_delivered"] += 1
            self._sample(stats, now - at)
        if not self._queries and not self._hits:
            self._settled.set()

    @staticmethod
    def _sample(stats: dict[str, Any], seconds: float) -> None:
        if len(stats["latency"]) < 2_000_000:
            stats["latency"].append(seconds)

    def _answer(self, side: str, query: Message, phase: str, direction: str) -> None:
        servent = self.a if side == "a" else self.b
        assert servent is not None
        hit = QueryHit(
            port=6346,
            ip="127.0.0.1",
            speed=1000,
            results=(QueryHitResult(index=1, size=4096, name="probe.ogg"),),
            servent_id=(b"A" if side == "a" else b"B") * 16,
        )
        message = Message.from_body(query.guid, query.hops + 1, 0, hit)
        self._hits[query.guid] = (time.monotonic(), phase, direction)
        stats = self._phase_stats(phase)
        stats["sent"][direction] += 1
        stats["hits_sent"] += 1
        servent.send(message)

    def send_query(self, side: str) -> None:
        servent = self.a if side == "a" else self.b
        assert servent is not None
        number = self.total_sent
        self.total_sent += 1
        message = Message.from_body(
            new_guid(), 2, 0, Query(0, f"{PROBE_TAG.decode()}{number} {side}")
        )
        direction = "a>b" if side == "a" else "b>a"
        self._queries[message.guid] = (time.monotonic(), self.phase, direction)
        if self._settled.is_set:
            self._settled = Flag()
        stats = self._phase_stats(self.phase)
        stats["sent"][direction] += 1
        stats["queries_sent"] += 1
        servent.send(message)

    def start(self, rate: float, limit: int = 1_000_000, tick: float = 0.01) -> None:
        """Send `rate` queries/s in all, alternating a and b, at most `limit` in all."""
        self._rate = rate
        self._limit = limit
        self._started = time.monotonic()
        self._sent_by_clock = 0
        self._sender = task.LoopingCall(self._send_due)
        self._sender.clock = self.reactor
        self._sender.start(tick, now=True)

    def _send_due(self) -> None:
        due = int((time.monotonic() - self._started) * self._rate) - self._sent_by_clock
        for _ in range(max(0, min(due, 1000))):
            if self.total_sent >= self._limit:
                self.stop()
                return
            self.send_query("a" if self.total_sent % 2 == 0 else "b")
            self._sent_by_clock += 1

    def stop(self) -> None:
        if self._sender is not None and self._sender.running:
            self._sender.stop()

    @property
    def outstanding(self) -> dict[str, int]:
        return {"queries": len(self._queries), "hits": len(self._hits)}

    def next_arrival(self, timeout: float) -> defer.Deferred[bool]:
        """Fires True when the next message reaches either servent, False after `timeout` s."""
        return self._progress.wait(self.reactor, timeout)

    async def settle(self, timeout: float = 5.0) -> bool:
        """Wait until every query sent got its hit back (True), or `timeout` s (False)."""
        if not self._queries and not self._hits:
            return True
        return await self._settled.wait(self.reactor, timeout)

    def report(self, phase: str) -> dict[str, Any]:
        stats = self._phase_stats(phase)
        sent, delivered = stats["sent"], stats["delivered"]
        ratios = {
            direction: (delivered[direction] / sent[direction] if sent[direction] else None)
            for direction in sent
        }
        latency_ms = [value * 1000 for value in stats["latency"]]
        return {
            "sent": dict(sent),
            "delivered": dict(delivered),
            "delivery": ratios,
            "queries_sent": stats["queries_sent"],
            "queries_delivered": stats["queries_delivered"],
            "hits_sent": stats["hits_sent"],
            "hits_delivered": stats["hits_delivered"],
            "latency_ms": summary(latency_ms),
        }

    def lost(self) -> dict[str, int]:
        """Messages sent in any phase and not (yet) delivered, by kind."""
        return self.outstanding

    async def close(self) -> None:
        self.stop()
        waiting = []
        for servent in (self.a, self.b):
            if servent is not None and servent.transport is not None and not servent.closed.called:
                servent.close()
                closed = servent.closed
                closed.addTimeout(5, self.reactor)
                waiting.append(closed)
        if waiting:
            await defer.DeferredList(waiting, consumeErrors=True)


# -- command line: one attack in a process of its own -----------------------------------------


def _coerce(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gnurouter.bench.attacks",
        description="Run one hostile-peer attack against a router on loopback; print JSON.",
    )
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="attack parameter"
    )
    parser.add_argument("--out", metavar="FILE", help="write the JSON result here (else stdout)")
    args = parser.parse_args(argv)
    host, _, port_text = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error("attacks run against loopback only (127.0.0.1)")
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param expects NAME=VALUE, got {item!r}")
        params[name.replace("-", "_")] = _coerce(value)
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    outcome: dict[str, Any] = {}

    async def go() -> None:
        try:
            outcome.update(await ATTACKS[args.attack](reactor, HOST, int(port_text), **params))
        except Exception as error:
            outcome["error"] = f"{type(error).__name__}: {error}"
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    text = json.dumps(outcome, default=str)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        print(text)
    return 0 if "error" not in outcome else 1


if __name__ == "__main__":
    sys.exit(main())
