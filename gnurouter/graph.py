"""The stage graph, declared once: every stage, and every edge events travel on.

    socket ──> reader ──> parser ──> router ──> connection ──> socket writes
    (bytes, opened, lost)   │  │        │  │         ^    ^
                            │  │        │  └─────────┘    │ socket: writable again
                            │  └────────┼─── handshake replies, closes
                            v           v
    connector, bootstrap ─> catcher <───┘ addresses learned ──> outgoing connects
    timer ──> router, catcher       shutdown, failure ──> connection (Bye)

Each `StageSpec` names a stage, the edges it sends on (target, event types,
and whether the target may refuse them), how to build its handler from the
router's shared context, and its thread budget.  A handler is handed only
the sinks its edges name; Twisted's side (sockets, timers, the connector,
GWebCache bootstrap, shutdown and failure closes) reaches a stage only
through `inlet`, which refuses an edge `EXTERNAL_EDGES` does not declare.
So this module is the whole truth about who talks to whom, and `describe`
publishes it in the metrics snapshot for the dashboard to draw.

Stream stages (reader, parser) carry byte streams that cannot lose a piece;
they are never thresholded by refusal and push back on the sockets instead
(see conditioning.backpressure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.conditioning.classes import ROUTER_EXPRESS
from gnurouter.conditioning.policies import ROUTER_STAGE_CLASSES, Conditioning
from gnurouter.config import RouterConfig
from gnurouter.mesh.handshaking import HandshakePolicy
from gnurouter.mesh.hostcache import HostCache
from gnurouter.mesh.peers import PeerTable
from gnurouter.routing.hopsflow import HopsFlowPolicy
from gnurouter.routing.router import Router
from gnurouter.seda.stage import DEFAULT_CLASS, EventHandler, Executor, Sink, Stage
from gnurouter.stages.catcher import CatcherHandler
from gnurouter.stages.connection import ConnectionHandler
from gnurouter.stages.parser import ParserHandler
from gnurouter.stages.reader import ReaderHandler
from gnurouter.stages.router import PacketSink, RouterHandler
from gnurouter.stages.udp import UdpHandler

if TYPE_CHECKING:
    from gnurouter.mesh.bootstrap import GWebCacheBootstrap
    from gnurouter.mesh.udp import UdpHosts
    from gnurouter.mesh.uhc import BootstrapChain, UhcBootstrap
    from gnurouter.stages.udp import DatagramLink


@dataclass
class RouterContext:
    """What the handlers share: configuration and the router-wide state."""

    config: RouterConfig
    peers: PeerTable
    routing: Router
    packet_log: PacketSink
    hosts: HostCache
    policy: HandshakePolicy
    flow: InputFlowControl
    connect: Callable[[tuple[str, int]], None]
    own_addresses: Callable[[], set[tuple[str, int]]]
    conditioning: Conditioning
    bootstrap: GWebCacheBootstrap | BootstrapChain | None = None
    #: UDP on the Gnutella port: the decisions, the socket side, the host cache bootstrap.
    udp: UdpHosts | None = None
    datagrams: DatagramLink | None = None
    uhc: UhcBootstrap | None = None


#: The sinks a handler is handed, by target stage.  The graph is wired by
#: name, so their events are `Any` here; each handler declares the events it
#: sends on each of them.
Sinks = Mapping[str, Sink[Any]]
#: Builds a stage's handler from the shared context and the sinks its edges name.
HandlerFactory = Callable[[RouterContext, Sinks], EventHandler[Any]]


@dataclass(frozen=True)
class Edge:
    """Events that travel from `source` to stage `target`.

    `path` is "enqueue" (may be refused by the target's admission policies)
    or "housekeeping" (never refused: lifecycle events and timers).
    A source that is no stage is one of EXTERNAL_SOURCES.
    """

    source: str
    target: str
    events: tuple[str, ...]
    path: str = "enqueue"


#: Where events come from outside the stages (Twisted's side of the edge).
EXTERNAL_SOURCES = {
    "socket": "bytes and lifecycle of each TCP connection, and its writability",
    "connector": "outgoing connection attempts that failed before a handshake",
    "timer": "periodic ticks (route cleanup, keepalive, dynamic-query rounds, Hops-Flow, "
    "catcher top-up)",
    "bootstrap": "addresses fetched from GWebCaches; UDP host cache requests",
    "datagram": "UDP datagrams on the Gnutella port",
    "shutdown": "the Bye every neighbour gets when the router stops",
    "failure": "the close of a peer whose event a handler could not handle",
}


@dataclass(frozen=True)
class StageSpec:
    name: str
    edges: tuple[Edge, ...]
    make_handler: HandlerFactory
    stream: bool = False
    description: str = ""
    classes: tuple[str, ...] = (DEFAULT_CLASS,)
    express: frozenset[str] = frozenset()
    #: Batches that may run at once, from the configuration.
    threads: Callable[[RouterConfig], int] = lambda config: 1
    #: Whether its handler may block (then it runs on the thread pool).
    blocking: Callable[[RouterConfig], bool] = lambda config: False

    @property
    def feeds(self) -> tuple[str, ...]:
        """The stages this one hands events to, in declaration order."""
        return tuple(dict.fromkeys(edge.target for edge in self.edges))


def _reader(ctx: RouterContext, sinks: Sinks) -> ReaderHandler:
    return ReaderHandler(sinks["parser"], ctx.flow)


def _parser(ctx: RouterContext, sinks: Sinks) -> ParserHandler:
    return ParserHandler(
        router=sinks["router"],
        connection=sinks["connection"],
        catcher=sinks["catcher"],
        peers=ctx.peers,
        policy=ctx.policy,
        flow=ctx.flow,
        max_malformed_per_peer=ctx.config.max_malformed_per_peer,
        control_rate=ctx.config.control_rate_per_peer,
        control_burst=ctx.config.control_burst_per_peer,
    )


def _router(ctx: RouterContext, sinks: Sinks) -> RouterHandler:
    return RouterHandler(
        router=ctx.routing,
        connection=sinks["connection"],
        catcher=sinks["catcher"],
        peers=ctx.peers,
        packet_log=ctx.packet_log,
        query_delay=ctx.config.query_delay,
        idle_timeout=3 * ctx.config.keepalive_interval,
        handshake_timeout=ctx.config.handshake_timeout,
        hops_flow=HopsFlowPolicy.from_config(ctx.config),
    )


def _connection(ctx: RouterContext, sinks: Sinks) -> ConnectionHandler:
    return ConnectionHandler(
        limits=ctx.conditioning.output_limits,
        flow_control_timeout=ctx.config.flow_control_timeout,
    )


def _catcher(ctx: RouterContext, sinks: Sinks) -> CatcherHandler:
    return CatcherHandler(
        hosts=ctx.hosts,
        peers=ctx.peers,
        connect=ctx.connect,
        target_peers=ctx.config.target_peers,
        max_peers=ctx.config.max_peers,
        max_ultrapeers=ctx.config.max_ultrapeers,
        own_addresses=ctx.own_addresses,
        bootstrap=ctx.bootstrap,
    )


def _udp(ctx: RouterContext, sinks: Sinks) -> UdpHandler:
    if ctx.udp is None or ctx.datagrams is None:
        raise ValueError("stage graph: the udp stage needs RouterContext.udp and .datagrams")
    return UdpHandler(udp=ctx.udp, link=ctx.datagrams, catcher=sinks["catcher"], uhc=ctx.uhc)


def _edges(source: str, *edges: tuple[str, tuple[str, ...], str]) -> tuple[Edge, ...]:
    return tuple(Edge(source, target, events, path) for target, events, path in edges)


STAGE_GRAPH: tuple[StageSpec, ...] = (
    StageSpec(
        "reader",
        _edges(
            "reader",
            ("parser", ("StreamChunk", "PeerOpened", "PeerFinished", "PeerLost"), "enqueue"),
        ),
        _reader,
        stream=True,
        description="socket bytes in",
    ),
    StageSpec(
        "parser",
        _edges(
            "parser",
            # A peer's FIN travels behind its last messages (see stages/router.py).
            ("router", ("MessageArrived", "PeerFinished"), "enqueue"),
            ("router", ("PeerJoined", "PeerLeft"), "housekeeping"),
            ("connection", ("SendRaw", "ClosePeer"), "housekeeping"),
            ("catcher", ("HostsLearned", "ConnectFailed", "HostConnected"), "housekeeping"),
        ),
        _parser,
        stream=True,
        description="handshake, inflate, framing, validation",
    ),
    StageSpec(
        "router",
        _edges(
            "router",
            # A half-closed peer's ClosePeer queues behind what was sent to it.
            ("connection", ("SendMessages", "ClosePeer"), "enqueue"),
            ("connection", ("SendMessages", "ClosePeer"), "housekeeping"),
            ("catcher", ("HostsLearned",), "enqueue"),
        ),
        _router,
        description="routing + packet log",
        classes=ROUTER_STAGE_CLASSES,
        express=ROUTER_EXPRESS,
        threads=lambda config: config.router_threads,
        # The SEDA bottleneck (`query_delay`) blocks: batches go to the pool.
        blocking=lambda config: config.query_delay > 0,
    ),
    StageSpec("connection", (), _connection, description="per-peer output and closes"),
    StageSpec("catcher", (), _catcher, description="keeps the peer count up"),
    StageSpec(
        "udp",
        _edges("udp", ("catcher", ("HostsLearned",), "housekeeping")),
        _udp,
        description="UDP pings and pongs, host cache requests",
    ),
)

#: Edges from outside the stages: every way Twisted's side hands a stage an event.
EXTERNAL_EDGES: tuple[Edge, ...] = (
    Edge("socket", "reader", ("BytesReceived", "PeerOpened", "PeerFinished", "PeerLost")),
    Edge("socket", "connection", ("LinkWritable",), "housekeeping"),
    Edge("connector", "catcher", ("ConnectFailed",), "housekeeping"),
    Edge("timer", "router", ("Tick",), "housekeeping"),
    Edge("timer", "catcher", ("Tick",), "housekeeping"),
    Edge("bootstrap", "catcher", ("HostsLearned",), "housekeeping"),
    Edge("bootstrap", "udp", ("AskHostCache",), "housekeeping"),
    Edge("datagram", "udp", ("DatagramReceived",)),
    Edge("shutdown", "connection", ("ClosePeer",), "housekeeping"),
    Edge("failure", "connection", ("ClosePeer",), "housekeeping"),
)


def inlet(stages: Mapping[str, Stage[Any]], source: str, target: str) -> Sink[Any]:
    """The stage an outside `source` may feed: only along a declared edge."""
    if not any(edge.source == source and edge.target == target for edge in EXTERNAL_EDGES):
        raise ValueError(f"stage graph declares no edge {source} -> {target}")
    return stages[target]


class StageDescription(TypedDict):
    name: str
    description: str
    stream: bool
    classes: list[str]
    express: list[str]


EdgeDescription = TypedDict(
    "EdgeDescription", {"from": str, "to": str, "events": list[str], "path": str}
)


class GraphDescription(TypedDict):
    """The JSON `describe` publishes (the metrics snapshot's "graph")."""

    stages: list[StageDescription]
    sources: dict[str, str]
    edges: list[EdgeDescription]


def describe(graph: tuple[StageSpec, ...] = STAGE_GRAPH) -> GraphDescription:
    """The graph as JSON: what a router publishes in its metrics snapshot."""
    edges = [edge for spec in graph for edge in spec.edges] + list(EXTERNAL_EDGES)
    return {
        "stages": [
            {
                "name": spec.name,
                "description": spec.description,
                "stream": spec.stream,
                "classes": list(spec.classes),
                "express": sorted(spec.express),
            }
            for spec in graph
        ],
        "sources": dict(EXTERNAL_SOURCES),
        "edges": [
            {"from": e.source, "to": e.target, "events": list(e.events), "path": e.path}
            for e in edges
        ],
    }


def build_stages(
    ctx: RouterContext,
    executor: Executor,
    *,
    graph: tuple[StageSpec, ...] = STAGE_GRAPH,
    on_handler_error: Callable[[Stage[Any], BaseException, list[Any]], None] | None = None,
) -> dict[str, Stage[Any]]:
    """Instantiate the graph, sinks before the stages that feed them."""
    specs = {spec.name: spec for spec in graph}
    stages: dict[str, Stage[Any]] = {}

    def build(name: str, trail: tuple[str, ...] = ()) -> Stage[Any]:
        if name in stages:
            return stages[name]
        if name in trail:
            raise ValueError(f"stage graph has a cycle: {' -> '.join((*trail, name))}")
        if name not in specs:
            raise ValueError(f"stage graph: {trail[-1] if trail else '?'} feeds unknown {name!r}")
        spec = specs[name]
        sinks = {target: build(target, (*trail, name)) for target in spec.feeds}
        handler = spec.make_handler(ctx, sinks)
        stage = Stage(
            name,
            handler,
            executor,
            threads=spec.threads(ctx.config),
            blocking=spec.blocking(ctx.config),
            batch_size=ctx.config.batch_size,
            classes=spec.classes,
            express=spec.express,
            on_handler_error=on_handler_error,
        )
        # Handlers count drops and report failed events through their stage.
        if hasattr(handler, "stage"):
            handler.stage = stage
        stages[name] = stage
        return stage

    for spec in graph:
        build(spec.name)
    # Keep declaration order for metrics and the dashboard.
    return {spec.name: stages[spec.name] for spec in graph}
