"""Fuzz benchmark: a million hostile inputs through the router's parsers, counting crashes.

    .venv/bin/python benchmarks/fuzz.py                       # 1,000,000 inputs, seed 1
    .venv/bin/python benchmarks/fuzz.py --inputs 20000 --seed 7 --targets framer,parser
    .venv/bin/python benchmarks/fuzz.py --seconds 120         # stop after two minutes

Targets (inputs shared out by weight; each target has its own seeded
`random.Random`, so its inputs depend only on --seed and its own count):

* framer     byte streams built from valid messages of every type (QRP
             sequences and vendor messages included) and mutated: header
             fields (length, type, TTL, hops), payloads, splices, truncations,
             random chunking; or pure random bytes.  Every framed message is
             decoded (body, extensions, GGEP, QRP receiver, vendor payloads).
             Oracle: framing in chunks gives what framing at once gives.
* handshake  `PeerConnection.receive_data` in both roles: mutated handshake
             blocks (0.4 and 0.6, hostile header values), our accept / confirm /
             refuse decisions, then message bytes, deflated when negotiated
             (garbage, corrupted and oversized compressed data included).
             Oracle: after a ProtocolError every later call raises again.
* parser     the parser stage's `ParserHandler` with a real PeerTable,
             HandshakePolicy, HostCache and catcher, in-memory sinks, fed
             `StreamChunk` events of mutated handshakes and streams.  A crash is
             any exception out of `handle_events` or any event it reports as
             failed (`report_failure`).  Oracles: the host cache holds only
             canonical endpoints; every handshake block the router writes
             parses, its X-Try-Ultrapeers / Listen-IP entries included; the
             policy's reply headers (200 and 503) encode; no message reaches
             the router stage from a peer that did not join; established
             neighbours never outnumber their slots; closed peers leave the
             peer table.
* control    the control endpoint's body: `controlweb.parse_changes` then
             `ControlAPI.set_many` of a real (unstarted) `RouterService`, on
             mutated JSON built from the parameters it describes.  Oracles:
             a refusal changes nothing; an accepted value reads back and is
             accepted again; `describe()` stays strict JSON (no NaN/inf).

A crash is anything raised that is not the target's declared error type
(ProtocolError for the protocol pieces, ControlError for the control body);
a broken oracle counts as a crash too.  Exit status 1 if any target crashed,
with the first crash of each kind printed (input included; a target's
inputs are reproduced by the same --seed, and the framer and handshake
inputs stand alone).  The result is written to var/fuzz/<name>.json
(`--name`, default "fuzz"), nowhere else.  The default million inputs take
about 7 minutes on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import json
import logging
import math
import random
import re
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from twisted.internet.task import Clock

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.config import RouterConfig
from gnurouter.edge.service import RouterService
from gnurouter.mesh.handshaking import HandshakePolicy
from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.peers import Peer, PeerState, PeerTable
from gnurouter.ops import controlweb
from gnurouter.protocol.addresses import format_endpoint, parse_endpoint, parse_endpoints
from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.framer import DEFAULT_PAYLOAD_LIMITS, MessageFramer, PayloadLimits
from gnurouter.protocol.ggep import GGEPExtension, encode_ggep, parse_extension_area
from gnurouter.protocol.handshake import (
    ConnectRequest,
    ConnectResponse,
    HandshakeComplete,
    Headers,
    Role,
)
from gnurouter.protocol.messages import (
    HEADER_LENGTH,
    Bye,
    Message,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    QueryHitTrailer,
    RouteTablePatch,
    RouteTableReset,
    VendorMessage,
)
from gnurouter.protocol.qrp import QrpError, QrpReceiver, QueryKeys
from gnurouter.protocol.vendor import (
    HOPS_FLOW,
    MESSAGES_SUPPORTED,
    MessagesSupported,
    decode_hops_flow,
)
from gnurouter.routing.roles import LEAF, LEGACY, ULTRAPEER
from gnurouter.seda.tuning import ControlAPI, ControlError
from gnurouter.stages.catcher import CatcherHandler
from gnurouter.stages.events import (
    ClosePeer,
    MessageArrived,
    PeerJoined,
    PeerLost,
    PeerOpened,
    SendRaw,
    StreamChunk,
)
from gnurouter.stages.parser import ParserHandler

ROOT = Path(__file__).resolve().parents[1]
RESULT_DIR = ROOT / "var" / "fuzz"
DEFAULT_INPUTS = 1_000_000
MAX_INPUTS = 100_000_000
#: Inputs one target runs before the next takes its turn (so --seconds shares time).
SLICE = 5000
#: Crashes kept per target with their input (the first of each kind); all are counted.
KEEP_CRASHES = 20
#: Characters of an input's repr kept in a crash report.
INPUT_REPR_LIMIT = 4000


class InvariantViolation(Exception):
    """An oracle failed: the code under test returned something it must not."""


class HandlerError(Exception):
    """An exception a handler caught and reported as a failed event (`report_failure`)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)


# -- the harness -----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    declared: tuple[type[BaseException], ...]
    generate: Callable[[random.Random], Any]
    run: Callable[[Any], None]
    weight: float = 1.0
    describe: str = ""
    #: What the inputs reached (handshakes completed, messages framed...), for the report.
    stats: Callable[[], dict[str, int]] | None = None


@dataclass
class Crash:
    target: str
    index: int
    error: str
    where: str
    input: str
    traceback: list[str] = field(default_factory=list)


@dataclass
class TargetResult:
    name: str
    declared: list[str]
    quota: int = 0
    inputs: int = 0
    declared_errors: int = 0
    crashes: int = 0
    seconds: float = 0.0
    signatures: dict[str, int] = field(default_factory=dict)
    examples: list[Crash] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


def _where(error: BaseException) -> str:
    """The innermost frame in gnurouter (else the innermost), as file:line."""
    if isinstance(error, HandlerError) and error.__cause__ is not None:
        error = error.__cause__
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/gnurouter/" in f.filename.replace("\\", "/")]
    if not (ours or frames):
        return "?"
    frame = (ours or frames)[-1]
    path = frame.filename
    with contextlib.suppress(ValueError):
        path = str(Path(path).resolve().relative_to(ROOT))
    return f"{path}:{frame.lineno} in {frame.name}"


def _signature(error: BaseException, where: str) -> str:
    """What tells one bug from another: the oracle's words, else the type and place."""
    if isinstance(error, InvariantViolation):
        return f"InvariantViolation: {str(error).split(' (')[0][:100]}"
    if error.__cause__ is not None and isinstance(error, HandlerError):
        cause = error.__cause__
        return f"{type(cause).__name__} reported by a handler at {_where(cause)}"
    return f"{type(error).__name__} at {where}"


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as error:  # a repr that fails is worth knowing, not worth dying for
        text = f"<repr failed: {error!r}>"
    if len(text) > INPUT_REPR_LIMIT:
        text = text[:INPUT_REPR_LIMIT] + f"... ({len(text)} characters)"
    return text


def run_target(
    target: Target,
    rng: random.Random,
    count: int,
    result: TargetResult,
    deadline: float | None = None,
    keep: int = KEEP_CRASHES,
) -> bool:
    """Run up to `count` generated inputs through `target`; False if the deadline passed."""
    declared = target.declared
    generate = target.generate
    run = target.run
    clock = time.perf_counter
    started = clock()
    try:
        for _ in range(count):
            case = generate(rng)
            index = result.inputs
            result.inputs += 1
            try:
                run(case)
            except declared:
                result.declared_errors += 1
            except Exception as error:
                result.crashes += 1
                where = _where(error)
                signature = _signature(error, where)
                result.signatures[signature] = result.signatures.get(signature, 0) + 1
                if result.signatures[signature] == 1 and len(result.examples) < keep:
                    result.examples.append(
                        Crash(
                            target=target.name,
                            index=index,
                            error=_short_repr(error),
                            where=where,
                            input=_short_repr(case),
                            traceback=traceback.format_exception(error)[-12:],
                        )
                    )
                error.__traceback__ = None
            if deadline is not None and clock() >= deadline:
                return False
        return True
    finally:
        result.seconds += clock() - started


def share(total: int, weights: Sequence[float]) -> list[int]:
    """`total` split by `weights` into integers summing to `total`."""
    whole = sum(weights)
    quotas = [int(total * w / whole) for w in weights]
    for i in range(total - sum(quotas)):
        quotas[i % len(quotas)] += 1
    return quotas


def run_all(
    targets: Sequence[Target],
    inputs: int,
    seed: int,
    seconds: float | None = None,
    progress: Callable[[TargetResult], None] | None = None,
) -> list[TargetResult]:
    """Round-robin slices over the targets until each ran its share or time is up."""
    results = [
        TargetResult(t.name, [e.__name__ for e in t.declared], quota=q)
        for t, q in zip(targets, share(inputs, [t.weight for t in targets]), strict=True)
    ]
    rngs = [random.Random(f"gnurouter-fuzz:{seed}:{t.name}") for t in targets]
    deadline = time.perf_counter() + seconds if seconds is not None else None
    pending = True
    while pending:
        pending = False
        for target, rng, result in zip(targets, rngs, results, strict=True):
            left = result.quota - result.inputs
            if left <= 0:
                continue
            in_time = run_target(target, rng, min(left, SLICE), result, deadline)
            if progress is not None:
                progress(result)
            if not in_time:
                return results
            pending = pending or result.inputs < result.quota
    return results


# -- byte-level mutation -----------------------------------------------------------------

INTERESTING_BYTES = (0x00, 0x01, 0x0A, 0x0D, 0x1C, 0x20, 0x3A, 0x7F, 0x80, 0xC3, 0xFE, 0xFF)
INTERESTING_U32 = (
    0,
    1,
    22,
    23,
    255,
    256,
    1023,
    1024,
    1025,
    1536,
    1550,
    4096,
    40960,
    40961,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
)


def random_bytes(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high))


def mutate_bytes(
    rng: random.Random, data: bytes, rounds: int, corpus: Sequence[bytes] = ()
) -> bytes:
    out = bytearray(data)
    for _ in range(rounds):
        choice = rng.randrange(10)
        n = len(out)
        pos = rng.randint(0, n)
        if choice == 0 and n:  # flip a bit
            out[pos % n] ^= 1 << rng.randrange(8)
        elif choice == 1 and n:  # an interesting byte
            out[pos % n] = rng.choice(INTERESTING_BYTES)
        elif choice == 2 and n:  # a random byte
            out[pos % n] = rng.randrange(256)
        elif choice == 3:  # insert
            out[pos:pos] = random_bytes(rng, 1, 16)
        elif choice == 4 and n:  # delete a range
            del out[pos : pos + rng.randint(1, 32)]
        elif choice == 5 and n:  # duplicate a range
            end = min(n, pos + rng.randint(1, 64))
            out[end:end] = out[pos:end]
        elif choice == 6 and corpus:  # splice another stream in
            other = rng.choice(corpus)
            cut = rng.randint(0, len(other))
            out[pos:] = other[cut:] if rng.random() < 0.5 else other[:cut]
        elif choice == 7:  # truncate
            del out[pos:]
        elif choice == 8 and n >= 4:  # an interesting little-endian u32
            at = pos % (n - 3)
            out[at : at + 4] = rng.choice(INTERESTING_U32).to_bytes(4, "little")
        elif n:  # swap two ranges' bytes
            a, b = rng.randrange(n), rng.randrange(n)
            out[a], out[b] = out[b], out[a]
    return bytes(out)


def chunk(rng: random.Random, data: bytes, max_pieces: int = 8) -> list[bytes]:
    """`data` cut at random points (1..max_pieces pieces; sometimes one byte at a time)."""
    if len(data) > 1 and rng.random() < 0.02:
        return [data[i : i + 1] for i in range(min(len(data), 400))] + [data[400:]]
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, max_pieces - 1)))
    pieces, last = [], 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[last:cut])
        last = cut
    return pieces


# -- a corpus of valid messages --------------------------------------------------------------


def _guid(rng: random.Random) -> bytes:
    return rng.randbytes(16)


def _ip(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(256)) for _ in range(4))


def _ggep_block(rng: random.Random, nul_free: bool = False) -> bytes:
    """A GGEP block: encoded by the protocol's own encoder, or hand-built deflated/COBS."""
    if nul_free or rng.random() < 0.6:
        exts = tuple(
            GGEPExtension(rng.choice(["H", "DU", "GUE", "SCP", "IP", "PHC", "LF", "Z"]), payload)
            for payload in (random_bytes(rng, 0, 40) for _ in range(rng.randint(1, 3)))
        )
        return encode_ggep(exts, nul_free=nul_free or rng.random() < 0.3)
    # flags: last (0x80), COBS (0x40), deflate (0x20), id length in the low bits.
    data = (
        zlib.compress(random_bytes(rng, 0, 200)) if rng.random() < 0.7 else random_bytes(rng, 0, 30)
    )
    flags = 0x80 | 0x20 | 1 | (0x40 if rng.random() < 0.2 else 0)
    length = len(data)
    if length < 64:
        encoded_length = bytes([0x40 | length])
    elif length < 4096:
        encoded_length = bytes([0x80 | (length >> 6), 0x40 | (length & 0x3F)])
    else:
        data = data[:4000]
        length = len(data)
        encoded_length = bytes([0x80 | (length >> 6), 0x40 | (length & 0x3F)])
    return b"\xc3" + bytes([flags]) + b"Z" + encoded_length + data


def _extensions(rng: random.Random, nul_free: bool = False) -> bytes:
    """A query's or a hit result's extension area: HUGE, GGEP, XML, junk, 0x1C-separated."""
    parts = []
    for _ in range(rng.randint(0, 3)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(
                b"urn:sha1:"
                + bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(32))
            )
        elif kind == 1:
            parts.append(_ggep_block(rng, nul_free))
        elif kind == 2:
            parts.append(b"<?xml version='1.0'?><audios/>")
        else:
            parts.append(random_bytes(rng, 0, 20).replace(b"\x00", b"\x01"))
    return b"\x1c".join(parts)


def _words(rng: random.Random) -> str:
    vocabulary = [
        "linux",
        "iso",
        "free",
        "music",
        "ogg",
        "k",
        "the",
        "été",
        "音楽",
        "a b",
        "x" * 40,
    ]
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 5)))


def random_body(rng: random.Random) -> Any:
    kind = rng.randrange(11)
    if kind == 0:
        return Ping() if rng.random() < 0.7 else Ping((GGEPExtension("SCP", b"\x01"),))
    if kind == 1:
        ggep = (GGEPExtension("DU", rng.randbytes(2)),) if rng.random() < 0.3 else ()
        return Pong(
            rng.randrange(65536), _ip(rng), rng.randrange(1 << 32), rng.randrange(1 << 32), ggep
        )
    if kind == 2:
        return Bye(rng.choice([200, 400, 403, 413, 501, 502]), _words(rng).replace("\r", ""))
    if kind == 3:
        return RouteTableReset(1 << rng.randint(0, 20), rng.randint(1, 255))
    if kind == 4:
        size = rng.randint(1, 8)
        return RouteTablePatch(
            rng.randint(1, size),
            size,
            rng.choice([0, 1]),
            rng.choice([1, 2, 4, 8]),
            random_bytes(rng, 0, 200),
        )
    if kind == 5:
        vendor, selector, version = rng.choice([MESSAGES_SUPPORTED, HOPS_FLOW, (b"LIME", 21, 1)])
        if (vendor, selector, version) == MESSAGES_SUPPORTED:
            items = tuple(
                (rng.randbytes(4), rng.randrange(65536), rng.randrange(65536))
                for _ in range(rng.randint(0, 4))
            )
            data = MessagesSupported(items).encode()
        elif (vendor, selector, version) == HOPS_FLOW:
            data = bytes([rng.randrange(256)])
        else:
            data = random_bytes(rng, 0, 30)
        return VendorMessage(vendor, selector, version, data, rng.random() < 0.2)
    if kind == 6:
        return Push(_guid(rng), rng.randrange(1 << 32), _ip(rng), rng.randrange(65536))
    if kind in (7, 8):
        return Query(rng.randrange(65536), _words(rng), _extensions(rng))
    if kind == 9:
        results = tuple(
            QueryHitResult(
                rng.randrange(1 << 32),
                rng.randrange(1 << 32),
                _words(rng) or "f",
                _extensions(rng, True),
            )
            for _ in range(rng.randint(0, 4))
        )
        trailer = (
            QueryHitTrailer(
                b"GTKG", bytes([2, rng.randrange(256), rng.randrange(256)]), random_bytes(rng, 0, 8)
            )
            if rng.random() < 0.7
            else None
        )
        return QueryHit(
            rng.randrange(65536), _ip(rng), rng.randrange(1 << 32), results, _guid(rng), trailer
        )
    return None  # an unknown type, below


def random_message(rng: random.Random) -> Message:
    body = random_body(rng)
    ttl = rng.randint(0, 7)
    hops = rng.randint(0, 7)
    if body is None:
        return Message(
            _guid(rng), rng.choice([0x99, 0xFF, 0x33]), ttl, hops, random_bytes(rng, 0, 60)
        )
    return Message.from_body(_guid(rng), ttl, hops, body)


def qrp_sequence(rng: random.Random) -> list[Message]:
    """RESET then a PATCH sequence that fills the table (deflated or not), as leaves send."""
    slots = 1 << rng.randint(6, 14)
    bits = rng.choice([1, 2, 4, 8])
    table = rng.randbytes(slots * bits // 8)
    compressor = rng.choice([0, 1])
    data = zlib.compress(table) if compressor else table
    parts = max(1, min(rng.randint(1, 5), len(data)))
    step = -(-len(data) // parts)
    pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    messages = [Message.from_body(_guid(rng), 1, 0, RouteTableReset(slots, rng.randint(1, 7)))]
    for number, piece in enumerate(pieces, 1):
        patch = RouteTablePatch(number, len(pieces), compressor, bits, piece)
        messages.append(Message.from_body(_guid(rng), 1, 0, patch))
    return messages


def message_stream(rng: random.Random) -> tuple[list[Message], bytes]:
    """Valid messages (sometimes a QRP sequence among them), encoded back to back."""
    batch = [random_message(rng) for _ in range(rng.randint(1, 6))]
    if rng.random() < 0.15:
        at = rng.randint(0, len(batch))
        batch[at:at] = qrp_sequence(rng)
    return batch, b"".join(m.encode() for m in batch)


def mutate_messages(rng: random.Random, batch: list[Message]) -> bytes:
    """Structure-aware: change header fields and payloads of chosen messages."""
    parts: list[bytes] = []
    for message in batch:
        header = bytearray(message.encode()[:HEADER_LENGTH])
        payload = message.payload
        if rng.random() < 0.35:
            choice = rng.randrange(8)
            if choice == 0:  # length field only: the framer must not trust it
                header[19:23] = rng.choice(INTERESTING_U32).to_bytes(4, "little")
            elif choice == 1:
                header[16] = rng.randrange(256)  # type
            elif choice == 2:
                header[17] = rng.choice([0, 1, 7, 15, 16, 63, 64, 255])  # ttl
                header[18] = rng.choice([0, 1, 7, 15, 16, 63, 64, 255])  # hops
            elif choice in (3, 4):  # payload bytes, length kept consistent
                payload = mutate_bytes(rng, payload, rng.randint(1, 4))
                header[19:23] = len(payload).to_bytes(4, "little")
            elif choice == 5:  # payload bytes, length not updated
                payload = mutate_bytes(rng, payload, rng.randint(1, 4))
            elif choice == 6:  # random payload of random size, consistent length
                payload = random_bytes(rng, 0, 300)
                header[19:23] = len(payload).to_bytes(4, "little")
            else:  # a payload truncated to a prefix
                payload = payload[: rng.randint(0, len(payload))]
                header[19:23] = len(payload).to_bytes(4, "little")
        parts.append(bytes(header) + payload)
    return b"".join(parts)


# -- (a) the framer and payload decoders -------------------------------------------------------

SMALL_LIMITS = PayloadLimits(
    ping=64, pong=80, bye=128, qrp=512, vendor=64, push=64, query=128, query_hit=512, unknown=32
)


@dataclass
class FramerCase:
    pieces: list[bytes]
    small_limits: bool


class FramerTarget:
    def __init__(self) -> None:
        self.corpus: list[bytes] = []
        self.stats: Counter[str] = Counter()

    def generate(self, rng: random.Random) -> FramerCase:
        mode = rng.random()
        if mode < 0.08:
            data = random_bytes(rng, 0, 1500)
        else:
            batch, data = message_stream(rng)
            if mode < 0.55:
                data = mutate_messages(rng, batch)
            if mode > 0.4:
                data = mutate_bytes(rng, data, rng.randint(1, 5), self.corpus)
            if len(self.corpus) < 512:
                self.corpus.append(data)
            elif rng.random() < 0.01:
                self.corpus[rng.randrange(512)] = data
        return FramerCase(chunk(rng, data), rng.random() < 0.15)

    @staticmethod
    def _frame(
        pieces: Iterable[bytes], limits: PayloadLimits
    ) -> tuple[list[Message], ProtocolError | None, int]:
        framer = MessageFramer(limits)
        out: list[Message] = []
        for piece in pieces:
            try:
                out.extend(framer.feed(piece))
            except ProtocolError as error:
                return out, error, 0
            if framer.failed is not None:
                return out, framer.failed, 0
        return out, None, framer.buffered

    def run(self, case: FramerCase) -> None:
        limits = SMALL_LIMITS if case.small_limits else DEFAULT_PAYLOAD_LIMITS
        messages, error, buffered = self._frame(case.pieces, limits)
        whole, whole_error, whole_buffered = self._frame([b"".join(case.pieces)], limits)
        check(messages == whole, "framing in pieces and at once gave different messages")
        check(
            (error is None) == (whole_error is None),
            "framing in pieces and at once disagree on failure",
        )
        check(buffered == whole_buffered, "framing in pieces and at once buffer differently")
        for message in messages:
            check(len(message.payload) <= limits.for_type(message.type), "payload over its limit")
        self.stats["messages framed"] += len(messages)
        self.stats.update(decode_all(messages))
        if error is not None:
            raise error


def decode_all(messages: Iterable[Message]) -> Counter[str]:
    """Every decoder the router applies to a framed message; each may refuse, none may crash."""
    receiver = QrpReceiver()
    seen: Counter[str] = Counter()
    for message in messages:
        try:
            body = message.body()
        except ProtocolError:
            seen["malformed payloads"] += 1
            continue
        seen["payloads decoded"] += 1
        if isinstance(body, Query):
            QueryKeys.from_payload(message.payload)  # documented never to fail
            with contextlib.suppress(ProtocolError):
                body.parsed_extensions()
        elif isinstance(body, QueryHit):
            for result in body.results:
                with contextlib.suppress(ProtocolError):
                    result.parsed_extensions()
            if body.trailer is not None:
                with contextlib.suppress(ProtocolError):
                    body.trailer.ggep()
        elif isinstance(body, RouteTableReset | RouteTablePatch):
            with contextlib.suppress(QrpError):
                if receiver.handle(body):
                    seen["QRP tables installed"] += 1
        elif isinstance(body, VendorMessage):
            key = (body.vendor, body.selector, body.version)
            if key[:2] == MESSAGES_SUPPORTED[:2]:
                with contextlib.suppress(ProtocolError):
                    MessagesSupported.decode(body.data)
            elif key[:2] == HOPS_FLOW[:2]:
                with contextlib.suppress(ProtocolError):
                    decode_hops_flow(body.data)
        with contextlib.suppress(ProtocolError):
            parse_extension_area(message.payload)
    return seen


# -- handshake blocks -------------------------------------------------------------------------

SERVENT_HEADERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (
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
    ),
    (
        ("User-Agent", "LimeWire/5.5.16"),
        ("X-Requeries", "false"),
        ("X-Query-Routing", "0.2"),
        ("X-Ultrapeer", "False"),
        ("X-Max-TTL", "3"),
        ("X-Dynamic-Querying", "0.1"),
        ("X-Version", "5.5.16"),
        ("GGEP", "0.5"),
        ("Vendor-Message", "0.2"),
        ("Listen-IP", "127.0.0.1:6348"),
        ("Remote-IP", "127.0.0.1"),
    ),
    (
        ("User-Agent", "LimeWire/5.5.16"),
        ("X-Ultrapeer", "True"),
        ("X-Degree", "32"),
        ("X-Ultrapeer-Query-Routing", "0.1"),
        ("Listen-IP", "127.0.0.1:6349"),
        ("X-Try-Ultrapeers", "198.51.100.1:6346,198.51.100.2:6346,[2001:db8::5]:6348"),
    ),
    (("User-Agent", "BearShare 4.7"),),
    (),
)
HOSTILE_NAMES = (
    "Listen-IP",
    "X-My-Address",
    "X-Try-Ultrapeers",
    "X-Try",
    "Node",
    "User-Agent",
    "X-Degree",
    "X-Max-TTL",
    "X-Ultrapeer",
    "X-Ultrapeer-Needed",
    "Remote-IP",
    "Accept-Encoding",
    "Content-Encoding",
    "Vendor-Message",
    "X-Query-Routing",
    "X-Ultrapeer-Query-Routing",
    "Bye-Packet",
    "X-Features",
)
KEYWORDS = (
    "True",
    "false",
    " TRUE ",
    "yes",
    "deflate",
    "deflate;q=0",
    "deflate;q=nan",
    "deflate;q=-1",
    "deflate;q=1e999",
    "deflate; q=0.5, gzip",
    "identity",
    "0.1",
    "0.2",
    "",
    "²",
    "٣",
    "\uff13\uff12",  # fullwidth 32
    "-1",
    "99999999999999999999999999999",
    "127.0.0.1:²",
    "1.2.3.4\x0bX-Evil: 1:6346",
    "[fe80::1%eth0]:6346",
    "0.0.0.0:6346",
    "[::]:6346",
    "127.0.0.1.example:6346",
    "224.0.0.1:6346",
    "fe80::1:6346",
    "1.2.3.4:0",
    "1.2.3.4:65536",
    "[::ffff:1.2.3.4]:6346",
    "\x00",
    "\x1b[2J",
    "\u202eevil",
)
TRICKY_CHARS = (
    "0123456789abcdef.:[]%,; -+_\x00\x01\t\x0b\x0c\x1b\x7f\x85\xa0\u2028\u3000\ufeff²٣\uff13İ"
)


def random_text(rng: random.Random, max_length: int) -> str:
    """Any code points but surrogates and CR/LF (the line reader ends a line there)."""
    chars = []
    for _ in range(rng.randint(0, max_length)):
        kind = rng.randrange(6)
        if kind == 0:
            code = rng.randrange(0x20, 0x7F)
        elif kind == 1:
            code = rng.randrange(0, 0x20)
        elif kind == 2:
            code = rng.randrange(0x80, 0x800)
        elif kind == 3:
            code = rng.randrange(0x800, 0xD800)
        elif kind == 4:
            code = rng.randrange(0xE000, 0x110000)
        else:
            code = ord(rng.choice(TRICKY_CHARS))
        if code not in (0x0A, 0x0D):
            chars.append(chr(code))
    return "".join(chars)


def random_endpoint(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return f"{_ip(rng)}:{rng.randint(1, 65535)}"
    if kind == 1:
        host = str(ipaddress.IPv6Address(rng.getrandbits(128)))
        return f"[{host}]:{rng.randint(0, 70000)}"
    if kind == 2:
        return rng.choice(KEYWORDS[19:31])
    if kind == 3:
        return f"{_ip(rng)}:{rng.choice(['6346', '²', '', '-1', '0', '65536', ' 6346 ', '06346'])}"
    return "".join(rng.choice(TRICKY_CHARS) for _ in range(rng.randint(0, 25)))


def hostile_value(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return random_text(rng, 60)
    if kind == 1:
        return rng.choice(KEYWORDS)
    if kind == 2:
        return ",".join(random_endpoint(rng) for _ in range(rng.randint(0, 20)))
    if kind == 3:
        return random_endpoint(rng)
    if kind == 4:
        return str(rng.randint(-(10**40), 10**40))
    if kind == 5:
        return "".join(rng.choice(TRICKY_CHARS) for _ in range(rng.randint(0, 40)))
    # Long: a few hundred characters, now and then past the 4 KiB line limit.
    return random_text(rng, 8) * rng.choice([rng.randint(1, 100), rng.randint(1, 100), 600])


def hostile_headers(rng: random.Random, *, deflate: bool | None = None) -> list[tuple[str, str]]:
    pairs = list(rng.choice(SERVENT_HEADERS))
    for _ in range(rng.choice([0, 1, 1, 2, 3, 6])):
        name = rng.choice(HOSTILE_NAMES)
        name = rng.choice([name, name.lower(), name.upper()])
        same = [i for i, (n, _) in enumerate(pairs) if n.lower() == name.lower()]
        if same and rng.random() < 0.6:
            pairs[same[0]] = (name, hostile_value(rng))
        else:
            pairs.append((name, hostile_value(rng)))
    if deflate is not None:
        pairs = [(n, v) for n, v in pairs if n.lower() != "content-encoding"]
        if deflate:
            pairs.append(("Content-Encoding", "deflate"))
    if rng.random() < 0.5:
        pairs.append(("Accept-Encoding", "deflate"))
    return pairs


def encode_block(first_line: str, pairs: list[tuple[str, str]]) -> bytes:
    lines = [first_line, *(f"{name}: {value}" for name, value in pairs)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


CONNECT_LINES = (
    "GNUTELLA CONNECT/0.6",
    "GNUTELLA CONNECT/0.6",
    "GNUTELLA CONNECT/0.6",
    "GNUTELLA CONNECT/0.7",
    "GNUTELLA CONNECT/0.5",
    "GNUTELLA CONNECT/1.0",
    "GNUTELLA CONNECT/999.999",
    "GNUTELLA CONNECT/0.6 \t",
    "GNUTELLA CONNECT/0.6x",
    "GET / HTTP/1.1",
    "",
)
STATUS_LINES = (
    "GNUTELLA/0.6 200 OK",
    "GNUTELLA/0.6 200 OK",
    "GNUTELLA/0.6 200 OK",
    "GNUTELLA/0.6 200",
    "GNUTELLA/0.6 503 Too many connections",
    "GNUTELLA/0.6 403 Forbidden",
    "GNUTELLA/0.7 200 OK",
    "GNUTELLA/0.4 200 OK",
    "GNUTELLA/0.6 2000 OK",
    "GNUTELLA/0.6 099 x",
    "GNUTELLA OK",
    "HTTP/1.1 200 OK",
    "GNUTELLA/0.6 200 \u00e9\u00e9",
)


def mutate_block(rng: random.Random, block: bytes) -> bytes:
    """Line-level damage on a block: stray CR/LF, continuation lines, lost blank line."""
    if rng.random() >= 0.15:
        return block
    choice = rng.randrange(6)
    pos = rng.randint(0, len(block))
    if choice == 0:
        return block[:pos] + rng.choice([b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"\n\n"]) + block[pos:]
    if choice == 1:
        return block[:pos] + b"\r\n " + random_text(rng, 20).encode() + block[pos:]
    if choice == 2:
        return block.rstrip(b"\r\n") + b"\r\n"  # no end of block (yet)
    if choice == 3:
        return block[:pos] + b"\r\n" + b"X-Many: 1\r\n" * rng.randint(1, 200) + block[pos:]
    if choice == 4:
        return block.replace(b"\r\n", b"\n")
    return mutate_bytes(rng, block, rng.randint(1, 3))


@dataclass
class Stream:
    """What follows a handshake: messages, deflated if the block said so, maybe damaged."""

    data: bytes
    deflated: bool
    note: str


_BOMB: bytes | None = None


def _bomb() -> bytes:
    """Two MiB of zeros deflated (about 2 KiB): past the per-read inflate bound."""
    global _BOMB
    if _BOMB is None:
        compressor = zlib.compressobj(9)
        _BOMB = compressor.compress(bytes(2 * 1024 * 1024)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _BOMB


def stream_after(rng: random.Random, deflated: bool) -> Stream:
    if rng.random() < 0.15:
        return Stream(b"", deflated, "none")
    batch, raw = message_stream(rng)
    if rng.random() < 0.3:
        raw = mutate_messages(rng, batch)
    if not deflated:
        if rng.random() < 0.2:
            raw = mutate_bytes(rng, raw, rng.randint(1, 4))
        return Stream(raw, False, "plain")
    choice = rng.randrange(8)
    compressor = zlib.compressobj()
    wire = compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if choice < 3:
        return Stream(wire, True, "deflated")
    if choice == 3:
        return Stream(mutate_bytes(rng, wire, rng.randint(1, 4)), True, "deflated, damaged")
    if choice == 4:
        return Stream(random_bytes(rng, 1, 400), True, "garbage for deflate")
    if choice == 5:
        return Stream(_bomb(), True, "deflate bomb")
    if choice == 6:
        finished = zlib.compress(raw) + random_bytes(rng, 1, 20)
        return Stream(finished, True, "data after the end of the deflate stream")
    return Stream(raw, True, "plain bytes where deflate was announced")


# -- (b) the handshake state machine ---------------------------------------------------------


@dataclass
class HandshakeCase:
    role: str  # the role of the PeerConnection under test
    our_headers: list[tuple[str, str]]  # what it sends (start / accept / confirm)
    refuse: bool  # our decision: refuse instead of accept / confirm
    pieces: list[bytes]  # what the other side sends
    stream: str  # what the stream part is


class HandshakeTarget:
    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def generate(self, rng: random.Random) -> HandshakeCase:
        role = rng.choice(["acceptor", "initiator"])
        our = [("User-Agent", "fuzz")]
        if rng.random() < 0.6:
            our.append(("Accept-Encoding", "deflate"))
        if rng.random() < 0.5:
            our.append(("Content-Encoding", "deflate"))
        deflated = rng.random() < 0.5
        if role == "acceptor":
            if rng.random() < 0.08:
                data = b"GNUTELLA CONNECT/0.4\n\n"
                deflated = False
            else:
                data = mutate_block(
                    rng, encode_block(rng.choice(CONNECT_LINES), hostile_headers(rng))
                )
            final_line = "GNUTELLA/0.6 200 OK" if rng.random() < 0.85 else rng.choice(STATUS_LINES)
            data += mutate_block(
                rng, encode_block(final_line, hostile_headers(rng, deflate=deflated))
            )
        else:
            data = mutate_block(
                rng, encode_block(rng.choice(STATUS_LINES), hostile_headers(rng, deflate=deflated))
            )
        stream = stream_after(rng, deflated)
        if rng.random() < 0.03:
            data = random_bytes(rng, 0, 600)
        return HandshakeCase(
            role, our, rng.random() < 0.1, chunk(rng, data + stream.data), stream.note
        )

    def run(self, case: HandshakeCase) -> None:
        acceptor = case.role == "acceptor"
        conn = PeerConnection(Role.ACCEPTOR if acceptor else Role.INITIATOR)
        ours = Headers(case.our_headers)
        if not acceptor:
            conn.start(ours)
        try:
            for piece in [*case.pieces, b""]:
                events = conn.receive_data(piece)
                for event in events:
                    if isinstance(event, ConnectRequest) and conn.handshake.state == "got-request":
                        if case.refuse:
                            conn.refuse(
                                503, "Busy", Headers([("X-Try-Ultrapeers", "1.2.3.4:6346")])
                            )
                        else:
                            conn.accept(ours)
                    elif (
                        isinstance(event, ConnectResponse)
                        and conn.handshake.state == "got-response"
                    ):
                        if case.refuse:
                            conn.refuse(503, "Busy", Headers())
                        else:
                            conn.confirm(ours)
                    elif isinstance(event, HandshakeComplete):
                        check(
                            conn.established, "handshake complete but the link is not established"
                        )
                    elif isinstance(event, Message):
                        check(conn.established, "a message before the handshake completed")
                        self.stats["messages"] += 1
                        decode_all([event])
        except ProtocolError as error:
            self.stats[
                "failed in the handshake" if not conn.established else "failed after it"
            ] += 1
            # The contract: a link that failed keeps failing.
            try:
                conn.receive_data(b"\x00")
            except ProtocolError:
                pass
            else:
                raise InvariantViolation(
                    "receive_data() accepted data after a ProtocolError"
                ) from error
            raise
        if conn.failed is not None:
            self.stats["failed after it"] += 1
            raise conn.failed
        if conn.handshake.refused:
            self.stats["refused"] += 1
        if conn.established:
            self.stats["established"] += 1
            self.stats["established, inflating"] += conn.deflate_in
            # And what we send back over the negotiated link works.
            conn.send([Message.from_body(bytes(16), 1, 0, Ping())])
            conn.send_bye(200, "fuzz done")


# -- (c) the parser stage ----------------------------------------------------------------------


class MemorySink:
    """A stage's face, keeping what it is given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Any] = []

    def enqueue(self, event: Any) -> bool:
        self.events.append(event)
        return True

    def enqueue_many(self, events: Iterable[Any]) -> list[Any]:
        self.events.extend(events)
        return []

    def enqueue_housekeeping(self, event: Any) -> None:
        self.events.append(event)

    def take(self) -> list[Any]:
        events, self.events = self.events, []
        return events


class NullLink:
    """A socket that takes everything (the parser never writes to it; the connection stage does)."""

    write_paused = False

    def write_paused_for(self) -> float:
        return 0.0

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FailureLog:
    """Stands in for the handlers' Stage: failures reported to it are crashes."""

    def __init__(self) -> None:
        self.failures: list[tuple[Any, BaseException]] = []
        self.drops = 0

    def event_failed(self, event: Any, error: BaseException) -> None:
        self.failures.append((event, error))

    def count_drop(self, reason: str, event: Any) -> None:
        self.drops += 1


_STATUS_LINE = re.compile(r"GNUTELLA/0\.6 \d{3}(?: [^\x00-\x1f\x7f]*)?|GNUTELLA CONNECT/0\.6")


def check_block(data: bytes) -> None:
    """A handshake block the router wrote: well-formed, single-line values, clean addresses."""
    if data in (b"", b"GNUTELLA OK\n\n"):
        return
    check(data.endswith(b"\r\n\r\n"), f"block does not end with a blank line: {data[-40:]!r}")
    try:
        text = data[:-4].decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvariantViolation(f"block is not UTF-8: {error}") from None
    first, *lines = text.split("\r\n")
    check(_STATUS_LINE.fullmatch(first) is not None, f"bad first line {first!r}")
    pairs = []
    for line in lines:
        name, sep, value = line.partition(": ")
        check(
            bool(sep) and bool(name) and not any(c.isspace() or c == ":" for c in name),
            f"bad header line {line!r}",
        )
        check(not any(c in value for c in "\r\n\x00"), f"bad header value {line!r}")
        pairs.append((name, value))
    headers = Headers(pairs)
    for name in ("X-Try-Ultrapeers", "Listen-IP"):
        listed = headers.get(name)
        if listed is not None:
            found, bad = parse_endpoints(listed)
            check(bad == 0 and bool(found), f"we wrote a bad {name}: {listed!r}")


@dataclass
class ParserCase:
    outgoing: bool  # the router connected (its ParserHandler is the initiator)
    address: tuple[str, int]
    batches: list[list[bytes]]  # StreamChunk data, grouped into handle_events batches
    keep_open: bool  # no PeerLost after the case: the peer holds its slot
    stream: str


class ParserRig:
    """A ParserHandler and a CatcherHandler over real router state and in-memory sinks."""

    LISTEN = ("198.51.100.1", 6346)
    #: Cases between resets (everything closed, state checked, fresh objects).
    RESET_EVERY = 2000

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self.build()

    def build(self) -> None:
        self.config = RouterConfig(
            listen=self.LISTEN,
            target_peers=0,
            max_peers=4,
            max_ultrapeers=3,
            max_leaves=2,
            bootstrap_enabled=False,
        ).validate()
        ticks = iter(range(1 << 62))
        # A real HostCache, on a counting clock (deterministic order) and
        # smaller than the default (sampling sorts the whole cache).
        self.hosts = HostCache(max_hosts=256, clock=lambda: float(next(ticks)))
        self.peers = PeerTable()
        self.policy = HandshakePolicy(self.config, self.peers, self.hosts, lambda: self.LISTEN)
        self.router_sink = MemorySink("router")
        self.connection_sink = MemorySink("connection")
        self.catcher_sink = MemorySink("catcher")
        self.failures = FailureLog()
        self.parser = ParserHandler(
            router=self.router_sink,
            connection=self.connection_sink,
            catcher=self.catcher_sink,
            peers=self.peers,
            policy=self.policy,
            flow=InputFlowControl([], self.config.reader_pause_length),
            max_malformed_per_peer=self.config.max_malformed_per_peer,
        )
        self.parser.stage = cast(Any, self.failures)
        self.catcher = CatcherHandler(
            hosts=self.hosts,
            peers=self.peers,
            connect=lambda address: None,
            target_peers=0,
            max_peers=self.config.max_peers,
            max_ultrapeers=self.config.max_ultrapeers,
            own_addresses=lambda: {self.LISTEN},
        )
        self.catcher.stage = cast(Any, self.failures)
        self.open: list[Peer] = []
        self.joined: set[int] = set()
        self.first_close: dict[int, str] = {}
        self.verified: set[tuple[str, int]] = set()
        self.cases = 0

    # -- generating --------------------------------------------------------------

    def generate(self, rng: random.Random) -> ParserCase:
        outgoing = rng.random() < 0.35
        deflated = rng.random() < 0.4
        if outgoing:
            data = mutate_block(
                rng, encode_block(rng.choice(STATUS_LINES), hostile_headers(rng, deflate=deflated))
            )
        else:
            if rng.random() < 0.05:
                data = b"GNUTELLA CONNECT/0.4\n\n"
                deflated = False
            else:
                connect_line = (
                    "GNUTELLA CONNECT/0.6" if rng.random() < 0.85 else rng.choice(CONNECT_LINES)
                )
                data = mutate_block(rng, encode_block(connect_line, hostile_headers(rng)))
                final_line = (
                    "GNUTELLA/0.6 200 OK" if rng.random() < 0.9 else rng.choice(STATUS_LINES)
                )
                data += mutate_block(
                    rng, encode_block(final_line, hostile_headers(rng, deflate=deflated))
                )
        stream = stream_after(rng, deflated)
        pieces = chunk(rng, data + stream.data)
        batches: list[list[bytes]] = []
        while pieces:
            size = rng.randint(1, 3)
            batches.append(pieces[:size])
            pieces = pieces[size:]
        host = rng.choice(["127.0.0.2", "127.0.0.3", "10.1.2.3", "2001:db8::7", "198.51.100.1"])
        return ParserCase(
            outgoing, (host, rng.randint(1024, 65535)), batches, rng.random() < 0.3, stream.note
        )

    # -- running -------------------------------------------------------------------

    def handle(self, events: list[Any]) -> None:
        self.parser.handle_events(events)
        self._drain()

    def _drain(self) -> None:
        """Do what the other stages would with the parser's output; then report the first problem.

        Everything is handled before anything is raised, so a case that
        breaks an oracle leaves the rig as consistent as one that does not.
        """
        problems: list[Exception] = []
        self.catcher.handle_events(self.catcher_sink.take())
        for event in self.connection_sink.take():
            if isinstance(event, SendRaw):
                try:
                    check_block(event.data)
                except InvariantViolation as error:
                    problems.append(error)
                if event.close_after:
                    event.peer.mark_closing()
                    if event.data:
                        self.stats[f"refused with {event.data[13:16].decode('latin-1')}"] += 1
                    else:
                        self.stats["refused by the peer (or 0.4)"] += 1
            elif isinstance(event, ClosePeer):
                # What the connection stage does (later, in the real router).
                event.peer.mark_closing()
                self.stats[f"closed with {event.code}"] += 1
                self.first_close.setdefault(event.peer.id, f"{event.code} {event.reason}")
        for event in self.router_sink.take():
            if isinstance(event, PeerJoined):
                self.joined.add(event.peer.id)
                self.stats["joined"] += 1
            elif isinstance(event, MessageArrived):
                self.stats["messages to the router"] += 1
            if isinstance(event, MessageArrived) and event.peer.id not in self.joined:
                problems.append(
                    InvariantViolation(
                        "a message from a peer that never joined reached the router stage "
                        f"(peer {event.peer.state}, first closed with "
                        f"{self.first_close.get(event.peer.id, '-')})"
                    )
                )
        for event, reported in self.failures.failures:
            failure = HandlerError(f"{type(event).__name__}: {reported!r}")
            failure.__cause__ = reported
            problems.append(failure)
        self.failures.failures.clear()
        if problems:
            raise problems[0]

    def lose(self, peer: Peer) -> None:
        try:
            self.handle([PeerLost(peer, "fuzz: connection closed")])
        finally:
            self.joined.discard(peer.id)
            self.first_close.pop(peer.id, None)

    def run(self, case: ParserCase) -> None:
        self.cases += 1
        if self.cases % self.RESET_EVERY == 0 or len(self.open) > 3:
            self.close_all()
        role = Role.INITIATOR if case.outgoing else Role.ACCEPTOR
        peer = Peer(case.address, NullLink(), PeerConnection(role), outgoing=case.outgoing)
        try:
            self.handle([PeerOpened(peer)])
            for batch in case.batches:
                self.handle([StreamChunk(peer, data) for data in batch])
        except Exception:
            # Reported by the caller; the peer still goes, as its socket would.
            with contextlib.suppress(Exception):
                self.lose(peer)
            raise
        if case.keep_open and peer.state != PeerState.CLOSING:
            self.open.append(peer)
        else:
            self.lose(peer)
            check(self.peers.get(peer.id) is None, "a closed peer is still in the peer table")
        self.check_state(peer)

    def check_state(self, peer: Peer) -> None:
        # Admission: established neighbours never exceed their slots.
        roles = Counter(p.role for p in self.peers if p.established)
        ultrapeers = roles[ULTRAPEER] + roles[LEGACY]
        check(
            sum(roles.values()) <= self.config.max_peers
            and ultrapeers <= min(self.config.max_ultrapeers, self.config.max_peers)
            and roles[LEAF] <= self.config.max_leaves,
            f"more neighbours than slots ({dict(roles)})",
        )
        check(
            len(peer.user_agent) <= 200 and peer.user_agent.isprintable(),
            f"user agent {peer.user_agent!r}",
        )
        if peer.listen_address is not None:
            address = peer.listen_address
            check(
                parse_endpoint(format_endpoint(address)) == address, f"listen address {address!r}"
            )
        for address in self.hosts._hosts:
            if address in self.verified:
                continue
            check(
                parse_endpoint(format_endpoint(address)) == address, f"host cache holds {address!r}"
            )
            self.verified.add(address)
        # What the router would say to the next peer: 200 (and its connect block) and 503.
        probe = Peer(
            ("203.0.113.9", 6346), NullLink(), PeerConnection(Role.ACCEPTOR), outgoing=False
        )
        verdict = self.policy.respond(
            probe, ConnectRequest("0.6", Headers([("X-Ultrapeer", "True")]))
        )
        verdict.headers.encode()
        self.policy.request_headers(probe).encode()
        try_hosts = self.policy.try_hosts(probe, 10)
        Headers([("X-Try-Ultrapeers", try_hosts)]).encode()
        if try_hosts:
            check(parse_endpoints(try_hosts)[1] == 0, f"X-Try-Ultrapeers {try_hosts!r}")

    def close_all(self) -> None:
        for peer in self.open:
            self.lose(peer)
        self.open = []
        self.stats["bad header values"] += sum(
            n for reason, n in self.peers.rejected.items() if reason.startswith("bad-header:")
        )
        self.stats["hosts cached"] += len(self.hosts)
        check(len(self.peers) == 0, f"peers left after every close: {list(self.peers)}")
        self.build()


# -- (d) the control endpoint's body -----------------------------------------------------------


class ManualReactor(Clock):
    """A clock the router's stage runtime can schedule on (no reactor runs)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, f, *args, **kwargs)


def parse_body(body: bytes) -> dict[str, Any]:
    parse_changes = getattr(controlweb, "parse_changes", None)
    if parse_changes is not None:
        return cast(dict[str, Any], parse_changes(body))
    # TODO(parse_changes): gnurouter.ops.controlweb.parse_changes(body) is being added;
    # until it exists this mirrors ParametersResource.render_POST: json.loads, an
    # object required, ValueError (JSONDecodeError, UnicodeDecodeError) answered 400.
    try:
        changes = json.loads(body or b"{}")
    except ValueError as error:
        raise ControlError(str(error)) from None
    if not isinstance(changes, dict):
        raise ControlError("expected a JSON object of parameter names to values")
    return changes


class ControlTarget:
    def __init__(self) -> None:
        self.reactor = ManualReactor()
        config = RouterConfig(listen=("127.0.0.1", 0), target_peers=0, bootstrap_enabled=False)
        self.service = RouterService(config, reactor=self.reactor)
        self.control: ControlAPI = self.service.control
        self.parameters = self.control.describe()
        self.names = [p["name"] for p in self.parameters]
        self.corpus: list[bytes] = []
        self.stats: Counter[str] = Counter()

    @staticmethod
    def _valid(rng: random.Random, parameter: dict[str, Any]) -> Any:
        kind, low, high = parameter["kind"], parameter["low"], parameter["high"]
        if parameter["nullable"] and rng.random() < 0.2:
            return None
        if kind == "bool":
            return rng.choice([True, False])
        if kind == "choice":
            return rng.choice(parameter["choices"])
        low = 0 if low is None else low
        high = low + 1000 if high is None else high
        if kind == "int":
            return rng.randint(math.ceil(low), math.floor(high))
        value = rng.uniform(low, high)
        return f"{value * 1000:.3f}ms" if kind == "duration" and rng.random() < 0.3 else value

    def _value(self, rng: random.Random, parameter: dict[str, Any]) -> Any:
        if rng.random() < 0.5:
            return self._valid(rng, parameter)
        low, high = parameter["low"], parameter["high"]
        kind = parameter["kind"]
        choice = rng.randrange(12)
        if (
            choice < 3
            and kind in ("int", "float", "duration")
            and low is not None
            and high is not None
        ):
            value = rng.uniform(low, high)
            return round(value) if kind == "int" else value
        if choice == 3 and parameter["choices"]:
            return rng.choice(parameter["choices"])
        if choice == 4:
            return rng.choice([True, False, None, "true", "off", "yes", "null", ""])
        if choice == 5 and low is not None:
            return rng.choice([low, low - 1, low - 1e-9, -low, low / 2])
        if choice == 6 and high is not None:
            return rng.choice([high, high + 1, high * 10, high + 1e-9])
        if choice == 7:
            return rng.choice(
                [
                    "20ms",
                    "1.5s",
                    "10m",
                    " 5 ",
                    "5s5",
                    "1e3",
                    "0x10",
                    "nan",
                    "-inf",
                    "inf",
                    "1e999",
                    "٣",
                    "²",
                ]
            )
        if choice == 8:
            return rng.choice(
                [0, -1, 1, 2**31, 2**63, 2**64 + 1, 10**100, -(10**100), 1e308, 5e-324, -0.0]
            )
        if choice == 9:
            return rng.choice([[], {}, [1], {"a": 1}, [[[]]]])
        if choice == 10:
            return random_text(rng, 30)
        return rng.random() * 10 ** rng.randint(-5, 12)

    def _body(self, rng: random.Random) -> bytes:
        kind = rng.randrange(14)
        if kind < 6:
            changes: dict[str, Any] = {}
            for _ in range(rng.randint(1, 3)):
                parameter = rng.choice(self.parameters)
                changes[parameter["name"]] = self._value(rng, parameter)
            if rng.random() < 0.1:
                changes[rng.choice(["nope", "stage.nope.threshold", "", "\x00", "x" * 300])] = 1
            return json.dumps(changes, allow_nan=True).encode()
        if kind == 6:
            name = rng.choice(self.names)
            return rng.choice(
                [
                    f'{{"{name}": NaN}}',
                    f'{{"{name}": Infinity}}',
                    f'{{"{name}": -Infinity}}',
                    f'{{"{name}": 1e400}}',
                    f'{{"{name}": {"9" * rng.randint(60, 5000)}}}',
                    f'{{"{name}": 1, "{name}": 2}}',
                    f'{{"{name}": "\\ud800"}}',
                    f'{{"{name}": 1}} trailing',
                    f'{{"{name}": 1,}}',
                    f'{{"{name}" 1}}',
                    f"{{'{name}': 1}}",
                ]
            ).encode()
        if kind == 7:
            depth = rng.choice([10, 500, 999, 1000, 5000, 30000])
            opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
            name = rng.choice(self.names)
            return f'{{"{name}": {opener * depth}1{closer * depth}}}'.encode()
        if kind == 8:
            return rng.choice(
                [
                    b"",
                    b" ",
                    b"null",
                    b"[]",
                    b"1",
                    b'"x"',
                    b"\xef\xbb\xbf{}",
                    b"{}",
                    b"\xff\xfe{\x00}\x00",
                    b"true",
                ]
            )
        if kind == 9:
            return random_bytes(rng, 0, 200)
        if kind == 10:
            return (
                b"{" + b'"a":1,' * rng.randint(10_000, 12_000) + b'"b":2}'
            )  # past 64 KiB, or near it
        base = rng.choice(self.corpus) if self.corpus else b"{}"
        return mutate_bytes(rng, base, rng.randint(1, 4), self.corpus)

    def generate(self, rng: random.Random) -> bytes:
        body = self._body(rng)
        if len(body) < 2000:
            if len(self.corpus) < 256:
                self.corpus.append(body)
            elif rng.random() < 0.05:
                self.corpus[rng.randrange(256)] = body
        return body

    def run(self, body: bytes) -> None:
        changes = parse_body(body)
        check(isinstance(changes, dict), "parse_changes returned no dict")
        before = self.control.values()
        try:
            applied = self.control.set_many(changes)
        except ControlError:
            check(_same(self.control.values(), before), "a refused change changed something")
            raise
        self.stats["bodies applied"] += 1
        self.stats["parameters changed"] += len(applied)
        for name, (_, new) in applied.items():
            check(_same(self.control.get(name), new), f"{name} reads back other than it was set")
            self.control.set_many({name: new})  # what it says it holds, it takes back
        json.dumps(self.control.describe(), allow_nan=False)
        # Run what is due (stage wake-ups and the like) so nothing piles up on the clock.
        for _ in range(100):
            now = self.reactor.seconds()
            calls: list[Any] = list(self.reactor.getDelayedCalls())
            if not any(call.getTime() <= now for call in calls):
                break
            self.reactor.advance(0)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- the command ---------------------------------------------------------------------------


def make_targets() -> list[Target]:
    """The four targets, each with its own state (corpora, a parser rig, a router)."""
    framer = FramerTarget()
    handshake = HandshakeTarget()
    parser = ParserRig()
    control = ControlTarget()
    return [
        Target(
            "framer",
            (ProtocolError,),
            framer.generate,
            framer.run,
            weight=0.40,
            describe="MessageFramer + payload decoders",
            stats=lambda: dict(framer.stats),
        ),
        Target(
            "handshake",
            (ProtocolError,),
            handshake.generate,
            handshake.run,
            weight=0.25,
            describe="PeerConnection.receive_data, both roles",
            stats=lambda: dict(handshake.stats),
        ),
        Target(
            "parser",
            (),
            parser.generate,
            parser.run,
            weight=0.20,
            describe="ParserHandler.handle_events",
            stats=lambda: dict(parser.stats),
        ),
        Target(
            "control",
            (ControlError,),
            control.generate,
            control.run,
            weight=0.15,
            describe="controlweb.parse_changes + ControlAPI.set_many",
            stats=lambda: dict(control.stats),
        ),
    ]


def summary_table(results: Sequence[TargetResult]) -> str:
    lines = [
        f"{'target':<10} {'inputs':>10} {'inputs/s':>10} {'rejected':>10} {'crashes':>8}  declared",
        "-" * 66,
    ]
    for r in results:
        declared = ", ".join(r.declared) or "(none)"
        lines.append(
            f"{r.name:<10} {r.inputs:>10,} {r.rate:>10,.0f} "
            f"{r.declared_errors:>10,} {r.crashes:>8,}  {declared}"
        )
    total_inputs = sum(r.inputs for r in results)
    total_seconds = sum(r.seconds for r in results)
    lines.append("-" * 66)
    total_rate = total_inputs / total_seconds if total_seconds else 0.0
    lines.append(
        f"{'total':<10} {total_inputs:>10,} {total_rate:>10,.0f} "
        f"{sum(r.declared_errors for r in results):>10,} {sum(r.crashes for r in results):>8,}"
    )
    return "\n".join(lines)


def report(
    results: Sequence[TargetResult],
    *,
    seed: int,
    inputs: int,
    wall: float,
    targets: Sequence[Target] = (),
) -> dict[str, Any]:
    described = {t.name: t for t in targets}

    def stats_of(name: str) -> dict[str, int]:
        target = described.get(name)
        return dict(sorted(target.stats().items())) if target and target.stats else {}

    return {
        "seed": seed,
        "inputs_requested": inputs,
        "inputs": sum(r.inputs for r in results),
        "crashes": sum(r.crashes for r in results),
        "wall_seconds": round(wall, 3),
        "parse_changes": hasattr(controlweb, "parse_changes"),
        "python": sys.version.split()[0],
        "targets": {
            r.name: {
                "inputs": r.inputs,
                "quota": r.quota,
                "seconds": round(r.seconds, 3),
                "inputs_per_second": round(r.rate, 1),
                "declared": r.declared,
                "declared_errors": r.declared_errors,
                "crashes": r.crashes,
                "describe": described[r.name].describe if r.name in described else "",
                "reached": stats_of(r.name),
                "signatures": r.signatures,
                "examples": [asdict(c) for c in r.examples],
            }
            for r in results
        },
    }


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def main(argv: Sequence[str] | None = None, targets: Sequence[Target] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--inputs", type=int, default=DEFAULT_INPUTS, help="total inputs (1000000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every target's generator (1)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--targets", default=None, help="comma-separated subset of the targets")
    parser.add_argument("--name", default="fuzz", help="result file var/fuzz/NAME.json")
    parser.add_argument("--show", type=int, default=5, help="crashes printed (5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if not 1 <= args.inputs <= MAX_INPUTS:
        parser.error(f"--inputs must be within 1..{MAX_INPUTS}")
    if args.seconds is not None and not args.seconds > 0:
        parser.error("--seconds must be positive")
    if not _NAME.fullmatch(args.name):
        parser.error("--name must be a plain file name (letters, digits, '_', '.', '-')")

    # Every bad input is logged by the router at info/warning level: far too much.
    previous_disable = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        return _run(parser, args, targets)
    finally:
        logging.disable(previous_disable)
        gc.unfreeze()


def _run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, targets: Sequence[Target] | None
) -> int:
    chosen = list(targets) if targets is not None else make_targets()
    if args.targets:
        wanted = [name.strip() for name in args.targets.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {t.name for t in chosen})
        if unknown:
            known = ", ".join(t.name for t in chosen)
            parser.error(f"unknown target(s) {', '.join(unknown)}; known: {known}")
        chosen = [t for t in chosen if t.name in wanted]
    gc.collect()
    gc.freeze()  # the set-up (router, corpora) is never garbage; skip it in every collection

    def progress(result: TargetResult) -> None:
        if not args.quiet and not args.json:
            print(
                f"  {result.name:<10} {result.inputs:>10,}/{result.quota:,} "
                f"{result.rate:>9,.0f}/s  crashes {result.crashes}",
                file=sys.stderr,
                flush=True,
            )

    started = time.perf_counter()
    results = run_all(chosen, args.inputs, args.seed, args.seconds, progress)
    wall = time.perf_counter() - started
    data = report(results, seed=args.seed, inputs=args.inputs, wall=wall, targets=chosen)
    RESULT_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULT_DIR / f"{args.name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=2))
        return 1 if data["crashes"] else 0
    python = data["python"]
    print(f"fuzz: seed {args.seed}, {data['inputs']:,} inputs in {wall:.1f} s (Python {python})")
    print(summary_table(results))
    for name, target in data["targets"].items():
        if target["reached"]:
            reached = ", ".join(f"{k} {v:,}" for k, v in target["reached"].items())
            print(f"  {name} reached: {reached}")
    for result in results:
        for signature, count in result.signatures.items():
            print(f"  {result.name}: {count} x {signature}")
    shown = [crash for result in results for crash in result.examples][: args.show]
    for crash in shown:
        print(f"\ncrash in {crash.target} (input #{crash.index}): {crash.error}")
        print(f"  at {crash.where}")
        print(f"  input: {crash.input}")
    print(f"result: {path.relative_to(ROOT)}")
    return 1 if data["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
