"""The inflate budget: what a deflated link may cost, sans I/O, on an injected clock."""

from __future__ import annotations

import os
import zlib

import pytest

from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.deflate import (
    DEFAULT_INFLATE_LIMITS,
    INFLATE_BUDGET_BYE,
    Deflater,
    InflateBudget,
    InflateBudgetExceeded,
    InflateLimits,
    Inflater,
)
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.handshake import Headers, Role
from gnurouter.protocol.messages import Message, Ping, Pong, Query, encode_all, new_guid

KIB = 1024
MIB = 1024 * 1024


def stream_of(chunks: list[bytes]) -> list[bytes]:
    """Each chunk deflated and sync-flushed, as one link's successive writes."""
    compressor = zlib.compressobj(9)
    return [compressor.compress(c) + compressor.flush(zlib.Z_SYNC_FLUSH) for c in chunks]


def honest_traffic(count: int) -> bytes:
    """A real mix: queries, keepalive pings, pongs; fresh GUIDs (what compresses least)."""
    messages: list[Message] = []
    for i in range(count):
        messages.append(Message.from_body(new_guid(), 4, 0, Query(0x8000, f"artist {i % 50} ogg")))
        messages.append(Message.from_body(new_guid(), 1, 0, Ping()))
        messages.append(Message.from_body(new_guid(), 1, 1, Pong(6346, f"10.0.{i % 256}.1", i, i)))
    return encode_all(messages)


def deflated_acceptor(limits: InflateLimits = DEFAULT_INFLATE_LIMITS) -> PeerConnection:
    """An acceptor whose incoming stream is deflated, right after the handshake."""
    conn = PeerConnection(Role.ACCEPTOR, inflate_limits=limits)
    conn.receive_data(b"GNUTELLA CONNECT/0.6\r\nAccept-Encoding: deflate\r\n\r\n")
    conn.accept(Headers([("Content-Encoding", "deflate"), ("Accept-Encoding", "deflate")]))
    conn.receive_data(b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n")
    assert conn.established and conn.deflate_in
    return conn


# -- the ratio ---------------------------------------------------------------------------


def test_a_stream_of_tiny_identical_messages_is_refused_on_its_first_judged_read() -> None:
    # The attack: zeros frame as 23-byte TTL-0 pings; ~1 KB on the wire
    # inflates to just under the 1 MiB per-read cap (about 1000:1).
    [bomb] = stream_of([bytes(MIB - 1000)])
    assert len(bomb) < 2 * KIB
    inflater = Inflater(budget=InflateBudget())
    with pytest.raises(InflateBudgetExceeded) as info:
        inflater.decompress(bomb)
    assert info.value.bye_code == INFLATE_BUDGET_BYE == 400
    assert info.value.limit == "inflate-ratio"
    assert "deflate ratio" in str(info.value) and "100:1" in str(info.value)
    assert inflater.budget is not None and inflater.budget.ratio_trips == 1
    # Sticky, like every other inflate failure.
    with pytest.raises(InflateBudgetExceeded):
        inflater.decompress(b"")


def test_the_ratio_is_only_judged_over_a_window_of_inflated_bytes() -> None:
    # Less than a window of inflated bytes is never judged, however high its
    # ratio: a short session says nothing about a stream.
    limits = InflateLimits(ratio_window=64 * KIB)
    inflater = Inflater(budget=InflateBudget(limits))
    small, more = stream_of([bytes(60 * KIB), bytes(8 * KIB)])
    assert len(small) * 100 < 60 * KIB
    assert len(inflater.decompress(small)) == 60 * KIB
    # The read that fills the window is judged, at ~1000:1: refused.
    with pytest.raises(InflateBudgetExceeded):
        inflater.decompress(more)


def test_honest_traffic_passes_far_below_the_ratio() -> None:
    data = honest_traffic(30_000)  # ~4 MB inflated
    chunks = [data[i : i + 64 * KIB] for i in range(0, len(data), 64 * KIB)]
    budget = InflateBudget()
    inflater = Inflater(budget=budget)
    out = b"".join(inflater.decompress(c, now=i * 1.0) for i, c in enumerate(stream_of(chunks)))
    assert out == data
    assert budget.inflated == len(data) > 4 * DEFAULT_INFLATE_LIMITS.ratio_window
    # Real traffic deflates a few times over: far from 100:1.
    assert 1.5 < budget.inflated / budget.compressed < 10
    assert budget.ratio_trips == budget.rate_trips == 0


def test_the_window_follows_the_stream_as_it_is_now() -> None:
    # 4 MiB of incompressible data, then a high-ratio stream: the old,
    # well-behaved bytes age out of the window and cannot hide the new ones
    # for long.
    limits = InflateLimits(ratio_window=64 * KIB)
    budget = InflateBudget(limits)
    budget.charge(4 * MIB, 4 * MIB)
    reads = 0
    with pytest.raises(InflateBudgetExceeded):
        for reads in range(1, 1000):  # noqa: B007 - counted below
            budget.charge(64, 64 * KIB)
    # Each read halves the old history at most once per window: a few dozen
    # reads, not the 60,000 that 4 MiB of credit would buy at 1000:1.
    assert reads < 100


def test_a_stream_just_under_the_ratio_passes() -> None:
    limits = InflateLimits(max_ratio=100, ratio_window=64 * KIB)
    budget = InflateBudget(limits)
    for _ in range(200):
        budget.charge(700, 64 * KIB)  # 93:1
    assert budget.ratio_trips == 0
    assert 90 < budget.ratio < 100


# -- the rate ----------------------------------------------------------------------------


def test_inflated_bytes_per_second_are_bounded_on_the_callers_clock() -> None:
    limits = InflateLimits(max_ratio=0, max_rate=1 * MIB, rate_burst=2 * MIB)
    budget = InflateBudget(limits)
    # The burst: two MiB at once.
    budget.charge(MIB, MIB, now=100.0)
    budget.charge(MIB, MIB, now=100.0)
    # Half a second later, half a MiB of room has come back; not a full MiB.
    budget.charge(KIB, 512 * KIB, now=100.5)
    with pytest.raises(InflateBudgetExceeded) as info:
        budget.charge(KIB, 64 * KIB, now=100.5)
    assert info.value.limit == "inflate-rate" and info.value.bye_code == 400
    assert budget.rate_trips == 1


def test_a_steady_stream_at_the_rate_passes_forever() -> None:
    budget = InflateBudget(InflateLimits(max_ratio=0, max_rate=1 * MIB, rate_burst=1 * MIB))
    for second in range(1000):
        budget.charge(MIB, MIB, now=float(second))
    assert budget.rate_trips == 0


def test_without_a_clock_only_the_ratio_applies() -> None:
    budget = InflateBudget(InflateLimits(max_ratio=0, max_rate=1 * MIB, rate_burst=1 * MIB))
    for _ in range(100):
        budget.charge(MIB, MIB)  # no `now`: nothing to pace against
    assert budget.rate_trips == 0


def test_a_clock_going_backwards_refills_nothing() -> None:
    budget = InflateBudget(InflateLimits(max_ratio=0, max_rate=1 * MIB, rate_burst=1 * MIB))
    budget.charge(MIB, MIB, now=50.0)
    with pytest.raises(InflateBudgetExceeded):
        budget.charge(KIB, KIB, now=10.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_ratio": 0.5},
        {"ratio_window": 16 * KIB},
        {"max_rate": 1.0, "rate_burst": KIB},
        {"max_rate": -1.0},
    ],
)
def test_unusable_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        InflateLimits(**kwargs)  # type: ignore[arg-type]


# -- through a connection ---------------------------------------------------------------


def test_a_connection_refuses_the_bomb_before_framing_any_of_it() -> None:
    conn = deflated_acceptor()
    honest = Message.from_body(new_guid(), 1, 0, Ping())
    compressor = zlib.compressobj(9)
    first = compressor.compress(honest.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert conn.receive_data(first) == [honest]
    bomb = compressor.compress(bytes(MIB - 1000)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(InflateBudgetExceeded) as info:
        conn.receive_data(bomb)  # not ~45,000 pings: nothing of it is framed
    assert isinstance(info.value, ProtocolError) and info.value.bye_code == 400
    assert conn.failed is info.value
    assert conn.buffered == 0
    budget = conn.inflate_budget
    assert budget is not None and budget.ratio_trips == 1
    with pytest.raises(ProtocolError):
        conn.receive_data(b"")


def test_a_connection_paces_inflation_on_the_now_it_is_given() -> None:
    limits = InflateLimits(max_ratio=0, max_rate=1 * MIB, rate_burst=1 * MIB)
    conn = deflated_acceptor(limits)
    # Incompressible payloads (random bytes in a query's criteria area): the
    # ratio is not what trips here.
    payload = b"\x00\x00" + os.urandom(1000).replace(b"\x00", b"x") + b"\x00"
    batch = encode_all([Message(new_guid(), 0x80, 3, 0, payload) for _ in range(400)])
    deflater = Deflater()
    wire = [deflater.compress(batch) for _ in range(4)]  # ~400 KiB inflated each
    assert len(conn.receive_data(wire[0], now=0.0)) == 400
    assert len(conn.receive_data(wire[1], now=0.05)) == 400
    with pytest.raises(InflateBudgetExceeded) as info:
        conn.receive_data(wire[2], now=0.1)  # 1.2 MB in 0.1 s: past 1 MiB + 0.1 MiB
    assert info.value.limit == "inflate-rate"
    # The same writes a second apart are well within 1 MiB/s.
    paced = deflated_acceptor(limits)
    for second, chunk in enumerate(wire):
        assert len(paced.receive_data(chunk, now=float(second))) == 400


def test_an_undeflated_link_has_no_budget() -> None:
    conn = PeerConnection(Role.ACCEPTOR)
    conn.receive_data(b"GNUTELLA CONNECT/0.6\r\n\r\n")
    conn.accept(Headers())
    conn.receive_data(b"GNUTELLA/0.6 200 OK\r\n\r\n")
    assert conn.established and conn.inflate_budget is None
    assert len(conn.receive_data(bytes(23 * 1000), now=0.0)) == 1000
