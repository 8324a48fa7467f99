"""The overload experiment's load generator: a process of its own with real servent links.

It opens `connections` links to the router (each doing the 0.6 handshake)
and sends bursts of `burst` messages every burst/rate seconds, drawn from a
trace-like mix with a fixed query share.  Every routed message is stamped by
its GUID when sent and timed when it first reaches another of our links, so
latency is measured end to end, after routing, per message type.  Replies are
real replies: a pong answers a ping this process received, a query hit a
query, a push names a servent id from a hit; so they travel reverse routes.

Its links are ultrapeer links, as the original's peers were all equals (a
leaf's own queries would be run by dynamic querying, and a leaf gets no
relayed pings).  Queries carry the hop counts of relayed traffic, so that a
router's Hops-Flow means something; with `--honour-hops-flow` the generator
keeps to it as real servents do, shedding at the source the queries a link
was asked not to carry (counted in `shed_at_source`).

Run by `gnurouter bench overload`; prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import deque
from typing import Any

from hdrh.histogram import HdrHistogram
from twisted.internet import defer, task

from gnurouter.edge.servent import ServentProtocol, connect_servent
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.messages import (
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    VendorMessage,
    new_guid,
)
from gnurouter.protocol.vendor import HOPS_FLOW, decode_hops_flow

#: Relative weights of the non-query part of the mix (the trace's shares,
#: pongs over half; see traces/README.md).  Queries take `query_share`.
TRACE_MIX = {"pong": 0.55, "ping": 0.17, "query-hit": 0.08, "push": 0.02, "vendor": 0.02}
TIMED_TYPES = ("ping", "pong", "query", "query-hit", "push")
#: Hop counts of the queries sent, and their weights: traffic a neighbour
#: relays has come some way (a trace-like spread, most at 1-3 hops).
QUERY_HOPS = (0, 1, 2, 3, 4)
QUERY_HOPS_WEIGHTS = (1, 3, 3, 2, 1)
#: How the generator's links introduce themselves: ultrapeers speaking vendor messages.
GENERATOR_HEADERS = (
    ("User-Agent", "gnurouter-loadgen/0.1"),
    ("X-Ultrapeer", "True"),
    ("Vendor-Message", "0.1"),
    ("Pong-Caching", "0.1"),
    ("GGEP", "0.5"),
    ("Bye-Packet", "0.1"),
)
_NAME: dict[int, str] = {
    MessageType.PING: "ping",
    MessageType.PONG: "pong",
    MessageType.QUERY: "query",
    MessageType.QUERY_HIT: "query-hit",
    MessageType.PUSH: "push",
}


class LoadGenerator:
    def __init__(
        self,
        links: list[ServentProtocol],
        *,
        rate: float,
        burst: int,
        query_share: float,
        seed: int,
        measure_from: float = 0.0,
        clock: Any = time.monotonic,
        honour_hops_flow: bool = False,
    ) -> None:
        self.links = links
        self.rate = rate
        self.burst = burst
        self.clock = clock
        #: Messages sent before this time (the warm-up) are routed but not measured.
        self.measure_from = measure_from
        self.random = random.Random(seed)
        rest = 1.0 - query_share
        total = sum(TRACE_MIX.values())
        self.types = ["query", *TRACE_MIX]
        self.weights = [query_share, *(rest * w / total for w in TRACE_MIX.values())]
        # Received requests waiting for an answer, per link: (guid, hops).
        self.pending_pings: list[deque[tuple[bytes, int]]] = [deque(maxlen=256) for _ in links]
        self.pending_queries: list[deque[tuple[bytes, int]]] = [deque(maxlen=256) for _ in links]
        self.servent_ids: deque[bytes] = deque(maxlen=64)
        # A flooded request reaches several of our links; one answer each.
        self.answered: set[bytes] = set()
        self.sent_at: dict[tuple[bytes, int], float] = {}
        self.sent = dict.fromkeys(TIMED_TYPES, 0)
        self.sent_untimed = 0
        self.received = dict.fromkeys(TIMED_TYPES, 0)
        self.latency = {name: HdrHistogram(1, 60_000_000, 2) for name in TIMED_TYPES}
        self.lateness = HdrHistogram(1, 60_000_000, 2)
        self._next_link = 0
        self.honour_hops_flow = honour_hops_flow
        #: The Hops-Flow each link was last sent (absent: none), and how many arrived.
        self.hops_flow: dict[int, int] = {}
        self.hops_flow_received = 0
        #: Queries not sent because their link's Hops-Flow refused their hop count.
        self.shed_at_source = 0
        for index, link in enumerate(links):
            link.on_message = lambda message, index=index: self.arrived(index, message)

    # -- receiving -------------------------------------------------------

    def arrived(self, index: int, message: Message) -> None:
        key = (message.guid, message.type)
        sent = self.sent_at.pop(key, None)
        name = _NAME.get(message.type)
        if sent is not None and name is not None:
            micros = int((self.clock() - sent) * 1_000_000)
            self.latency[name].record_value(max(1, min(micros, 60_000_000)))
            self.received[name] += 1
        if message.type == MessageType.PING:
            self.pending_pings[index].append((message.guid, message.hops))
        elif message.type == MessageType.QUERY:
            self.pending_queries[index].append((message.guid, message.hops))
        elif message.type == MessageType.QUERY_HIT:
            self.servent_ids.append(message.payload[-16:])
        elif message.type == MessageType.VENDOR:
            self._vendor(index, message)

    def _vendor(self, index: int, message: Message) -> None:
        body = message.body()
        if not isinstance(body, VendorMessage):
            return
        if (body.vendor, body.selector) != HOPS_FLOW[:2]:
            return
        try:
            hops = decode_hops_flow(body.data)
        except ProtocolError:
            return
        self.hops_flow_received += 1
        self.hops_flow[index] = hops

    # -- sending ---------------------------------------------------------

    def _pick_link(self) -> int:
        self._next_link = (self._next_link + 1) % len(self.links)
        return self._next_link

    def _make(self, kind: str, index: int) -> tuple[Message, bool]:
        """A message of `kind` for link `index`; the flag says whether it is timed."""
        rnd = self.random
        if kind == "query":
            body = Query(flags=0, criteria=f"load {rnd.randrange(1 << 30)}")
            [hops] = rnd.choices(QUERY_HOPS, QUERY_HOPS_WEIGHTS)
            return Message.from_body(new_guid(), 2, hops, body), True
        if kind == "ping":
            return Message.from_body(new_guid(), 2, 0, Ping()), True
        if kind == "pong":
            guid_hops = self._unanswered(self.pending_pings[index])
            if guid_hops is not None:
                guid, hops = guid_hops
                pong = Pong(6346, f"127.1.{index}.{rnd.randrange(1, 250)}", 10, 1000)
                return Message.from_body(guid, hops + 1, 0, pong), True
            pong = Pong(6346, "127.2.0.1", 1, 1)
            return Message.from_body(new_guid(), 1, 1, pong), False  # no route: dropped
        if kind == "query-hit":
            result = (QueryHitResult(rnd.randrange(1000), 4096, "result.ogg"),)
            servent_id = bytes([index]) * 16
            guid_hops = self._unanswered(self.pending_queries[index])
            if guid_hops is not None:
                guid, hops = guid_hops
                hit = QueryHit(6346, "127.1.0.1", 1000, result, servent_id)
                return Message.from_body(guid, hops + 1, 0, hit), True
            hit = QueryHit(6346, "127.1.0.1", 1000, result, servent_id)
            return Message.from_body(new_guid(), 2, 0, hit), False
        if kind == "push":
            others = [sid for sid in self.servent_ids if sid[0] != index]  # not our own
            if others:
                servent_id = others[rnd.randrange(len(others))]
                push = Push(servent_id, 1, "127.1.0.2", 6346)
                return Message.from_body(new_guid(), 3, 0, push), True
            return Message.from_body(new_guid(), 3, 0, Push(bytes(16), 1, "127.1.0.2", 1)), False
        vendor = VendorMessage(b"GNRT", 1, 1, b"")
        return Message.from_body(new_guid(), 1, 0, vendor), False

    def _unanswered(self, pending: deque[tuple[bytes, int]]) -> tuple[bytes, int] | None:
        while pending:
            guid, hops = pending.popleft()
            if guid not in self.answered:
                self.answered.add(guid)
                return guid, hops
        return None

    def send_burst(self, due: float) -> None:
        now = self.clock()
        self.lateness.record_value(max(1, int((now - due) * 1_000_000)))
        kinds = self.random.choices(self.types, self.weights, k=self.burst)
        outgoing: dict[int, list[Message]] = {}
        measuring = now >= self.measure_from
        for kind in kinds:
            index = self._pick_link()
            message, timed = self._make(kind, index)
            if (
                self.honour_hops_flow
                and message.type == MessageType.QUERY
                and message.hops >= self.hops_flow.get(index, 256)
            ):
                # Asked not to: a real servent never sends it (shed at the source).
                if measuring:
                    self.shed_at_source += 1
                continue
            if measuring and timed:
                self.sent_at[(message.guid, message.type)] = now
                self.sent[kind] += 1
            elif measuring:
                self.sent_untimed += 1
            outgoing.setdefault(index, []).append(message)
        for index, messages in outgoing.items():
            self.links[index].send(*messages)

    def summary(self, elapsed: float) -> dict[str, Any]:
        def describe(histogram: HdrHistogram) -> dict[str, float]:
            if histogram.get_total_count() == 0:
                return {"count": 0}
            return {
                "count": histogram.get_total_count(),
                "mean_ms": histogram.get_mean_value() / 1000,
                "p50_ms": histogram.get_value_at_percentile(50) / 1000,
                "p90_ms": histogram.get_value_at_percentile(90) / 1000,
                "p99_ms": histogram.get_value_at_percentile(99) / 1000,
                "max_ms": histogram.get_max_value() / 1000,
            }

        offered = sum(self.sent.values()) + self.sent_untimed
        return {
            "elapsed_s": elapsed,
            "offered": offered,
            "offered_per_s": offered / elapsed if elapsed else 0.0,
            "sent": self.sent,
            "sent_untimed": self.sent_untimed,
            "received": self.received,
            "goodput_per_s": sum(self.received.values()) / elapsed if elapsed else 0.0,
            "latency": {name: describe(h) for name, h in self.latency.items()},
            "lateness": describe(self.lateness),
            "hops_flow_received": self.hops_flow_received,
            "shed_at_source": self.shed_at_source,
        }


async def run(args: argparse.Namespace, reactor: Any) -> dict[str, Any]:
    host, _, port = args.target.rpartition(":")
    links = [
        await connect_servent(reactor, host, int(port), keep_inbox=False, headers=GENERATOR_HEADERS)
        for _ in range(args.connections)
    ]
    period = args.burst / args.rate
    start = time.monotonic()
    generator = LoadGenerator(
        links,
        rate=args.rate,
        burst=args.burst,
        query_share=args.query_share,
        seed=args.seed,
        measure_from=start + args.warmup,
        honour_hops_flow=args.honour_hops_flow,
    )
    bursts = int((args.warmup + args.duration) / period)

    # Schedule against the clock, not by chaining delays, so lateness does not accumulate.
    def tick(number: int) -> None:
        due = start + number * period
        generator.send_burst(due)
        if number + 1 < bursts:
            delay = max(0.0, start + (number + 1) * period - time.monotonic())
            reactor.callLater(delay, tick, number + 1)
        else:
            finished.callback(None)

    finished: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(0, tick, 0)
    await finished
    elapsed = time.monotonic() - start - args.warmup
    # Late arrivals still count toward latency, within a grace period.
    await task.deferLater(reactor, args.grace, lambda: None)
    for link in links:
        link.close()
    return generator.summary(elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gnurouter-loadgen", description=__doc__)
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--rate", type=float, required=True, help="packets per second")
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="unmeasured seconds first")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--query-share", type=float, default=0.15)
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--grace", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--honour-hops-flow",
        action="store_true",
        help="keep to the router's Hops-Flow, as real servents do (shed queries at the source)",
    )
    args = parser.parse_args(argv)
    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    outcome: dict[str, Any] = {}

    async def go() -> None:
        try:
            outcome.update(await run(args, reactor))
        except Exception as error:  # reported to the orchestrator, which decides
            outcome["error"] = f"{type(error).__name__}: {error}"
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    json.dump(outcome, sys.stdout)
    return 0 if "error" not in outcome else 1


if __name__ == "__main__":
    sys.exit(main())
