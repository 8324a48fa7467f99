"""Packed history samples: what is stored is what is read back, and damage is an error."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dashboard.routers import history
from dashboard.routers.packing import (
    FLOAT32_MAX,
    MAX_NAME,
    MAX_STAGES,
    PackingError,
    pack,
    unpack,
)


def sample(**stage: Any) -> dict[str, Any]:
    figures = {"q": 3, "qmax": 17, "thr": 1000, "in": 123.456, "out": 120.5, "drop": 0.25}
    figures.update(p50=0.013, p99=48.75, act=2)
    figures.update(stage)
    return {
        "r": {"peers": 12, "in": 4567.891, "out": 4500.0, "drop": 1.5},
        "s": {"router": figures, "connection": dict(figures, q=0)},
    }


def test_a_sample_reads_back_as_it_was_stored() -> None:
    original = sample()
    packed = pack(original)
    assert unpack(packed) == original
    assert len(packed) < len(str(original)) / 2
    assert list(unpack(packed)["s"]) == ["router", "connection"]  # order kept


def test_a_missing_threshold_and_non_numbers_read_back_as_none() -> None:
    read = unpack(pack(sample(thr=None, p50="fast", act=True)))
    assert read["s"]["router"]["thr"] is None
    assert read["s"]["router"]["p50"] is None and read["s"]["router"]["act"] is None


def test_figures_beyond_float32_are_clamped_not_an_error() -> None:
    read = unpack(pack(sample(q=1e300, qmax=-(10**400), drop=math.inf)))
    assert read["s"]["router"]["q"] == pytest.approx(FLOAT32_MAX, rel=1e-6)
    assert read["s"]["router"]["qmax"] == pytest.approx(-FLOAT32_MAX, rel=1e-6)
    assert read["s"]["router"]["drop"] is None


def test_samples_past_the_bounds_are_refused() -> None:
    with pytest.raises(PackingError):
        pack({"r": {}, "s": {"x" * (MAX_NAME + 1): {}}})
    with pytest.raises(PackingError):
        pack({"r": {}, "s": {f"s{i}": {} for i in range(MAX_STAGES + 1)}})


@pytest.mark.parametrize("cut", [1, 5, 30])
def test_damaged_bytes_are_an_error(cut: int) -> None:
    packed = pack(sample())
    with pytest.raises(PackingError):
        unpack(packed[:-cut])
    with pytest.raises(PackingError):
        unpack(packed + b"\0")
    with pytest.raises(PackingError):
        unpack(b"\x09" + packed[1:])  # another version


def test_compact_keeps_a_hostile_snapshot_packable() -> None:
    snapshot = {
        "router": {"peers": "many", "messages_in_per_s": math.nan},
        "stages": {
            "router": {"queue_length": 4, "queue_delay_ms": "slow"},
            "y" * (MAX_NAME + 1): {"queue_length": 1},
            7: {"queue_length": 1},
            "list": [1, 2],
            **{f"extra{i}": {} for i in range(MAX_STAGES + 5)},
        },
    }
    compacted = history.compact(snapshot)
    assert len(compacted["s"]) == MAX_STAGES and "router" in compacted["s"]
    assert compacted["r"]["peers"] == 0 and compacted["r"]["in"] == 0
    assert unpack(pack(compacted))["s"]["router"]["q"] == 4
