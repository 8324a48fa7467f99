"""The packet log: one line per routed or dropped message, rotated, or only a tail kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted

from gnurouter.ops.packetlog import PacketLog
from tests.fixtures import DecisionWatch, join, query


@pytest_twisted.ensureDeferred
async def test_every_routed_or_dropped_message_gets_one_line(
    start_router: Any, tmp_path: Path
) -> None:
    path = tmp_path / "packets.log"
    router = start_router(packet_log=str(path))
    watch = DecisionWatch(router)
    sender = await join(router)
    await join(router)
    routed, expired = query("routed"), query("expired", ttl=1)
    sender.send(routed, expired, routed)  # the second `routed` is a duplicate
    await watch.wait_until(lambda: len(watch.seen) == 3)
    router.packet_log.flush()
    lines = [line for line in path.read_text().splitlines() if " query " in line]
    assert len(lines) == 3
    assert routed.guid.hex() in lines[0] and "forwarded" in lines[0] and "to=1" in lines[0]
    assert "reason=ttl-expired" in lines[1]
    assert "reason=duplicate" in lines[2]
    peer_label = lines[0].split()[1]
    assert peer_label.startswith("127.0.0.1:")


def test_packet_log_rotates_at_its_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "p.log"
    log = PacketLog(str(path), max_bytes=4096, backups=2)
    message = query("rotate me")
    for _ in range(20):
        for _ in range(20):
            log.record("127.0.0.1:1", message, "forwarded", fanout=2)
        log.flush()
    log.close()
    assert path.exists() and (tmp_path / "p.log.1").exists() and (tmp_path / "p.log.2").exists()
    assert not (tmp_path / "p.log.3").exists()
    assert log.lines_written == 400


def test_switched_off_packet_log_keeps_only_the_tail(tmp_path: Path) -> None:
    log = PacketLog(None, max_bytes=4096, backups=0, tail=5)
    for index in range(10):
        log.record("127.0.0.1:1", query(str(index)), "forwarded")
    log.flush()
    assert log.lines_written == 0 and len(log.tail) == 5
