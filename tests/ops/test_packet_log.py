"""The packet log: one line per routed or dropped message, rotated, or only a tail kept."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest_twisted

from gnurouter.ops.metrics import snapshot
from gnurouter.ops.packetlog import PacketLog
from tests.fixtures import LIMEWIRE_ULTRAPEER, DecisionWatch, delivered, join, query


@pytest_twisted.ensureDeferred
async def test_every_routed_or_dropped_message_gets_one_line(
    start_router: Any, tmp_path: Path
) -> None:
    path = tmp_path / "packets.log"
    router = start_router(packet_log=str(path))
    watch = DecisionWatch(router)
    # Ultrapeers: a leaf's own query would be run by dynamic querying instead.
    sender = await join(router, headers=LIMEWIRE_ULTRAPEER)
    await join(router, headers=LIMEWIRE_ULTRAPEER)
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


def test_failed_writes_are_counted_warned_once_a_minute_and_recover(
    tmp_path: Path, caplog: Any, capsys: Any
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "packets.log"
    log = PacketLog(str(path), max_bytes=1 << 20, backups=1)
    message = query("lost")
    log.record("127.0.0.1:1", message, "forwarded")
    log.flush()
    assert log.lines_written == 1
    log.close()  # the open file would keep its directory's inode alive
    path.unlink()
    directory.rmdir()  # removed while the router runs
    with caplog.at_level(logging.WARNING, logger="gnurouter.ops.packetlog"):
        for _ in range(3):
            log.record("127.0.0.1:1", message, "forwarded")
            log.record("127.0.0.1:1", message, "dropped", "duplicate")
            log.flush()
    assert log.write_failures == 3 and log.lines_lost == 6 and log.lines_written == 1
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and "No such file or directory" in warnings[0]
    # No "--- Logging error ---" traceback per batch on stderr.
    assert "Logging error" not in capsys.readouterr().err
    directory.mkdir()  # the directory is back: the next batch is written
    log.record("127.0.0.1:1", message, "forwarded")
    log.flush()
    log.close()
    assert log.lines_written == 2 and path.read_text().count(message.guid.hex()) == 1


@pytest_twisted.ensureDeferred
async def test_routing_goes_on_while_the_packet_log_cannot_be_written(
    start_router: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    router = start_router(packet_log=str(directory / "packets.log"))
    directory.rmdir()
    sender = await join(router, headers=LIMEWIRE_ULTRAPEER)
    receiver = await join(router, headers=LIMEWIRE_ULTRAPEER)
    routed = query("still routed")
    sender.send(routed)
    assert (await delivered(receiver, routed)).guid == routed.guid
    router.packet_log.flush()
    counters = snapshot(router)["router"]
    assert counters["packet_log_write_failures"] >= 1
    assert counters["packet_log_lines_lost"] >= 1
    assert counters["packet_log_lines"] == 0
