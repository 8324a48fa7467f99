"""Where a neighbour listens (every address it gives) and what an ultrapeer advertises."""

from __future__ import annotations

from gnurouter.mesh.handshaking import advertised_degree, advertised_max_ttl
from gnurouter.mesh.peers import MAX_LISTEN_ADDRESSES, PeerTable
from gnurouter.protocol.handshake import Headers
from tests.fixtures import handshaking_peer


def test_every_address_a_peer_gives_is_excluded_and_the_first_is_its_listen_address() -> None:
    peers = PeerTable()
    peer = handshaking_peer("10.0.0.1", 40000)
    peers.add(peer)
    peer.learn_listen_address(("10.0.0.1", 6346))  # Listen-IP
    peer.learn_listen_address(("192.0.2.7", 6348))  # Node, its public address
    assert peer.listen_address == ("10.0.0.1", 6346)
    assert peers.addresses() == {("10.0.0.1", 40000), ("10.0.0.1", 6346), ("192.0.2.7", 6348)}


def test_a_peer_naming_many_addresses_cannot_grow_the_set() -> None:
    peer = handshaking_peer("10.0.0.1")
    for port in range(1, 100):
        peer.learn_listen_address(("10.0.0.2", port))
    assert len(peer.listen_addresses) == MAX_LISTEN_ADDRESSES


def test_advertised_degree_and_max_ttl_are_read_strictly() -> None:
    headers = Headers.from_pairs([("X-Degree", "32"), ("X-Max-TTL", "4")])
    assert (advertised_degree(headers), advertised_max_ttl(headers)) == (32, 4)
    for bad in ("", "-1", "0", "4x", "\uff14", "99999999999"):
        headers = Headers.from_pairs([("X-Degree", bad), ("X-Max-TTL", bad)])
        assert advertised_degree(headers) is None and advertised_max_ttl(headers) is None
    assert advertised_degree(Headers()) is None
