"""What hostile peers cost a gnurouter, measured from outside: one fresh router process per attack.

    .venv/bin/python benchmarks/attacks.py --quick            # smaller counts, ~5 minutes
    .venv/bin/python benchmarks/attacks.py                    # full counts (20,000 garbage links)
    .venv/bin/python benchmarks/attacks.py --only ping-flood,qrp --rate 200

For every attack in `gnurouter.bench.attacks` (garbage, bad-headers,
slowloris, deflate, qrp, ping-flood, non-reader, bye-segment) a fresh router
is started as `python -m gnurouter run --listen 127.0.0.1:PORT --control
127.0.0.1:PORT2 --target-peers 0 --no-bootstrap` (defaults otherwise, plus
`--router-args`).  In this process an `HonestProbe` (two honest leaves,
`--rate` queries/s in all, every query answered by a query hit) runs for the
whole life of the router; the phases are

    warm-up  1 s
    before   --before seconds (default 10, --quick 4)
    during   the attack, run as a process of its own
             (`python -m gnurouter.bench.attacks NAME --target ...`), so its
             CPU competes with the router's like a real attacker's and does
             not delay the probe's own timestamps
    after    15 s for `garbage` (RSS 15 s after the attack), 3 s otherwise

Honest messages are counted in the phase they were sent in; delivery is
delivered/sent per direction (a>b: a's queries and b's hits for them).
The router's RSS (VmRSS) and CPU (utime+stime) come from /proc/PID, sampled
four times a second; its peak is VmHWM, reset when "before" starts.  Route
table size and handler errors come from GET /metrics on the control port.

A table goes to stdout (targets with PASS/MISS under it) and the whole
result as JSON to var/attacks/attacks-<time>.json and var/attacks/latest.json;
router and attacker logs to var/attacks/logs/.  `--check` exits 1 on any MISS.
Nothing outside var/ is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gnurouter.bench import HOST, router_command  # noqa: E402
from gnurouter.bench.attacks import (  # noqa: E402
    ATTACKS,
    HonestProbe,
    cpu_seconds,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)

OUT_DIR = ROOT / "var" / "attacks"
MB = 1024 * 1024
START_TIMEOUT = 20.0
#: Extra seconds an attacker process may run past its own time bound before it is killed.
ATTACKER_GRACE = 30.0

# -- targets ------------------------------------------------------------------------

P99_TARGET_MS = 10.0
RSS_GROWTH_TARGET_MB = 25.0
ACCEPT_TARGET_S = 1.0
#: Route-table entries a ping flood may add beyond one per honest query.
ROUTE_GROWTH_TARGET = 1000


@dataclass
class Plan:
    full: dict[str, Any]
    quick: dict[str, Any]
    after: float = 3.0
    #: The attacker's own bound on its run time (seconds), from its params.
    bound: Callable[[dict[str, Any]], float] = lambda p: 60.0
    quick_router_args: list[str] = field(default_factory=list)


PLANS: dict[str, Plan] = {
    "garbage": Plan(
        full={"connections": 20_000, "concurrency": 8, "time_limit": 400.0},
        quick={"connections": 2_000, "concurrency": 8, "time_limit": 90.0},
        after=15.0,
        bound=lambda p: p["time_limit"] + 10,
    ),
    "bad-headers": Plan(
        # A case whose honest servent is never answered costs its 3 s timeout.
        full={"rounds": 3, "time_limit": 400.0},
        quick={"rounds": 1, "time_limit": 150.0},
        bound=lambda p: p["time_limit"] + 10,
    ),
    "slowloris": Plan(
        full={"idle": 500, "slow": 200, "hold": 15.0, "probes": 5},
        quick={"idle": 500, "slow": 200, "hold": 6.0, "probes": 3},
        bound=lambda p: p["hold"] + 30,
    ),
    "deflate": Plan(
        full={"duration": 20.0, "interval": 0.1},
        quick={"duration": 8.0, "interval": 0.1},
        bound=lambda p: p["duration"] + 10,
    ),
    "qrp": Plan(
        full={"duration": 20.0, "interval": 0.05},
        quick={"duration": 8.0, "interval": 0.05},
        bound=lambda p: p["duration"] + 10,
    ),
    "ping-flood": Plan(
        full={"duration": 20.0, "max_pings": 2_000_000},
        quick={"duration": 8.0, "max_pings": 500_000},
        bound=lambda p: p["duration"] + 10,
    ),
    "non-reader": Plan(
        # The router's own clogged-peer deadline decides; full runs keep its
        # default, quick ones shorten it to 10 s where the CLI has the option.
        # The router's kernel send buffer grows to ~2 MB before it blocks, then
        # the deadline, then up to 10 s for a close that cannot drain: 45 s.
        full={"duration": 100.0, "feed_rate": 2000.0},
        quick={"duration": 45.0, "feed_rate": 2000.0},
        bound=lambda p: p["duration"] + 15,
        quick_router_args=["--flow-control-timeout", "10s"],
    ),
    "bye-segment": Plan(
        full={"connections": 200, "concurrency": 8},
        quick={"connections": 50, "concurrency": 8},
        bound=lambda p: 60.0,
    ),
}
assert set(PLANS) == set(ATTACKS)


@dataclass
class Options:
    names: list[str]
    quick: bool
    rate: float
    before: float
    router_args: list[str]
    check: bool
    json: bool


# -- the router process ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_HELP_CACHE: dict[str, str] = {}


def cli_supports(option: str) -> bool:
    """Whether this checkout's `gnurouter run` knows `option` (older ones do not)."""
    if "run" not in _HELP_CACHE:
        completed = subprocess.run(
            [sys.executable, "-m", "gnurouter", "run", "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        _HELP_CACHE["run"] = completed.stdout
    return option in _HELP_CACHE["run"]


class RouterProcess:
    def __init__(self, name: str, extra: Sequence[str]) -> None:
        self.port = free_port()
        self.control_port = free_port()
        self.command = router_command(
            self.port,
            "--no-bootstrap",
            "--log-level",
            "warning",
            *extra,
            control_port=self.control_port,
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("GNUROUTER_CONTROL_TOKEN", None)
        (OUT_DIR / "logs").mkdir(parents=True, exist_ok=True)
        self.log_path = OUT_DIR / "logs" / f"router-{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    async def wait_listening(self, reactor: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.alive():
                raise RuntimeError(
                    f"router exited with status {self.process.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"router did not listen on {HOST}:{self.port}")
            await task.deferLater(reactor, 0.05, lambda: None)

    def log_tail(self, limit: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def metrics(self) -> dict[str, Any] | None:
        url = f"http://{HOST}:{self.control_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                data: dict[str, Any] = json.load(reply)
                return data
        except (OSError, ValueError):
            return None

    async def stop(self, reactor: Any) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.alive() and time.monotonic() < deadline:
                await task.deferLater(reactor, 0.05, lambda: None)
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        return self.process.returncode


class Sampler:
    """RSS and CPU of the router four times a second; /metrics twice a second."""

    def __init__(self, reactor: Any, router: RouterProcess, metrics_every: int = 0) -> None:
        self.reactor = reactor
        self.router = router
        #: Fetch /metrics every this many ticks (0: only when asked): a snapshot
        #: costs the router's reactor a few ms, which honest latency would show.
        self.metrics_every = metrics_every
        self.samples: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.phase = "warmup"
        self._fetching = False
        self._ticks = 0
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(0.25, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def set_phase(self, phase: str) -> None:
        """Close the current phase with a sample and open `phase` with one."""
        self._tick(count=False)
        self.phase = phase
        self._tick(count=False)

    def _tick(self, count: bool = True) -> None:
        pid = self.router.pid
        self.samples.append(
            {
                "t": time.monotonic(),
                "phase": self.phase,
                "rss": rss_bytes(pid),
                "cpu": cpu_seconds(pid),
            }
        )
        if not count:
            return
        self._ticks += 1
        if self.metrics_every and self._ticks % self.metrics_every == 0 and not self._fetching:
            self.fetch_metrics()

    def fetch_metrics(self) -> defer.Deferred[Any]:
        """GET /metrics in a thread; the row is kept under the phase it was asked in."""
        self._fetching = True
        phase = self.phase
        fetched = threads.deferToThread(self.router.metrics)

        def keep(data: dict[str, Any] | None) -> None:
            self._fetching = False
            if data is not None:
                router = data.get("router", {})
                self.metrics.append(
                    {
                        "t": time.monotonic(),
                        "phase": phase,
                        "route_table": router.get("route_table"),
                        "peers": router.get("peers"),
                        "connections": router.get("connections"),
                        "handler_errors": sum(
                            s.get("handler_errors", 0) for s in data.get("stages", {}).values()
                        ),
                    }
                )

        def failed(_failure: Any) -> None:
            self._fetching = False

        fetched.addCallbacks(keep, failed)
        return fetched

    def rss(self, phase: str) -> list[int]:
        return [s["rss"] for s in self.samples if s["phase"] == phase and s["rss"]]

    def last_metrics(self, phase: str | None = None) -> dict[str, Any] | None:
        rows = [m for m in self.metrics if phase is None or m["phase"] == phase]
        return rows[-1] if rows else None

    def peak(self, key: str, phase: str) -> Any:
        values = [m[key] for m in self.metrics if m["phase"] == phase and m[key] is not None]
        return max(values) if values else None


# -- one attack ------------------------------------------------------------------------


async def sleep(reactor: Any, seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def run_attacker(
    reactor: Any, name: str, port: int, params: dict[str, Any], bound: float
) -> dict[str, Any]:
    out = OUT_DIR / "logs" / f"attacker-{name}.json"
    log = OUT_DIR / "logs" / f"attacker-{name}.log"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "gnurouter.bench.attacks",
        name,
        "--target",
        f"{HOST}:{port}",
        "--out",
        str(out),
    ]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + bound + ATTACKER_GRACE
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.kill()
                process.wait(10)
                return {"error": f"attacker overran its {bound:.0f}s bound and was killed"}
            await sleep(reactor, 0.1)
    try:
        result: dict[str, Any] = json.loads(out.read_text())
    except (OSError, ValueError):
        tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
        return {"error": f"attacker exited with status {process.returncode}: {tail}"}
    return result


def cpu_percent(samples: list[dict[str, Any]], phase: str) -> float | None:
    rows = [s for s in samples if s["phase"] == phase and s["cpu"] is not None]
    if len(rows) < 2 or rows[-1]["t"] <= rows[0]["t"]:
        return None
    return round(100.0 * (rows[-1]["cpu"] - rows[0]["cpu"]) / (rows[-1]["t"] - rows[0]["t"]), 1)


async def run_attack(reactor: Any, name: str, options: Options) -> dict[str, Any]:
    plan = PLANS[name]
    params = dict(plan.quick if options.quick else plan.full)
    extra = list(options.router_args)
    if options.quick and plan.quick_router_args and cli_supports(plan.quick_router_args[0]):
        extra += plan.quick_router_args
    row: dict[str, Any] = {"attack": name, "params": params, "router_args": extra}
    router = RouterProcess(name, extra)
    probe = HonestProbe(reactor)
    # The route table is watched during a ping flood only; otherwise /metrics
    # is read once at the end of each phase.
    sampler = Sampler(reactor, router, metrics_every=4 if name == "ping-flood" else 0)
    try:
        await router.wait_listening(reactor)
        sampler.start()
        await probe.connect(HOST, router.port)
        probe.phase = "warmup"
        probe.start(options.rate)
        await sleep(reactor, 1.0)

        reset_peak_rss(router.pid)
        sampler.set_phase("before")
        probe.phase = "before"
        before_started = time.monotonic()
        honest_sent_before = probe.total_sent
        await sleep(reactor, options.before)
        await sampler.fetch_metrics()
        routes_before = (sampler.last_metrics("before") or {}).get("route_table")

        sampler.set_phase("during")
        probe.phase = "during"
        honest_at_attack = probe.total_sent
        attack_started = time.monotonic()
        result = await run_attacker(reactor, name, router.port, params, plan.bound(params))
        attack_seconds = time.monotonic() - attack_started
        honest_during = probe.total_sent - honest_at_attack
        await sampler.fetch_metrics()

        sampler.set_phase("after")
        probe.phase = "after"
        await sleep(reactor, plan.after)
        rss_after = rss_bytes(router.pid)
        await sampler.fetch_metrics()
        peak = peak_rss_bytes(router.pid)
        probe.stop()
        settled = await probe.settle(5.0)
        sampler.stop()

        rss_before = sampler.rss("before")
        row.update(
            {
                "attacker": result,
                "attack_seconds": round(attack_seconds, 2),
                "honest": {phase: probe.report(phase) for phase in ("before", "during", "after")},
                "honest_settled": settled,
                "honest_undelivered": probe.outstanding,
                "rss_mb": {
                    "before": round(statistics.median(rss_before) / MB, 1) if rss_before else None,
                    "peak": round(
                        max([peak, *sampler.rss("during"), *sampler.rss("after")]) / MB, 1
                    ),
                    "after": round(rss_after / MB, 1),
                },
                "cpu_percent": {
                    "before": cpu_percent(sampler.samples, "before"),
                    "during": cpu_percent(sampler.samples, "during"),
                },
                "route_table": {
                    "before": routes_before,
                    "peak_during": sampler.peak("route_table", "during"),
                    "after": (sampler.last_metrics("after") or {}).get("route_table"),
                    "honest_queries_during": honest_during,
                },
                "handler_errors": (sampler.last_metrics() or {}).get("handler_errors"),
                "router_alive": router.alive(),
                "before_seconds": round(attack_started - before_started, 2),
                "honest_sent_before": honest_at_attack - honest_sent_before,
            }
        )
    except Exception as error:
        row["error"] = f"{type(error).__name__}: {error}"
        row["router_alive"] = router.alive()
    finally:
        sampler.stop()
        await probe.close()
        status = await router.stop(reactor)
        row["router_exit"] = status
        if not row.get("router_alive", True):
            row["router_log_tail"] = router.log_tail()
    row["targets"] = targets(row)
    return row


# -- verdicts --------------------------------------------------------------------------


def _delivery(row: dict[str, Any], phase: str) -> float | None:
    report = row.get("honest", {}).get(phase)
    if not report:
        return None
    ratios = [r for r in report["delivery"].values() if r is not None]
    return min(ratios) if ratios else None


def _p(row: dict[str, Any], phase: str, key: str) -> float | None:
    latency = row.get("honest", {}).get(phase, {}).get("latency_ms")
    return latency[key] if latency else None


def targets(row: dict[str, Any]) -> list[dict[str, Any]]:
    """(target, measured, PASS/MISS) for the row's attack."""
    checks: list[tuple[str, Any, bool]] = []
    if "error" in row:
        return [{"target": "benchmark ran", "measured": row["error"], "ok": False}]
    attacker = row["attacker"]
    if "error" in attacker:
        checks.append(("attacker ran", attacker["error"], False))
        attacker = {}
    delivery = _delivery(row, "during")
    checks.append(("honest delivery during = 100%", _pct(delivery), delivery == 1.0))
    checks.append(("router still running", row.get("router_alive"), bool(row.get("router_alive"))))
    name = row["attack"]
    rss = row["rss_mb"]
    if name in ("deflate", "qrp"):
        p99 = _p(row, "during", "p99")
        checks.append(
            (
                f"honest p99 during <= {P99_TARGET_MS:g} ms",
                p99,
                p99 is not None and p99 <= P99_TARGET_MS,
            )
        )
    if name in ("deflate", "qrp", "ping-flood", "non-reader"):
        cut = attacker.get("cut", 0) == attacker.get("attackers", -1) and attacker.get("cut", 0) > 0
        seconds = (attacker.get("cut_seconds") or {}).get("max")
        checks.append(
            (
                "attacker cut off",
                f"{attacker.get('cut', 0)}/{attacker.get('attackers', 0)} in {seconds}s",
                cut,
            )
        )
    if name in ("garbage", "bye-segment"):
        waited = attacker.get("cut", 0) + attacker.get("not_cut", 0)
        checks.append(
            (
                "every garbage link cut",
                f"{attacker.get('cut', 0)}/{waited}",
                waited > 0 and attacker.get("not_cut", 1) == 0,
            )
        )
        checks.append(
            (
                "Bye before every close",
                f"{attacker.get('bye_before_close', 0)}/{attacker.get('cut', 0)}",
                attacker.get("cut", 0) > 0
                and attacker.get("bye_before_close") == attacker.get("cut"),
            )
        )
    if name == "garbage":
        growth = rss["after"] - rss["before"] if rss["before"] is not None else None
        checks.append(
            (
                f"RSS 15 s after <= before + {RSS_GROWTH_TARGET_MB:g} MB",
                f"{growth:+.1f} MB" if growth is not None else None,
                growth is not None and growth <= RSS_GROWTH_TARGET_MB,
            )
        )
    if name == "qrp":
        growth = rss["peak"] - rss["before"] if rss["before"] is not None else None
        checks.append(
            (
                f"RSS peak <= before + {RSS_GROWTH_TARGET_MB:g} MB (proposed)",
                f"{growth:+.1f} MB" if growth is not None else None,
                growth is not None and growth <= RSS_GROWTH_TARGET_MB,
            )
        )
    if name == "bad-headers":
        failed = attacker.get("failed_cases")
        checks.append(
            (
                "new honest peer: 200 + well-formed X-Try-Ultrapeers after every case",
                f"{attacker.get('honest_accepted')}/{attacker.get('cases')} accepted, "
                f"{len(failed or [])} cases failed",
                failed == [] and attacker.get("cases", 0) > 0,
            )
        )
        errors = row.get("handler_errors")
        checks.append(("no stage handler errors", errors, errors == 0))
    if name == "slowloris":
        seconds = attacker.get("honest_accept_seconds")
        checks.append(
            (
                f"new honest peer accepted (200) within {ACCEPT_TARGET_S:g} s",
                f"{attacker.get('honest_accepted')}/{attacker.get('params', {}).get('probes')} "
                f"accepted, worst {seconds}s",
                seconds is not None and seconds <= ACCEPT_TARGET_S,
            )
        )
    if name == "ping-flood":
        routes = row["route_table"]
        growth = None
        if routes["before"] is not None and routes["peak_during"] is not None:
            growth = routes["peak_during"] - routes["before"] - routes["honest_queries_during"]
        checks.append(
            (
                f"route-table entries added by the attacker <= {ROUTE_GROWTH_TARGET}",
                growth,
                growth is not None and growth <= ROUTE_GROWTH_TARGET,
            )
        )
    return [{"target": t, "measured": m, "ok": ok} for t, m, ok in checks]


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "100%" if value == 1.0 else f"{100 * value:.2f}%"


def format_table(rows: list[dict[str, Any]], options: Options) -> str:
    header = (
        f"{'attack':<12} {'delivery before/during':>23} {'p50/p99 before ms':>18} "
        f"{'p50/p99 during ms':>18} {'cut (n/N, p50/max s)':>24} {'RSS MB bef/peak/aft':>20} "
        f"{'CPU% bef/dur':>13}  verdict"
    )
    lines = [
        f"honest probe: {options.rate:g} queries/s (half each way), every one answered by a hit; "
        f"{'quick' if options.quick else 'full'} counts",
        "",
        header,
        "-" * len(header),
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['attack']:<12} ERROR {row['error']}")
            continue
        attacker = row["attacker"]
        cut_s = attacker.get("cut_seconds") or {}
        cut = (
            f"{attacker.get('cut', 0)}/{attacker.get('attackers', 0)}, "
            f"{_num(cut_s.get('p50'))}/{_num(cut_s.get('max'))}"
        )
        rss = row["rss_mb"]
        cpu = row["cpu_percent"]
        verdict = "PASS" if all(t["ok"] for t in row["targets"]) else "MISS"
        lines.append(
            f"{row['attack']:<12} "
            f"{_pct(_delivery(row, 'before')) + ' / ' + _pct(_delivery(row, 'during')):>23} "
            f"{_num(_p(row, 'before', 'p50')) + ' / ' + _num(_p(row, 'before', 'p99')):>18} "
            f"{_num(_p(row, 'during', 'p50')) + ' / ' + _num(_p(row, 'during', 'p99')):>18} "
            f"{cut:>24} "
            f"{'/'.join(_num(rss[k], 0) for k in ('before', 'peak', 'after')):>20}"
            f" {_num(cpu['before'], 0) + '/' + _num(cpu['during'], 0):>13}  {verdict}"
        )
    lines += ["", "targets:"]
    for row in rows:
        for check in row["targets"]:
            lines.append(
                f"  {row['attack']:<12} {'PASS' if check['ok'] else 'MISS'}  "
                f"{check['target']}: {check['measured']}"
            )
    extras = []
    for row in rows:
        attacker = row.get("attacker") or {}
        if row["attack"] == "ping-flood" and "route_table" in row:
            extras.append(
                f"  ping-flood: {attacker.get('pings_sent')} pings sent; route table "
                f"{row['route_table']['before']} before, {row['route_table']['peak_during']} peak "
                f"during ({row['route_table']['honest_queries_during']} honest queries)"
            )
        if row["attack"] == "garbage":
            extras.append(
                f"  garbage: {attacker.get('attackers')} links ({attacker.get('hit_and_run')} "
                f"hit and run), refused {attacker.get('refused')}, Byes {attacker.get('byes')}, "
                f"errors {attacker.get('errors')}"
            )
        if row["attack"] == "slowloris":
            accepts = [
                (a.get("status"), a.get("seconds")) for a in attacker.get("honest_accepts", [])
            ]
            extras.append(
                f"  slowloris: {attacker.get('attackers')} sockets held; honest accepts "
                f"{accepts}; closed by the router {attacker.get('closed_by_router')}"
            )
        if row["attack"] == "bad-headers":
            for failed in attacker.get("failed_cases") or []:
                extras.append(f"  bad-headers {failed['case']}: {failed['problems'][:2]}")
        lost = row.get("honest_undelivered") or {}
        if any(lost.values()):
            extras.append(f"  {row['attack']}: honest messages never delivered: {lost}")
        if attacker.get("errors"):
            extras.append(f"  {row['attack']} attacker errors: {attacker['errors']}")
        if row.get("router_log_tail"):
            extras.append(f"  {row['attack']} router died: {row['router_log_tail'][-300:]}")
    if extras:
        lines += ["", "details:", *extras]
    return "\n".join(lines)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


# -- main --------------------------------------------------------------------------------


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Hostile peers against a gnurouter process: honest delivery, latency, "
        "time to cut the attacker, RSS and CPU, before and during each attack."
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"attacks to run (default all): {', '.join(PLANS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter phases")
    parser.add_argument("--rate", type=float, default=200.0, help="honest queries/s in all (200)")
    parser.add_argument("--before", type=float, help="seconds of the 'before' phase (10; quick 4)")
    parser.add_argument(
        "--router-args", default="", metavar="ARGS", help="extra `gnurouter run` options"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if any target is missed")
    parser.add_argument("--json", action="store_true", help="print the JSON result, not the table")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(PLANS)
    unknown = [n for n in names if n not in PLANS]
    if unknown:
        parser.error(f"unknown attack {unknown[0]!r}; choose from {', '.join(PLANS)}")
    if not 1.0 <= args.rate <= 5000.0:
        parser.error("--rate must be within 1..5000")
    before = args.before if args.before is not None else (4.0 if args.quick else 10.0)
    if not 1.0 <= before <= 600.0:
        parser.error("--before must be within 1..600 seconds")
    return Options(
        names=names,
        quick=args.quick,
        rate=args.rate,
        before=before,
        router_args=shlex.split(args.router_args),
        check=args.check,
        json=args.json,
    )


def _finish(options: Options, rows: list[dict[str, Any]]) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    document = {
        "time": stamp,
        "quick": options.quick,
        "rate": options.rate,
        "before_seconds": options.before,
        "router_args": options.router_args,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "targets": {
            "p99_ms": P99_TARGET_MS,
            "rss_growth_mb": RSS_GROWTH_TARGET_MB,
            "accept_s": ACCEPT_TARGET_S,
            "route_growth": ROUTE_GROWTH_TARGET,
        },
        "attacks": rows,
    }
    text = json.dumps(document, indent=2, default=str)
    (OUT_DIR / f"attacks-{stamp}.json").write_text(text)
    (OUT_DIR / "latest.json").write_text(text)
    if options.json:
        print(text)
    else:
        print(format_table(rows, options))
        print(f"\nJSON: {OUT_DIR / f'attacks-{stamp}.json'}")
    missed = any(not t["ok"] for row in rows for t in row["targets"])
    return 1 if options.check and missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []

    async def run(reactor: Any) -> None:
        for name in options.names:
            if not options.json:
                print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(await run_attack(reactor, name, options))

    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    failure: list[BaseException] = []

    async def go() -> None:
        try:
            await run(reactor)
        except BaseException as error:  # reported below, after the reactor stops
            failure.append(error)
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    if failure:
        print(f"attacks: error: {failure[0]!r}", file=sys.stderr)
    if not rows:
        return 2
    return _finish(options, rows)


if __name__ == "__main__":
    sys.exit(main())
