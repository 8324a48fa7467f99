"""How live pollers split the routers: leases in the database and rendezvous hashing.

Each poller (`watch_routers`, or the one inside `serve`) holds a `PollerLease`
row that it renews every `settings.POLLER_LEASE_RENEW` seconds, each time
pushing its `expires` `settings.POLLER_LEASE_TTL` seconds ahead on the
database's clock.  A router belongs to the live poller whose name scores
highest for it (rendezvous hashing): every poller computes the same split from
the same list of names, with no coordinator, and a poller that joins or leaves
moves only its own share.  A poller that dies stops renewing; the first
renewal by another poller after its lease expires drops it (so its routers are
taken within TTL + RENEW seconds), and a poller that stops cleanly gives its
lease up at once.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from django.db.models.functions import Now

from dashboard.routers.models import PollerLease


def default_name() -> str:
    """host:pid:random, unique among pollers however many run on a host."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _score(poller: str, router_id: int) -> bytes:
    return hashlib.blake2b(f"{poller}\0{router_id}".encode(), digest_size=8).digest()


def owner(router_id: int, pollers: Sequence[str]) -> str | None:
    """The poller (of `pollers`) that polls this router; None when there is none."""
    return max(pollers, key=lambda poller: _score(poller, router_id), default=None)


def share(router_ids: Iterable[int], pollers: Sequence[str], me: str) -> set[int]:
    """The routers of `router_ids` that are `me`'s to poll."""
    return {router_id for router_id in router_ids if owner(router_id, pollers) == me}


def renew(name: str, ttl: float, **facts: Any) -> list[str]:
    """Renew (or take) `name`'s lease, drop expired ones; returns the live pollers' names."""
    expires = Now() + timedelta(seconds=ttl)
    updated = PollerLease.objects.filter(name=name).update(renewed=Now(), expires=expires, **facts)
    if not updated:
        PollerLease.objects.create(
            name=name, started=Now(), renewed=Now(), expires=expires, **facts
        )
    PollerLease.objects.filter(expires__lt=Now()).delete()
    return list(PollerLease.objects.values_list("name", flat=True).order_by("name"))


def release(name: str) -> None:
    """Give the lease up (a clean stop): the others take its routers at their next renewal."""
    PollerLease.objects.filter(name=name).delete()


def live() -> list[PollerLease]:
    """The pollers whose leases have not expired."""
    return list(PollerLease.objects.filter(expires__gte=Now()).order_by("name"))


__all__ = ["default_name", "live", "owner", "release", "renew", "share"]
