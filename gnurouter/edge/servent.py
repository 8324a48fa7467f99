"""A minimal Gnutella servent on Twisted: connects, shakes hands, sends and collects messages.

It is the router's counterpart in tests, the benchmark and trace replay: a
real TCP peer doing the real 0.6 handshake through the same sans-I/O
`PeerConnection` the router uses, with none of the router's stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.python.failure import Failure

from gnurouter.protocol.connection import PeerConnection
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.handshake import (
    ConnectRequest,
    ConnectResponse,
    HandshakeComplete,
    HandshakeRefused,
    Headers,
    Role,
    negotiate_encoding,
)
from gnurouter.protocol.messages import Message, MessageType, Pong

#: A plain 0.6 servent: no X-Ultrapeer, so a router takes it for an
#: old-style peer and routes it like an ultrapeer (queries flooded to it per
#: TTL, pings relayed), as the original's peers all were.  Tests and tools
#: that want a leaf say so (X-Ultrapeer: False): a leaf's own queries are
#: run by dynamic querying and it gets no relayed pings.
DEFAULT_HEADERS = (
    ("User-Agent", "gnurouter-servent/0.1"),
    ("X-Query-Routing", "0.2"),
    ("Pong-Caching", "0.1"),
    ("GGEP", "0.5"),
    ("Bye-Packet", "0.1"),
)
#: A leaf (X-Ultrapeer: False): takes a leaf slot and sends its QRP table.
LEAF_HEADERS = (*DEFAULT_HEADERS, ("X-Ultrapeer", "False"))


class ServentProtocol(protocol.Protocol):
    """One link to a router.  `established` fires after the handshake; messages land in `inbox`."""

    def __init__(
        self,
        *,
        headers: Iterable[tuple[str, str]] = DEFAULT_HEADERS,
        deflate: bool = False,
        answer_pings: Pong | None = None,
        on_message: Callable[[Message], None] | None = None,
        keep_inbox: bool = True,
    ) -> None:
        pairs = list(headers)
        if deflate:
            pairs.append(("Accept-Encoding", "deflate"))
        self.headers = Headers.from_pairs(pairs)
        self.deflate = deflate
        self.answer_pings = answer_pings
        self.on_message = on_message
        self.keep_inbox = keep_inbox
        self.connection = PeerConnection(Role.INITIATOR)
        self.established: defer.Deferred[ServentProtocol] = defer.Deferred()
        self.closed: defer.Deferred[str] = defer.Deferred()
        self.inbox: defer.DeferredQueue[Message] = defer.DeferredQueue()
        self.received: list[Message] = []
        self.refusal: HandshakeRefused | None = None
        self.error: ProtocolError | None = None
        self.wire_in = bytearray()
        #: When TCP connected (time.monotonic()): a connect's time, apart from its handshake's.
        self.connected_at: float | None = None

    @property
    def _wire(self) -> Any:
        # Twisted's zope interfaces are opaque to mypy.
        return self.transport

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()
        self._wire.setTcpNoDelay(True)  # as the router does: small messages, no batching delay
        self._wire.write(self.connection.start(self.headers))

    def dataReceived(self, data: bytes) -> None:
        self.wire_in += data
        try:
            events = self.connection.receive_data(data)
        except ProtocolError as error:
            self.error = error
            self._wire.loseConnection()
            return
        for event in events:
            if isinstance(event, Message):
                self._message(event)
            elif isinstance(event, ConnectResponse) and event.status == 200:
                if self.connection.established:
                    continue
                reply = Headers.from_pairs(
                    negotiate_encoding(event.headers, we_support_deflate=self.deflate)
                )
                self._wire.write(self.connection.confirm(reply))
                if self.connection.established and not self.established.called:
                    self.established.callback(self)
            elif isinstance(event, HandshakeComplete):
                if not self.established.called:
                    self.established.callback(self)
            elif isinstance(event, HandshakeRefused):
                self.refusal = event
            elif isinstance(event, ConnectRequest):  # pragma: no cover - we only initiate
                raise AssertionError("servent received a connect request")

    def _message(self, message: Message) -> None:
        if self.keep_inbox:
            self.received.append(message)
            self.inbox.put(message)
        if self.on_message is not None:
            self.on_message(message)
        if (
            self.answer_pings is not None
            and message.type == MessageType.PING
            and self.connection.established
        ):
            self.send(Message.from_body(message.guid, message.hops + 1, 0, self.answer_pings))

    def send(self, *messages: Message) -> None:
        self._wire.write(self.connection.send(messages))

    def send_raw(self, data: bytes) -> None:
        self._wire.write(data)

    def close(self) -> None:
        self._wire.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.established.called:
            detail = (
                f"refused {self.refusal.status} {self.refusal.reason}"
                if self.refusal
                else reason.getErrorMessage()
            )
            self.established.errback(ConnectionError(detail))
        if not self.closed.called:
            self.closed.callback(reason.getErrorMessage())

    def messages_of(self, type_: int) -> list[Message]:
        return [message for message in self.received if message.type == type_]

    async def next_message(
        self,
        reactor: Any,
        predicate: Callable[[Message], bool] = lambda m: True,
        timeout: float = 10,
    ) -> Message:
        """The next message satisfying `predicate`, skipping others; times out after `timeout` s."""
        while True:
            waiting = self.inbox.get()
            waiting.addTimeout(timeout, reactor)
            message = await waiting
            if predicate(message):
                return message


async def connect_servent(
    reactor: Any,
    host: str,
    port: int,
    *,
    source: str | None = None,
    timeout: float = 10,
    **kwargs: Any,
) -> ServentProtocol:
    """Open a link to a router (from local address `source`, if given); complete the handshake."""
    servent = ServentProtocol(**kwargs)
    bind = (source, 0) if source is not None else None
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, bindAddress=bind)
    await endpoints.connectProtocol(endpoint, servent)
    established = servent.established
    established.addTimeout(timeout, reactor)
    await established
    return servent
