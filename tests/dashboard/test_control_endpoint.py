"""The router side of the dashboard link: token auth on the control endpoint, Prometheus text."""

from __future__ import annotations

import io
import json
import socket
from typing import Any

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers as HTTPHeaders

from gnurouter.cli import build_parser, config_from_args
from gnurouter.config import ConfigError, RouterConfig
from gnurouter.protocol.messages import Message, Query, new_guid
from tests.conftest import DecisionWatch, join

TOKEN = "s3cret-token-for-tests-0123456789"


async def http(
    method: bytes, url: str, body: Any = None, authorization: str | None = None
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    headers = HTTPHeaders({b"content-type": [b"application/json"]})
    if authorization is not None:
        headers.addRawHeader(b"authorization", authorization.encode())
    producer = None
    if body is not None:
        producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode()))
    response = await Agent(reactor).request(method, url.encode(), headers, producer)
    raw = dict(response.headers.getAllRawHeaders())
    return response.code, {k.lower(): v for k, v in raw.items()}, await treq.content(response)


def base_of(router: Any) -> str:
    host, port = router.control_address()
    return f"http://{host}:{port}"


@pytest_twisted.ensureDeferred
async def test_with_a_token_every_request_without_it_is_refused_and_changes_nothing(
    start_router: Any,
) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    base = base_of(router)
    before = router.control.get("stage.router.threshold")
    for authorization in (None, "Bearer wrong-token-wrong-token", f"Basic {TOKEN}", TOKEN, ""):
        for method, path, body in (
            (b"GET", "/metrics", None),
            (b"GET", "/metrics/prometheus", None),
            (b"GET", "/parameters", None),
            (b"POST", "/parameters", {"stage.router.threshold": 5}),
        ):
            code, headers, answer = await http(method, base + path, body, authorization)
            assert code == 401, (authorization, path)
            assert headers[b"www-authenticate"] == [b'Bearer realm="gnurouter"']
            assert b"threshold" not in answer and b"stages" not in answer
    assert router.control.get("stage.router.threshold") == before

    good = f"Bearer {TOKEN}"
    code, _, answer = await http(b"GET", base + "/metrics", None, good)
    assert code == 200 and "stages" in json.loads(answer)
    code, _, answer = await http(b"POST", base + "/parameters", {"stage.router.threshold": 5}, good)
    assert code == 200 and json.loads(answer)["changed"]["stage.router.threshold"] == [before, 5]
    assert router.control.get("stage.router.threshold") == 5


@pytest_twisted.ensureDeferred
async def test_without_a_token_a_loopback_endpoint_stays_open(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0))
    code, _, answer = await http(b"GET", base_of(router) + "/parameters")
    assert code == 200 and {p["name"] for p in json.loads(answer)} == set(router.control.names())


@pytest_twisted.ensureDeferred
async def test_prometheus_text_carries_the_snapshot_numbers(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    watch = DecisionWatch(router)
    sender = await join(router)
    receiver = await join(router)
    sent = [Message.from_body(new_guid(), 3, 0, Query(flags=0, criteria=f"p{i}")) for i in range(7)]
    sender.send(*sent)
    await receiver.next_message(reactor, lambda m: m.guid == sent[-1].guid)
    await watch.wait_until(lambda: len(watch.seen) >= 7)
    router.control.set("stage.router.threshold", 777)

    code, headers, body = await http(
        b"GET", base_of(router) + "/metrics/prometheus", None, f"Bearer {TOKEN}"
    )
    assert code == 200
    assert headers[b"content-type"][0].startswith(b"text/plain; version=")
    snapshot = router.snapshot()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    assert samples[("gnurouter_stage_threshold", (("kind", "refuse"), ("stage", "router")))] == 777
    assert samples[("gnurouter_parameter", (("name", "stage.router.threshold"),))] == 777
    assert samples[("gnurouter_peers", ())] == snapshot["router"]["peers"] == 2
    assert samples[("gnurouter_messages_in_total", ())] >= 7
    for stage, values in snapshot["stages"].items():
        labels = (("stage", stage),)
        assert ("gnurouter_stage_queue_length", labels) in samples
        assert samples[("gnurouter_stage_threads", labels)] == values["threads"]
    processed = samples[("gnurouter_stage_processed_total", (("stage", "router"),))]
    assert processed >= 7
    p99 = samples[
        ("gnurouter_stage_queue_delay_seconds", (("quantile", "0.99"), ("stage", "router")))
    ]
    assert p99 >= 0.0


def test_token_rules_in_the_config() -> None:
    with pytest.raises(ConfigError, match="not loopback; a control token"):
        RouterConfig(control_listen=("0.0.0.0", 6347)).validate()
    with pytest.raises(ConfigError, match="at least 16 characters"):
        RouterConfig(control_token="short").validate()
    RouterConfig(control_listen=("0.0.0.0", 6347), control_token=TOKEN).validate()
    RouterConfig(control_listen=("127.0.0.1", 6347)).validate()


def test_token_from_the_environment_and_the_command_line(monkeypatch: Any) -> None:
    parser = build_parser()
    monkeypatch.delenv("GNUROUTER_CONTROL_TOKEN", raising=False)
    assert config_from_args(parser.parse_args(["run"])).control_token is None
    monkeypatch.setenv("GNUROUTER_CONTROL_TOKEN", TOKEN)
    assert config_from_args(parser.parse_args(["run"])).control_token == TOKEN
    other = "another-token-0123456789"
    args = parser.parse_args(["run", "--control-token", other])
    assert config_from_args(args).control_token == other


@pytest_twisted.ensureDeferred
async def test_stalled_dashboard_connections_do_not_hold_up_the_router(start_router: Any) -> None:
    """The endpoint only answers: clients that never finish or never read cost routing nothing."""
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    host, port = router.control_address()
    request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    stalled = []
    half = socket.create_connection((host, port))
    half.sendall(request[:20])  # a request that never ends
    stalled.append(half)
    for _ in range(3):  # many snapshots asked for, none ever read
        greedy = socket.create_connection((host, port))
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.sendall(request * 50)
        stalled.append(greedy)
    try:
        watch = DecisionWatch(router)
        sender = await join(router)
        receiver = await join(router)
        sent = [
            Message.from_body(new_guid(), 3, 0, Query(flags=0, criteria=f"s{i}")) for i in range(20)
        ]
        sender.send(*sent)
        await receiver.next_message(reactor, lambda m: m.guid == sent[-1].guid, timeout=5)
        await watch.wait_until(lambda: len(watch.seen) >= 20, timeout=5)
        code, _, _ = await http(b"GET", base_of(router) + "/parameters", None, f"Bearer {TOKEN}")
        assert code == 200
    finally:
        for connection in stalled:
            connection.close()
