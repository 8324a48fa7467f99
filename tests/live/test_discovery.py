"""Finding peers: a local GWebCache, --no-bootstrap, the host cache across restarts, the catcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.web import resource, server

from gnurouter.cli import build_parser, config_from_args
from gnurouter.mesh.bootstrap import parse_response, request_url
from gnurouter.mesh.hostcache import HostCache
from tests.fixtures import GTK_GNUTELLA_ULTRAPEER, LIMEWIRE_LEAF, Listening, join, until, wait_for


class FakeGWebCache(resource.Resource):
    """A GWebCache on 127.0.0.1, answering like a version-2 cache."""

    isLeaf = True

    def __init__(self, hosts: list[tuple[str, int]]) -> None:
        super().__init__()
        self.hosts = hosts
        self.requests: list[dict[bytes, list[bytes]]] = []

    def render_GET(self, request: Any) -> bytes:
        self.requests.append(dict(request.args))
        lines = ["I|pong|FakeCache 1.0|gnutella"]
        lines += [f"H|{host}:{port}|120" for host, port in self.hosts]
        lines += ["U|http://127.0.0.1:1/other-cache.php|3600"]
        request.setHeader(b"content-type", b"text/plain")
        return ("\n".join(lines) + "\n").encode()


def serve(cache: FakeGWebCache) -> tuple[Listening, str]:
    listening = Listening(server.Site(cache))
    return listening, f"http://127.0.0.1:{listening.address[1]}/gwc.php"


def test_replies_of_both_cache_generations_are_understood() -> None:
    v1 = parse_response(b"10.0.0.1:6346\r\n10.0.0.2:6347\r\n")
    assert v1.hosts == [("10.0.0.1", 6346), ("10.0.0.2", 6347)] and v1.error is None
    v2 = parse_response(
        b"I|pong|Cache|gnutella-gnutella2\nH|10.0.0.3:6346|55|GTKG\n"
        b"h|10.0.0.4:6348|10\nU|http://gwc.example/cache.php|300\nH|nonsense|1\n"
    )
    assert v2.hosts == [("10.0.0.3", 6346), ("10.0.0.4", 6348)]
    assert v2.caches == ["http://gwc.example/cache.php"]
    assert parse_response(b"ERROR: Client not allowed\n").error == "ERROR: Client not allowed"
    assert parse_response(b"<html><body>404</body></html>").error is not None
    url = request_url("http://gwc.example/cache.php", "0.1")
    assert url.startswith("http://gwc.example/cache.php?get=1&hostfile=1&net=gnutella")
    assert "client=GNUR" in url
    assert request_url("http://gwc.example/c?x=1", "0.1").startswith("http://gwc.example/c?x=1&")


@pytest_twisted.ensureDeferred
async def test_gwebcache_bootstrap_finds_an_ultrapeer(start_router: Any) -> None:
    far = start_router()
    cache = FakeGWebCache([far.listening_address()])
    port, url = serve(cache)
    try:
        router = start_router(target_peers=1, bootstrap=[url])
        router._tick("catcher", "catch")
        await wait_for(router, lambda: any(p.outgoing for p in router.peers.established()))
        [peer] = router.peers.established()
        assert peer.address == far.listening_address() and peer.role == "ultrapeer"
        [args] = cache.requests
        assert args[b"hostfile"] == [b"1"] and args[b"get"] == [b"1"]
        assert args[b"net"] == [b"gnutella"] and args[b"client"] == [b"GNUR"]
        entry = router.hosts.get(far.listening_address())
        assert entry is not None and entry.source == "gwebcache" and entry.ultrapeer
        state = router.snapshot()["router"]["bootstrap"]
        assert state["requests"] == 1 and state["hosts_received"] == 1
        # The cache it mentioned joined the list (asked only when needed, later).
        assert [c["url"] for c in state["caches"]][1] == "http://127.0.0.1:1/other-cache.php"
        # Once answered, a cache is left alone for an hour: no second request.
        router._tick("catcher", "catch")
        assert router.bootstrap.next_cache() is not None  # only the learned one is ready
    finally:
        await port.stop()


@pytest_twisted.ensureDeferred
async def test_no_bootstrap_makes_no_http_request(start_router: Any) -> None:
    far = start_router()
    cache = FakeGWebCache([far.listening_address()])
    port, url = serve(cache)
    try:
        router = start_router(target_peers=1, bootstrap=[url], bootstrap_enabled=False)
        catcher = router.stages["catcher"].handler
        router._tick("catcher", "catch")
        # The catcher wanted an ultrapeer and had no host to offer it.
        await until(lambda: catcher.starved_ticks >= 1)
        assert cache.requests == [] and router.bootstrap.requests == 0
        assert router.peers.established() == []
        # The same router with the switch on asks at once: the test could fail.
        router.control.set("bootstrap.enabled", True)
        router._tick("catcher", "catch")
        await until(lambda: len(cache.requests) == 1)
    finally:
        await port.stop()


def test_no_bootstrap_on_the_command_line() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--bootstrap",
            "http://127.0.0.1:9/a",
            "--bootstrap",
            "http://127.0.0.1:9/b",
            "--no-bootstrap",
            "--max-ultrapeers",
            "20",
            "--max-leaves",
            "5",
        ]
    )
    config = config_from_args(args)
    assert config.bootstrap == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    assert config.bootstrap_enabled is False
    assert (config.max_ultrapeers, config.max_leaves) == (20, 5)


@pytest_twisted.ensureDeferred
async def test_host_cache_survives_a_restart_with_what_it_knew(
    start_router: Any, tmp_path: Path
) -> None:
    hosts_file = tmp_path / "hosts"
    first = start_router(hosts_file=str(hosts_file))
    # An ultrapeer tells us about others in its handshake ...
    await join(
        first,
        headers=(*GTK_GNUTELLA_ULTRAPEER, ("X-Try-Ultrapeers", "10.7.7.7:6346,10.7.7.8:6346")),
    )
    await until(lambda: ("10.7.7.8", 6346) in first.hosts)
    # ... and one host we know of turned out dead.
    first.hosts.add(("10.7.7.9", 6346))
    first.hosts.failed(("10.7.7.9", 6346))
    await first.stopService()
    text = hosts_file.read_text()
    assert "10.7.7.7:6346" in text and "up=1" in text and "src=x-try-ultrapeers" in text

    second = start_router(hosts_file=str(hosts_file), target_peers=0)
    entry = second.hosts.get(("10.7.7.7", 6346))
    assert entry is not None and entry.ultrapeer and entry.source == "x-try-ultrapeers"
    dead = second.hosts.get(("10.7.7.9", 6346))
    assert dead is not None and dead.failures == 1
    # Still backing off after the restart: not offered as a candidate.
    assert ("10.7.7.9", 6346) not in second.hosts.candidates(set(), 10)
    assert ("10.7.7.7", 6346) in second.hosts.candidates(set(), 10)


def test_missing_own_hosts_file_starts_empty_and_old_plain_files_load(tmp_path: Path) -> None:
    cache = HostCache()
    assert cache.load(tmp_path / "absent", missing_ok=True) == 0
    plain = tmp_path / "plain"
    plain.write_text("# hand written\n10.0.0.1:6346\n[::1]:6347\nbad line\n")
    assert cache.load(plain) == 2
    assert ("::1", 6347) in cache
    cache.save(tmp_path / "out")
    again = HostCache()
    assert again.load(tmp_path / "out") == 2


@pytest_twisted.ensureDeferred
async def test_catcher_counts_ultrapeer_links_in_both_directions_not_leaves(
    start_router: Any,
) -> None:
    far = start_router()
    router = start_router(target_peers=1)
    await join(router, headers=LIMEWIRE_LEAF)  # a leaf is no ultrapeer link
    await join(router, headers=GTK_GNUTELLA_ULTRAPEER)  # an incoming ultrapeer is one
    router.hosts.add(far.listening_address())
    catcher = router.stages["catcher"].handler
    before = catcher.attempts
    router._tick("catcher", "catch")
    await until(lambda: catcher.ultrapeer_links() == (1, 2))
    assert catcher.attempts == before  # target met: no outgoing connection
    router.control.set("catcher.target_peers", 2)
    router._tick("catcher", "catch")
    await wait_for(router, lambda: any(p.outgoing for p in router.peers.established()))
    assert catcher.attempts == before + 1
