"""The stored form of a history sample: a few hundred bytes of packed float32, not JSON.

A sample (dashboard.routers.history) is a dict::

    {"r": {"peers", "in", "out", "drop"},
     "s": {stage: {"q", "qmax", "thr", "in", "out", "drop", "p50", "p99", "act"}}}

Packed, it is a version byte and the number of stages, each stage's name
(its length in a byte, then UTF-8), then every figure as a little-endian
float32: the four router figures, then nine per stage (a missing one is NaN).
Five idle stages take 237 bytes where the JSON text took 637 (and jsonb more).
float32 keeps about seven significant digits; figures are read back rounded
to thousandths, as aggregates have always been rounded, so what is stored is
what is read.  All figures of a row are read with one `struct` call.

`PackedSampleField` is a `BinaryField` whose Python value is the dict, so
models, queries and migrations deal in dicts and never see the bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from django.db import models

VERSION = 1
ROUTER_KEYS = ("peers", "in", "out", "drop")
STAGE_KEYS = ("q", "qmax", "thr", "in", "out", "drop", "p50", "p99", "act")
#: Figures are read back rounded to 1/SCALE (aggregates are rounded alike).
SCALE = 1000
#: Bounds on what one sample may hold (stage names come from the routers: network data).
MAX_STAGES = 64
MAX_NAME = 64

_HEADER = struct.Struct("<BB")
_FIGURES = [
    struct.Struct(f"<{len(ROUTER_KEYS) + len(STAGE_KEYS) * count}f")
    for count in range(MAX_STAGES + 1)
]


class PackingError(ValueError):
    """Bytes that are not a packed sample, or a sample that cannot be packed."""


#: The largest finite float32: larger figures are stored as this (nothing real is as large).
FLOAT32_MAX = 3.4028234663852886e38


def _figure(value: Any) -> float:
    """A stored figure: finite numbers (within float32), anything else (None, text) as NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        number = float(value)
    except OverflowError:  # an int past any float
        number = FLOAT32_MAX if value > 0 else -FLOAT32_MAX
    if not math.isfinite(number):
        return math.nan
    return max(-FLOAT32_MAX, min(FLOAT32_MAX, number))


def pack(sample: dict[str, Any]) -> bytes:
    router = sample.get("r", {})
    stages = sample.get("s", {})
    if len(stages) > MAX_STAGES:
        raise PackingError(f"a sample holds at most {MAX_STAGES} stages, not {len(stages)}")
    parts = [_HEADER.pack(VERSION, len(stages))]
    figures = [_figure(router.get(key, 0)) for key in ROUTER_KEYS]
    for name, stage in stages.items():
        encoded = str(name).encode()
        if not 0 < len(encoded) <= MAX_NAME:
            raise PackingError(f"stage name of {len(encoded)} bytes (1..{MAX_NAME})")
        parts.append(bytes((len(encoded),)) + encoded)
        figures.extend(_figure(stage.get(key)) for key in STAGE_KEYS)
    parts.append(_FIGURES[len(stages)].pack(*figures))
    return b"".join(parts)


def unpack(packed: bytes | memoryview) -> dict[str, Any]:
    data = bytes(packed)
    try:
        version, count = _HEADER.unpack_from(data)
        if version != VERSION:
            raise PackingError(f"packed sample version {version} (this dashboard reads {VERSION})")
        offset, names = _HEADER.size, []
        for _ in range(count):
            length = data[offset]
            names.append(data[offset + 1 : offset + 1 + length].decode())
            offset += 1 + length
        figures = _FIGURES[count].unpack_from(data, offset)
        if offset + _FIGURES[count].size != len(data):
            raise PackingError("packed sample has trailing bytes")
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise PackingError(f"damaged packed sample: {error}") from error
    # round(x * SCALE) / SCALE is the double nearest the decimal, like round(x, 3), faster.
    shown = [None if value != value else round(value * SCALE) / SCALE for value in figures]
    width, first = len(STAGE_KEYS), len(ROUTER_KEYS)
    stages = {}
    for index, name in enumerate(names):
        start = first + index * width
        stages[name] = dict(zip(STAGE_KEYS, shown[start : start + width], strict=True))
    return {"r": dict(zip(ROUTER_KEYS, shown[:first], strict=True)), "s": stages}


class PackedSampleField(models.BinaryField):
    """A history sample stored packed (`pack`), read back as its dict (`unpack`)."""

    # django-stubs: what the model attribute holds
    _pyi_private_set_type: dict[str, Any]
    _pyi_private_get_type: dict[str, Any]  # type: ignore[assignment]

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else unpack(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, bytes | memoryview):
            return unpack(value)
        return value

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return pack(value)
        return super().get_prep_value(value)


__all__ = ["PackedSampleField", "PackingError", "pack", "unpack"]
