"""Each attack on a real router over loopback: the attacker gets a Bye and is closed,
an honest pair keeps exchanging queries and hits with nothing lost, and the
router's tables stay bounded.  No sleeping: every wait is on an event (a
message arriving, a link closing, a routing decision), with a timeout.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.servent import ServentProtocol
from gnurouter.edge.service import RouterService
from gnurouter.protocol.messages import (
    Bye,
    Message,
    MessageType,
    RouteTablePatch,
    RouteTableReset,
    new_guid,
)
from gnurouter.protocol.qrp import QrpReceiver, QrpTable
from gnurouter.stages.router import RouterHandler
from tests.fixtures import (
    DecisionWatch,
    answer,
    exchange,
    honest_pair,
    join,
    local_address,
    ping,
    qrp_messages,
    queries,
    query,
)

MIB = 1024 * 1024


async def closed_with_bye(attacker: ServentProtocol) -> Bye:
    """The Bye the attacker got before the router closed its link."""
    closed = attacker.closed
    closed.addTimeout(10, reactor)
    await closed
    byes = [m.body() for m in attacker.messages_of(MessageType.BYE)]
    assert byes, "closed without a Bye"
    bye = byes[-1]
    assert isinstance(bye, Bye)
    return bye


def local_label(servent: ServentProtocol) -> str:
    host, port = local_address(servent)
    return f"{host}:{port}"


# -- 1. deflate: a stream just under the per-read cap ------------------------------------


@pytest_twisted.ensureDeferred
async def test_deflate_bomb_is_cut_off_with_bye_and_honest_traffic_is_intact(
    start_router: Callable[..., RouterService], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    router = start_router()
    sender, answerer = await honest_pair(router)
    attacker = await join(router, deflate=True)
    assert attacker.connection.deflate_out and attacker.connection.deflate_in
    parser = router.stages["parser"].handler
    errors_before = parser.protocol_errors  # type: ignore[attr-defined]
    # Zeros frame as 23-byte TTL-0 pings: ~1 KB on the wire, just under the
    # 1 MiB per-read cap inflated (~45,000 messages).
    label = local_label(attacker)
    bomb = attacker.connection.send_encoded(bytes(MIB - 1000))
    assert len(bomb) < 2048
    attacker.send_raw(bomb)
    await exchange(sender, answerer, 50, "during the bomb")
    bye = await closed_with_bye(attacker)
    assert bye.code == 400 and "deflate ratio" in bye.reason
    assert parser.protocol_errors == errors_before + 1  # type: ignore[attr-defined]
    assert any(label in r.getMessage() for r in caplog.records)
    # None of the ~45,000 pings of the first write got as far as the router.
    assert router.stages["router"].counters.processed < 5_000
    await exchange(sender, answerer, 50, "after the bomb")


# -- 2. QRP: a huge table, and a leaf that keeps resetting ------------------------------


@pytest_twisted.ensureDeferred
async def test_qrp_table_beyond_the_cap_is_cut_off_before_anything_is_allocated(
    start_router: Callable[..., RouterService], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    router = start_router()
    sender, answerer = await honest_pair(router)
    attacker = await join(router)
    label = local_label(attacker)
    # 2**24 slots, one small deflated PATCH that inflates to the whole table.
    patch = zlib.compress(bytes((1 << 24) // 2), 9)
    attacker.send(
        Message.from_body(new_guid(), 1, 0, RouteTableReset(1 << 24, 7)),
        Message.from_body(new_guid(), 1, 0, RouteTablePatch(1, 1, 1, 4, patch)),
    )
    bye = await closed_with_bye(attacker)
    assert bye.code == 413 and "larger than 2097152" in bye.reason
    assert router.routing.cutoffs.get("qrp-table-too-large") == 1
    handler = router.stages["router"].handler
    assert isinstance(handler, RouterHandler)
    assert handler.cutoffs.get("qrp-table-too-large") == 1
    assert any(
        label in r.getMessage() and "qrp-table-too-large" in r.getMessage() for r in caplog.records
    )
    await exchange(sender, answerer, 50, "after the qrp bomb")


@pytest_twisted.ensureDeferred
async def test_a_leaf_resetting_its_table_over_and_over_is_cut_off(
    start_router: Callable[..., RouterService],
) -> None:
    router = start_router()
    sender, answerer = await honest_pair(router)
    attacker = await join(router)
    sequence = qrp_messages(["some", "words"], chunk=4096)
    burst = router.routing.rules.qrp_limits.reset_burst
    for _ in range(burst + 20):  # far more RESETs than any servent sends
        attacker.send(*sequence)
    await exchange(sender, answerer, 20, "during the resets")
    bye = await closed_with_bye(attacker)
    assert bye.code == 413 and "Too many QRP" in bye.reason
    assert sum(router.routing.cutoffs.values()) == 1
    await exchange(sender, answerer, 20, "after the resets")


@pytest_twisted.ensureDeferred
async def test_a_big_table_is_built_outside_the_routing_lock(
    start_router: Callable[..., RouterService], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = start_router()
    handler = router.stages["router"].handler
    assert isinstance(handler, RouterHandler)
    under_lock: list[bool] = []
    original = QrpReceiver.handle

    def watched(self: QrpReceiver, *args: Any, **kwargs: Any) -> bool:
        under_lock.append(handler._lock.locked())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(QrpReceiver, "handle", watched)
    sender, answerer = await honest_pair(router)
    leaf = await join(router)
    [peer] = [p for p in router.peers.established() if p.label == local_label(leaf)]
    # The largest table there is: 2**21 slots, every fourth slot set.
    words = [f"w{index}" for index in range(40_000)]
    big = QrpTable.from_words(words, 21)
    leaf.send(*qrp_messages(words, bits=21, chunk=16 * 1024))
    watch = DecisionWatch(router)
    await watch.wait_until(
        lambda: any(d.reason == "qrp-table" and e.peer is peer for e, d in watch.seen)
    )
    info = router.routing.peer_info(peer.id)
    assert info is not None and info.table == big
    assert under_lock and not any(under_lock)  # not one patch applied under the lock
    await exchange(sender, answerer, 20, "after the table")


# -- 3. ping flood -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_flood_is_cut_off_and_leaves_no_routes_behind(
    start_router: Callable[..., RouterService], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # The routing limit on its own: the parser's control budget (which would
    # stop this flood first) is tested in test_isolation.py.
    router = start_router(control_rate_per_peer=0)
    sender, answerer = await honest_pair(router)
    attacker = await join(router)
    label = local_label(attacker)
    routes_before = len(router.routing.seen)
    rules = router.routing.rules
    # Pings with fresh GUIDs (TTL 7: not keepalives) in bursts of 200, an
    # honest round trip between bursts, until the router cuts the flooder
    # off.  (Bursts stay under the router stage's queue threshold: a single
    # burst above it would displace queued queries whoever sent it.)
    bursts = 0
    while not attacker.closed.called:
        assert bursts < 50, "flooder never cut off"
        attacker.send(*(ping(ttl=7) for _ in range(200)))
        bursts += 1
        await exchange(sender, answerer, 3, f"during the flood {bursts}")
    assert bursts * 200 > rules.ping_burst_per_peer + rules.ping_flood_refusals
    bye = await closed_with_bye(attacker)
    assert bye.code == 400 and "Ping flood" in bye.reason
    assert router.routing.cutoffs == {"ping-flood": 1}
    assert any(label in r.getMessage() and "ping-flood" in r.getMessage() for r in caplog.records)
    drops = router.stages["router"].drops
    assert sum(drops.get("ping-rate", {}).values()) >= rules.ping_flood_refusals
    # Only the pings within budget were recorded, plus the honest queries.
    growth = len(router.routing.seen) - routes_before
    assert growth <= rules.ping_burst_per_peer + 3 * bursts + 5, growth
    await exchange(sender, answerer, 30, "after the flood")


# -- 4. a query flood cannot evict the others' routes -------------------------------


@pytest_twisted.ensureDeferred
async def test_a_query_flood_churns_only_the_flooders_routes(
    start_router: Callable[..., RouterService],
) -> None:
    # Conditioning off: every flooded query reaches routing, the worst case
    # for the route table (the query filter would shed most of them).
    router = start_router(route_table_max=1000, conditioning="none")
    sender, answerer = await honest_pair(router)
    attacker = await join(router)
    [peer] = [p for p in router.peers.established() if p.label == local_label(attacker)]
    # Honest queries in flight: they reach the answerer, whose hits will
    # come back only after the flood.
    requests = queries(50, "waiting", ttl=4)
    wanted = {request.guid for request in requests}
    sender.send(*requests)
    for _ in requests:
        await answerer.next_message(
            reactor, lambda m: m.type == MessageType.QUERY and m.guid in wanted
        )
    watch = DecisionWatch(router)
    flood = 5_000
    for start in range(0, flood, 500):
        attacker.send(*(query(f"flood {start + i}", ttl=4) for i in range(500)))
    await watch.wait_until(lambda: sum(e.peer is peer for e, _ in watch.seen) >= flood)
    seen = router.routing.seen
    assert len(seen) <= 1000
    assert seen.evicted_over_share > 0 and seen.evicted == seen.evicted_over_share
    # Every honest route survived the flood: all 50 hits find their way back.
    await answer(sender, answerer, requests)
    await exchange(sender, answerer, 20, "after the query flood")
