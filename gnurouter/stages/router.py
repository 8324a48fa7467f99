"""Router stage: routing decisions and the packet log (the original's GnutellaLogger).

With `query_delay` set, every query holds its thread for that long before it
is routed, reproducing the bottleneck of the SEDA overload experiment.  The
delay is spent outside the routing lock, so more threads mean more queries
in flight, which is exactly what the thread governor exploits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gnurouter.events import (
    ClosePeer,
    HostsLearned,
    MessageArrived,
    PeerJoined,
    PeerLeft,
    SendMessage,
    Tick,
)
from gnurouter.packetlog import PacketLog
from gnurouter.peers import PeerState, PeerTable
from gnurouter.protocol.messages import MessageType
from gnurouter.routing import Decision, Router
from gnurouter.seda.stage import Sink, Stage

QUERY = MessageType.QUERY


class RouterHandler:
    def __init__(
        self,
        *,
        router: Router,
        connection: Sink,
        catcher: Sink,
        peers: PeerTable,
        packet_log: PacketLog,
        query_delay: float = 0.0,
        idle_timeout: float = 90.0,
        handshake_timeout: float = 20.0,
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
        self.stage: Stage | None = None
        # Called with (event, decision) after every routing decision, on the
        # router stage's thread: tests await them, recorders tap them.
        self.observers: list[Callable[[MessageArrived, Decision], None]] = []
        self.routed = 0
        self.dropped: dict[str, int] = {}

    def handle_events(self, batch: list[Any]) -> None:
        for event in batch:
            if isinstance(event, MessageArrived):
                self._route(event)
            elif isinstance(event, PeerJoined):
                with self._lock:
                    self.router.peer_joined(event.peer.id)
            elif isinstance(event, PeerLeft):
                with self._lock:
                    self.router.peer_left(event.peer.id)
            elif isinstance(event, Tick):
                self._tick(event.name)
        self.packet_log.flush()

    def _route(self, event: MessageArrived) -> None:
        message = event.message
        if self.query_delay and message.type == QUERY:
            self._sleep(self.query_delay)
        with self._lock:
            decision = self.router.route(event.peer.id, message, event.body)
        self._apply(event, decision)

    def _apply(self, event: MessageArrived, decision: Decision) -> None:
        message = event.message
        peer = event.peer
        if decision.dropped:
            reason = decision.reason or "dropped"
            with self._lock:
                self.dropped[reason] = self.dropped.get(reason, 0) + 1
            peer.counters.drop(reason)
            if self.stage is not None:
                self.stage.count_drop(reason, event)
        sent = 0
        for target_id, outgoing in decision.sends:
            target = self.peers.get(target_id)
            if target is None or target.state != PeerState.ESTABLISHED:
                continue
            if self.connection.enqueue(SendMessage(target, outgoing)):
                sent += 1
        if sent:
            with self._lock:
                self.routed += 1
        self.packet_log.record(peer.label, message, decision.action, decision.reason, sent)
        if decision.learned_hosts:
            self.catcher.enqueue(HostsLearned(decision.learned_hosts))
        if decision.action == "closed-by-peer":
            self.connection.enqueue_housekeeping(ClosePeer(peer, 0, "bye received"))
        for observer in self.observers:
            observer(event, decision)

    def _tick(self, name: str) -> None:
        if name == "routes":
            with self._lock:
                self.router.expire()
            self._close_stalled_handshakes()
        elif name == "keepalive":
            now = time.monotonic()
            for peer in self.peers.established():
                if now - peer.last_heard > self.idle_timeout:
                    self.connection.enqueue_housekeeping(
                        ClosePeer(peer, 405, f"silent for {now - peer.last_heard:.0f}s")
                    )
                    continue
                with self._lock:
                    ping = self.router.originate_ping(ttl=1)
                self.connection.enqueue_housekeeping(SendMessage(peer, ping))

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
