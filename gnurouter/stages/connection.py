"""Connection stage: per-peer output formatting, write queues and orderly closes.

Messages for one peer within a batch are written with one call, so a deflate
link pays one sync flush per batch; a run of messages for several peers is
encoded once for all of them.
While a peer's socket is clogged (its kernel buffer full), messages wait in
the peer's own queue, whose bounds and shedding rule belong to the
conditioning policy (`OutputQueueLimits`); a peer that cannot even take what
may not be dropped is closed with Bye 502.
"""

from __future__ import annotations

import logging
from typing import Any

from gnurouter.conditioning.clogged import OutputQueueLimits
from gnurouter.mesh.peers import Peer, PeerState
from gnurouter.protocol.messages import Bye, Message, encode_all, new_guid
from gnurouter.seda.stage import Stage, report_failure
from gnurouter.stages.events import (
    ClosePeer,
    ConnectionEvent,
    LinkWritable,
    SendMessages,
    SendRaw,
)

log = logging.getLogger(__name__)

ESTABLISHED = PeerState.ESTABLISHED
SEND_QUEUE_FULL = 502
#: gtk-gnutella's Bye for a node "flow-controlled for too long".
FLOW_CONTROLLED = 405
#: Seconds a socket may take nothing before its peer is closed (gtk-gnutella's
#: node_tx_flowc_timeout); RouterConfig.flow_control_timeout sets it.
FLOW_CONTROL_TIMEOUT = 60.0


class ConnectionHandler:
    def __init__(
        self, *, limits: OutputQueueLimits, flow_control_timeout: float = FLOW_CONTROL_TIMEOUT
    ) -> None:
        self.limits = limits
        self.flow_control_timeout = flow_control_timeout
        self.stage: Stage[ConnectionEvent] | None = None
        self.clogged_closes = 0
        self.flow_control_closes = 0

    def handle_events(self, batch: list[Any]) -> None:
        pending: dict[Peer, list[SendMessages]] = {}
        for event in batch:
            try:
                if type(event) is SendMessages:
                    for peer in event.peers:
                        if peer.state != ESTABLISHED:
                            for message in event.messages:
                                self._drop(peer, message, "peer-gone")
                            continue
                        queued = pending.get(peer)
                        if queued is None:
                            pending[peer] = [event]
                        else:
                            queued.append(event)
                elif isinstance(event, SendRaw):
                    self._flush(pending)
                    self._send_raw(event)
                elif isinstance(event, ClosePeer):
                    self._flush(pending)
                    self._close(event)
                elif isinstance(event, LinkWritable):
                    pending.setdefault(event.peer, [])
            except Exception as error:
                report_failure(self.stage, event, error)
        self._flush(pending)

    def _drop(self, peer: Peer, message: Message, reason: str) -> None:
        if self.stage is not None:
            self.stage.count_drop(reason, SendMessages([peer], [message]))
        peer.counters.drop(reason)

    def _flush(self, pending: dict[Peer, list[SendMessages]]) -> None:
        for peer, sends in pending.items():
            try:
                self._write(peer, sends)
            except Exception as error:
                # What failed is this peer's link: it alone is closed.
                report_failure(self.stage, LinkWritable(peer), error)
        pending.clear()

    def _write(self, peer: Peer, sends: list[SendMessages]) -> None:
        if peer.state != ESTABLISHED:
            return
        queue = peer.output
        if not queue and not peer.link.write_paused:
            # The common case, nothing waiting and the socket open: each
            # run's encoding is shared by every peer it goes to.
            if sends:
                data = sends[0].wire() if len(sends) == 1 else b"".join(s.wire() for s in sends)
                self._send_encoded(peer, data, sum(len(s.messages) for s in sends))
            return
        stalled = peer.link.write_paused_for()
        if stalled > self.flow_control_timeout:
            # Shedding keeps its queue bounded, but a peer that takes nothing
            # while it keeps talking (a ping now and then) would hold its slot
            # and our work forever: past the deadline it goes, like gtk-gnutella's.
            self.flow_control_closes += 1
            log.warning(
                "peer %s: took nothing for %.0fs; closing with Bye %d",
                peer.label,
                stalled,
                FLOW_CONTROLLED,
            )
            peer.counters.drop("flow-control-timeout")
            self._close(ClosePeer(peer, FLOW_CONTROLLED, "Flow-controlled for too long"))
            return
        messages = [message for send in sends for message in send.messages]
        outcome = self.limits.offer(queue, messages)
        for dropped in outcome.dropped:
            self._drop(peer, dropped, "peer-clogged")
        if outcome.clogged:
            self.clogged_closes += 1
            log.warning(
                "peer %s: clogged with %d messages (%d bytes) that cannot be dropped; "
                "closing with Bye %d",
                peer.label,
                len(queue),
                queue.bytes,
                SEND_QUEUE_FULL,
            )
            self._close(ClosePeer(peer, SEND_QUEUE_FULL, "Send Queue Full"))
            return
        if not peer.link.write_paused:
            self._send(peer, queue.take_all())

    def _send(self, peer: Peer, messages: list[Message]) -> None:
        if messages:
            self._send_encoded(peer, encode_all(messages), len(messages))

    def _send_encoded(self, peer: Peer, data: bytes, count: int) -> None:
        data = peer.connection.send_encoded(data)
        peer.counters.messages_out += count
        peer.counters.bytes_out += len(data)
        peer.link.write(data)

    def _send_raw(self, event: SendRaw) -> None:
        peer = event.peer
        if peer.state == PeerState.CLOSED:
            return
        if event.data:
            peer.counters.bytes_out += len(event.data)
            peer.link.write(event.data)
        if event.close_after:
            peer.mark_closing()
            peer.link.close()

    def _close(self, event: ClosePeer) -> None:
        peer = event.peer
        if peer.closing_or_closed:
            return
        # The protocol's view, not the router's: a handshake whose final 200 OK
        # came with bad bytes behind it never reached ESTABLISHED, but the
        # link speaks messages, so it still gets its Bye.
        if peer.connection.established and not event.code:
            # A close without Bye (the peer half-closed, or said Bye): what is
            # queued for it still goes, as far as its socket takes it.
            self._send(peer, peer.output.take_all())
        elif peer.connection.established and peer.connection.version != "0.4":
            # Bye goes after what is already queued (Bye-Packet 0.1), except
            # for a clogged peer, whose queue is what it cannot take.
            queued = peer.output.take_all()
            if event.code in (SEND_QUEUE_FULL, FLOW_CONTROLLED):
                for message in queued:
                    self._drop(peer, message, "closed-clogged")
                queued = []
            bye = Message.from_body(new_guid(), 1, 0, Bye(event.code, event.reason))
            self._send(peer, [*queued, bye])
            log.debug("peer %s: sent Bye %d %s", peer.label, event.code, event.reason)
            # The one INFO line of a close (the parser's "closed: ...") says why.
            peer.close_reason = peer.close_reason or f"sent Bye {event.code} {event.reason}"
        peer.mark_closing()
        peer.link.close()
