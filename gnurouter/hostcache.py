"""Servents we have heard of, and when it is worth trying each again."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gnurouter.config import ConfigError, parse_address

log = logging.getLogger(__name__)


@dataclass
class HostEntry:
    last_seen: float
    failures: int = 0
    retry_at: float = 0.0
    pinned: bool = False


class HostCache:
    """Addresses learned from pongs, X-Try-Ultrapeers headers and a hosts file.

    Bounded: the least recently heard-of unpinned host goes first.  Failed
    hosts back off exponentially (30 s doubling to one hour) so a dead entry
    costs a connection attempt now and then, not every catcher tick.
    """

    BACKOFF_BASE = 30.0
    BACKOFF_MAX = 3600.0

    def __init__(self, max_hosts: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_hosts = max_hosts
        self._clock = clock
        self._hosts: OrderedDict[tuple[str, int], HostEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, address: object) -> bool:
        return address in self._hosts

    def add(self, address: tuple[str, int], *, pinned: bool = False) -> None:
        host, port = address
        if not 0 < port <= 65535 or not host:
            return
        now = self._clock()
        entry = self._hosts.pop(address, None)
        if entry is None:
            entry = HostEntry(last_seen=now)
        entry.last_seen = now
        entry.pinned = entry.pinned or pinned
        self._hosts[address] = entry
        self._bound()

    def add_many(self, addresses: Iterable[tuple[str, int]]) -> None:
        for address in addresses:
            self.add(address)

    def failed(self, address: tuple[str, int]) -> None:
        entry = self._hosts.get(address)
        if entry is None:
            return
        entry.failures += 1
        delay = min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2 ** (entry.failures - 1))
        entry.retry_at = self._clock() + delay

    def succeeded(self, address: tuple[str, int]) -> None:
        entry = self._hosts.get(address)
        if entry is not None:
            entry.failures = 0
            entry.retry_at = 0.0

    def candidates(self, exclude: set[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
        """Hosts worth a connection attempt now: pinned first, then the most recently heard of."""
        now = self._clock()
        ready = [
            (address, entry)
            for address, entry in self._hosts.items()
            if address not in exclude and entry.retry_at <= now
        ]
        ready.sort(key=lambda item: (not item[1].pinned, -item[1].last_seen))
        return [address for address, _ in ready[:limit]]

    def sample(self, limit: int) -> list[tuple[str, int]]:
        """Recently heard-of hosts that are not backing off (for X-Try-Ultrapeers)."""
        now = self._clock()
        found = []
        for address, entry in reversed(self._hosts.items()):
            if entry.retry_at <= now:
                found.append(address)
                if len(found) >= limit:
                    break
        return found

    def _bound(self) -> None:
        while len(self._hosts) > self.max_hosts:
            for address, entry in self._hosts.items():
                if not entry.pinned:
                    del self._hosts[address]
                    break
            else:
                return

    def load(self, path: str | Path) -> int:
        """Read HOST:PORT lines ('#' comments allowed); bad lines are logged and skipped."""
        loaded = 0
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"cannot read hosts file {path}: {error.strerror}") from error
        for number, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                self.add(parse_address(text, name=f"{path}:{number}"))
                loaded += 1
            except ConfigError as error:
                log.warning("hosts file: skipping line: %s", error)
        return loaded

    def save(self, path: str | Path) -> None:
        lines = [f"{host}:{port}" for host, port in self._hosts]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
