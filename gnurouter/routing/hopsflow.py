"""Hops-Flow as back-pressure on the network: free of I/O, driven by the router stage.

Load conditioning inside the router sheds what already arrived; Hops-Flow
(BEAR/4v1) asks a neighbour not to send it at all: "no query whose hop count
is at least n".  When the router stage's queueing delay stays above its
target for `hold` seconds, the neighbours that fed us the most queries in
that time get Hops-Flow `start_hops` (far-travelled queries go first: they
cost the same and are the least likely to be answered near us); each
further `hold` of overload lowers it by one, down to `floor_hops` (1: only
queries they originate themselves, never 0: a neighbour must be able to
query).  Once the delay has stayed below half the target for `hold` seconds,
every limit is lifted (Hops-Flow 255).

Only ultrapeer (and legacy) neighbours are asked: a leaf only ever sends its
own queries (hops 0), which dynamic querying paces already.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gnurouter.config import RouterConfig

_DEFAULTS = RouterConfig()

#: Hops-Flow that lifts a limit: the byte's highest value (gtk-gnutella sends it too).
NO_LIMIT = 255


@dataclass
class HopsFlowPolicy:
    """When the router asks its neighbours to slow down, and how hard."""

    # Defaults are RouterConfig's (hops_flow, hops_flow_delay_target, ...).
    enabled: bool = _DEFAULTS.hops_flow
    #: Router-stage queueing delay (90th percentile, seconds) above which we are overloaded.
    delay_target: float = _DEFAULTS.hops_flow_delay_target
    #: Seconds overload (or recovery) must last before a step is taken.
    hold: float = _DEFAULTS.hops_flow_hold
    #: Neighbours limited at each step: the ones feeding the most queries.
    neighbours: int = _DEFAULTS.hops_flow_neighbours
    #: The first limit, and the lowest (1: only what they originate; never 0).
    start_hops: int = 3
    floor_hops: int = 1

    @classmethod
    def from_config(cls, config: RouterConfig) -> HopsFlowPolicy:
        return cls(
            enabled=config.hops_flow,
            delay_target=config.hops_flow_delay_target,
            hold=config.hops_flow_hold,
            neighbours=config.hops_flow_neighbours,
        )


@dataclass
class HopsFlowState:
    """What the controller did, for the metrics."""

    overloaded: bool = False
    steps: int = 0
    sent: int = 0
    lifted: int = 0


class HopsFlowController:
    """Decides which neighbour gets which Hops-Flow, from the delay it is shown."""

    def __init__(self, policy: HopsFlowPolicy) -> None:
        self.policy = policy
        #: The limit each neighbour was last sent (absent: none).
        self.limits: dict[int, int] = {}
        self.state = HopsFlowState()
        self._over_since: float | None = None
        self._under_since: float | None = None
        self._last_step = float("-inf")
        #: Queries per neighbour over the current overload, to pick whom to slow.
        self._fed: dict[int, int] = {}

    def update(
        self,
        now: float,
        delay: float,
        queries: Mapping[int, int],
        eligible: Iterable[int],
    ) -> list[tuple[int, int]]:
        """One look at the stage: `delay` now, `queries` received per neighbour
        since the last look.  Returns the (peer id, Hops-Flow) to send."""
        policy = self.policy
        if not policy.enabled:
            return self.lift_all()
        for peer_id, count in queries.items():
            self._fed[peer_id] = self._fed.get(peer_id, 0) + count
        if delay > policy.delay_target:
            self._under_since = None
            if self._over_since is None:
                self._over_since = now
            self.state.overloaded = True
            if now - self._over_since >= policy.hold and now - self._last_step >= policy.hold:
                return self._step(now, set(eligible))
            return []
        if delay < policy.delay_target / 2:
            self._over_since = None
            self.state.overloaded = False
            if not self.limits:
                self._fed.clear()
                return []
            if self._under_since is None:
                self._under_since = now
            if now - self._under_since >= policy.hold:
                return self.lift_all()
        return []

    def _step(self, now: float, eligible: set[int]) -> list[tuple[int, int]]:
        policy = self.policy
        self._last_step = now
        self.state.steps += 1
        feeding = sorted(
            (peer for peer in self._fed if peer in eligible and self._fed[peer] > 0),
            key=lambda peer: -self._fed[peer],
        )
        self._fed.clear()
        sends = []
        for peer_id in feeding[: policy.neighbours]:
            current = self.limits.get(peer_id)
            limit = policy.start_hops if current is None else current - 1
            limit = max(limit, policy.floor_hops, 1)
            if limit != current:
                self.limits[peer_id] = limit
                sends.append((peer_id, limit))
        self.state.sent += len(sends)
        return sends

    def lift_all(self) -> list[tuple[int, int]]:
        sends = [(peer_id, NO_LIMIT) for peer_id in self.limits]
        self.limits.clear()
        self._fed.clear()
        self._under_since = None
        self.state.lifted += len(sends)
        return sends

    def forget(self, peer_id: int) -> None:
        self.limits.pop(peer_id, None)
        self._fed.pop(peer_id, None)

    def snapshot(self) -> dict[str, object]:
        return {
            "enabled": self.policy.enabled,
            "delay_target_ms": round(self.policy.delay_target * 1000.0, 3),
            "overloaded": self.state.overloaded,
            "steps": self.state.steps,
            "sent": self.state.sent,
            "lifted": self.state.lifted,
            "limits": {str(peer): hops for peer, hops in dict(self.limits).items()},
        }
