"""The router stage: its artificial query delay blocks a worker thread, never the reactor."""

from __future__ import annotations

import threading
from typing import Any

import pytest_twisted

from gnurouter.protocol.messages import MessageType
from gnurouter.stages.router import RouterHandler
from tests.fixtures import DecisionWatch, delivered, join, queries


@pytest_twisted.ensureDeferred
async def test_query_delay_blocks_a_worker_thread_not_the_reactor(start_router: Any) -> None:
    router = start_router(query_delay=0.05, conditioning="none")  # nothing may be shed
    handler = router.stages["router"].handler
    assert isinstance(handler, RouterHandler)
    routing_threads: set[int] = set()
    handler.observers.append(lambda event, decision: routing_threads.add(threading.get_ident()))
    watch = DecisionWatch(router)
    sender = await join(router)
    receiver = await join(router)
    batch = queries(6, "slow")
    sender.send(*batch)
    await watch.wait_until(lambda: len(watch.seen) == 6)
    await delivered(receiver, batch[-1])
    stage = router.stages["router"]
    assert stage.blocking
    assert threading.get_ident() not in routing_threads
    # Each query held its thread for the delay: busy time covers all six.
    assert stage.counters.busy_seconds >= 6 * 0.05
    assert all(m.type == MessageType.QUERY for m in receiver.received[-6:])
