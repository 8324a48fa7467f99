"""Clogged peers: bounded per-peer output queues that shed the least important message first.

A neighbour on a slow link (the original's 28.8k modems) cannot take what a
router sends it; unbounded, its queue grows until the router dies.  Each
peer's queue is bounded in bytes and in messages.  When a new message does
not fit, messages are dropped least important first, following gtk-gnutella's
`gmsg_cmp()`: by type weight (ping < query < pong < query hit < push < QRP <
Bye < vendor), then, for requests, the more hops the less important, and for
replies the more hops the *more* important (dropping a reply wastes all the
bandwidth it already used), then lower TTL, then shorter.  A message is never
dropped while a less important one is queued.  Bye, QRP, push, vendor
messages and the router's own pongs are never dropped: if only those remain
and the queue is still over its bounds, the peer is closed with Bye 502.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gnurouter.protocol.messages import HEADER_LENGTH, Message, MessageType

_WEIGHT: dict[int, int] = {
    MessageType.PING: 1,
    MessageType.QUERY: 2,
    MessageType.PONG: 3,
    MessageType.QUERY_HIT: 4,
    MessageType.PUSH: 5,
    MessageType.QRP: 8,
    MessageType.BYE: 9,
    MessageType.VENDOR: 10,
    MessageType.VENDOR_STANDARD: 10,
}
_REQUESTS = frozenset({MessageType.PING, MessageType.QUERY, MessageType.QRP})
_NEVER_DROPPED = frozenset(
    {
        MessageType.BYE,
        MessageType.QRP,
        MessageType.PUSH,
        MessageType.VENDOR,
        MessageType.VENDOR_STANDARD,
    }
)


def importance(message: Message) -> tuple[int, int, int, int]:
    """Sort key: a smaller key is a less important message (dropped first)."""
    weight = _WEIGHT.get(message.type, 0)
    size = len(message.payload)
    if message.type in _REQUESTS:
        return (weight, -message.hops, 0, -size)
    return (weight, message.hops, -message.ttl, -size)


def droppable(message: Message) -> bool:
    if message.type in _NEVER_DROPPED:
        return False
    # Our own pongs (hops 0) answer a neighbour's ping: its view of us.
    return not (message.type == MessageType.PONG and message.hops == 0)


def wire_size(message: Message) -> int:
    return HEADER_LENGTH + len(message.payload)


@dataclass
class Admission:
    """What happened when messages were offered to a peer's queue."""

    dropped: list[Message] = field(default_factory=list)
    clogged: bool = False


class PeerOutputQueue:
    """Messages waiting for one peer's socket: FIFO to send, a heap to shed.

    Shedding pops the least important droppable message from a heap
    (O(log n)); entries it removes are marked dead and skipped when the FIFO
    is flushed, so neither path scans the queue.
    """

    def __init__(self) -> None:
        self._fifo: deque[list[Any]] = deque()  # [message, alive]
        self._heap: list[tuple[tuple[int, int, int, int], int, list[Any]]] = []
        self._seq = 0
        self.bytes = 0
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def push(self, message: Message) -> None:
        entry = [message, True]
        self._fifo.append(entry)
        self._seq += 1
        if droppable(message):
            # Among equals the newest goes first: the older has waited longer.
            heapq.heappush(self._heap, (importance(message), -self._seq, entry))
        self.bytes += wire_size(message)
        self.count += 1

    def shed_one(self) -> Message | None:
        """Remove and return the least important droppable message, if any."""
        while self._heap:
            _, _, entry = heapq.heappop(self._heap)
            if entry[1]:
                entry[1] = False
                message: Message = entry[0]
                self.bytes -= wire_size(message)
                self.count -= 1
                return message
        return None

    def take_all(self) -> list[Message]:
        """Everything still queued, oldest first; the queue is left empty."""
        messages = [entry[0] for entry in self._fifo if entry[1]]
        self._fifo.clear()
        self._heap.clear()
        self.bytes = 0
        self.count = 0
        return messages


class OutputQueueLimits:
    """The per-peer bounds (one instance shared by all peers)."""

    def __init__(self, *, max_bytes: int = 256 * 1024, max_messages: int = 2000) -> None:
        self.enabled = True
        self.max_bytes = max_bytes
        self.max_messages = max_messages

    def offer(self, queue: PeerOutputQueue, new: Sequence[Message]) -> Admission:
        """Queue `new`, then shed the least important messages until within bounds.

        `clogged` in the result means only undroppable messages are left and
        the queue is still over its bounds: the peer cannot keep up.
        """
        outcome = Admission()
        for message in new:
            queue.push(message)
        if not self.enabled:
            return outcome
        while queue.bytes > self.max_bytes or queue.count > self.max_messages:
            victim = queue.shed_one()
            if victim is None:
                outcome.clogged = True
                break
            outcome.dropped.append(victim)
        return outcome
