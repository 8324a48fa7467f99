"""Synthetic history for capacity tests and the fleet benchmark (PostgreSQL only).

`seed_history` fills every tier for a set of routers the way the poller and the
downsampling would have over the same span (every poll for `raw` seconds, then
10-second rows for `medium`, then one-minute rows until `retention`),
interleaving the routers' rows in time order as the poller writes them.  One
INSERT ... SELECT per tier: a week of 100 routers is a few million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from dashboard.routers.models import COARSE, MEDIUM, RAW
from dashboard.routers.packing import pack

#: What an idle router's poll looks like once compacted (five stages).
IDLE_STAGES = ("reader", "parser", "router", "connection", "catcher")


def idle_sample() -> dict[str, Any]:
    figures = {"q": 0, "qmax": 0, "thr": 1000, "in": 0.0, "out": 0.0, "drop": 0.0}
    figures.update(p50=0.0, p99=0.0, act=0)
    return {
        "r": {"peers": 0, "in": 0.0, "out": 0.0, "drop": 0.0},
        "s": {name: dict(figures) for name in IDLE_STAGES},
    }


def seed_history(
    router_ids: Sequence[int],
    now: datetime,
    *,
    poll_interval: float,
    raw: float,
    medium: float,
    retention: float,
    sample: dict[str, Any] | None = None,
) -> int:
    """Insert the rows of every tier for `router_ids` ending at `now`; returns rows made."""
    if connection.vendor != "postgresql":
        raise RuntimeError("seed_history uses generate_series: PostgreSQL only")
    data = pack(sample or idle_sample())
    spans = (
        (RAW, poll_interval, 0.0, raw),
        (MEDIUM, float(MEDIUM), raw, max(raw, medium)),
        (COARSE, float(COARSE), max(raw, medium), retention),
    )
    made = 0
    with connection.cursor() as cursor:
        for resolution, step, newest, oldest in spans:
            first, last = int(newest // step) + 1, int(oldest // step)
            if last < first:
                continue
            cursor.execute(
                """
                INSERT INTO dashboard_sample (router_id, time, resolution, count, data)
                SELECT r, %s::timestamptz - make_interval(secs => g * %s), %s, %s, %s
                FROM unnest(%s::bigint[]) AS r, generate_series(%s, %s) AS g
                ORDER BY g DESC, r
                """,
                [
                    now,
                    step,
                    resolution,
                    max(1, round(resolution / poll_interval)),
                    data,
                    list(router_ids),
                    first,
                    last,
                ],
            )
            made += cursor.rowcount
        cursor.execute("ANALYZE dashboard_sample")
    return made


__all__ = ["IDLE_STAGES", "idle_sample", "seed_history"]
