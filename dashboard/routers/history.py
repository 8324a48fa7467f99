"""History: compact samples, downsampling into coarser tiers, and reading a time range back.

A sample is what one poll of a router's /metrics boils down to::

    {"r": {"peers", "in", "out", "drop"},                       # router totals, per second
     "s": {stage: {"q", "qmax", "thr", "in", "out", "drop", "p50", "p99", "act"}}}

Tiers: every poll (RAW) for `HISTORY_RAW`, then 10-second aggregates (MEDIUM)
for `HISTORY_MEDIUM`, then one-minute aggregates (COARSE) until
`HISTORY_RETENTION`.  An aggregate keeps the mean queue length and its maximum
(`qmax`), mean rates, mean p50 and worst p99, and the last threshold, so a
short overload stays visible at any zoom.

Every query names the tier (`resolution`) it reads, so it is a range scan of the
(router, resolution, time) index: the newest or oldest sample costs the same
after a month of history as after a minute (tests/dashboard/test_query_plans.py
checks the plans on PostgreSQL).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce

from dashboard.routers import packing
from dashboard.routers.models import COARSE, MEDIUM, RAW, TIERS, Router, Sample
from dashboard.routers.packing import PackedSampleField

STAGE_MEANS = ("q", "in", "out", "drop", "p50", "act")
ROUTER_MEANS = ("peers", "in", "out", "drop")
#: Bounds the rows one downsampling step holds in memory.
CHUNK = 5000


def _number(value: Any) -> float:
    """A figure from a router's snapshot (network data): a finite number, else 0."""
    kind = type(value)  # exact types: bool is no figure; one call per figure (this is hot)
    if kind is float:
        return value if value - value == 0 else 0  # inf - inf and NaN - NaN are NaN
    return value if kind is int else 0


def _stage_name(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name.encode()) <= packing.MAX_NAME


def compact(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The history sample of one metrics snapshot (stages past the packing bounds left out)."""
    router = snapshot.get("router")
    router = router if isinstance(router, dict) else {}
    reported = snapshot.get("stages")
    reported = reported if isinstance(reported, dict) else {}
    stages: dict[str, dict[str, Any]] = {}
    for name, stage in reported.items():
        if not _stage_name(name) or not isinstance(stage, dict):
            continue
        if len(stages) == packing.MAX_STAGES:
            break
        delay = stage.get("queue_delay_ms")
        delay = delay if isinstance(delay, dict) else {}
        threshold = stage.get("threshold")
        stages[name] = {
            "q": _number(stage.get("queue_length")),
            "qmax": _number(stage.get("queue_length")),
            "thr": None if threshold is None else _number(threshold),
            "in": _number(stage.get("arrivals_per_s")),
            "out": _number(stage.get("completions_per_s")),
            "drop": _number(stage.get("drops_per_s")),
            "p50": _number(delay.get("p50")),
            "p99": _number(delay.get("p99")),
            "act": _number(stage.get("active_threads")),
        }
    return {
        "r": {
            "peers": _number(router.get("peers")),
            "in": _number(router.get("messages_in_per_s")),
            "out": _number(router.get("messages_out_per_s")),
            "drop": _number(router.get("drops_per_s")),
        },
        "s": stages,
    }


def aggregate(samples: Sequence[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """Merge (data, count) pairs in time order into one sample, weighting means by count."""
    total = sum(count for _, count in samples) or 1
    router: dict[str, float] = {}
    for key in ROUTER_MEANS:
        router[key] = _round(sum((d["r"].get(key) or 0) * n for d, n in samples) / total)
    stage_names: list[str] = []
    for data, _ in samples:
        stage_names.extend(name for name in data["s"] if name not in stage_names)
    stages: dict[str, dict[str, Any]] = {}
    for name in stage_names:
        present = [(d["s"][name], n) for d, n in samples if name in d["s"]]
        weight = sum(n for _, n in present) or 1
        merged: dict[str, Any] = {
            key: _round(sum((s.get(key) or 0) * n for s, n in present) / weight)
            for key in STAGE_MEANS
        }
        # A figure a sample lacks (stored as None) counts as 0.
        merged["qmax"] = max(s.get("qmax") or s.get("q") or 0 for s, _ in present)
        merged["p99"] = max(s.get("p99") or 0 for s, _ in present)
        merged["thr"] = present[-1][0].get("thr")
        stages[name] = merged
    return {"r": router, "s": stages}


def _round(value: float) -> float:
    return round(value, 3)


def _bucket_start(moment: datetime, seconds: int) -> datetime:
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


def _cutoff(now: datetime, keep: float, seconds: int) -> datetime:
    """Rows older than this fill whole buckets of `seconds` that no new row can join."""
    return _bucket_start(now - timedelta(seconds=keep), seconds)


def _roll_up(router_id: int, source: int, target: int, before: datetime) -> int:
    """Aggregate `source` rows older than `before` into `target`-second rows; returns rows made."""
    made = 0
    while True:
        rows = list(
            Sample.objects.filter(router_id=router_id, resolution=source, time__lt=before)
            .order_by("time")
            .values_list("id", "time", "count", "data")[:CHUNK]
        )
        if not rows:
            return made
        buckets: dict[datetime, list[tuple[int, dict[str, Any], int]]] = {}
        for row_id, moment, count, data in rows:
            buckets.setdefault(_bucket_start(moment, target), []).append((row_id, data, count))
        if len(rows) == CHUNK and len(buckets) > 1:
            # The last bucket may continue past this chunk: leave it for the next round.
            buckets.pop(max(buckets))
        with transaction.atomic():
            Sample.objects.bulk_create(
                Sample(
                    router_id=router_id,
                    time=start,
                    resolution=target,
                    count=sum(count for _, _, count in members),
                    data=aggregate([(data, count) for _, data, count in members]),
                )
                for start, members in sorted(buckets.items())
            )
            Sample.objects.filter(
                id__in=[row_id for members in buckets.values() for row_id, _, _ in members]
            ).delete()
        made += len(buckets)


def downsample(
    router_id: int,
    now: datetime,
    *,
    raw: float,
    medium: float,
    retention: float,
) -> dict[str, int]:
    """Apply the tiers to one router's history as of `now` (seconds for each tier's span)."""
    made_medium = _roll_up(router_id, RAW, MEDIUM, _cutoff(now, raw, MEDIUM))
    made_coarse = _roll_up(router_id, MEDIUM, COARSE, _cutoff(now, max(raw, medium), COARSE))
    expired = now - timedelta(seconds=retention)
    deleted = sum(
        Sample.objects.filter(router_id=router_id, resolution=tier, time__lt=expired).delete()[0]
        for tier in TIERS
    )
    return {"medium": made_medium, "coarse": made_coarse, "deleted": deleted}


def _newest_of(tier: int) -> Subquery:
    return Subquery(
        Sample.objects.filter(router_id=OuterRef("pk"), resolution=tier)
        .order_by("-time")
        .values("data")[:1]
    )


def latest(router_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The newest sample of each router (from its finest tier that has one), in one query."""
    newest = Coalesce(*(_newest_of(tier) for tier in TIERS), output_field=PackedSampleField())
    rows = Router.objects.filter(id__in=list(router_ids)).annotate(newest=newest)
    return {
        router_id: data
        for router_id, data in rows.values_list("id", "newest").order_by()
        if data is not None
    }


def oldest(router_id: int) -> datetime | None:
    """When this router's history begins (the first row of its coarsest tier that has any)."""
    firsts = [
        Sample.objects.filter(router_id=router_id, resolution=tier)
        .order_by("time")
        .values_list("time", flat=True)
        .first()
        for tier in TIERS
    ]
    return min((moment for moment in firsts if moment is not None), default=None)


NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


def bucket_for(span: float, max_points: int) -> int:
    """0 (every stored row) when the span fits, else the smallest nice step that does."""
    if span <= 0:
        return 0
    needed = span / max_points
    if needed <= 0.25:
        return 0
    return next((step for step in NICE_STEPS if step >= needed), NICE_STEPS[-1])


def columns(points: Iterable[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """Rows -> uPlot-ready columns: {"t": [...], "r": {key: [...]}, "s": {stage: {key: [...]}}}."""
    rows = list(points)
    stage_names: list[str] = []
    for _, data in rows:
        stage_names.extend(name for name in data["s"] if name not in stage_names)
    keys = (*STAGE_MEANS, "qmax", "p99", "thr")
    return {
        "t": [t for t, _ in rows],
        "r": _transpose([data["r"] for _, data in rows], ROUTER_MEANS),
        "s": {
            name: _transpose([data["s"].get(name) for _, data in rows], keys)
            for name in stage_names
        },
    }


def _transpose(records: list[dict[str, Any] | None], keys: Sequence[str]) -> dict[str, list]:
    """{key: [record[key] for each record]}, None where a record or its key is missing."""
    take, missing = itemgetter(*keys), (None,) * len(keys)

    def values(record: dict[str, Any] | None) -> tuple[Any, ...]:
        if record is None:
            return missing
        try:
            return take(record)  # one call for every key of the record
        except KeyError:
            return tuple(record.get(key) for key in keys)

    lists = list(zip(*map(values, records), strict=True)) if records else [()] * len(keys)
    return {key: list(column) for key, column in zip(keys, lists, strict=True)}


def read(router_id: int, start: datetime, end: datetime, *, max_points: int = 1500) -> dict:
    """History of one router between `start` and `end`, at most about `max_points` points."""
    span = (end - start).total_seconds()
    bucket = bucket_for(span, max_points)
    # The tiers hold disjoint spans (coarse ones older), so reading them coarsest first
    # gives one time-ordered stream, each part a range scan of the index.
    rows = (
        row
        for tier in reversed(TIERS)
        for row in Sample.objects.filter(
            router_id=router_id, resolution=tier, time__gte=start, time__lte=end
        )
        .order_by("time")
        .values_list("time", "resolution", "count", "data")
        .iterator(chunk_size=2000)
    )
    points: list[tuple[float, dict[str, Any]]] = []
    if bucket == 0:
        points = [(moment.timestamp(), data) for moment, _, _, data in rows]
    else:
        current: float | None = None
        members: list[tuple[dict[str, Any], int]] = []
        for moment, resolution, count, data in rows:
            epoch = moment.timestamp()
            key: float = math.floor(epoch / bucket) * bucket
            if resolution >= bucket:
                key = epoch  # already coarser than asked: one point as it is
            if current is not None and key != current:
                points.append((current, aggregate(members)))
                members = []
            current = key
            members.append((data, count))
        if current is not None:
            points.append((current, aggregate(members)))
    result = columns(points)
    result["bucket"] = bucket
    result["start"] = start.timestamp()
    result["end"] = end.timestamp()
    return result


__all__ = [
    "COARSE",
    "MEDIUM",
    "RAW",
    "aggregate",
    "columns",
    "compact",
    "downsample",
    "latest",
    "oldest",
    "read",
]
