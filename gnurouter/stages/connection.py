"""Connection stage: per-peer output formatting, write queues and orderly closes.

Messages for one peer within a batch are encoded (and deflated) together and
written with one call, so a deflate link pays one sync flush per batch.
While a peer's socket buffer is full the messages wait in the peer's own
queue, bounded in bytes; what does not fit is dropped and counted against
that peer (load conditioning refines the choice of what to drop).
"""

from __future__ import annotations

import logging
from typing import Any

from gnurouter.events import ClosePeer, LinkWritable, SendMessage, SendRaw
from gnurouter.peers import Peer, PeerState
from gnurouter.protocol.messages import Bye, Message, new_guid
from gnurouter.seda.stage import Stage

log = logging.getLogger(__name__)

ESTABLISHED = PeerState.ESTABLISHED


class ConnectionHandler:
    def __init__(self, *, peer_output_max_bytes: int) -> None:
        self.peer_output_max_bytes = peer_output_max_bytes
        self.stage: Stage | None = None

    def handle_events(self, batch: list[Any]) -> None:
        pending: dict[Peer, list[Message]] = {}
        for event in batch:
            if isinstance(event, SendMessage):
                message = event.message
                for peer in event.peers:
                    if peer.state != ESTABLISHED:
                        self._drop(peer, message, "peer-gone")
                        continue
                    queued = pending.get(peer)
                    if queued is None:
                        pending[peer] = [message]
                    else:
                        queued.append(message)
            elif isinstance(event, SendRaw):
                self._flush(pending)
                self._send_raw(event)
            elif isinstance(event, ClosePeer):
                self._flush(pending)
                self._close(event)
            elif isinstance(event, LinkWritable):
                pending.setdefault(event.peer, [])
        self._flush(pending)

    def _drop(self, peer: Peer, message: Message, reason: str) -> None:
        if self.stage is not None:
            self.stage.count_drop(reason, SendMessage([peer], message))
        peer.counters.drop(reason)

    def _flush(self, pending: dict[Peer, list[Message]]) -> None:
        for peer, messages in pending.items():
            self._write(peer, messages)
        pending.clear()

    def _write(self, peer: Peer, messages: list[Message]) -> None:
        if peer.state not in (PeerState.ESTABLISHED, PeerState.CLOSING):
            return
        queue = peer.output
        for message in messages:
            size = len(message.payload) + 23
            if peer.output_bytes + size > self.peer_output_max_bytes:
                self._drop(peer, message, "peer-clogged")
                continue
            queue.append(message)
            peer.output_bytes += size
        if not queue or peer.link.write_paused:
            return
        batch = list(queue)
        queue.clear()
        peer.output_bytes = 0
        data = peer.connection.send(batch)
        peer.counters.messages_out += len(batch)
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
            peer.state = PeerState.CLOSING
            peer.link.close()

    def _close(self, event: ClosePeer) -> None:
        peer = event.peer
        if peer.state == PeerState.CLOSED:
            return
        if peer.state == PeerState.ESTABLISHED and event.code and peer.connection.version != "0.4":
            # Bye goes after what is already queued, then the link closes
            # once the socket has sent it all (Bye-Packet 0.1; 0.4 has no Bye).
            bye = Message.from_body(new_guid(), 1, 0, Bye(event.code, event.reason))
            peer.state = PeerState.CLOSING
            queued = list(peer.output)
            peer.output.clear()
            peer.output_bytes = 0
            data = peer.connection.send([*queued, bye])
            peer.counters.messages_out += len(queued) + 1
            peer.counters.bytes_out += len(data)
            peer.link.write(data)
            log.info("peer %s: sent Bye %d %s", peer.label, event.code, event.reason)
        peer.state = PeerState.CLOSING
        peer.link.close()
