"""The routing rules a router is configured with, and the decision it makes per message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from gnurouter.config import RouterConfig
from gnurouter.protocol.messages import (
    Message,
)
from gnurouter.protocol.qrp import (
    DEFAULT_QRP_LIMITS,
    QrpLimits,
)

#: Every default below is RouterConfig's: the configuration owns it, and the
#: rules are the part of it routing reads (see `RoutingRules.from_config`).
_DEFAULTS = RouterConfig()


@dataclass
class RoutingRules:
    max_ttl: int = _DEFAULTS.max_ttl
    route_ttl: float = _DEFAULTS.route_ttl
    route_table_max: int = _DEFAULTS.route_table_max
    ping_mode: str = _DEFAULTS.ping_mode
    ping_refresh_interval: float = _DEFAULTS.ping_refresh_interval
    pong_cache_size: int = _DEFAULTS.pong_cache_size
    pongs_per_ping: int = _DEFAULTS.pongs_per_ping
    ping_rate_per_peer: float = _DEFAULTS.ping_rate_per_peer
    ping_burst_per_peer: int = _DEFAULTS.ping_burst_per_peer
    #: Pings refused by the rate limit that get a peer cut off (Bye 400)
    #: when more arrive within `ping_flood_window` seconds: 1000 in 10 s is
    #: a peer pinging at 100 times its budget for ten seconds.  Today's
    #: servents ping every few seconds at most (keepalives, pong-cache
    #: refreshes); a 0.4-era neighbour relaying everyone's pings (what the
    #: synthetic traces model: ~12 pings/s per link, bursts of 50 in a
    #: second) stays far below, even replayed at 10x.  A refused ping costs
    #: little (it leaves no route behind); this is for the peer that only
    #: floods (the attack ran at 10,000/s).  0 never cuts a peer off.
    ping_flood_refusals: int = _DEFAULTS.ping_flood_refusals
    ping_flood_window: float = _DEFAULTS.ping_flood_window
    #: Largest share of `route_table_max` one peer may own before a full
    #: table evicts its routes rather than everyone's (see `RouteTable`):
    #: one neighbour flooding new GUIDs (queries, pings, pushes) can then
    #: only churn its own routes, and the others keep 75% of the table.
    route_share_max: float = _DEFAULTS.route_share_max
    #: Table size cap and RESET / update pacing per peer (see `QrpLimits`).
    qrp_limits: QrpLimits = DEFAULT_QRP_LIMITS
    #: A leaf that has not sent a complete route table yet gets queries as
    #: before QRP (flooded per TTL); once it has one, only what it matches.
    flood_tableless_leaves: bool = _DEFAULTS.flood_tableless_leaves
    #: Least seconds between two QRP updates to one ultrapeer neighbour.
    qrp_update_interval: float = _DEFAULTS.qrp_update_interval
    #: A leaf without a table gets no query for this long after it joined
    #: (its table is on its way), then only queries at their last hop.
    tableless_leaf_grace: float = _DEFAULTS.tableless_leaf_grace
    #: Run our leaves' queries a few ultrapeers at a time (routing.dynamic)
    #: rather than flooding them at the leaf's TTL.
    dynamic_querying: bool = _DEFAULTS.dynamic_querying
    dq_probe_ultrapeers: int = _DEFAULTS.dq_probe_ultrapeers
    dq_round_interval: float = _DEFAULTS.dq_round_interval
    dq_lifetime: float = _DEFAULTS.dq_lifetime

    @classmethod
    def from_config(cls, config: RouterConfig) -> RoutingRules:
        """The rules of `config`: every field of the same name, and the QRP table cap."""
        shared = {f.name for f in fields(cls)} & {f.name for f in fields(config)}
        return cls(
            **{name: getattr(config, name) for name in shared},
            qrp_limits=replace(DEFAULT_QRP_LIMITS, max_slots=config.qrp_max_slots),
        )


class Decision:
    """What to do with one message: where it goes, and a word for the packet log.

    A plain slotted class: one is made per routed message, and a dataclass
    with list factories costs several times more to build.
    """

    __slots__ = ("action", "close", "learned_hosts", "reason", "sender_listens_at", "sends")

    def __init__(
        self,
        action: str,
        reason: str | None = None,
        sends: list[tuple[Message, Sequence[int]]] | None = None,
    ) -> None:
        self.action = action
        self.reason = reason
        #: Each message to send, with the ids of the peers it goes to.  A
        #: flood's id tuple is shared by every decision with the same sender
        #: (see `Router._flood_targets`): read it, never change it.
        self.sends: list[tuple[Message, Sequence[int]]] = sends if sends is not None else []
        #: Addresses of servents this message told us about (pongs).
        self.learned_hosts: Sequence[tuple[str, int]] = ()
        #: Where the sender itself listens (its pong at hops 0): never dial it.
        self.sender_listens_at: tuple[str, int] | None = None
        #: (Bye code, reason) when the sender must be disconnected for it.
        self.close: tuple[int, str] | None = None

    @property
    def dropped(self) -> bool:
        return self.action == "dropped"

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, reason={self.reason!r}, sends={len(self.sends)})"


def _drop(reason: str) -> Decision:
    return Decision("dropped", reason)
