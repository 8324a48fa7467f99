"""Hostile handshake header values, through a whole router in process.

A `RouterService` runs on a manual clock with in-memory transports
(`tests.fixtures.InProcessRouter`): no socket, no thread, deterministic.  A
servent, played by the protocol's own `Handshake`, connects (or is connected
to) with header values drawn by hypothesis (anything but CR/LF, which the
line reader takes as the end of the line), and afterwards:

* no stage met an exception (`handler_errors` stays 0 everywhere);
* the host cache holds only clean entries: every address round-trips
  through `format_endpoint` / `parse_endpoint`;
* what the router then says to a fresh peer (its 200 OK or 503, with
  X-Try-Ultrapeers sampled from that cache) is a well-formed handshake block
  whose addresses all parse back;
* a bad value is counted in `peers.rejected` under "bad-header:<name>".
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gnurouter.config import RouterConfig
from gnurouter.protocol.addresses import (
    MAX_TEXT_LENGTH,
    format_endpoint,
    parse_endpoint,
    parse_endpoints,
)
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.handshake import (
    ConnectRequest,
    ConnectResponse,
    Handshake,
    HandshakeEvent,
    HandshakeRefused,
    Headers,
    Role,
)
from tests.fixtures import GTK_GNUTELLA_ULTRAPEER, InProcessRouter, Link, query

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- the router in process -------------------------------------------------------------

# 1 slot: the peer under test takes it (when admitted) and the probe that
# follows gets the 503 with X-Try-Ultrapeers; when it does not, the probe
# gets the 200, which carries X-Try-Ultrapeers too.
CONFIG = RouterConfig(
    listen=("127.0.0.1", 6346),
    target_peers=0,
    max_peers=1,
    max_ultrapeers=1,
    max_leaves=1,
    bootstrap_enabled=False,
)


@pytest.fixture(scope="module")
def env() -> Iterator[InProcessRouter]:
    router = InProcessRouter(CONFIG)
    yield router
    router.stop()


@pytest.fixture
def fresh_env() -> Iterator[InProcessRouter]:
    """A router of its own, for a test that asserts on what its host cache holds.

    The module's shared router has met every property test's random hosts and
    peers before such a test runs.
    """
    router = InProcessRouter(CONFIG)
    yield router
    router.stop()


# -- header values -------------------------------------------------------------------

ADDRESS_HEADERS = ("Listen-IP", "X-My-Address")
TRY_HEADERS = ("X-Try-Ultrapeers", "X-Try")
NAMES = (
    *ADDRESS_HEADERS,
    *TRY_HEADERS,
    "Node",
    "User-Agent",
    "X-Degree",
    "X-Max-TTL",
    "X-Ultrapeer",
    "X-Ultrapeer-Needed",
    "Remote-IP",
    "Accept-Encoding",
    "Content-Encoding",
    "Vendor-Message",
    "X-Query-Routing",
    "X-Ultrapeer-Query-Routing",
    "X-Dynamic-Querying",
    "Pong-Caching",
    "GGEP",
    "Bye-Packet",
    "X-Features",
)
#: A gtk-gnutella ultrapeer's block, but for two headers we never read.
BASE = tuple(pair for pair in GTK_GNUTELLA_ULTRAPEER if pair[0] not in ("Bye-Packet", "X-Token"))

no_line_breaks = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
TRICKY = "0123456789abcdef.:[]%,; -+\x00\x01\t\x0b\x0c\x1b\x7f\x85\xa0\u2028\u3000\ufeff²٣\uff13İ"
good_endpoint = st.builds(
    lambda ip, port: format_endpoint((str(ip), port)),
    st.ip_addresses(),
    st.integers(1, 65535),
)
endpoint_text = st.one_of(
    st.builds(
        lambda ip, port: format_endpoint((str(ip), port)),
        st.ip_addresses(),
        st.integers(0, 70_000),
    ),
    st.sampled_from(
        [
            "127.0.0.1:²",
            "1.2.3.4\x0bX-Evil: 1:6346",
            "[fe80::1%eth0]:6346",
            "0.0.0.0:6346",
            "127.0.0.1.example:6346",
            "224.0.0.1:6346",
            "fe80::1:6346",
            "1.2.3.4:٣",
        ]
    ),
    st.text(st.sampled_from(TRICKY), max_size=30),
)
#: Mostly good: X-Try-Ultrapeers as servents send it, with the odd poisoned entry.
try_lists = st.one_of(
    st.lists(good_endpoint, min_size=1, max_size=12),
    st.lists(st.one_of(good_endpoint, good_endpoint, endpoint_text), max_size=12),
).map(",".join)
values = st.one_of(
    try_lists,
    st.text(no_line_breaks, max_size=80),
    st.text(st.sampled_from(TRICKY), max_size=40),
    endpoint_text,
    st.lists(endpoint_text, max_size=12).map(",".join),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(
        [
            "True",
            "false",
            " TRUE ",
            "yes",
            "deflate",
            "deflate;q=0",
            "deflate;q=nan",
            "deflate;q=1e999",
            "gzip, deflate;q=0.5",
            "²",
            "0.1",
            "",
        ]
    ),
)
names = st.sampled_from(NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()]))
header_pairs = st.lists(st.tuples(names, values), max_size=10)


@st.composite
def connect_headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A real servent's block with some values replaced or added, names maybe repeated."""
    pairs = list(BASE) if draw(st.booleans()) else []
    if draw(st.booleans()):
        pairs.append((draw(st.sampled_from(TRY_HEADERS)), draw(try_lists)))
    for name, value in draw(header_pairs):
        same = [i for i, (n, _) in enumerate(pairs) if n.lower() == name.lower()]
        replace = draw(st.booleans())
        if same and replace:
            pairs[same[0]] = (name, value)
        else:
            pairs.append((name, value))
    return pairs


def seen_by_router(pairs: list[tuple[str, str]]) -> Headers:
    """The headers as the router's own parser reads our block (values stripped, joined)."""
    ours = Handshake(Role.INITIATOR)
    block = ours.start(Headers(pairs))
    theirs = Handshake(Role.ACCEPTOR)
    (request,) = theirs.receive_data(block)
    assert isinstance(request, ConnectRequest)
    return request.headers


# -- checks ----------------------------------------------------------------------------


def assert_reply_well_formed(events: list[HandshakeEvent]) -> Headers:
    """The router's block parsed; every address it names parses back."""
    assert len(events) >= 1
    first = events[0]
    assert isinstance(first, ConnectRequest | ConnectResponse | HandshakeRefused), events
    headers = first.headers
    for header in ("X-Try-Ultrapeers", "Listen-IP"):
        value = headers.get(header)
        if value is not None:
            found, bad = parse_endpoints(value)
            assert bad == 0 and found, f"{header}: {value!r}"
    Headers(headers.pairs).encode()
    return headers


def assert_cache_clean(env: InProcessRouter) -> None:
    for address in env.cached():
        assert parse_endpoint(format_endpoint(address)) == address, address


def assert_peers_clean(env: InProcessRouter) -> None:
    for peer in env.router.peers:
        assert len(peer.user_agent) <= MAX_TEXT_LENGTH
        assert all(ch.isprintable() for ch in peer.user_agent), repr(peer.user_agent)
        if peer.listen_address is not None:
            address = peer.listen_address
            assert parse_endpoint(format_endpoint(address)) == address


def probe(env: InProcessRouter) -> int:
    """A fresh, well-behaved peer: what the router tells it must be a good block."""
    link = env.open(outgoing=False, host="127.0.0.3")
    try:
        ours = Handshake(Role.INITIATOR)
        reply = env.send(
            link, ours.start(Headers([("User-Agent", "probe"), ("X-Ultrapeer", "True")]))
        )
        events = ours.receive_data(reply)
        headers = assert_reply_well_formed(events)
        assert isinstance(events[0], ConnectResponse | HandshakeRefused), events
        status = events[0].status
        assert status in (200, 503), events
        if status == 503:
            # Full: the refusal points elsewhere, at hosts from the cache.
            assert isinstance(events[0], HandshakeRefused)
            tried, _ = parse_endpoints(headers.get("X-Try-Ultrapeers"))
            assert all(address in env.router.hosts for address in tried)
        # The same headers straight from the policy, as a 503 would carry them.
        policy = env.router.policy
        peer = next(iter(env.router.peers))
        Headers([("X-Try-Ultrapeers", policy.try_hosts(peer, 10))]).encode()
        policy.request_headers(peer).encode()
        return status
    finally:
        env.close(link)


def settle(env: InProcessRouter, *links: Link) -> int:
    """Checks after a case; closes its links; returns the probe's status."""
    assert_peers_clean(env)
    json.dumps(env.router.snapshot())  # what /metrics serves, user agents included
    status = probe(env)
    for link in links:
        env.close(link)
    assert not env.handler_errors()
    assert_cache_clean(env)
    assert len(env.router.peers) == 0, list(env.router.peers)
    return status


# -- properties --------------------------------------------------------------------------


@SETTINGS
@given(
    connect_headers(),
    st.lists(st.tuples(st.sampled_from(NAMES[4:]), values), max_size=4),
)
def test_hostile_values_from_a_servent_that_connects(
    env: InProcessRouter, pairs: list[tuple[str, str]], final_pairs: list[tuple[str, str]]
) -> None:
    seen = seen_by_router(pairs)
    before = {name: env.rejected(name) for name in (*ADDRESS_HEADERS, *TRY_HEADERS)}
    link = env.open(outgoing=False)
    ours = Handshake(Role.INITIATOR)
    events = ours.receive_data(env.send(link, ours.start(Headers(pairs))))
    assert_reply_well_formed(events)
    assert isinstance(events[0], ConnectResponse | HandshakeRefused), events
    event(f"answered {events[0].status}")
    if isinstance(events[0], ConnectResponse):
        env.send(link, ours.confirm(Headers(final_pairs)))
    # Counted once per header and peer; the final block names no address header.
    listen = seen.get("Listen-IP")
    listen_bad = listen is not None and parse_endpoint(listen) is None
    assert env.rejected("Listen-IP") - before["Listen-IP"] == int(listen_bad)
    if listen is None or listen_bad:
        mine = seen.get("X-My-Address")
        mine_bad = mine is not None and parse_endpoint(mine) is None
        assert env.rejected("X-My-Address") - before["X-My-Address"] == int(mine_bad)
    event(f"bad Listen-IP: {listen_bad}")
    for name in TRY_HEADERS:
        found, bad = parse_endpoints(seen.get(name))
        kind = "good and bad" if found and bad else "good" if found else "bad" if bad else "none"
        event(f"{name}: {kind}")
        assert env.rejected(name) - before[name] == int(bad > 0)
        assert all(address in env.router.hosts for address in found)
    event(f"probe answered {settle(env, link)}")


@SETTINGS
@given(header_pairs, st.sampled_from([200, 503]), st.sampled_from(["OK", "Busy", "x" * 200, ""]))
def test_hostile_values_from_a_servent_we_connect_to(
    env: InProcessRouter, pairs: list[tuple[str, str]], status: int, reason: str
) -> None:
    link = env.open(outgoing=True, host="192.0.2.7")
    theirs = Handshake(Role.ACCEPTOR)
    (request,) = theirs.receive_data(link.fresh())
    assert_reply_well_formed([request])
    headers = Headers(pairs)
    data = theirs.accept(headers) if status == 200 else theirs.refuse(status, reason, headers)
    reply = env.send(link, data)
    if status == 200 and reply:
        # Our confirmation (200, with Content-Encoding if negotiated) or a refusal.
        assert_reply_well_formed(theirs.receive_data(reply))
    event(f"we said {status}, then the probe was answered {settle(env, link)}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_in_a_header_line(
    env: InProcessRouter, junk: bytes, outgoing: bool
) -> None:
    """Below the text level: any bytes (invalid UTF-8 included) in a value, CR/LF aside."""
    value = junk.replace(b"\r", b"").replace(b"\n", b"")
    block = b"Listen-IP: " + value + b"\r\nX-Try-Ultrapeers: " + value + b"\r\n\r\n"
    link = env.open(outgoing=outgoing, host="192.0.2.9" if outgoing else "127.0.0.2")
    if outgoing:
        link.fresh()
        env.send(link, b"GNUTELLA/0.6 503 Busy\r\n" + block)
    else:
        reply = env.send(link, b"GNUTELLA CONNECT/0.6\r\n" + block)
        assert reply.startswith(b"GNUTELLA/0.6 ")
        ours = Handshake(Role.INITIATOR)
        ours.start(Headers())
        try:
            assert_reply_well_formed(ours.receive_data(reply))
        except ProtocolError:
            pytest.fail(f"the router wrote a malformed reply: {reply!r}")
    settle(env, link)


# -- examples ------------------------------------------------------------------------


def connect(env: InProcessRouter, pairs: list[tuple[str, str]]) -> Link:
    link = env.open(outgoing=False)
    ours = Handshake(Role.INITIATOR)
    events = ours.receive_data(env.send(link, ours.start(Headers(pairs))))
    if isinstance(events[0], ConnectResponse):
        env.send(link, ours.confirm(Headers()))
    return link


def test_a_bad_listen_ip_is_counted_once_and_not_kept(env: InProcessRouter) -> None:
    before = env.rejected("Listen-IP")
    link = connect(env, [("User-Agent", "x"), ("Listen-IP", "127.0.0.1:²")])
    assert env.rejected("Listen-IP") == before + 1
    (peer,) = env.router.peers
    assert peer.listen_address is None
    assert peer.counters.drops.get("bad-header") == 1
    settle(env, link)


def test_injected_header_in_x_try_ultrapeers_is_dropped_and_counted(
    fresh_env: InProcessRouter,
) -> None:
    env = fresh_env
    before = env.rejected("X-Try-Ultrapeers")
    value = "198.51.100.1:6346,1.2.3.4\x0bX-Evil: 1:6346,[fe80::1%eth0]:6346,0.0.0.0:6346"
    link = connect(env, [("X-Try-Ultrapeers", value), ("X-Ultrapeer", "True")])
    assert env.rejected("X-Try-Ultrapeers") == before + 1
    assert ("198.51.100.1", 6346) in env.router.hosts
    assert all(host not in ("1.2.3.4", "fe80::1", "0.0.0.0") for host, _ in env.cached())
    settle(env, link)


def test_a_good_listen_ip_is_kept_canonical(env: InProcessRouter) -> None:
    before = env.rejected("Listen-IP")
    link = connect(env, [("Listen-IP", " [2001:DB8:0:0::7]:06346 "), ("X-Ultrapeer", "True")])
    (peer,) = env.router.peers
    assert peer.listen_address == ("2001:db8::7", 6346)
    assert env.rejected("Listen-IP") == before
    settle(env, link)


def test_messages_behind_a_refused_final_200_are_not_routed() -> None:
    env = InProcessRouter(
        RouterConfig(
            listen=("127.0.0.1", 6346), target_peers=0, max_leaves=0, bootstrap_enabled=False
        )
    )
    try:
        honest = connect(env, [("X-Ultrapeer", "True")])
        honest.fresh()
        evil = env.open(outgoing=False)
        ours = Handshake(Role.INITIATOR)
        (response,) = ours.receive_data(
            env.send(evil, ours.start(Headers([("X-Ultrapeer", "True")])))
        )
        assert isinstance(response, ConnectResponse)
        request = query("refused but routed")
        env.send(evil, ours.confirm(Headers([("X-Ultrapeer", "False")])) + request.encode())
        peer = evil.wire.peer
        assert peer is not None and peer.close_reason == "503 Too many leaves"
        relayed = [m for m in MessageFramer().feed(honest.fresh()) if m.guid == request.guid]
        assert relayed == []
    finally:
        env.stop()
