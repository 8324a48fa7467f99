"""The SEDA Gnutella overload experiment, reproduced and extended: `gnurouter bench overload`.

For every (policy, offered rate) point a fresh router process runs with the
original's bottleneck (`--query-delay 20ms`, pings flooded as the original
did), a load generator process (`gnurouter.bench.loadgen`) offers bursts of
10 packets at the rate, and this driver samples the router's metrics and
RSS four times a second.  A point that passes the queue or memory limit is
stopped and reported as collapsed.  Results go to a JSON file, PNG plots and
a markdown report beside the original's published figures, all under `--out`
(var/bench/ by default) and nowhere else: the published copy in docs/results/
changes only with `--publish`, which takes a full run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gnurouter.bench import HOST, router_command

#: The original's published means, ms (ping, query); None: out of memory.
ORIGINAL: dict[int, dict[str, tuple[float, float] | None]] = {
    100: {"single thread": (13.34, 27.27), "thread governor": (12.63, 27.39)},
    200: {"single thread": (35.8, 38.83), "thread governor": (29.42, 42.69)},
    400: {"single thread": (3455.0, 6443.0), "thread governor": (10.93, 29.36)},
    1000: {"single thread": None, "thread governor": (16.47, 37.67)},
}
RATES = (100, 200, 400, 1000, 2000, 5000, 10_000)
QUICK_RATES = (100, 400, 1000, 10_000)
#: A policy with this suffix also has the router send Hops-Flow when overloaded,
#: and the generator honour it as real servents do (queries shed at the source);
#: every other point runs with Hops-Flow off, as before it existed.
HOPS_FLOW_SUFFIX = "+hops-flow"
POLICIES = (
    "none",
    "threshold",
    "query-filter",
    "codel",
    "response-time",
    "governor",
    "default",
    "default" + HOPS_FLOW_SUFFIX,
)
QUICK_POLICIES = ("none", "governor", "default")
QUERY_DELAY = "20ms"


@dataclass
class Limits:
    queue: int = 20_000
    rss_mb: float = 1024.0


@dataclass
class Settings:
    rates: Sequence[int]
    policies: Sequence[str]
    duration: float
    warmup: float
    settle_seconds: float
    query_share: float
    limits: Limits
    out_dir: Path
    progress: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"router exited with status {process.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is coming up: nothing to await
    raise RuntimeError(f"router did not listen on {port} within {timeout}s")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def fetch_metrics(control_port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{control_port}/metrics", timeout=2) as reply:
            data: dict[str, Any] = json.load(reply)
            return data
    except (OSError, ValueError):
        return None


def split_policy(policy: str) -> tuple[str, bool]:
    """(the --conditioning value, whether Hops-Flow is on) of a point's policy."""
    if policy.endswith(HOPS_FLOW_SUFFIX):
        return policy[: -len(HOPS_FLOW_SUFFIX)], True
    return policy, False


def overload_router_command(port: int, control_port: int, policy: str) -> list[str]:
    conditioning, hops_flow = split_policy(policy)
    return router_command(
        port,
        "--query-delay",
        QUERY_DELAY,
        "--ping-mode",
        "flood",
        # A load generator, not an attacker: its few links carry thousands of
        # pings and pongs a second each.
        "--control-rate-per-peer",
        "0",
        "--conditioning",
        conditioning,
        *(() if hops_flow else ("--no-hops-flow",)),
        "--log-level",
        "error",
        control_port=control_port,
    )


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_point(policy: str, rate: int, settings: Settings, duration: float) -> dict[str, Any]:
    """One router process, one load generator process, one policy at one rate."""
    port, control_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("GNUROUTER_CONTROL_TOKEN", None)
    router = subprocess.Popen(
        overload_router_command(port, control_port, policy),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    samples: list[dict[str, float]] = []
    point: dict[str, Any] = {"policy": policy, "rate": rate, "collapsed": None}
    loadgen: subprocess.Popen[bytes] | None = None
    try:
        wait_listening(port, router)
        conditioning, hops_flow = split_policy(policy)
        warmup = settings.warmup if conditioning in ("governor", "default", "all") else 0.0
        loadgen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gnurouter.bench.loadgen",
                "--target",
                f"{HOST}:{port}",
                "--rate",
                str(rate),
                "--duration",
                str(duration),
                "--warmup",
                str(warmup),
                "--query-share",
                str(settings.query_share),
                *(("--honour-hops-flow",) if hops_flow else ()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        started = time.monotonic()
        deadline = started + warmup + duration + 30
        last: dict[str, Any] | None = None
        while loadgen.poll() is None:
            if time.monotonic() > deadline:
                point["error"] = "load generator overran its time budget"
                break
            metrics = fetch_metrics(control_port)
            memory = rss_mb(router.pid)
            if metrics is not None:
                last = metrics
                stage = metrics["stages"]["router"]
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 3),
                        "queue": stage["queue_length"],
                        "query_queue": stage["classes"]["query"]["queue_length"]
                        + stage["classes"]["fifo"]["queue_length"],
                        "threads": stage["threads"],
                        "busy_threads": metrics["conditioning"]["governor"]["busy_threads"],
                        "rss_mb": round(memory, 1),
                    }
                )
                if stage["queue_length"] > settings.limits.queue or memory > settings.limits.rss_mb:
                    point["collapsed"] = {
                        "t": samples[-1]["t"],
                        "queue": stage["queue_length"],
                        "rss_mb": round(memory, 1),
                    }
                    break
            time.sleep(0.25)  # the sampling period itself
        if loadgen.poll() is None:
            loadgen.kill()
        output, _ = loadgen.communicate(timeout=30)
        if point["collapsed"] is None and output:
            point["load"] = json.loads(output)
        final = fetch_metrics(control_port) or last
        if final is not None:
            stage = final["stages"]["router"]
            point["router_drops"] = stage["drops"]
            point["hops_flow"] = final["router"].get("hops_flow")
            point["conditioning"] = {
                key: value
                for key, value in final["conditioning"].items()
                if key in ("governor", "response_time", "query_filter")
            }
    except RuntimeError as error:
        point["error"] = str(error)
    finally:
        if loadgen is not None and loadgen.poll() is None:
            loadgen.kill()
        point["peak_rss_mb"] = max((s["rss_mb"] for s in samples), default=rss_mb(router.pid))
        stop(router)
    point["samples"] = samples
    point["peak_queue"] = max((s["queue"] for s in samples), default=0)
    point["max_threads"] = max((s["threads"] for s in samples), default=1)
    return point


def points(settings: Settings) -> Iterator[tuple[str, int]]:
    for policy in settings.policies:
        for rate in settings.rates:
            yield policy, rate


def latency(point: dict[str, Any], kind: str, field: str = "mean_ms") -> float | None:
    load = point.get("load")
    if not load:
        return None
    value = load["latency"].get(kind, {}).get(field)
    return None if value is None else float(value)


def describe_point(point: dict[str, Any]) -> str:
    if point.get("collapsed"):
        c = point["collapsed"]
        return f"collapsed at t = {c['t']:.1f} s, queue = {c['queue']}, RSS = {c['rss_mb']:.0f} MB"
    if point.get("error"):
        return f"error: {point['error']}"
    return ""


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def original_table(results: list[dict[str, Any]]) -> list[str]:
    by_key = {(p["policy"], p["rate"]): p for p in results}
    lines = [
        "| load (pkt/s) | original 1 thread | original governor "
        "| ours: none | ours: governor | ours: default |",
        "|---|---|---|---|---|---|",
    ]
    for rate, original in ORIGINAL.items():
        cells = []
        for name in ("single thread", "thread governor"):
            figures = original[name]
            cells.append("out of memory" if figures is None else f"{figures[0]} / {figures[1]}")
        for policy in ("none", "governor", "default"):
            point = by_key.get((policy, rate))
            if point is None:
                cells.append("not run")
            elif describe_point(point):
                cells.append(describe_point(point))
            else:
                cells.append(f"{fmt(latency(point, 'ping'))} / {fmt(latency(point, 'query'))}")
        lines.append(f"| {rate} | " + " | ".join(cells) + " |")
    return lines


def full_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| policy | pkt/s | ping mean/p99 | pong p99 | query mean/p99 | hit p99 | goodput/s | "
        "non-query lost | queries shed | shed at source | peak queue | threads | peak RSS MB "
        "| note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in results:
        load = point.get("load") or {}
        sent = load.get("sent", {})
        received = load.get("received", {})
        lost = sum(
            sent.get(k, 0) - received.get(k, 0) for k in ("ping", "pong", "query-hit", "push")
        )
        shed = sum(kinds.get("query", 0) for kinds in (point.get("router_drops") or {}).values())
        lines.append(
            f"| {point['policy']} | {point['rate']} "
            f"| {fmt(latency(point, 'ping'))} / {fmt(latency(point, 'ping', 'p99_ms'))} "
            f"| {fmt(latency(point, 'pong', 'p99_ms'))} "
            f"| {fmt(latency(point, 'query'))} / {fmt(latency(point, 'query', 'p99_ms'))} "
            f"| {fmt(latency(point, 'query-hit', 'p99_ms'))} "
            f"| {fmt(load.get('goodput_per_s'), 0)} | {lost if load else '-'} | {shed} "
            f"| {load.get('shed_at_source', '-') if load else '-'} "
            f"| {point['peak_queue']} | {point['max_threads']} | {point['peak_rss_mb']:.0f} "
            f"| {describe_point(point)} |"
        )
    return lines


def plot(results: list[dict[str, Any]], settle: dict[str, Any] | None, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    policies = list(dict.fromkeys(p["policy"] for p in results))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, kind in zip(axes, ("ping", "query"), strict=True):
        for policy in policies:
            rows = [p for p in results if p["policy"] == policy and latency(p, kind) is not None]
            if rows:
                axis.plot(
                    [p["rate"] for p in rows], [latency(p, kind) for p in rows], "o-", label=policy
                )
        index = 0 if kind == "ping" else 1
        for name, style in (("single thread", "k--"), ("thread governor", "k:")):
            published = [(r, v[name]) for r, v in ORIGINAL.items()]
            known = [(r, f[index]) for r, f in published if f is not None]
            axis.plot([r for r, _ in known], [v for _, v in known], style, label=f"original {name}")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("offered load (packets/s)")
        axis.set_ylabel(f"mean {kind} latency (ms)")
        axis.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    files.append(out_dir / "overload-latency.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    for policy in policies:
        rows = [p for p in results if p["policy"] == policy and p.get("load")]
        if rows:
            axis.plot(
                [p["rate"] for p in rows],
                [p["load"]["goodput_per_s"] for p in rows],
                "o-",
                label=policy,
            )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("offered load (packets/s)")
    axis.set_ylabel("goodput (timed messages delivered/s)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7)
    fig.tight_layout()
    files.append(out_dir / "overload-goodput.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    over_time_rate = 1000 if any(p["rate"] == 1000 for p in results) else results[-1]["rate"]
    fig, (queue_axis, thread_axis) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for policy in policies:
        rows = [p for p in results if p["policy"] == policy and p["rate"] == over_time_rate]
        if rows and rows[0]["samples"]:
            samples = rows[0]["samples"]
            queue_axis.plot(
                [s["t"] for s in samples], [max(1, s["queue"]) for s in samples], label=policy
            )
            thread_axis.plot(
                [s["t"] for s in samples], [s["threads"] for s in samples], label=policy
            )
    queue_axis.set_yscale("log")
    queue_axis.set_ylabel("router queue length")
    queue_axis.set_title(f"router stage at {over_time_rate} packets/s")
    thread_axis.set_ylabel("router threads")
    thread_axis.set_xlabel("seconds")
    queue_axis.legend(fontsize=7)
    for axis in (queue_axis, thread_axis):
        axis.grid(True, alpha=0.3)
    fig.tight_layout()
    files.append(out_dir / "overload-over-time.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    if settle and settle.get("samples"):
        fig, axis = plt.subplots(figsize=(7, 3.5))
        samples = settle["samples"]
        axis.plot([s["t"] for s in samples], [s["threads"] for s in samples], label="threads")
        axis.axhline(settle["littles_n"], color="k", linestyle=":", label="rate x share x delay")
        axis.set_xlabel("seconds")
        axis.set_ylabel("router threads")
        axis.legend()
        axis.grid(True, alpha=0.3)
        fig.tight_layout()
        files.append(out_dir / "governor-settling.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_markdown(
    path: Path,
    results: list[dict[str, Any]],
    settle: dict[str, Any] | None,
    plots: list[Path],
    info: dict[str, Any],
    settings: Settings,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Overload benchmark",
        "",
        "Regenerated by `gnurouter bench overload` "
        f"({'quick' if list(settings.rates) == list(QUICK_RATES) else 'full'} run). "
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}.",
        "",
        f"Set-up: router with `--query-delay {QUERY_DELAY} --ping-mode flood`, a separate load "
        f"generator process with 3 links sending bursts of 10 packets, {settings.query_share:.0%} "
        f"queries, the rest a trace-like mix (pongs over half); {settings.duration:g} s measured "
        f"per point ({settings.warmup:g} s warm-up first for policies with the governor). "
        "Latency is end to end, per message type, from send to first arrival at another link.",
        "",
        "## Beside the original (mean ping / query latency, ms)",
        "",
        *original_table(results),
        "",
        "## Every policy at every rate",
        "",
        "Latencies in ms. *non-query lost*: timed pings, pongs, hits and pushes sent but never "
        "delivered. *queries shed*: queries the router dropped on purpose.",
        "",
        *full_table(results),
        "",
    ]
    if settle:
        lines += [
            "## Thread governor settling",
            "",
            f"{settle['rate']} packets/s, {settle['query_share']:.0%} queries, 20 ms per query: "
            f"Little's law gives n = {settle['littles_n']:.2f}; the governor settled at "
            f"{settle['final_threads']} threads (measured busy threads: {settle['busy_threads']}).",
            "",
        ]
    lines += [f"![{p.stem}]({os.path.relpath(p, path.parent)})" for p in plots]
    path.write_text("\n".join(lines) + "\n")


def settle_governor(settings: Settings) -> dict[str, Any]:
    rate = 1000
    point = run_point("priority,governor", rate, settings, settings.settle_seconds)
    samples = point["samples"]
    # The governor's own busy-thread measurement over the second half of the
    # run, when it has settled (it samples every 2 s, so the values repeat).
    settled = [s["busy_threads"] for s in samples[len(samples) // 2 :]]
    busy = sorted(settled)[len(settled) // 2] if settled else None
    return {
        "rate": rate,
        "query_share": settings.query_share,
        "littles_n": rate * settings.query_share * 0.020,
        "final_threads": samples[-1]["threads"] if samples else None,
        "busy_threads": busy,
        "samples": samples,
    }


def run(settings: Settings) -> dict[str, Any]:
    plan = list(points(settings))
    bar = None
    if settings.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan) + (1 if settings.settle_seconds else 0), unit="point")
    results = []
    for policy, rate in plan:
        if bar is not None:
            bar.set_description(f"{policy} @ {rate}/s")
        results.append(run_point(policy, rate, settings, settings.duration))
        if bar is not None:
            bar.update()
    settle = None
    if settings.settle_seconds:
        if bar is not None:
            bar.set_description("governor settling @ 1000/s")
        settle = settle_governor(settings)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return {"machine": machine(), "results": results, "settle": settle}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gnurouter bench overload", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


#: Where `--publish` copies the report and its plots (committed; the README links them).
PUBLISHED = Path("docs/results")
#: Seconds per point: (full run, --quick).
DURATION = (4.0, 3.0)
WARMUP = (4.0, 2.0)
SETTLE = (25.0, 0.0)


def publish(out_dir: Path, published: Path = PUBLISHED) -> list[Path]:
    """Copy a run's report and plots from `out_dir` to the published results."""
    published.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "overload.md", *sorted(out_dir.glob("*.png"))]
    return [Path(shutil.copy2(path, published / path.name)) for path in files]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="4 rates x 3 policies: 12 router runs, 1.5 to 3 minutes on a 2-core machine "
        "(the full grid: 49 runs and the governor's settling)",
    )
    parser.add_argument(
        "--rates", help="comma-separated packets/s (default: the original's and beyond)"
    )
    parser.add_argument(
        "--policies",
        help="';'-separated --conditioning values, e.g. 'none;governor;priority,codel'",
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"measured seconds per point (default: {DURATION[0]:g}; --quick: {DURATION[1]:g})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help=f"unmeasured seconds before governed points (default: {WARMUP[0]:g}; "
        f"--quick: {WARMUP[1]:g})",
    )
    parser.add_argument(
        "--settle",
        type=float,
        help=f"seconds of the governor-settling run, 0 to skip (default: {SETTLE[0]:g}; "
        f"--quick: {SETTLE[1]:g})",
    )
    parser.add_argument(
        "--query-share",
        type=float,
        default=0.15,
        help="share of queries in the offered packets (default: %(default)s, the original's)",
    )
    parser.add_argument("--queue-limit", type=int, default=20_000, help="collapse: router queue")
    parser.add_argument("--rss-limit", type=float, default=1024.0, help="collapse: router RSS, MB")
    parser.add_argument(
        "--out",
        default="var/bench",
        help="where the JSON, the plots and the markdown report go (default: %(default)s)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"also copy the report and plots to {PUBLISHED}/ (the committed results); "
        "only with the full default grid",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    def numbers(text: str) -> list[int]:
        values = [int(x) for x in text.split(",") if x.strip()]
        if not values or any(not 1 <= v <= 100_000 for v in values):
            raise ValueError("rates must be 1..100000 packets/s")
        return values

    try:
        rates = numbers(args.rates) if args.rates else list(QUICK_RATES if args.quick else RATES)
        policies = (
            [p.strip() for p in args.policies.split(";") if p.strip()]
            if args.policies
            else list(QUICK_POLICIES if args.quick else POLICIES)
        )
        from gnurouter.config import parse_policies

        for policy in policies:
            parse_policies(split_policy(policy)[0])
        if not 0.0 < args.query_share < 1.0:
            raise ValueError("query share must be between 0 and 1")
        if args.publish and (args.quick or args.rates or args.policies):
            raise ValueError("--publish takes a full run: no --quick, --rates or --policies")
    except ValueError as error:
        print(f"gnurouter: error: {error}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("matplotlib") is None:  # before minutes of measuring
        print(
            "gnurouter: error: the overload benchmark draws its plots with matplotlib: "
            ".venv/bin/pip install -e '.[bench]' (scripts/setup --test installs it)",
            file=sys.stderr,
        )
        return 2
    duration = args.duration if args.duration else DURATION[args.quick]
    warmup = args.warmup if args.warmup is not None else WARMUP[args.quick]
    settle = args.settle if args.settle is not None else SETTLE[args.quick]
    settings = Settings(
        rates=rates,
        policies=policies,
        duration=duration,
        warmup=warmup,
        settle_seconds=settle,
        query_share=args.query_share,
        limits=Limits(queue=args.queue_limit, rss_mb=args.rss_limit),
        out_dir=Path(args.out),
        progress=sys.stderr.isatty(),
    )
    outcome = run(settings)
    results = outcome["results"]
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    (settings.out_dir / "overload.json").write_text(json.dumps(outcome, indent=1))
    plots = plot(results, outcome["settle"], settings.out_dir)
    report = settings.out_dir / "overload.md"
    write_markdown(report, results, outcome["settle"], plots, outcome["machine"], settings)
    published = publish(settings.out_dir) if args.publish else []
    if args.json:
        json.dump(outcome, sys.stdout)
        return 0
    print("Mean ping / query latency (ms), beside the original's published figures:")
    print("\n".join(original_table(results)))
    print()
    print("\n".join(full_table(results)))
    if outcome["settle"]:
        s = outcome["settle"]
        print(
            f"\ngovernor at {s['rate']} pkt/s: settled at {s['final_threads']} threads "
            f"(Little's law n = {s['littles_n']:.2f}, measured busy threads {s['busy_threads']})"
        )
    listed = ", ".join(str(p) for p in plots)
    print(f"\nresults: {settings.out_dir / 'overload.json'}, {report}; plots: {listed}")
    if published:
        print(f"published: {', '.join(str(p) for p in published)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
