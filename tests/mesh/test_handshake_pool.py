"""The handshake pool: sockets still shaking hands are bounded per address and in all."""

from __future__ import annotations

from gnurouter.mesh.handshaking import HandshakePool
from tests.fixtures import handshaking_peer


def test_handshake_pool_displaces_the_oldest_of_an_address_then_of_all() -> None:
    pool = HandshakePool(limit=4, per_address=2)
    first, second = handshaking_peer("127.0.0.2"), handshaking_peer("127.0.0.2")
    assert pool.admit(first) == []
    assert pool.admit(second) == []
    # A third from the same address takes the place of that address's oldest.
    third = handshaking_peer("127.0.0.2")
    assert pool.admit(third) == [first]
    assert pool.displaced == {"per-address": 1, "total": 0}
    others = [handshaking_peer("127.0.0.3"), handshaking_peer("127.0.0.4")]
    for peer in others:
        assert pool.admit(peer) == []
    # Full: the newcomer takes the place of the oldest handshake of all.
    assert pool.admit(handshaking_peer("127.0.0.5")) == [second]
    assert pool.displaced == {"per-address": 1, "total": 1}
    assert len(pool) == 4


def test_handshake_pool_forgets_finished_handshakes() -> None:
    pool = HandshakePool(limit=2, per_address=2)
    done, waiting = handshaking_peer("127.0.0.2"), handshaking_peer("127.0.0.2")
    pool.admit(done)
    pool.admit(waiting)
    done.mark_established()
    assert len(pool) == 1
    assert pool.admit(handshaking_peer("127.0.0.2")) == []
