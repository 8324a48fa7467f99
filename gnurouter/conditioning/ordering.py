"""What the priority classes may not reorder, and what no threshold may refuse.

Priority classes serve replies before queries; without a rule a query hit
could overtake, in the router stage, the query it answers (then it finds no
route and is lost), and a push the hit that taught its route.
`DependentMessages` is the router stage's `Ordering`: a queued query holds
its GUID; a hit for a held GUID waits behind the query (and holds its
servent ID); a push for a held servent ID waits behind that hit.

`is_control_message` says which messages are never refused by a queue
threshold (`Stage.guaranteed`): control and keepalive traffic (pongs, hops-0
pings, Bye, QRP, vendor messages), bounded per peer by the parser's control
budget and the QRP limits instead, since losing one silently loses a
neighbour's route table or a keepalive.
"""

from __future__ import annotations

from gnurouter.conditioning.classes import CONTROL, QUERY, message_class
from gnurouter.protocol.messages import Message, MessageType

_QUERY = MessageType.QUERY
_QUERY_HIT = MessageType.QUERY_HIT
_PUSH = MessageType.PUSH
#: Bytes of a push payload before the servent ID ends (it comes first).
_SERVENT_ID = 16


def _message_of(event: object) -> Message | None:
    message = getattr(event, "message", None)
    return message if isinstance(message, Message) else None


def _servent_key(servent_id: bytes) -> tuple[str, bytes]:
    # Apart from GUID keys (plain bytes): a query cannot hold up a push by
    # choosing a GUID equal to a servent ID.
    return ("servent", servent_id)


class DependentMessages:
    """The router stage's `Ordering`: queries hold their GUIDs, hits their servent IDs."""

    held_class = QUERY

    def provides(self, event: object) -> object:
        message = _message_of(event)
        if message is None:
            return None
        if message.type == _QUERY_HIT:
            # A hit held behind its query: pushes for its servent wait for it.
            return _servent_key(message.payload[-_SERVENT_ID:])
        return message.guid

    def depends(self, event: object) -> object:
        message = _message_of(event)
        if message is None:
            return None
        kind = message.type
        if kind == _QUERY_HIT:
            return message.guid
        if kind == _PUSH:
            return _servent_key(message.payload[:_SERVENT_ID])
        return None


def is_control_message(message: Message) -> bool:
    return message_class(message) == CONTROL


def is_control_event(event: object) -> bool:
    """A router-stage event carrying a control message (`Stage.guaranteed`)."""
    message = _message_of(event)
    # Queries first: they are most of the traffic, and never control.
    return message is not None and message.type != _QUERY and is_control_message(message)


def is_control_send(event: object) -> bool:
    """A connection-stage event sending control messages (one type per event)."""
    messages = getattr(event, "messages", None)
    if not messages:
        return False
    first = messages[0]
    return isinstance(first, Message) and is_control_message(first)
