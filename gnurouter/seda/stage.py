"""The stage: bounded event queues, a batch handler, counters, and a thread budget.

A stage never knows who feeds it or who drains it.  Upstream stages hold it as
a `Sink` and call `enqueue`, which may refuse (the caller learns it, and the
refusal is counted by reason and event kind), or `enqueue_housekeeping`, which
never refuses: timers and connection lifecycle events take that path because
losing one leaks state (the original router lost its cleanup timer that way).

Events are sorted into classes (by default one, "default"), each with its own
FIFO queue, served in priority order.  Classes named `express` are served on
the event-loop thread even when the stage's handler may block on a thread
pool, so they never wait behind a blocked class (pongs never wait for a
thread held by a 20 ms query).  Conditioning policies plug in at two points:
admission (`admission`, before an event joins a queue) and dequeue
(`dequeue_policies`, when it leaves, which is where sojourn-time policies
such as CoDel act).

Two more hooks keep the classes honest.  `guaranteed` names events that no
admission policy may refuse (control traffic: they are bounded per peer
upstream, as timers are by their count).  `ordering` names events that must
not overtake another (a query hit the query it answers): such an event is
queued behind the one it depends on, in that one's class, instead of
jumping ahead in its own, and is not handed to a second thread while the
one it depends on is still being handled.

Scheduling is delegated to an `Executor` so this module stays free of Twisted:
the runtime in `gnurouter.seda.runtime` supplies one backed by the reactor and
its thread pool.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Generic, Never, Protocol, TypeVar, cast

from gnurouter.seda.stats import LatencyHistogram

DEFAULT_CLASS = "default"
#: Events of each class's run in a batch recorded in the latency histograms
#: (see `Stage._run_batch`).
SAMPLES_PER_RUN = 2
#: Drop reason of events lost to an exception in the stage's handler.
HANDLER_ERROR = "handler-error"

#: The events a stage takes.  A stage is contravariant in them: a stage that
#: takes `PeerJoined | PeerLeft` may serve as a `Sink[PeerJoined]`.
E_contra = TypeVar("E_contra", contravariant=True)
#: The same, where the event type is both taken and handed back.
E = TypeVar("E")
#: The events of one `enqueue_many` call (the refused ones come back as they went in).
T = TypeVar("T")


class EventHandler(Protocol[E]):
    """What a stage runs: Sandstorm's `handleEvents`, nothing more."""

    def handle_events(self, batch: list[E]) -> None: ...


class Executor(Protocol):
    """Where a stage's batches run."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the event-loop thread soon; safe to call from any thread."""

    def call_in_thread(self, fn: Callable[[], None]) -> None:
        """Run `fn` on a worker thread."""


class AdmissionController(Protocol[E]):
    """A conditioning policy consulted before an event joins a stage's queue.

    Returns None to admit, or a short drop reason ("queue-full", ...).
    `active` is read once per enqueued batch: a policy switched off costs
    nothing per event.
    """

    @property
    def active(self) -> bool: ...

    def admit(self, stage: Stage[E], event: E) -> str | None: ...


class DequeuePolicy(Protocol[E]):
    """A conditioning policy consulted as an event leaves its queue.

    Returns None to hand the event to the handler, or a drop reason.
    `governs(event_class)` is asked once per class and batch taken.
    """

    def governs(self, event_class: str) -> bool: ...

    def on_dequeue(
        self, stage: Stage[E], event_class: str, sojourn: float, now: float, event: E
    ) -> str | None: ...


class Ordering(Protocol[E_contra]):
    """Which events must not overtake which, for a stage with priority classes.

    Events of `held_class` (served after others: queries) `provide` a key
    while they are queued or being handled; an event of a class served
    before it that `depends` on a key one of them provides is queued in
    `held_class` behind it instead.  (A queued dependent event provides its
    own key too: a push waits behind the query hit it depends on.)
    """

    @property
    def held_class(self) -> str: ...

    def provides(self, event: E_contra) -> object: ...

    def depends(self, event: E_contra) -> object: ...


class Sink(Protocol[E_contra]):
    """The face a stage shows to the stages that feed it.

    `Sink[X]` takes events of type X; `enqueue_many` hands the refused ones
    back with the type they went in with (a `Sink[MessageArrived | Tick]`
    fed `MessageArrived`s refuses `MessageArrived`s).
    """

    name: str

    def enqueue(self, event: E_contra) -> bool: ...

    def enqueue_many(self: Sink[T], events: Iterable[T]) -> list[T]: ...

    def enqueue_housekeeping(self, event: E_contra) -> None: ...


def report_failure(stage: Stage[E] | None, event: E, error: Exception) -> None:
    """For a handler's per-event ``except``: the stage counts and reports the loss.

    A handler not yet placed in a stage (a unit test's) has nobody to report
    to, so the error propagates as it would without isolation.
    """
    if stage is None:
        raise error
    stage.event_failed(event, error)


def event_kind(event: object) -> str:
    """The label drops and delays are broken down by (message type, or event class)."""
    kind = getattr(event, "kind", None)
    return kind if isinstance(kind, str) else type(event).__name__


@dataclass
class StageCounters:
    enqueued: int = 0
    processed: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    #: Time and events on the thread pool only (what a thread governor sizes).
    worker_busy_seconds: float = 0.0
    worker_events: int = 0
    housekeeping: int = 0
    handler_errors: int = 0
    #: Events admitted without asking admission (`Stage.guaranteed`).
    guaranteed: int = 0
    #: Events queued behind an event they depend on rather than in their own class.
    held_in_order: int = 0


class Batch(Generic[E]):
    """The events of one `handle_events` call, with the run each class contributed.

    A run keeps its (enqueued at, event) pairs so the stage can record
    queueing delay per class after the handler is done.
    """

    __slots__ = ("blocked_on", "events", "held_keys", "runs")

    def __init__(self) -> None:
        self.events: list[E] = []
        #: (class, or None for housekeeping; its (enqueued at, event) pairs)
        self.runs: list[tuple[str | None, list[tuple[float, E]]]] = []
        #: Keys the batch's events provide (`Ordering`): held until it is handled.
        self.held_keys: list[object] = []
        #: The key another thread's batch still holds, that stopped this take short.
        self.blocked_on: object = None

    def take(self, event_class: str | None, queue: deque[tuple[float, E]], room: int) -> int:
        """Move up to `room` events from the front of `queue` into the batch."""
        if room >= len(queue):
            items = list(queue)
            queue.clear()
        else:
            take = queue.popleft
            items = [take() for _ in range(room)]
        if items:
            self.add(event_class, items)
        return len(items)

    def add(self, event_class: str | None, items: list[tuple[float, E]]) -> None:
        self.runs.append((event_class, items))
        self.events += [item[1] for item in items]

    def extend(self, other: Batch[E]) -> None:
        self.runs += other.runs
        self.events += other.events
        self.held_keys += other.held_keys

    def __len__(self) -> int:
        return len(self.events)


class Stage(Sink[E_contra]):
    """One stage of the graph, taking events of type `E_contra` (its handler's).

    `threads` is the number of batches that may run at once.  A stage that is
    not `blocking` and has one thread runs on the event-loop thread; otherwise
    its non-express batches run on the executor's thread pool, so a handler
    that blocks (the router's per-query delay) never stalls socket I/O.
    """

    def __init__(
        self,
        name: str,
        handler: EventHandler[E_contra],
        executor: Executor,
        *,
        threads: int = 1,
        blocking: bool = False,
        batch_size: int = 64,
        max_threads: int = 64,
        classes: Sequence[str] = (DEFAULT_CLASS,),
        classify: Callable[[E_contra], str] | None = None,
        express: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        on_handler_error: Callable[[Stage[E_contra], BaseException, list[E_contra]], None]
        | None = None,
    ) -> None:
        unknown = set(express) - set(classes)
        if unknown:
            raise ValueError(f"stage {name}: express classes {sorted(unknown)} are not classes")
        self.name = name
        self.handler = handler
        self.blocking = blocking
        self.batch_size = batch_size
        self.max_threads = max_threads
        self.classes = tuple(classes)
        self.classify = classify
        self.express = frozenset(express)
        self._threads = threads
        self._executor = executor
        self._clock = clock
        self._on_handler_error = on_handler_error
        self._lock = threading.Lock()
        self._queues: dict[str, deque[tuple[float, E_contra]]] = {c: deque() for c in self.classes}
        self._housekeeping: deque[tuple[float, E_contra]] = deque()
        self._active = 0
        self._pending = threading.local()
        self._scheduled_on_loop = False
        self.admission: list[AdmissionController[E_contra]] = []
        self.dequeue_policies: list[DequeuePolicy[E_contra]] = []
        #: Events no admission controller is asked about: never refused.
        self.guaranteed: Callable[[E_contra], bool] | None = None
        #: Which events must not overtake which (None: classes are independent).
        self.ordering: Ordering[E_contra] | None = None
        # Keys provided by events of the ordering's held class, queued or
        # being handled (count), and those being handled (count).
        self._held: dict[object, int] = {}
        self._held_in_flight: dict[object, int] = {}
        self._settled = threading.Condition(self._lock)
        self.counters = StageCounters()
        self.drops: dict[str, dict[str, int]] = {}
        self.queue_delay = LatencyHistogram()
        self.class_delay = {c: LatencyHistogram() for c in self.classes}
        # Queueing + handling time per class over a short window: what a
        # response-time controller steers by.
        self.class_response = {c: LatencyHistogram(window=2.0) for c in self.classes}
        self.class_taken = dict.fromkeys(self.classes, 0)
        #: Events offered per class, admitted or not: the demand on the stage.
        self.class_offered = dict.fromkeys(self.classes, 0)
        self.service_time = LatencyHistogram()
        self.peak_queue_length = 0
        self.peak_worker_demand = 0
        self.idle_since = clock()

    # -- state -------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        # Includes this thread's `enqueue_many` events admitted but not yet queued.
        queued = len(self._housekeeping) + getattr(self._pending, "count", 0)
        for queue in self._queues.values():
            queued += len(queue)
        return queued

    def class_length(self, event_class: str) -> int:
        pending = getattr(self._pending, "by_class", None)
        return len(self._queues[event_class]) + (pending.get(event_class, 0) if pending else 0)

    def class_lengths(self) -> dict[str, int]:
        return {name: len(queue) for name, queue in self._queues.items()}

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

    @property
    def active_threads(self) -> int:
        with self._lock:
            return self._active

    def class_of(self, event: E_contra) -> str:
        return self.classify(event) if self.classify is not None else DEFAULT_CLASS

    # -- feeding -----------------------------------------------------------

    def enqueue(self, event: E_contra) -> bool:
        return not self.enqueue_many((event,))

    def enqueue_many(self: Stage[T], events: Iterable[T]) -> list[T]:
        """Enqueue a batch under one lock and one clock reading; returns the refused events.

        Each event still passes admission on its own, so a threshold refuses
        exactly the events that would not fit, counted by kind.
        """
        admission = [controller for controller in self.admission if controller.active]
        classify = self.classify
        refused: list[T] = []
        # Admitted events by class, in arrival order within each class.
        admitted: dict[str, list[T]] = {}
        if admission:
            pending = self._pending
            pending.by_class = {}
            guaranteed = self.guaranteed
            try:
                offered = self.class_offered
                count = 0
                for event in events:
                    event_class = classify(event) if classify is not None else DEFAULT_CLASS
                    offered[event_class] += 1
                    if guaranteed is not None and guaranteed(event):
                        reason = None
                        self.counters.guaranteed += 1
                    else:
                        for controller in admission:
                            reason = controller.admit(self, event)
                            if reason is not None:
                                break
                    if reason is not None:
                        self.count_drop(reason, event)
                        refused.append(event)
                    else:
                        admitted.setdefault(event_class, []).append(event)
                        # Later events of this batch see the ones admitted before them.
                        count += 1
                        pending.count = count
                        pending.by_class[event_class] = pending.by_class.get(event_class, 0) + 1
            finally:
                pending.count = 0
                pending.by_class = {}
        elif classify is not None:
            for event in events:
                event_class = classify(event)
                same_class = admitted.get(event_class)
                if same_class is None:
                    admitted[event_class] = [event]
                else:
                    same_class.append(event)
            for event_class, same_class in admitted.items():
                self.class_offered[event_class] += len(same_class)
        else:
            everything = list(events)
            if everything:
                admitted[DEFAULT_CLASS] = everything
                self.class_offered[DEFAULT_CLASS] += len(everything)
        if not admitted:
            return refused
        now = self._clock()
        stamped = repeat(now)
        total = 0
        with self._lock:
            queues = self._queues
            ordering = self.ordering
            if ordering is not None and ordering.held_class in queues:
                total = self._queue_in_order(ordering, admitted, now)
            else:
                for event_class, same_class in admitted.items():
                    queues[event_class].extend(zip(stamped, same_class, strict=False))
                    total += len(same_class)
            self.counters.enqueued += total
            length = sum(len(queue) for queue in queues.values())
            if length > self.peak_queue_length:
                self.peak_queue_length = length
            if self.blocking:
                # Events that want a pool thread right now: what a burst asks of the pool.
                wanting = self._active + sum(
                    len(queue) for name, queue in queues.items() if name not in self.express
                )
                if wanting > self.peak_worker_demand:
                    self.peak_worker_demand = wanting
        self._wake()
        return refused

    def _queue_in_order(
        self, ordering: Ordering[T], admitted: dict[str, list[T]], now: float
    ) -> int:
        """Queue `admitted` (under the lock), dependent events behind what they depend on.

        The held class goes first, so an event depending on one that came
        in the same batch finds it.  Returns the events queued.
        """
        held_class = ordering.held_class
        held = self._held
        provides = ordering.provides
        depends = ordering.depends
        queues = cast(dict[str, deque[tuple[float, T]]], self._queues)
        held_queue = queues[held_class]
        rank = self.classes.index(held_class)
        total = 0
        # Held-class items are (enqueued at, event, key it waits for or None,
        # key it provides): the keys are computed once.
        first = admitted.pop(held_class, None)
        if first is not None:
            for event in first:
                key = provides(event)
                held[key] = held.get(key, 0) + 1
                held_queue.append(cast(tuple[float, T], (now, event, None, key)))
            total += len(first)
        for event_class, same_class in admitted.items():
            total += len(same_class)
            queue = queues[event_class]
            if self.classes.index(event_class) > rank:
                queue.extend(zip(repeat(now), same_class, strict=False))
                continue
            for event in same_class:
                needed = depends(event)
                if needed is not None and needed in held:
                    # Behind what it depends on, remembering what that is, so
                    # no second thread takes it while that one is handled.
                    own = provides(event)
                    held[own] = held.get(own, 0) + 1
                    held_queue.append(cast(tuple[float, T], (now, event, needed, own)))
                    self.counters.held_in_order += 1
                else:
                    queue.append((now, event))
        return total

    def _release_held(self, keys: Iterable[object], *, in_flight: bool = False) -> None:
        """Keys no longer provided (their events handled or dropped); under the lock."""
        counts = (self._held, self._held_in_flight) if in_flight else (self._held,)
        for key in keys:
            for count in counts:
                left = count.get(key, 0) - 1
                if left > 0:
                    count[key] = left
                else:
                    count.pop(key, None)
        if in_flight:
            self._settled.notify_all()

    def take_peak_worker_demand(self) -> int:
        """The most events that wanted a pool thread at once since the last call."""
        with self._lock:
            peak, self.peak_worker_demand = self.peak_worker_demand, 0
            return peak

    def enqueue_housekeeping(self, event: E_contra) -> None:
        with self._lock:
            self._housekeeping.append((self._clock(), event))
            self.counters.housekeeping += 1
        self._wake()

    def evict(
        self,
        event_class: str,
        choose: Callable[[Sequence[tuple[float, object]]], int | None],
        reason: str,
    ) -> object:
        """Remove one queued event of `event_class` (the index `choose` picks), counted as dropped.

        Lets an admission policy shed an already-queued event in favour of
        a newer, more valuable one.  Returns the evicted event, or None.
        (`object`: `choose` and the caller see the queue of any event the
        stage takes, not only the caller's.)
        """
        with self._lock:
            queue = self._queues[event_class]
            index = choose(queue)
            if index is None:
                return None
            item = queue[index]
            event = item[1]
            del queue[index]
            if len(item) == 4:  # a held-class item (see `_queue_in_order`)
                self._release_held((_held_item(item)[3],))
        self.count_drop(reason, event)
        return event

    def count_drop(self, reason: str, event: object) -> None:
        """Record an event refused or discarded on this stage's behalf.

        An event that carries several messages (a `size` attribute) counts
        as that many: drops are reported in messages.
        """
        kind = event_kind(event)
        size = getattr(event, "size", 1)
        with self._lock:
            by_kind = self.drops.setdefault(reason, {})
            by_kind[kind] = by_kind.get(kind, 0) + size

    def event_failed(self, event: E_contra, error: BaseException) -> None:
        """A handler could not handle `event`: it alone is lost, counted and reported.

        Handlers call this from a per-event ``except``, then go on with the
        rest of their batch: one bad event never costs another event.
        """
        self._failed(error, [event])

    def _failed(self, error: BaseException, events: list[E_contra]) -> None:
        with self._lock:
            self.counters.handler_errors += 1
        for event in events:
            self.count_drop(HANDLER_ERROR, event)
        if self._on_handler_error is not None:
            # The reporter must not take the stage down either.
            with contextlib.suppress(Exception):
                self._on_handler_error(self, error, events)
        # Nothing may keep the traceback: its frames hold the events, their
        # peers and their data until a rare full collection.
        error.__traceback__ = None

    def drop_count(self, reason: str | None = None) -> int:
        with self._lock:
            if reason is not None:
                return sum(self.drops.get(reason, {}).values())
            return sum(sum(by_kind.values()) for by_kind in self.drops.values())

    # -- draining ----------------------------------------------------------

    @property
    def _has_express_lane(self) -> bool:
        return not self.runs_on_loop and bool(self.express)

    def _wake(self) -> None:
        with self._lock:
            on_loop = self.runs_on_loop
            express_lane = self._has_express_lane
            if on_loop:
                loop_work = bool(self._housekeeping) or any(self._queues.values())
            else:
                loop_work = express_lane and (
                    bool(self._housekeeping) or any(self._queues[c] for c in self.express)
                )
            schedule_loop = loop_work and not self._scheduled_on_loop
            if schedule_loop:
                self._scheduled_on_loop = True
            spawn_workers = 0
            if not on_loop and self._active < self._threads:
                waiting = sum(
                    len(self._queues[c])
                    for c in self.classes
                    if not express_lane or c not in self.express
                )
                if not express_lane:
                    waiting += len(self._housekeeping)
                # One worker per waiting event, up to the budget: a blocking
                # worker takes one event at a time, so two queries arriving
                # together need two workers or the second waits a whole delay.
                per_worker = 1 if self.blocking else self.batch_size
                wanted = -(-waiting // per_worker)
                spawn_workers = max(0, min(self._threads - self._active, wanted))
                self._active += spawn_workers
        if schedule_loop:
            self._executor.call_soon(self._drain_on_loop)
        for _ in range(spawn_workers):
            self._executor.call_in_thread(self._drain_on_worker)

    def _take_batch(self, *, loop: bool) -> Batch[E_contra]:
        """Up to `batch_size` events, housekeeping first, then classes in priority order.

        With an express lane, the loop takes housekeeping and express classes
        and workers take the rest; otherwise one drainer takes everything.
        """
        now = self._clock()
        dropped: list[tuple[str, E_contra]] = []
        batch: Batch[E_contra] = Batch()
        with self._lock:
            express_lane = self._has_express_lane
            # A worker of a blocking stage takes one event at a time: events
            # waiting inside a worker's batch would be invisible to the queue
            # length, to sojourn-time policies and to the other threads.
            room = 1 if self.blocking and not loop else self.batch_size
            if self._housekeeping and (loop or not express_lane):
                room -= batch.take(None, self._housekeeping, room)
            ordering = self.ordering
            for event_class in self.classes:
                if not room:
                    break
                if express_lane and (event_class in self.express) != loop:
                    continue
                queue = self._queues[event_class]
                if not queue:
                    continue
                policies = self._policies(event_class)
                held = ordering is not None and event_class == ordering.held_class
                if not policies and not held:
                    taken = batch.take(event_class, queue, room)
                    room -= taken
                    self.class_taken[event_class] += taken
                    continue
                if held and not policies and self.runs_on_loop:
                    # One drainer, batches one after the other: nothing another
                    # thread handles can be waited for, so the keys go at once.
                    start = len(batch.runs)
                    taken = batch.take(event_class, queue, room)
                    room -= taken
                    self.class_taken[event_class] += taken
                    if taken:
                        self._release_held(_held_item(item)[3] for item in batch.runs[start][1])
                    continue
                kept: list[tuple[float, E_contra]] = []
                flying = self._held_in_flight
                here: dict[object, int] = {}
                while room and queue:
                    item = queue[0]
                    own_class = event_class
                    if held:
                        needed = _held_item(item)[2]
                        if needed is not None:
                            # A dependent event: not while another thread still
                            # handles what it depends on (this batch's own come
                            # first); and it keeps its own class's policies.
                            if flying.get(needed, 0) > here.get(needed, 0):
                                batch.blocked_on = needed
                                break
                            own_class = self.class_of(item[1])
                    queue.popleft()
                    reason = None
                    for policy in (
                        policies if own_class == event_class else self._policies(own_class)
                    ):
                        reason = policy.on_dequeue(self, own_class, now - item[0], now, item[1])
                        if reason is not None:
                            break
                    if reason is not None:
                        dropped.append((reason, item[1]))
                        if held:
                            self._release_held((_held_item(item)[3],))
                        continue
                    kept.append(item)
                    room -= 1
                    if held:
                        key = _held_item(item)[3]
                        flying[key] = flying.get(key, 0) + 1
                        here[key] = here.get(key, 0) + 1
                        batch.held_keys.append(key)
                if kept:
                    batch.add(event_class, kept)
                    self.class_taken[event_class] += len(kept)
        for reason, event in dropped:
            self.count_drop(reason, event)
        return batch

    def _run_batch(self, batch: Batch[E_contra], *, on_worker: bool = False) -> None:
        started = self._clock()
        events = batch.events
        size = len(events)
        # A few events of each class's run stand for all of it in the latency
        # histograms, weighted by the run's length: recording a value costs
        # about as much as routing a message.
        classify = self.classify
        delays: list[tuple[str | None, list[float], list[int]]] = []
        for event_class, items in batch.runs:
            if event_class is None and classify is not None:
                # Housekeeping: recorded under the class its first event belongs to.
                event_class = classify(items[0][1])
            stride = max(1, len(items) // SAMPLES_PER_RUN)
            sampled = items[::stride]
            # Each sample stands for the events up to the next one.
            weights = [stride] * len(sampled)
            weights[-1] = len(items) - stride * (len(sampled) - 1)
            delays.append((event_class, [started - item[0] for item in sampled], weights))
        try:
            self.handler.handle_events(events)
        except Exception as error:
            # The safety net: handlers isolate each event (`event_failed`), so
            # an error here escaped that and the stage cannot tell which events
            # were handled.  The stage lives on; the batch is counted as failed.
            self._failed(error, events)
        finished = self._clock()
        elapsed = finished - started
        self.service_time.add(elapsed / size, size)
        for event_class, samples, weights in delays:
            self.queue_delay.add_many(samples, weights)
            if event_class is None or classify is None:
                continue
            self.class_delay[event_class].add_many(samples, weights)
            # Queueing delay + the batch's service time = finished - enqueued.
            self.class_response[event_class].add_many([d + elapsed for d in samples], weights)
        with self._lock:
            if batch.held_keys:
                self._release_held(batch.held_keys, in_flight=True)
            self.counters.processed += size
            self.counters.batches += 1
            self.counters.busy_seconds += elapsed
            if on_worker:
                self.counters.worker_busy_seconds += elapsed
                self.counters.worker_events += size
            self.idle_since = finished

    def _drain_on_loop(self) -> None:
        # Bounded work per turn so the reactor keeps reading sockets.
        deadline = self._clock() + 0.005
        while True:
            batch = self._take_batch(loop=True)
            if not batch:
                break
            self._run_batch(batch)
            if self._clock() >= deadline:
                break
        with self._lock:
            self._scheduled_on_loop = False
        self._wake()

    def _drain_on_worker(self) -> None:
        while True:
            with self._lock:
                over_budget = self._active > self._threads
            if over_budget:
                break
            batch = self._take_batch(loop=False)
            if not batch:
                if batch.blocked_on is not None and self._await_settled(batch.blocked_on):
                    continue
                break
            self._run_batch(batch, on_worker=True)
        with self._lock:
            self._active -= 1
        self._wake()

    def _policies(self, event_class: str) -> list[DequeuePolicy[E_contra]]:
        return [p for p in self.dequeue_policies if p.governs(event_class)]

    def _await_settled(self, key: object, timeout: float = 1.0) -> bool:
        """Wait (bounded) until no other thread handles an event providing `key`.

        True when it is settled: the queue's head may be taken now.
        """
        with self._lock:
            return self._settled.wait_for(lambda: key not in self._held_in_flight, timeout)

    def drain_now(self) -> None:
        """Process everything queued on the calling thread (tests, shutdown)."""
        while True:
            batch = self._take_batch(loop=True)
            batch.extend(self._take_batch(loop=False))
            if not batch:
                return
            self._run_batch(batch)


def _held_item(item: tuple[float, object]) -> tuple[float, object, object, object]:
    """A queued item of the ordering's held class: (enqueued at, event, waits for, provides)."""
    return cast(tuple[float, object, object, object], item)


#: A stage of whatever events, for code that reads its state and tunes it but
#: never hands it an event (controllers, metrics): as stages are contravariant
#: in their events, every `Stage[X]` is a `SomeStage`.
SomeStage = Stage[Never]
