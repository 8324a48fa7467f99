"""Routed messages per second through one gnurouter, against a minimal Twisted relay.

    .venv/bin/python benchmarks/throughput.py                 # defaults: 100000 queries, 3 runs
    .venv/bin/python benchmarks/throughput.py --deflate --json

Each run starts the server under test in its own process on a free loopback
port (`python -m gnurouter run ...`, or `benchmarks/minimal_relay.py`), so
the server has a core to itself while the clients run in this process.  Three
real servents connect to it with the real 0.6 handshake: one sender and two
receivers.  The sender floods N distinct queries (unique GUIDs, TTL 3),
encoded up front; the server relays each query to the two receivers.

    messages in   queries the sender wrote to the server (N per run)
    deliveries    query copies that reached the receivers (2 per message in)

"Routed messages/s" is deliveries/s: deliveries divided by the time from the
first query written to the last copy received.  At most `--window` queries
are in flight (written but not yet received by both receivers), so what is
measured is the server's relaying rate, not how fast kernel socket buffers
fill.  Before the timed phase the link is probed until both receivers are
routed to, then warmed up with a few thousand queries.  The router runs with
`--conditioning none` (a query shed by a threshold would never arrive and
stall the window; a stall is reported as an error after 15 s);
`--router-args` adds options.  The relay is measured twice: `relay` joins the
messages of one read into one write per peer, as the router's connection
stage batches (the stricter baseline); `relay-per-message` writes every
message to every peer as soon as it is cut from the stream, the least a
relay can do.

Every server gets the same clients, load and process layout, and the order
of servers alternates between runs; the table gives every run and the
summary the median per server, the ratio of the router to each relay and
whether it reaches TARGET_RATIO (40%) of that relay's rate.  `--check` turns
a miss against any relay measured into exit status 1.  Server and client CPU
seconds are printed too: a server that does not use close to one CPU second
per second was waiting for the clients.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from gnurouter.bench import HOST, router_command
from gnurouter.edge.servent import ServentProtocol
from gnurouter.protocol.messages import (
    HEADER_FIELDS,
    HEADER_LENGTH,
    Message,
    MessageType,
    Ping,
    Query,
    new_guid,
)

TARGET_RATIO = 0.40
#: The relays the router is compared with, and the relay script's arguments for each.
RELAYS = {
    # One write per socket read and peer, as the router's connection stage batches.
    "relay": [],
    # One write per message and peer: the least a relay can do.
    "relay-per-message": ["--write-per-message"],
}
SERVERS = ("router", *RELAYS)
QUERY_TTL = 3
RECEIVERS = 2

MAX_MESSAGES = 5_000_000
MAX_REPEAT = 20
DEFAULT_TIMEOUT = 120.0
#: A run with no delivery for this long is declared stuck.
STALL_SECONDS = 15.0
#: Receivers only listen; a ping this often keeps the router from closing
#: them as silent (it does after 3 x its 30 s keepalive interval).
KEEPALIVE_SECONDS = 15.0
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

#: A query payload is two flag bytes, then the criteria; the criteria's first
#: byte tags the phase (probe, warm-up, timed) so receivers can count by phase.
_TAG_OFFSET = HEADER_LENGTH + 2
QUERY = int(MessageType.QUERY)
TAG_PROBE, TAG_WARMUP, TAG_TIMED = ord("p"), ord("w"), ord("b")

RELAY_SCRIPT = Path(__file__).resolve().with_name("minimal_relay.py")


class BenchmarkError(Exception):
    """A run could not complete (server did not start, stalled, timed out)."""


# -- clients ------------------------------------------------------------------


class CountingServent(ServentProtocol):
    """A receiving servent that only counts the queries it gets, by phase tag.

    The handshake goes through `ServentProtocol` (the project's real 0.6
    handshake).  Once it is over, and provided no message bytes were mixed
    into the handshake's last read, the stream is walked header by header
    without building `Message` objects, so the client side stays cheap
    enough not to be what limits the measurement.
    """

    def __init__(self, *, deflate: bool) -> None:
        super().__init__(deflate=deflate, keep_inbox=False)
        self.counts = [0] * 256
        self.other = 0
        self.listener: Callable[[], None] | None = None
        self._fast = False
        self._inflater: Any = None
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        if self._fast:
            if self._inflater is not None:
                data = self._inflater.decompress(data)
            self._count(data)
        else:
            super().dataReceived(data)
            connection = self.connection
            if (
                connection.established
                and connection.stream_bytes_in == 0
                and connection.buffered == 0
            ):
                self._fast = True
                self.wire_in = bytearray()
                if connection.deflate_in:
                    self._inflater = zlib.decompressobj()
        if self.listener is not None:
            self.listener()

    def _message(self, message: Message) -> None:  # the slow path, handshake leftovers
        payload = message.payload
        if message.type == QUERY and len(payload) > 2:
            self.counts[payload[2]] += 1
        else:
            self.other += 1

    def _count(self, data: bytes) -> None:
        buf = self._pending + data if self._pending else data
        header_fields = HEADER_FIELDS.unpack_from
        counts = self.counts
        pos, size = 0, len(buf)
        while size - pos >= HEADER_LENGTH:
            type_, _, _, length = header_fields(buf, pos)
            end = pos + HEADER_LENGTH + length
            if end > size:
                break
            if type_ == QUERY and end > pos + _TAG_OFFSET:
                counts[buf[pos + _TAG_OFFSET]] += 1
            else:
                self.other += 1
            pos = end
        self._pending = buf[pos:]


class Outgoing:
    """The sender's wire encoding: raw bytes, or one zlib stream with a sync flush per write."""

    def __init__(self, deflate: bool) -> None:
        self._compressor = zlib.compressobj() if deflate else None

    def encode(self, data: bytes) -> bytes:
        if self._compressor is None:
            return data
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)


def encode_queries(tag: int, count: int, chunk: int) -> list[tuple[bytes, int]]:
    """`count` distinct queries (unique GUIDs, TTL 3) as (wire bytes, messages) chunks."""
    prefix = chr(tag)
    encoded = [
        Message.from_body(
            new_guid(), QUERY_TTL, 0, Query(flags=0, criteria=f"{prefix}bench query {i:08d}")
        ).encode()
        for i in range(count)
    ]
    return [
        (b"".join(encoded[start : start + chunk]), len(encoded[start : start + chunk]))
        for start in range(0, count, chunk)
    ]


# -- the server under test ----------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(name: str, port: int, extra_args: Sequence[str]) -> list[str]:
    if name == "router":
        return router_command(
            port,
            "--log-level",
            "warning",
            "--conditioning",
            "none",
            *extra_args,
        )
    return [sys.executable, str(RELAY_SCRIPT), "--host", HOST, "--port", str(port), *extra_args]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerProcess:
    """One spawned server; `stop()` is safe to call more than once."""

    live: set[ServerProcess] = set()

    def __init__(self, name: str, extra_args: Sequence[str]) -> None:
        self.name = name
        self.port = free_port()
        self.command = server_command(name, self.port, extra_args)
        # Closed in kill(): the file outlives this method, so no `with`.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        ServerProcess.live.add(self)

    def output_tail(self, limit: int = 2000) -> str:
        try:
            self.log.seek(0)
            return self.log.read().decode("utf-8", "replace")[-limit:]
        except (OSError, ValueError):
            return ""

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchmarkError(
                f"{self.name} exited with status {code}:\n{self.output_tail()}".rstrip()
            )

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.process.pid)

    async def wait_listening(self, reactor: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.check_alive()
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{self.name} did not listen on {HOST}:{self.port}")
            await task.deferLater(reactor, 0.05, lambda: None)

    async def stop(self, reactor: Any) -> None:
        try:
            if self.process.poll() is None:
                self.process.terminate()
                deadline = time.monotonic() + STOP_TIMEOUT
                while self.process.poll() is None and time.monotonic() < deadline:
                    await task.deferLater(reactor, 0.05, lambda: None)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        self.log.close()
        ServerProcess.live.discard(self)

    @classmethod
    def kill_all(cls) -> None:
        for server in list(cls.live):
            server.kill()


# -- one run -------------------------------------------------------------------


@dataclass
class RunResult:
    server: str
    run: int
    messages_in: int
    deliveries: int
    seconds: float
    messages_in_per_s: float
    deliveries_per_s: float
    server_cpu_s: float | None
    client_cpu_s: float
    other_messages: int = 0


@dataclass
class Options:
    messages: int
    repeat: int
    warmup: int
    window: int
    chunk: int
    deflate: bool
    timeout: float
    router_args: list[str] = field(default_factory=list)
    only: str | None = None
    progress: bool = False


class LoadDriver:
    """Sends chunks of tagged queries, keeping at most `window` of them in flight."""

    def __init__(
        self,
        reactor: Any,
        server: ServerProcess,
        sender: ServentProtocol,
        receivers: list[CountingServent],
        window: int,
    ) -> None:
        self.reactor = reactor
        self.server = server
        self.sender = sender
        self.receivers = receivers
        self.window = window

    def received(self, tag: int) -> int:
        return min(receiver.counts[tag] for receiver in self.receivers)

    def delivered(self, tag: int) -> int:
        return sum(receiver.counts[tag] for receiver in self.receivers)

    async def probe(self, outgoing: Outgoing, deadline: float) -> None:
        """Send probe queries until both receivers are being routed to."""
        deadline = min(deadline, time.monotonic() + 10.0)
        while self.received(TAG_PROBE) == 0:
            self._check_links()
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"{self.server.name}: probe queries did not reach the receivers"
                )
            [(chunk, _)] = encode_queries(TAG_PROBE, 1, 1)
            self.sender.send_raw(outgoing.encode(chunk))
            await task.deferLater(self.reactor, 0.02, lambda: None)

    def _check_links(self) -> None:
        self.server.check_alive()
        for servent in (self.sender, *self.receivers):
            if servent.closed.called:
                raise BenchmarkError(f"{self.server.name} closed a client link")

    def _keepalive(self) -> None:
        for receiver in self.receivers:
            receiver.send(Message.from_body(new_guid(), 1, 0, Ping()))

    async def phase(
        self,
        tag: int,
        chunks: list[tuple[bytes, int]],
        deadline: float,
        on_progress: Callable[[int], None] | None = None,
    ) -> tuple[float, float]:
        """Send the chunks windowed; (start, end) monotonic times when every copy arrived.

        Fails with `BenchmarkError` at the monotonic `deadline`, or when
        nothing arrives for STALL_SECONDS.
        """
        total = sum(count for _, count in chunks)
        done: defer.Deferred[None] = defer.Deferred()
        next_chunk = 0
        sent = 0
        ended = 0.0
        window = self.window
        write = self.sender.send_raw

        def pump() -> None:
            nonlocal next_chunk, sent, ended
            got = self.received(tag)
            while next_chunk < len(chunks) and sent + chunks[next_chunk][1] - got <= window:
                data, count = chunks[next_chunk]
                write(data)
                sent += count
                next_chunk += 1
            if got >= total and not done.called:
                ended = time.monotonic()
                done.callback(None)

        started = time.monotonic()
        last_progress = (0, started)
        last_keepalive = started

        def watch() -> None:
            nonlocal last_progress, last_keepalive
            if done.called:
                return
            now = time.monotonic()
            delivered = self.delivered(tag)
            if on_progress is not None:
                on_progress(delivered)
            if now - last_keepalive > KEEPALIVE_SECONDS:
                last_keepalive = now
                self._keepalive()
            try:
                self._check_links()
                if now > deadline:
                    raise BenchmarkError(
                        f"{self.server.name}: run timed out "
                        f"({delivered} of {RECEIVERS * total} deliveries)"
                    )
                if delivered != last_progress[0]:
                    last_progress = (delivered, now)
                elif now - last_progress[1] > STALL_SECONDS:
                    raise BenchmarkError(
                        f"{self.server.name}: no delivery for {STALL_SECONDS:.0f}s "
                        f"({delivered} of {RECEIVERS * total}; messages lost?)"
                    )
            except BenchmarkError as error:
                done.errback(error)

        for receiver in self.receivers:
            receiver.listener = pump
        watcher = task.LoopingCall(watch)
        watcher.clock = self.reactor
        watcher.start(0.2, now=False)
        try:
            pump()
            await done
        finally:
            watcher.stop()
            for receiver in self.receivers:
                receiver.listener = None
        if on_progress is not None:
            on_progress(self.delivered(tag))
        return started, ended


async def run_once(reactor: Any, name: str, number: int, options: Options) -> RunResult:
    deadline = time.monotonic() + options.timeout
    server = ServerProcess(name, options.router_args if name == "router" else RELAYS[name])
    servents: list[ServentProtocol] = []
    try:
        await server.wait_listening(reactor)
        receivers: list[CountingServent] = []
        for _ in range(RECEIVERS):
            receiver = CountingServent(deflate=options.deflate)
            await _connect(reactor, server.port, receiver)
            servents.append(receiver)
            receivers.append(receiver)
        sender = ServentProtocol(deflate=options.deflate, keep_inbox=False)
        await _connect(reactor, server.port, sender)
        servents.append(sender)
        transport = sender.transport
        if transport is not None and hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        _check_encoding(name, options.deflate, [*receivers, sender])
        outgoing = Outgoing(sender.connection.deflate_out)
        driver = LoadDriver(reactor, server, sender, receivers, options.window)

        await driver.probe(outgoing, deadline)
        if options.warmup:
            warm = encode_queries(TAG_WARMUP, options.warmup, options.chunk)
            warm = [(outgoing.encode(data), count) for data, count in warm]
            await driver.phase(TAG_WARMUP, warm, deadline)

        timed = encode_queries(TAG_TIMED, options.messages, options.chunk)
        timed = [(outgoing.encode(data), count) for data, count in timed]
        progress = _progress_bar(options, f"{name} run {number}", RECEIVERS * options.messages)
        cpu_before = server.cpu_seconds()
        client_before = time.process_time()
        try:
            started, ended = await driver.phase(
                TAG_TIMED,
                timed,
                deadline,
                on_progress=progress.update_to if progress is not None else None,
            )
        finally:
            if progress is not None:
                progress.close()
        client_cpu = time.process_time() - client_before
        cpu_after = server.cpu_seconds()
        seconds = max(ended - started, 1e-9)
        deliveries = driver.delivered(TAG_TIMED)
        return RunResult(
            server=name,
            run=number,
            messages_in=options.messages,
            deliveries=deliveries,
            seconds=seconds,
            messages_in_per_s=options.messages / seconds,
            deliveries_per_s=deliveries / seconds,
            server_cpu_s=(
                cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
            ),
            client_cpu_s=client_cpu,
            other_messages=sum(receiver.other for receiver in receivers),
        )
    finally:
        await _close_all(reactor, servents)
        await server.stop(reactor)


def _check_encoding(name: str, deflate: bool, servents: Sequence[ServentProtocol]) -> None:
    """Every link deflated both ways with --deflate, none without: else the numbers lie."""
    for servent in servents:
        connection = servent.connection
        if connection.deflate_in != deflate or connection.deflate_out != deflate:
            raise BenchmarkError(
                f"{name}: link negotiated deflate in={connection.deflate_in} "
                f"out={connection.deflate_out}, expected {deflate} both ways"
            )


async def _connect(reactor: Any, port: int, servent: ServentProtocol) -> None:
    from twisted.internet import endpoints

    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, HOST, port), servent)
    established = servent.established
    established.addTimeout(10, reactor)
    try:
        await established
    except Exception as error:
        raise BenchmarkError(f"handshake failed: {error}") from error


async def _close_all(reactor: Any, servents: list[ServentProtocol]) -> None:
    waiting = []
    for servent in servents:
        transport: Any = servent.transport
        if transport is not None and not servent.closed.called:
            transport.loseConnection()
            closed = servent.closed
            closed.addTimeout(STOP_TIMEOUT, reactor)
            waiting.append(closed)
    if waiting:
        await defer.DeferredList(waiting, consumeErrors=True)


class _Progress:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update_to(self, value: int) -> None:
        self.bar.update(value - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(options: Options, label: str, total: int) -> _Progress | None:
    if not options.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return _Progress(tqdm(total=total, desc=label, unit="msg", unit_scale=True, leave=False))


# -- the whole benchmark --------------------------------------------------------


def summarize(results: list[RunResult], options: Options) -> dict[str, Any]:
    medians: dict[str, dict[str, float]] = {}
    for name in SERVERS:
        runs = [r for r in results if r.server == name]
        if runs:
            medians[name] = {
                "deliveries_per_s": statistics.median(r.deliveries_per_s for r in runs),
                "messages_in_per_s": statistics.median(r.messages_in_per_s for r in runs),
                "seconds": statistics.median(r.seconds for r in runs),
            }
    ratios = {
        relay: medians["router"]["deliveries_per_s"] / medians[relay]["deliveries_per_s"]
        for relay in RELAYS
        if "router" in medians and relay in medians
    }
    return {
        "settings": {
            "messages": options.messages,
            "repeat": options.repeat,
            "warmup": options.warmup,
            "window": options.window,
            "chunk": options.chunk,
            "deflate": options.deflate,
            "receivers": RECEIVERS,
            "query_ttl": QUERY_TTL,
            "router_args": options.router_args,
            "relay_args": RELAYS,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "rate": "deliveries_per_s = query copies received by the receivers per second",
        "runs": [asdict(r) for r in results],
        "median": medians,
        "ratio_router_to": ratios,
        "target_ratio": TARGET_RATIO,
        "target_met": {relay: ratio >= TARGET_RATIO for relay, ratio in ratios.items()},
    }


def format_table(summary: dict[str, Any]) -> str:
    settings = summary["settings"]
    lines = [
        f"{settings['messages']} queries (TTL {QUERY_TTL}) per run, fanned out to "
        f"{RECEIVERS} receivers, window {settings['window']}, "
        f"deflate {'on' if settings['deflate'] else 'off'}, Python {settings['python']}",
        "messages in = queries written to the server; deliveries = copies received "
        "(rate = deliveries/s)",
        "",
        f"{'server':<17} {'run':>3} {'messages in':>12} {'deliveries':>11} {'seconds':>8} "
        f"{'in/s':>10} {'deliveries/s':>13} {'server CPU':>11} {'client CPU':>11}",
    ]
    for run in summary["runs"]:
        cpu = run["server_cpu_s"]
        server_cpu = f"{cpu:.2f}s" if cpu is not None else "n/a"
        lines.append(
            f"{run['server']:<17} {run['run']:>3} {run['messages_in']:>12} "
            f"{run['deliveries']:>11} {run['seconds']:>8.3f} {run['messages_in_per_s']:>10.0f} "
            f"{run['deliveries_per_s']:>13.0f} {server_cpu:>11} {run['client_cpu_s']:>10.2f}s"
        )
    lines.append("")
    for name, median in summary["median"].items():
        lines.append(
            f"median {name:<17} {median['deliveries_per_s']:>10.0f} deliveries/s "
            f"({median['messages_in_per_s']:.0f} messages in/s)"
        )
    for relay, ratio in summary["ratio_router_to"].items():
        verdict = "met" if summary["target_met"][relay] else "NOT met"
        lines.append(f"ratio router/{relay}: {ratio:.1%} (target >= {TARGET_RATIO:.0%}: {verdict})")
    return "\n".join(lines)


async def benchmark(reactor: Any, options: Options) -> list[RunResult]:
    reactor.addSystemEventTrigger("before", "shutdown", ServerProcess.kill_all)
    names = [options.only] if options.only else list(SERVERS)
    results: list[RunResult] = []
    for number in range(1, options.repeat + 1):
        # Alternate which server goes first so drift (thermal, noise) hits both alike.
        order = names if number % 2 else list(reversed(names))
        for name in order:
            results.append(await run_once(reactor, name, number, options))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Routed messages/s through gnurouter vs. a minimal Twisted relay (loopback).",
    )
    add = parser.add_argument
    add("--messages", type=int, default=100_000, help="queries per timed run (100000)")
    add("--repeat", type=int, default=3, help="runs per server; the median is reported (3)")
    add("--warmup", type=int, default=5_000, help="untimed queries before each run (5000)")
    add("--window", type=int, default=4096, help="most queries in flight at once (4096)")
    add("--chunk", type=int, default=256, help="queries per sender write (256)")
    add("--deflate", action="store_true", help="offer deflate on every client link")
    add(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds allowed per run, probe and warm-up included (120)",
    )
    add("--only", choices=SERVERS, help="benchmark one server only (no ratio)")
    add(
        "--router-args",
        default="",
        metavar="ARGS",
        help="extra `gnurouter run` options, e.g. --router-args='--batch-size 256'",
    )
    add("--json", action="store_true", help="print the results as JSON")
    add(
        "--check",
        action="store_true",
        help="exit 1 if the router is below the target ratio of any relay measured",
    )
    return parser


def parse_options(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be within 1..{MAX_MESSAGES}")
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be within 1..{MAX_REPEAT}")
    if not 0 <= args.warmup <= MAX_MESSAGES:
        parser.error(f"--warmup must be within 0..{MAX_MESSAGES}")
    if not 1 <= args.chunk <= 65_536:
        parser.error("--chunk must be within 1..65536")
    if args.window < args.chunk:
        parser.error("--window must be at least --chunk")
    if not 1.0 <= args.timeout <= 3600.0:
        parser.error("--timeout must be within 1..3600 seconds")
    options = Options(
        messages=args.messages,
        repeat=args.repeat,
        warmup=args.warmup,
        window=args.window,
        chunk=args.chunk,
        deflate=args.deflate,
        timeout=args.timeout,
        router_args=shlex.split(args.router_args),
        only=args.only,
        progress=sys.stdout.isatty() and not args.json,
    )
    return options, args


def main(argv: Sequence[str] | None = None) -> int:
    options, args = parse_options(argv)
    outcome: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        try:
            outcome["results"] = await benchmark(reactor, options)
        except BenchmarkError as error:
            outcome["error"] = str(error)

    try:
        task.react(run)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    finally:
        ServerProcess.kill_all()

    if "error" in outcome:
        print(f"throughput: error: {outcome['error']}", file=sys.stderr)
        return 2
    summary = summarize(outcome["results"], options)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(summary))
    if args.check and not all(summary["target_met"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
