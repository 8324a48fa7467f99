"""The catcher keeps the router at its target peer count, from the hosts file and pongs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from gnurouter.protocol.messages import Message, Pong
from tests.fixtures import LIMEWIRE_ULTRAPEER, delivered, join, ping, wait_for


def outgoing_established(router: Any) -> int:
    return sum(1 for peer in router.peers.established() if peer.outgoing)


@pytest_twisted.ensureDeferred
async def test_catcher_connects_to_hosts_file_and_replaces_lost_links(
    start_router: Any, tmp_path: Path
) -> None:
    upstream = [start_router(), start_router()]
    hosts_file = tmp_path / "hosts.txt"
    lines = [f"{h}:{p}" for h, p in (r.listening_address() for r in upstream)]
    hosts_file.write_text("# known ultrapeers\n" + "\n".join(lines) + "\nnot-an-address\n")
    router = start_router(target_peers=2, hosts_file=str(hosts_file))
    await wait_for(router, lambda: outgoing_established(router) == 2)
    # Kill one link from the far side: the catcher notices and reconnects.
    victim = upstream[0]
    [link] = list(victim.peers)
    link.link.abort()
    await wait_for(router, lambda: outgoing_established(router) == 1)
    router._tick("catcher", "catch")  # the 2 s timer, fired now rather than waited for
    await wait_for(router, lambda: outgoing_established(router) == 2)


@pytest_twisted.ensureDeferred
async def test_pongs_teach_the_catcher_new_hosts(start_router: Any) -> None:
    far = start_router()
    router = start_router(target_peers=2)  # the servent is one ultrapeer link already
    servent = await join(router, headers=LIMEWIRE_ULTRAPEER)
    # A pong an ultrapeer relays (hops 1) answering the router's own ping
    # teaches it `far`'s address.
    host, port = far.listening_address()
    ours = router.routing.originate_ping()
    servent.send(Message.from_body(ours.guid, 1, 1, Pong(port=port, ip=host, files=0, kbytes=0)))
    # The router routes this peer's messages in order, so once our next ping
    # is answered, the pong has been handled and its host handed to the catcher.
    probe = ping()
    servent.send(probe)
    await delivered(servent, probe)
    router._tick("catcher", "catch")
    await wait_for(router, lambda: outgoing_established(router) == 1)
    [peer] = [p for p in router.peers.established() if p.outgoing]
    assert peer.address == (host, port)
