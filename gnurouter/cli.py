"""The `gnurouter` command.

Options on the command line override the config file, which overrides the
built-in defaults.  Any bad option or config value ends the program with one
line on stderr and exit status 2, before a socket is opened.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from gnurouter.config import (
    ConfigError,
    RouterConfig,
    Setting,
    config_from_mapping,
    format_duration,
    load_config_file,
)
from gnurouter.edge.gctuning import tune_for_serving

PROG = "gnurouter"
CONTROL_TOKEN_ENV = "GNUROUTER_CONTROL_TOKEN"
_DEFAULTS = RouterConfig()


_METAVARS = {
    "duration": "DURATION",
    "address": "HOST:PORT",
    "addresses": "HOST:PORT",
    "path": "FILE",
    "urls": "URL",
    "int": "N",
    "float": "NUMBER",
    "policies": "POLICIES",
}


def _shown_default(name: str, declared: Setting) -> str:
    default = getattr(_DEFAULTS, name)
    if declared.kind in ("addresses", "urls", "table") or default is None:
        return ""
    if declared.kind == "duration":
        return f" (default: {format_duration(default)})"
    if declared.kind == "bool":
        return f" (default: {'on' if default else 'off'})"
    if declared.kind == "address":
        return f" (default: {default[0]}:{default[1]})"
    return f" (default: {default})"


def _add_run_options(run: argparse.ArgumentParser) -> None:
    """One option per RouterConfig setting, named, typed and explained by its declaration."""
    run.add_argument(
        "--config", metavar="FILE.toml", help="read options from a TOML file ([router] table)"
    )
    for name in dataclasses.asdict(_DEFAULTS):
        declared = RouterConfig.setting(name)
        if not declared.on_command_line:
            continue
        flag = declared.flag or "--" + name.replace("_", "-")
        # SUPPRESS: only options actually given override the config file.
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if declared.kind == "bool":
            if declared.flag:  # --no-deflate: the flag turns the default off
                options["action"] = "store_false" if getattr(_DEFAULTS, name) else "store_true"
                run.add_argument(flag, help=declared.flag_help or declared.help, **options)
            else:
                options["action"] = argparse.BooleanOptionalAction
                run.add_argument(
                    flag, help=declared.help + _shown_default(name, declared), **options
                )
            continue
        if declared.kind in ("addresses", "urls"):
            options["action"] = "append"
        if declared.kind == "choice":
            options["choices"] = declared.choices
        else:
            options["metavar"] = _METAVARS.get(declared.kind, name.upper())
        run.add_argument(flag, help=declared.help + _shown_default(name, declared), **options)


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
    for name, given in vars(args).items():
        if name in skip:
            continue
        declared = RouterConfig.setting(name)
        if isinstance(given, str):  # numbers parsed here, the rest as the file holds them
            given = declared.from_text(name, given)
        values[name] = given
    return config_from_mapping(values)


#: The settings naming files the router writes while it runs.
WRITTEN_FILES = ("packet_log", "record", "hosts_file")


def _cannot_write(path: Path) -> str | None:
    """Why `path` cannot be opened for appending, or None: tried for real (permissions,
    read-only file systems, a missing directory), leaving no file behind."""
    if path.is_dir():
        return "it is a directory"
    if not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    if not existed:
        path.unlink()
    return None


def check_written_files(config: RouterConfig) -> None:
    """ConfigError unless every file the router will write can be written, before it starts:
    a packet log in a missing directory would otherwise fail at every batch."""
    for name in WRITTEN_FILES:
        path = getattr(config, name)
        if path is not None:
            problem = _cannot_write(Path(path))
            if problem is not None:
                raise ConfigError(f"{name}: cannot write {path}: {problem}")


def _run(config: RouterConfig, args: argparse.Namespace | None = None) -> int:
    from twisted.internet import reactor as default_reactor

    from gnurouter.edge.service import RouterService
    from gnurouter.traces.record import recorder_for

    reactor: Any = default_reactor

    router = RouterService(config, recorder_factory=recorder_for)
    # Twisted's own SIGINT/SIGTERM handlers stop the reactor, which runs the
    # shutdown trigger below: Bye to every peer and a flushed packet log.  Ours
    # is in place before the router starts, so a SIGTERM right after "listening
    # on" (a supervisor, a test) is a clean stop too, not the default death.
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
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
        check_written_files(config)
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
