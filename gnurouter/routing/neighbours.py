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
