"""Neighbours as the stages see them: an id, an address, a protocol state and a link.

A `PeerLink` is the only thing a stage may do to a socket (write, close,
pause reading); the Twisted protocol in `gnurouter.edge.network` implements it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from gnurouter.conditioning.clogged import PeerOutputQueue
from gnurouter.protocol.addresses import format_endpoint
from gnurouter.protocol.connection import PeerConnection
from gnurouter.routing.tables import RefusalWindow, TokenBucket


class PeerLink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Close after everything written so far has been sent."""

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    @property
    def write_paused(self) -> bool:
        """True while the kernel socket buffer is full and writes pile up in user space."""

    def write_paused_for(self) -> float:
        """Seconds writes have been paused without a break (0 while the socket drains)."""


class PeerState:
    """A link's life: handshaking -> established -> closing -> closed.

    Closing and closed may come from any earlier state; nothing goes back.
    `Peer` owns the transitions (`mark_established`, `mark_closing`,
    `mark_closed`): stages ask for a transition, never write the state.
    """

    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSING = "closing"
    CLOSED = "closed"


class LinkStateError(RuntimeError):
    """A transition the link's life does not have (a bug, never peer input)."""


@dataclass
class PeerCounters:
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    malformed: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + count


_peer_ids = itertools.count(1)  # 0 is routing.LOCAL
#: Listening addresses kept per peer: real servents give one to three (its
#: headers and its pong); a peer naming more cannot grow our memory.
MAX_LISTEN_ADDRESSES = 8


class Peer:
    def __init__(
        self,
        address: tuple[str, int],
        link: PeerLink,
        connection: PeerConnection,
        *,
        outgoing: bool,
        clock: float | None = None,
    ) -> None:
        self.id = next(_peer_ids)
        self.address = address
        self.label = format_endpoint(address)  # [v6]:port, unambiguous in logs
        self.link = link
        self.connection = connection
        self.outgoing = outgoing
        self._state = PeerState.HANDSHAKING
        self._joined = False
        self.connected_at = time.time() if clock is None else clock
        self.last_heard = time.monotonic()
        self.user_agent = ""
        #: Where it listens: the first address it gave (handshake headers, its
        #: hops-0 pong), and every one it gave, all excluded from our dials.
        self.listen_address: tuple[str, int] | None = None
        self.listen_addresses: set[tuple[str, int]] = set()
        #: The Hops-Flow we asked it to keep to (None: no limit), for the metrics.
        self.hops_flow_sent: int | None = None
        # "ultrapeer", "leaf" or "legacy" once the handshake says (gnurouter.mesh.handshaking).
        self.role: str | None = None
        # What it said it can do: "vendor-messages", "up-qrp", "qrp".
        self.features: set[str] = set()
        self.counters = PeerCounters()
        # Messages waiting for the socket to drain; bounded by conditioning.clogged.
        self.output = PeerOutputQueue()
        self.close_reason: str | None = None
        #: A close was decided (by the parser or the router stage): whatever it
        #: sends next is ignored, though the socket may not be closing yet.
        self.hung_up = False
        #: Its control messages' budget (the parser's; None until the first one).
        self.control_budget: ControlBudget | None = None
        #: Handshake headers whose values we refused (each counted once per peer:
        #: a header read again from the merged blocks is not a second offence).
        self.bad_headers: set[str] = set()

    # -- its link's state (one owner: this class) --------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def established(self) -> bool:
        return self._state == PeerState.ESTABLISHED

    @property
    def closing_or_closed(self) -> bool:
        return self._state in (PeerState.CLOSING, PeerState.CLOSED)

    def mark_established(self) -> None:
        """The handshake succeeded both ways."""
        if self._state != PeerState.HANDSHAKING:
            raise LinkStateError(f"peer {self.label}: established while {self._state}")
        self._state = PeerState.ESTABLISHED
        self._joined = True

    @property
    def joined(self) -> bool:
        """Whether it ever was established (the router knows it until it is gone)."""
        return self._joined

    def mark_closing(self) -> None:
        """We asked its socket to close (after what is queued); a closed link stays closed."""
        if self._state != PeerState.CLOSED:
            self._state = PeerState.CLOSING

    def mark_closed(self) -> None:
        """Its socket is gone."""
        self._state = PeerState.CLOSED

    def learn_listen_address(self, address: tuple[str, int]) -> None:
        """One more address it says it listens at (a header, its own pong)."""
        if self.listen_address is None:
            self.listen_address = address
        if len(self.listen_addresses) < MAX_LISTEN_ADDRESSES:
            self.listen_addresses.add(address)

    def hang_up(self) -> None:
        """A close was decided: ignore what it sends from now on."""
        self.hung_up = True

    def __repr__(self) -> str:
        return f"<Peer #{self.id} {self.label} {self.state}>"


class ControlBudget:
    """One link's control messages: a token bucket, and what it refused lately."""

    __slots__ = ("bucket", "refusals")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.bucket = TokenBucket(rate, burst, now)
        self.refusals = RefusalWindow()

    @property
    def refused(self) -> int:
        """Refusals in the current window."""
        return self.refusals.count

    def take(self, now: float) -> bool:
        if self.bucket.take(now):
            return True
        self.refusals.refuse(now, CONTROL_FLOOD_WINDOW)
        return False


#: Refusals are counted over windows of this many seconds (see ControlBudget).
CONTROL_FLOOD_WINDOW = 10.0


class PeerTable:
    """All current neighbours by id; written on the reactor thread, read from anywhere."""

    def __init__(self) -> None:
        self._peers: dict[int, Peer] = {}
        self._lock = threading.Lock()
        # What departed peers exchanged, so router totals never go backwards.
        self.departed = PeerCounters()
        # Called with the peer whenever one is established or removed.
        self.listeners: list[Callable[[Peer], None]] = []
        #: Peer input refused as hostile or malformed, by reason (bad header
        #: values, handshake limits...): outlives the peers that caused it.
        self.rejected: dict[str, int] = {}

    def reject(self, reason: str, count: int = 1) -> None:
        """Count input refused from a peer (the caller logs it with the peer's address)."""
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    def announce(self, peer: Peer) -> None:
        """Tell listeners the peer changed state (established or gone)."""
        for listener in self.listeners:
            listener(peer)

    def add(self, peer: Peer) -> None:
        with self._lock:
            self._peers[peer.id] = peer

    def remove(self, peer: Peer) -> None:
        with self._lock:
            if self._peers.pop(peer.id, None) is None:
                return
            gone = peer.counters
            self.departed.messages_in += gone.messages_in
            self.departed.messages_out += gone.messages_out
            self.departed.bytes_in += gone.bytes_in
            self.departed.bytes_out += gone.bytes_out
        self.announce(peer)

    def get(self, peer_id: int) -> Peer | None:
        return self._peers.get(peer_id)

    def __iter__(self) -> Iterator[Peer]:
        with self._lock:
            return iter(list(self._peers.values()))

    def __len__(self) -> int:
        return len(self._peers)

    def established(self) -> list[Peer]:
        return [peer for peer in self if peer.established]

    def count(self, *, outgoing: bool | None = None, include_handshaking: bool = True) -> int:
        total = 0
        for peer in self:
            if peer.closing_or_closed:
                continue
            if not include_handshaking and not peer.established:
                continue
            if outgoing is None or peer.outgoing == outgoing:
                total += 1
        return total

    def addresses(self) -> set[tuple[str, int]]:
        found: set[tuple[str, int]] = set()
        for peer in self:
            found.add(peer.address)
            if peer.listen_address is not None:
                found.add(peer.listen_address)
            found.update(peer.listen_addresses)
        return found
