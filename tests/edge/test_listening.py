"""The listening port's accept queue is sized for the peer limits, so a burst of
connects waits in the kernel rather than for a SYN retry (benchmarks/leaves.py
counts those); and leaf links compress with smaller zlib settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted

from gnurouter.edge.children import DEFAULT_BACKLOG, accept_backlog
from gnurouter.protocol.deflate import DEFAULT_DEFLATE, LEAF_DEFLATE
from tests.fixtures import LIMEWIRE_LEAF, join, require


def kernel_backlog(port: int) -> int:
    """The accept queue the kernel gives a listening socket (`ss`: Send-Q of a LISTEN line)."""
    require(shutil.which("ss") is not None, "ss (iproute2)")
    output = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    [line] = output.splitlines()
    return int(line.split()[2])


def test_the_backlog_covers_every_slot_and_handshake() -> None:
    assert accept_backlog(max_peers=2032, max_handshakes=256) == 2288
    assert accept_backlog(max_peers=1, max_handshakes=1) == DEFAULT_BACKLOG


@pytest_twisted.ensureDeferred
async def test_the_router_listens_with_that_backlog(start_router: Any) -> None:
    router = start_router(max_peers=700, max_leaves=690, max_handshakes=300)
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert kernel_backlog(router.listening_address()[1]) == min(somaxconn, 1000)


@pytest_twisted.ensureDeferred
async def test_leaf_links_compress_with_the_smaller_settings(start_router: Any) -> None:
    router = start_router()
    await join(router, deflate=True, headers=LIMEWIRE_LEAF)
    ultrapeer = await join(router, deflate=True, headers=(("X-Ultrapeer", "True"),))
    roles = {peer.role: peer.connection.deflate_settings for peer in router.peers.established()}
    assert roles == {"leaf": LEAF_DEFLATE, "ultrapeer": DEFAULT_DEFLATE}
    assert all(peer.connection.deflate_out for peer in router.peers.established())
    ultrapeer.close()


@pytest_twisted.ensureDeferred
async def test_a_configured_backlog_wins(start_router: Any) -> None:
    router = start_router(listen_backlog=300)
    assert kernel_backlog(router.listening_address()[1]) == 300
