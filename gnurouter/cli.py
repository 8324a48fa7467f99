"""The `gnurouter` command.

Options on the command line override the config file, which overrides the
built-in defaults.  Any bad option or config value ends the program with one
line on stderr and exit status 2, before a socket is opened.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from gnurouter.config import ConfigError, RouterConfig, config_from_mapping, load_config_file
from gnurouter.edge.gctuning import tune_for_serving

PROG = "gnurouter"
CONTROL_TOKEN_ENV = "GNUROUTER_CONTROL_TOKEN"


def _add_run_options(run: argparse.ArgumentParser) -> None:
    add = run.add_argument
    s = argparse.SUPPRESS  # only options actually given override the config file
    add("--config", metavar="FILE.toml", help="read options from a TOML file ([router] table)")
    add(
        "--listen",
        metavar="HOST:PORT",
        default=s,
        help="address to accept peers on (127.0.0.1:6346)",
    )
    add(
        "--peer",
        dest="peers",
        metavar="HOST:PORT",
        action="append",
        default=s,
        help="a servent to stay connected to (repeatable)",
    )
    add("--max-peers", type=int, default=s, help="most neighbours at once, any role (62)")
    add(
        "--max-ultrapeers",
        type=int,
        default=s,
        help="ultrapeer (and old-style) neighbours; also the X-Degree we advertise (32)",
    )
    add("--max-leaves", type=int, default=s, help="leaf neighbours (30)")
    add(
        "--target-peers",
        type=int,
        default=s,
        help="ultrapeer links the catcher keeps up, connecting out as needed (8)",
    )
    add(
        "--refuse-legacy-peers",
        dest="accept_legacy_peers",
        action="store_false",
        default=s,
        help="refuse servents that send no X-Ultrapeer header (accepted as ultrapeers by default)",
    )
    add(
        "--hosts-file",
        default=s,
        metavar="FILE",
        help="host cache file (HOST:PORT [key=value...] per line): loaded at start, "
        "saved every --hosts-save-interval and on exit",
    )
    add("--hosts-save-interval", default=s, metavar="DURATION", help="host cache saves (5m)")
    add(
        "--bootstrap",
        metavar="URL",
        action="append",
        default=s,
        help="a GWebCache to ask for hosts when the host cache runs dry (repeatable)",
    )
    add(
        "--no-bootstrap",
        dest="bootstrap_enabled",
        action="store_false",
        default=s,
        help="never ask GWebCaches (no HTTP request at all): for closed networks",
    )
    add("--user-agent", default=s, help="User-Agent header value")
    add(
        "--no-deflate", dest="deflate", action="store_false", default=s, help="refuse deflate links"
    )
    add("--max-ttl", type=int, default=s, help="clamp hops+TTL of relayed messages to this (7)")
    add("--route-ttl", default=s, metavar="DURATION", help="how long routes live (10m)")
    add("--route-table-max", type=int, default=s, help="most routes kept (200000)")
    add(
        "--ping-mode",
        choices=("cache", "flood"),
        default=s,
        help="answer pings from the pong cache or flood them",
    )
    add(
        "--keepalive-interval",
        default=s,
        metavar="DURATION",
        help="ping neighbours this often (30s)",
    )
    add(
        "--handshake-timeout",
        default=s,
        metavar="DURATION",
        help="close a socket that has not finished its handshake by then (20s)",
    )
    add(
        "--max-handshakes",
        type=int,
        default=s,
        help="incoming sockets shaking hands at once, apart from peer slots (256)",
    )
    add(
        "--max-handshakes-per-address",
        type=int,
        default=s,
        help="of those, from any one IP address (16)",
    )
    add(
        "--flow-control-timeout",
        default=s,
        metavar="DURATION",
        help="close a neighbour whose socket has taken nothing this long (60s)",
    )
    add(
        "--control-rate-per-peer",
        type=float,
        default=s,
        help="control messages (pongs, hops-0 pings, QRP, vendor, Bye) per second a link "
        "may send; 0 = unbounded (1000)",
    )
    add(
        "--ping-flood-refusals",
        type=int,
        default=s,
        help="refused pings within 10s that cut a peer off; 0 = never (1000)",
    )
    add(
        "--query-delay",
        default=s,
        metavar="DURATION",
        help="block the router stage this long per query, e.g. 20ms (the SEDA bottleneck)",
    )
    add("--router-threads", type=int, default=s, help="threads of the router stage (1)")
    add("--batch-size", type=int, default=s, help="events per handler call (64)")
    add(
        "--conditioning",
        metavar="POLICIES",
        default=s,
        help="load-conditioning policies: 'default' (priority,threshold,clogged,query-filter,"
        "governor,codel), 'none' (one thread, unbounded FIFO queues: the original's "
        "collapse), 'all', or a comma-separated list of priority, threshold, clogged, "
        "query-filter, governor, codel, response-time",
    )
    add("--peer-output-max-bytes", type=int, default=s, help="clogged peer: queued bytes (256 KiB)")
    add(
        "--peer-output-max-messages",
        type=int,
        default=s,
        help="clogged peer: queued messages (2000)",
    )
    add("--query-max-queued", type=int, default=s, help="query filter: queries that may wait (200)")
    add("--query-rate", type=float, default=s, help="query filter: queries admitted per second")
    add(
        "--query-shed-order",
        choices=("highest-hops", "oldest", "newest"),
        default=s,
        help="query filter: which query goes first when shedding (highest-hops)",
    )
    add("--governor-interval", default=s, metavar="DURATION", help="governor sampling period (2s)")
    add(
        "--governor-add-threshold",
        type=int,
        default=s,
        help="queue length that adds a thread (100)",
    )
    add("--governor-max-threads", type=int, default=s, help="most router threads (10)")
    add("--governor-min-threads", type=int, default=s, help="fewest router threads (3)")
    add("--codel-target", default=s, metavar="DURATION", help="CoDel target sojourn time (5ms)")
    add("--codel-interval", default=s, metavar="DURATION", help="CoDel interval (100ms)")
    add(
        "--response-target",
        default=s,
        metavar="DURATION",
        help="response-time controller: query p90 target (100ms)",
    )
    add("--packet-log", default=s, metavar="FILE", help="write the packet log here (rotating)")
    add("--packet-log-max-bytes", type=int, default=s, help="rotate the packet log at this size")
    add(
        "--control",
        dest="control_listen",
        metavar="HOST:PORT",
        default=s,
        help="serve metrics and the control API (HTTP+JSON) here, e.g. 127.0.0.1:6347",
    )
    add(
        "--control-token",
        metavar="TOKEN",
        default=s,
        help="require 'Authorization: Bearer TOKEN' on the control endpoint "
        "(prefer the GNUROUTER_CONTROL_TOKEN environment variable: arguments show in ps)",
    )
    add("--log-level", choices=("debug", "info", "warning", "error"), default=s)


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="A Gnutella 0.6 packet router built as a staged event-driven architecture.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="run a router",
        description="Run a router until Ctrl-C or SIGTERM (then Bye to every peer, exit 0).",
    )
    _add_run_options(run)
    from gnurouter.traces.cli import add_run_trace_options, add_trace_commands

    add_run_trace_options(run)
    add_trace_commands(commands, _Parser)
    bench = commands.add_parser("bench", help="benchmarks (the SEDA overload experiment)")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    from gnurouter.bench.overload import add_arguments as add_overload_arguments

    add_overload_arguments(
        benchmarks.add_parser(
            "overload",
            help="reproduce the SEDA Gnutella overload experiment and go past it",
            description="Offered load vs latency, goodput, queues and threads for each "
            "conditioning policy, beside the original's published figures.",
        )
    )
    return parser


def config_from_args(args: argparse.Namespace) -> RouterConfig:
    values: dict[str, Any] = {}
    if args.config:
        values.update(load_config_file(args.config))
    if os.environ.get(CONTROL_TOKEN_ENV):  # file < environment < command line
        values["control_token"] = os.environ[CONTROL_TOKEN_ENV]
    from gnurouter.traces.cli import RUN_ONLY_OPTIONS

    skip = ("command", "config", *RUN_ONLY_OPTIONS)
    given = {k: v for k, v in vars(args).items() if k not in skip}
    values.update(given)
    return config_from_mapping(values)


def _run(config: RouterConfig, args: argparse.Namespace | None = None) -> int:
    from twisted.internet import reactor as default_reactor

    from gnurouter.edge.service import RouterService
    from gnurouter.traces.record import recorder_for

    reactor: Any = default_reactor

    router = RouterService(config, recorder_factory=recorder_for)
    try:
        router.startService()
    except Exception as error:  # e.g. the port is taken
        print(f"{PROG}: error: cannot start: {error}", file=sys.stderr)
        return 1
    if args is not None and getattr(args, "replay", None):
        from gnurouter.traces.replay import attach_replay

        attach_replay(reactor, router, args)
    tune_for_serving()
    reactor.addSystemEventTrigger("before", "shutdown", router.stopService)
    # Twisted's own SIGINT/SIGTERM handlers stop the reactor, which runs the
    # trigger above: Bye to every peer and a flushed packet log.
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        from gnurouter.bench.overload import run_from_args

        return run_from_args(args)
    if args.command == "trace":
        from gnurouter.traces.cli import run_trace_command

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return run_trace_command(args)
    try:
        config = config_from_args(args)
    except ConfigError as error:
        parser.error(str(error))
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "run":
        return _run(config, args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
