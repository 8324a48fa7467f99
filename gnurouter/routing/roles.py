"""Neighbour roles, and the id under which we record our own messages."""

from __future__ import annotations

#: The peer id under which this router records routes for messages it originated.
LOCAL = 0

#: Neighbour roles, from the handshake's X-Ultrapeer header.
ULTRAPEER = "ultrapeer"

LEAF = "leaf"

#: A servent that sent no X-Ultrapeer at all (0.4, or 0.6 from before
#: ultrapeers): routed like an ultrapeer neighbour that does no QRP.
LEGACY = "legacy"

ROLES = (ULTRAPEER, LEAF, LEGACY)
