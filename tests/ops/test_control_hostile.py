"""The control endpoint against hostile clients: real sockets on loopback, real Site.

What an attack run found, each checked as a class: bodies stored before the
token was checked, oversized bodies (Content-Length and chunked), JSON that
crashed the parser (deep nesting, huge numbers, NaN), cross-site POSTs and
DNS rebinding against a tokenless endpoint, a loopback test by string prefix.
Plus property tests: arbitrary JSON through `parse_changes`, `set_many` and a
live HTTP endpoint never raises anything but ControlError / HTTP 400 and never
leaves a parameter non-finite or out of range.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from gnurouter.config import ConfigError, RouterConfig, is_loopback
from gnurouter.ops.controlweb import MAX_BODY, ControlGuard, parse_changes
from gnurouter.seda.tuning import ControlError

TOKEN = "hostile-test-token-0123456789abcdef"
MiB = 1024 * 1024
#: What a flood may push into loopback socket buffers before the server's reset
#: reaches the client; an endpoint that read the whole 300 MiB sends ~10x more.
CUT_OFF = 32 * MiB
#: Memory the process may gain during a 300 MiB flood (buffers, allocator slack).
MEMORY_SLACK = 48 * MiB


# -- a raw HTTP client on the reactor ------------------------------------------


class RawClient(Protocol):
    """Writes `head` as is, then pulls body pieces from `body` while the socket takes them.

    A pull producer: the next piece is written only once the previous one has
    left Twisted's buffer, so a 300 MiB body never sits in this process's memory.
    """

    def __init__(self, head: bytes, body: Iterator[bytes] | None = None) -> None:
        self.head = head
        self.body = body if body is not None else iter(())
        self.sent = 0
        self.received = bytearray()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport  # a TCP transport; ITransport declares less
        transport.write(self.head)
        transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        transport: Any = self.transport
        piece = next(self.body, None)
        if piece is None:
            transport.unregisterProducer()
            return
        self.sent += len(piece)
        transport.write(piece)

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.closed.called:  # not already timed out
            self.closed.callback(None)

    def status(self) -> int:
        return int(bytes(self.received).split(b" ", 2)[1])

    def answer(self) -> dict[str, Any]:
        return json.loads(bytes(self.received).partition(b"\r\n\r\n")[2])


async def exchange(
    address: tuple[str, int],
    head: bytes,
    body: Iterator[bytes] | None = None,
    timeout: float = 10.0,
) -> RawClient:
    """Connect, send, and wait (bounded) until the server has closed the connection."""
    host, port = address
    endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(reactor, host, port)
    client = RawClient(head, body)
    await connectProtocol(endpoint, client)
    # A server still waiting for a body it should have refused never closes.
    await client.closed.addTimeout(timeout, reactor)
    return client


def request_head(
    method: str,
    path: str,
    host: str | None,
    *,
    token: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.extend(extra)
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(address: tuple[str, int], body: bytes, *, token: str | None = None, **kw: Any) -> Any:
    host = kw.pop("host", f"127.0.0.1:{address[1]}")
    extra = (*kw.pop("extra", ()), f"Content-Length: {len(body)}")
    head = request_head("POST", "/parameters", host, token=token, extra=extra)
    return exchange(address, head + body)


def get(address: tuple[str, int], path: str = "/parameters", **kw: Any) -> Any:
    host = kw.pop("host", f"127.0.0.1:{address[1]}")
    return exchange(address, request_head("GET", path, host, **kw))


def refused(router: Any, reason: str) -> int:
    site = router._control_port.factory
    return int(site.guard.refusals.counts[reason])


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def flood(piece: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes as repeats of one `piece` (one object: the flood costs no memory here)."""
    for _ in range(total // len(piece)):
        yield piece


# -- bodies are refused before they are stored ------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_huge_declared_body_is_refused_from_the_headers_alone(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    address = router.control_address()
    declared = f"Content-Length: {300 * MiB}"
    # No token: 401 before the body, which is never sent.  If the endpoint
    # waited for the body, the connection would stay open and this times out.
    client = await exchange(address, request_head("POST", "/parameters", "x", extra=(declared,)))
    assert client.status() == 401 and client.answer()["reason"] == "unauthorized"
    assert b"www-authenticate: bearer" in client.received.lower()
    # With the token: 413, just as early.  Expect: 100-continue gets the final
    # answer instead of an invitation to send.
    head = request_head(
        "POST", "/parameters", "x", token=TOKEN, extra=(declared, "Expect: 100-continue")
    )
    client = await exchange(address, head)
    assert client.received.startswith(b"HTTP/1.1 413 ")
    assert client.answer() == {
        "error": f"request body over {MAX_BODY} bytes",
        "reason": "body-too-large",
    }
    assert refused(router, "unauthorized") == 1 and refused(router, "body-too-large") == 1


@pytest_twisted.ensureDeferred
async def test_the_body_limit_is_exact(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    address = router.control_address()
    change = b'{"stage.router.threshold": 7}'
    client = await post(address, change.ljust(MAX_BODY), token=TOKEN, host="x")
    assert client.status() == 200 and router.control.get("stage.router.threshold") == 7
    # One byte more is refused from the header alone (the body is not sent:
    # bytes the server never reads would make its close a reset).
    too_long = f"Content-Length: {MAX_BODY + 1}"
    head = request_head("POST", "/parameters", "x", token=TOKEN, extra=(too_long,))
    assert (await exchange(address, head)).status() == 413


@pytest.mark.parametrize(
    ("token", "framing", "status", "reason"),
    [
        (None, "content-length", 401, "unauthorized"),  # no token, 300 MiB body sent anyway
        (TOKEN, "chunked", 413, "body-too-large"),  # the token, 300 MiB of chunks
    ],
    ids=["content-length-without-token", "chunked-with-token"],
)
@pytest_twisted.ensureDeferred
async def test_a_300_mib_flood_is_cut_off_and_costs_no_memory(
    start_router: Any, token: str | None, framing: str, status: int, reason: str
) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    address = router.control_address()
    if framing == "chunked":
        data = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        framing_header = "Transfer-Encoding: chunked"
    else:
        data = b"x" * 64 * 1024
        framing_header = f"Content-Length: {300 * MiB}"
    head = request_head("POST", "/parameters", "x", token=token, extra=(framing_header,))
    before = rss()
    client = await exchange(address, head, flood(data, 300 * MiB), timeout=60)
    grown = rss() - before
    assert client.sent < CUT_OFF, f"{client.sent} bytes were taken before the cut"
    assert grown < MEMORY_SLACK, f"the process grew by {grown} bytes"
    # The answer races the reset the client's unread data provokes; when it
    # arrives it is the refusal.
    if client.received:
        assert client.status() == status
    assert refused(router, reason) == 1


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_is_cut_off_at_the_limit_and_one_within_it_is_served(
    start_router: Any,
) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    address = router.control_address()
    chunked = "Transfer-Encoding: chunked"
    head = request_head("POST", "/parameters", "x", token=TOKEN, extra=(chunked,))
    # One chunk announced as 1 MiB, of which one byte past the limit is sent:
    # the server has read everything sent when it refuses, so the answer
    # arrives cleanly (no reset).
    body = b"%x\r\n" % MiB + b" " * (MAX_BODY + 1)
    client = await exchange(address, head + body)
    assert client.status() == 413 and client.answer()["reason"] == "body-too-large"
    assert router.control.get("stage.router.threshold") == 1000

    change = b'{"stage.router.threshold": 9}'
    body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (change[:10], change[10:]))
    client = await exchange(address, head + body + b"0\r\n\r\n")
    assert client.status() == 200 and router.control.get("stage.router.threshold") == 9


# -- without a token: loopback clients, loopback Host, no foreign Origin --------------


GOOD_HOSTS = ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LocalHost", "127.9.8.7:1"]
BAD_HOSTS = [
    "127.0.0.1.example.com",  # a DNS name that only starts like loopback
    "127.0.0.1.nip.io:{port}",
    "localhost.example.com",
    "attacker.example:{port}",
    "0.0.0.0:{port}",
    "127.1",  # inet_aton would take it; ipaddress does not
    "[127.0.0.1]",
    "127.0.0.1:port",
    "127.0.0.1:{port}:{port}",
    "10.0.0.1",
    "",
]


@pytest_twisted.ensureDeferred
async def test_without_a_token_only_a_loopback_host_header_is_answered(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0))
    address = router.control_address()
    port = address[1]
    for host in GOOD_HOSTS:
        client = await get(address, host=host.format(port=port))
        assert client.status() == 200, host
    for host in BAD_HOSTS:
        client = await get(address, host=host.format(port=port))
        assert client.status() == 403, host
        assert client.answer()["reason"] == "bad-host"
    client = await get(address, host=None)  # no Host at all
    assert client.status() == 403
    twice = request_head("GET", "/metrics", "127.0.0.1", extra=("Host: attacker.example",))
    assert (await exchange(address, twice)).status() == 403
    # A POST with a rebinding Host changes nothing, and its body is never read.
    client = await post(address, b'{"router.max_ttl": 3}', host="attacker.example")
    assert client.status() == 403 and router.control.get("router.max_ttl") == 7
    assert refused(router, "bad-host") == len(BAD_HOSTS) + 3


@pytest_twisted.ensureDeferred
async def test_without_a_token_an_ipv6_loopback_endpoint_takes_its_bracketed_host(
    start_router: Any,
) -> None:
    try:
        router = start_router(control_listen=("::1", 0))
    except Exception as error:  # no IPv6 on this machine
        pytest.skip(f"cannot listen on ::1: {error}")
    address = router.control_address()
    assert (await get(address, host=f"[::1]:{address[1]}")).status() == 200
    assert (await get(address, host=f"[::ffff:127.0.0.1]:{address[1]}")).status() == 200
    assert (await get(address, host=f"[2001:db8::1]:{address[1]}")).status() == 403


FOREIGN_ORIGINS = [
    ("Origin", "https://attacker.example"),
    ("Origin", "http://127.0.0.1.attacker.example:6347"),
    ("Origin", "null"),  # sandboxed frames, file: pages
    ("Origin", "http://127.0.0.1:notaport"),
    ("Referer", "https://attacker.example/page"),
    ("Referer", "http://127.0.0.1@attacker.example/"),  # user info, not the host
]
LOOPBACK_ORIGINS = [
    ("Origin", "http://127.0.0.1:8000"),  # the dashboard on the same machine
    ("Origin", "http://localhost:3000"),
    ("Origin", "http://[::1]:8000"),
    ("Referer", "http://127.0.0.1:8000/routers/1/"),
]


@pytest_twisted.ensureDeferred
async def test_without_a_token_cross_origin_requests_are_refused(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0))
    address = router.control_address()
    for header, value in FOREIGN_ORIGINS:
        client = await post(address, b'{"router.max_ttl": 3}', extra=(f"{header}: {value}",))
        assert client.status() == 403, value
        assert client.answer()["reason"] == "cross-origin"
    assert router.control.get("router.max_ttl") == 7
    # Origin decides when both are there: a loopback Referer does not excuse it.
    both = ("Origin: https://attacker.example", "Referer: http://127.0.0.1:8000/")
    assert (await post(address, b"{}", extra=both)).status() == 403
    assert refused(router, "cross-origin") == len(FOREIGN_ORIGINS) + 1
    for ttl, (header, value) in enumerate(LOOPBACK_ORIGINS, start=2):
        body = b'{"router.max_ttl": %d}' % ttl
        client = await post(address, body, extra=(f"{header}: {value}",))
        assert client.status() == 200, value
        assert router.control.get("router.max_ttl") == ttl


@pytest_twisted.ensureDeferred
async def test_with_a_token_the_token_alone_decides(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    address = router.control_address()
    client = await post(
        address,
        b'{"router.max_ttl": 4}',
        token=TOKEN,
        host="router.example.net:6347",
        extra=("Origin: https://dashboard.example.net",),
    )
    assert client.status() == 200 and router.control.get("router.max_ttl") == 4
    client = await get(address, host="127.0.0.1", extra=("Origin: http://127.0.0.1",))
    assert client.status() == 401  # a loopback look is no substitute for the token


def test_without_a_token_only_loopback_clients_are_let_in() -> None:
    guard = ControlGuard(None)
    for client, allowed in (
        ("127.0.0.1", True),
        ("127.200.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.1", False),
        ("::ffff:192.0.2.1", False),
        ("2001:db8::1", False),
    ):
        request = DummyRequest([b"parameters"])
        request.client = type("Address", (), {"host": client})()
        request.requestHeaders.setRawHeaders(b"host", [b"127.0.0.1:6347"])
        refusal = guard.screen(request)
        assert (refusal is None) == allowed, client
        if refusal is not None:
            assert (refusal.status, refusal.reason) == (403, "bad-client")


def test_loopback_is_decided_by_address_not_by_prefix() -> None:
    for host in ("127.0.0.1", "127.255.255.254", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in (
        "127.0.0.1.example.com",
        "127.attacker.example",
        "127.1",
        "localhost.example.com",
        "0.0.0.0",
        "::",
        "10.127.0.1",
        "",
    ):
        assert not is_loopback(host), host
    with pytest.raises(ConfigError, match="not loopback"):
        RouterConfig(control_listen=("127.0.0.1.example.com", 6347)).validate()
    RouterConfig(control_listen=("::1", 6347)).validate()


# -- bad JSON of every shape: 400, a counter, one log line per client -------------


BAD_JSON = [
    b"[" * 20_000 + b"]" * 20_000,
    b'{"router.max_ttl": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    b'{"router.max_ttl": 1' + b"0" * 5000 + b"}",  # past int_max_str_digits
    b'{"router.max_ttl": 3, "router.max_ttl": 4}',
    b'{"router.query_delay": NaN}',
    b'{"router.route_ttl": Infinity}',
    b'{"router.route_ttl": -Infinity}',
    b'{"router.route_ttl": 1e400}',
    b"NaN",
    b'["router.max_ttl", 3]',
    b'"router.max_ttl"',
    b"3",
    b"null",
    b'{"router.max_ttl": [3]}',
    b'{"router.max_ttl": {"value": 3}}',
    b"{",
    b'{"router.max_ttl": 3,}',
    b"\xff\xfe{\x00}\x00",
    b'\xef\xbb\xbf{"router.max_ttl": 3}',
    b" ",
]
BAD_VALUES = [
    b'{"router.query_delay": "NaN"}',
    b'{"router.route_ttl": "inf"}',
    b'{"router.route_ttl": "1e400"}',
    b'{"router.query_delay": "' + b"9" * 400 + b'"}',
    b'{"router.max_ttl": true}',
    b'{"stage.router.threads": false}',
    b'{"router.ping_rate_per_peer": "Infinity"}',
    b'{"router.route_ttl": 1e300}',
    b'{"router.max_ttl": 2.5}',
    b'{"router.ping_mode": 1}',
    b'{"no.such.parameter": 1}',
    b'{"router.max_ttl": 3, "router.route_ttl": "nan"}',
]


@pytest_twisted.ensureDeferred
async def test_bad_json_of_any_shape_is_a_400_counted_and_logged_once(
    start_router: Any, caplog: pytest.LogCaptureFixture
) -> None:
    router = start_router(control_listen=("127.0.0.1", 0))
    address = router.control_address()
    before = router.control.values()
    caplog.set_level(logging.WARNING, logger="gnurouter.ops.controlweb")
    for bodies, reason in ((BAD_JSON, "bad-json"), (BAD_VALUES, "bad-value")):
        for body in bodies:
            client = await post(address, body)
            assert client.status() == 400, body[:60]
            answer = client.answer()
            assert answer["reason"] == reason, (body[:60], answer)
            assert answer["error"] and len(answer["error"]) < 400
        assert refused(router, reason) == len(bodies)
    assert router.control.values() == before
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    # One line per client and reason within REFUSAL_LOG_INTERVAL, naming the client.
    assert len(lines) == 2 and all("127.0.0.1" in line for line in lines), lines
    code = (await post(address, b'{"router.max_ttl": 5}')).status()
    assert code == 200 and router.control.get("router.max_ttl") == 5


@pytest_twisted.ensureDeferred
async def test_refusals_by_reason_are_in_the_metrics_snapshot(start_router: Any) -> None:
    router = start_router(control_listen=("127.0.0.1", 0), control_token=TOKEN)
    address = router.control_address()
    await get(address, host="x")
    await post(address, b"{", token=TOKEN, host="x")
    await post(address, b'{"router.max_ttl": 99}', token=TOKEN, host="x")
    client = await get(address, "/metrics", host="x", token=TOKEN)
    counters = client.answer()["control_endpoint"]
    assert counters["refused"] == {
        "unauthorized": 1,
        "bad-client": 0,
        "bad-host": 0,
        "cross-origin": 0,
        "body-too-large": 0,
        "bad-json": 1,
        "bad-value": 1,
    }
    assert counters["refused_total"] == 3


# -- properties: arbitrary JSON never crashes, never leaves a bad value -------------------


class Raw(str):
    """JSON text put into a body verbatim (what json.dumps cannot or will not write)."""


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 14_000:
        return "9" * (value.bit_length() * 3 // 10)  # str() refuses past 4300 digits
    return json.dumps(value)  # floats: NaN, Infinity, -Infinity, as Python writes them


NUMBER_TEXT = st.sampled_from(
    [
        *("nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "0x10", "1_0"),
        *("5ms", "2s", "10m", "1h", " 7 ", "3.0", "-1", "true", "on", "null", "", "cache"),
        "9" * 400,
    ]
)
# Drawn on their own as well as inside st.floats(), so that the few float
# parameters meet them often enough to matter in a few hundred examples.
EDGE_NUMBERS = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.5, 2**53 + 1, -(2**63), 10**20]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.floats()  # NaN and +-inf included
    | EDGE_NUMBERS
    | st.integers()
    | st.integers(min_value=300, max_value=6000).map(lambda n: 10**n)
    | st.text(max_size=12)
    | NUMBER_TEXT
)


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=6), children, max_size=3)
        ),
        max_leaves=8,
    )


class Nested(list[Any]):
    """A list nested `depth` deep that shows itself short: hypothesis prints a
    failing example with repr(), which would exhaust the stack on the real thing."""

    def __init__(self, depth: int) -> None:
        value: Any = 1
        for _ in range(depth - 1):
            value = [value]
        super().__init__([value])
        self.depth = depth

    def __repr__(self) -> str:
        return f"Nested({self.depth})"


# Mostly plain values (what reaches a parameter's checks), sometimes containers.
# In process the deep values are real nested lists; over HTTP, text.
IN_PROCESS_VALUES = SCALARS | json_values(SCALARS) | st.integers(900, 20_000).map(Nested)
HTTP_VALUES = (
    SCALARS
    | json_values(SCALARS)
    | st.integers(900, 20_000).map(lambda depth: Raw("[" * depth + "]" * depth))
)


def changes_of(names: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly real parameter names (one to three), sometimes any text."""
    return st.dictionaries(st.sampled_from(names), values, min_size=1, max_size=3) | (
        st.dictionaries(st.sampled_from(names) | st.text(max_size=12), values, max_size=4)
    )


def assert_all_settings_sane(described: list[dict[str, Any]]) -> None:
    """Every parameter holds a value of its kind: finite and within its range."""
    for parameter in described:
        value, name = parameter["value"], parameter["name"]
        if value is None:
            assert parameter["nullable"], name
        elif parameter["kind"] in ("int", "float", "duration"):
            assert isinstance(value, int | float) and not isinstance(value, bool), name
            assert math.isfinite(value), (name, value)
            assert parameter["low"] is None or value >= parameter["low"], (name, value)
            assert parameter["high"] is None or value <= parameter["high"], (name, value)
        elif parameter["kind"] == "bool":
            assert isinstance(value, bool), name
        else:
            assert value in parameter["choices"], name


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=200)
    | HTTP_VALUES.map(lambda value: encode(value).encode())
    | changes_of(["router.max_ttl", "a"], HTTP_VALUES).map(lambda value: encode(value).encode())
)
def test_parse_changes_returns_plain_finite_values_or_a_control_error(body: bytes) -> None:
    try:
        changes = parse_changes(body)
    except ControlError as error:
        assert str(error)
        return
    assert isinstance(changes, dict)
    for name, value in changes.items():
        assert isinstance(name, str)
        assert value is None or isinstance(value, bool | int | float | str)
        if isinstance(value, float):
            assert math.isfinite(value)


@pytest_twisted.ensureDeferred
async def test_arbitrary_values_for_every_parameter_are_refused_or_sane(
    start_router: Any,
) -> None:
    router = start_router()
    control = router.control
    names = control.names()

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(IN_PROCESS_VALUES, changes_of(names, IN_PROCESS_VALUES))
    def check(value: Any, changes: dict[Any, Any]) -> None:
        # Every parameter meets the value: a property of "any parameter" that
        # drew its name at random would seldom reach the few float ones.
        for name in names:
            old = control.get(name)
            try:
                control.set(name, value)
            except ControlError:
                assert control.get(name) == old, name
        before = control.values()
        try:
            control.set_many(changes)
        except ControlError:
            assert control.values() == before  # all or nothing
        assert_all_settings_sane(control.describe())

    check()


def in_thread(work: Callable[[], None]) -> defer.Deferred[None]:
    """Run blocking `work` on its own thread; the Deferred fires on the reactor with its end."""
    done: defer.Deferred[None] = defer.Deferred()

    def run() -> None:
        try:
            work()
        except BaseException:
            reactor.callFromThread(done.errback, Failure())
        else:
            reactor.callFromThread(done.callback, None)

    threading.Thread(target=run, name="hypothesis-http", daemon=True).start()
    return done


@pytest_twisted.ensureDeferred
async def test_arbitrary_bodies_over_http_get_200_or_400_and_never_a_bad_setting(
    start_router: Any,
) -> None:
    """The real endpoint on a loopback port, driven by a blocking client on another thread."""
    router = start_router(control_listen=("127.0.0.1", 0))
    host, port = router.control_address()
    names = router.control.names()
    # One parameter of each kind (int, float, duration, bool, choice; nullable
    # or not) meets every drawn value; the bodies cover the rest.
    probes = list(
        {(p["kind"], p["nullable"]): p["name"] for p in router.control.describe()}.values()
    )
    assert len(probes) >= 6
    bodies = (
        changes_of(names, HTTP_VALUES).map(encode)
        | st.lists(st.tuples(st.sampled_from(names[:3]), HTTP_VALUES), max_size=3).map(
            lambda pairs: "{" + ",".join(f'"{k}":{encode(v)}' for k, v in pairs) + "}"
        )  # duplicate names, too
        | HTTP_VALUES.map(encode)
    ).map(str.encode) | st.binary(max_size=100)

    def work() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=10)

        def post_body(body: bytes) -> None:
            connection.request("POST", "/parameters", body)
            response = connection.getresponse()
            answer = json.loads(response.read())
            if len(body) > MAX_BODY:
                assert response.status == 413
            elif response.status == 200:
                assert isinstance(answer["changed"], dict)
            else:
                assert response.status == 400, (response.status, answer)
                assert answer["reason"] in ("bad-json", "bad-value") and answer["error"]

        @settings(
            max_examples=100,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(HTTP_VALUES, bodies)
        def check(value: Any, body: bytes) -> None:
            for name in probes:
                post_body(encode({name: value}).encode())
            post_body(body)
            assert_all_settings_sane(blockingCallFromThread(reactor, router.control.describe))

        try:
            check()
        finally:
            connection.close()

    await in_thread(work)
