"""A link's life has one owner, Peer: handshaking, established, closing, closed; never back."""

from __future__ import annotations

import pytest

from gnurouter.mesh.peers import LinkStateError, PeerState
from tests.fixtures import handshaking_peer


def test_a_link_goes_forward_only() -> None:
    peer = handshaking_peer("127.0.0.2")
    assert peer.state == PeerState.HANDSHAKING and not peer.closing_or_closed
    peer.mark_established()
    assert peer.established
    peer.mark_closing()
    assert peer.state == PeerState.CLOSING and peer.closing_or_closed
    with pytest.raises(LinkStateError):
        peer.mark_established()
    peer.mark_closed()
    peer.mark_closing()  # a late close request leaves a closed link closed
    assert peer.state == PeerState.CLOSED


def test_a_refused_handshake_closes_without_being_established() -> None:
    peer = handshaking_peer("127.0.0.2")
    peer.hang_up()
    peer.mark_closing()
    assert peer.hung_up and peer.state == PeerState.CLOSING
    with pytest.raises(LinkStateError):
        peer.mark_established()
