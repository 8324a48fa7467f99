"""CPU cost of one routed query through the whole stage graph, without the kernel.

    .venv/bin/python benchmarks/pipeline_cpu.py                    # 100000 queries
    .venv/bin/python benchmarks/pipeline_cpu.py --queries 20000 --json

`throughput.py` is the real measurement (sockets, separate processes); on a
shared machine its wall-clock figures move by tens of percent between
identical runs.  This script isolates the router's own work so that a change
to the hot path can be judged on its own: a `RouterService` is built on a
deterministic clock (Twisted's `task.Clock`, so stage turns run when this
script advances it), three peers complete the real 0.6 handshake over
in-memory transports (`twisted.internet.testing.StringTransport`), and one
of them sends `--queries` distinct queries (TTL 3) in writes of `--chunk`;
the router floods each to the other two.  Printed: CPU time per query in,
deliveries per CPU second, and each stage's busy time per query.

For a figure that does not depend on the machine's load, count instructions
(two runs, the second with `--skip-load`, so set-up cancels out):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/pipeline_cpu.py --queries 20000 [--skip-load]

(instructions per query = difference of the two totals / 20000; set
PYTHONHASHSEED=0 for repeatable counts.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gnurouter.config import RouterConfig
from gnurouter.edge.gctuning import tune_for_serving
from gnurouter.edge.service import RouterService
from gnurouter.mesh.peers import PeerState
from gnurouter.protocol.messages import HEADER_LENGTH, Message, MessageType, Query, encode_all

MAX_QUERIES = 5_000_000
RECEIVERS = 2
_PAYLOAD = Query(flags=0, criteria="pipeline benchmark").encode()


class ManualReactor(Clock):
    """A clock the stage runtime can schedule on: work runs when `drain()` advances it."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, f, *args, **kwargs)

    def drain(self) -> None:
        while self.getDelayedCalls():
            self.advance(0)


class MemoryTransport(StringTransport):
    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


def connect_peers(router: RouterService, reactor: ManualReactor, count: int) -> list[Any]:
    """`count` established peers, each a (protocol, transport) pair."""
    links = []
    for index in range(count):
        address = IPv4Address("TCP", f"127.0.0.{index + 2}", 40_000 + index)
        wire = router.factory.buildProtocol(address)
        transport = MemoryTransport(peerAddress=address)
        wire.makeConnection(transport)
        reactor.drain()
        wire.dataReceived(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: pipeline-cpu\r\n\r\n")
        reactor.drain()
        if not transport.value().startswith(b"GNUTELLA/0.6 200"):
            raise SystemExit(f"pipeline_cpu: handshake refused: {transport.value()[:80]!r}")
        wire.dataReceived(b"GNUTELLA/0.6 200 OK\r\n\r\n")
        reactor.drain()
        if wire.peer is None or wire.peer.state != PeerState.ESTABLISHED:
            raise SystemExit("pipeline_cpu: a peer did not reach the established state")
        transport.clear()
        links.append((wire, transport))
    return links


def encoded_queries(count: int, chunk: int) -> list[bytes]:
    # Counted GUIDs and one payload: building the load costs little next to
    # routing it, which matters when instructions are counted.
    queries = [
        Message(i.to_bytes(16, "little"), MessageType.QUERY, 3, 0, _PAYLOAD) for i in range(count)
    ]
    return [encode_all(queries[i : i + chunk]) for i in range(0, count, chunk)]


def measure(queries: int, chunk: int, *, skip_load: bool) -> dict[str, Any]:
    reactor = ManualReactor()
    config = RouterConfig(listen=("127.0.0.1", 0), target_peers=0, conditioning="none")
    router = RouterService(config, reactor=reactor)
    router.executor.start()
    try:
        links = connect_peers(router, reactor, 1 + RECEIVERS)
        sender, _ = links[0]
        receivers = [transport for _, transport in links[1:]]
        chunks = [] if skip_load else encoded_queries(queries, chunk)
        tune_for_serving()
        cpu_started = time.process_time()
        wall_started = time.perf_counter()
        delivered = 0
        for data in chunks:
            sender.dataReceived(data)
            reactor.drain()
            for transport in receivers:
                delivered += len(transport.value())
                transport.clear()
        cpu = time.process_time() - cpu_started
        wall = time.perf_counter() - wall_started
    finally:
        router.executor.stop()
    sent = 0 if skip_load else queries
    expected = sent * RECEIVERS * (HEADER_LENGTH + len(_PAYLOAD))
    if delivered != expected:
        raise SystemExit(f"pipeline_cpu: {delivered} bytes delivered, expected {expected}")
    per_query = cpu / sent if sent else 0.0
    return {
        "queries": sent,
        "chunk": chunk,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "cpu_us_per_query": per_query * 1e6,
        "deliveries_per_cpu_second": RECEIVERS / per_query if per_query else 0.0,
        "stage_busy_us_per_query": {
            name: stage.counters.busy_seconds / sent * 1e6 if sent else 0.0
            for name, stage in router.stages.items()
        },
        "python": sys.version.split()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queries", type=int, default=100_000, help="queries sent (100000)")
    parser.add_argument("--chunk", type=int, default=64, help="queries per write (64)")
    parser.add_argument(
        "--skip-load", action="store_true", help="set up only (the baseline for counting)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.queries <= MAX_QUERIES:
        parser.error(f"--queries must be within 1..{MAX_QUERIES}")
    if not 1 <= args.chunk <= 10_000:
        parser.error("--chunk must be within 1..10000")
    result = measure(args.queries, args.chunk, skip_load=args.skip_load)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['queries']} queries in writes of {result['chunk']}, fanned out to "
        f"{RECEIVERS} peers, Python {result['python']}"
    )
    print(
        f"CPU {result['cpu_seconds']:.3f} s: {result['cpu_us_per_query']:.2f} us per query in, "
        f"{result['deliveries_per_cpu_second']:,.0f} deliveries per CPU second"
    )
    for name, busy in result["stage_busy_us_per_query"].items():
        print(f"  {name:<10} busy {busy:6.2f} us per query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
