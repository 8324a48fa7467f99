"""The stage graph, declared once.

    socket bytes
        |
     reader ──> parser ──> router ──> connection ──> socket writes
                  │  │        │           ^
                  │  └────────┼───────────┘  (handshake replies, closes)
                  v           v
                 catcher <────┘   (addresses learned) ──> outgoing connects

Each entry names a stage, the stages it feeds, and how to build its handler
from the router's shared context and the sinks it declared.  A handler is
handed only the sinks its entry lists, so this table is the whole truth about
who talks to whom.  Stream stages (reader, parser) carry byte streams that
cannot lose a piece; they are never thresholded by refusal and push back on
the sockets instead (see conditioning.backpressure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.conditioning.classes import ROUTER_EXPRESS
from gnurouter.conditioning.policies import ROUTER_STAGE_CLASSES, Conditioning
from gnurouter.config import RouterConfig
from gnurouter.handshaking import HandshakePolicy
from gnurouter.hostcache import HostCache
from gnurouter.packetlog import PacketLog
from gnurouter.peers import PeerTable
from gnurouter.routing import Router
from gnurouter.seda.stage import DEFAULT_CLASS, EventHandler, Executor, Sink, Stage
from gnurouter.stages.catcher import CatcherHandler
from gnurouter.stages.connection import ConnectionHandler
from gnurouter.stages.parser import ParserHandler
from gnurouter.stages.reader import ReaderHandler
from gnurouter.stages.router import RouterHandler


@dataclass
class RouterContext:
    """What the handlers share: configuration and the router-wide state."""

    config: RouterConfig
    peers: PeerTable
    routing: Router
    packet_log: PacketLog
    hosts: HostCache
    policy: HandshakePolicy
    flow: InputFlowControl
    connect: Callable[[tuple[str, int]], None]
    own_addresses: Callable[[], set[tuple[str, int]]]
    conditioning: Conditioning
    bootstrap: Any = None  # a gnurouter.bootstrap.GWebCacheBootstrap


HandlerFactory = Callable[[RouterContext, Mapping[str, Sink]], EventHandler]


@dataclass(frozen=True)
class StageSpec:
    name: str
    feeds: tuple[str, ...]
    make_handler: HandlerFactory
    stream: bool = False
    description: str = ""
    classes: tuple[str, ...] = (DEFAULT_CLASS,)
    express: frozenset[str] = frozenset()


def _reader(ctx: RouterContext, sinks: Mapping[str, Sink]) -> EventHandler:
    return ReaderHandler(sinks["parser"], ctx.flow)


def _parser(ctx: RouterContext, sinks: Mapping[str, Sink]) -> EventHandler:
    return ParserHandler(
        router=sinks["router"],
        connection=sinks["connection"],
        catcher=sinks["catcher"],
        peers=ctx.peers,
        policy=ctx.policy,
        flow=ctx.flow,
        max_malformed_per_peer=ctx.config.max_malformed_per_peer,
    )


def _router(ctx: RouterContext, sinks: Mapping[str, Sink]) -> EventHandler:
    return RouterHandler(
        router=ctx.routing,
        connection=sinks["connection"],
        catcher=sinks["catcher"],
        peers=ctx.peers,
        packet_log=ctx.packet_log,
        query_delay=ctx.config.query_delay,
        idle_timeout=3 * ctx.config.keepalive_interval,
        handshake_timeout=ctx.config.handshake_timeout,
    )


def _connection(ctx: RouterContext, sinks: Mapping[str, Sink]) -> EventHandler:
    return ConnectionHandler(
        limits=ctx.conditioning.output_limits,
        flow_control_timeout=ctx.config.flow_control_timeout,
    )


def _catcher(ctx: RouterContext, sinks: Mapping[str, Sink]) -> EventHandler:
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


STAGE_GRAPH: tuple[StageSpec, ...] = (
    StageSpec("reader", ("parser",), _reader, stream=True, description="socket bytes in"),
    StageSpec(
        "parser",
        ("router", "connection", "catcher"),
        _parser,
        stream=True,
        description="handshake, inflate, framing, validation",
    ),
    StageSpec(
        "router",
        ("connection", "catcher"),
        _router,
        description="routing + packet log",
        classes=ROUTER_STAGE_CLASSES,
        express=ROUTER_EXPRESS,
    ),
    StageSpec("connection", (), _connection, description="per-peer output and closes"),
    StageSpec("catcher", (), _catcher, description="keeps the peer count up"),
)


def build_stages(
    ctx: RouterContext,
    executor: Executor,
    *,
    graph: tuple[StageSpec, ...] = STAGE_GRAPH,
    on_handler_error: Callable[[Stage, BaseException, list[object]], None] | None = None,
) -> dict[str, Stage]:
    """Instantiate the graph, sinks before the stages that feed them."""
    specs = {spec.name: spec for spec in graph}
    stages: dict[str, Stage] = {}

    def build(name: str, trail: tuple[str, ...] = ()) -> Stage:
        if name in stages:
            return stages[name]
        if name in trail:
            raise ValueError(f"stage graph has a cycle: {' -> '.join((*trail, name))}")
        if name not in specs:
            raise ValueError(f"stage graph: {trail[-1] if trail else '?'} feeds unknown {name!r}")
        spec = specs[name]
        sinks = {target: build(target, (*trail, name)) for target in spec.feeds}
        handler = spec.make_handler(ctx, sinks)
        blocking = name == "router" and ctx.config.query_delay > 0
        threads = ctx.config.router_threads if name == "router" else 1
        stage = Stage(
            name,
            handler,
            executor,
            threads=threads,
            blocking=blocking,
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
