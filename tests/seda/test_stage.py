"""The stage contract: bounded queues that say when they refuse; housekeeping never lost;
one failing event costs only itself."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from gnurouter.conditioning.thresholds import QueueThreshold
from gnurouter.seda.runtime import ReactorExecutor
from gnurouter.seda.stage import HANDLER_ERROR, Stage, report_failure
from gnurouter.stages.events import Tick
from tests.fixtures import ImmediateExecutor, ManualExecutor


@dataclass
class Item:
    kind: str = "item"
    value: int = 0
    peer: Any = None


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def handle_events(self, batch: list[Any]) -> None:
        self.batches.append(list(batch))

    @property
    def events(self) -> list[Any]:
        return [event for batch in self.batches for event in batch]


def test_threshold_refuses_and_counts_by_reason_and_kind() -> None:
    executor = ManualExecutor()
    recorder = Recorder()
    stage = Stage("router", recorder, executor)
    stage.admission.append(QueueThreshold(3))
    results = [stage.enqueue(Item("query", i)) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert stage.drops == {"queue-full": {"query": 2}}
    executor.run()
    assert [event.value for event in recorder.events] == [0, 1, 2]
    assert stage.counters.processed == 3


def test_timer_is_never_dropped_by_a_full_queue() -> None:
    # The original router lost its route-cleanup timer exactly here.
    executor = ManualExecutor()
    recorder = Recorder()
    stage = Stage("router", recorder, executor, batch_size=10)
    stage.admission.append(QueueThreshold(5))
    for i in range(50):
        stage.enqueue(Item("query", i))
    assert stage.queue_length == 5
    stage.enqueue_housekeeping(Tick("routes"))
    assert stage.queue_length == 6
    executor.run()
    ticks = [event for event in recorder.events if isinstance(event, Tick)]
    assert ticks == [Tick("routes")]
    # ...and it went ahead of the backlog.
    assert isinstance(recorder.batches[0][0], Tick)


def test_batches_are_bounded_by_batch_size() -> None:
    executor = ManualExecutor()
    recorder = Recorder()
    stage = Stage("parser", recorder, executor, batch_size=4)
    for i in range(10):
        stage.enqueue(Item("bytes", i))
    executor.run()
    assert [len(batch) for batch in recorder.batches] == [4, 4, 2]
    assert stage.queue_delay.count == 10


@dataclass
class Bundle:
    """An event standing for several messages, as the connection stage's runs do."""

    kind: str
    size: int


def test_a_refused_event_counts_every_message_it_carries() -> None:
    stage = Stage("connection", Recorder(), ManualExecutor())
    stage.admission.append(QueueThreshold(1))
    assert stage.enqueue(Bundle("query", 5))
    assert not stage.enqueue(Bundle("query", 7))
    assert stage.drops == {"queue-full": {"query": 7}}


def test_latency_histograms_count_every_event_of_sampled_batches() -> None:
    # Uneven class runs and batch sizes: the samples' weights must still add
    # up to the events, per class and in all.
    executor = ManualExecutor()
    stage = Stage(
        "router",
        Recorder(),
        executor,
        batch_size=50,
        classes=("first", "second"),
        # Housekeeping (the tick) is classified like any other event.
        classify=lambda event: event.kind if isinstance(event, Item) else "second",
    )
    stage.enqueue_many(
        [Item("first", i) for i in range(37)] + [Item("second", i) for i in range(61)]
    )
    stage.enqueue_housekeeping(Tick("routes"))
    executor.run()
    assert stage.counters.processed == 99
    assert stage.queue_delay.count == 99
    assert stage.service_time.count == 99
    for name, events in (("first", 37), ("second", 62)):
        assert stage.class_delay[name].count == events
        assert stage.class_response[name].count == events


def test_handler_error_is_counted_and_the_stage_goes_on() -> None:
    executor = ManualExecutor()
    failures: list[BaseException] = []

    class Flaky:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def handle_events(self, batch: list[Any]) -> None:
            self.seen.extend(item.value for item in batch)
            if any(item.value == 1 for item in batch):
                raise RuntimeError("boom")

    handler = Flaky()
    stage = Stage(
        "router",
        handler,
        executor,
        batch_size=1,
        on_handler_error=lambda s, e, b: failures.append(e),
    )
    for i in range(3):
        stage.enqueue(Item("query", i))
    executor.run()
    assert handler.seen == [0, 1, 2]
    assert stage.counters.handler_errors == 1 and len(failures) == 1


def test_thread_count_is_validated() -> None:
    stage = Stage("router", Recorder(), ManualExecutor(), max_threads=8)
    with pytest.raises(ValueError, match="between 1 and 8"):
        stage.threads = 9
    assert stage.threads == 1


@pytest_twisted.ensureDeferred
async def test_blocking_stage_runs_batches_on_several_threads_at_once() -> None:
    executor = ReactorExecutor(reactor)
    executor.start()
    inside = threading.Semaphore(0)
    release = threading.Event()
    thread_ids: set[int] = set()
    handled: list[int] = []
    all_handled: defer.Deferred[None] = defer.Deferred()

    class Blocking:
        def handle_events(self, batch: list[Any]) -> None:
            thread_ids.add(threading.get_ident())
            inside.release()
            release.wait(10)
            handled.extend(item.value for item in batch)
            if len(handled) == 6:
                reactor.callFromThread(all_handled.callback, None)

    stage = Stage("router", Blocking(), executor, threads=3, blocking=True, batch_size=1)
    try:
        for i in range(6):
            stage.enqueue(Item("query", i))

        def three_inside() -> bool:
            return all(inside.acquire(timeout=10) for _ in range(3))

        # Three handlers are blocked at the same time: the pool really runs 3 batches at once.
        assert await threads.deferToThread(three_inside)
        assert stage.active_threads == 3 and len(thread_ids) == 3
        assert threading.get_ident() not in thread_ids  # never on the reactor thread
        release.set()
        all_handled.addTimeout(10, reactor)
        await all_handled
        assert sorted(handled) == list(range(6))
        assert stage.queue_length == 0
    finally:
        release.set()
        executor.stop()


# -- failure isolation ---------------------------------------------------------------


class FailsOnOdd:
    """A handler with per-event isolation that raises for odd values."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.stage: Stage | None = None

    def handle_events(self, batch: list[Any]) -> None:
        for event in batch:
            try:
                if event.value % 2:
                    raise RuntimeError(f"odd {event.value}")
                self.handled.append(event.value)
            except Exception as error:
                report_failure(self.stage, event, error)


def test_a_failing_event_costs_only_itself() -> None:
    handler = FailsOnOdd()
    reported: list[tuple[str, list[Any]]] = []
    stage = Stage(
        "parser",
        handler,
        ImmediateExecutor(),
        on_handler_error=lambda s, error, events: reported.append((str(error), events)),
    )
    handler.stage = stage
    stage.drain_now()
    events = [Item(value=value) for value in range(6)]
    stage.enqueue_many(events)
    stage.drain_now()
    assert handler.handled == [0, 2, 4]
    assert stage.counters.handler_errors == 3
    assert stage.drops[HANDLER_ERROR] == {"item": 3}
    assert [(text, [e.value for e in failed]) for text, failed in reported] == [
        ("odd 1", [1]),
        ("odd 3", [3]),
        ("odd 5", [5]),
    ]


def test_an_error_escaping_the_handler_is_caught_and_the_stage_goes_on() -> None:
    class Broken:
        calls = 0

        def handle_events(self, batch: list[Any]) -> None:
            Broken.calls += 1
            if Broken.calls == 1:
                raise ValueError("bug outside any per-event try")

    errors: list[BaseException] = []
    stage = Stage(
        "router", Broken(), ImmediateExecutor(), on_handler_error=lambda s, e, ev: errors.append(e)
    )
    stage.enqueue_many([Item(value=1), Item(value=2)])
    stage.drain_now()
    stage.enqueue(Item(value=3))
    stage.drain_now()
    assert Broken.calls == 2
    assert stage.counters.handler_errors == 1
    assert stage.drop_count(HANDLER_ERROR) == 2
    # The traceback is gone: its frames would keep the batch's peers alive.
    assert errors[0].__traceback__ is None


def test_a_handler_outside_a_stage_sees_its_errors() -> None:
    handler = FailsOnOdd()
    try:
        handler.handle_events([Item(value=1)])
    except RuntimeError as error:
        assert "odd 1" in str(error)
    else:
        raise AssertionError("the error was swallowed without a stage to report to")


# -- what no threshold refuses, and what may not overtake what ---------------------------------


@dataclass
class Keyed:
    """An event of class `kind` that provides `key` and may depend on `needs`."""

    kind: str
    key: str = ""
    needs: str | None = None


class KeyOrdering:
    """Events of the "slow" class hold their keys; others may depend on them."""

    held_class = "slow"

    def provides(self, event: Keyed) -> object:
        return event.key

    def depends(self, event: Keyed) -> object:
        return event.needs


def two_class_stage(handler: Any, executor: Any, **options: Any) -> Stage[Any]:
    stage: Stage[Any] = Stage(
        "router",
        handler,
        executor,
        classes=("fast", "slow"),
        classify=lambda event: event.kind,
        **options,
    )
    stage.ordering = KeyOrdering()
    return stage


def test_guaranteed_events_are_never_refused_by_a_full_queue() -> None:
    executor = ManualExecutor()
    recorder = Recorder()
    stage = Stage("router", recorder, executor, batch_size=100)
    stage.admission.append(QueueThreshold(2))
    stage.guaranteed = lambda event: event.kind == "control"
    offered = [Item("query", 0), Item("query", 1), Item("query", 2)]
    offered += [Item("control", 3), Item("control", 4), Item("control", 5)]
    refused = stage.enqueue_many(offered)
    assert [event.value for event in refused] == [2]
    assert stage.drops == {"queue-full": {"query": 1}}
    assert stage.counters.guaranteed == 3
    executor.run()
    assert [event.value for event in recorder.events] == [0, 1, 3, 4, 5]


def test_a_dependent_event_waits_behind_what_it_depends_on() -> None:
    executor = ManualExecutor()
    recorder = Recorder()
    stage = two_class_stage(recorder, executor, batch_size=100)
    query_a, query_b = Keyed("slow", key="a"), Keyed("slow", key="b")
    hit_a = Keyed("fast", key="hit-a", needs="a")
    push = Keyed("fast", needs="hit-a")  # depends on the held hit in turn
    independent = Keyed("fast", needs="nothing-queued")
    plain = Keyed("fast")
    stage.enqueue_many([query_a, query_b, hit_a, independent, push, plain])
    executor.run()
    # Without the rule, the fast class would all go first: hit_a ahead of query_a.
    assert recorder.events == [independent, plain, query_a, query_b, hit_a, push]
    assert stage.counters.held_in_order == 2
    # Everything handled holds nothing any more: the next dependent is not held back.
    late = Keyed("fast", needs="a")
    stage.enqueue_many([Keyed("slow", key="c"), late])
    executor.run()
    assert recorder.events[-2] is late
    assert stage.counters.held_in_order == 2


def test_an_evicted_event_holds_nothing_back() -> None:
    executor = ManualExecutor()
    recorder = Recorder()
    stage = two_class_stage(recorder, executor)
    query = Keyed("slow", key="a")
    stage.enqueue(query)
    assert stage.evict("slow", lambda queue: 0, "shed") is query
    hit = Keyed("fast", needs="a")
    stage.enqueue_many([Keyed("slow", key="b"), hit])
    executor.run()
    assert recorder.events[0] is hit
    assert stage.counters.held_in_order == 0


@pytest_twisted.ensureDeferred
async def test_a_dependent_event_is_not_handled_while_its_dependency_is_in_flight() -> None:
    # Two threads: the one handling the query must finish before the other
    # may take the hit that depends on it, though the hit's class comes first.
    executor = ReactorExecutor(reactor)
    executor.start()
    query_inside = threading.Event()
    hit_handled = threading.Event()
    overtaken: list[bool] = []
    order: list[Keyed] = []
    done: defer.Deferred[None] = defer.Deferred()

    class Handler:
        def handle_events(self, batch: list[Any]) -> None:
            for event in batch:
                if event.kind == "slow":
                    query_inside.set()
                    # A bounded look for what must not happen meanwhile.
                    overtaken.append(hit_handled.wait(0.5))
                else:
                    hit_handled.set()
                order.append(event)
                if len(order) == 2:
                    reactor.callFromThread(done.callback, None)

    stage = two_class_stage(Handler(), executor, threads=2, blocking=True, batch_size=1)
    try:
        query, hit = Keyed("slow", key="a"), Keyed("fast", needs="a")
        stage.enqueue(query)
        assert await threads.deferToThread(query_inside.wait, 10)
        stage.enqueue(hit)
        done.addTimeout(10, reactor)
        await done
        assert overtaken == [False]
        assert order == [query, hit]
        assert stage.counters.held_in_order == 1
    finally:
        executor.stop()
