"""The host cache: bounded, pinned hosts first, failures backed off, saved and loaded."""

from __future__ import annotations

from pathlib import Path

from gnurouter.mesh.hostcache import HostCache


def test_host_cache_backs_off_failures_and_prefers_pinned() -> None:
    now = [0.0]
    cache = HostCache(max_hosts=3, clock=lambda: now[0])
    cache.add(("10.0.0.1", 1))
    cache.add(("10.0.0.2", 2), pinned=True)
    cache.add(("10.0.0.3", 3))
    assert cache.candidates(set(), 3)[0] == ("10.0.0.2", 2)
    cache.failed(("10.0.0.3", 3))
    assert ("10.0.0.3", 3) not in cache.candidates(set(), 3)
    now[0] += HostCache.BACKOFF_BASE
    assert ("10.0.0.3", 3) in cache.candidates(set(), 3)
    cache.failed(("10.0.0.3", 3))
    now[0] += HostCache.BACKOFF_BASE  # second failure: twice as long
    assert ("10.0.0.3", 3) not in cache.candidates(set(), 3)
    # Bounded: the oldest unpinned host goes, the pinned one stays.
    cache.add(("10.0.0.4", 4))
    assert len(cache) == 3 and ("10.0.0.1", 1) not in cache and ("10.0.0.2", 2) in cache


def test_hosts_file_round_trip(tmp_path: Path) -> None:
    cache = HostCache()
    cache.add(("10.1.1.1", 6346))
    cache.add(("10.1.1.2", 6347))
    path = tmp_path / "hosts"
    cache.save(path)
    again = HostCache()
    assert again.load(path) == 2
    assert ("10.1.1.2", 6347) in again
