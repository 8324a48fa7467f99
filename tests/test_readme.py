"""Every command the README shows is run, or skipped for a stated reason.

The README's code blocks (indented or fenced) are read; each command in them
is classified: run to completion, run as a server (started, seen serving, then
stopped with SIGTERM, which must end it cleanly), run as one shell script
with a router behind it, or skipped with a reason (it reaches beyond
loopback, or it is one of the long benchmarks or the two commands that set
up and run everything).  A command nobody classified fails the test, so a
new example in the README is run from the day it is written.

Everything runs in a temporary directory (the repository's `.venv`,
`manage.py` and `traces/` linked in, `.venv/bin` first on PATH as after
`source .venv/bin/activate`), on loopback only: the README's fixed ports
(6346, 6347, 8000) become free ones.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from gnurouter.cli import check_written_files
from gnurouter.config import config_from_mapping
from tests.fixtures import ROOT, require

pytestmark = pytest.mark.network

README = ROOT / "README.md"
#: Bounds, seconds: one command to completion; a server until it serves.
COMMAND_TIMEOUT = 120
SERVING_TIMEOUT = 30

#: Commands that are not run, by a pattern of their text, and why.
SKIPPED = (
    (r"^scripts/(run|test)\b", "the two commands: .ci/run runs scripts/test, which runs this"),
    (r"^\.venv/bin/python benchmarks/", "a benchmark of minutes (benchmarks/ print numbers)"),
    (r"^gnurouter bench overload\b", "a benchmark of minutes (tests/bench runs small grids)"),
)
#: Addresses other than loopback: a command naming one is not run here.
BEYOND_LOOPBACK = re.compile(
    r"(?<![\d.])(?!127\.)\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])|\bCACHE\b"
)


@dataclass
class Command:
    text: str  # continuation lines joined
    line: int  # where it starts in the README


def code_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every indented or fenced block."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            language, start = line[3:].strip(), index + 1
            end = lines.index("```", start)
            yield language, start + 1, lines[start:end]
            index = end + 1
            continue
        previous_blank = index == 0 or not lines[index - 1].strip()
        if line.startswith("    ") and previous_blank:
            start = index
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index]):
                index += 1
            yield "sh", start + 1, [block_line[4:] for block_line in lines[start:index]]
            continue
        index += 1


def shell_commands(lines: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    pending = ""
    start = first_line
    for number, line in enumerate(lines, first_line):
        if not pending:
            start = number
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append(Command(" ".join((pending + line).split()), start))
        pending = ""
    return commands


def readme() -> tuple[list[list[Command]], list[str]]:
    """The README's shell blocks, as commands, and its TOML blocks."""
    blocks, tomls = [], []
    for language, first, lines in code_blocks(README.read_text()):
        if language == "toml":
            tomls.append("\n".join(lines))
        elif language in ("sh", "bash", "shell", ""):
            commands = shell_commands(lines, first)
            if commands:
                blocks.append(commands)
    return blocks, tomls


def skip_reason(command: Command) -> str | None:
    for pattern, reason in SKIPPED:
        if re.search(pattern, command.text):
            return reason
    if BEYOND_LOOPBACK.search(command.text) or "0.0.0.0" in command.text:
        return "reaches beyond loopback"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Workspace:
    """A temporary directory laid out like the repository, and how to run commands in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        venv = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(sys.prefix)
        for name, target in ((".venv", venv), ("manage.py", ROOT / "manage.py")):
            (path / name).symlink_to(target)
        (path / "traces").symlink_to(ROOT / "traces")
        (path / "var").mkdir()
        (path / "var" / "control_token").write_text("readme-test-token-0123456789abcdef\n")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("GNUROUTER_")
        }
        self.env.update(
            PATH=f"{path / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
            GNUROUTER_VAR=str(path / "var"),
            PYTHONUNBUFFERED="1",
        )
        # The README's fixed ports, for the commands that talk to the router running behind
        # them: `router` below listens on these.
        self.ports = {"6346": str(free_port()), "6347": str(free_port())}

    def localise(self, text: str, ports: dict[str, str] | None = None) -> str:
        for fixed, free in (ports or self.ports).items():
            text = text.replace(f"127.0.0.1:{fixed}", f"127.0.0.1:{free}")
        return text

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def serve(self, command: str, serving: str, **env: str) -> subprocess.Popen[str]:
        """Start a server; returns once a line of its output matches `serving`."""
        process = subprocess.Popen(
            ["bash", "-c", "exec " + command],  # exec: SIGTERM reaches the server itself
            cwd=self.path,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        seen: list[str] = []
        served = threading.Event()

        def read(stream: IO[str]) -> None:
            for line in stream:  # until the process ends; keeps its pipe from filling up
                seen.append(line)
                if re.search(serving, line):
                    served.set()

        threading.Thread(target=read, args=(process.stdout,), daemon=True).start()
        if not served.wait(SERVING_TIMEOUT):
            process.kill()
            process.wait()
            raise AssertionError(
                f"{command!r} did not serve in {SERVING_TIMEOUT}s:\n{''.join(seen)}"
            )
        return process


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


def run_server(work: Workspace, command: Command) -> None:
    """A `gnurouter run` or `manage.py serve`: serving on free ports, then a clean stop."""
    ports = {"6346": str(free_port()), "6347": str(free_port()), "8000": str(free_port())}
    text = work.localise(command.text, ports)
    if text.startswith("gnurouter run") and "--listen" not in text:
        text += f" --listen 127.0.0.1:{ports['6346']}"
    if "manage.py serve" in text:
        text = text.replace("--port 8000", f"--port {ports['8000']}")
        process = work.serve(text, r"dashboard: http://")
        reply = httpx.get(f"http://127.0.0.1:{ports['8000']}/accounts/login/", timeout=10)
        stop(process)
        assert reply.status_code == 200, (command, reply.status_code)
        return
    process = work.serve(text, r"gnurouter listening on 127\.0\.0\.1:")
    assert stop(process) == 0, command


def test_every_readme_command_runs_or_is_skipped_for_a_reason(tmp_path: Path) -> None:
    require(shutil.which("curl") is not None, "curl (the README's control-API examples)")
    blocks, tomls = readme()
    assert blocks and tomls
    work = Workspace(tmp_path)
    # The README's config file, as `--config router.toml` reads it, on loopback.
    [toml] = [text for text in tomls if "[router]" in text]
    local_toml = re.sub(r'"(?:\d{1,3}\.){3}\d{1,3}:6346"', '"127.0.0.1:6346"', toml)
    (tmp_path / "router.toml").write_text(work.localise(local_toml, {"6346": str(free_port())}))
    config = config_from_mapping(tomllib.loads(toml)["router"])
    check_written_files(config)  # its packet log, var/packets.log, can be written here

    # A router behind the commands that talk to one (curl, trace replay).
    router = work.serve(
        f"gnurouter run --listen 127.0.0.1:{work.ports['6346']} "
        f"--control 127.0.0.1:{work.ports['6347']}",
        r"gnurouter listening on",
        GNUROUTER_CONTROL_TOKEN=(tmp_path / "var" / "control_token").read_text().strip(),
    )
    ran: list[str] = []
    skipped: dict[str, str] = {}
    try:
        for block in blocks:
            runnable = [c for c in block if skip_reason(c) is None]
            skipped.update({c.text: str(skip_reason(c)) for c in block if c not in runnable})
            if any(c.text.startswith(("export ", "auth=")) for c in runnable):
                # One shell session: its variables carry from line to line.
                script = "\n".join(work.localise(c.text) for c in runnable)
                result = work.run(script)
                assert result.returncode == 0, (script, result.stdout, result.stderr)
                ran += [c.text for c in runnable]
                continue
            for command in runnable:
                serves = command.text.startswith("gnurouter run") and "--help" not in command.text
                if serves or "manage.py serve" in command.text:
                    run_server(work, command)
                else:
                    result = work.run(work.localise(command.text))
                    assert result.returncode == 0, (command, result.stdout, result.stderr)
                ran.append(command.text)
    finally:
        stop(router)
    # Both kinds are there: a README that lost its examples (or a parser that lost the
    # blocks) fails here.
    assert len(ran) >= 15, ran
    print("skipped:", *(f"{reason}: {text}" for text, reason in skipped.items()), sep="\n  ")
    assert set(skipped.values()) <= {reason for _, reason in SKIPPED} | {"reaches beyond loopback"}


def test_commands_are_read_from_indented_and_fenced_blocks() -> None:
    text = (
        "Intro:\n\n    gnurouter run --a \\\n        --b\n\n    # a comment\n    scripts/test\n\n"
        "```toml\n[router]\nmax_peers = 3\n```\n\n```sh\ncurl -s x\n```\n"
    )
    blocks = list(code_blocks(text))
    assert [language for language, _, _ in blocks] == ["sh", "toml", "sh"]
    commands = shell_commands(blocks[0][2], blocks[0][1])
    assert [(c.text, c.line) for c in commands] == [
        ("gnurouter run --a --b", 3),
        ("scripts/test", 7),
    ]
    assert skip_reason(Command("gnurouter run --peer 203.0.113.5:6346", 1)) == (
        "reaches beyond loopback"
    )
    assert skip_reason(Command("gnurouter trace replay x --target 127.0.0.1:6346", 1)) is None
