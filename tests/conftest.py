"""Shared fixtures: real routers on loopback sockets, real servents talking to them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from gnurouter.config import RouterConfig
from gnurouter.edge.servent import ServentProtocol, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.routing.decisions import Decision
from gnurouter.stages.events import MessageArrived
from gnurouter.stages.router import RouterHandler
from gnurouter.traces.record import recorder_for

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, what: str) -> None:
    """Skip locally when a system dependency is missing, but fail loudly in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true) but is missing")
    pytest.skip(f"{what} is not available")


class DecisionWatch:
    """Turns a router's routing decisions into awaitable conditions (no sleeping)."""

    def __init__(self, *routers: RouterService) -> None:
        self.routers = routers
        self.seen: list[tuple[MessageArrived, Decision]] = []
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        for router in routers:
            handler = router.stages["router"].handler
            assert isinstance(handler, RouterHandler)
            handler.observers.append(self._observe)

    def _observe(self, event: MessageArrived, decision: Decision) -> None:
        # May run on a router worker thread: hop to the reactor thread.
        reactor.callFromThread(self._record, event, decision)

    def _record(self, event: MessageArrived, decision: Decision) -> None:
        self.seen.append((event, decision))
        for waiter in list(self._waiters):
            condition, waiting = waiter
            if condition():
                self._waiters.remove(waiter)
                waiting.callback(None)

    def for_guid(self, guid: bytes) -> list[tuple[MessageArrived, Decision]]:
        return [(e, d) for e, d in self.seen if e.message.guid == guid]

    def wait_until(
        self, condition: Callable[[], bool], timeout: float = 10.0
    ) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if condition():
            waiting.callback(None)
        else:
            self._waiters.append((condition, waiting))
            waiting.addTimeout(timeout, reactor)
        return waiting


def wait_for(router: RouterService, condition: Callable[[], bool], timeout: float = 10.0) -> Any:
    """A Deferred that fires once `condition` holds, re-checked whenever a peer changes state."""
    done: defer.Deferred[None] = defer.Deferred()

    def check(_peer: object = None) -> None:
        if not done.called and condition():
            router.peers.listeners.remove(check)
            done.callback(None)

    router.peers.listeners.append(check)
    check()
    if not done.called:
        done.addTimeout(timeout, reactor)
    return done


async def join(router: RouterService, **kwargs: Any) -> ServentProtocol:
    """Connect a servent and wait until the router, too, counts it as established."""
    before = {peer.id for peer in router.peers.established()}
    servent = await connect_servent(reactor, *router.listening_address(), **kwargs)
    await wait_for(router, lambda: len({p.id for p in router.peers.established()} - before) >= 1)
    return servent


@pytest.fixture
def start_router() -> Iterator[Callable[..., RouterService]]:
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
