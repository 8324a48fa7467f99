"""GWebCache bootstrap: ask HTTP host caches for ultrapeers when the host cache runs dry.

The GWebCache protocol is plain HTTP GET with query parameters.  We send
both generations' requests in one (as Shareaza does):

    GET <cache>?get=1&hostfile=1&net=gnutella&client=GNUR&version=0.1

A version-1 cache answers ``hostfile=1`` with ``IP:PORT`` lines (or a line
starting ``ERROR``); a version-2 cache answers ``get=1`` with typed lines:
``H|IP:PORT|age...`` (a host), ``U|URL|age`` (another cache), ``I|...``
(information).  `parse_response` reads both; hosts go to the host cache as
ultrapeers (caches list hosts that accept connections), cache URLs join our
list.

Etiquette (the caches are volunteers' servers): one request at a time, each
cache asked at most once an hour when it answered, failures backing off
from one minute to an hour, and nothing at all unless the catcher is short
of hosts to try.  `--no-bootstrap` (`bootstrap_enabled = false`) makes no
HTTP request whatever the configuration says.  The HTTP client is treq.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)

CLIENT_CODE = "GNUR"
MAX_BODY = 64 * 1024
MAX_HOSTS_PER_REPLY = 100
MAX_CACHES = 50
REQUEST_TIMEOUT = 20.0
REFRESH_AFTER_SUCCESS = 3600.0
BACKOFF_BASE = 60.0
BACKOFF_MAX = 3600.0


@dataclass
class GWebCacheReply:
    hosts: list[tuple[str, int]] = field(default_factory=list)
    caches: list[str] = field(default_factory=list)
    error: str | None = None


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast:
        return None
    return str(address), int(port)


def parse_response(body: bytes) -> GWebCacheReply:
    """Hosts, cache URLs or an error from a GWebCache reply (version 1 or 2)."""
    reply = GWebCacheReply()
    text = body.decode("utf-8", errors="replace")
    if "<html" in text[:512].lower():
        reply.error = "cache answered with an HTML page"
        return reply
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.upper().startswith("ERROR"):
            reply.error = line[:200]
            continue
        if len(line) > 2 and line[1] == "|":
            kind, fields = line[0].upper(), line[2:].split("|")
            if kind == "H" and fields:
                host = _host_port(fields[0])
                if host is not None and len(reply.hosts) < MAX_HOSTS_PER_REPLY:
                    reply.hosts.append(host)
            elif kind == "U" and fields:
                url = fields[0].strip()
                if url.lower().startswith(("http://", "https://")):
                    reply.caches.append(url)
            continue  # "I|..." and other typed lines carry information only
        host = _host_port(line)
        if host is not None and len(reply.hosts) < MAX_HOSTS_PER_REPLY:
            reply.hosts.append(host)
        elif line.lower().startswith(("http://", "https://")):
            reply.caches.append(line)
    return reply


def request_url(cache: str, version: str) -> str:
    query = urlencode(
        {"get": 1, "hostfile": 1, "net": "gnutella", "client": CLIENT_CODE, "version": version}
    )
    return f"{cache}{'&' if urlsplit(cache).query else '?'}{query}"


@dataclass
class CacheState:
    url: str
    requests: int = 0
    failures: int = 0
    retry_at: float = 0.0
    hosts_received: int = 0
    last_error: str | None = None
    learned: bool = False  # came from another cache's U| line


class _TooLarge(Exception):
    pass


class GWebCacheBootstrap:
    """Asks GWebCaches for hosts, politely, when `wanted()` says the catcher is short."""

    def __init__(
        self,
        urls: list[str],
        *,
        reactor: Any,
        deliver: Callable[[list[tuple[str, int]]], None] | None = None,
        enabled: bool = True,
        version: str = "0.1",
        clock: Callable[[], float] = time.monotonic,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.enabled = enabled
        self.version = version
        self.deliver = deliver
        self.timeout = timeout
        self._clock = clock
        self.caches: dict[str, CacheState] = {url: CacheState(url) for url in urls}
        self.requests = 0
        self.failures = 0
        self.hosts_received = 0
        self._in_flight: Any = None  # the Deferred of the request under way
        self._client: Any = None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def _http(self) -> Any:
        if self._client is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            pool = HTTPConnectionPool(self.reactor, persistent=False)
            self._client = HTTPClient(Agent(self.reactor, pool=pool))  # type: ignore[arg-type]
        return self._client

    def next_cache(self) -> CacheState | None:
        now = self._clock()
        ready = [state for state in self.caches.values() if state.retry_at <= now]
        if not ready:
            return None
        # Configured caches before learned ones, the least asked first.
        ready.sort(key=lambda state: (state.learned, state.requests))
        return ready[0]

    def wanted(self) -> bool:
        """The catcher is short of hosts: ask one cache, if etiquette allows. True if asked."""
        if not self.enabled or self._in_flight is not None:
            return False
        state = self.next_cache()
        if state is None:
            return False
        self._ask(state)
        return True

    def _ask(self, state: CacheState) -> None:
        import treq

        state.requests += 1
        self.requests += 1
        url = request_url(state.url, self.version)
        log.info("asking GWebCache %s for hosts", state.url)
        body = bytearray()

        def collect(data: bytes) -> None:
            body.extend(data)
            if len(body) > MAX_BODY:
                raise _TooLarge()

        def got_response(response: Any) -> Any:
            if response.code != 200:
                raise RuntimeError(f"HTTP {response.code}")
            return treq.collect(response, collect)

        request = self._http().get(
            url,
            headers={"User-Agent": [f"gnurouter/{self.version}"], "Cache-Control": ["no-cache"]},
            timeout=self.timeout,
        )
        request.addCallback(got_response)
        request.addCallbacks(
            lambda _: self._answered(state, bytes(body)),
            lambda failure: self._failed(state, failure.getErrorMessage() or repr(failure.value)),
        )
        request.addBoth(self._done)
        if self._in_flight is None and not request.called:
            self._in_flight = request

    def _done(self, _: object) -> None:
        self._in_flight = None

    def _answered(self, state: CacheState, body: bytes) -> None:
        reply = parse_response(body)
        if reply.error is not None and not reply.hosts:
            self._failed(state, reply.error)
            return
        state.failures = 0
        state.last_error = None
        state.retry_at = self._clock() + REFRESH_AFTER_SUCCESS
        state.hosts_received += len(reply.hosts)
        self.hosts_received += len(reply.hosts)
        for url in reply.caches:
            if url not in self.caches and len(self.caches) < MAX_CACHES:
                self.caches[url] = CacheState(url, learned=True)
        log.info(
            "GWebCache %s: %d hosts, %d caches", state.url, len(reply.hosts), len(reply.caches)
        )
        if reply.hosts and self.deliver is not None:
            self.deliver(reply.hosts)

    def _failed(self, state: CacheState, reason: str) -> None:
        self.failures += 1
        state.failures += 1
        state.last_error = reason[:200]
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (state.failures - 1))
        state.retry_at = self._clock() + delay
        log.info("GWebCache %s failed (%s); next try in %.0fs", state.url, reason, delay)

    def stop(self) -> None:
        if self._in_flight is not None:
            self._in_flight.cancel()

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "requests": self.requests,
            "failures": self.failures,
            "hosts_received": self.hosts_received,
            "in_flight": self._in_flight is not None,
            "caches": [
                {
                    "url": state.url,
                    "requests": state.requests,
                    "failures": state.failures,
                    "hosts_received": state.hosts_received,
                    "last_error": state.last_error,
                    "learned": state.learned,
                }
                for state in self.caches.values()
            ],
        }
