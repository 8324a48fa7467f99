"""Message classes for the router stage, in the order they are served.

Control and keepalive traffic and replies are what keep a Gnutella mesh
alive and useful; queries are what overloads it.  Serving them in separate
queues, control first, means a flood of queries can delay queries, not the
pongs, byes and query hits that travel beside them.
"""

from __future__ import annotations

from gnurouter.protocol.messages import Message, MessageType

CONTROL = "control"
REPLY = "reply"
OTHER = "other"
QUERY = "query"

#: Served in this order; all but QUERY are cheap and may run on the event loop.
ROUTER_CLASSES = (CONTROL, REPLY, OTHER, QUERY)
ROUTER_EXPRESS = frozenset({CONTROL, REPLY, OTHER})

_CONTROL_TYPES = frozenset(
    {
        MessageType.PONG,
        MessageType.BYE,
        MessageType.QRP,
        MessageType.VENDOR,
        MessageType.VENDOR_STANDARD,
    }
)
_REPLY_TYPES = frozenset({MessageType.QUERY_HIT, MessageType.PUSH})


def message_class(message: Message) -> str:
    """The class a message is served in (and, for CONTROL, never displaced from)."""
    kind = message.type
    if kind == MessageType.QUERY:
        return QUERY
    if kind in _CONTROL_TYPES or (kind == MessageType.PING and message.hops == 0):
        return CONTROL
    if kind in _REPLY_TYPES:
        return REPLY
    return OTHER
