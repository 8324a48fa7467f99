"""Twisted at the edge: sockets become reader-stage events, and `PeerLink` becomes socket calls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from gnurouter.conditioning.backpressure import InputFlowControl
from gnurouter.mesh.handshaking import HandshakePool
from gnurouter.mesh.peers import Peer
from gnurouter.ops.lograte import OncePerInterval
from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.handshake import Role
from gnurouter.seda.stage import Sink
from gnurouter.stages.events import (
    BytesReceived,
    ConnectionEvent,
    LinkWritable,
    PeerFinished,
    PeerLost,
    PeerOpened,
    ReaderEvent,
)

log = logging.getLogger(__name__)

#: Seconds a closing peer gets to take its last bytes (Bye) before the socket is aborted.
CLOSE_TIMEOUT = 10
#: Handshakes displaced from one address are logged at most this often (seconds).
DISPLACEMENT_LOG_INTERVAL = 60.0


@implementer(IPushProducer, IHalfCloseableProtocol)
class GnutellaWire(protocol.Protocol):
    """One TCP connection.  It parses nothing: bytes go to the reader stage.

    It registers itself as the transport's producer so that the transport
    tells it when the kernel buffer is full (`pauseProducing`): that is the
    signal the connection stage uses to hold a clogged peer's output in its
    own bounded queue instead of in Twisted's unbounded one.
    """

    def __init__(self, factory: GnutellaFactory, outgoing: bool) -> None:
        self.factory = factory
        self.outgoing = outgoing
        self.peer: Peer | None = None
        self._write_paused = False
        self._paused_since: float | None = None
        self._reading_paused = False
        self._abort_call: Any = None
        # Twisted never clears `connected`, so the wire keeps its own record.
        self._lost = False

    @property
    def _wire(self) -> Any:
        # Twisted's zope interfaces are opaque to mypy; the transport is a TCP one.
        return self.transport

    # -- Twisted protocol --------------------------------------------------

    def connectionMade(self) -> None:
        # Gnutella messages are small and latency matters more than packet
        # count: Nagle's algorithm would hold a pong back until the previous
        # segment is acknowledged.
        self._wire.setTcpNoDelay(True)
        address = self._wire.getPeer()
        role = Role.INITIATOR if self.outgoing else Role.ACCEPTOR
        peer = Peer(
            (address.host, address.port),
            self,
            self.factory.make_connection(role),
            outgoing=self.outgoing,
        )
        self.peer = peer
        if not self.outgoing:
            self.factory.admit_handshake(peer)
        self._wire.registerProducer(self, True)
        self.factory.reader.enqueue(PeerOpened(peer))

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None:
            return  # already lost
        self.factory.reader.enqueue(BytesReceived(self.peer, data))
        self.factory.flow.after_input(self)

    def readConnectionLost(self) -> None:
        """The peer half-closed (FIN): it has said all it will, but may still read.

        Its last bytes are routed before the router closes its own side, after
        what is queued for it; closing at once instead would lose what is
        already on its way to a peer that is still listening.
        """
        if self.peer is not None:
            self.factory.reader.enqueue(PeerFinished(self.peer))

    def writeConnectionLost(self) -> None:
        pass  # we never half-close ourselves

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._lost = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        peer, self.peer = self.peer, None
        if peer is not None:
            self.factory.forget_handshake(peer)
            self.factory.reader.enqueue(PeerLost(peer, reason.getErrorMessage()))
        # The peer holds this wire as its link; dropping our reference to it
        # leaves no cycle, so both go as soon as the stages let the peer go,
        # without waiting for a full garbage collection.

    # -- IPushProducer: the transport telling us about its write buffer -----

    def pauseProducing(self) -> None:
        self._pause_writes()

    def resumeProducing(self) -> None:
        self._write_paused = False
        self._paused_since = None
        if self.peer is not None:
            self.factory.connection.enqueue_housekeeping(LinkWritable(self.peer))

    def stopProducing(self) -> None:
        self._pause_writes()

    def _pause_writes(self) -> None:
        if not self._write_paused:
            self._write_paused = True
            self._paused_since = self.factory.clock.seconds()

    # -- PeerLink ------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def write_paused_for(self) -> float:
        """Seconds the socket has taken nothing (its kernel buffer full); 0 if it drains."""
        if self._paused_since is None or self._lost:
            return 0.0
        now: float = self.factory.clock.seconds()
        return max(0.0, now - self._paused_since)

    def write(self, data: bytes) -> None:
        if not self._lost:
            self._wire.write(data)

    def close(self) -> None:
        if self._lost:
            return  # already gone: no close to wait for, no timer to arm
        # Unregister first: a transport with a registered producer may wait
        # for it before honouring loseConnection.
        self._pause_writes()
        if getattr(self._wire, "producer", None) is not None:
            self._wire.unregisterProducer()
        self._wire.loseConnection()
        # A peer that stopped reading would keep a half-closed socket (and its
        # unsent buffer) forever: give it a bounded time to take the rest.
        if self._abort_call is None:
            self._abort_call = self.factory.clock.callLater(
                self.factory.close_timeout, self._abort_if_still_open
            )

    def _abort_if_still_open(self) -> None:
        self._abort_call = None
        if not self._lost:
            log.info(
                "peer %s did not take its last bytes in %gs; aborting",
                self.peer.label if self.peer else "?",
                self.factory.close_timeout,
            )
            self._wire.abortConnection()

    def abort(self) -> None:
        if not self._lost:
            self._wire.abortConnection()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self._wire.pauseProducing()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self._wire.resumeProducing()


class GnutellaFactory(protocol.Factory):
    """Builds a `GnutellaWire` per socket, for accepted and initiated connections alike."""

    def __init__(
        self,
        *,
        reader: Sink[ReaderEvent],
        connection: Sink[ConnectionEvent],
        flow: InputFlowControl,
        make_connection: Callable[[Role], PeerConnection],
        clock: Any,
        handshakes: HandshakePool | None = None,
        outgoing: bool = False,
    ) -> None:
        self.clock = clock
        self.handshakes = handshakes
        self._displacement_logging = OncePerInterval(DISPLACEMENT_LOG_INTERVAL)
        self.close_timeout: float = CLOSE_TIMEOUT
        self.reader = reader
        self.connection = connection
        self.flow = flow
        self.make_connection = make_connection
        self.outgoing = outgoing

    def buildProtocol(self, addr: Any) -> GnutellaWire:
        return GnutellaWire(self, self.outgoing)

    def admit_handshake(self, peer: Peer) -> None:
        """Take an accepted socket into the handshake pool, closing what it displaces."""
        if self.handshakes is None:
            return
        for stalled in self.handshakes.admit(peer):
            # A flood displaces many: the log names each address once a minute
            # at most; the pool counts every one.
            host = stalled.address[0]
            if self._displacement_logging.allow(host, self.clock.seconds()):
                log.warning(
                    "peer %s: handshake closed to make room for newer ones "
                    "(%s has too many open, or all handshake places are taken)",
                    stalled.label,
                    host,
                )
            stalled.counters.drop("handshake-displaced")
            stalled.link.abort()

    def forget_handshake(self, peer: Peer) -> None:
        if self.handshakes is not None:
            self.handshakes.discard(peer)


class OutgoingFactory(protocol.ClientFactory):
    """One connection attempt; a failure is reported to the catcher."""

    def __init__(self, base: GnutellaFactory, on_failure: Callable[[str], None]) -> None:
        self.base = base
        self.on_failure = on_failure

    def buildProtocol(self, addr: Any) -> GnutellaWire:
        return GnutellaWire(self.base, outgoing=True)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.on_failure(reason.getErrorMessage())
