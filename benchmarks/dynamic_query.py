"""What one leaf query costs: flooded at the leaf's TTL (before) against dynamic querying (after).

    .venv/bin/python benchmarks/dynamic_query.py            # real round interval (3.7 s), ~2 min
    .venv/bin/python benchmarks/dynamic_query.py --quick    # 0.4 s rounds, ~15 s

One router on loopback with 8 test ultrapeers (X-Degree 32, X-Max-TTL 4)
and 2 test leaves (a LimeWire-like asker that answers Query Status Requests
with the results it kept, and a sharer).  Each test ultrapeer stands for
its part of the network: a query it gets with TTL t reaches, by gtk-gnutella
dq.c's estimate, horizon(32, t) ultrapeers, and it answers with as many
results as that many ultrapeers would hold at the search's density (seeded,
so every run is the same): a popular search finds about one result per two
ultrapeers, a rare one one per 3,000.

Per search and mode it prints: test ultrapeers the query reached (of 8) and
the TTLs they got, the estimated network horizon (ultrapeers reached, each
copy's horizon summed), the messages the router sent for the query (query
copies to ultrapeers and leaves, Query Status Requests), the estimated
messages on the network (one per ultrapeer reached, a tree's count), the
results the leaf got, and seconds until the query ended.  JSON goes to
var/bench/dynamic_query.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gnurouter.config import RouterConfig  # noqa: E402
from gnurouter.edge.servent import ServentProtocol, connect_servent  # noqa: E402
from gnurouter.edge.service import RouterService  # noqa: E402
from gnurouter.protocol.messages import (  # noqa: E402
    QUERY_F_MARK,
    Message,
    MessageType,
    Query,
    QueryHit,
    QueryHitResult,
    VendorMessage,
    new_guid,
)
from gnurouter.protocol.qrp import QrpTable, build_update  # noqa: E402
from gnurouter.protocol.vendor import (  # noqa: E402
    QUERY_STATUS_REQUEST,
    MessagesSupported,
    query_status_response,
)
from gnurouter.routing.dynamic import horizon  # noqa: E402
from gnurouter.routing.router import Router  # noqa: E402

ULTRAPEERS = 8
DEGREE = 32
ULTRAPEER_HEADERS = (
    ("User-Agent", "dq-bench-ultrapeer/0.1"),
    ("X-Ultrapeer", "True"),
    ("X-Degree", str(DEGREE)),
    ("X-Max-TTL", "4"),
    ("X-Query-Routing", "0.2"),
    ("X-Dynamic-Querying", "0.1"),
    ("Vendor-Message", "0.2"),
    ("GGEP", "0.5"),
)
LEAF_HEADERS = (
    ("User-Agent", "dq-bench-leaf/0.1"),
    ("X-Ultrapeer", "False"),
    ("X-Query-Routing", "0.2"),
    ("X-Dynamic-Querying", "0.1"),
    ("Vendor-Message", "0.2"),
    ("GGEP", "0.5"),
)
#: Results per ultrapeer reached.
SEARCHES = {"popular": 0.5, "rare": 1 / 3000}
RESULTS_PER_HIT = 10


class TestUltrapeer:
    """A servent standing for its part of the network: answers by the horizon it reaches."""

    def __init__(self, link: ServentProtocol, density: dict[bytes, float], rng: random.Random):
        self.link = link
        self.density = density
        self.rng = rng
        self.got: dict[bytes, int] = {}  # query GUID -> TTL it arrived with
        self.sent_results: dict[bytes, int] = {}
        link.on_message = self.arrived

    def arrived(self, message: Message) -> None:
        if message.type != MessageType.QUERY or message.guid not in self.density:
            return
        self.got[message.guid] = message.ttl
        expected = horizon(DEGREE, message.ttl) * self.density[message.guid]
        results = int(expected) + (self.rng.random() < expected - int(expected))
        self.sent_results[message.guid] = results
        while results > 0:
            batch = min(RESULTS_PER_HIT, results)
            found = tuple(QueryHitResult(i, 1000, f"result {i}.ogg") for i in range(batch))
            hit = QueryHit(6346, "10.0.0.9", 1000, found, bytes([len(self.got)]) * 16)
            self.link.send(Message.from_body(message.guid, message.hops + 1, 0, hit))
            results -= batch


class Asker:
    """The leaf searching: counts its results and answers Query Status Requests with them."""

    def __init__(self, link: ServentProtocol) -> None:
        self.link = link
        self.results: dict[bytes, int] = {}
        self.status_requests = 0
        link.on_message = self.arrived

    def arrived(self, message: Message) -> None:
        if message.type == MessageType.QUERY_HIT:
            self.results[message.guid] = self.results.get(message.guid, 0) + message.payload[0]
        elif message.type == MessageType.VENDOR:
            body = message.body()
            if (
                isinstance(body, VendorMessage)
                and (
                    body.vendor,
                    body.selector,
                    body.version,
                )
                == QUERY_STATUS_REQUEST
            ):
                self.status_requests += 1
                kept = self.results.get(message.guid, 0)
                self.link.send(query_status_response(message.guid, kept))


def ended_query(routing: Router, request: Message) -> dict[str, object] | None:
    """The summary of `request`'s dynamic query once it has ended, else None."""
    if request.guid in routing.dynamic.active:
        return None
    for summary in routing.dynamic.recent:
        if summary["guid"] == request.guid.hex():
            return summary
    return None


async def until(reactor: Any, condition: Any, timeout: float) -> None:
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise TimeoutError("condition not met in time")
        await task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


async def run_search(
    reactor: Any,
    routing: Router,
    ultrapeers: list[TestUltrapeer],
    asker: Asker,
    density: dict[bytes, float],
    search: str,
    dynamic: bool,
) -> dict[str, Any]:
    """One leaf query, run to its end; what it cost and found."""
    asked_before = asker.status_requests
    request = Message.from_body(new_guid(), 4, 0, Query(QUERY_F_MARK, f"{search} search"))
    guid = request.guid
    density[guid] = SEARCHES[search]
    started = time.monotonic()
    asker.link.send(request)
    if dynamic:
        await until(reactor, lambda: ended_query(routing, request) is not None, 900)
    else:
        await until(reactor, lambda: all(guid in u.got for u in ultrapeers), 10)
    ended = time.monotonic() - started
    answered = sum(u.sent_results.get(guid, 0) for u in ultrapeers)
    await until(reactor, lambda: asker.results.get(guid, 0) >= answered, 30)
    status_requests = asker.status_requests - asked_before
    ttls = sorted(u.got[guid] for u in ultrapeers if guid in u.got)
    reached = sum(horizon(DEGREE, ttl) for ttl in ttls)
    return {
        "mode": "dynamic" if dynamic else "flood",
        "search": search,
        "ultrapeers_reached": len(ttls),
        "ttls": ttls,
        "horizon_ultrapeers": reached,
        # What the router sent for the query: a copy per ultrapeer (the
        # sharer's table does not match), and its status requests.
        "router_query_messages": len(ttls) + status_requests,
        "network_messages_estimate": reached,
        "results": asker.results.get(guid, 0),
        "status_requests": status_requests,
        "seconds": round(ended, 2),
    }


async def run_mode(
    reactor: Any, dynamic: bool, round_interval: float, seed: int
) -> list[dict[str, Any]]:
    config = RouterConfig(listen=("127.0.0.1", 0), target_peers=0, bootstrap_enabled=False)
    router = RouterService(config, reactor=reactor, name="dq-bench")
    router.startService()
    routing = router.routing
    routing.apply_rules(
        dataclasses.replace(
            routing.rules,
            dynamic_querying=dynamic,
            dq_round_interval=round_interval,
            flood_tableless_leaves=False,
        )
    )
    host, port = router.listening_address()
    density: dict[bytes, float] = {}
    rng = random.Random(seed)
    ultrapeers = [
        TestUltrapeer(
            await connect_servent(reactor, host, port, headers=ULTRAPEER_HEADERS), density, rng
        )
        for _ in range(ULTRAPEERS)
    ]
    asker = Asker(await connect_servent(reactor, host, port, headers=LEAF_HEADERS))
    sharer = await connect_servent(reactor, host, port, headers=LEAF_HEADERS)
    table = QrpTable.from_words(["shared", "files"], 16)
    sharer.send(
        *(
            Message.from_body(new_guid(), 1, 0, body)
            for body in build_update(None, table.resized_bits(16))
        )
    )
    asker.link.send(MessagesSupported(((b"BEAR", 11, 1), (b"BEAR", 12, 1))).message())
    await until(reactor, lambda: len(router.peers.established()) == ULTRAPEERS + 2, 10)
    rows = [
        await run_search(reactor, routing, ultrapeers, asker, density, search, dynamic)
        for search in SEARCHES
    ]
    await router.stopService()
    for link in [*(u.link for u in ultrapeers), asker.link, sharer]:
        link.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.4 s between rounds")
    parser.add_argument("--round-interval", type=float, help="seconds between rounds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "dynamic_query.json"))
    args = parser.parse_args(argv)
    interval = args.round_interval or (0.4 if args.quick else 3.7)

    async def go(reactor: Any) -> None:
        rows = await run_mode(reactor, False, interval, args.seed)
        rows += await run_mode(reactor, True, interval, args.seed)
        report(rows, interval, Path(args.out))

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


def report(rows: list[dict[str, Any]], interval: float, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"round_interval": interval, "rows": rows}, indent=1))
    header = (
        f"{'search':8} {'mode':8} {'UPs':>4} {'TTLs':18} {'horizon':>8} {'router msgs':>11} "
        f"{'net msgs (est)':>14} {'results':>7} {'QSR':>4} {'s':>6}"
    )
    print(header)
    for row in sorted(rows, key=lambda r: (r["search"], r["mode"])):
        print(
            f"{row['search']:8} {row['mode']:8} {row['ultrapeers_reached']:>4} "
            f"{','.join(map(str, row['ttls'])):18} {row['horizon_ultrapeers']:>8} "
            f"{row['router_query_messages']:>11} {row['network_messages_estimate']:>14} "
            f"{row['results']:>7} {row['status_requests']:>4} {row['seconds']:>6}"
        )
    print(f"\nround interval {interval:g} s; results: {out}")


if __name__ == "__main__":
    main()
