"""Dashboard fixtures: real routers in their own processes, operator accounts, live sessions."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, require

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dashboard-tests-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class OutputWatch:
    """Reads a child's output on a thread; `wait_for(pattern)` blocks until a line matches."""

    def __init__(self, stream: Any, name: str) -> None:
        self.lines: list[str] = []
        self.name = name
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0, start: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for line in self.lines[start:]:
                match = regex.search(line)
                if match:
                    return match
            return None

        with self._changed:
            ok = self._changed.wait_for(lambda: found() or "<eof>" in self.lines, timeout)
            match = found()
        if not ok or match is None:
            tail = "\n".join(self.lines[-30:])
            raise AssertionError(f"{self.name}: no line matching {pattern!r}; last output:\n{tail}")
        return match


@dataclass
class RouterProcess:
    """`gnurouter run` in a process of its own, with its control endpoint behind TOKEN."""

    gnutella_port: int
    control_port: int
    extra: list[str] = field(default_factory=list)
    token: str = TOKEN
    process: subprocess.Popen[str] | None = None
    output: OutputWatch | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def gnutella(self) -> str:
        return f"127.0.0.1:{self.gnutella_port}"

    def start(self) -> RouterProcess:
        env = dict(os.environ, GNUROUTER_CONTROL_TOKEN=self.token, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gnurouter",
                "run",
                "--listen",
                self.gnutella,
                "--control",
                f"127.0.0.1:{self.control_port}",
                "--target-peers",
                "0",
                *self.extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output = OutputWatch(self.process.stderr, "router")
        # Logged after both the Gnutella and the control port are listening.
        self.output.wait_for(r"gnurouter listening on")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def parameters(self) -> dict[str, Any]:
        response = httpx.get(
            self.base_url + "/parameters",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=5,
        )
        response.raise_for_status()
        return {p["name"]: p for p in response.json()}

    def value(self, name: str) -> Any:
        return self.parameters()[name]["value"]


def dashboard_env(var: Path, **extra: str) -> dict[str, str]:
    """This environment minus the dashboard's own settings: SQLite in `var`, in-memory layer."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("GNUROUTER_")
    }
    env.update(GNUROUTER_VAR=str(var), PYTHONUNBUFFERED="1", **extra)
    return env


@contextlib.contextmanager
def manage_py(
    env: dict[str, str], *args: str, name: str
) -> Iterator[tuple[subprocess.Popen[str], OutputWatch]]:
    """`manage.py ARGS` in a process of its own, its output watched; stopped on the way out."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, OutputWatch(process.stdout, name)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def served_dashboard(env: dict[str, str], *args: str) -> Iterator[dict[str, Any]]:
    """`manage.py serve` (real daphne) on a free port; yields its URL, the first run's
    administrator password and its output."""
    with manage_py(env, "serve", "--port", "0", *args, name="dashboard") as (_, output):
        password = output.wait_for(r"user 'admin', password '([^']+)'").group(1)
        url = output.wait_for(r"dashboard: (http://127\.0\.0\.1:\d+/)").group(1)
        yield {"url": url, "password": password, "output": output}


@pytest.fixture
def router_process() -> Iterator[Callable[..., RouterProcess]]:
    started: list[RouterProcess] = []

    def start(*extra: str, ports: tuple[int, int] | None = None) -> RouterProcess:
        gnutella, control = ports or (free_port(), free_port())
        router = RouterProcess(gnutella, control, list(extra)).start()
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()


@pytest.fixture(scope="module")
def shared_router() -> Iterator[RouterProcess]:
    """One router for a module's read-mostly tests (tests that retune it restore nothing)."""
    router = RouterProcess(free_port(), free_port()).start()
    yield router
    router.stop()


@pytest.fixture
def roles(db: Any) -> None:
    from dashboard.routers.roles import ensure_roles

    ensure_roles()


def _user(django_user_model: Any, name: str, role: str | None) -> Any:
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(name, password="pw-" + name + "-0123456789")
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def viewer(roles: None, django_user_model: Any) -> Any:
    return _user(django_user_model, "vera", "viewer")


@pytest.fixture
def tuner(roles: None, django_user_model: Any) -> Any:
    return _user(django_user_model, "tom", "tuner")


@pytest.fixture
def outsider(roles: None, django_user_model: Any) -> Any:
    """Signed in, but in neither role."""
    return _user(django_user_model, "otto", None)


def require_postgresql() -> str:
    url = os.environ.get("DATABASE_URL", "")
    require(url.startswith(("postgres://", "postgresql://")), "DATABASE_URL (PostgreSQL)")
    return url


def require_redis() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    require(reachable(host or "127.0.0.1", int(port or 6379)), f"Redis at {host_port}")
    return url


def require_chromium() -> str:
    path = "/usr/bin/chromium"
    require(os.access(path, os.X_OK), "Debian's chromium (/usr/bin/chromium)")
    return path


__all__ = ["IN_CI", "TOKEN", "RouterProcess", "free_port", "require_chromium", "require_redis"]
