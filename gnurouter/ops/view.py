"""What operations may see of a router: a read-only view, not the service itself.

Metrics and the control endpoint are handed a `RouterView`.  The service
satisfies it structurally, so ops never imports the edge that builds the
router (and the edge may import ops without a circle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.conditioning.policies import Conditioning
from gnurouter.config import RouterConfig
from gnurouter.mesh.bootstrap import GWebCacheBootstrap
from gnurouter.mesh.handshaking import HandshakePolicy, HandshakePool
from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.peers import PeerTable
from gnurouter.ops.packetlog import PacketLog
from gnurouter.routing.router import Router
from gnurouter.seda.stage import SomeStage
from gnurouter.seda.tuning import ControlAPI

if TYPE_CHECKING:
    # metrics reads a RouterView: imported for checking only, or the two would circle.
    from gnurouter.seda.stats import MetricsSampler


class RouterView(Protocol):
    """The parts of a running router that metrics and the control endpoint read."""

    @property
    def config(self) -> RouterConfig: ...
    @property
    def config_name(self) -> str: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def peers(self) -> PeerTable: ...
    @property
    def stages(self) -> Mapping[str, SomeStage]: ...
    @property
    def stream_stages(self) -> set[str]: ...
    @property
    def flow(self) -> InputFlowControl: ...
    @property
    def routing(self) -> Router: ...
    @property
    def hosts(self) -> HostCache: ...
    @property
    def policy(self) -> HandshakePolicy: ...
    @property
    def handshakes(self) -> HandshakePool: ...
    @property
    def conditioning(self) -> Conditioning: ...
    @property
    def control(self) -> ControlAPI: ...
    @property
    def packet_log(self) -> PacketLog: ...
    @property
    def sampler(self) -> MetricsSampler: ...
    @property
    def bootstrap(self) -> GWebCacheBootstrap: ...

    def listening_address(self) -> tuple[str, int]: ...

    def snapshot(self) -> dict[str, Any]: ...
