"""What routing keeps per neighbour: role, Hops-Flow, vendor messages, its QRP table and updates."""

from __future__ import annotations

from dataclasses import dataclass

from gnurouter.protocol.messages import (
    RouteTablePatch,
    RouteTableReset,
)
from gnurouter.protocol.qrp import (
    QrpReceiver,
    QrpTable,
    union_mask,
)
from gnurouter.routing.decisions import Decision
from gnurouter.routing.roles import LEAF
from gnurouter.routing.tables import RefusalWindow

#: Hops-Flow value meaning "no limit" (the byte on the wire tops out at 255).
NO_HOPS_FLOW = 256

#: Distinct vendor message labels counted per peer; the rest go under
#: "other" (a peer inventing vendor codes must not grow our memory).
MAX_VENDOR_LABELS = 64


class PeerRouting:
    """What routing knows of one neighbour: role, route table, flow control, counters."""

    __slots__ = (
        "closing",
        "hops_flow",
        "id",
        "messages_supported_sent",
        "ping_refusals",
        "qrp",
        "qrp_updates_sent",
        "queries_sent",
        "role",
        "sent_table",
        "sent_table_at",
        "supported_vendor_messages",
        "table",
        "up_qrp",
        "vendor_messages",
        "vendor_messages_enabled",
        "withheld",
    )

    def __init__(self, peer_id: int, role: str, *, vendor_messages: bool, up_qrp: bool) -> None:
        self.id = peer_id
        self.role = role
        self.hops_flow = NO_HOPS_FLOW
        self.qrp: QrpReceiver | None = None
        #: The route table queries are matched against: the receiver's last
        #: complete table, swapped in under the routing lock once built.
        self.table: QrpTable | None = None
        #: A close was decided (a limit was crossed): further messages are
        #: dropped without another close.
        self.closing = False
        #: Pings refused by the rate limit in the current flood window.
        self.ping_refusals = RefusalWindow()
        #: Whether the peer said it speaks vendor messages (Vendor-Message header).
        self.vendor_messages_enabled = vendor_messages
        #: Whether it exchanges route tables between ultrapeers (X-Ultrapeer-Query-Routing).
        self.up_qrp = up_qrp
        self.messages_supported_sent = False
        self.supported_vendor_messages: tuple[str, ...] | None = None
        #: Vendor messages received, by label ("BEAR/4v1 Hops Flow": n).
        self.vendor_messages: dict[str, int] = {}
        #: Queries not sent to this peer, by reason ("hops-flow", "qrp-miss").
        self.withheld: dict[str, int] = {}
        self.queries_sent = 0
        #: The merged table last sent to this ultrapeer ('0'/'1' slots) and when.
        self.sent_table: str | None = None
        self.sent_table_at = float("-inf")
        self.qrp_updates_sent = 0

    @property
    def leaf(self) -> bool:
        return self.role == LEAF

    def withhold(self, reason: str) -> None:
        self.withheld[reason] = self.withheld.get(reason, 0) + 1

    def count_vendor_message(self, label: str) -> None:
        counts = self.vendor_messages
        if label not in counts and len(counts) >= MAX_VENDOR_LABELS:
            label = "other"
        counts[label] = counts.get(label, 0) + 1

    def snapshot(self) -> dict[str, object]:
        table = self.table
        receiver = self.qrp
        return {
            "role": self.role,
            "hops_flow": None if self.hops_flow >= NO_HOPS_FLOW else self.hops_flow,
            "qrp_table": (
                {
                    "slots": table.slots,
                    "set": table.set_count,
                    "fill": round(table.fill_ratio, 4),
                    "tables_installed": receiver.tables_installed if receiver else 0,
                    "bytes": receiver.nbytes if receiver else table.nbytes,
                }
                if table is not None
                else None
            ),
            "qrp_messages": (receiver.resets + receiver.patches) if receiver else 0,
            "queries_sent": self.queries_sent,
            "queries_withheld": dict(self.withheld),
            "vendor_messages": dict(self.vendor_messages),
            "supported_vendor_messages": (
                list(self.supported_vendor_messages)
                if self.supported_vendor_messages is not None
                else None
            ),
            "qrp_updates_sent": self.qrp_updates_sent,
            "ping_refusals": self.ping_refusals.count,
        }


@dataclass
class QrpUpdatePlan:
    """Ultrapeer neighbours due a QRP update, with what each last got, and our merged table."""

    merged: str
    due: list[tuple[PeerRouting, str | None]]


#: `_route_reply` outcomes for a reply that answers nothing we routed.
_UNSOLICITED = frozenset({"no-route", "reply-to-sender"})


class PendingQrp:
    """One QRP message on its way through `Router.process_qrp` / `commit_qrp`."""

    __slots__ = ("body", "decision", "error", "info", "now", "table")

    def __init__(
        self,
        info: PeerRouting,
        body: RouteTableReset | RouteTablePatch,
        now: float,
        decision: Decision,
    ) -> None:
        self.info = info
        self.body = body
        self.now = now
        self.decision = decision
        #: The table the message completed, to install.
        self.table: QrpTable | None = None
        #: An unexpected exception applying it (a bug): the caller logs it.
        self.error: Exception | None = None


#: Leaves per group of a `MergedTable` are about leaves / MERGE_GROUPS: a
#: change costs one group's ORs plus MERGE_GROUPS ORs (~sqrt of 2,000 each).
MERGE_GROUPS = 64


class MergedTable:
    """The union of the leaves' QRP tables at 2**bits slots, kept one leaf at a time.

    What ultrapeers are sent (`Router.merged_table`).  Rebuilding it from every
    leaf's table whenever one changes costs a fold and an OR per leaf under
    the routing lock; here leaves sit in `MERGE_GROUPS` groups (by peer id),
    each group's union is cached, and a change rebuilds its own group's union
    and ORs the groups: about sqrt(leaves) ORs of 2**bits-bit ints instead of
    one per leaf.  Memory: one int per group, and the tables themselves are
    only referenced (each table caches its own fold).
    """

    __slots__ = ("_dirty", "_group_masks", "_groups", "_merged", "slot_bits")

    def __init__(self, bits: int) -> None:
        self.slot_bits = bits
        self._groups: list[dict[int, QrpTable]] = [{} for _ in range(MERGE_GROUPS)]
        self._group_masks = [0] * MERGE_GROUPS
        self._dirty: set[int] = set()
        self._merged: str | None = None

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups)

    def set(self, leaf_id: int, table: QrpTable) -> None:
        """Leaf `leaf_id` now has `table` (its first, or a new one)."""
        group = leaf_id % MERGE_GROUPS
        self._groups[group][leaf_id] = table
        self._dirty.add(group)
        self._merged = None

    def remove(self, leaf_id: int) -> None:
        """Leaf `leaf_id` left (or is no leaf of ours any more)."""
        group = leaf_id % MERGE_GROUPS
        if self._groups[group].pop(leaf_id, None) is not None:
            self._dirty.add(group)
            self._merged = None

    def mask(self) -> int:
        """The union as an int (slot 0 most significant)."""
        bits = self.slot_bits
        masks = self._group_masks
        for group in self._dirty:
            masks[group] = union_mask(self._groups[group].values(), bits)
        self._dirty.clear()
        union = 0
        for value in masks:
            union |= value
        return union

    def bits(self) -> str:
        """The union as a '0'/'1' string (what `build_update` takes), cached until a change."""
        if self._merged is None:
            self._merged = format(self.mask(), f"0{1 << self.slot_bits}b")
        return self._merged
