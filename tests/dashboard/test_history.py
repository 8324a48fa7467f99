"""Downsampling keeps every poll for the recent past, aggregates beyond, forgets past retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import mean
from typing import Any

import pytest

from dashboard.routers import history
from dashboard.routers.models import COARSE, MEDIUM, RAW, Router, Sample

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RAW_KEEP, MEDIUM_KEEP, RETENTION = 120.0, 900.0, 2400.0
SPAN = 3000  # seconds of one-per-second polls before NOW


def queue_at(second: int) -> int:
    return (second * 7) % 53  # varied, with a known mean and max per bucket


def poll(second: int) -> dict[str, Any]:
    q = queue_at(second)
    return {
        "r": {"peers": 3, "in": 100.0 + second % 5, "out": 90.0, "drop": 0.0},
        "s": {
            "router": {
                "q": q,
                "qmax": q,
                "thr": 1000 if second < 2000 else 500,
                "in": 50.0,
                "out": 49.0,
                "drop": 0.0,
                "p50": 1.0,
                "p99": float(second % 11),
                "act": 1,
            },
            "reader": {
                "q": 0,
                "qmax": 0,
                "thr": 2000,
                "in": 10.0,
                "out": 10.0,
                "drop": 0.0,
                "p50": 0.1,
                "p99": 0.2,
                "act": 0,
            },
        },
    }


@pytest.fixture
def router(db: Any) -> Router:
    router = Router.objects.create(name="hist", base_url="http://127.0.0.1:1")
    start = NOW - timedelta(seconds=SPAN)
    Sample.objects.bulk_create(
        Sample(router=router, time=start + timedelta(seconds=i), data=poll(i)) for i in range(SPAN)
    )
    return router


def second_of(moment: datetime) -> int:
    return int((moment - (NOW - timedelta(seconds=SPAN))).total_seconds())


def test_tiers_after_downsampling(router: Router) -> None:
    made = history.downsample(router.pk, NOW, raw=RAW_KEEP, medium=MEDIUM_KEEP, retention=RETENTION)
    assert made["medium"] > 0 and made["coarse"] > 0 and made["deleted"] > 0
    rows = list(Sample.objects.filter(router=router).order_by("time"))
    raw = [r for r in rows if r.resolution == RAW]
    medium = [r for r in rows if r.resolution == MEDIUM]
    coarse = [r for r in rows if r.resolution == COARSE]
    # Every poll of the last RAW_KEEP seconds is still there, untouched.
    assert raw and all(r.time >= NOW - timedelta(seconds=RAW_KEEP + MEDIUM) for r in raw)
    assert len(raw) >= RAW_KEEP
    assert all(r.data == poll(second_of(r.time)) for r in raw)
    # 10-second aggregates in between: count, mean queue, max queue, worst p99, last threshold.
    assert medium and all(r.count == MEDIUM and r.time.timestamp() % MEDIUM == 0 for r in medium)
    for row in medium:
        seconds = range(second_of(row.time), second_of(row.time) + MEDIUM)
        stage = row.data["s"]["router"]
        assert stage["q"] == pytest.approx(mean(queue_at(s) for s in seconds), abs=1e-3)
        assert stage["qmax"] == max(queue_at(s) for s in seconds)
        assert stage["p99"] == max(float(s % 11) for s in seconds)
        assert stage["thr"] == poll(seconds[-1])["s"]["router"]["thr"]
    assert medium[0].time >= NOW - timedelta(seconds=MEDIUM_KEEP + COARSE)
    # One-minute aggregates further back, nothing older than the retention.
    assert coarse and all(r.count == COARSE for r in coarse)
    assert all(r.time >= NOW - timedelta(seconds=RETENTION) for r in rows)
    for row in coarse:
        seconds = range(second_of(row.time), second_of(row.time) + COARSE)
        assert row.data["s"]["router"]["qmax"] == max(queue_at(s) for s in seconds)
    # No poll is lost or counted twice inside the retained span.
    oldest = second_of(rows[0].time)
    assert sum(r.count for r in rows) == SPAN - oldest
    # Tiers do not overlap.
    assert max(r.time for r in coarse) < min(r.time for r in medium)
    assert max(r.time for r in medium) < min(r.time for r in raw)


def test_downsampling_twice_changes_nothing_more(router: Router) -> None:
    history.downsample(router.pk, NOW, raw=RAW_KEEP, medium=MEDIUM_KEEP, retention=RETENTION)
    before = list(Sample.objects.filter(router=router).values_list("time", "resolution", "count"))
    again = history.downsample(
        router.pk, NOW, raw=RAW_KEEP, medium=MEDIUM_KEEP, retention=RETENTION
    )
    assert again == {"medium": 0, "coarse": 0, "deleted": 0}
    after = list(Sample.objects.filter(router=router).values_list("time", "resolution", "count"))
    assert after == before


def test_reading_a_range_picks_a_resolution_that_fits(router: Router) -> None:
    history.downsample(router.pk, NOW, raw=RAW_KEEP, medium=MEDIUM_KEEP, retention=RETENTION)
    recent = history.read(router.pk, NOW - timedelta(seconds=60), NOW, max_points=1500)
    assert recent["bucket"] == 0
    assert len(recent["t"]) == 60  # one point per poll (the last poll was a second before NOW)
    assert recent["s"]["router"]["q"] == [queue_at(SPAN - 60 + i) for i in range(60)]
    everything = history.read(router.pk, NOW - timedelta(seconds=RETENTION), NOW, max_points=100)
    assert everything["bucket"] >= RETENTION / 100
    assert 0 < len(everything["t"]) <= 100 + 2
    assert everything["t"] == sorted(everything["t"])
    assert max(everything["s"]["router"]["qmax"]) == 52  # the peak survives any zoom level
    assert set(everything["s"]) == {"router", "reader"}
