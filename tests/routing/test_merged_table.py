"""The merged table ultrapeers are sent: kept one leaf at a time, always the leaves' union."""

from __future__ import annotations

from gnurouter.protocol.qrp import UP_TABLE_BITS, QrpTable, merge_tables
from gnurouter.routing.neighbours import MERGE_GROUPS, MergedTable
from gnurouter.routing.roles import LEAF
from tests.fixtures import qrp_messages, routing_router


def table(*words: str, bits: int = UP_TABLE_BITS) -> QrpTable:
    return QrpTable.from_words(list(words), bits)


def test_the_merged_table_follows_every_change_of_every_leaf() -> None:
    merged = MergedTable(UP_TABLE_BITS)
    assert merged.bits() == "0" * (1 << UP_TABLE_BITS)
    # Two leaves in one group and others in other groups; tables of several sizes.
    current = {
        1: table("alpha"),
        1 + MERGE_GROUPS: table("beta", bits=20),
        2: table("gamma", bits=12),
    }
    for leaf, leaf_table in current.items():
        merged.set(leaf, leaf_table)
    assert merged.bits() == merge_tables(list(current.values()))
    current[1] = table("delta")  # a new table replaces the old one
    merged.set(1, current[1])
    assert merged.bits() == merge_tables(list(current.values()))
    assert table("alpha").mask & merged.mask() == 0  # the old table's word is gone
    del current[1 + MERGE_GROUPS]
    merged.remove(1 + MERGE_GROUPS)
    merged.remove(999)  # never had a table: nothing changes
    assert merged.bits() == merge_tables(list(current.values()))
    assert len(merged) == 2


def test_the_router_sends_ultrapeers_the_union_of_its_leaves_tables() -> None:
    router = routing_router(flood_tableless_leaves=False)
    router.peer_joined(1, LEAF)
    router.peer_joined(2, LEAF)
    for peer, words in ((1, ["music"]), (2, ["video"])):
        for message in qrp_messages(words):
            assert router.route(peer, message).close is None
    assert router.merged_table() == merge_tables([table("music"), table("video")])
    router.peer_left(1)
    assert router.merged_table() == merge_tables([table("video")])
