"""The control API (in process and over HTTP) and the metrics snapshot it sits beside."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent
from twisted.web.http_headers import Headers as HTTPHeaders

from gnurouter.seda.tuning import ControlError
from tests.fixtures import DecisionWatch, delivered, join, query


@pytest_twisted.ensureDeferred
async def test_invalid_values_are_refused_with_the_range_and_nothing_changes(
    start_router: Any,
) -> None:
    router = start_router()
    control = router.control
    before = control.values()
    for name, value, words in [
        ("stage.router.threshold", 0, "allowed: int from 1 to 10000000 or null"),
        ("stage.router.threads", 65, "allowed: int from 1 to 64"),
        ("router.query_delay", "soon", "a duration from 0.0s to 10.0s"),
        ("router.ping_mode", "broadcast", "one of cache, flood"),
        ("router.max_ttl", 2.5, "int from 1 to 15"),
        ("no.such.parameter", 1, "unknown parameter"),
    ]:
        with pytest.raises(ControlError, match=words.replace("(", r"\(").replace(")", r"\)")):
            control.set(name, value)
    # A batch with one bad value changes nothing at all.
    with pytest.raises(ControlError):
        control.set_many({"stage.router.threshold": 5, "router.max_ttl": 99})
    assert control.values() == before


@pytest_twisted.ensureDeferred
async def test_every_parameter_is_in_the_snapshot_and_settable_to_its_own_value(
    start_router: Any,
) -> None:
    router = start_router()
    snapshot = router.snapshot()
    assert snapshot["parameters"].keys() == set(router.control.names())
    assert set(snapshot["stages"]) == {"reader", "parser", "router", "connection", "catcher", "udp"}
    for parameter in router.control.describe():
        router.control.set(parameter["name"], parameter["value"])
    assert router.control.values() == snapshot["parameters"]


async def http(method: bytes, url: str, body: Any = None) -> tuple[int, Any]:
    agent = Agent(reactor)
    producer: Any = None  # a FileBodyProducer; mypy cannot see it provides IBodyProducer
    if body is not None:
        import io

        from twisted.web.client import FileBodyProducer

        producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
    response = await agent.request(
        method, url.encode(), HTTPHeaders({b"content-type": [b"application/json"]}), producer
    )
    return response.code, json.loads(await treq.content(response))


@pytest_twisted.ensureDeferred
async def test_threshold_change_over_http_takes_effect_on_the_next_event(
    start_router: Any,
) -> None:
    # Thresholding alone: no other policy may shed these queries.
    router = start_router(
        control_listen=("127.0.0.1", 0), query_delay=0.2, conditioning="threshold"
    )
    host, port = router.control_address()
    base = f"http://{host}:{port}"
    watch = DecisionWatch(router)
    sender = await join(router)
    await join(router)

    code, answer = await http(b"POST", f"{base}/parameters", {"stage.router.threshold": 1})
    assert code == 200 and answer["changed"]["stage.router.threshold"][1] == 1
    batch = [query(f"q{i}") for i in range(5)]
    sender.send(*batch)  # one segment: the parser enqueues all five back to back
    # With room for one waiting event, at most two queries get through: one
    # waiting, one possibly already on the blocked worker; the rest are refused.
    router_stage = router.stages["router"]

    def refused() -> int:
        return router_stage.drop_count("queue-full")

    await watch.wait_until(lambda: len(watch.seen) + refused() == 5)
    assert 1 <= len(watch.seen) <= 2 and refused() >= 3
    assert set(router_stage.drops["queue-full"]) == {"query"}
    refused_before = refused()

    code, answer = await http(b"POST", f"{base}/parameters", {"stage.router.threshold": None})
    assert code == 200
    seen = len(watch.seen)
    sender.send(*[query(f"r{i}") for i in range(5)])
    await watch.wait_until(lambda: len(watch.seen) == seen + 5)
    assert refused() == refused_before

    code, answer = await http(b"POST", f"{base}/parameters", {"stage.router.threshold": -4})
    assert code == 400 and "allowed range" in answer["error"]
    code, answer = await http(b"POST", f"{base}/parameters", ["not", "an", "object"])
    assert code == 400
    code, metrics = await http(b"GET", f"{base}/metrics")
    assert code == 200
    assert metrics["stages"]["router"]["threshold"] is None
    assert metrics["stages"]["router"]["drops"]["queue-full"]["query"] == refused_before
    assert metrics["router"]["peers"] == 2
    code, described = await http(b"GET", f"{base}/parameters")
    assert {p["name"] for p in described} == set(router.control.names())


@pytest_twisted.ensureDeferred
async def test_snapshot_counts_messages_and_rates(start_router: Any) -> None:
    router = start_router()
    watch = DecisionWatch(router)
    sender = await join(router)
    receiver = await join(router)
    messages = [query(f"m{i}") for i in range(20)]
    sender.send(*messages)
    await delivered(receiver, messages[-1])
    await watch.wait_until(lambda: len(watch.seen) == 20)
    router.sample_metrics()
    snapshot = router.snapshot()
    assert snapshot["router"]["messages_in"] >= 20
    assert snapshot["router"]["messages_out"] >= 20
    stage = snapshot["stages"]["router"]
    assert stage["processed"] >= 20 and stage["queue_length"] == 0
    assert stage["queue_delay_ms"]["p99"] >= stage["queue_delay_ms"]["p50"] >= 0
    rows = {row["id"]: row for row in snapshot["peers"]}
    assert sum(row["messages_in"] for row in rows.values()) >= 20
    json.dumps(snapshot)  # JSON-ready as documented


# Every way a number can be unusable, as JSON or as text; each must be refused
# by every numeric parameter, whatever its range.
NOT_A_SETTING = [
    float("nan"),
    float("inf"),
    float("-inf"),
    "nan",
    "NaN",
    " nan ",
    "inf",
    "-inf",
    "Infinity",
    "1e400",  # float() makes it inf
    "9" * 400,  # parse_duration makes it inf
    "9" * 5000,  # int() refuses it (int_max_str_digits); also past MAX_NUMBER_TEXT
    10**400,  # float() raises OverflowError
    10**5000,  # repr() raises ValueError
    True,  # an int to Python, never a setting
    False,
    [1],
    {"value": 1},
    b"1",
]


@pytest_twisted.ensureDeferred
async def test_every_numeric_parameter_refuses_non_finite_and_non_numbers(
    start_router: Any,
) -> None:
    router = start_router()
    control = router.control
    before = control.values()
    numeric = [p for p in control.describe() if p["kind"] in ("int", "float", "duration")]
    assert {p["kind"] for p in numeric} == {"int", "float", "duration"}
    for parameter in numeric:
        for value in NOT_A_SETTING:
            with pytest.raises(ControlError, match="allowed: ") as refused:
                control.set(parameter["name"], value)
            assert len(str(refused.value)) < 400, "the message quotes a hostile value in full"
    assert control.values() == before
    # Plain numbers, as JSON numbers or as text, still work.
    assert control.set("router.query_delay", "20ms")[1] == 0.02
    assert control.set("router.query_delay", 0)[1] == 0.0
    assert control.set("router.max_ttl", "5")[1] == 5
    assert control.set("router.max_ttl", 6.0)[1] == 6
    assert control.set("router.ping_rate_per_peer", "2.5")[1] == 2.5


@pytest_twisted.ensureDeferred
async def test_hostile_names_and_nested_values_give_a_control_error(start_router: Any) -> None:
    router = start_router()
    control = router.control
    before = control.values()
    deep: Any = 0
    for _ in range(20_000):
        deep = [deep]
    for changes in (
        {10**5000: 1},  # an unknown name whose repr() raises ValueError
        {"x" * 100_000: 1},
        {"router.query_delay": deep},  # repr() would raise RecursionError
        {"router.ping_mode": deep},
        {"packet_log.enabled": deep},
        {"router.ping_mode": ["cache"]},
        {"router.max_ttl": 5, "router.route_ttl": float("nan")},  # all or nothing
    ):
        with pytest.raises(ControlError) as refused:
            control.set_many(changes)
        assert len(str(refused.value)) < 400
    assert control.values() == before
