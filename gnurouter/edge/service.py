"""The router as a Twisted `Service`: builds the stage graph, listens, runs the timers.

Start and stop it as a unit (`startService`/`stopService`), under `twistd`,
from the CLI, or from a test.  Stopping sends Bye to every neighbour, waits a
bounded time for the sockets to drain, and flushes the packet log.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, task

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.conditioning.policies import Conditioning
from gnurouter.config import ConfigError, RouterConfig
from gnurouter.edge.children import Every, ListeningPort, Retimed, accept_backlog, listening_port
from gnurouter.edge.network import GnutellaFactory, OutgoingFactory
from gnurouter.edge.parameters import register_parameters
from gnurouter.edge.udp import UdpPorts
from gnurouter.graph import STAGE_GRAPH, RouterContext, build_stages, inlet
from gnurouter.mesh.bootstrap import GWebCacheBootstrap
from gnurouter.mesh.handshaking import HandshakePolicy, HandshakePool
from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.peers import Peer, PeerState, PeerTable
from gnurouter.mesh.udp import OwnHost, UdpHosts, UdpLimits
from gnurouter.mesh.uhc import BootstrapChain, UhcBootstrap
from gnurouter.ops.controlweb import control_site
from gnurouter.ops.lograte import OncePerInterval
from gnurouter.ops.metrics import router_counters, snapshot, stage_counters
from gnurouter.ops.packetlog import PacketLog
from gnurouter.protocol.addresses import format_endpoint
from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.deflate import DEFAULT_INFLATE_LIMITS
from gnurouter.protocol.handshake import Role
from gnurouter.protocol.messages import Pong
from gnurouter.routing.decisions import RoutingRules
from gnurouter.routing.roles import LEAF, ULTRAPEER
from gnurouter.routing.router import Router
from gnurouter.seda.runtime import ReactorExecutor
from gnurouter.seda.stage import HANDLER_ERROR, Stage
from gnurouter.seda.stats import MetricsSampler
from gnurouter.seda.tuning import ControlAPI
from gnurouter.stages.events import ClosePeer, ConnectFailed, HostsLearned, Tick
from gnurouter.stages.router import (
    DYNAMIC_QUERY_INTERVAL,
    DYNAMIC_QUERY_TICK,
    HOPS_FLOW_INTERVAL,
    HOPS_FLOW_TICK,
    router_class,
)
from gnurouter.stages.udp import AskHostCache

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0
#: Seconds between catcher ticks (keeping the peer count up) and metric samples.
CATCHER_TICK = 2.0
METRICS_TICK = 1.0
#: A handler's traceback is logged at most this often (seconds); a hostile
#: peer that triggers a bug again and again must not flood the log.
HANDLER_TRACEBACK_INTERVAL = 60.0


class RouterService(service.MultiService):
    def __init__(
        self,
        config: RouterConfig,
        *,
        reactor: Any = None,
        name: str = "gnurouter",
        recorder_factory: Callable[[RouterService], Any] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.config = config.validate()
        self.config_name = name
        self._recorder_factory = recorder_factory
        self.setName(name)
        self.started_at = 0.0
        self.peers = PeerTable()
        self.hosts = HostCache()
        self.routing = Router(RoutingRules.from_config(config), self._own_pong)
        self.packet_log = PacketLog(
            config.packet_log,
            max_bytes=config.packet_log_max_bytes,
            backups=config.packet_log_backups,
        )
        self.executor = ReactorExecutor(reactor)
        self.flow = InputFlowControl([], config.reader_pause_length)
        self.policy = HandshakePolicy(config, self.peers, self.hosts, self.listening_address)
        self._inflate_limits = dataclasses.replace(
            DEFAULT_INFLATE_LIMITS,
            max_ratio=config.inflate_max_ratio,
            max_rate=config.inflate_max_rate,
            rate_burst=max(DEFAULT_INFLATE_LIMITS.rate_burst, 2 * config.inflate_max_rate),
        )
        self.handshakes = HandshakePool(config.max_handshakes, config.max_handshakes_per_address)
        self.conditioning = Conditioning(config, router_class)
        self.bootstrap = GWebCacheBootstrap(
            list(config.bootstrap),
            reactor=reactor,
            enabled=config.bootstrap_enabled,
            deliver=self._bootstrap_hosts,
        )
        # UDP on the Gnutella port: decisions (mesh/udp.py), socket(s), host cache bootstrap.
        self._udp_logging = OncePerInterval()
        self.udp = UdpHosts(
            self.hosts,
            self._own_host,
            UdpLimits(
                config.udp_rate_per_source,
                config.udp_burst_per_source,
                config.udp_rate,
                config.udp_burst,
            ),
            log_refusal=self._udp_refused,
        )
        self.udp_ports = UdpPorts(
            reactor, config.listen[0], lambda: self.listening_address()[1], self._udp_refuse
        )
        self.uhc = UhcBootstrap(list(config.uhc) if config.udp else [], request=self._ask_uhc)
        context = RouterContext(
            config=config,
            peers=self.peers,
            routing=self.routing,
            packet_log=self.packet_log,
            hosts=self.hosts,
            policy=self.policy,
            flow=self.flow,
            connect=self.connect,
            own_addresses=self._own_addresses,
            conditioning=self.conditioning,
            bootstrap=BootstrapChain(self.uhc, self.bootstrap),
            udp=self.udp,
            datagrams=self.udp_ports,
            uhc=self.uhc,
        )
        self.stages: dict[str, Stage[Any]] = build_stages(
            context, self.executor, on_handler_error=self._handler_failed
        )
        self.stream_stages = {spec.name for spec in STAGE_GRAPH if spec.stream}
        self.flow.stages = [self.stages[name] for name in self.stream_stages]
        self.conditioning.attach(self.stages, self.stream_stages)
        # The socket side checks the udp stage's queue length (a flood is dropped there).
        inlet(self.stages, "datagram", "udp")
        self.udp_ports.stage = self.stages["udp"]
        self.sampler = MetricsSampler()
        self.control = ControlAPI()
        register_parameters(self, self.control)
        self.factory = GnutellaFactory(
            reader=inlet(self.stages, "socket", "reader"),
            connection=inlet(self.stages, "socket", "connection"),
            flow=self.flow,
            make_connection=self._make_connection,
            clock=reactor,
            handshakes=self.handshakes,
        )
        service.MultiService.__init__(self)
        self._port = listening_port(
            reactor,
            config.listen,
            self.factory,
            backlog=config.listen_backlog
            or accept_backlog(config.max_peers, config.max_handshakes),
        )
        self._control_port: ListeningPort | None = None
        self._add_children()
        self.recorder: Any = None  # a gnurouter.traces TraceRecorder with --record
        self._last_traceback_logged = -HANDLER_TRACEBACK_INTERVAL

    # -- wiring ----------------------------------------------------------

    def _make_connection(self, role: Role) -> PeerConnection:
        return PeerConnection(
            role, payload_limits=self.config.payload_limits, inflate_limits=self._inflate_limits
        )

    def _bootstrap_hosts(self, hosts: list[tuple[str, int]]) -> None:
        inlet(self.stages, "bootstrap", "catcher").enqueue_housekeeping(
            HostsLearned(hosts, source="gwebcache")
        )

    def _ask_uhc(self, address: tuple[str, int]) -> None:
        inlet(self.stages, "bootstrap", "udp").enqueue_housekeeping(AskHostCache(address))

    def _udp_refuse(self, reason: str, source: tuple[str, int], detail: str) -> None:
        self.udp.refuse(reason, source, detail)

    def _udp_refused(self, reason: str, source: tuple[str, int], detail: str) -> None:
        """A refused datagram, counted by `UdpHosts`: logged once a minute per reason and host."""
        if self._udp_logging.allow((reason, source[0]), time.monotonic()):
            log.warning("UDP %s from %s: %s", reason, format_endpoint(source), detail[:200])

    def _own_host(self) -> OwnHost:
        """What our UDP pongs say about us."""
        host, port = self.listening_address()
        ipv6 = host if ":" in host and host != "::" else None
        free: dict[str, int | None] = {LEAF: None, ULTRAPEER: None}
        if self.config.ultrapeer:
            for role, (taken, limit) in self.policy.slots().items():
                free[role] = max(0, limit - taken)
        uptime = time.time() - self.started_at if self.started_at else 0.0
        return OwnHost(
            port=port,
            ipv4=None if ipv6 is not None else self._own_pong().ip,
            ipv6=ipv6,
            free_leaf_slots=free[LEAF],
            free_ultrapeer_slots=free[ULTRAPEER],
            daily_uptime=int(min(uptime, 86_400)),
            addresses=frozenset(self._own_addresses()),
        )

    def save_hosts(self) -> None:
        """Write the host cache to the hosts file (periodically and on stop)."""
        if not self.config.hosts_file:
            return
        try:
            self.hosts.save(self.config.hosts_file)
        except OSError as error:
            log.warning("could not save hosts file %s: %s", self.config.hosts_file, error)

    def _own_pong(self) -> Pong:
        host, port = self.listening_address()
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        return Pong(port=port, ip=host, files=0, kbytes=0)

    def _own_addresses(self) -> set[tuple[str, int]]:
        host, port = self.listening_address()
        return {(host, port), ("127.0.0.1", port), ("localhost", port)}

    def listening_address(self) -> tuple[str, int]:
        return self._port.address or self.config.listen

    def control_address(self) -> tuple[str, int] | None:
        return self._control_port.address if self._control_port is not None else None

    def _handler_failed(
        self, stage: Stage[Any], error: BaseException, events: list[object]
    ) -> None:
        """An event a stage could not handle: close the peer it came from, with a Bye.

        Whatever the bug, its trigger was most likely that peer's input, and a
        peer whose state we failed to update is not one we can keep routing.
        """
        closed = []
        for event in events:
            peer = getattr(event, "peer", None)
            if not isinstance(peer, Peer) or peer.closing_or_closed:
                continue
            closed.append(peer.label)
            peer.counters.drop(HANDLER_ERROR)
            if isinstance(event, ClosePeer):
                peer.link.abort()  # closing it is what failed: no second try through the stage
            else:
                inlet(self.stages, "failure", "connection").enqueue_housekeeping(
                    ClosePeer(peer, 500, "Internal error handling your data")
                )
        now = time.monotonic()
        detail = f"{type(error).__name__}: {error}"
        with_traceback = now - self._last_traceback_logged >= HANDLER_TRACEBACK_INTERVAL
        if with_traceback:
            self._last_traceback_logged = now
        log.error(
            "stage %s: handler failed on %d event(s) (%s); closing peer(s) %s",
            stage.name,
            len(events),
            detail[:300],
            ", ".join(closed) or "none",
            exc_info=(type(error), error, error.__traceback__) if with_traceback else None,
        )

    # -- lifecycle -------------------------------------------------------

    def _add_children(self) -> None:
        """Ports, timers and live-timed controllers: started in this order, stopped in reverse."""
        config = self.config
        self._port.setServiceParent(self)
        if config.udp:
            self.udp_ports.setServiceParent(self)
        if config.control_listen is not None:
            self._control_port = ListeningPort(
                self.reactor, config.control_listen, control_site(self)
            )
            self._control_port.setServiceParent(self)
        timers: list[tuple[float, Callable[..., Any], tuple[Any, ...], bool]] = [
            (config.route_cleanup_interval, self._tick, ("router", "routes"), True),
            (config.keepalive_interval, self._tick, ("router", "keepalive"), False),
            (CATCHER_TICK, self._tick, ("catcher", "catch"), True),
            (DYNAMIC_QUERY_INTERVAL, self._tick, ("router", DYNAMIC_QUERY_TICK), False),
            (HOPS_FLOW_INTERVAL, self._tick, ("router", HOPS_FLOW_TICK), False),
            (METRICS_TICK, self.sample_metrics, (), True),
        ]
        if config.hosts_file:
            timers.append((config.hosts_save_interval, self.save_hosts, (), False))
        for interval, fn, args, now in timers:
            Every(self.reactor, interval, fn, *args, now=now).setServiceParent(self)
        for interval_of, controller in self.conditioning.timers():
            Retimed(self.reactor, interval_of, controller).setServiceParent(self)

    def startService(self) -> None:
        self.started_at = time.time()
        self.executor.start()
        if self.config.hosts_file:
            # Our own file does not exist before the first save; that is no error.
            self.hosts.load(self.config.hosts_file, missing_ok=True)
        for address in self.config.peers:
            self.hosts.add(address, pinned=True, source="peer-option")
        if self.policy.degree < 16 and self.config.ultrapeer:
            log.warning(
                "X-Degree is %d (max_ultrapeers/max_peers): leaves such as LimeWire refuse "
                "ultrapeers with fewer than 15 ultrapeer slots",
                self.policy.degree,
            )
        # The children: listening, then the timers (the first catcher tick
        # already sees the hosts loaded above).
        super().startService()
        if self.config.record:
            # The trace tools sit above the router: the caller (the CLI, a
            # test) hands in how to make a recorder; the service never imports them.
            if self._recorder_factory is None:
                raise ConfigError("record: this router was built without a trace recorder")
            self.recorder = self._recorder_factory(self)
            self.stages["parser"].handler.recorder = self.recorder  # type: ignore[attr-defined]
        log.info("gnurouter listening on %s:%d", *self.listening_address())

    def _tick(self, stage: str, name: str) -> None:
        inlet(self.stages, "timer", stage).enqueue_housekeeping(Tick(name))

    def sample_metrics(self) -> None:
        values: dict[str, float] = {}
        for stage in self.stages.values():
            values.update(stage_counters(stage))
        values.update(router_counters(self))
        self.sampler.update(values)

    def connect(self, address: tuple[str, int]) -> None:
        host, port = address

        def failed(reason: str) -> None:
            log.info("connect to %s:%d failed: %s", host, port, reason)
            inlet(self.stages, "connector", "catcher").enqueue_housekeeping(
                ConnectFailed(address, reason)
            )

        outgoing = OutgoingFactory(self.factory, failed)
        self.reactor.connectTCP(host, port, outgoing, timeout=10)

    def _queue_lengths(self) -> dict[str, int]:
        return {name: stage.queue_length for name, stage in self.stages.items()}

    def snapshot(self) -> dict[str, Any]:
        data = snapshot(self)
        data["router"]["udp"] = {
            **self.udp.snapshot(),
            "listening": self.udp_ports.address is not None,
            "host_caches": self.uhc.snapshot(),
        }
        data["router"]["host_cache_detail"] = self.hosts.breakdown()
        if self.recorder is not None:
            data["recorder"] = self.recorder.stats()
        return data

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        # Timers first, then the ports (the reverse of the start), each awaited.
        yield super().stopService()
        self.bootstrap.stop()
        # What was accepted is routed before the links close: wait (bounded)
        # for the stages to drain.
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while any(stage.queue_length for stage in self.stages.values()):
            if time.monotonic() >= deadline:
                log.warning("stopping with events still queued: %s", self._queue_lengths())
                break
            yield task.deferLater(self.reactor, 0.01, lambda: None)
        for peer in self.peers:
            if peer.state == PeerState.ESTABLISHED:
                inlet(self.stages, "shutdown", "connection").enqueue_housekeeping(
                    ClosePeer(peer, 200, "shutting down")
                )
            else:
                peer.link.close()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while len(self.peers) and time.monotonic() < deadline:
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        for peer in self.peers:
            peer.link.abort()
        if self.recorder is not None:
            self.recorder.close()
        self.packet_log.close()
        self.save_hosts()
        self.executor.stop()
