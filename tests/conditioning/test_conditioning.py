"""Load conditioning on a real router overloaded over loopback.

Every scenario runs the router with the SEDA experiment's bottleneck (each
query blocks the router stage for 20 ms, so one thread serves 50 queries/s)
and offers it six times that: bursts of 6 queries and 14 pushes every 20 ms
(1000 messages/s, 30% queries) for two seconds.  Pushes stand for the
non-query traffic: they are routed to a second servent, which timestamps
their arrival, so their latency is measured end to end.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from gnurouter.edge.gctuning import collector_paused
from gnurouter.edge.service import RouterService
from gnurouter.protocol.messages import Message, MessageType, Push, new_guid
from tests.fixtures import DecisionWatch, delivered, join, queries, query, query_hit

QUERY_DELAY = 0.020
BURST_EVERY = 0.020
QUERIES_PER_BURST = 6
PUSHES_PER_BURST = 14
LOAD_SECONDS = 2.0
SERVENT_ID = bytes(range(16, 32))
#: Queries offered minus what one thread can serve, over the run.
UNCONDITIONED_GROWTH = LOAD_SECONDS / BURST_EVERY * QUERIES_PER_BURST - LOAD_SECONDS / QUERY_DELAY


@dataclass
class OverloadResult:
    push_latencies: list[float] = field(default_factory=list)
    pushes_sent: int = 0
    queue_samples: list[int] = field(default_factory=list)
    query_queue_samples: list[int] = field(default_factory=list)
    thread_samples: list[int] = field(default_factory=list)

    @property
    def peak_queue(self) -> int:
        return max(self.queue_samples)

    @property
    def peak_query_queue(self) -> int:
        return max(self.query_queue_samples)

    def push_percentile(self, fraction: float) -> float:
        ordered = sorted(self.push_latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def overload(router: RouterService) -> OverloadResult:
    result = OverloadResult()
    sent_at: dict[bytes, float] = {}

    def arrived(message: Message) -> None:
        if message.type == MessageType.PUSH and message.guid in sent_at:
            result.push_latencies.append(time.monotonic() - sent_at.pop(message.guid))

    watch = DecisionWatch(router)
    sender = await join(router)
    receiver = await join(router, on_message=arrived)
    # Teach the router where SERVENT_ID lives: a query from the sender, a hit from the receiver.
    first = query("route me")
    sender.send(first)
    await delivered(receiver, first)
    receiver.send(query_hit(first.guid, SERVENT_ID, ttl=3, ip="10.0.0.2"))
    await watch.wait_until(
        lambda: any(e.message.type == MessageType.QUERY_HIT for e, _ in watch.seen)
    )
    stage = router.stages["router"]

    def burst() -> None:
        messages = queries(QUERIES_PER_BURST, "load")
        now = time.monotonic()
        for _ in range(PUSHES_PER_BURST):
            push = Message.from_body(new_guid(), 3, 0, Push(SERVENT_ID, 1, "10.0.0.1", 6346))
            sent_at[push.guid] = now
            messages.append(push)
        result.pushes_sent += PUSHES_PER_BURST
        sender.send(*messages)

    def sample() -> None:
        # Measurement, not synchronisation: the queue as an operator would see it.
        result.queue_samples.append(stage.queue_length)
        result.query_queue_samples.append(stage.class_length("query") + stage.class_length("fifo"))
        result.thread_samples.append(stage.threads)

    # Late in the suite a full collection walks hundreds of thousands of test
    # objects and stalls the reactor for 100-250 ms: the interpreter, not the
    # policy under test (`gnurouter run` freezes its start-up heap likewise).
    with collector_paused():
        sampler = task.LoopingCall(sample)
        sampler.start(0.05)
        load = task.LoopingCall(burst)
        load.start(BURST_EVERY)
        await task.deferLater(reactor, LOAD_SECONDS, lambda: None)  # the load's duration itself
        load.stop()
        sampler.stop()
    return result


def start(start_router: Any, conditioning: str, **extra: Any) -> RouterService:
    return start_router(
        query_delay=QUERY_DELAY,
        conditioning=conditioning,
        stage_thresholds={"router": 60},
        query_max_queued=20,
        governor_interval=0.25,
        governor_add_threshold=20,
        codel_interval=0.05,
        **extra,
    )


def express_latency_ok(result: OverloadResult) -> None:
    assert result.push_latencies, "no push got through"
    assert result.push_percentile(0.99) < 0.25, result.push_percentile(0.99)


@pytest_twisted.ensureDeferred
async def test_without_conditioning_the_queue_grows_and_pushes_wait_behind_queries(
    start_router: Any,
) -> None:
    router = start(start_router, "none")
    result = await overload(router)
    assert result.peak_queue >= 0.6 * UNCONDITIONED_GROWTH
    assert router.stages["router"].drop_count() == 0
    # FIFO behind 20 ms queries: the median push waits for hundreds of them.
    assert statistics.median(result.push_latencies) > 0.5


@pytest_twisted.ensureDeferred
async def test_threshold_alone_bounds_the_queue(start_router: Any) -> None:
    router = start(start_router, "threshold")
    result = await overload(router)
    stage = router.stages["router"]
    assert result.peak_queue <= 60
    assert stage.drop_count("queue-full") > 0
    # Still FIFO: pushes wait, but only behind at most 60 events.
    assert result.push_latencies
    assert result.push_percentile(0.5) < 60 * QUERY_DELAY * 1.5


@pytest_twisted.ensureDeferred
async def test_query_filter_alone_sheds_queries_and_nothing_else(start_router: Any) -> None:
    router = start(start_router, "query-filter")
    result = await overload(router)
    stage = router.stages["router"]
    assert result.peak_query_queue <= 20
    assert stage.drops["query-shed"].keys() == {"query"}
    assert set(stage.drops) == {"query-shed"}
    express_latency_ok(result)


@pytest_twisted.ensureDeferred
async def test_codel_alone_bounds_query_sojourn_and_spares_other_traffic(
    start_router: Any,
) -> None:
    router = start(start_router, "codel")
    result = await overload(router)
    stage = router.stages["router"]
    assert stage.drops["codel"].keys() == {"query"}
    assert result.peak_query_queue < 0.6 * UNCONDITIONED_GROWTH
    express_latency_ok(result)


@pytest_twisted.ensureDeferred
async def test_response_time_control_alone_throttles_query_admission(start_router: Any) -> None:
    router = start(start_router, "response-time")
    router.conditioning.response_time.interval = 0.25
    result = await overload(router)
    stage = router.stages["router"]
    assert stage.drops["query-rate"].keys() == {"query"}
    assert router.conditioning.query_filter.steered_rate is not None
    assert router.conditioning.query_filter.steered_rate < 1 / QUERY_DELAY
    express_latency_ok(result)


@pytest_twisted.ensureDeferred
async def test_governor_adds_threads_under_load_and_retires_them_after(
    start_router: Any,
) -> None:
    router = start(start_router, "governor")
    governor = router.conditioning.governor
    governor.retire_after = 0.5
    result = await overload(router)
    # Little's law on the offered queries: 300/s x 20 ms = 6 busy threads.
    # The governor measures that demand and sizes the pool for it at once
    # (then adds more while the backlog from its first interval drains).
    offered_busy = QUERIES_PER_BURST / BURST_EVERY * QUERY_DELAY
    under_load = [entry[3] for entry in governor.history if entry[2] > 0]
    assert abs(statistics.median(under_load) - offered_busy) < 0.35 * offered_busy
    assert max(result.thread_samples) >= offered_busy
    assert governor.added >= 1
    # Starting from one thread it lags behind, but as threads are added the
    # queue grows ever more slowly: the last quarter of the run adds far
    # less than the first.
    quarter = len(result.queue_samples) // 4
    first = result.queue_samples[quarter] - result.queue_samples[0]
    last = result.queue_samples[-1] - result.queue_samples[-1 - quarter]
    assert last < 0.4 * first, result.queue_samples
    # Load is over: the governor gives the threads back, one per interval.
    retired: defer.Deferred[None] = defer.Deferred()

    def on_change(threads: int) -> None:
        if threads == governor.min_threads and not retired.called:
            retired.callback(None)

    governor.listeners.append(on_change)
    if router.stages["router"].threads == governor.min_threads:
        retired.callback(None)
    retired.addTimeout(30, reactor)
    await retired
    assert governor.retired >= 3


@pytest_twisted.ensureDeferred
async def test_default_conditioning_keeps_non_query_traffic_fast(start_router: Any) -> None:
    router = start(start_router, "default")
    result = await overload(router)
    stage = router.stages["router"]
    assert result.peak_query_queue <= 20
    assert not any(kind != "query" for kinds in stage.drops.values() for kind in kinds)
    assert result.pushes_sent - len(result.push_latencies) < PUSHES_PER_BURST * 3
    express_latency_ok(result)


@pytest_twisted.ensureDeferred
async def test_route_cleanup_timer_runs_while_the_queue_is_full(start_router: Any) -> None:
    # The original thresholded its queue, lost its cleanup timer and leaked:
    # here the timer takes the housekeeping path, which nothing can refuse.
    router = start(start_router, "threshold", route_ttl=1.0, route_cleanup_interval=0.2)
    result = await overload(router)
    stage = router.stages["router"]
    assert result.peak_queue >= 55 and stage.drop_count("queue-full") > 0
    assert router.routing.seen.expired > 0
    assert stage.counters.housekeeping >= LOAD_SECONDS / 0.2 - 1
