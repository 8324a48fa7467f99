"""QRP receiving under limits: table size cap, compact storage, RESET/update pacing, sans I/O."""

from __future__ import annotations

import random
import zlib
from itertools import pairwise

import pytest

from gnurouter.protocol.messages import (
    QRP_COMPRESSOR_DEFLATE,
    QRP_COMPRESSOR_NONE,
    RouteTablePatch,
    RouteTableReset,
)
from gnurouter.protocol.qrp import (
    DEFAULT_QRP_LIMITS,
    MAX_TABLE_SLOTS,
    QrpError,
    QrpLimitError,
    QrpLimits,
    QrpReceiver,
    QrpTable,
    build_update,
)


def reference_apply(before: list[int], entry_bits: int, data: bytes) -> list[int]:
    """The QRP patch rule, one slot at a time (what the receiver must agree with)."""
    after = list(before)
    per_byte = 8 // entry_bits
    mask = (1 << entry_bits) - 1
    slot = 0
    for byte in data:
        for position in range(per_byte):
            value = (byte >> (8 - entry_bits * (position + 1))) & mask
            if entry_bits == 1:
                after[slot] ^= value
            elif value:
                after[slot] = 1 if value & (1 << (entry_bits - 1)) else 0
            slot += 1
    return after


def slots_of(table: QrpTable) -> list[int]:
    return [int(table.slot_set(i)) for i in range(table.slots)]


def patches(
    data: bytes, entry_bits: int, cuts: list[int], *, deflate: bool
) -> list[RouteTablePatch]:
    """`data` as one sequence, cut at `cuts` (offsets into the wire bytes)."""
    wire = zlib.compress(data, 9) if deflate else data
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(wire)), len(wire)]
    pieces = [wire[a:b] for a, b in pairwise(bounds)]
    compressor = QRP_COMPRESSOR_DEFLATE if deflate else QRP_COMPRESSOR_NONE
    return [
        RouteTablePatch(n, len(pieces), compressor, entry_bits, piece)
        for n, piece in enumerate(pieces, 1)
    ]


# -- the table size cap ------------------------------------------------------------------


def test_the_largest_table_is_gtk_gnutellas() -> None:
    assert MAX_TABLE_SLOTS == DEFAULT_QRP_LIMITS.max_slots == 1 << 21


@pytest.mark.parametrize("bits", [22, 24, 31])
def test_a_larger_table_is_refused_before_anything_is_allocated(bits: int) -> None:
    receiver = QrpReceiver()
    with pytest.raises(QrpLimitError) as info:
        receiver.handle(RouteTableReset(1 << bits, 7), now=0.0)
    assert info.value.limit == "qrp-table-too-large"
    assert isinstance(info.value, QrpError)  # closes the link with Bye 413
    assert receiver.nbytes == 0 and receiver.slots is None


def test_the_largest_table_is_kept_as_a_bitset() -> None:
    slots = 1 << 21
    rng = random.Random(7)
    raw = bytes(rng.choice((0x00, 0x0F, 0xF0, 0xFF)) for _ in range(slots // 2))
    receiver = QrpReceiver()
    receiver.handle(RouteTableReset(slots, 7), now=0.0)
    sequence = patches(raw, 4, list(range(30_000, 2_000_000, 30_000)), deflate=True)
    assert len(sequence) <= 255
    for patch in sequence[:-1]:
        assert not receiver.handle(patch, now=0.0)
        # Mid-sequence: the working table, one bitset.
        assert receiver.nbytes == slots // 8
    assert receiver.handle(sequence[-1], now=0.0)
    table = receiver.table
    assert table is not None
    # One bit per slot: 256 KiB, not an object (or even a byte) per slot.
    assert len(table.bitset) == receiver.nbytes == slots // 8
    # 0xF = -1 (present) in either nibble; 0x0 leaves the slot empty.
    assert table.set_count == sum((b >> 4 == 0xF) + (b & 0xF == 0xF) for b in raw) > 0


# -- patches are applied exactly ---------------------------------------------------------


@pytest.mark.parametrize("entry_bits", [1, 2, 4, 8])
@pytest.mark.parametrize("deflate", [False, True])
def test_patches_match_the_reference_rule_whatever_the_cuts(entry_bits: int, deflate: bool) -> None:
    rng = random.Random(entry_bits * 10 + deflate)
    slots = 1 << 12
    size = slots * entry_bits // 8
    receiver = QrpReceiver()
    receiver.handle(RouteTableReset(slots, 7))
    expected = [0] * slots
    for _round in range(3):
        # Sparse patches with long runs of "no change", cut at odd offsets
        # (an 8-bit entry per byte: pieces of 1, 3, 5 slots).
        data = bytearray(size)
        for _ in range(size // 7):
            data[rng.randrange(size)] = rng.randrange(256)
        cuts = sorted(rng.sample(range(1, max(2, size)), min(40, size - 1)))
        for patch in patches(bytes(data), entry_bits, cuts, deflate=deflate):
            receiver.handle(patch)
        expected = reference_apply(expected, entry_bits, bytes(data))
        assert receiver.table is not None
        assert slots_of(receiver.table) == expected


def test_runs_of_no_change_in_odd_sized_messages_keep_slots_aligned() -> None:
    # 8-bit entries: a 3-byte all-zero message covers 3 slots, not a byte
    # of the bitset; the next change must land on slot 3, not slot 8.
    receiver = QrpReceiver()
    receiver.handle(RouteTableReset(16, 7))
    pieces = [bytes(3), b"\xff", bytes(12)]  # 0xff = -1: slot 3 present
    for n, piece in enumerate(pieces, 1):
        receiver.handle(RouteTablePatch(n, 3, QRP_COMPRESSOR_NONE, 8, piece))
    assert receiver.table is not None
    assert [i for i in range(16) if receiver.table.slot_set(i)] == [3]


def test_a_patch_past_the_table_is_refused() -> None:
    receiver = QrpReceiver()
    receiver.handle(RouteTableReset(1 << 16, 7))
    bomb = zlib.compress(bytes((1 << 16) // 2 + 1), 9)  # one byte more than the table
    with pytest.raises(QrpError, match="overflowed"):
        receiver.handle(RouteTablePatch(1, 1, QRP_COMPRESSOR_DEFLATE, 4, bomb))


def test_an_incomplete_sequence_installs_nothing() -> None:
    receiver = QrpReceiver()
    receiver.handle(RouteTableReset(64, 7))
    with pytest.raises(QrpError, match="covered 16/64"):
        receiver.handle(RouteTablePatch(1, 1, QRP_COMPRESSOR_NONE, 4, bytes(8)))
    assert receiver.table is None


def test_a_folded_table_keeps_every_keyword() -> None:
    words = [f"word{i}" for i in range(3000)]
    big = QrpTable.from_words(words, 21)
    small = QrpTable.from_words(words, 16)
    assert big.resized_bits(16) == small.resized_bits(16)
    assert big.folded_mask(16) is big.folded_mask(16)  # computed once, kept
    assert big.nbytes == (1 << 21) // 8 + (1 << 16) // 8


# -- pacing ------------------------------------------------------------------------------


def full_update(receiver: QrpReceiver, now: float, *, reset: bool = True) -> None:
    if reset:
        receiver.handle(RouteTableReset(64, 7), now=now)
    for body in build_update("0" * 64, "1" * 32 + "0" * 32):
        assert isinstance(body, RouteTablePatch)
        receiver.handle(body, now=now)


def test_repeated_resets_are_cut_off_and_paced_afterwards() -> None:
    limits = QrpLimits(reset_burst=4, reset_interval=60.0, update_burst=100)
    receiver = QrpReceiver(limits=limits)
    for _ in range(4):
        full_update(receiver, 1000.0)
    with pytest.raises(QrpLimitError) as info:
        full_update(receiver, 1001.0)
    assert info.value.limit == "qrp-reset-rate"
    assert "Too many QRP RESETs" in str(info.value)
    # A minute on, one more is allowed (a peer that was not cut off).
    later = QrpReceiver(limits=limits)
    for second in (0.0, 0.0, 0.0, 0.0, 60.0, 120.0, 180.0):
        full_update(later, second)
    assert later.tables_installed == 7


def test_a_reset_no_table_follows_costs_nothing_and_is_not_paced() -> None:
    # No table is allocated before the first PATCH, so a bare RESET is as
    # cheap as any message (the synthetic traces send them by the dozen).
    receiver = QrpReceiver(limits=QrpLimits(reset_burst=1, update_burst=1))
    for _ in range(1000):
        receiver.handle(RouteTableReset(MAX_TABLE_SLOTS, 7), now=0.0)
    assert receiver.resets == 1000 and receiver.nbytes == 0
    full_update(receiver, 0.0)  # the one table built is within the budget
    assert receiver.tables_installed == 1


def test_update_sequences_are_paced() -> None:
    limits = QrpLimits(update_burst=3, update_interval=15.0)
    receiver = QrpReceiver(limits=limits)
    full_update(receiver, 0.0)
    full_update(receiver, 0.0, reset=False)
    full_update(receiver, 0.0, reset=False)
    with pytest.raises(QrpLimitError) as info:
        full_update(receiver, 5.0, reset=False)
    assert info.value.limit == "qrp-update-rate"
    steady = QrpReceiver(limits=limits)
    for step in range(20):  # one update every 15 s, forever
        full_update(steady, step * 15.0, reset=step == 0)
    assert steady.tables_installed == 20


def test_without_a_clock_nothing_is_paced() -> None:
    receiver = QrpReceiver(limits=QrpLimits(reset_burst=1, update_burst=1))
    for _ in range(10):
        full_update(receiver, None)  # type: ignore[arg-type]
    assert receiver.tables_installed == 10


@pytest.mark.parametrize(
    "kwargs",
    [{"max_slots": 1000}, {"max_slots": 4}, {"reset_burst": 0}, {"update_interval": -1.0}],
)
def test_unusable_qrp_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QrpLimits(**kwargs)  # type: ignore[arg-type]
