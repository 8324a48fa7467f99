"""QRP as servents compute it: hashing against the published values, tables, RESET/PATCH."""

from __future__ import annotations

import base64
import zlib

import pytest

from gnurouter.protocol.ggep import GGEPExtension, encode_ggep
from gnurouter.protocol.messages import (
    QRP_COMPRESSOR_DEFLATE,
    QRP_COMPRESSOR_NONE,
    Query,
    RouteTablePatch,
    RouteTableReset,
)
from gnurouter.protocol.qrp import (
    QrpError,
    QrpReceiver,
    QrpTable,
    QueryKeys,
    build_update,
    merge_tables,
    qrp_hash,
)

# The test vectors published with the QRP specification (LimeWire's
# HashFunction tests), which gtk-gnutella also checks at start-up in qrp.c.
SPEC_VECTORS = [
    ("", 13, 0),
    ("eb", 13, 6791),
    ("ebc", 13, 7082),
    ("ebck", 13, 6698),
    ("ebckl", 13, 3179),
    ("ebcklm", 13, 3235),
    ("ebcklme", 13, 6438),
    ("ebcklmen", 13, 1062),
    ("ebcklmenq", 13, 3527),
    ("", 16, 0),
    ("n", 16, 65003),
    ("nd", 16, 54193),
    ("ndf", 16, 4953),
    ("ndfl", 16, 58201),
    ("ndfla", 16, 34830),
    ("ndflal", 16, 36910),
    ("ndflale", 16, 34586),
    ("ndflalem", 16, 37658),
    ("ndflaleme", 16, 45559),
    ("ol2j34lj", 10, 318),
    ("asdfas23", 10, 503),
    ("9um3o34fd", 10, 758),
    ("a234d", 10, 281),
    ("a3f", 10, 767),
    ("3nja9", 10, 581),
    ("2459345938032343", 10, 146),
    ("7777a88a8a8a8", 10, 342),
    ("asdfjklkj3k", 10, 861),
    ("adfk32l", 10, 1011),
    ("zzzzzzzzzzz", 10, 944),
    # Case does not matter.
    ("3NJA9", 10, 581),
    ("3nJa9", 10, 581),
    ("NDFLalem", 16, 37658),
]


@pytest.mark.parametrize(("word", "bits", "expected"), SPEC_VECTORS)
def test_qrp_hash_matches_the_published_values(word: str, bits: int, expected: int) -> None:
    assert qrp_hash(word, bits) == expected


def table_of(words: list[str], bits: int = 16) -> QrpTable:
    return QrpTable.from_words(words, bits)


def keys(criteria: str, extensions: bytes = b"", flags: int = 0x8000) -> QueryKeys:
    return QueryKeys.from_payload(Query(flags, criteria, extensions).encode())


def test_words_are_and_ed_and_short_words_ignored() -> None:
    table = table_of(["madonna", "holiday"])
    assert table.matches(keys("Madonna Holiday"))
    assert table.matches(keys("madonna a"))  # 1-letter words are in nobody's table
    assert not table.matches(keys("madonna prayer"))
    assert not table.matches(keys(""))  # nothing to route on
    # Accents fold away the way servents canonize words.
    assert table_of(["beyonce"]).matches(keys("Beyoncé"))


def test_punctuated_tokens_match_either_tokenisation() -> None:
    assert table_of(["don't"]).matches(keys("don't"))  # LimeWire keeps the token whole
    assert table_of(["don"]).matches(keys("don't"))  # gtk-gnutella indexes "don"
    assert table_of(["acdc", "live"]).matches(keys("ac/dc live")) is False
    assert table_of(["ac/dc", "live"]).matches(keys("ac/dc live"))


def test_sha1_urns_are_or_ed_and_read_from_huge_and_ggep_h() -> None:
    digest = bytes(range(20))
    urn = "urn:sha1:" + base64.b32encode(digest).decode()
    table = QrpTable.from_hashcodes({QueryKeys.from_criteria("", (urn,)).urns[0]}, bits=16)
    huge = keys("", urn.encode())
    assert huge.urns and table.matches(huge)
    ggep = keys("", encode_ggep([GGEPExtension("H", b"\x01" + digest)]))
    assert ggep.urns == huge.urns and table.matches(ggep)
    # A SHA1 query whose URN is absent does not go, even if its words are there.
    other = "urn:sha1:" + base64.b32encode(bytes(20)).decode()
    assert not table_of(["song"]).matches(keys("song", other.encode()))


def patch_messages(
    table: QrpTable, *, bits: int = 4, compress: bool = True, pieces: int = 1
) -> list[RouteTablePatch]:
    """Encode `table` as a patch against an empty one, as a leaf would send it."""
    present = (1 - 7) & ((1 << bits) - 1)
    values = [present if table.slot_set(i) else 0 for i in range(table.slots)]
    per_byte = 8 // bits
    raw = bytearray()
    for start in range(0, len(values), per_byte):
        byte = 0
        for value in values[start : start + per_byte]:
            byte = (byte << bits) | value
        raw.append(byte)
    data = zlib.compress(bytes(raw)) if compress else bytes(raw)
    size = -(-len(data) // pieces)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    compressor = QRP_COMPRESSOR_DEFLATE if compress else QRP_COMPRESSOR_NONE
    return [
        RouteTablePatch(n, len(chunks), compressor, bits, chunk)
        for n, chunk in enumerate(chunks, 1)
    ]


@pytest.mark.parametrize(
    ("bits", "compress", "pieces"), [(4, True, 3), (8, True, 1), (4, False, 2), (2, True, 1)]
)
def test_receiver_installs_a_table_from_reset_and_patches(
    bits: int, compress: bool, pieces: int
) -> None:
    sent = table_of(["free", "music", "ogg"], bits=10)
    receiver = QrpReceiver()
    assert receiver.handle(RouteTableReset(sent.slots, 7)) is False
    messages = patch_messages(sent, bits=bits, compress=compress, pieces=pieces)
    assert len(messages) == pieces
    results = [receiver.handle(message) for message in messages]
    assert results == [False] * (pieces - 1) + [True]
    assert receiver.table == sent and receiver.table.set_count == 3


def test_one_bit_patches_toggle() -> None:
    receiver = QrpReceiver()
    receiver.handle(RouteTableReset(16, 2))
    receiver.handle(RouteTablePatch(1, 1, QRP_COMPRESSOR_NONE, 1, bytes([0b10000000, 0b1])))
    assert receiver.table is not None
    assert [receiver.table.slot_set(i) for i in (0, 1, 15)] == [True, False, True]
    receiver.handle(RouteTablePatch(1, 1, QRP_COMPRESSOR_NONE, 1, bytes([0b10000000, 0])))
    assert not receiver.table.slot_set(0) and receiver.table.slot_set(15)


def test_a_later_patch_sequence_changes_the_table_in_place() -> None:
    before = table_of(["alpha", "beta"], bits=12)
    after = table_of(["beta", "gamma"], bits=12)
    receiver = QrpReceiver()
    for message in build_update(None, format(before.mask, f"0{before.slots}b")):
        receiver.handle(message)
    assert receiver.table == before
    update = build_update(
        format(before.mask, f"0{before.slots}b"), format(after.mask, f"0{after.slots}b")
    )
    assert not any(isinstance(m, RouteTableReset) for m in update)  # a patch only
    for message in update:
        receiver.handle(message)
    assert receiver.table == after


@pytest.mark.parametrize(
    ("messages", "complaint"),
    [
        ([RouteTablePatch(1, 1, QRP_COMPRESSOR_NONE, 8, b"\x00" * 16)], "No QRP RESET"),
        (
            [RouteTableReset(16, 7), RouteTablePatch(2, 2, QRP_COMPRESSOR_NONE, 8, b"\x00")],
            "seq number 2",
        ),
        (
            [
                RouteTableReset(16, 7),
                RouteTablePatch(1, 2, QRP_COMPRESSOR_NONE, 8, b"\x00" * 8),
                RouteTablePatch(2, 3, QRP_COMPRESSOR_NONE, 8, b"\x00" * 8),
            ],
            "seq size",
        ),
        (
            [RouteTableReset(16, 7), RouteTablePatch(1, 1, QRP_COMPRESSOR_NONE, 8, b"\x00" * 8)],
            "covered 8/16",
        ),
        (
            [RouteTableReset(16, 7), RouteTablePatch(1, 1, QRP_COMPRESSOR_NONE, 8, b"\x00" * 17)],
            "overflowed",
        ),
        (
            [RouteTableReset(16, 7), RouteTablePatch(1, 1, QRP_COMPRESSOR_DEFLATE, 8, b"junk")],
            "decompression failed",
        ),
        ([RouteTableReset(4, 7)], "Invalid QRP table length 4"),
    ],
)
def test_broken_sequences_are_refused(
    messages: list[RouteTableReset | RouteTablePatch], complaint: str
) -> None:
    receiver = QrpReceiver()
    with pytest.raises(QrpError, match=complaint):
        for message in messages:
            receiver.handle(message)
    assert receiver.table is None


def test_merged_table_folds_and_spreads_other_sizes() -> None:
    small = table_of(["alpha"], bits=10)
    large = table_of(["omega"], bits=18)
    merged = QrpTable(1 << 16, int(merge_tables([small, large], bits=16), 2))
    # Whatever a table matched, the merged one still matches (no false negatives).
    assert merged.matches(keys("alpha")) and merged.matches(keys("omega"))
    assert not merged.matches(keys("alpha omega zzzzzzz"))
    spread = int(small.resized_bits(16), 2).bit_count()
    assert spread == 64  # one slot of a 2**10 table covers 64 of a 2**16 one
