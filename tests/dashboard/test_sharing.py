"""Pollers share the routers through leases: a split every poller computes alike, and a
poller that dies has its routers taken by the others within a few seconds."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from dashboard.routers import sharing
from dashboard.routers.models import PollerLease, Router
from tests.dashboard.conftest import (
    OutputWatch,
    RouterProcess,
    dashboard_env,
    manage_py,
    require_postgresql,
)


def test_every_router_has_exactly_one_poller_and_the_split_is_even() -> None:
    pollers = ["alpha:1:aa", "beta:2:bb", "gamma:3:cc"]
    shares = [sharing.share(range(3000), pollers, me) for me in pollers]
    assert set().union(*shares) == set(range(3000))
    assert sum(len(s) for s in shares) == 3000  # disjoint
    assert all(800 < len(s) < 1200 for s in shares)
    # Any order of the names gives the same split: pollers need not agree on a list order.
    assert shares == [sharing.share(range(3000), pollers[::-1], me) for me in pollers]
    assert sharing.owner(5, []) is None


def test_a_poller_that_joins_takes_routers_only_from_the_others_share() -> None:
    before = {r: sharing.owner(r, ["a", "b"]) for r in range(1000)}
    after = {r: sharing.owner(r, ["a", "b", "c"]) for r in range(1000)}
    moved = {r for r in before if before[r] != after[r]}
    assert moved and all(after[r] == "c" for r in moved)
    assert 250 < len(moved) < 420  # about a third


def test_leases_expire_on_the_database_clock(db: Any) -> None:
    assert sharing.renew("p1", 60) == ["p1"]
    assert sharing.renew("p2", 60, routers=[1, 2]) == ["p1", "p2"]
    PollerLease.objects.filter(name="p1").update(expires="2000-01-01T00:00:00Z")
    assert [lease.name for lease in sharing.live()] == ["p2"]
    assert sharing.renew("p2", 60) == ["p2"]  # the expired lease is dropped
    sharing.release("p2")
    assert sharing.live() == []


def _database_url() -> str:
    """The test database (pytest-django's), for the poller processes."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _watching(output: OutputWatch, name: str, timeout: float, start: int = 0) -> None:
    output.wait_for(rf"watching {name} at ", timeout=timeout, start=start)


@pytest.mark.network
@pytest.mark.django_db(transaction=True)
def test_two_pollers_split_the_routers_and_the_survivor_takes_over(
    shared_router: RouterProcess, tmp_path: Path
) -> None:
    require_postgresql()
    routers = [
        Router.objects.create(
            name=f"shared-{i}", base_url=shared_router.base_url, token=shared_router.token
        )
        for i in range(8)
    ]
    ids = {r.pk: r.name for r in routers}
    first, second = "poller-a", "poller-b"
    share_of_first = sharing.share(ids, [first, second], first)
    share_of_second = set(ids) - share_of_first
    assert share_of_first and share_of_second  # (a fact of these names and ids)
    env = dashboard_env(tmp_path, DATABASE_URL=_database_url())
    ttl, renew = settings.POLLER_LEASE_TTL, settings.POLLER_LEASE_RENEW
    with manage_py(env, "watch_routers", "--name", first, name=first) as (process_a, out_a):
        for pk in ids:  # alone, it takes every router
            _watching(out_a, ids[pk], timeout=30)
        with manage_py(env, "watch_routers", "--name", second, name=second) as (_, out_b):
            for pk in share_of_second:  # the newcomer takes its share from the first
                _watching(out_b, ids[pk], timeout=30)
                out_a.wait_for(rf"no longer watching {ids[pk]}$", timeout=2 * renew + 5)
            for pk in share_of_first:
                out_a.wait_for(rf"{ids[pk]} is up", timeout=10)
            leases = {lease.name: set(lease.routers) for lease in sharing.live()}
            assert set(leases) == {first, second}

            mark = len(out_b.lines)
            process_a.send_signal(signal.SIGKILL)  # no goodbye: its lease just stops
            killed = time.monotonic()
            process_a.wait(timeout=10)
            for pk in share_of_first:
                _watching(out_b, ids[pk], timeout=ttl + renew + 5, start=mark)
            took_over = time.monotonic() - killed
            for pk in share_of_first:
                out_b.wait_for(rf"{ids[pk]} is up", timeout=10, start=mark)
    assert took_over <= ttl + renew + 1.5, took_over
