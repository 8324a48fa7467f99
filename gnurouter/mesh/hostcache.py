"""Servents we have heard of, what we know of each, and when it is worth trying again.

Fed by pongs, X-Try-Ultrapeers / X-Try headers, the handshakes of our
neighbours, GWebCaches and the hosts file; persisted to the hosts file
(`save`/`load`) so a restart does not begin from nothing.

The hosts file is one host per line, ``HOST:PORT`` then optional
``key=value`` fields, ``#`` starting a comment::

    # gnurouter host cache
    203.0.113.5:6346 seen=1718000000 ok=1717990000 up=1 src=x-try-ultrapeers
    198.51.100.7:6348 seen=1718000100 fail=3 retry=1718003700 src=pong

``seen``: last heard of, ``ok``: last connected to, ``ans``: last answered
a UDP ping itself (all Unix time),
``fail``: consecutive failures, ``retry``: not before (Unix time), ``up=1``:
known ultrapeer, ``src``: where it was first learned.  Plain ``HOST:PORT``
lines (a hand-written file) load as fresh entries.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gnurouter.config import ConfigError, parse_address
from gnurouter.protocol.addresses import parse_host

log = logging.getLogger(__name__)

#: Sources that vouch for a host being an ultrapeer.
ULTRAPEER_SOURCES = frozenset({"x-try-ultrapeers", "handshake-ultrapeer", "gwebcache", "uhc"})
#: Sources that are the host itself answering us (a solicited UDP pong).
ANSWERED_SOURCES = frozenset({"udp-pong"})
#: A host that answered this recently (seconds) is tried before others.
RECENT_ANSWER = 3600.0


@dataclass
class HostEntry:
    last_seen: float
    failures: int = 0
    retry_at: float = 0.0
    pinned: bool = False
    ultrapeer: bool = False
    source: str = "pong"
    last_success: float | None = None
    connections: int = 0
    #: When it last answered us itself (a UDP pong), monotonic.
    last_answered: float | None = None


class HostCache:
    """Addresses of servents, bounded; failures back off exponentially.

    The least recently heard-of unpinned host goes first when full.  Failed
    hosts back off (30 s doubling to one hour) so a dead entry costs a
    connection attempt now and then, not every catcher tick.  Candidates for
    connecting and for X-Try-Ultrapeers rank pinned hosts, then hosts we
    connected to, then known ultrapeers, then the most recently heard of.
    """

    BACKOFF_BASE = 30.0
    BACKOFF_MAX = 3600.0
    #: Hosts not heard of for this long are not loaded back from the hosts file.
    MAX_AGE = 14 * 86_400.0

    def __init__(
        self,
        max_hosts: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_hosts = max_hosts
        self._clock = clock
        self._wall = wall_clock
        self._hosts: OrderedDict[tuple[str, int], HostEntry] = OrderedDict()
        self.learned: dict[str, int] = {}  # hosts learned, by source
        self.rejected = 0  # addresses refused as unusable (bad host or port)

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, address: object) -> bool:
        return address in self._hosts

    def get(self, address: tuple[str, int]) -> HostEntry | None:
        return self._hosts.get(address)

    def add(
        self,
        address: tuple[str, int],
        *,
        pinned: bool = False,
        source: str = "pong",
        ultrapeer: bool | None = None,
    ) -> None:
        # The one gate every host passes (pongs, headers, GWebCaches, files):
        # what is cached is repeated to others in X-Try-Ultrapeers.
        host, port = address
        if not 0 < port <= 65535 or parse_host(host) != host or host in ("0.0.0.0", "::"):
            self.rejected += 1
            return
        now = self._clock()
        entry = self._hosts.pop(address, None)
        if entry is None:
            entry = HostEntry(last_seen=now, source=source)
            self.learned[source] = self.learned.get(source, 0) + 1
        entry.last_seen = now
        entry.pinned = entry.pinned or pinned
        if ultrapeer is None:
            ultrapeer = source in ULTRAPEER_SOURCES
        entry.ultrapeer = entry.ultrapeer or ultrapeer
        if source in ANSWERED_SOURCES:
            entry.last_answered = now
        self._hosts[address] = entry
        self._bound()

    def add_many(
        self,
        addresses: Iterable[tuple[str, int]],
        *,
        source: str = "pong",
        ultrapeer: bool | None = None,
    ) -> None:
        for address in addresses:
            self.add(address, source=source, ultrapeer=ultrapeer)

    def failed(self, address: tuple[str, int]) -> None:
        entry = self._hosts.get(address)
        if entry is None:
            return
        entry.failures += 1
        delay = min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2 ** (entry.failures - 1))
        entry.retry_at = self._clock() + delay

    def succeeded(self, address: tuple[str, int], *, ultrapeer: bool | None = None) -> None:
        """We connected to it (or it to us from this listening address)."""
        entry = self._hosts.get(address)
        if entry is None:
            self.add(address, source="handshake", ultrapeer=bool(ultrapeer))
            entry = self._hosts[address]
        now = self._clock()
        entry.failures = 0
        entry.retry_at = 0.0
        entry.last_success = now
        entry.last_seen = now
        entry.connections += 1
        if ultrapeer is not None:
            entry.ultrapeer = ultrapeer

    def answered_recently(self, entry: HostEntry, now: float) -> bool:
        return entry.last_answered is not None and now - entry.last_answered < RECENT_ANSWER

    def _rank(self, entry: HostEntry) -> tuple[bool, bool, bool, bool, float]:
        return (
            not entry.pinned,
            entry.last_success is None,
            not self.answered_recently(entry, self._clock()),
            not entry.ultrapeer,
            -entry.last_seen,
        )

    def candidates(self, exclude: set[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
        """Hosts worth a connection attempt now, best first."""
        now = self._clock()
        ready = [
            (address, entry)
            for address, entry in self._hosts.items()
            if address not in exclude and entry.retry_at <= now
        ]
        ready.sort(key=lambda item: self._rank(item[1]))
        return [address for address, _ in ready[:limit]]

    def ready_count(self, exclude: set[tuple[str, int]]) -> int:
        now = self._clock()
        return sum(
            1
            for address, entry in self._hosts.items()
            if address not in exclude and entry.retry_at <= now
        )

    def sample(
        self,
        limit: int,
        exclude: set[tuple[str, int]] | None = None,
        *,
        family: int | None = None,
    ) -> list[tuple[str, int]]:
        """Good hosts to tell others about (X-Try-Ultrapeers, UDP pongs' IPP): not
        backing off, ultrapeers and hosts we reached first, then the most recently
        heard of; only IPv4 (`family` 4) or IPv6 (6) hosts when asked."""
        now = self._clock()
        exclude = exclude or set()
        ready = [
            (address, entry)
            for address, entry in self._hosts.items()
            if entry.retry_at <= now
            and entry.failures == 0
            and address not in exclude
            and (family is None or (6 if ":" in address[0] else 4) == family)
        ]
        ready.sort(
            key=lambda item: (
                item[1].last_success is None,
                not item[1].ultrapeer,
                -item[1].last_seen,
            )
        )
        return [address for address, _ in ready[:limit]]

    def _bound(self) -> None:
        while len(self._hosts) > self.max_hosts:
            for address, entry in self._hosts.items():
                if not entry.pinned:
                    del self._hosts[address]
                    break
            else:
                return

    # -- the hosts file ----------------------------------------------------

    def load(self, path: str | Path, *, missing_ok: bool = False) -> int:
        """Read a hosts file; bad lines are logged and skipped.

        Returns how many hosts were loaded.  A missing file is an error unless
        `missing_ok` (the router's own file before its first save).
        """
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as error:
            if missing_ok:
                return 0
            raise ConfigError(f"cannot read hosts file {path}: {error.strerror}") from error
        except OSError as error:
            raise ConfigError(f"cannot read hosts file {path}: {error.strerror}") from error
        loaded = 0
        mono, wall = self._clock(), self._wall()
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            address_text, *fields = text.split()
            try:
                address = parse_address(address_text, name=f"{path}:{number}")
            except ConfigError as error:
                log.warning("hosts file: skipping line: %s", error)
                continue
            values: dict[str, str] = {}
            for item in fields:
                key, sep, value = item.partition("=")
                if sep:
                    values[key] = value
            try:
                seen = float(values.get("seen", wall))
                ok = float(values["ok"]) if "ok" in values else None
                answered = float(values["ans"]) if "ans" in values else None
                failures = int(values.get("fail", 0))
                retry = float(values.get("retry", 0.0))
            except ValueError:
                log.warning(
                    "hosts file: %s:%d: bad field values, loading the address only", path, number
                )
                seen, ok, failures, retry, answered = wall, None, 0, 0.0, None
            if wall - seen > self.MAX_AGE:
                continue
            if address in self._hosts or not 0 < address[1] <= 65535:
                continue
            entry = HostEntry(
                last_seen=mono - max(0.0, wall - seen),
                failures=max(0, failures),
                retry_at=mono + (retry - wall) if retry > wall else 0.0,
                ultrapeer=values.get("up") == "1",
                source=values.get("src", "hosts-file"),
                last_success=mono - max(0.0, wall - ok) if ok is not None else None,
                last_answered=mono - max(0.0, wall - answered) if answered is not None else None,
            )
            self._hosts[address] = entry
            loaded += 1
        # Oldest first, as if heard of in that order, so bounding keeps the freshest.
        ordered = sorted(self._hosts.items(), key=lambda item: item[1].last_seen)
        self._hosts = OrderedDict(ordered)
        self._bound()
        return loaded

    def save(self, path: str | Path) -> None:
        """Write the cache to `path` (atomically: a crash leaves the old file)."""
        mono, wall = self._clock(), self._wall()
        lines = ["# gnurouter host cache: HOST:PORT key=value... (see gnurouter/mesh/hostcache.py)"]
        for (host, port), entry in self._hosts.items():
            name = f"[{host}]" if ":" in host else host
            fields = [f"{name}:{port}", f"seen={wall - (mono - entry.last_seen):.0f}"]
            if entry.last_success is not None:
                fields.append(f"ok={wall - (mono - entry.last_success):.0f}")
            if entry.last_answered is not None:
                fields.append(f"ans={wall - (mono - entry.last_answered):.0f}")
            if entry.failures:
                fields.append(f"fail={entry.failures}")
            if entry.retry_at > mono:
                fields.append(f"retry={wall + (entry.retry_at - mono):.0f}")
            if entry.ultrapeer:
                fields.append("up=1")
            fields.append(f"src={entry.source}")
            lines.append(" ".join(fields))
        target = Path(path)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(temporary, target)

    def breakdown(self) -> dict[str, dict[str, int] | int]:
        """Hosts by the source they were first learned from and by address family."""
        by_source: dict[str, int] = {}
        by_family = {"ipv4": 0, "ipv6": 0}
        answered = 0
        for (host, _), entry in self._hosts.items():
            by_source[entry.source] = by_source.get(entry.source, 0) + 1
            by_family["ipv6" if ":" in host else "ipv4"] += 1
            answered += entry.last_answered is not None
        return {"by_source": by_source, "by_family": by_family, "answered": answered}
