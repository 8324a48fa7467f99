"""Router stage: routing decisions and the packet log (the original's GnutellaLogger).

With `query_delay` set, every query holds its thread for that long before it
is routed, reproducing the bottleneck of the SEDA overload experiment.  The
delay is spent outside the routing lock, so more threads mean more queries
in flight, which is exactly what the thread governor exploits.

QRP updates are applied outside the routing lock too (`Router.defer_qrp`):
routing only queues them; after the run, `_settle_qrp` applies them to the
peers' receivers under a lock of their own and takes the routing lock again
just to swap the finished tables in.  A peer that crosses a limit (ping
flood, QRP size or pace) is closed with the Bye its decision carries, and
logged with its address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from gnurouter.conditioning.classes import CONTROL, OTHER, message_class
from gnurouter.conditioning.classes import QUERY as QUERY_CLASS
from gnurouter.mesh.handshaking import advertised_degree, advertised_max_ttl
from gnurouter.mesh.peers import Peer, PeerState, PeerTable
from gnurouter.protocol.handshake import Headers
from gnurouter.protocol.messages import Message, MessageType
from gnurouter.protocol.vendor import hops_flow_message
from gnurouter.routing.decisions import Decision
from gnurouter.routing.hopsflow import NO_LIMIT, HopsFlowController, HopsFlowPolicy
from gnurouter.routing.roles import LEAF, ULTRAPEER
from gnurouter.routing.router import Router
from gnurouter.seda.stage import Sink, Stage, report_failure
from gnurouter.stages.events import (
    CatcherEvent,
    ClosePeer,
    ConnectionEvent,
    HostsLearned,
    MessageArrived,
    PeerFinished,
    PeerJoined,
    PeerLeft,
    RouterEvent,
    SendMessages,
    Tick,
)

#: One routed message in the packet log: (time, peer, message, action, reason, fanout).
LogEntry = tuple[float, str, Message, str, "str | None", int]


class PacketSink(Protocol):
    """Where routing decisions are logged (gnurouter.ops.packetlog.PacketLog)."""

    def record_many(self, entries: list[LogEntry]) -> None: ...

    def flush(self) -> None: ...


def router_class(event: Any) -> str:
    """The router stage's class for an event: its message's, or CONTROL for the rest.

    A peer's FIN (`PeerFinished`) is served after its control messages and
    replies (OTHER): whatever they make us send it goes before our close.
    """
    kind = type(event)
    if kind is MessageArrived:
        return message_class(event.message)
    if kind is PeerFinished:
        return OTHER
    return CONTROL


log = logging.getLogger(__name__)

#: Timer ticks this stage answers besides "routes" and "keepalive": the next
#: rounds of our leaves' dynamic queries (rounds are seconds apart; a quarter
#: second is their granularity), and a look at our own queueing delay for Hops-Flow.
DYNAMIC_QUERY_TICK = "dynamic-query"
DYNAMIC_QUERY_INTERVAL = 0.25
HOPS_FLOW_TICK = "hops-flow"
HOPS_FLOW_INTERVAL = 0.5

QUERY = MessageType.QUERY
QRP = MessageType.QRP
ESTABLISHED = PeerState.ESTABLISHED


class RouterHandler:
    def __init__(
        self,
        *,
        router: Router,
        connection: Sink[ConnectionEvent],
        catcher: Sink[CatcherEvent],
        peers: PeerTable,
        packet_log: PacketSink,
        query_delay: float = 0.0,
        idle_timeout: float = 90.0,
        handshake_timeout: float = 20.0,
        hops_flow: HopsFlowPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.router = router
        self.connection = connection
        self.catcher = catcher
        self.peers = peers
        self.packet_log = packet_log
        self.query_delay = query_delay
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self._sleep = sleep
        self._lock = threading.Lock()
        # Serialises QRP work (one peer's sequence must be applied in order)
        # without holding up routing; taken before `_lock`, never inside it.
        self._qrp_lock = threading.Lock()
        router.defer_qrp = True
        #: Peers this stage closed for crossing a routing limit, by limit.
        self.cutoffs: dict[str, int] = {}
        self.stage: Stage[RouterEvent] | None = None
        #: Asks the neighbours feeding us most to slow down while we are overloaded
        #: (it lives with the routing state, where the metrics read it).
        self.hops_flow: HopsFlowController = router.hops_flow
        if hops_flow is not None:
            self.hops_flow.policy = hops_flow
        # Called with (event, decision) after every routing decision, on the
        # router stage's thread: tests await them, recorders tap them.
        self.observers: list[Callable[[MessageArrived, Decision], None]] = []

    def handle_events(self, batch: list[Any]) -> None:
        sends: list[SendMessages] = []
        log: list[LogEntry] = []
        run: list[MessageArrived] = []
        finished: list[Peer] = []
        for event in batch:
            if type(event) is MessageArrived:
                run.append(event)
                continue
            if run:
                self._route_run(run, sends, log)
                run = []
            try:
                if isinstance(event, PeerJoined):
                    self._joined(event.peer, sends)
                elif isinstance(event, PeerLeft):
                    with self._lock:
                        self.router.peer_left(event.peer.id)
                    self.hops_flow.forget(event.peer.id)
                elif isinstance(event, Tick):
                    self._tick(event.name, sends)
                elif isinstance(event, PeerFinished):
                    finished.append(event.peer)
            except Exception as error:
                report_failure(self.stage, event, error)
        if run:
            self._route_run(run, sends, log)
        if sends:
            # What a sink refuses is what it was handed: sends.
            for refused in cast(list[SendMessages], self.connection.enqueue_many(sends)):
                for peer in refused.peers:
                    peer.counters.drop("connection-refused", len(refused.messages))
        for peer in finished:
            # Its last messages are routed and what they made us send it is
            # queued: our side closes behind that, in the connection stage's FIFO.
            close = ClosePeer(peer, 0, "peer closed its side")
            if not self.connection.enqueue(close):
                self.connection.enqueue_housekeeping(close)
        if log:
            self.packet_log.record_many(log)
        self.packet_log.flush()

    def _route_run(
        self, run: list[MessageArrived], sends: list[SendMessages], log: list[LogEntry]
    ) -> None:
        """Route consecutive messages: under one lock, unless queries must block first."""
        router = self.router
        if self.query_delay:
            for event in run:
                try:
                    if event.message.type == QUERY:
                        self._sleep(self.query_delay)
                    with self._lock:
                        deferred = router.qrp_deferred
                        decision = router.route(event.peer.id, event.message, event.body)
                        queued = router.qrp_deferred != deferred
                    if queued:
                        self._settle_qrp()
                    self._apply(event, decision, sends, log, time.time(), {})
                except Exception as error:
                    report_failure(self.stage, event, error)
            return
        route = router.route
        # Each message is routed (and applied) on its own `try`: an exception
        # costs its own message only, and costs nothing when none is raised.
        decisions: list[Decision | None] = []
        decided = decisions.append
        failed: list[tuple[MessageArrived, Exception]] = []
        with self._lock:
            deferred = router.qrp_deferred
            now = router.now()
            for event in run:
                try:
                    # Drops are counted once, by the stage (`Stage.count_drop` in `_apply`).
                    decided(route(event.peer.id, event.message, event.body, now))
                except Exception as error:
                    decided(None)
                    failed.append((event, error))
            queued = router.qrp_deferred != deferred
        if queued:
            # QRP messages were queued: make their decisions final (and
            # install finished tables) before applying them.
            try:
                self._settle_qrp()
            except Exception as error:
                for index, event in enumerate(run):
                    if event.message.type == QRP:
                        decisions[index] = None
                        report_failure(self.stage, event, error)
        for event, routing_error in failed:
            report_failure(self.stage, event, routing_error)
        wall_clock = time.time()
        resolved: dict[Sequence[int], list[Peer]] = {}
        for event, outcome in zip(run, decisions, strict=True):
            if outcome is None:
                continue
            try:
                self._apply(event, outcome, sends, log, wall_clock, resolved)
            except Exception as error:
                report_failure(self.stage, event, error)

    def _apply(
        self,
        event: MessageArrived,
        decision: Decision,
        sends: list[SendMessages],
        log: list[LogEntry],
        wall_clock: float,
        resolved: dict[Sequence[int], list[Peer]],
    ) -> None:
        """Turn a decision into sends, drop counts, a log entry and closes.

        `resolved` maps the target id tuples routing shares between decisions
        (a flood's neighbours) to live peers, once per batch.
        """
        message = event.message
        peer = event.peer
        if decision.dropped:
            reason = decision.reason or "dropped"
            peer.counters.drop(reason)
            if self.stage is not None:
                self.stage.count_drop(reason, event)
        fanout = 0
        for outgoing, target_ids in decision.sends:
            targets = resolved.get(target_ids) if type(target_ids) is tuple else None
            if targets is None:
                targets = self._live_peers(target_ids)
                if type(target_ids) is tuple:
                    resolved[target_ids] = targets
            if targets:
                last = sends[-1] if sends else None
                if (
                    last is not None
                    and last.peers is targets
                    and last.messages[0].type == outgoing.type
                ):
                    # Same destinations as the message before (`resolved`
                    # hands out one list per id tuple): one event, one encoding.
                    last.messages.append(outgoing)
                else:
                    sends.append(SendMessages(targets, [outgoing]))
                fanout += len(targets)
        log.append((wall_clock, peer.label, message, decision.action, decision.reason, fanout))
        if decision.sender_listens_at is not None:
            peer.learn_listen_address(decision.sender_listens_at)
        if decision.learned_hosts:
            self.catcher.enqueue(HostsLearned(list(decision.learned_hosts)))
        if decision.action == "closed-by-peer":
            self.connection.enqueue_housekeeping(ClosePeer(peer, 0, "bye received"))
        elif decision.close is not None:
            code, reason = decision.close
            self._cut_off(peer, decision.reason or "closed", code, reason)
        for observer in self.observers:
            observer(event, decision)

    def _cut_off(self, peer: Peer, limit: str, code: int, reason: str) -> None:
        """Close `peer` with Bye `code` for what its message did (a limit, a broken update)."""
        self.cutoffs[limit] = self.cutoffs.get(limit, 0) + 1
        # As the parser does for its own closes: whatever the peer sends from
        # now on is not even framed (a flooder's next reads cost nothing).
        peer.hang_up()
        if not peer.closing_or_closed:
            peer.close_reason = peer.close_reason or f"{code} {reason}"
            log.warning(
                "peer %s: %s, disconnecting with Bye %d: %s", peer.label, limit, code, reason
            )
        self.connection.enqueue_housekeeping(ClosePeer(peer, code, reason))

    def _settle_qrp(self) -> None:
        """Apply the QRP messages routing queued: the work outside the routing lock."""
        router = self.router
        with self._qrp_lock:
            with self._lock:
                pending = router.take_qrp_pending()
            if not pending:
                return  # another thread settled them (and holds no decision of ours)
            processed = router.process_qrp(pending)
            with self._lock:
                router.commit_qrp(processed)
        for item in processed:
            if item.error is not None:
                log.error(
                    "QRP update from peer #%d could not be applied",
                    item.info.id,
                    exc_info=(type(item.error), item.error, item.error.__traceback__),
                )

    def _live_peers(self, target_ids: Sequence[int]) -> list[Peer]:
        get_peer = self.peers.get
        targets = []
        for target_id in target_ids:
            target = get_peer(target_id)
            if target is not None and target.state == ESTABLISHED:
                targets.append(target)
        return targets

    def _joined(self, peer: Peer, sends: list[SendMessages]) -> None:
        result = peer.connection.handshake.result
        headers = result.their_headers if result is not None else Headers()
        with self._lock:
            greeting = self.router.peer_joined(
                peer.id,
                peer.role or ULTRAPEER,
                vendor_messages="vendor-messages" in peer.features,
                up_qrp="up-qrp" in peer.features,
                degree=advertised_degree(headers),
                max_ttl=advertised_max_ttl(headers),
            )
        for message in greeting:
            sends.append(SendMessages([peer], [message]))

    def _send_decided(
        self, decided: list[tuple[Message, list[int]]], sends: list[SendMessages]
    ) -> None:
        for message, target_ids in decided:
            targets = self._live_peers(target_ids)
            if targets:
                sends.append(SendMessages(targets, [message]))

    def _tick(self, name: str, sends: list[SendMessages]) -> None:
        if name == "routes":
            router = self.router
            with self._lock:
                router.expire()
                plan = router.plan_qrp_updates()
            # Deflating patches for our ultrapeers costs milliseconds each:
            # done outside the routing lock.
            built = router.build_qrp_updates(plan) if plan.due else []
            if built:
                with self._lock:
                    updates = router.finish_qrp_updates(built)
                self._send_decided(updates, sends)
            self._close_stalled_handshakes()
        elif name == DYNAMIC_QUERY_TICK:
            with self._lock:
                rounds = self.router.dynamic_query_rounds()
            self._send_decided(rounds, sends)
        elif name == HOPS_FLOW_TICK:
            self._hops_flow_check()
        elif name == "keepalive":
            now = time.monotonic()
            for peer in self.peers.established():
                if now - peer.last_heard > self.idle_timeout:
                    peer.counters.drop("idle-timeout")
                    self.connection.enqueue_housekeeping(
                        ClosePeer(
                            peer, 405, f"Activity timeout: silent for {now - peer.last_heard:.0f}s"
                        )
                    )
                    continue
                with self._lock:
                    ping = self.router.originate_ping(ttl=1)
                self.connection.enqueue_housekeeping(SendMessages([peer], [ping]))

    def queueing_delay(self) -> float:
        """This stage's queueing delay now: the recent 90th percentile of all
        its events, or of its queries if theirs is longer (the pongs served
        ahead of them would hide their wait); 0 once nothing waits (the
        window lags the recovery)."""
        stage = self.stage
        if stage is None or not stage.queue_length:
            return 0.0
        delay = stage.queue_delay.percentile(90)
        if QUERY_CLASS in stage.class_delay and stage.class_length(QUERY_CLASS):
            delay = max(delay, stage.class_delay[QUERY_CLASS].percentile(90))
        return delay

    def _hops_flow_check(self) -> None:
        """Hops-Flow to the neighbours feeding us most while our delay stays high; lift after."""
        with self._lock:
            fed = self.router.take_query_sources()
            # Ultrapeers that speak vendor messages (said so, or sent their list).
            eligible = [
                info.id
                for info in map(self.router.peer_info, self.router.peers)
                if info is not None
                and not info.leaf
                and (info.vendor_messages_enabled or info.supported_vendor_messages is not None)
            ]
        decided = self.hops_flow.update(time.monotonic(), self.queueing_delay(), fed, eligible)
        for peer_id, hops in decided:
            peer = self.peers.get(peer_id)
            if peer is None or peer.state != ESTABLISHED or peer.role == LEAF:
                continue
            peer.hops_flow_sent = None if hops == NO_LIMIT else hops
            log.info(
                "peer %s: %s",
                peer.label,
                "Hops-Flow lifted" if hops == NO_LIMIT else f"sent Hops-Flow {hops} (overloaded)",
            )
            self.connection.enqueue_housekeeping(SendMessages([peer], [hops_flow_message(hops)]))

    def _close_stalled_handshakes(self) -> None:
        # A socket that never finishes its handshake would hold a slot forever.
        now = time.time()
        for peer in self.peers:
            if (
                peer.state == PeerState.HANDSHAKING
                and now - peer.connected_at > self.handshake_timeout
            ):
                peer.counters.drop("handshake-timeout")
                self.connection.enqueue_housekeeping(ClosePeer(peer, 0, "handshake timed out"))
