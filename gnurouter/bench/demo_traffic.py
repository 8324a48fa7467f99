"""Demo traffic for a router, so the dashboard has something to show when no trace is at hand.

    python -m gnurouter.bench.demo_traffic 127.0.0.1:6346 [--peers 3] [--low 20] [--high 160]
        [--period 60] [--duration SECONDS]

Connects `--peers` servents (the real 0.6 handshake, gnurouter.edge.servent) and
sends queries from them at a rate that swings between `--low` and `--high`
per second over `--period` seconds, so a router whose query stage is slower
than the peak (e.g. `--query-delay 10ms`: 100 queries/s) sees its queue
build up and drain again.  Reconnects when the router restarts.  Every run
is bounded by `--duration` (default: until interrupted) and only ever talks
to the address given.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from typing import TYPE_CHECKING, Any

from gnurouter.config import parse_address
from gnurouter.protocol.messages import Message, Query, new_guid

if TYPE_CHECKING:
    from gnurouter.edge.servent import ServentProtocol

WORDS = ("linux", "ubuntu", "jazz", "mp3", "flac", "gnutella", "router", "seda", "ogg", "demo")


class Traffic:
    def __init__(self, reactor: Any, address: tuple[str, int], args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.address = address
        self.args = args
        self.servents: list[ServentProtocol] = []
        self.started = time.monotonic()
        self.credit = 0.0
        self.sent = 0
        self.connecting = False
        self.next_attempt = 0.0
        self.told = False

    def rate(self, now: float) -> float:
        # argparse's Namespace is untyped: these are the floats `main` declares.
        low: float = self.args.low
        high: float = self.args.high
        period: float = self.args.period
        phase = (now - self.started) / period * 2 * math.pi
        return low + (high - low) * (1 - math.cos(phase)) / 2

    def connect(self) -> None:
        from twisted.internet import defer

        from gnurouter.edge.servent import connect_servent

        if self.connecting or time.monotonic() < self.next_attempt:
            return
        self.servents = [s for s in self.servents if not s.closed.called]
        missing = self.args.peers - len(self.servents)
        if missing <= 0:
            return
        self.connecting = True

        async def connect_all() -> None:
            try:
                for _ in range(missing):
                    servent = await connect_servent(self.reactor, *self.address, keep_inbox=False)
                    self.servents.append(servent)
                self.told = False
            except Exception as error:  # the router is not (yet, or any more) there
                self.next_attempt = time.monotonic() + 1.0
                if not self.told:
                    self.told = True
                    print(f"demo traffic: cannot connect yet ({error}); retrying", file=sys.stderr)
            finally:
                self.connecting = False

        defer.ensureDeferred(connect_all())

    def tick(self) -> None:
        now = time.monotonic()
        if self.args.duration and now - self.started > self.args.duration:
            self.reactor.stop()
            return
        live = [s for s in self.servents if not s.closed.called]
        if len(live) < self.args.peers:
            self.connect()
        if not live:
            return
        self.credit += self.rate(now) * self.args.tick
        count = int(self.credit)
        self.credit -= count
        for _ in range(count):
            words = " ".join(random.sample(WORDS, 2))
            message = Message.from_body(new_guid(), 4, 0, Query(flags=0, criteria=words))
            random.choice(live).send(message)
        self.sent += count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("router", help="HOST:PORT of the router's Gnutella port")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--low", type=float, default=20.0, help="queries/s at the quietest")
    parser.add_argument("--high", type=float, default=160.0, help="queries/s at the peak")
    parser.add_argument("--period", type=float, default=60.0, help="seconds per swing")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this (0: never)")
    parser.add_argument("--tick", type=float, default=0.05, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    address = parse_address(args.router, name="router")

    from twisted.internet import reactor as _reactor
    from twisted.internet import task

    reactor: Any = _reactor
    traffic = Traffic(reactor, address, args)
    loop = task.LoopingCall(traffic.tick)
    loop.clock = reactor
    reactor.callWhenRunning(loop.start, args.tick)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
