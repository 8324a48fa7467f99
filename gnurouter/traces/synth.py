"""Synthetic Gnutella traffic with the statistics of the original live run.

The Sandstorm router's 37-hour live run (docs: /shared/reference/anchors.md)
saw 179.55 packets/s on average, very bursty, more than half of them pongs,
about 12 connections open at a time out of 72,396 over the run (so a mean
connection lifetime near 22 s), and many malformed packets.  This generator
reproduces those figures, with a knob for each:

* **Rate and burstiness**: arrivals follow a two-state Markov-modulated
  Poisson process.  With burstiness B the process spends 1/(2B) of the time
  in bursts at B x the mean event rate and the rest at the rate that keeps
  the mean; B = 1 is a plain Poisson process.  Bursts last `burst_length`
  seconds on average.  On top of that, answers come in trains: one arrival of
  pongs is 1-5 pongs answering one ping, as a pong cache answers.
* **Message mix**: relative weights per type (`mix`), with `query_share`
  setting the query weight directly.  Pongs and query hits mostly answer a
  ping or query that another connection sent earlier (`reply_share`), so a
  router replaying the trace finds reverse routes; pushes name the servent id
  of an earlier query hit.
* **Malformed share**: that fraction of messages has a payload the router's
  parser drops and counts (a pong shorter than 14 bytes, a query without its
  NUL, a truncated query hit or push, a ping with non-GGEP bytes, a vendor
  message shorter than its header).  `framing_errors` is the share of
  connections that end with a header announcing an impossible length (a RAW
  record), which the router answers with Bye and a disconnect.
* **Connections**: about `connections` open at a time; arrivals are Poisson,
  lifetimes log-normal (median `lifetime` / e^(sigma^2 / 2), sigma 1.2) with
  the given mean.  Some peers are much chattier than others (log-normal
  activity weights).  A departing peer sends Bye first 30% of the time.

Everything random comes from one `random.Random(seed)`: the same
configuration and seed give the same records, byte for byte.  Addresses in
pongs, hits and pushes are in 127.0.0.0/8, so a router acting on them (its
catcher dials addresses learned from pongs) only ever dials loopback.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gnurouter.protocol.ggep import GGEPExtension
from gnurouter.protocol.messages import (
    HEADER,
    QUERY_F_GGEP_H,
    QUERY_F_MARK,
    Bye,
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    QueryHitTrailer,
    RouteTableReset,
    VendorMessage,
    new_guid,
)
from gnurouter.traces.format import Direction, Kind, Record

#: The original run's average (anchors.md).
ORIGINAL_RATE = 179.55

#: Relative weights per message type.  Pongs over half (anchors.md), queries
#: 15% as in the SEDA overload experiment's approximation of the trace.
DEFAULT_MIX: dict[str, float] = {
    "pong": 0.55,
    "ping": 0.17,
    "query": 0.15,
    "query-hit": 0.08,
    "push": 0.02,
    "vendor": 0.02,
    "qrp": 0.01,
}
MIX_TYPES = tuple(DEFAULT_MIX)

#: Mean messages per arrival for each type (trains of answers).
_TRAIN_MAX = {"pong": 5, "query-hit": 2}

_WORDS = [
    "free",
    "music",
    "live",
    "mix",
    "remix",
    "acoustic",
    "demo",
    "concert",
    "album",
    "single",
    "video",
    "mp3",
    "ogg",
    "flac",
    "jazz",
    "blues",
    "rock",
    "folk",
    "punk",
    "metal",
    "soul",
    "funk",
    "classical",
    "piano",
    "guitar",
    "violin",
    "drums",
    "radio",
    "session",
    "bootleg",
    "unplugged",
    "cover",
    "version",
    "original",
    "extended",
    "edit",
    "club",
    "dance",
    "night",
    "day",
    "summer",
    "winter",
    "love",
    "song",
    "ballad",
    "theme",
    "soundtrack",
    "game",
    "movie",
    "episode",
    "linux",
    "iso",
    "manual",
    "guide",
    "book",
    "lecture",
    "talk",
    "interview",
    "podcast",
    "news",
    "report",
    "history",
    "nature",
    "ocean",
    "forest",
    "river",
    "mountain",
    "city",
    "train",
    "road",
    "star",
    "moon",
    "sun",
    "rain",
    "snow",
    "fire",
]
_EXTENSIONS = ("mp3", "ogg", "flac", "avi", "mpg", "zip", "pdf", "txt", "jpg", "wav")
_VENDORS = (b"GTKG", b"LIME", b"BEAR", b"RAZA", b"GNUC")


@dataclass
class SynthConfig:
    duration: float = 600.0
    rate: float = ORIGINAL_RATE
    burstiness: float = 4.0
    burst_length: float = 2.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    query_share: float | None = None
    malformed: float = 0.02
    framing_errors: float = 0.01
    connections: float = 12.0
    lifetime: float = 22.0
    reply_share: float = 0.8
    seed: int = 1

    def validate(self) -> SynthConfig:
        if not 0 < self.duration <= 30 * 86_400:
            raise ValueError(f"duration: {self.duration}s is outside (0, 30 days]")
        if not 0 < self.rate <= 1_000_000:
            raise ValueError(f"rate: {self.rate} messages/s is outside (0, 1e6]")
        if not 1.0 <= self.burstiness <= 100.0:
            raise ValueError(f"burstiness: {self.burstiness} is outside 1..100 (1 = Poisson)")
        if not 0.01 <= self.burst_length <= 3600:
            raise ValueError(f"burst length: {self.burst_length}s is outside 10ms..1h")
        unknown = sorted(set(self.mix) - set(MIX_TYPES))
        if unknown:
            raise ValueError(
                f"mix: unknown message type(s) {', '.join(unknown)}; known: {', '.join(MIX_TYPES)}"
            )
        if any(w < 0 or not math.isfinite(w) for w in self.mix.values()):
            raise ValueError("mix: weights must be finite and non-negative")
        if self.query_share is not None and not 0 <= self.query_share <= 1:
            raise ValueError(f"query share: {self.query_share} is outside 0..1")
        if sum(self.shares().values()) <= 0:
            raise ValueError("mix: at least one message type needs a positive weight")
        if not 0 <= self.malformed <= 1:
            raise ValueError(f"malformed share: {self.malformed} is outside 0..1")
        if not 0 <= self.framing_errors <= 1:
            raise ValueError(f"framing-error share: {self.framing_errors} is outside 0..1")
        if not 1 <= self.connections <= 10_000:
            raise ValueError(f"connections: {self.connections} is outside 1..10000")
        if not 0.1 <= self.lifetime <= 86_400 * 30:
            raise ValueError(f"lifetime: {self.lifetime}s is outside 100ms..30 days")
        if not 0 <= self.reply_share <= 1:
            raise ValueError(f"reply share: {self.reply_share} is outside 0..1")
        return self

    def shares(self) -> dict[str, float]:
        """Message shares per type (normalised; `query_share` pins the query share)."""
        weights = {name: float(self.mix.get(name, 0.0)) for name in MIX_TYPES}
        if self.query_share is None:
            total = sum(weights.values())
            return {k: v / total for k, v in weights.items()} if total else weights
        others = {k: v for k, v in weights.items() if k != "query"}
        total = sum(others.values())
        rest = 1.0 - self.query_share
        shares = {k: (v / total * rest if total else 0.0) for k, v in others.items()}
        shares["query"] = self.query_share if total else (1.0 if self.query_share else 0.0)
        return {k: shares[k] for k in MIX_TYPES}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_mix(text: str) -> dict[str, float]:
    """'pong=0.5,query=0.2' -> weights (types not named keep their default weight)."""
    mix = dict(DEFAULT_MIX)
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"mix: expected TYPE=WEIGHT, got {item.strip()!r}")
        if name not in MIX_TYPES:
            raise ValueError(f"mix: unknown message type {name!r}; known: {', '.join(MIX_TYPES)}")
        try:
            mix[name] = float(value)
        except ValueError:
            raise ValueError(f"mix: weight of {name} is not a number: {value!r}") from None
    return mix


@dataclass
class SynthSummary:
    """What the generator produced, counted as it went."""

    messages: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    framing_errors: int = 0
    connections: int = 0
    closes: int = 0
    byes: int = 0

    def count(self, name: str) -> None:
        self.by_type[name] = self.by_type.get(name, 0) + 1


class _Conn:
    __slots__ = ("bad_framing", "close_us", "id", "last_us", "weight")

    def __init__(self, conn_id: int, weight: float, bad_framing: bool) -> None:
        self.id = conn_id
        self.weight = weight
        self.bad_framing = bad_framing
        self.last_us = 0
        self.close_us = 0


class Synthesizer:
    """Iterate to get the records, in time order; `summary` counts them as they go."""

    SIGMA = 1.2  # log-normal shape of connection lifetimes

    def __init__(self, config: SynthConfig) -> None:
        self.config = config.validate()
        self.rng = random.Random(config.seed)
        self.summary = SynthSummary()
        shares = config.shares()
        # Arrivals ("events") carry trains, so the event mix is the message
        # mix divided by the mean train length, and the event rate follows.
        self._train_mean = {name: (1 + _TRAIN_MAX.get(name, 1)) / 2 for name in MIX_TYPES}
        event_weights = {name: shares[name] / self._train_mean[name] for name in MIX_TYPES}
        messages_per_event = sum(shares.values()) / sum(event_weights.values())
        self._event_types = [name for name in MIX_TYPES if event_weights[name] > 0]
        self._event_weights = [event_weights[name] for name in self._event_types]
        self._event_rate = config.rate / messages_per_event
        self._pending: list[tuple[int, int, Record, tuple[str, bool] | None]] = []
        self._seq = 0
        self._open: dict[int, _Conn] = {}
        self._closing: list[tuple[int, int]] = []
        self._next_conn = 1
        self._pings: deque[tuple[bytes, int]] = deque(maxlen=256)
        self._queries: deque[tuple[bytes, int]] = deque(maxlen=256)
        self._servents: deque[tuple[bytes, int]] = deque(maxlen=256)

    # -- metadata for the trace header --------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {"synth": self.config.to_json(), "generator": "gnurouter.traces.synth"}

    # -- helpers -------------------------------------------------------------------

    def _guid(self) -> bytes:
        return new_guid(self.rng.randbytes)

    def _ip(self) -> str:
        rng = self.rng
        return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    def _port(self) -> int:
        return 6346 if self.rng.random() < 0.6 else self.rng.randrange(1025, 65536)

    def _ttl_hops(self) -> tuple[int, int]:
        rng = self.rng
        hops = rng.choices(range(7), weights=(30, 25, 18, 12, 8, 5, 2))[0]
        total = rng.choices((7, 6, 5, 4, 10), weights=(70, 10, 8, 4, 8))[0]
        return max(1, total - hops), hops

    def _words(self, low: int, high: int) -> str:
        return " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(low, high)))

    def _push(
        self, time_us: int, conn: int, kind: int, data: bytes, note: tuple[str, bool] | None = None
    ) -> None:
        self._seq += 1
        record = Record(time_us, kind, Direction.IN, conn, data)
        heapq.heappush(self._pending, (time_us, self._seq, record, note))

    def _emit_message(
        self, time_us: int, conn: _Conn, message: Message, name: str, malformed: bool = False
    ) -> None:
        self._push(time_us, conn.id, Kind.MESSAGE, message.encode(), (name, malformed))
        conn.last_us = max(conn.last_us, time_us)

    def _reply_to(self, memory: deque[tuple[bytes, int]], conn: int) -> bytes | None:
        if memory and self.rng.random() < self.config.reply_share:
            guid, origin = memory[self.rng.randrange(len(memory))]
            if origin != conn:
                return guid
        return None

    # -- messages ------------------------------------------------------------------

    def _build(self, name: str, conn: int) -> list[Message]:
        rng = self.rng
        ttl, hops = self._ttl_hops()
        if name == "ping":
            guid = self._guid()
            self._pings.append((guid, conn))
            body: Any = Ping()
            if rng.random() < 0.1:
                body = Ping((GGEPExtension("SCP", b""),))
            return [Message.from_body(guid, ttl, hops, body)]
        if name == "pong":
            guid = self._reply_to(self._pings, conn) or self._guid()
            count = rng.randint(1, _TRAIN_MAX["pong"])
            return [
                Message.from_body(
                    guid,
                    max(1, 7 - hops),
                    hops,
                    Pong(
                        self._port(),
                        self._ip(),
                        int(rng.paretovariate(1.2)) - 1,
                        int(rng.paretovariate(1.1) * 100),
                    ),
                )
                for _ in range(count)
            ]
        if name == "query":
            guid = self._guid()
            self._queries.append((guid, conn))
            flags = QUERY_F_MARK | QUERY_F_GGEP_H if rng.random() < 0.7 else 0
            return [Message.from_body(guid, ttl, hops, Query(flags, self._words(1, 4)))]
        if name == "query-hit":
            guid = self._reply_to(self._queries, conn) or self._guid()
            hits = []
            for _ in range(rng.randint(1, _TRAIN_MAX["query-hit"])):
                servent_id = self.rng.randbytes(16)
                self._servents.append((servent_id, conn))
                results = tuple(
                    QueryHitResult(
                        rng.randrange(1, 5000),
                        int(rng.lognormvariate(15, 1.5)) & 0xFFFFFFFF,
                        f"{self._words(1, 4)}.{rng.choice(_EXTENSIONS)}",
                    )
                    for _ in range(rng.randint(1, 5))
                )
                trailer = QueryHitTrailer(rng.choice(_VENDORS), b"\x01\x11", b"")
                hit = QueryHit(
                    self._port(), self._ip(), rng.choice((56, 128, 1000, 10000)),
                    results, servent_id, trailer,
                )  # fmt: skip
                hits.append(Message.from_body(guid, max(1, 7 - hops), hops, hit))
            return hits
        if name == "push":
            servent = self._reply_to(self._servents, conn) or self.rng.randbytes(16)
            body = Push(servent, rng.randrange(1, 5000), self._ip(), self._port())
            return [Message.from_body(self._guid(), ttl, hops, body)]
        if name == "vendor":
            body = VendorMessage(rng.choice(_VENDORS), rng.randrange(1, 20), 1, b"\x00" * 4)
            return [Message.from_body(self._guid(), 1, 0, body)]
        if name == "qrp":
            return [Message.from_body(self._guid(), 1, 0, RouteTableReset(65536, 7))]
        raise AssertionError(name)  # pragma: no cover

    def _malformed(self, message: Message) -> Message:
        """The same message with a payload the parser must reject."""
        rng = self.rng
        payload = message.payload
        type_ = message.type
        if type_ == MessageType.PONG:
            payload = payload[: rng.randrange(0, 14)]
        elif type_ == MessageType.QUERY:
            payload = payload[:2] + self._words(1, 3).encode()  # no NUL
        elif type_ == MessageType.QUERY_HIT:
            payload = payload[: rng.randrange(0, 27)]
        elif type_ == MessageType.PUSH:
            payload = payload[: rng.randrange(0, 26)]
        elif type_ == MessageType.PING:
            payload = b"\x01" + rng.randbytes(rng.randrange(1, 12))
        elif type_ in (MessageType.VENDOR, MessageType.VENDOR_STANDARD):
            payload = payload[: rng.randrange(0, 8)]
        elif type_ == MessageType.QRP:
            payload = b"\x07" + payload[1:]  # unknown QRP variant
        return Message(message.guid, type_, message.ttl, message.hops, payload)

    # -- connections ---------------------------------------------------------------

    def _lifetime(self) -> float:
        sigma = self.SIGMA
        mu = math.log(self.config.lifetime) - sigma * sigma / 2
        return self.rng.lognormvariate(mu, sigma)

    def _open_conn(self, time_us: int) -> _Conn:
        conn = _Conn(
            self._next_conn,
            self.rng.lognormvariate(0, 1.0),
            self.rng.random() < self.config.framing_errors,
        )
        self._next_conn += 1
        conn.last_us = time_us
        conn.close_us = time_us + max(1000, int(self._lifetime() * 1e6))
        self._open[conn.id] = conn
        heapq.heappush(self._closing, (conn.close_us, conn.id))
        info = {"address": f"{self._ip()}:{self._port()}", "synthetic": True}
        self._push(time_us, conn.id, Kind.OPEN, json.dumps(info, separators=(",", ":")).encode())
        return conn

    def _close_conn(self, conn: _Conn) -> None:
        del self._open[conn.id]
        at = max(conn.close_us, conn.last_us + 1)
        if conn.bad_framing:
            # A query header announcing 4 GiB: nothing can be framed after it.
            header = HEADER.pack(self._guid(), MessageType.QUERY, 7, 0, 0xFFFFFFFF)
            garbage = header + self.rng.randbytes(9)
            self._push(at, conn.id, Kind.RAW, garbage)
            at += 1
        elif self.rng.random() < 0.3:
            bye = Message.from_body(self._guid(), 1, 0, Bye(200, "Closing"))
            self._emit_message(at, conn, bye, "bye")
            at += 1
        self._push(at, conn.id, Kind.CLOSE, b"peer closed")

    def _connections_until(self, time_us: int, arrivals: list[int]) -> None:
        """Open and close connections whose time came before `time_us`."""
        conn_rate = self.config.connections / self.config.lifetime
        while True:
            next_close = self._closing[0][0] if self._closing else None
            next_open = arrivals[0]
            if next_close is not None and next_close <= min(next_open, time_us):
                _, conn_id = heapq.heappop(self._closing)
                conn = self._open.get(conn_id)
                if conn is not None:
                    if conn.last_us >= conn.close_us:
                        # A train still pending: close just after it instead.
                        conn.close_us = conn.last_us + 1
                        heapq.heappush(self._closing, (conn.close_us, conn.id))
                        continue
                    self._close_conn(conn)
                continue
            if next_open <= time_us:
                self._open_conn(next_open)
                arrivals[0] = next_open + int(self.rng.expovariate(conn_rate) * 1e6) + 1
                continue
            return

    # -- the run -------------------------------------------------------------------

    def __iter__(self) -> Iterator[Record]:
        config = self.config
        rng = self.rng
        end_us = int(config.duration * 1e6)
        burst = config.burstiness
        high_share = 1.0 / (2.0 * burst)
        high_rate = burst * self._event_rate
        low_rate = self._event_rate / (2.0 * (1.0 - high_share)) if burst > 1 else high_rate
        mean_high = config.burst_length
        mean_low = config.burst_length * (1.0 - high_share) / high_share
        in_burst = rng.random() < high_share
        switch_at = rng.expovariate(1.0 / (mean_high if in_burst else mean_low))

        for i in range(max(1, round(config.connections))):
            self._open_conn(i * 1000)
        conn_rate = config.connections / config.lifetime
        arrivals = [int(rng.expovariate(conn_rate) * 1e6) + 1000]
        now = 0.0
        while True:
            rate = high_rate if in_burst else low_rate
            step = rng.expovariate(rate)
            if now + step >= switch_at:
                now = switch_at
                in_burst = not in_burst
                switch_at = now + rng.expovariate(1.0 / (mean_high if in_burst else mean_low))
                continue
            now += step
            time_us = int(now * 1e6)
            if time_us >= end_us:
                break
            self._connections_until(time_us, arrivals)
            yield from self._release(time_us)
            if not self._open:
                self._open_conn(time_us)
            conns = list(self._open.values())
            conn = rng.choices(conns, weights=[c.weight for c in conns])[0]
            name = rng.choices(self._event_types, weights=self._event_weights)[0]
            at = time_us
            for message in self._build(name, conn.id):
                bad = rng.random() < config.malformed
                if bad:
                    message = self._malformed(message)
                self._emit_message(at, conn, message, name, bad)
                at += int(rng.expovariate(1000.0) * 1e6) + 1  # trains: ~1 ms apart
        self._connections_until(end_us - 1, [end_us])
        yield from self._release(end_us)

    def _release(self, time_us: int) -> Iterator[Record]:
        """Records before `time_us`, counted in `summary` as they leave (later ones are cut)."""
        pending = self._pending
        summary = self.summary
        while pending and pending[0][0] < time_us:
            _, _, record, note = heapq.heappop(pending)
            if record.kind == Kind.MESSAGE:
                assert note is not None
                name, malformed = note
                summary.messages += 1
                summary.count(name)
                if malformed:
                    summary.malformed += 1
                if name == "bye":
                    summary.byes += 1
            elif record.kind == Kind.OPEN:
                summary.connections += 1
            elif record.kind == Kind.CLOSE:
                summary.closes += 1
            elif record.kind == Kind.RAW:
                summary.framing_errors += 1
            yield record


def synthesize(config: SynthConfig) -> Iterator[Record]:
    """The records of a synthetic trace, in time order (see `Synthesizer`)."""
    return iter(Synthesizer(config))


def describe(config: SynthConfig | Mapping[str, Any]) -> str:
    values = config.to_json() if isinstance(config, SynthConfig) else dict(config)
    return " ".join(f"{k}={v}" for k, v in values.items())
