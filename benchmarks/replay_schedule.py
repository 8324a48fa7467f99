"""Does the replayer keep schedule at 100x the original rate?  Measures it.

    .venv/bin/python benchmarks/replay_schedule.py                  # 100x, a 10-minute trace
    .venv/bin/python benchmarks/replay_schedule.py --speed 10 --duration 2m --json

A synthetic trace with the original run's statistics (179.55 messages/s on
average, bursty, ~12 connections with churn) is generated (or `--trace` is
used), a router is started in its own process on a free loopback port
(`python -m gnurouter run --conditioning none`, so it sheds nothing), and the
trace is replayed against it from this process at `--speed`.  At 100x the
schedule asks for ~18,000 messages/s on average and several times that in
bursts.  Printed: scheduled and achieved rates, lateness against the schedule
(p50/p90/p99/p99.9/max: the time a message was handed to its socket minus
the time it was due), the time the target held the replayer back, messages
sent/unsent, connections, and what came back.  The run is bounded by
`--timeout`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gnurouter.edge.gctuning import tune_for_serving
from gnurouter.traces.format import TraceWriter
from gnurouter.traces.replay import Replayer, ReplayOptions, format_report
from gnurouter.traces.synth import SynthConfig, Synthesizer

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def make_trace(path: Path, duration: float, seed: int) -> None:
    synthesizer = Synthesizer(SynthConfig(duration=duration, seed=seed))
    with TraceWriter(path, producer="benchmarks/replay_schedule.py") as writer:
        for record in synthesizer:
            writer.write(record)


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"router exited with status {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("router did not start listening")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=100.0, help="time scale (100)")
    parser.add_argument("--duration", default="10m", help="synthetic trace length (10m)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", help="replay this trace instead of a synthetic one")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (s)")
    parser.add_argument("--router-args", default="", help="extra `gnurouter run` options")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from gnurouter.config import parse_duration

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(args.trace) if args.trace else Path(tmp) / "bench.gtrace"
        if not args.trace:
            make_trace(trace, parse_duration(args.duration), args.seed)
        port = free_port()
        # Peers sending many malformed messages, or a 0.4-era ping stream
        # sped up 100x, are not closed: every message of the trace should be
        # sendable, so the count is exact.
        config = Path(tmp) / "router.toml"
        config.write_text(
            "[router]\nmax_malformed_per_peer = 1000000\nping_flood_refusals = 0\n"
            "control_rate_per_peer = 0\n"
        )
        command = [sys.executable, "-m", "gnurouter", "run", "--config", str(config),
                   "--listen", f"{HOST}:{port}", "--target-peers", "0", "--max-peers", "1000",
                   "--conditioning", "none", "--log-level", "error",
                   *args.router_args.split()]  # fmt: skip
        root = Path(__file__).resolve().parent.parent
        router = subprocess.Popen(command, stdin=subprocess.DEVNULL, cwd=root)
        try:
            wait_listening(port, router)
            router_cpu = process_cpu_seconds(router.pid)
            cpu = time.process_time()
            report = replay(trace, port, args.speed, args.timeout)
            cpu = time.process_time() - cpu
            router_after = process_cpu_seconds(router.pid)
        finally:
            router.terminate()
            try:
                router.wait(10)
            except subprocess.TimeoutExpired:
                router.kill()
    data = report.to_json()
    data["replayer_cpu_s"] = round(cpu, 3)
    if router_cpu is not None and router_after is not None:
        data["router_cpu_s"] = round(router_after - router_cpu, 3)
    data["load_average"] = os.getloadavg()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_report(report))
        kept = report.messages_sent == report.messages_scheduled and report.scheduled_rate
        verdict = (
            "kept schedule"
            if kept
            and report.achieved_rate >= 0.99 * report.scheduled_rate
            and data["lateness_ms"]["p99"] < 10
            else "MISSED schedule"
        )
        print(
            f"cpu          replayer {data['replayer_cpu_s']:.2f} s, router "
            f"{data.get('router_cpu_s', float('nan')):.2f} s over "
            f"{report.wall_seconds:.2f} s wall; "
            f"load average {data['load_average'][0]:.2f} on {os.cpu_count()} cores"
        )
        print(
            f"verdict      {verdict} at {args.speed:g}x "
            "(all messages sent, achieved >= 99% of scheduled, p99 lateness < 10 ms)"
        )
    return 0


def replay(trace: Path, port: int, speed: float, timeout: float) -> Any:
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    options = ReplayOptions(speed=speed, progress=sys.stderr.isatty(), drain=0.5)
    replayer = Replayer(reactor, str(trace), (HOST, port), options)
    results: list[Any] = []

    def start() -> None:
        tune_for_serving()
        done = replayer.run()
        done.addBoth(results.append)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.callLater(timeout, replayer.stop)
    reactor.run()
    if not results:
        raise SystemExit("replay did not finish")
    result = results[0]
    if not hasattr(result, "to_json"):
        result.raiseException()
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
