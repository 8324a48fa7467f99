"""One replayed connection: a real 0.6 link to the target, written to on schedule.

The link is a Twisted protocol around the sans-I/O `PeerConnection` (the
router's own): the handshake, deflate both ways, and framing what comes back
all go through it, and what comes back is counted per message type (headers
only: payloads are not decoded, but for a Bye's code).

It is also the socket's push producer: while the target reads slower than the
schedule and the socket buffer is full, records wait in `pending` (as they do
before the handshake is over) and the time so spent is reported as
`blocked_seconds`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.handshake import (
    ConnectResponse,
    HandshakeComplete,
    HandshakeRefused,
    Headers,
    Role,
    negotiate_encoding,
)
from gnurouter.protocol.messages import Bye, Message, MessageType
from gnurouter.traces.replay.report import ReplayReport, SentRecord
from gnurouter.traces.replay.schedule import ConnectionKey

BYE = int(MessageType.BYE)

#: A record waiting for the handshake or a drained socket: (due, data, is a message).
PendingRecord = tuple[float, bytes, bool]


class LinkOwner(Protocol):
    """What a link reports to (the `Replayer`)."""

    report: ReplayReport
    #: Messages received from the target, by type (all links together).
    received: list[int]
    reactor: Any
    clock: Callable[[], float]

    def link_established(self, link: ReplayLink) -> None: ...

    def link_lost(self, link: ReplayLink, reason: Failure) -> None: ...

    def connect_failed(self, link: ReplayLink, reason: Failure) -> None: ...


@implementer(IPushProducer)
class ReplayLink(protocol.Protocol):
    """One trace connection: handshake, then scheduled writes; counts what comes back."""

    def __init__(
        self,
        owner: LinkOwner,
        key: ConnectionKey,
        *,
        headers: Headers,
        deflate: bool,
        close_timeout: float,
    ) -> None:
        self.owner = owner
        self.key = key
        self.connection = PeerConnection(Role.INITIATOR)
        self._headers = headers
        self._deflate = deflate
        self._close_timeout = close_timeout
        self.established = False
        self.closed = False
        self.close_requested = False
        self.paused = False
        self.paused_at = 0.0
        self.pending: deque[PendingRecord] = deque()
        self.pending_bytes = 0
        self._closing = False
        self._close_timer: Any = None
        self.lost: defer.Deferred[None] = defer.Deferred()

    @property
    def _wire(self) -> Any:
        return self.transport

    # -- Twisted protocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        wire = self._wire
        if hasattr(wire, "setTcpNoDelay"):
            wire.setTcpNoDelay(True)
        wire.registerProducer(self, True)
        wire.write(self.connection.start(self._headers))

    def dataReceived(self, data: bytes) -> None:
        report = self.owner.report
        report.received_bytes += len(data)
        connection = self.connection
        if connection.failed is not None:
            return  # reported once; the link is closing
        try:
            events = connection.receive_data(data)
        except ProtocolError as failure:
            self._protocol_error(str(failure))
            return
        received = self.owner.received
        for event in events:
            if type(event) is Message:
                type_ = event.type
                received[type_] += 1
                if type_ == BYE:
                    self._count_bye(event)
            elif isinstance(event, ConnectResponse) and event.status == 200:
                if connection.established:
                    continue
                reply = negotiate_encoding(event.headers, we_support_deflate=self._deflate)
                self._wire.write(connection.confirm(Headers.from_pairs(reply)))
                self._established()
            elif isinstance(event, HandshakeComplete):
                self._established()
            elif isinstance(event, HandshakeRefused):
                report.connections_refused[f"{event.status} {event.reason}".strip()] += 1
        if connection.failed is not None:
            self._protocol_error(str(connection.failed))

    def _protocol_error(self, text: str) -> None:
        self.owner.report.error(f"link {self.key[1]}: protocol error from the target: {text}")
        self._wire.loseConnection()

    def _count_bye(self, message: Message) -> None:
        try:
            code = Bye.decode(message.payload).code
        except ProtocolError:
            return  # too short to hold a code; counted as a Bye all the same
        self.owner.report.bye_codes[code] += 1

    def _established(self) -> None:
        if self.established or not self.connection.established:
            return
        self.established = True
        self.owner.link_established(self)
        self.flush_pending()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self.owner.link_lost(self, reason)

    # -- IPushProducer: the socket's write buffer ----------------------------------

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.paused_at = self.owner.clock()

    def resumeProducing(self) -> None:
        if self.paused:
            self.unpause()
            self.flush_pending()

    def stopProducing(self) -> None:
        self.pauseProducing()

    def unpause(self) -> None:
        """The socket takes data again (or is gone): count the time it was blocked."""
        if self.paused:
            self.paused = False
            self.owner.report.blocked_seconds += self.owner.clock() - self.paused_at

    # -- sending ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """A write now goes straight to the socket (nothing waits before it)."""
        return self.established and not self.paused and not self.pending

    def hold(self, due: float, data: bytes, is_message: bool) -> None:
        """Keep a record until the handshake is over or the socket drains."""
        self.pending.append((due, data, is_message))
        self.pending_bytes += len(data)

    def flush_pending(self) -> None:
        """Write what waited for the handshake or for the socket to drain."""
        if not self.established or self.closed or not self.pending:
            self._maybe_close()
            return
        parts = []
        sent: list[SentRecord] = []
        pending = self.pending
        while pending and not self.paused:
            due, data, is_message = pending.popleft()
            parts.append(data)
            sent.append((due, is_message, len(data)))
        self.pending_bytes = sum(len(item[1]) for item in pending)
        if parts:
            self.write(b"".join(parts))
            self.owner.report.sent(self.owner.clock(), sent)
        self._maybe_close()

    def write(self, data: bytes) -> None:
        """Write to an established link (deflated if negotiated)."""
        self._wire.write(self.connection.send_encoded(data))

    def drop_pending(self) -> int:
        """Drop what still waits (the link is gone); the number of messages dropped."""
        count = sum(1 for _, _, is_message in self.pending if is_message)
        self.pending.clear()
        self.pending_bytes = 0
        return count

    def request_close(self, *, discard_pending: bool = False) -> None:
        """Close once everything pending is written (or at once, dropping it)."""
        self.close_requested = True
        if discard_pending:
            self.pending.clear()
        self._maybe_close()

    def _maybe_close(self) -> None:
        """Half-close once everything is written, and read on until the target closes.

        Closing outright while the target's data is still unread makes the
        kernel answer with a reset, and a reset makes the target's kernel drop
        what it has not read yet: the trace's last messages (often a Bye)
        would be lost.  The target closes after our FIN; if it does not
        within `close_timeout`, the link is closed from here.
        """
        if not self.close_requested or self.pending or self.closed or self._closing:
            return
        wire = self._wire
        if wire is None:
            return
        self._closing = True
        if getattr(wire, "producer", None) is not None:
            wire.unregisterProducer()
        wire.loseWriteConnection()
        self._close_timer = self.owner.reactor.callLater(self._close_timeout, wire.abortConnection)


class LinkFactory(protocol.ClientFactory):
    """Connects one `ReplayLink` (built beforehand, so records can wait on it)."""

    def __init__(self, link: ReplayLink) -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> ReplayLink:
        return self.link

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.link.owner.connect_failed(self.link, reason)
