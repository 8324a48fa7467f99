"""The catcher keeps the router at its target peer count; the host cache feeds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from gnurouter.mesh.hostcache import HostCache
from gnurouter.protocol.messages import Message, Ping, Pong, new_guid
from tests.conftest import join, wait_for


def outgoing_established(router: Any) -> int:
    return sum(1 for peer in router.peers.established() if peer.outgoing)


@pytest_twisted.ensureDeferred
async def test_catcher_connects_to_hosts_file_and_replaces_lost_links(
    start_router: Any, tmp_path: Path
) -> None:
    upstream = [start_router(), start_router()]
    hosts_file = tmp_path / "hosts.txt"
    lines = [f"{h}:{p}" for h, p in (r.listening_address() for r in upstream)]
    hosts_file.write_text("# known ultrapeers\n" + "\n".join(lines) + "\nnot-an-address\n")
    router = start_router(target_peers=2, hosts_file=str(hosts_file))
    await wait_for(router, lambda: outgoing_established(router) == 2)
    # Kill one link from the far side: the catcher notices and reconnects.
    victim = upstream[0]
    [link] = list(victim.peers)
    link.link.abort()
    await wait_for(router, lambda: outgoing_established(router) == 1)
    router._tick("catcher", "catch")  # the 2 s timer, fired now rather than waited for
    await wait_for(router, lambda: outgoing_established(router) == 2)


@pytest_twisted.ensureDeferred
async def test_pongs_teach_the_catcher_new_hosts(start_router: Any) -> None:
    far = start_router()
    router = start_router(target_peers=1)
    servent = await join(router)
    # A pong answering the router's own ping teaches it `far`'s address.
    host, port = far.listening_address()
    ping = router.routing.originate_ping()
    servent.send(Message.from_body(ping.guid, 1, 0, Pong(port=port, ip=host, files=0, kbytes=0)))
    # The router routes this peer's messages in order, so once our next ping
    # is answered, the pong has been handled and its host handed to the catcher.
    probe = new_guid()
    servent.send(Message.from_body(probe, 1, 0, Ping()))
    await servent.next_message(reactor, lambda m: m.guid == probe)
    router._tick("catcher", "catch")
    await wait_for(router, lambda: outgoing_established(router) == 1)
    [peer] = [p for p in router.peers.established() if p.outgoing]
    assert peer.address == (host, port)


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
