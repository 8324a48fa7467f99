"""Leaves and ultrapeers as today's real servents behave, for the scenarios against live routers.

The header sets, raw peers and message builders these scenarios share with
other suites are in `tests.fixtures`.
"""

from __future__ import annotations

from typing import Any, cast

from gnurouter.edge.servent import ServentProtocol
from gnurouter.edge.service import RouterService
from gnurouter.protocol.handshake import Headers
from tests.fixtures import LIMEWIRE_LEAF, HeaderPairs, joined, qrp_messages, until


def limewire_good_ultrapeer(headers: Headers) -> bool:
    """LimeWire 5's HandshakeResponse GOOD_ULTRAPEER, which its leaves require.

    X-Degree >= 15 (6 if absent), X-Ultrapeer-Query-Routing >= 0.1,
    X-Max-TTL < 5 (4 if absent) and X-Dynamic-Querying >= 0.1.
    """

    def version(name: str) -> float:
        try:
            return float(headers.get(name, "0"))
        except ValueError:
            return 0.0

    try:
        degree = int(headers.get("X-Degree", "6"))
        max_ttl = int(headers.get("X-Max-TTL", "4"))
    except ValueError:
        return False
    return (
        degree >= 15
        and version("X-Ultrapeer-Query-Routing") >= 0.1
        and max_ttl < 5
        and version("X-Dynamic-Querying") >= 0.1
    )


class Leaf(ServentProtocol):
    """A servent joined as a leaf, knowing its own peer id at the router."""

    router_peer_id: int


async def leaf(
    router: RouterService,
    words: list[str] | None = None,
    headers: HeaderPairs = LIMEWIRE_LEAF,
    **kwargs: Any,
) -> Leaf:
    """A leaf joined to `router`; with `words`, its QRP table is installed before return."""
    servent, [peer] = await joined(router, headers=headers, **kwargs)
    # Typed as a Leaf for its one extra attribute; at run time it stays a ServentProtocol.
    joined_leaf = cast(Leaf, servent)
    joined_leaf.router_peer_id = peer.id
    if words is not None:
        joined_leaf.send(*qrp_messages(words))

        def installed() -> bool:
            info = router.routing.peer_info(peer.id)
            return info is not None and info.table is not None

        await until(installed)
    return joined_leaf
