"""Malicious peers against one router on loopback, with two honest servents watching.

Each test runs one attack from `gnurouter.bench.attacks` (the same code the
attack benchmark, `benchmarks/attacks.py`, runs at full size) against an
in-process router, while an `HonestProbe` (two leaves exchanging tagged
queries and answering each with a query hit) runs through the same router.
Every test asserts that:

* the attacker is cut off (its socket closed; a Bye first where the router
  can still be heard);
* the honest servents exchanged every query and every hit: exact counts,
  nothing lost, nothing duplicated;
* memory and tables stay bounded (Peer objects freed once closed, route
  table, peak RSS).

Nothing sleeps to synchronise: attacks await their sockets' events, the
router's state is awaited with `conftest.wait_for`, the probe with its own
settle().  Every attack is bounded in count and time, so a router that does
not defend itself makes a test fail within its bound, not hang.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import sys
import threading
import time
import weakref
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from gnurouter.bench.attacks import (
    ATTACKER_AGENT,
    BAD_HEADER_NAMES,
    NON_READER_AGENT,
    HonestProbe,
    bad_headers,
    bye_in_final_segment,
    deflate_bomb,
    garbage_after_handshake,
    non_reader,
    peak_rss_bytes,
    ping_flood,
    qrp_bomb,
    reset_peak_rss,
    rss_bytes,
    slowloris,
    well_formed_endpoint,
)
from gnurouter.config import RouterConfig
from gnurouter.edge.service import RouterService
from gnurouter.mesh.peers import Peer
from tests.fixtures import handler_errors, wait_for

pytestmark = pytest.mark.network

MB = 1024 * 1024
#: Honest queries per second during an attack (half each way), each answered.
PROBE_RATE = 40.0


# -- helpers -------------------------------------------------------------------------


async def start_probe(router: RouterService, rate: float = PROBE_RATE) -> HonestProbe:
    probe = HonestProbe(reactor)
    before = len(router.peers.established())
    await probe.connect(*router.listening_address())
    await wait_for(router, lambda: len(router.peers.established()) >= before + 2)
    probe.phase = "before"
    probe.start(rate)
    # A first round trip each way before the attack: the probe works.
    await wait_for_probe(probe, lambda: probe.report("before")["hits_delivered"] >= 2)
    probe.phase = "during"
    return probe


async def wait_for_probe(probe: HonestProbe, condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, (
            f"honest servents stopped getting answers: {probe.outstanding} in flight "
            f"for {timeout:.0f}s; {_brief({p: probe.report(p) for p in ('before', 'during')})}"
        )
        await probe.next_arrival(0.5)


async def assert_honest_traffic_intact(probe: HonestProbe, settle: float = 10.0) -> None:
    """Every honest query arrived once and every one got its hit back: exact counts.

    The probe keeps sending until a few round trips begun after the attack
    ended are back (the router still routes), then stops and settles.
    """
    during = probe.report("during")["hits_delivered"]
    await wait_for_probe(probe, lambda: probe.report("during")["hits_delivered"] >= during + 4)
    probe.stop()
    settled = await probe.settle(settle)
    reports = {phase: probe.report(phase) for phase in ("before", "during")}
    await probe.close()
    during = reports["during"]
    assert during["queries_sent"] > 0, f"no honest traffic during the attack: {reports}"
    assert settled, (
        f"honest traffic lost: {probe.outstanding} still undelivered "
        f"{settle:.0f}s after the last query; per phase: {_brief(reports)}"
    )
    for phase, report in reports.items():
        assert report["queries_delivered"] == report["queries_sent"], (phase, _brief(reports))
        assert report["hits_sent"] == report["queries_sent"], (phase, _brief(reports))
        assert report["hits_delivered"] == report["hits_sent"], (phase, _brief(reports))
    assert probe.duplicates == 0 and probe.unexpected == 0


def _brief(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        phase: {
            k: r[k] for k in ("queries_sent", "queries_delivered", "hits_sent", "hits_delivered")
        }
        | {"latency_ms": r["latency_ms"]}
        for phase, r in reports.items()
    }


def attacker_peers(router: RouterService, agent: str = ATTACKER_AGENT) -> list[Peer]:
    return [peer for peer in router.peers if peer.user_agent.startswith(agent)]


class PeerRefs:
    """Weak references to every attacker `Peer` the router announces (established or removed)."""

    def __init__(self, router: RouterService, agent: str = ATTACKER_AGENT) -> None:
        self.refs: dict[int, weakref.ref[Peer]] = {}
        self.agent = agent
        self.router = router
        router.peers.listeners.append(self._seen)

    def _seen(self, peer: Peer) -> None:
        if peer.user_agent.startswith(self.agent) and peer.id not in self.refs:
            self.refs[peer.id] = weakref.ref(peer)

    def detach(self) -> None:
        self.router.peers.listeners.remove(self._seen)

    def alive(self) -> list[Peer]:
        return [peer for ref in self.refs.values() if (peer := ref()) is not None]


def who_holds(target: object, exclude: tuple[object, ...] = (), depth: int = 4) -> list[str]:
    """A few referrer chains of `target`, by type (for the failure message of a leak).

    Frames still executing (this one, the test's) and the containers named in
    `exclude` are left out; a finished frame kept by a traceback is shown.
    """
    chains: list[str] = []
    internal = {id(item) for item in exclude} | {id(chains)}
    seen = {id(target)}

    def describe(referrer: object) -> str:
        if type(referrer).__name__ == "frame":
            return f"frame {referrer.f_code.co_name}"  # type: ignore[attr-defined]
        if isinstance(referrer, dict):
            return "dict(" + ",".join(map(str, list(referrer)[:4])) + ")"
        return type(referrer).__name__

    def walk(obj: object, path: list[str], level: int) -> None:
        frame: Any = sys._getframe()
        while frame is not None:
            internal.add(id(frame))
            frame = frame.f_back
        if len(chains) >= 8:
            return
        referrers = gc.get_referrers(obj)
        internal.add(id(referrers))
        found = [r for r in referrers if id(r) not in internal and id(r) not in seen]
        seen.update(id(r) for r in found)
        if level == 0 or not found:
            chains.append(" <- ".join(path))
            return
        for referrer in found[:3]:
            walk(referrer, [*path, describe(referrer)], level - 1)

    walk(target, [type(target).__name__], depth)
    return chains


class PeakRss:
    """This process's peak RSS over a stretch of time: VmHWM after a reset where Linux
    lets us, else a sampling thread (every 2 ms; the router stage may hold the reactor)."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.exact = reset_peak_rss()
        self._peak = self.baseline
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self.exact:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, rss_bytes())

    def growth(self) -> int:
        """Peak RSS above the baseline so far, in bytes."""
        if self.exact:
            return peak_rss_bytes() - self.baseline
        return self._peak - self.baseline

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)


async def under_peak_rss_watch(
    attack: Coroutine[Any, Any, dict[str, Any]],
) -> tuple[dict[str, Any], int, bool]:
    """Run `attack` (a coroutine not yet started) under a `PeakRss` watch: its result,
    the peak RSS growth while it ran, and whether that peak is exact (VmHWM)."""
    peak = PeakRss()
    try:
        result = await attack
        return result, peak.growth(), peak.exact
    finally:
        peak.stop()


@pytest.fixture
def quiet_router_logs() -> Iterator[None]:
    """Log records hold their arguments (a ProtocolError and its traceback): pytest's log
    capture would keep closed peers alive. The CLI's handler formats and drops records,
    so in service nothing keeps them; here no record is made below CRITICAL."""
    logger = logging.getLogger("gnurouter")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


# -- 1. garbage after the handshake ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_garbage_after_handshake_is_cut_with_bye_and_closed_peers_are_freed(
    start_router: Any, quiet_router_logs: None
) -> None:
    router = start_router()
    probe = await start_probe(router)
    refs = PeerRefs(router)
    host, port = router.listening_address()
    # Only reference counting frees objects from here on: a Peer kept alive by a
    # cycle (a traceback's frames, a timer armed after connectionLost) stays alive.
    gc.disable()
    try:
        result = await garbage_after_handshake(
            reactor,
            host,
            port,
            connections=300,
            concurrency=8,
            hit_and_run_every=2,
            wait_cut=5.0,
            time_limit=30.0,
        )
        assert result["attackers"] == 300 and not result["errors"], result
        assert not result["refused"], f"handshakes refused: {result['refused']}"
        waited = 300 - result["hit_and_run"]
        assert result["not_cut"] == 0, f"{result['not_cut']} garbage peers were never cut off"
        assert result["cut"] == waited
        assert result["bye_before_close"] == waited, (
            f"only {result['bye_before_close']} of {waited} closed garbage links got a Bye first"
        )
        assert result["cut_seconds"]["max"] < 2.0, result["cut_seconds"]
        await wait_for(router, lambda: not attacker_peers(router), timeout=10)
        await assert_honest_traffic_intact(probe)
        assert handler_errors(router) == {}
        refs.detach()
        assert len(refs.refs) == 300, f"saw {len(refs.refs)} attacker peers, expected 300"
        alive = refs.alive()
        if alive:
            held = who_holds(alive[0], exclude=(alive,))
            states = sorted({(p.state, p.close_reason or "") for p in alive})[:5]
            count = len(alive)
            del alive
            pytest.fail(
                f"{count} of 300 closed attacker Peer objects are still alive without a gc "
                f"run (states/reasons {states}); the first is held by: {held}"
            )
        assert router.snapshot()["router"]["peers"] == 2
    finally:
        gc.enable()


# -- 8. bad bytes in the final 200's segment ----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_garbage_in_the_final_200_segment_gets_a_bye_before_the_close(
    start_router: Any,
) -> None:
    router = start_router()
    probe = await start_probe(router)
    result = await bye_in_final_segment(
        reactor, *router.listening_address(), connections=20, concurrency=5, wait_cut=5.0
    )
    assert result["attackers"] == 20 and not result["errors"] and not result["refused"], result
    assert result["not_cut"] == 0, result
    assert result["closed_without_bye"] == 0, (
        f"{result['closed_without_bye']} of 20 links were closed without a Bye: {result}"
    )
    assert all(int(code) >= 400 for code in result["byes"]), result["byes"]
    await wait_for(router, lambda: not attacker_peers(router), timeout=10)
    await assert_honest_traffic_intact(probe)


# -- 2. hostile header values ---------------------------------------------------------------


def cached_hosts(router: RouterService) -> list[tuple[str, int]]:
    return router.hosts.candidates(set(), 100_000)


def endpoint_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.mark.parametrize("case", BAD_HEADER_NAMES)
@pytest_twisted.ensureDeferred
async def test_hostile_header_values_do_not_poison_the_host_cache(
    start_router: Any, case: str
) -> None:
    router = start_router()
    probe = await start_probe(router)
    result = await bad_headers(reactor, *router.listening_address(), cases=case, time_limit=10.0)
    assert result["cases"] == 1 and not result["errors"], result
    assert result["honest_accepted"] == 1, f"a new honest servent was refused: {result}"
    assert result["failed_cases"] == [], result["failed_cases"]
    poisoned = [
        endpoint_text(h, p)
        for h, p in cached_hosts(router)
        if not well_formed_endpoint(endpoint_text(h, p))
    ]
    assert not poisoned, f"host cache holds malformed hosts: {[x[:80] for x in poisoned][:5]}"
    assert handler_errors(router) == {}, "a stage handler raised on hostile headers"
    json.dumps(router.snapshot())  # the metrics snapshot still serialises
    await assert_honest_traffic_intact(probe)


# -- 3. half-open sockets and slowloris ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_half_open_and_slowloris_sockets_do_not_keep_an_honest_peer_out(
    start_router: Any,
) -> None:
    router = start_router()
    probe = await start_probe(router)
    result = await slowloris(
        reactor,
        *router.listening_address(),
        idle=500,
        slow=200,
        byte_interval=1.0,
        hold=4.0,
        probes=3,
    )
    assert result["open_failed"] == 0 and result["attackers"] == 700, result
    accepts = result["honest_accepts"]
    assert result["honest_accepted"] == 3, (
        f"new honest servents refused while 700 sockets were held: "
        f"{[(a['status'], a.get('error')) for a in accepts]}"
    )
    assert result["honest_accept_seconds"] < 1.0, [a["seconds"] for a in accepts]
    await assert_honest_traffic_intact(probe)


# -- 4. deflate bomb ---------------------------------------------------------------------------

#: One write inflating to 960 KiB every this many seconds: slow enough that a
#: router keeping up reads each write on its own, so the 1 MiB per-read cap
#: alone never trips, and fast enough to keep it busy.
DEFLATE_INTERVAL = 0.1


@pytest_twisted.ensureDeferred
async def test_deflate_bomb_is_cut_off_with_bye_and_honest_traffic_flows(
    start_router: Any,
) -> None:
    router = start_router()
    probe = await start_probe(router)
    result, growth, _ = await under_peak_rss_watch(
        deflate_bomb(reactor, *router.listening_address(), interval=DEFLATE_INTERVAL, duration=8.0)
    )
    assert result["deflate_accepted"] and not result["errors"], result
    assert result["cut"] == 1, (
        f"deflate bomb not cut off in 8 s ({result['writes']} writes, "
        f"{result['inflated_bytes'] // MB} MiB inflated)"
    )
    assert result["bye_before_close"] == 1, f"no Bye before the close: {result}"
    assert growth < 64 * MB, f"peak RSS grew by {growth / MB:.0f} MB"
    await assert_honest_traffic_intact(probe)


# -- 5. QRP table bomb ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_qrp_table_bomb_leaf_is_cut_off_and_memory_stays_bounded(
    start_router: Any,
) -> None:
    router = start_router()
    probe = await start_probe(router)
    result, growth, exact = await under_peak_rss_watch(
        qrp_bomb(reactor, *router.listening_address(), slots=1 << 24, interval=0.05, duration=8.0)
    )
    assert not result["errors"], result
    assert result["cut"] == 1, (
        f"QRP bomb leaf not cut off after {result['rounds_sent']} RESET+PATCH rounds"
    )
    assert result["bye_before_close"] == 1, f"no Bye before the close: {result}"
    assert growth < 25 * MB, (
        f"peak RSS grew by {growth / MB:.0f} MB for {result['rounds_sent']} QRP rounds "
        f"({'VmHWM' if exact else 'sampled'})"
    )
    await assert_honest_traffic_intact(probe)


# -- 6. ping flood ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_flood_is_cut_off_and_the_route_table_stays_bounded(
    start_router: Any,
) -> None:
    router = start_router()
    probe = await start_probe(router)
    routes_before = router.snapshot()["router"]["route_table"]
    honest_before = probe.total_sent
    result = await ping_flood(
        reactor, *router.listening_address(), max_pings=300_000, batch=500, duration=8.0
    )
    routes_after = router.snapshot()["router"]["route_table"]
    honest_routes = probe.total_sent - honest_before
    assert not result["errors"], result
    assert result["cut"] == 1, (
        f"ping flooder not cut off: {result['pings_sent']} pings in {result['send_seconds']} s"
    )
    assert result["bye_before_close"] == 1, f"no Bye before the close: {result}"
    growth = routes_after - routes_before
    assert growth <= honest_routes + 1000, (
        f"route table grew by {growth} entries ({honest_routes} honest queries) "
        f"during a flood of {result['pings_sent']} pings"
    )
    await assert_honest_traffic_intact(probe)


# -- 7. the peer that never reads ----------------------------------------------------------------

#: The clogged-peer deadline: how long a neighbour's socket may take nothing
#: before it is closed.  The test sets it to CLOGGED_DEADLINE seconds; a
#: RouterConfig field of another name that says the same is found too.
DEADLINE_FIELD = "flow_control_timeout"
_DEADLINE_PATTERN = re.compile(
    r"(clog|stall|flow|write|output|send).*(deadline|timeout|grace)"
    r"|(deadline|timeout|grace).*(clog|stall|flow|write|output|send)"
)
CLOGGED_DEADLINE = 2.0


def clogged_deadline_field() -> str | None:
    fields = RouterConfig.__dataclass_fields__
    if DEADLINE_FIELD in fields:
        return DEADLINE_FIELD
    names = [n for n in fields if _DEADLINE_PATTERN.search(n) and "handshake" not in n]
    return names[0] if len(names) == 1 else None


@pytest_twisted.ensureDeferred
async def test_non_reading_peer_is_disconnected_by_a_deadline(start_router: Any) -> None:
    field = clogged_deadline_field()
    router = start_router(**({field: CLOGGED_DEADLINE} if field else {}))
    router.factory.close_timeout = 1.0  # the Bye cannot be delivered: abort soon after
    probe = await start_probe(router)
    limit = 12.0
    result = await non_reader(
        reactor,
        *router.listening_address(),
        feed_rate=2000.0,
        criteria_bytes=300,
        ping_interval=1.0,
        duration=limit,
    )
    assert not result["errors"], result
    assert result["pings_sent"] >= 2, result
    assert result["cut"] == 1, (
        f"a peer that never reads (but pings) was not disconnected within {limit:.0f} s "
        f"while {result['feeder_queries']} queries were flooded to it; clogged-deadline "
        f"field: {field or 'none found in RouterConfig'}"
    )
    await wait_for(router, lambda: not attacker_peers(router, NON_READER_AGENT), timeout=5)
    await assert_honest_traffic_intact(probe)
