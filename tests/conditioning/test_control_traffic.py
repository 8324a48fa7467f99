"""Control traffic is never lost to a full queue, yet a peer cannot abuse that; replies keep
their place behind what they answer.  Real routers and leaves on loopback.

benchmarks/leaves.py runs the same 2,000-leaf burst in a router process of its own and
measures it (handshakes/s, burst time, memory per leaf, the merged table).
"""

from __future__ import annotations

import resource
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor

from gnurouter.conditioning.policies import DEFAULT_THRESHOLDS
from gnurouter.edge.servent import LEAF_HEADERS, ServentProtocol, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.protocol.messages import Bye, MessageType
from gnurouter.protocol.qrp import DEFAULT_QRP_LIMITS, QRP_BYE_CODE
from tests.fixtures import (
    DecisionWatch,
    delivered,
    join,
    qrp_messages,
    queries,
    query,
    query_hit,
    require,
)
from tests.fixtures import until as wait_until

#: Handshakes the test leaves have in flight at once.
IN_FLIGHT = 32


def leaf_address(index: int) -> str:
    """Leaf `index`'s own loopback address (the per-address handshake limit stays out of it)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


async def connect_leaves(router: RouterService, count: int) -> list[ServentProtocol]:
    host, port = router.listening_address()
    window = defer.DeferredSemaphore(IN_FLIGHT)

    def one(index: int) -> defer.Deferred[ServentProtocol]:
        return defer.ensureDeferred(
            connect_servent(
                reactor,
                host,
                port,
                source=leaf_address(index),
                headers=LEAF_HEADERS,
                keep_inbox=False,
            )
        )

    leaves: list[ServentProtocol] = await defer.gatherResults(
        [window.run(one, index) for index in range(count)], consumeErrors=True
    )
    return leaves


def tables_installed(router: RouterService) -> int:
    infos = [router.routing.peer_info(peer.id) for peer in router.peers.established()]
    return sum(1 for info in infos if info is not None and info.table is not None)


def leaf_router(start_router: Any, leaves: int, threshold: int | None = None) -> RouterService:
    thresholds = {} if threshold is None else {"stage_thresholds": {"router": threshold}}
    router: RouterService = start_router(
        max_leaves=leaves + 1, max_peers=leaves + 8, deflate=False, **thresholds
    )
    return router


def enough_file_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    require(resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, f"{needed} file descriptors")


@pytest_twisted.ensureDeferred
async def test_every_table_of_a_burst_of_2000_leaves_is_installed(start_router: Any) -> None:
    # 2,000 leaves send RESET + PATCHes at the same moment: over 4,000 QRP
    # messages against the router stage's default threshold (1,000).  Before,
    # about 40% were refused as queue-full, with no Bye and no error, and
    # those leaves had no table.  (~20 s: both ends of every link are here.)
    count = 2000
    enough_file_descriptors(2 * count + 200)
    router = leaf_router(start_router, count)
    threshold = DEFAULT_THRESHOLDS["router"]
    assert threshold is not None
    leaves = await connect_leaves(router, count)
    tables = [qrp_messages([f"file{index}", "shared", f"word{index}x"]) for index in range(count)]
    for leaf, messages in zip(leaves, tables, strict=True):
        leaf.send(*messages)
    await wait_until(lambda: tables_installed(router) == count, timeout=60)
    stage = router.stages["router"]
    assert stage.peak_queue_length > threshold  # the burst did overflow the threshold
    assert stage.drop_count() == 0
    assert stage.counters.guaranteed >= sum(len(messages) for messages in tables)
    for leaf in leaves:
        leaf.close()


@pytest_twisted.ensureDeferred
async def test_a_leaf_rebuilding_its_table_over_and_over_is_cut_off_during_a_burst(
    start_router: Any,
) -> None:
    # Its QRP messages are never refused by the full queue either, so the
    # QRP limits see every one of them: past the RESET allowance it gets Bye 413.
    count, threshold = 100, 20
    router = leaf_router(start_router, count, threshold)
    leaves = await connect_leaves(router, count)
    hostile = await connect_servent(
        reactor, *router.listening_address(), source="127.2.0.1", headers=LEAF_HEADERS
    )
    rebuilds = DEFAULT_QRP_LIMITS.reset_burst + 2
    for leaf in leaves:
        leaf.send(*qrp_messages(["honest", "table"]))
    for number in range(rebuilds):
        hostile.send(*qrp_messages([f"again{number}"]))
    closed = hostile.closed
    closed.addTimeout(20, reactor)
    await closed
    byes = [m.body() for m in hostile.received if m.type == MessageType.BYE]
    assert [bye.code for bye in byes if isinstance(bye, Bye)] == [QRP_BYE_CODE]
    assert router.routing.cutoffs.get("qrp-reset-rate") == 1
    await wait_until(lambda: tables_installed(router) == count, timeout=30)
    assert router.stages["router"].drop_count("queue-full") == 0
    for leaf in leaves:
        leaf.close()


@pytest_twisted.ensureDeferred
async def test_a_hit_never_overtakes_its_query_in_the_router_stage(start_router: Any) -> None:
    # Each query blocks the router stage for 20 ms, so the query waits behind
    # others while a hit for it (come by another path) arrives: the reply
    # class is served first, and without the ordering rule the hit would
    # find no route and be dropped.
    router = start_router(query_delay=0.020, deflate=False)
    watch = DecisionWatch(router)
    asker, answerer = await join(router), await join(router)
    stage = router.stages["router"]
    ahead = queries(8, "ahead", ttl=3)
    asked = query("the one", ttl=3)
    before = stage.counters.enqueued
    asker.send(*ahead, asked)
    await wait_until(lambda: stage.counters.enqueued >= before + len(ahead) + 1)
    hit = query_hit(asked.guid)
    answerer.send(hit)
    arrived = await delivered(asker, hit)
    assert arrived.type == MessageType.QUERY_HIT
    await watch.wait_until(lambda: any(d.action == "routed" for _, d in watch.for_guid(hit.guid)))
    assert stage.counters.held_in_order >= 1
