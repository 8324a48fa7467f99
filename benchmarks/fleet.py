#!/usr/bin/env python3
"""The dashboard at fleet scale: N routers, two pollers, two daphne workers, a week of history.

For each N (default 10, 30, 100) on this machine, in the production set-up
(PostgreSQL from DATABASE_URL, the Redis channel layer):

* N real `gnurouter run` processes on loopback (idle), each with its control
  endpoint behind a token (kept running from one N to the next, more added);
* a fresh database, migrated, with N routers and a week of history seeded at
  every tier (dashboard.routers.seeding);
* `--pollers` `manage.py watch_routers` processes sharing the routers through
  their leases, and two daphne workers serving the pages and WebSockets;
* after the pollers have split the routers, a `--window` of measurement:
  polls/s per router (rows the pollers stored), poller CPU per poll
  (/proc utime+stime over the polls), poll lag (the pollers' leases), page
  p50/p99 (overview, router page, live-window history; one signed-in client
  alternating between the workers), WebSocket updates/s (an overview and a
  router page held open), and database growth per hour (samples table and
  its indexes);
* the cost of one retention pass (downsampling + deletion a minute further on,
  over every router), and the bytes per row of each tier.

Prints a table and writes var/bench/fleet.json; docs/results/fleet.md holds a run's numbers.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python benchmarks/fleet.py [--sizes 10,30,100] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench" / "fleet"
BENCH_DB = "gnurouter_fleet"
TOKEN = "fleet-benchmark-token-" + secrets.token_hex(8)
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


@dataclass
class Router:
    gnutella: int
    control: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.control}"


class RouterExited(SystemExit):
    pass


def wait_answering(router: Router, deadline: float) -> None:
    while True:
        if router.process.poll() is not None:
            raise RouterExited(
                f"a router exited with {router.process.returncode}: see {router.log}"
            )
        try:
            httpx.get(
                router.base_url + "/metrics",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=1,
            ).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SystemExit("routers did not come up in time") from None
            time.sleep(0.2)


def start_router() -> Router:
    gnutella, control = free_port(), free_port()
    logs = VAR / "routers"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{control}.log"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "gnurouter", "run", "--listen", f"127.0.0.1:{gnutella}"),
            *("--control", f"127.0.0.1:{control}", "--target-peers", "0"),
        ],
        cwd=ROOT,
        env=dict(os.environ, GNUROUTER_CONTROL_TOKEN=TOKEN),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    return Router(gnutella, control, process, log)


def start_routers(count: int) -> list[Router]:
    """`count` routers, all answering; one whose port was taken meanwhile gets new ones."""
    started = [start_router() for _ in range(count)]
    try:
        deadline = time.monotonic() + 60 + 2 * count
        for index in range(len(started)):
            for _attempt in range(3):
                try:
                    wait_answering(started[index], deadline)
                    break
                except RouterExited:
                    if b"already in use" not in started[index].log.read_bytes():
                        raise
                    started[index] = start_router()
            else:
                raise SystemExit("could not find free ports for a router")
    except BaseException:
        stop([router.process for router in started])
        raise
    return started


def stop(processes: list[subprocess.Popen[Any]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fresh_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {BENCH_DB}")


def dashboard_env(database_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GNUROUTER_")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        GNUROUTER_CHANNEL_PREFIX=prefix,
        GNUROUTER_VAR=str(VAR),
        DJANGO_SETTINGS_MODULE="dashboard.project.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


@contextmanager
def services(env: dict[str, str], pollers: int, logs: Path) -> Iterator[dict[str, Any]]:
    """Two daphne workers and the pollers, stopped on the way out."""
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    ports = [free_port(), free_port()]
    try:
        for index, port in enumerate(ports):
            log = (logs / f"daphne-{index}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        *(str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1"),
                        *("-p", str(port), "dashboard.project.asgi:application"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        poller_processes = []
        for index in range(pollers):
            log = (logs / f"poller-{index}.log").open("wb")
            poller_processes.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "watch_routers", "--name", f"fleet-{index}"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        processes += poller_processes
        for port in ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise SystemExit("daphne did not come up") from None
                    time.sleep(0.2)
        yield {"workers": [f"http://127.0.0.1:{p}" for p in ports], "pollers": poller_processes}
    finally:
        stop(processes)


def session_cookie() -> str:
    """A signed-in viewer's session (what the sign-in form would give)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore

    from dashboard.routers.roles import ensure_roles

    ensure_roles()
    user, _ = User.objects.get_or_create(username="fleet-viewer")
    user.groups.add(Group.objects.get(name="viewer"))
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return str(session.session_key)


@dataclass
class WebSocketCount:
    messages: int = 0
    rows: int = 0


async def count_websocket(url: str, cookie: str, counts: WebSocketCount, until: float) -> None:
    from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol

    class Counter(WebSocketClientProtocol):
        def onMessage(self, payload: bytes, is_binary: bool) -> None:
            counts.messages += 1
            message = json.loads(payload)
            counts.rows += len(message.get("rows", [message]))

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    origin = f"http://{host}:{port}"
    factory = WebSocketClientFactory(url, origin=origin, headers={"Cookie": f"sessionid={cookie}"})
    factory.setProtocolOptions(openHandshakeTimeout=60)  # a loaded machine is slow to answer
    factory.protocol = Counter
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(factory, host, port)
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    transport.close()


@dataclass
class PageTimes:
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0

    def add(self, page: str, seconds: float) -> None:
        self.times.setdefault(page, []).append(seconds * 1000)


async def time_pages(
    workers: list[str], names: list[str], cookie: str, until: float, times: PageTimes
) -> None:
    cookies = {"sessionid": cookie}
    async with httpx.AsyncClient(cookies=cookies, timeout=30) as client:
        turn = 0
        while time.monotonic() < until:
            worker = workers[turn % len(workers)]
            name = names[turn % len(names)]
            for page, path in (
                ("overview", "/"),
                ("router page", f"/routers/{name}/"),
                ("history (live window)", f"/routers/{name}/history"),
            ):
                started = time.perf_counter()
                response = await client.get(worker + path)
                if response.status_code == 200:
                    times.add(page, time.perf_counter() - started)
                else:
                    times.errors += 1
            turn += 1


def samples_bytes() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('dashboard_sample')")
        return int(cursor.fetchone()[0])


def tier_sizes() -> dict[str, dict[str, float]]:
    """Rows and bytes per row of each tier: the row itself and its share of the indexes."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_relation_size('dashboard_sample'), pg_indexes_size('dashboard_sample'),"
            " count(*) FROM dashboard_sample"
        )
        heap, indexes, rows = cursor.fetchone()
        cursor.execute(
            "SELECT resolution, count(*), avg(pg_column_size(s.*)), avg(octet_length(data))"
            " FROM dashboard_sample s GROUP BY resolution ORDER BY resolution"
        )
        tiers = {}
        for resolution, count, row_bytes, data_bytes in cursor.fetchall():
            tiers[str(resolution)] = {
                "rows": int(count),
                "row_bytes": round(float(row_bytes), 1),
                "data_bytes": round(float(data_bytes), 1),
            }
    per_row_heap = heap / max(rows, 1)
    per_row_index = indexes / max(rows, 1)
    for tier in tiers.values():
        tier["stored_bytes_per_row"] = round(per_row_heap + per_row_index, 1)
    return {"tiers": tiers, "heap_per_row": per_row_heap, "index_per_row": per_row_index}


def retention_pass(router_ids: list[int], ahead: float) -> dict[str, float]:
    """One downsampling/retention pass over every router, `ahead` seconds from now."""
    from django.conf import settings

    from dashboard.routers import history

    now = datetime.now(tz=UTC) + timedelta(seconds=ahead)
    started = time.perf_counter()
    made = {"medium": 0, "coarse": 0, "deleted": 0}
    for router_id in router_ids:
        for key, value in history.downsample(
            router_id,
            now,
            raw=settings.HISTORY_RAW,
            medium=settings.HISTORY_MEDIUM,
            retention=settings.HISTORY_RETENTION,
        ).items():
            made[key] += value
    return {"ms": (time.perf_counter() - started) * 1000, **made}


def wait_for_split(router_ids: set[int], pollers: int, timeout: float) -> list[Any]:
    """Until the pollers' leases cover every router, each router once."""
    from dashboard.routers import sharing

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leases = sharing.live()
        covered = [pk for lease in leases for pk in lease.routers]
        if len(leases) == pollers and sorted(covered) == sorted(router_ids):
            return leases
        time.sleep(0.5)
    raise SystemExit("the pollers did not split the routers in time")


def measure(
    size: int, routers: list[Router], args: argparse.Namespace, admin_url: str, redis_url: str
) -> dict[str, Any]:
    from django.db import connection, connections

    from dashboard.routers import sharing
    from dashboard.routers.models import Router as RouterRow
    from dashboard.routers.models import Sample
    from dashboard.routers.seeding import seed_history

    connections.close_all()
    fresh_database(admin_url)
    env = dashboard_env(
        with_database(args.database_url, BENCH_DB), redis_url, f"fleet-{secrets.token_hex(4)}"
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    rows = RouterRow.objects.bulk_create(
        RouterRow(name=f"fleet-{i:03d}", base_url=r.base_url, token=TOKEN)
        for i, r in enumerate(routers[:size])
    )
    ids = [row.pk for row in rows]
    from django.conf import settings

    seeded_at = time.perf_counter()
    seeded = seed_history(
        ids,
        datetime.now(tz=UTC),
        poll_interval=settings.POLL_INTERVAL,
        raw=settings.HISTORY_RAW,
        medium=settings.HISTORY_MEDIUM,
        retention=args.history_days * 86400,
    )
    seed_seconds = time.perf_counter() - seeded_at
    cookie = session_cookie()
    print(f"N={size}: seeded {seeded:,} rows in {seed_seconds:.0f} s", flush=True)
    with services(env, args.pollers, VAR / f"n{size}") as running:
        wait_for_split(set(ids), args.pollers, timeout=60)
        time.sleep(args.settle)  # first polls, connections, downsampling passes
        pollers = running["pollers"]
        cpu_before = [cpu_seconds(p.pid) for p in pollers]
        bytes_before = samples_bytes()
        start_wall = datetime.now(tz=UTC)
        started = time.monotonic()
        until = started + args.window
        times = PageTimes()
        overview_ws, router_ws = WebSocketCount(), WebSocketCount()
        workers = running["workers"]
        ws_base = workers[1].replace("http://", "ws://")

        async def window() -> None:
            await asyncio.gather(
                time_pages(workers, [r.name for r in rows], cookie, until, times),
                count_websocket(ws_base + "/ws/overview/", cookie, overview_ws, until),
                count_websocket(ws_base + f"/ws/routers/{rows[0].name}/", cookie, router_ws, until),
            )

        load_before = os.getloadavg()[0]
        asyncio.run(window())
        load_after = os.getloadavg()[0]
        elapsed = time.monotonic() - started
        end_wall = datetime.now(tz=UTC)
        cpu_used = sum(cpu_seconds(p.pid) for p in pollers) - sum(cpu_before)
        bytes_after = samples_bytes()
        leases = sharing.live()
    connection.close()
    polls = Sample.objects.filter(resolution=0, time__gt=start_wall, time__lte=end_wall).count()
    retention = retention_pass(ids, ahead=60.0)
    sizes = tier_sizes()
    pages = {
        page: {
            "count": len(values),
            "p50_ms": round(statistics.median(values), 1),
            "p99_ms": round(percentile(values, 0.99), 1),
        }
        for page, values in times.times.items()
    }
    return {
        "routers": size,
        "pollers": args.pollers,
        "window_s": round(elapsed, 1),
        "load_average": [round(load_before, 1), round(load_after, 1)],
        "seeded_rows": seeded,
        "seed_s": round(seed_seconds, 1),
        "polls_per_s_per_router": round(polls / elapsed / size, 2),
        "poller_cpu_ms_per_poll": round(cpu_used * 1000 / max(polls, 1), 3),
        "poller_cpu_percent_of_a_core": round(100 * cpu_used / elapsed / args.pollers, 1),
        "lease_shares": {lease.name: len(lease.routers) for lease in leases},
        "lag_p99_ms": max((lease.lag_p99_ms for lease in leases), default=0.0),
        "pollers_retention_ms": {lease.name: lease.retention_ms for lease in leases},
        "pages": pages,
        "page_errors": times.errors,
        "ws_overview_messages_per_s": round(overview_ws.messages / elapsed, 1),
        "ws_overview_rows_per_s": round(overview_ws.rows / elapsed, 1),
        "ws_router_updates_per_s": round(router_ws.messages / elapsed, 2),
        "db_growth_mb_per_hour": round((bytes_after - bytes_before) / elapsed * 3600 / 1e6, 1),
        "raw_rows_per_router_per_hour": round(polls / elapsed / size * 3600),
        "retention_pass": {k: round(v, 1) for k, v in retention.items()},
        "storage": sizes,
    }


def report(result: dict[str, Any]) -> str:
    pages = result["pages"]
    lines = [
        f"N={result['routers']:>3} pollers={result['pollers']} window={result['window_s']} s"
        f" (machine load average {result['load_average'][0]} -> {result['load_average'][1]})",
        f"  polls/s per router        {result['polls_per_s_per_router']}",
        f"  poller CPU per poll       {result['poller_cpu_ms_per_poll']} ms"
        f"  ({result['poller_cpu_percent_of_a_core']}% of a core per poller;"
        f" shares {result['lease_shares']}; lag p99 {result['lag_p99_ms']} ms)",
    ]
    for page, figures in pages.items():
        lines.append(
            f"  {page:<25} p50 {figures['p50_ms']} ms  p99 {figures['p99_ms']} ms"
            f"  ({figures['count']} requests)"
        )
    lines += [
        f"  WebSocket                 overview {result['ws_overview_messages_per_s']} msg/s"
        f" ({result['ws_overview_rows_per_s']} rows/s), router page"
        f" {result['ws_router_updates_per_s']} updates/s",
        f"  DB growth                 {result['db_growth_mb_per_hour']} MB/hour"
        f" ({result['raw_rows_per_router_per_hour']} raw rows per router per hour)",
        f"  retention pass            {result['retention_pass']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10,30,100", help="router counts, comma-separated")
    parser.add_argument("--pollers", type=int, default=2)
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per N")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--history-days", type=float, default=7.0, help="history seeded")
    parser.add_argument("--output", type=Path, default=VAR.parent / "fleet.json")
    args = parser.parse_args()
    args.database_url = os.environ.get("DATABASE_URL", "")
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error(
            "set DATABASE_URL to a PostgreSQL server (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    sizes = sorted(int(size) for size in args.sizes.split(","))
    admin_url = with_database(args.database_url, "postgres")
    setup_django(
        dashboard_env(with_database(args.database_url, BENCH_DB), redis_url, "fleet-bench")
    )
    routers: list[Router] = []
    results = []
    try:
        for size in sizes:
            routers += start_routers(size - len(routers))
            result = measure(size, routers, args, admin_url, redis_url)
            print(report(result), flush=True)
            results.append(result)
    finally:
        stop([router.process for router in routers])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"when": datetime.now(tz=UTC).isoformat(), "runs": results}, indent=2)
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
