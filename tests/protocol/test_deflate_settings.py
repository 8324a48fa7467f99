"""How our side of a deflated link compresses: zlib's settings per link, smaller for leaves."""

from __future__ import annotations

import zlib

import pytest

from gnurouter.protocol.deflate import (
    DEFAULT_DEFLATE,
    LEAF_DEFLATE,
    Deflater,
    DeflateSettings,
    Inflater,
)
from tests.fixtures import queries


@pytest.mark.parametrize("settings", [DEFAULT_DEFLATE, LEAF_DEFLATE])
def test_any_inflater_reads_what_each_setting_writes(settings: DeflateSettings) -> None:
    deflater = Deflater(settings)
    plain = zlib.decompressobj()  # a peer's inflater: it knows nothing of our settings
    ours = Inflater()
    for batch in range(5):
        data = b"".join(message.encode() for message in queries(50, f"batch{batch}"))
        wire = deflater.compress(data)
        assert plain.decompress(wire) == data
        assert ours.decompress(wire) == data


def test_a_leaf_link_compressor_holds_less_than_half_the_memory() -> None:
    # zlib.h: deflate needs (1 << (windowBits + 2)) + (1 << (memLevel + 9)) bytes.
    assert DEFAULT_DEFLATE.nbytes == 256 * 1024
    assert LEAF_DEFLATE.nbytes == 96 * 1024


@pytest.mark.parametrize(("window_bits", "memory_level"), [(8, 6), (16, 6), (14, 0), (14, 10)])
def test_settings_zlib_would_refuse_are_refused_here(window_bits: int, memory_level: int) -> None:
    with pytest.raises(ValueError):
        DeflateSettings(window_bits=window_bits, memory_level=memory_level)
