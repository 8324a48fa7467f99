"""Pytest fixtures: real routers on loopback sockets. Shared helpers are in `tests.fixtures`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from gnurouter.config import RouterConfig
from gnurouter.edge.service import RouterService
from gnurouter.traces.record import recorder_for

# tests/traces and tests/dashboard still import these from here.
from tests.fixtures import IN_CI, DecisionWatch, join, require, wait_for

__all__ = ["IN_CI", "DecisionWatch", "join", "require", "start_router", "wait_for"]


@pytest.fixture
def start_router() -> Iterator[Callable[..., RouterService]]:
    """Start routers on 127.0.0.1 (any free port, no target peers unless overridden);
    every one still running is stopped after the test."""
    started: list[RouterService] = []

    def start(**overrides: Any) -> RouterService:
        values: dict[str, Any] = {"listen": ("127.0.0.1", 0), "target_peers": 0}
        values.update(overrides)
        router = RouterService(
            RouterConfig(**values),
            reactor=reactor,
            name=f"r{len(started) + 1}",
            recorder_factory=recorder_for,
        )
        router.startService()
        started.append(router)
        return router

    yield start
    for router in started:
        if router.running:
            pytest_twisted.blockon(router.stopService())
