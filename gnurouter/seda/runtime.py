"""The Twisted side of the stage runtime: an `Executor` on a reactor and its thread pool."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from twisted.python.threadpool import ThreadPool


class LoopReactor(Protocol):
    """What the executor uses of a Twisted reactor (`IReactorTime`, `IReactorThreads`)."""

    def callLater(self, delay: float, callable: Callable[[], None], /) -> object: ...

    def callFromThread(self, callable: Callable[[], None], /) -> None: ...


class ReactorExecutor:
    """Runs loop work on the reactor and blocking work on a Twisted `ThreadPool`.

    `call_soon` uses `callLater(0)` on the reactor thread and `callFromThread`
    elsewhere: both are safe, but the former avoids waking the reactor through
    its self-pipe for every batch.
    """

    def __init__(self, reactor: LoopReactor, *, max_pool_threads: int = 64) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max_pool_threads, name="gnurouter-stage")
        self._loop_thread: int | None = None
        self._started = False

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        if not self._started:
            self._pool.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._pool.stop()
            self._started = False

    def call_soon(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self._loop_thread:
            self._reactor.callLater(0, fn)
        else:
            self._reactor.callFromThread(fn)

    def call_in_thread(self, fn: Callable[[], None]) -> None:
        self._pool.callInThread(fn)

    @property
    def pool_threads(self) -> int:
        return len(self._pool.threads)
