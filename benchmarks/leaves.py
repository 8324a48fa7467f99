#!/usr/bin/env python3
"""Many leaves at once, on loopback: accept bursts, a burst of QRP tables, memory, the merge.

A fresh router process (`gnurouter run`) takes `--leaves` leaves (2,000 by
default) from this process, each a real 0.6 servent on its own loopback
address (127.1.x.y, so no per-address handshake limit applies), at most
`--in-flight` handshakes at once.  Then every leaf sends its QRP table at
the same moment (RESET + deflated 4-bit PATCHes of `--chunk` bytes, as
LimeWire and gtk-gnutella leaves do right after the handshake).  Printed
and written to var/bench/leaves.json:

* handshakes/s and the router's CPU per handshake; accept-queue overflows
  (the kernel's ListenOverflows; and TCP connects that took over 0.9 s, as
  one that waited for a SYN retry does);
* tables installed out of `--leaves` and how long the burst took; the router
  stage's drops by reason;
* the router's RSS per leaf after the handshakes and after the tables;
* the time to rebuild the merged table ultrapeers are sent (every leaf
  table folded and OR-ed, what `merge_tables` does), against the
  incremental `MergedTable` updating it for one leaf's new table.

RLIMIT_NOFILE is raised to its hard limit first (the router process
inherits it); the limit in force is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

from twisted.internet import defer, task, threads

from gnurouter.bench import HOST, router_command
from gnurouter.bench.overload import fetch_metrics, free_port, rss_mb, stop, wait_listening
from gnurouter.edge.servent import LEAF_HEADERS, ServentProtocol, connect_servent
from gnurouter.protocol.messages import Message, new_guid
from gnurouter.protocol.qrp import UP_TABLE_BITS, QrpTable, build_update, merge_tables
from gnurouter.routing.neighbours import MergedTable

ROOT = Path(__file__).resolve().parents[1]
#: A TCP connect slower than this waited for a SYN retry (Linux: 1 s): the
#: listen backlog overflowed.
SYN_RETRY = 0.9


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full
    (TcpExt ListenOverflows, machine-wide: other programs' ports count too)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


def leaf_address(index: int) -> str:
    return f"127.1.{index // 250}.{index % 250 + 1}"


def leaf_words(index: int, count: int) -> list[str]:
    """`count` keywords of leaf `index`: some shared by every leaf, most its own."""
    rng = random.Random(index)
    shared = [f"common{n}" for n in range(count // 10)]
    own = [f"w{rng.getrandbits(40):x}" for _ in range(count - len(shared))]
    return shared + own


def table_messages(table: QrpTable, chunk: int) -> list[Message]:
    bodies = build_update(None, table.resized_bits(table.bits), chunk=chunk)
    return [Message.from_body(new_guid(), 1, 0, body) for body in bodies]


def leaves_router_command(args: argparse.Namespace, port: int, control_port: int) -> list[str]:
    command = router_command(
        port,
        "--no-bootstrap",
        "--max-leaves",
        str(args.leaves),
        "--max-peers",
        str(args.leaves + 32),
        "--max-handshakes",
        str(max(256, 4 * args.in_flight)),  # the client counts a leaf in before the router does
        # The burst, not keepalive traffic, is measured.
        "--keepalive-interval",
        "10m",
        "--log-level",
        "error",
        control_port=control_port,
    )
    if not args.deflate:
        command.append("--no-deflate")
    return command + list(args.router_arg)


async def connect_leaves(
    reactor: Any, args: argparse.Namespace, port: int
) -> tuple[list[ServentProtocol], list[float], list[float]]:
    """`args.leaves` leaves, at most `args.in_flight` handshakes at once; the seconds each
    one's TCP connect took, and each one's connect and handshake."""
    leaves: list[ServentProtocol] = []
    connects: list[float] = []
    durations: list[float] = []
    refused: dict[str, int] = {}
    limit = defer.DeferredSemaphore(args.in_flight)

    async def one(index: int) -> None:
        started = time.monotonic()
        try:
            leaf = await connect_servent(
                reactor,
                HOST,
                port,
                source=leaf_address(index),
                timeout=30,
                headers=LEAF_HEADERS,
                deflate=args.deflate,
                keep_inbox=False,
            )
        except (ConnectionError, defer.TimeoutError) as error:
            reason = str(error).split(":")[0]
            refused[reason] = refused.get(reason, 0) + 1
            return
        durations.append(time.monotonic() - started)
        connects.append((leaf.connected_at or started) - started)
        leaves.append(leaf)

    await defer.gatherResults(
        [limit.run(one, index) for index in range(args.leaves)],
        consumeErrors=True,
    )
    if refused:
        print(f"connects that failed: {refused}", flush=True)
    return leaves, connects, durations


async def metrics(control_port: int) -> dict[str, Any]:
    found = await threads.deferToThread(fetch_metrics, control_port)
    if found is None:
        raise RuntimeError("the router's control endpoint did not answer")
    return found


def tables_installed(snapshot: dict[str, Any]) -> int:
    return sum(
        1
        for peer in snapshot["peers"]
        if peer.get("qrp_table") and peer["qrp_table"]["tables_installed"]
    )


async def wait_leaves(reactor: Any, control_port: int, count: int, settle: float) -> int:
    """The leaves the router counts, once all `count` are in or none came for `settle` s."""
    last, changed = -1, time.monotonic()
    while True:
        counted = (await metrics(control_port))["router"]["roles"].get("leaf", 0)
        if counted >= count or time.monotonic() - changed > settle:
            return int(counted)
        if counted != last:
            last, changed = counted, time.monotonic()
        await task.deferLater(reactor, 0.25, lambda: None)  # the sampling period


async def table_burst(
    reactor: Any,
    args: argparse.Namespace,
    leaves: list[ServentProtocol],
    messages: list[list[Message]],
    control_port: int,
) -> dict[str, Any]:
    """Every leaf sends its table in one reactor turn; wait until all are in or none come."""
    started = time.monotonic()
    for leaf, table in zip(leaves, messages, strict=False):
        leaf.send(*table)
    installed, last_change, last = 0, started, 0
    snapshot: dict[str, Any] = {}
    while time.monotonic() - last_change < args.settle:
        await task.deferLater(reactor, 0.25, lambda: None)  # the sampling period
        snapshot = await metrics(control_port)
        installed = tables_installed(snapshot)
        if installed != last:
            last, last_change = installed, time.monotonic()
        if installed >= len(leaves):
            break
    return {
        "tables_installed": installed,
        "seconds": round(last_change - started, 2),
        "leaves_sending": len(leaves),
        "qrp_messages_sent": sum(len(table) for table in messages[: len(leaves)]),
        "router_drops": snapshot["stages"]["router"]["drops"],
        "router_peak_queue": snapshot["stages"]["router"]["peak_queue_length"],
        "qrp_errors": snapshot["router"]["qrp_errors"],
    }


def merge_times(tables: list[QrpTable], repeat: int) -> dict[str, float]:
    """Full rebuild of the merged table against one incremental update, ms (medians)."""
    for table in tables:
        table.folded_mask(UP_TABLE_BITS)  # folded once per table as it is installed
    rebuild = []
    for _ in range(repeat):
        started = time.perf_counter()
        merge_tables(tables, UP_TABLE_BITS)
        rebuild.append(time.perf_counter() - started)
    merged = MergedTable(UP_TABLE_BITS)
    for index, table in enumerate(tables):
        merged.set(index, table)
    merged.bits()
    update = []
    for round_ in range(repeat):
        index = round_ % len(tables)
        started = time.perf_counter()
        merged.set(index, tables[(index + 1) % len(tables)])
        merged.bits()
        update.append(time.perf_counter() - started)
    return {
        "rebuild_ms": round(median(rebuild) * 1000, 2),
        "incremental_ms": round(median(update) * 1000, 3),
    }


async def run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    nofile = raise_file_limit()
    print(f"RLIMIT_NOFILE {nofile}", flush=True)
    if nofile < args.leaves + 256:
        raise SystemExit(f"RLIMIT_NOFILE {nofile} is too low for {args.leaves} leaves")
    print(f"building {args.leaves} tables of {args.words} words", flush=True)
    tables = [
        QrpTable.from_words(leaf_words(i, args.words), UP_TABLE_BITS) for i in range(args.leaves)
    ]
    messages = [table_messages(table, args.chunk) for table in tables]
    port, control_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("GNUROUTER_CONTROL_TOKEN", None)
    log = args.router_log.open("wb") if args.router_log else subprocess.DEVNULL
    router = subprocess.Popen(
        leaves_router_command(args, port, control_port), stdout=log, stderr=log, env=env
    )
    result: dict[str, Any] = {
        "leaves": args.leaves,
        "in_flight": args.in_flight,
        "deflate": args.deflate,
        "words": args.words,
        "rlimit_nofile": nofile,
        "router_args": list(args.router_arg),
    }
    try:
        wait_listening(port, router)
        await metrics(control_port)
        rss_empty = rss_mb(router.pid)
        cpu_before = cpu_seconds(router.pid)
        overflows_before = listen_overflows()
        started = time.monotonic()
        leaves, connects, durations = await connect_leaves(reactor, args, port)
        counted = await wait_leaves(reactor, control_port, args.leaves, args.settle)
        # A leaf the router closed meanwhile (refused, timed out) sends no table.
        leaves = [leaf for leaf in leaves if not leaf.closed.called]
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(router.pid) - cpu_before
        rss_joined = rss_mb(router.pid)
        result["handshakes"] = {
            "per_s": round(len(durations) / elapsed, 1),
            "router_cpu_ms_each": round(cpu * 1000 / len(durations), 3),
            "median_ms": round(median(durations) * 1000, 2),
            "max_ms": round(max(durations) * 1000, 1),
            "connect_max_ms": round(max(connects) * 1000, 1),
            "syn_retries": sum(1 for d in connects if d > SYN_RETRY),
            "listen_overflows": listen_overflows() - overflows_before,
            "leaves_established": counted,
        }
        print(f"handshakes: {result['handshakes']}", flush=True)
        result["burst"] = await table_burst(reactor, args, leaves, messages, control_port)
        print(f"burst: {result['burst']}", flush=True)
        rss_tables = rss_mb(router.pid)
        installed = max(1, result["burst"]["tables_installed"])
        result["memory_kb_per_leaf"] = {
            "connection": round((rss_joined - rss_empty) * 1024 / max(1, counted), 1),
            "table": round((rss_tables - rss_joined) * 1024 / installed, 1),
        }
        print(f"memory per leaf (KB): {result['memory_kb_per_leaf']}", flush=True)
        for leaf in leaves:
            leaf.close()
    finally:
        stop(router)
    result["merge"] = merge_times(tables, args.repeat)
    print(f"merged table for {len(tables)} leaves: {result['merge']}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64, help="handshakes at once")
    parser.add_argument("--words", type=int, default=300, help="keywords per leaf table")
    parser.add_argument("--chunk", type=int, default=1024, help="bytes per QRP PATCH")
    parser.add_argument("--deflate", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds without a new table that end the burst"
    )
    parser.add_argument("--repeat", type=int, default=20, help="merge timings (median)")
    parser.add_argument(
        "--router-arg", action="append", default=[], help="extra `gnurouter run` argument"
    )
    parser.add_argument("--router-log", type=Path, help="the router's output (else discarded)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "leaves.json")
    args = parser.parse_args(argv)
    task.react(lambda reactor: defer.ensureDeferred(_run_and_save(reactor, args)))
    return 0  # not reached: react exits with the run's status


async def _run_and_save(reactor: Any, args: argparse.Namespace) -> None:
    result = await run(reactor, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    runs.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **result})
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"written to {args.out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
