"""`gnurouter trace ...`: synth, info, replay, export-pcap, import-pcap.

Every command reads and writes traces as streams.  Bad input (a missing file,
a file that is not a trace, a damaged trace, a bad option value) ends the
command with one `gnurouter: error: ...` line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gnurouter.config import ConfigError, parse_address, parse_duration
from gnurouter.traces.format import TraceError, TraceReader, TraceWriter, now_iso

PROG = "gnurouter"


class TraceCommandError(Exception):
    """Bad input to a trace command: one line, exit status 2."""


def version() -> str:
    try:
        return importlib.metadata.version("gnurouter")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "0.1.0"


def producer(what: str) -> str:
    return f"gnurouter {version()} {what}"


def created_time() -> tuple[str, float]:
    """ISO time and Unix time of 'now', or of $SOURCE_DATE_EPOCH for reproducible files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        import datetime

        try:
            when = float(epoch)
        except ValueError:
            raise TraceCommandError(f"SOURCE_DATE_EPOCH is not a number: {epoch!r}") from None
        stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="seconds")
        return stamp, when
    return now_iso(), time.time()


def parse_speed(text: str) -> float | None:
    """'1x', '10x', '2.5x', '10' -> factor; 'max' -> None (as fast as possible)."""
    value = text.strip().lower()
    if value == "max":
        return None
    if value.endswith("x"):
        value = value[:-1]
    try:
        factor = float(value)
    except ValueError:
        raise ConfigError(f"speed: expected 1x, 10x, 100x, ... or max, got {text!r}") from None
    if not 0.001 <= factor <= 1_000_000:
        raise ConfigError(f"speed: {text} is outside 0.001x..1000000x")
    return factor


def _duration(name: str) -> Any:
    def convert(text: str) -> float:
        try:
            return parse_duration(text, name=name)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _fraction(name: str) -> Any:
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a number, got {text!r}") from None
        if not 0 <= value <= 1:
            raise argparse.ArgumentTypeError(f"{name}: {value} is outside 0..1")
        return value

    return convert


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text, name="target")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _speed(text: str) -> float | None:
    try:
        return parse_speed(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# -- options shared by several commands ------------------------------------------------
#
# Each is declared once here; a command that takes one adds it with its own help text
# where the meaning differs (the file it reads, what --node defaults to, ...).


def _trace_file_parent() -> argparse.ArgumentParser:
    """Parent parser of the commands that read one trace (positional FILE)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("trace", metavar="FILE")
    return parent


def _add_json(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--json", action="store_true", help=help)


def _add_force(parser: argparse.ArgumentParser) -> None:
    """Commands that write a file never replace an existing one unless told to."""
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def _refuse_to_overwrite(args: argparse.Namespace) -> None:
    if not args.force and os.path.lexists(args.output):
        raise TraceCommandError(f"{args.output} exists; --force overwrites it")


def _add_address(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs: Any) -> None:
    """A HOST:PORT option (`required=True` or a `default` in kwargs)."""
    parser.add_argument(flag, type=_address, metavar="HOST:PORT", help=help, **kwargs)


def _add_speed(parser: argparse.ArgumentParser, flag: str, metavar: str, help: str) -> None:
    """A replay's time scale: 1x (the default), 10x, ..., or max."""
    parser.add_argument(flag, type=_speed, default=1.0, metavar=metavar, help=help)


def _add_lead(parser: argparse.ArgumentParser, flag: str, name: str, help: str) -> None:
    """How long before its trace time a replayed connection opens (200ms)."""
    parser.add_argument(flag, type=_duration(name), default=0.2, help=help)


#: `trace synth` options: each sets the `SynthConfig` field of its name (--burst-length:
#: burst_length), whose default applies when it is not given; the help says what it is.
_SYNTH_KNOBS: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("duration", _duration("duration"), "trace length, e.g. 90s, 10m, 2h (10m)"),
    ("rate", float, "mean messages per second (179.55, the original's average)"),
    (
        "burstiness",
        float,
        "burst rate / mean rate; bursts take 1/(2B) of the time (4; 1 = Poisson)",
    ),
    ("burst_length", _duration("burst length"), "mean length of a burst (2s)"),
    (
        "mix",
        str,
        "relative weights per type: pong, ping, query, query-hit, push, "
        "vendor, qrp (defaults: pong=0.55,ping=0.17,query=0.15,query-hit=0.08,"
        "push=0.02,vendor=0.02,qrp=0.01)",
    ),
    (
        "query_share",
        _fraction("query share"),
        "share of queries among messages; the other weights keep their proportions",
    ),
    (
        "malformed",
        _fraction("malformed share"),
        "share of messages with a malformed payload (0.02)",
    ),
    (
        "framing_errors",
        _fraction("framing-error share"),
        "share of connections that end with a framing-breaking header (0.01)",
    ),
    ("connections", float, "mean connections open at once (12)"),
    ("lifetime", _duration("lifetime"), "mean connection lifetime, log-normal (22s)"),
    (
        "reply_share",
        _fraction("reply share"),
        "share of pongs/hits/pushes answering earlier traffic (0.8)",
    ),
    ("seed", int, "random seed (1)"),
)
_SYNTH_METAVARS = {"mix": "TYPE=W,..."}


def add_trace_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add the `trace` command group to the top-level subparsers."""
    trace_file = _trace_file_parent()
    trace = commands.add_parser(
        "trace",
        help="record, synthesise, inspect, replay and convert traces",
        description="Gnutella traces: a streamed, versioned record of messages and "
        "connection events (format: traces/README.md).",
    )
    sub = trace.add_subparsers(dest="trace_command", metavar="TRACE_COMMAND", required=True)

    synth = sub.add_parser(
        "synth",
        help="generate a synthetic trace",
        description="Generate traffic with the statistics of the original Sandstorm live run "
        "(179.55 messages/s on average, bursty, pongs over half, ~12 connections open with "
        "churn, some malformed messages). The same options and seed give the same records.",
    )
    synth.add_argument("output", metavar="OUT.gtrace", help="file to write (.gz: gzipped)")
    for name, convert, help in _SYNTH_KNOBS:
        # Not given: not passed on, so SynthConfig's own default applies.
        synth.add_argument(
            "--" + name.replace("_", "-"),
            type=convert,
            default=argparse.SUPPRESS,
            metavar=_SYNTH_METAVARS.get(name),
            help=help,
        )
    synth.add_argument(
        "--compress",
        type=int,
        default=6,
        choices=range(10),
        metavar="0-9",
        help="zlib level of each block (6; 0 = store)",
    )
    _add_force(synth)

    info = sub.add_parser(
        "info",
        parents=[trace_file],
        help="print a trace's statistics",
        description="Read a trace in one streaming pass and print its header and statistics: "
        "rate and burstiness, message mix, malformed messages, connections.",
    )
    _add_json(info, "print JSON instead of text")

    replay = sub.add_parser(
        "replay",
        parents=[trace_file],
        help="replay a trace against a router",
        description="Open as many peer connections as the trace has (real 0.6 handshakes), "
        "send each IN message at its time scaled by --speed, count what comes back, and "
        "report the achieved rate, lateness against the schedule, and errors.",
    )
    _add_address(replay, "--target", "the router to replay against", required=True)
    _add_speed(
        replay,
        "--speed",
        "1x|10x|100x|max",
        "time scale (1x); max sends as fast as the links take it",
    )
    replay.add_argument(
        "--loop",
        type=int,
        default=1,
        metavar="N",
        help="replay the trace N times in a row (0 = forever)",
    )
    replay.add_argument("--deflate", action="store_true", help="offer deflate on every link")
    _add_lead(
        replay,
        "--lead",
        "lead",
        "open each connection this long (wall time) before its trace "
        "time, so the handshake is done when its first message is due (200ms)",
    )
    replay.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="refuse traces needing more simultaneous connections (1000)",
    )
    _add_json(replay, "print the report as JSON")

    export = sub.add_parser(
        "export-pcap",
        parents=[trace_file],
        help="write a trace as a pcap/pcapng capture",
        description="Synthesise TCP segments (SYN, 0.6 handshake, messages, FIN) for every "
        "connection so that Wireshark/tshark dissect the capture as Gnutella "
        "(tshark -d tcp.port==PORT,gnutella).",
    )
    export.add_argument("output", metavar="OUT.pcap|OUT.pcapng")
    _add_address(
        export,
        "--node",
        "address of the recording node (10.0.0.1:6346)",
        default=("10.0.0.1", 6346),
    )
    export.add_argument(
        "--format",
        choices=("pcap", "pcapng"),
        default=None,
        help="capture format (default: from the file name, else pcap)",
    )
    _add_force(export)

    imp = sub.add_parser(
        "import-pcap",
        help="turn the Gnutella TCP streams of a capture into a trace",
        description="Reassemble every TCP stream of a pcap/pcapng capture that starts with a "
        "Gnutella handshake, inflate deflated links, frame the messages and write them as a "
        "trace. The node (direction OUT, the recording side) is found in the capture: the "
        "endpoint in the most Gnutella connections, which accepted them; --node names it "
        "instead (exit status 1 if it is in none of them).",
    )
    imp.add_argument("pcap", metavar="CAPTURE")
    imp.add_argument("output", metavar="OUT.gtrace")
    _add_address(
        imp,
        "--node",
        "the recording node's address (default: found in the capture); a HOST:0 is any "
        "port of HOST",
        default=None,
    )
    imp.add_argument(
        "--port", type=int, default=None, help="only TCP streams with this port at either end"
    )
    _add_force(imp)


def run_trace_command(args: argparse.Namespace) -> int:
    try:
        if args.trace_command == "synth":
            return _synth(args)
        if args.trace_command == "info":
            return _info(args)
        if args.trace_command == "replay":
            return _replay(args)
        if args.trace_command == "export-pcap":
            return _export(args)
        if args.trace_command == "import-pcap":
            return _import(args)
    except (TraceError, TraceCommandError, ConfigError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `gnurouter trace info X | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        return 0
    except OSError as error:
        name = f" {error.filename}" if error.filename else ""
        print(f"{PROG}: error: cannot access{name}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 2


# -- synth -------------------------------------------------------------------------------


def _synth(args: argparse.Namespace) -> int:
    from gnurouter.traces.progress import progress
    from gnurouter.traces.synth import SynthConfig, Synthesizer, parse_mix

    _refuse_to_overwrite(args)
    knobs = {name: getattr(args, name) for name, _, _ in _SYNTH_KNOBS if name in args}
    if "mix" in knobs:
        knobs["mix"] = parse_mix(knobs["mix"])
    config = SynthConfig(**knobs)
    synthesizer = Synthesizer(config)
    created, start = created_time()
    metadata = synthesizer.metadata()
    metadata["command"] = "gnurouter trace synth " + " ".join(sys.argv[3:])
    writer = TraceWriter(
        args.output,
        producer=producer("trace synth"),
        metadata=metadata,
        start_time=start,
        created=created,
        compress=args.compress,
    )
    bar = progress(config.duration, "synth", unit="s")
    last_second = 0
    try:
        for record in synthesizer:
            writer.write(record)
            second = record.time_us // 1_000_000
            if second != last_second:
                bar.update(second - last_second)
                last_second = second
    finally:
        bar.close()
        writer.close()
    summary = synthesizer.summary
    print(
        f"wrote {args.output}: {writer.records:,} records, {summary.messages:,} messages "
        f"({summary.malformed:,} malformed), {summary.connections:,} connections, "
        f"{config.duration:g} s, {writer.bytes_written:,} bytes"
    )
    return 0


# -- info --------------------------------------------------------------------------------


def _info(args: argparse.Namespace) -> int:
    from gnurouter.traces.progress import FileProgress, progress
    from gnurouter.traces.stats import compute_stats, format_stats

    size = Path(args.trace).stat().st_size
    with TraceReader(args.trace) as reader:
        bar = progress(size, "reading", unit="B")
        ticker = FileProgress(bar, reader)
        error: TraceError | None = None
        records = _guarded(reader)
        try:
            stats = compute_stats(records, reader.header, on_record=ticker.tick)
        finally:
            bar.close()
        error = records.error
    stats.file_bytes = size
    if error is not None:
        stats.error = error.reason
        stats.error_offset = error.offset
    info = stats.to_json()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_stats(info, args.trace))
    if error is not None:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


class _guarded:
    """Iterate a reader; stop (remembering the error) at damage instead of raising."""

    def __init__(self, reader: TraceReader) -> None:
        self.reader = reader
        self.error: TraceError | None = None

    def __iter__(self) -> Any:
        try:
            yield from self.reader
        except TraceError as error:
            self.error = error


# -- replay ------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from gnurouter.traces.replay import ReplayOptions, format_report, run_replay

    options = ReplayOptions(
        speed=args.speed,
        loops=args.loop,
        deflate=args.deflate,
        lead=args.lead,
        max_connections=args.max_connections,
        progress=sys.stderr.isatty(),
    )
    TraceReader(args.trace).close()  # a bad file fails here, before any connection
    report = run_replay(args.trace, args.target, options)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report))
    if report.trace_error is not None:
        print(f"{PROG}: error: {report.trace_error}", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


# -- pcap --------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from gnurouter.traces.pcap import export_pcap

    _refuse_to_overwrite(args)
    fmt = args.format or ("pcapng" if str(args.output).endswith(".pcapng") else "pcap")
    result = export_pcap(args.trace, args.output, node=args.node, fmt=fmt)
    print(
        f"wrote {args.output} ({fmt}): {result.packets:,} packets, {result.messages:,} messages, "
        f"{result.connections:,} connections"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from gnurouter.traces.pcap import NodeNotInCapture, import_pcap

    _refuse_to_overwrite(args)
    created, _ = created_time()
    try:
        result = import_pcap(
            args.pcap,
            args.output,
            node=args.node,
            port=args.port,
            producer=producer("trace import-pcap"),
            created=created,
        )
    except NodeNotInCapture as error:
        # The capture is fine; the node named is not in it (exit 1, like a failed replay).
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    node = result.node
    print(
        f"wrote {args.output}: {result.messages:,} messages on {result.connections:,} "
        f"Gnutella connections from {result.packets:,} packets"
        + (f", node {node[0]}:{node[1]}" if node else "")
        + ("" if node is None or args.node else " (found in the capture)")
        + (f"; {len(result.problems)} problem(s):" if result.problems else "")
    )
    for problem in result.problems[:20]:
        print(f"  {problem}")
    return 0


# -- `gnurouter run` options -------------------------------------------------------------

#: `run` options that are about this process, not the router's configuration.
RUN_ONLY_OPTIONS = ("replay", "replay_speed", "replay_loop", "replay_lead")


def add_run_trace_options(run: argparse.ArgumentParser) -> None:
    """--replay and its pacing (--record is a router setting: gnurouter.config)."""
    run.add_argument(
        "--replay",
        metavar="FILE",
        default=None,
        help="feed the router from this trace: a replayer in the same process connects to "
        "the router over loopback (the catcher is off unless --target-peers is given)",
    )
    _add_speed(run, "--replay-speed", "1x|10x|max", "time scale of --replay (1x)")
    run.add_argument(
        "--replay-loop",
        action="store_true",
        help="replay the trace over and over until the router stops",
    )
    _add_lead(run, "--replay-lead", "replay lead", argparse.SUPPRESS)
