"""UDP host cache bootstrap: one cache at a time, back-off per cache, GWebCaches after."""

from __future__ import annotations

from gnurouter.mesh.bootstrap import BACKOFF_BASE, REFRESH_AFTER_SUCCESS
from gnurouter.mesh.uhc import UHC_TIMEOUT, BootstrapChain, UhcBootstrap
from tests.fixtures import ManualClock

A, B = ("203.0.113.1", 9999), ("uhc.example.net", 1234)


class FakeGWebCache:
    def __init__(self) -> None:
        self.enabled = True
        self.asked = 0

    def wanted(self) -> bool:
        self.asked += 1
        return True


def bootstrap(clock: ManualClock) -> tuple[UhcBootstrap, list[tuple[str, int]]]:
    asked: list[tuple[str, int]] = []
    return UhcBootstrap([A, B], request=asked.append, clock=clock), asked


def test_one_cache_at_a_time_and_the_least_asked_first() -> None:
    clock = ManualClock()
    uhc, asked = bootstrap(clock)
    assert uhc.wanted() and asked == [A]
    assert uhc.wanted() and asked == [A]  # waiting for A's pong
    clock.now += UHC_TIMEOUT
    assert uhc.wanted() and asked == [A, B]  # A timed out; B now
    assert uhc.caches[A].failures == 1 and uhc.caches[A].retry_at == clock.now + BACKOFF_BASE


def test_a_cache_that_answered_with_hosts_rests_an_hour_and_empty_answers_back_off() -> None:
    clock = ManualClock()
    uhc, asked = bootstrap(clock)
    uhc.wanted()
    uhc.answered(A, 25)
    assert not uhc.busy and uhc.caches[A].retry_at == clock.now + REFRESH_AFTER_SUCCESS
    uhc.wanted()
    uhc.answered(B, 0)
    assert uhc.caches[B].last_error == "answered with no host"
    assert not uhc.wanted()  # both resting: nothing asked
    assert asked == [A, B] and uhc.hosts_received == 25
    clock.now += BACKOFF_BASE
    assert uhc.wanted() and asked[-1] == B
    clock.now += UHC_TIMEOUT
    uhc.wanted()
    assert uhc.caches[B].retry_at == clock.now + 2 * BACKOFF_BASE  # doubling


def test_the_chain_asks_gwebcaches_only_when_no_uhc_is_ready_and_nothing_when_disabled() -> None:
    clock = ManualClock()
    uhc, asked = bootstrap(clock)
    gwebcache = FakeGWebCache()
    chain = BootstrapChain(uhc, gwebcache)  # type: ignore[arg-type]
    gwebcache.enabled = False
    assert not chain.wanted() and asked == [] and gwebcache.asked == 0
    gwebcache.enabled = True
    assert chain.wanted() and asked == [A] and gwebcache.asked == 0
    uhc.answered(A, 3)
    chain.wanted()
    uhc.answered(B, 3)
    assert chain.wanted() and gwebcache.asked == 1  # both UHCs resting
