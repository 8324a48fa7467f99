"""The `gnurouter` command: option errors, config files, and a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor

from gnurouter.cli import build_parser, config_from_args
from gnurouter.config import ConfigError
from gnurouter.edge.servent import connect_servent
from gnurouter.protocol.messages import Bye, MessageType
from tests.fixtures import ROOT, delivered, ping, query


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gnurouter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["run", "--listen", "nonsense"], "expected HOST:PORT"),
        (["run", "--max-peers", "0"], "outside the allowed range 1..10000"),
        (["run", "--query-delay", "fast"], "expected a duration"),
        (["run", "--target-peers", "50", "--max-peers", "10"], "cannot exceed max_peers"),
        (["run", "--max-ttl", "99"], "max_ttl: 99 is outside"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "--conditioning", "threshold,bogus"], "unknown policy 'bogus'"),
        (["run", "--query-shed-order", "random"], "invalid choice: 'random'"),
        (["run", "--codel-target", "20 parsecs"], "expected a duration"),
        (["run", "--config", "/nonexistent/gnurouter.toml"], "cannot read config file"),
        # Files the router writes are tried before it starts, not at every batch.
        (
            ["run", "--packet-log", "/nonexistent-dir/packets.log"],
            "packet_log: cannot write /nonexistent-dir/packets.log: "
            "directory /nonexistent-dir does not exist",
        ),
        (["run", "--record", "/"], "record: cannot write /: it is a directory"),
        (["run", "--hosts-file", "/nonexistent-dir/hosts"], "hosts_file: cannot write"),
        (["run", "--packet-log", "/proc/version"], "packet_log: cannot write /proc/version"),
    ],
)
def test_bad_options_give_one_error_line_and_exit_2(args: list[str], complaint: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gnurouter: error: ") and complaint in lines[0]


def test_help_documents_every_option() -> None:
    result = run_cli("run", "--help")
    assert result.returncode == 0
    options = ("--listen", "--peer", "--max-peers", "--query-delay", "--config", "--packet-log")
    for option in options:
        assert option in result.stdout


def test_config_file_is_read_and_command_line_wins(tmp_path: Path) -> None:
    config_file = tmp_path / "router.toml"
    config_file.write_text(
        '[router]\nlisten = "127.0.0.1:7001"\nmax_peers = 12\nquery_delay = "20ms"\n'
        'peers = ["127.0.0.2:6346"]\n[router.payload_limits]\nquery = 2048\n'
    )
    args = build_parser().parse_args(["run", "--config", str(config_file), "--max-peers", "20"])
    config = config_from_args(args)
    assert config.listen == ("127.0.0.1", 7001)
    assert config.max_peers == 20
    assert config.query_delay == pytest.approx(0.020)
    assert config.peers == [("127.0.0.2", 6346)]
    assert config.payload_limits.query == 2048


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[router]\nmax_peer = 3\n", "unknown option 'max_peer'"),
        ("[router]\nmax_peers = 'many'\n", "expected an integer"),
        ("[router\n", "not valid TOML"),
        ("[router.payload_limits]\nquery = -1\n", "payload_limits"),
    ],
)
def test_bad_config_file_values_are_refused(tmp_path: Path, text: str, complaint: str) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    args = build_parser().parse_args(["run", "--config", str(config_file)])
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        config_from_args(args)


def test_unknown_config_key_names_the_file_and_the_likely_key(tmp_path: Path) -> None:
    config_file = tmp_path / "router.toml"
    config_file.write_text("[router]\nmax_peerz = 3\n")
    result = run_cli("run", "--config", str(config_file))
    assert result.returncode == 2
    assert result.stderr == (
        f"gnurouter: error: config file {config_file}: unknown option 'max_peerz' "
        "(did you mean 'max_peers'?)\n"
    )


def test_unknown_key_far_from_every_option_gets_no_guess(tmp_path: Path) -> None:
    config_file = tmp_path / "router.toml"
    config_file.write_text("[router]\nzzzz = 3\n")
    args = build_parser().parse_args(["run", "--config", str(config_file)])
    with pytest.raises(ConfigError) as raised:
        config_from_args(args)
    assert str(raised.value) == f"config file {config_file}: unknown option 'zzzz'"


def test_start_up_check_leaves_no_file_behind(tmp_path: Path) -> None:
    from gnurouter.cli import check_written_files
    from gnurouter.config import RouterConfig

    log_path = tmp_path / "packets.log"
    check_written_files(RouterConfig(packet_log=str(log_path), record=str(tmp_path / "r.gtrace")))
    assert list(tmp_path.iterdir()) == []


class RouterProcess(protocol.ProcessProtocol):
    """Watches a router's log for the port it listens on, and for its exit."""

    def __init__(self) -> None:
        self.log = b""
        self.listening: defer.Deferred[int] = defer.Deferred()
        self.exited: defer.Deferred[int] = defer.Deferred()

    def errReceived(self, data: bytes) -> None:
        self.log += data
        match = re.search(rb"listening on [\d.]+:(\d+)", self.log)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def processEnded(self, reason: Any) -> None:
        self.exited.callback(reason.value.exitCode)


@pytest_twisted.ensureDeferred
async def test_sigterm_sends_bye_flushes_packet_log_and_exits_0(tmp_path: Path) -> None:
    packet_log = tmp_path / "packets.log"
    watcher = RouterProcess()
    # IReactorProcess is a zope interface, opaque to mypy (it takes the first argument for self).
    process: Any = cast(Any, reactor).spawnProcess(
        watcher,
        sys.executable,
        [
            sys.executable,
            "-m",
            "gnurouter",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--target-peers",
            "0",
            "--packet-log",
            str(packet_log),
        ],
        env=dict(os.environ),
    )
    try:
        listening = watcher.listening
        listening.addTimeout(30, reactor)
        port = await listening
        servent = await connect_servent(reactor, "127.0.0.1", port)
        servent.send(query("logged"))
        # The query is logged once routed; a pong answers our ping only after it.
        probe = ping()
        servent.send(probe)
        await delivered(servent, probe)
        process.signalProcess(signal.SIGTERM)
        exited = watcher.exited
        exited.addTimeout(30, reactor)
        assert await exited == 0
        await servent.closed
        [bye] = servent.messages_of(MessageType.BYE)
        body = bye.body()
        assert isinstance(body, Bye) and body.code == 200
        lines = packet_log.read_text().splitlines()
        assert any(" query " in line and "consumed" in line for line in lines), lines
    finally:
        if process.pid is not None:
            process.signalProcess(signal.SIGKILL)


def test_tac_file_builds_an_application_holding_the_router_service() -> None:
    from twisted.application import service

    from gnurouter.edge.service import RouterService

    tac = ROOT / "examples" / "gnurouter.tac"
    namespace: dict[str, Any] = {"__file__": str(tac)}
    exec(compile(tac.read_text(), str(tac), "exec"), namespace)
    # A zope interface adapter: opaque to mypy, which misses `self` on its methods.
    collection: Any = service.IServiceCollection(namespace["application"])
    routers = [s for s in collection if isinstance(s, RouterService)]
    assert len(routers) == 1 and routers[0].config.control_listen == ("127.0.0.1", 6347)


def test_sigterm_at_once_after_listening_is_a_clean_stop() -> None:
    """A supervisor may stop the router the moment it says it listens: exit 0, not death by
    the signal's default action before the handler is in place."""
    command = [sys.executable, "-m", "gnurouter", "run", "--listen", "127.0.0.1:0"]
    for _ in range(3):  # the window was short: a few tries
        router = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert router.stderr is not None
        for line in router.stderr:
            if "listening on" in line:
                router.send_signal(signal.SIGTERM)
                break
        assert router.wait(timeout=30) == 0
