"""Parser stage: handshakes, inflation, framing and validation of each peer's stream.

Everything protocol-shaped is delegated to the sans-I/O `PeerConnection`;
this stage decides what the outcomes mean for the router: who is admitted,
which messages reach the router stage, and who is disconnected for what.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.conditioning.classes import CONTROL, message_class
from gnurouter.mesh.handshaking import (
    LISTEN_ADDRESS_HEADERS,
    HandshakePolicy,
    peer_features,
    peer_role,
)
from gnurouter.mesh.peers import ControlBudget, Peer, PeerTable
from gnurouter.protocol.addresses import clean_text, parse_endpoint, parse_endpoints
from gnurouter.protocol.deflate import LEAF_DEFLATE
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.handshake import (
    ConnectRequest,
    ConnectResponse,
    HandshakeComplete,
    HandshakeRefused,
    Headers,
)
from gnurouter.protocol.messages import Message, MessageType, validate
from gnurouter.routing.roles import LEAF, ULTRAPEER
from gnurouter.seda.logsummary import EventSummary
from gnurouter.seda.stage import Sink, Stage, report_failure
from gnurouter.stages.events import (
    CatcherEvent,
    ClosePeer,
    ConnectFailed,
    ConnectionEvent,
    HostConnected,
    HostsLearned,
    MessageArrived,
    ParserEvent,
    PeerFinished,
    PeerJoined,
    PeerLeft,
    PeerLost,
    PeerOpened,
    RouterEvent,
    SendRaw,
    StreamChunk,
)

log = logging.getLogger(__name__)

#: Why a peer that sent FIN is closed.
HALF_CLOSED = "peer closed its side"

QUERY = MessageType.QUERY


class ParserHandler:
    def __init__(
        self,
        *,
        router: Sink[RouterEvent],
        connection: Sink[ConnectionEvent],
        catcher: Sink[CatcherEvent],
        peers: PeerTable,
        policy: HandshakePolicy,
        flow: InputFlowControl,
        max_malformed_per_peer: int,
        control_rate: float = 0.0,
        control_burst: int = 500,
    ) -> None:
        self.router = router
        self.connection = connection
        self.catcher = catcher
        self.peers = peers
        self.policy = policy
        self.flow = flow
        self.max_malformed_per_peer = max_malformed_per_peer
        self.control_rate = control_rate
        self.control_burst = control_burst
        self.stage: Stage[ParserEvent] | None = None  # set by the graph builder
        self.protocol_errors = 0
        self.malformed = 0
        # Malformed messages: DEBUG each, an INFO summary per peer once a minute.
        self.event_log = EventSummary(log, {"malformed": "malformed messages dropped"})
        self._arrivals: list[MessageArrived] = []
        # A gnurouter.traces TraceRecorder while recording (`run --record`), else None.
        self.recorder: Any = None

    def handle_events(self, batch: list[Any]) -> None:
        arrivals: list[MessageArrived] = []
        self._arrivals = arrivals
        for event in batch:
            try:
                if isinstance(event, StreamChunk):
                    self._receive(event.peer, event.data)
                elif isinstance(event, PeerOpened):
                    self._opened(event.peer)
                elif isinstance(event, PeerFinished):
                    self._finished(event.peer)
                elif isinstance(event, PeerLost):
                    self._lost(event.peer, event.reason)
            except Exception as error:
                # A bug met by this event's data: the stage closes its peer;
                # the other peers' events in this batch are handled as usual.
                report_failure(self.stage, event, error)
        if arrivals:
            # What a sink refuses is what it was handed: arrivals.
            refused_arrivals = cast(
                list[MessageArrived | PeerFinished], self.router.enqueue_many(arrivals)
            )
            for refused in refused_arrivals:
                if isinstance(refused, PeerFinished):
                    self.connection.enqueue_housekeeping(ClosePeer(refused.peer, 0, HALF_CLOSED))
                    continue
                refused.peer.counters.drop("router-refused")
        self.flow.release_if_drained()

    # -- lifecycle -------------------------------------------------------

    def _opened(self, peer: Peer) -> None:
        if self.recorder is not None:
            self.recorder.opened(peer)
        self.peers.add(peer)
        if peer.outgoing:
            data = peer.connection.start(self.policy.request_headers(peer))
            self.connection.enqueue_housekeeping(SendRaw(peer, data))

    def _lost(self, peer: Peer, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.closed(peer, reason)
        was_established = peer.joined  # closing by now, if we closed it
        peer.mark_closed()
        peer.close_reason = peer.close_reason or reason
        self.peers.remove(peer)
        if was_established:
            self.router.enqueue_housekeeping(PeerLeft(peer))
        elif peer.outgoing:
            # A host that takes TCP but never completes the handshake backs
            # off like one that refuses TCP.
            self.catcher.enqueue_housekeeping(ConnectFailed(peer.address, reason))
        self.event_log.flush_peer(peer.label)
        log.info("peer %s closed: %s", peer.label, peer.close_reason)

    def _finished(self, peer: Peer) -> None:
        """Its FIN: its last bytes came before this.  The router routes what they
        held, then has our side closed after what is queued for it (stages/router.py)."""
        if not peer.established:
            self._close(peer, 0, HALF_CLOSED)
            return
        if peer.hung_up or peer.closing_or_closed:
            return
        peer.hang_up()
        peer.close_reason = f"0 {HALF_CLOSED}"
        self._arrivals.append(cast(MessageArrived, PeerFinished(peer)))  # in order, behind them

    def _close(self, peer: Peer, code: int, reason: str) -> None:
        if peer.hung_up or peer.closing_or_closed:
            return
        # From now on nothing it sends counts: the rest of this chunk, and any
        # chunk read before the connection stage closes the socket, is ignored
        # (a peer refused a slot must not get its messages routed).
        peer.hang_up()
        peer.close_reason = f"{code} {reason}"
        self.connection.enqueue_housekeeping(ClosePeer(peer, code, reason))

    # -- the stream ------------------------------------------------------

    def _receive(self, peer: Peer, data: bytes) -> None:
        if peer.hung_up or peer.closing_or_closed:
            return
        now = time.monotonic()
        peer.last_heard = now
        try:
            events = peer.connection.receive_data(data, now)
        except ProtocolError as error:
            self._protocol_error(peer, error)
            return
        if self.recorder is not None:
            self.recorder.received(peer, events)
        arrive = self._arrivals.append
        counters = peer.counters
        for event in events:
            if type(event) is Message:
                # Inline for the bulk of traffic: a well-formed query (the
                # query half of the one rule, `protocol.messages.validate`),
                # which cannot change the peer's state.
                if event.type == QUERY:
                    payload = event.payload
                    if len(payload) >= 3 and payload.find(b"\x00", 2) >= 0:
                        counters.messages_in += 1
                        arrive(MessageArrived(peer, event, None))
                        continue
                self._message(peer, event, now)
            elif isinstance(event, ConnectRequest):
                self._request(peer, event)
            elif isinstance(event, ConnectResponse):
                self._response(peer, event)
            elif isinstance(event, HandshakeComplete):
                self._established(peer, event)
            elif isinstance(event, HandshakeRefused):
                self._refused(peer, event)
            if peer.hung_up or peer.closing_or_closed:
                return
        # The messages before a bad header were delivered above; the error
        # itself is only recorded, and the peer may send nothing more.
        failure = peer.connection.failed
        if failure is not None:
            self._protocol_error(peer, failure)

    def _protocol_error(self, peer: Peer, error: ProtocolError) -> None:
        # The connection keeps the error; its traceback's frames would keep
        # the connection (a cycle) and the peer's data until a full collection.
        error.__traceback__ = None
        self.protocol_errors += 1
        # Budget errors say which bound tripped (inflate-ratio, inflate-rate).
        reason = getattr(error, "limit", "protocol-error")
        peer.counters.drop(reason)
        self.peers.reject(reason)
        log.warning("peer %s: protocol error, disconnecting: %s", peer.label, error)
        self._close(peer, error.bye_code, str(error))

    def _message(self, peer: Peer, message: Message, now: float) -> None:
        counters = peer.counters
        counters.messages_in += 1
        if self.control_rate and message_class(message) == CONTROL:
            # Control messages are never displaced at the router stage, so one
            # link's burst of them could crowd every other link's queries out
            # of its queue: each link gets a budget here, before the queue.
            budget = peer.control_budget
            if budget is None:
                budget = peer.control_budget = ControlBudget(
                    self.control_rate, self.control_burst, now
                )
            if not budget.take(now):
                counters.drop("control-rate")
                if self.stage is not None:
                    self.stage.count_drop("control-rate", MessageArrived(peer, message, None))
                if budget.refused > 2 * self.control_burst:
                    self.peers.reject("control-flood")
                    log.warning(
                        "peer %s: %d control messages over its budget (%g/s), disconnecting",
                        peer.label,
                        budget.refused,
                        self.control_rate,
                    )
                    self._close(peer, 400, "Control-message flood")
                return
        try:
            body = validate(message)
        except ProtocolError as error:
            self.malformed += 1
            counters.malformed += 1
            counters.drop("malformed")
            if self.stage is not None:
                self.stage.count_drop("malformed", MessageArrived(peer, message, None))
            self.event_log.note(peer.label, "malformed", f"{message.type_name}: {error}")
            if counters.malformed > self.max_malformed_per_peer:
                self._close(peer, 400, f"too many malformed messages ({counters.malformed})")
            return
        self._arrivals.append(MessageArrived(peer, message, body))

    def _request(self, peer: Peer, request: ConnectRequest) -> None:
        self._note_peer_headers(peer, request.headers)
        verdict = self.policy.respond(peer, request)
        if verdict.accepted:
            peer.role = verdict.role
            self._choose_deflate(peer)
            data = peer.connection.accept(verdict.headers)
            self.connection.enqueue_housekeeping(SendRaw(peer, data))
            if peer.connection.established:
                # 0.4 has no third step: the handshake is over with our reply.
                self._joined(peer)
        else:
            self._refuse(peer, verdict.status, verdict.reason, verdict.headers)

    @staticmethod
    def _choose_deflate(peer: Peer) -> None:
        # Before the handshake completes, when the link's compressor is made.
        if peer.role == LEAF:
            peer.connection.deflate_settings = LEAF_DEFLATE

    def _refuse(self, peer: Peer, status: int, reason: str, headers: Headers) -> None:
        data = peer.connection.refuse(status, reason, headers)
        peer.mark_closing()
        peer.close_reason = f"refused: {status} {reason}"
        peer.counters.drop(f"refused-{status}")
        self.connection.enqueue_housekeeping(SendRaw(peer, data, close_after=True))

    def _response(self, peer: Peer, response: ConnectResponse) -> None:
        self._note_peer_headers(peer, response.headers)
        if response.status != 200 or peer.connection.established:
            return  # a refusal also arrives as HandshakeRefused; the final 200 as Complete
        verdict = self.policy.confirm(peer, response.headers)
        if not verdict.accepted:
            self._refuse(peer, verdict.status, verdict.reason, verdict.headers)
            return
        peer.role = verdict.role
        self._choose_deflate(peer)
        data = peer.connection.confirm(verdict.headers)
        self.connection.enqueue_housekeeping(SendRaw(peer, data))
        if peer.connection.established:
            self._joined(peer)

    def _established(self, peer: Peer, complete: HandshakeComplete) -> None:
        self._note_peer_headers(peer, complete.their_headers)
        if peer.established:
            return
        # Their final 200 may change what they said first (X-Ultrapeer: False
        # after leaf guidance): the role is what both blocks say together.
        role = peer_role(complete.their_headers) if complete.version != "0.4" else peer.role
        # Slots are counted among established neighbours only (handshakes have
        # a pool of their own), so this is where a slot is really taken.
        refusal = self.policy.admit(peer, role or ULTRAPEER)
        if refusal is not None:
            peer.counters.drop(f"refused-{refusal.status}")
            self._close(peer, refusal.status, refusal.reason)
            return
        peer.role = role
        self._joined(peer)

    def _joined(self, peer: Peer) -> None:
        peer.mark_established()
        result = peer.connection.handshake.result
        if result is not None:
            peer.features = peer_features(result.their_headers)
        if peer.role is None:
            peer.role = peer_role(result.their_headers if result is not None else Headers())
        # A live host; its listening address is worth keeping (and trying) if
        # it is an ultrapeer, and the address we reached is, whatever it is.
        address = peer.address if peer.outgoing else peer.listen_address
        if address is not None and (peer.outgoing or peer.role != LEAF):
            self.catcher.enqueue_housekeeping(HostConnected(address, peer.role != LEAF))
        self.router.enqueue_housekeeping(PeerJoined(peer))
        self.peers.announce(peer)
        log.info("peer %s established (%s)", peer.label, peer.user_agent or "no User-Agent")

    def _refused(self, peer: Peer, refused: HandshakeRefused) -> None:
        if not refused.by_us:
            self._learn_try_headers(refused.headers, peer)
            peer.close_reason = f"refused by peer: {refused.status} {refused.reason}"
            peer.mark_closing()
            self.connection.enqueue_housekeeping(SendRaw(peer, b"", close_after=True))

    def _note_peer_headers(self, peer: Peer, headers: Headers) -> None:
        agent = headers.get("User-Agent")
        if agent:
            peer.user_agent = clean_text(agent)
        for name in LISTEN_ADDRESS_HEADERS:
            value = headers.get(name)
            if value is None:
                continue
            listen = parse_endpoint(value)
            if listen is None:
                self._bad_header(peer, name, value)
                continue
            peer.learn_listen_address(listen)
        self._learn_try_headers(headers, peer)

    def _learn_try_headers(self, headers: Headers, peer: Peer) -> None:
        # X-Try is the pre-ultrapeer header: any servent, ultrapeer or not.
        for name, source in (("X-Try-Ultrapeers", "x-try-ultrapeers"), ("X-Try", "x-try")):
            hosts, bad = parse_endpoints(headers.get(name))
            if bad:
                self._bad_header(peer, name, headers.get(name, ""))
            if hosts:
                self.catcher.enqueue_housekeeping(HostsLearned(hosts, source=source))

    def _bad_header(self, peer: Peer, name: str, value: str) -> None:
        """A header value we cannot use: ignored (never stored or echoed), counted, logged."""
        if name in peer.bad_headers:
            return
        peer.bad_headers.add(name)
        self.peers.reject(f"bad-header:{name.lower()}")
        peer.counters.drop("bad-header")
        log.info("peer %s: ignoring bad %s value %r", peer.label, name, value[:80])
