"""Time for a router with an empty host cache to reach its target peers from one UDP host cache.

A loopback network of 20 routers (one process, one reactor), each on its own
address (127.0.1.N, so each is a source address of its own, as on the
Internet: a host cache answers one address a few times a minute): router 0 is the
UDP host cache (any router is: it answers a ping with GGEP "SCP" with "IPP"),
routers 1..19 join it with `--peer`, so it learns where they listen.  Then,
one at a time, a newcomer starts with an empty host cache, no `--peer`, no
GWebCache and `--uhc` naming router 0 only, and the time from its start to
`target_peers` established ultrapeer links is measured.  Each newcomer is
stopped before the next one starts.

    .venv/bin/python benchmarks/bootstrap_uhc.py [--routers 20] [--runs 7] [--target 8]

Prints the times and their median; writes var/bench/bootstrap_uhc.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from gnurouter.config import RouterConfig
from gnurouter.edge.service import RouterService

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0


async def until(reactor: Any, condition: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await task.deferLater(reactor, 0.002, lambda: None)


def ultrapeer_links(router: RouterService) -> int:
    return sum(1 for peer in router.peers.established() if peer.role != "leaf")


async def run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    def start(name: str, host: str, **values: Any) -> RouterService:
        config = RouterConfig(listen=(host, 0), **values)
        router = RouterService(config, reactor=reactor, name=name)
        router.startService()
        return router

    network = [start("uhc", "127.0.1.1", target_peers=0, max_peers=200, max_ultrapeers=200)]
    cache = network[0].listening_address()
    for index in range(1, args.routers):
        network.append(start(f"r{index}", f"127.0.1.{index + 1}", peers=[cache], target_peers=1))
    await until(reactor, lambda: len(network[0].peers.established()) >= args.routers - 1)
    await until(reactor, lambda: len(network[0].hosts) >= args.routers - 1)
    times: list[float] = []
    asked: list[int] = []
    for run_index in range(args.runs):
        started = time.monotonic()
        host = f"127.0.2.{run_index + 1}"
        newcomer = start(f"new{run_index}", host, target_peers=args.target, uhc=[cache])
        assert len(newcomer.hosts) == 0
        await until(reactor, lambda n=newcomer: ultrapeer_links(n) >= args.target)
        times.append(time.monotonic() - started)
        asked.append(newcomer.uhc.requests)
        await newcomer.stopService()
        print(f"run {run_index + 1}: {times[-1] * 1000:.0f} ms to {args.target} ultrapeer links")
    for router in reversed(network):
        await router.stopService()
    return {
        "routers": args.routers,
        "target_peers": args.target,
        "runs": args.runs,
        "seconds": [round(t, 4) for t in times],
        "median_seconds": round(statistics.median(times), 4),
        "max_seconds": round(max(times), 4),
        "host_cache_requests_per_newcomer": asked,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--target", type=int, default=8)
    args = parser.parse_args(argv)

    async def body(reactor: Any) -> None:
        result = await run(reactor, args)
        out = ROOT / "var" / "bench" / "bootstrap_uhc.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{args.routers} routers, one UDP host cache: median {result['median_seconds']:.3f} s, "
            f"max {result['max_seconds']:.3f} s to {args.target} ultrapeer links ({out})"
        )

    task.react(lambda reactor: defer.ensureDeferred(body(reactor)))


if __name__ == "__main__":
    main()
