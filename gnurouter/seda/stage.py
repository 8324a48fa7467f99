"""The stage: a bounded event queue, a batch handler, counters, and a thread budget.

A stage never knows who feeds it or who drains it.  Upstream stages hold it as
a `Sink` and call `enqueue`, which may refuse (the caller learns it, and the
refusal is counted by reason and event kind), or `enqueue_housekeeping`, which
never refuses: timers and connection lifecycle events take that path because
losing one leaks state (the original router lost its cleanup timer that way).

Scheduling is delegated to an `Executor` so this module stays free of Twisted:
the runtime in `gnurouter.seda.runtime` supplies one backed by the reactor and
its thread pool.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gnurouter.seda.stats import SampleWindow


class EventHandler(Protocol):
    """What a stage runs: Sandstorm's `handleEvents`, nothing more."""

    def handle_events(self, batch: list[Any]) -> None: ...


class Executor(Protocol):
    """Where a stage's batches run."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the event-loop thread soon; safe to call from any thread."""

    def call_in_thread(self, fn: Callable[[], None]) -> None:
        """Run `fn` on a worker thread."""


class AdmissionController(Protocol):
    """A conditioning policy consulted before an event joins a stage's queue.

    Returns None to admit, or a short drop reason ("queue-full", ...).
    """

    def admit(self, stage: Stage, event: Any) -> str | None: ...


class Sink(Protocol):
    """The face a stage shows to the stages that feed it."""

    name: str

    def enqueue(self, event: Any) -> bool: ...

    def enqueue_many(self, events: Iterable[Any]) -> list[Any]: ...

    def enqueue_housekeeping(self, event: Any) -> None: ...


def event_kind(event: Any) -> str:
    """The label drops and delays are broken down by (message type, or event class)."""
    kind = getattr(event, "kind", None)
    return kind if isinstance(kind, str) else type(event).__name__


@dataclass
class StageCounters:
    enqueued: int = 0
    processed: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    housekeeping: int = 0
    handler_errors: int = 0


class Stage:
    """One stage of the graph.

    `threads` is the number of batches that may run at once.  A stage that is
    not `blocking` and has one thread runs on the event-loop thread; otherwise
    its batches run on the executor's thread pool, so a handler that blocks
    (the router's per-query delay) never stalls socket I/O.
    """

    def __init__(
        self,
        name: str,
        handler: EventHandler,
        executor: Executor,
        *,
        threads: int = 1,
        blocking: bool = False,
        batch_size: int = 64,
        max_threads: int = 64,
        clock: Callable[[], float] = time.monotonic,
        on_handler_error: Callable[[Stage, BaseException, list[Any]], None] | None = None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.blocking = blocking
        self.batch_size = batch_size
        self.max_threads = max_threads
        self._threads = threads
        self._executor = executor
        self._clock = clock
        self._on_handler_error = on_handler_error
        self._lock = threading.Lock()
        self._queue: deque[tuple[float, Any]] = deque()
        self._housekeeping: deque[tuple[float, Any]] = deque()
        self._active = 0
        self._pending = threading.local()
        self._scheduled_on_loop = False
        self.admission: list[AdmissionController] = []
        self.counters = StageCounters()
        self.drops: dict[str, dict[str, int]] = {}
        self.queue_delay = SampleWindow()
        self.service_time = SampleWindow()
        self.peak_queue_length = 0

    # -- feeding ---------------------------------------------------------

    @property
    def queue_length(self) -> int:
        # Includes this thread's `enqueue_many` events admitted but not yet queued.
        return len(self._queue) + len(self._housekeeping) + getattr(self._pending, "count", 0)

    @property
    def threads(self) -> int:
        return self._threads

    @threads.setter
    def threads(self, value: int) -> None:
        if not 1 <= value <= self.max_threads:
            raise ValueError(f"threads must be between 1 and {self.max_threads}, got {value}")
        with self._lock:
            self._threads = value
        self._wake()

    @property
    def runs_on_loop(self) -> bool:
        return self._threads == 1 and not self.blocking

    def enqueue(self, event: Any) -> bool:
        for controller in self.admission:
            reason = controller.admit(self, event)
            if reason is not None:
                self.count_drop(reason, event)
                return False
        with self._lock:
            self._queue.append((self._clock(), event))
            self.counters.enqueued += 1
            length = len(self._queue)
            if length > self.peak_queue_length:
                self.peak_queue_length = length
        self._wake()
        return True

    def enqueue_many(self, events: Iterable[Any]) -> list[Any]:
        """Enqueue a batch under one lock and one clock reading; returns the refused events.

        Each event still passes admission on its own, so a threshold refuses
        exactly the events that would not fit, counted by kind.
        """
        admission = self.admission
        refused: list[Any] = []
        if admission:
            admitted = []
            pending = self._pending
            try:
                for event in events:
                    for controller in admission:
                        reason = controller.admit(self, event)
                        if reason is not None:
                            self.count_drop(reason, event)
                            refused.append(event)
                            break
                    else:
                        admitted.append(event)
                        # Later events of this batch see the ones admitted before them.
                        pending.count = len(admitted)
            finally:
                pending.count = 0
        else:
            admitted = list(events)
        if not admitted:
            return refused
        now = self._clock()
        with self._lock:
            self._queue.extend([(now, event) for event in admitted])
            self.counters.enqueued += len(admitted)
            length = len(self._queue)
            if length > self.peak_queue_length:
                self.peak_queue_length = length
        self._wake()
        return refused

    def enqueue_housekeeping(self, event: Any) -> None:
        with self._lock:
            self._housekeeping.append((self._clock(), event))
            self.counters.housekeeping += 1
        self._wake()

    def count_drop(self, reason: str, event: Any) -> None:
        """Record an event refused or discarded on this stage's behalf."""
        kind = event_kind(event)
        with self._lock:
            by_kind = self.drops.setdefault(reason, {})
            by_kind[kind] = by_kind.get(kind, 0) + 1

    def drop_count(self, reason: str | None = None) -> int:
        with self._lock:
            if reason is not None:
                return sum(self.drops.get(reason, {}).values())
            return sum(sum(by_kind.values()) for by_kind in self.drops.values())

    # -- draining --------------------------------------------------------

    def _wake(self) -> None:
        if self.runs_on_loop:
            with self._lock:
                if self._scheduled_on_loop:
                    return
                self._scheduled_on_loop = True
            self._executor.call_soon(self._drain_on_loop)
            return
        with self._lock:
            if self._active >= self._threads or not (self._queue or self._housekeeping):
                return
            self._active += 1
        self._executor.call_in_thread(self._drain_on_worker)

    def _take_batch(self) -> list[tuple[float, Any]]:
        # Housekeeping first: a timer stuck behind ten thousand queries is a
        # timer that fires late, which is how the original leaked memory.
        with self._lock:
            batch: list[tuple[float, Any]] = []
            room = self.batch_size
            if self._housekeeping:
                take = self._housekeeping.popleft
                batch = [take() for _ in range(min(room, len(self._housekeeping)))]
                room -= len(batch)
            if room and self._queue:
                take = self._queue.popleft
                batch += [take() for _ in range(min(room, len(self._queue)))]
            return batch

    def _run_batch(self, batch: Sequence[tuple[float, Any]]) -> None:
        started = self._clock()
        # A bounded sample of each batch's queueing delays: every event of a
        # small batch, eight evenly spaced events of a large one.
        stride = max(1, len(batch) // 8)
        for index in range(0, len(batch), stride):
            self.queue_delay.add(started - batch[index][0])
        events = [event for _, event in batch]
        try:
            self.handler.handle_events(events)
        except Exception as error:  # a handler bug must not kill the stage
            with self._lock:
                self.counters.handler_errors += 1
            if self._on_handler_error is not None:
                self._on_handler_error(self, error, events)
        elapsed = self._clock() - started
        self.service_time.add(elapsed / len(events))
        with self._lock:
            self.counters.processed += len(events)
            self.counters.batches += 1
            self.counters.busy_seconds += elapsed

    def _drain_on_loop(self) -> None:
        # Bounded work per turn so the reactor keeps reading sockets.
        deadline = self._clock() + 0.005
        while True:
            batch = self._take_batch()
            if not batch:
                break
            self._run_batch(batch)
            if self._clock() >= deadline:
                break
        with self._lock:
            self._scheduled_on_loop = False
            more = bool(self._queue or self._housekeeping)
        if more or not self.runs_on_loop:
            self._wake()

    def _drain_on_worker(self) -> None:
        while True:
            with self._lock:
                over_budget = self._active > self._threads
            if over_budget:
                break
            batch = self._take_batch()
            if not batch:
                break
            self._run_batch(batch)
        with self._lock:
            self._active -= 1
            more = bool(self._queue or self._housekeeping)
        if more:
            self._wake()

    @property
    def active_threads(self) -> int:
        with self._lock:
            return self._active

    def drain_now(self) -> None:
        """Process everything queued on the calling thread (tests, shutdown)."""
        while True:
            batch = self._take_batch()
            if not batch:
                return
            self._run_batch(batch)
