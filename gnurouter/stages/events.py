"""The events that travel between stages.

Each has a `kind`, the label its stage counts drops and delays by; for
messages that is the Gnutella type name, so an operator sees "query" refused
at the router rather than "MessageArrived".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gnurouter.mesh.peers import Peer
from gnurouter.protocol.messages import Body, Message, encode_all


@dataclass(slots=True)
class BytesReceived:
    """Raw bytes from a peer's socket (reader stage)."""

    peer: Peer
    data: bytes
    kind: str = "bytes"


@dataclass(slots=True)
class StreamChunk:
    """Bytes of one peer's stream, coalesced by the reader (parser stage)."""

    peer: Peer
    data: bytes
    kind: str = "bytes"


@dataclass(slots=True)
class PeerOpened:
    """A socket is up; the parser starts the handshake if we initiated it."""

    peer: Peer
    kind: str = "peer-opened"


@dataclass(slots=True)
class PeerFinished:
    """The peer closed its side of the socket (FIN): it sends nothing more, but still reads."""

    peer: Peer
    kind: str = "peer-finished"


@dataclass(slots=True)
class PeerLost:
    """The socket is gone, for whatever reason."""

    peer: Peer
    reason: str
    kind: str = "peer-lost"


@dataclass(slots=True)
class MessageArrived:
    """A framed, validated message from an established peer (router stage)."""

    peer: Peer
    message: Message
    body: Body | None

    @property
    def kind(self) -> str:
        # Computed only when a drop or delay is counted, not per message.
        return self.message.type_name


@dataclass(slots=True)
class PeerJoined:
    peer: Peer
    kind: str = "peer-joined"


@dataclass(slots=True)
class PeerLeft:
    peer: Peer
    kind: str = "peer-left"


@dataclass(slots=True)
class SendMessages:
    """Messages of one type for one or more peers (connection stage).

    One event per run rather than per copy: a flood to 30 neighbours is one
    queue slot, one admission decision and one refusal if refused, and the
    router stage joins consecutive messages with the same destinations (a
    burst of queries from one neighbour) into one event, encoded once for
    every peer it goes to.  Drops of the event count `size` messages.
    """

    peers: list[Peer]
    messages: list[Message]
    _wire: bytes | None = None

    @property
    def kind(self) -> str:
        return self.messages[0].type_name

    @property
    def size(self) -> int:
        return len(self.messages)

    def wire(self) -> bytes:
        """The messages encoded (before any deflate), computed once."""
        wire = self._wire
        if wire is None:
            wire = self._wire = encode_all(self.messages)
        return wire


@dataclass(slots=True)
class SendRaw:
    """Handshake bytes, written as they are, ahead of any message."""

    peer: Peer
    data: bytes
    close_after: bool = False
    kind: str = "handshake"


@dataclass(slots=True)
class ClosePeer:
    """Flush what is queued, send Bye (when the link speaks 0.6), then close."""

    peer: Peer
    code: int
    reason: str
    kind: str = "close"


@dataclass(slots=True)
class LinkWritable:
    """The socket drained below its high-water mark; queued output may go."""

    peer: Peer
    kind: str = "writable"


@dataclass(slots=True)
class Tick:
    """A timer firing: always on the housekeeping path, never dropped."""

    name: str
    kind: str = "tick"


@dataclass(slots=True)
class HostsLearned:
    """Addresses of servents heard of (pongs, X-Try-Ultrapeers), for the catcher."""

    hosts: list[tuple[str, int]] = field(default_factory=list)
    source: str = "pong"
    kind: str = "hosts"
    #: Whether they are ultrapeers, when the source says (a pong's GGEP "UP").
    ultrapeer: bool | None = None


@dataclass(slots=True)
class ConnectFailed:
    address: tuple[str, int]
    reason: str
    kind: str = "connect-failed"


@dataclass(slots=True)
class HostConnected:
    """A handshake succeeded: the host is alive (and we know its role)."""

    address: tuple[str, int]
    ultrapeer: bool
    kind: str = "host-connected"


# What each stage is handed (graph.py says by whom): the type its queue holds.
ReaderEvent = BytesReceived | PeerOpened | PeerFinished | PeerLost
ParserEvent = StreamChunk | PeerOpened | PeerFinished | PeerLost
RouterEvent = MessageArrived | PeerJoined | PeerLeft | PeerFinished | Tick
ConnectionEvent = SendMessages | SendRaw | ClosePeer | LinkWritable
CatcherEvent = HostsLearned | ConnectFailed | HostConnected | Tick
