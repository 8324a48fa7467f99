"""A live tshark capture on loopback for tests, and tshark's PDML decoding of Gnutella.

The capture is known to be recording once tshark reports a UDP probe we send
(its "Capturing on" line comes before the capture child really has the
interface open); the end of the traffic is known from the FIN segments tshark
reports live.  Every wait is bounded.

While it runs, tshark prints one line per packet ("tcp.srcport tcp.dstport
tcp.flags.syn tcp.flags.fin udp.dstport"); `Capture.tcp` keeps the TCP
segments' (source port, destination port, SYN, FIN) so a test can wait on
them and check which connections the capture saw from their SYN on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, protocol, reactor, task, utils

TIMEOUT = 20.0


async def bounded(waiting: defer.Deferred[Any], timeout: float = TIMEOUT) -> Any:
    waiting.addTimeout(timeout, reactor)
    return await waiting


#: What tshark prints live for each packet (tab-separated, empty when absent).
_LIVE_FIELDS = ("tcp.srcport", "tcp.dstport", "tcp.flags.syn", "tcp.flags.fin", "udp.dstport")


def _flag(value: str) -> bool:
    return value in ("1", "True")


class Capture(protocol.ProcessProtocol):
    """A live tshark capture writing a pcap.

    `started` fires on tshark's "Capturing on" line, `ended` when the process
    exits; `wait_for` turns a condition on the packets seen so far (`tcp`,
    `fins`, `udp_ports`) into a bounded Deferred.
    """

    def __init__(self) -> None:
        self.started: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.stderr = bytearray()
        self.tcp: list[tuple[int, int, bool, bool]] = []
        self.udp_ports: set[int] = set()
        self._stdout = bytearray()
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        self.process: Any = None

    def errReceived(self, data: bytes) -> None:
        self.stderr += data
        if not self.started.called and b"Capturing on" in self.stderr:
            self.started.callback(None)

    def outReceived(self, data: bytes) -> None:
        self._stdout += data
        *lines, rest = self._stdout.split(b"\n")
        self._stdout = bytearray(rest)
        for line in lines:
            src, dst, syn, fin, udp = [*line.decode().split("\t"), *[""] * 5][:5]
            if src and dst:
                self.tcp.append((int(src), int(dst), _flag(syn), _flag(fin)))
            if udp:
                self.udp_ports.add(int(udp))
        for waiter in list(self._waiters):
            if waiter[0]():
                self._waiters.remove(waiter)
                waiter[1].callback(None)

    @property
    def fins(self) -> int:
        """FIN segments seen so far."""
        return sum(fin for *_, fin in self.tcp)

    def wait_for(self, condition: Callable[[], bool]) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if condition():
            waiting.callback(None)
        else:
            self._waiters.append((condition, waiting))
            waiting.addTimeout(TIMEOUT, reactor)
        return waiting

    def processEnded(self, reason: Any) -> None:
        if not self.started.called:
            stderr = self.stderr.decode(errors="replace")
            self.started.errback(RuntimeError(f"tshark exited before capturing: {stderr}"))
        for _, waiting in self._waiters:
            waiting.errback(RuntimeError("tshark exited"))
        self._waiters.clear()
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        with contextlib.suppress(error.ProcessExitedAlready):
            self.process.signalProcess(name)


async def start_capture(port: int, pcap: Path, *, udp: bool = False) -> tuple[Capture, Any]:
    """tshark on lo, TCP (or with `udp`, UDP) port `port`, writing `pcap`; returns once it
    really records."""
    probe = reactor.listenUDP(0, protocol.DatagramProtocol(), interface="127.0.0.1")
    probe_port = probe.getHost().port
    capture = Capture()
    tshark = shutil.which("tshark")
    assert tshark is not None
    transport = "udp" if udp else "tcp"
    args = [
        tshark, "-n", "-i", "lo", "-f", f"{transport} port {port} or udp port {probe_port}",
        "-w", str(pcap), "-P", "-l", "-T", "fields",
        *(arg for name in _LIVE_FIELDS for arg in ("-e", name)),
    ]  # fmt: skip
    # IReactorProcess is a zope interface, opaque to mypy (it takes the first argument for self).
    spawn: Any = reactor.spawnProcess
    capture.process = spawn(capture, tshark, args, env=dict(os.environ))
    send = task.LoopingCall(probe.write, b"probe", ("127.0.0.1", probe_port))
    try:
        await bounded(capture.started)
        send.start(0.05)
        await capture.wait_for(lambda: probe_port in capture.udp_ports)
    except BaseException:
        await stop_capture(capture, kill=True)
        raise
    finally:
        if send.running:
            send.stop()
        await defer.maybeDeferred(probe.stopListening)
    return capture, probe


async def stop_capture(capture: Capture, *, kill: bool = False) -> None:
    """SIGINT (tshark flushes and closes the file), or SIGKILL; wait for the exit."""
    if not capture.ended.called:
        capture.signal("KILL" if kill else "INT")
    ended = capture.ended
    await bounded(ended)


@dataclass
class Decoded:
    """One Gnutella message as tshark's dissector shows it."""

    frame: int
    src: tuple[str, int]
    dst: tuple[str, int]
    fields: dict[str, list[str]]

    def one(self, name: str) -> str:
        values = self.fields.get(name, [])
        assert len(values) == 1, f"frame {self.frame}: {name} = {values}"
        return values[0]

    def number(self, name: str) -> int:
        return int(self.one(name))

    def raw(self, name: str) -> bytes:
        """An FT_BYTES field (see `_BYTES_FIELDS`), from its hex value."""
        return bytes.fromhex(self.one(name))

    @property
    def header(self) -> tuple[bytes, int, int, int, int]:
        return (
            self.raw("gnutella.header.id"),
            self.number("gnutella.header.payload"),
            self.number("gnutella.header.ttl"),
            self.number("gnutella.header.hops"),
            self.number("gnutella.header.size"),
        )


#: FT_BYTES fields, read from their raw "value" (hex); the rest from "show".
_BYTES_FIELDS = ("gnutella.header.id", "gnutella.queryhit.servent_id", "gnutella.push.servent_id")


async def decode_gnutella(pcap: Path, port: int) -> list[Decoded]:
    """Every Gnutella message tshark dissects in the capture, in capture order."""
    tshark = shutil.which("tshark")
    assert tshark is not None
    args = ["-n", "-r", str(pcap), "-d", f"tcp.port=={port},gnutella", "-T", "pdml"]
    out, err, code = await bounded(
        utils.getProcessOutputAndValue(tshark, args, env=dict(os.environ)), 60
    )
    assert code == 0, err.decode(errors="replace")
    decoded: list[Decoded] = []
    for packet in ET.fromstring(out).iter("packet"):
        frame = packet.find("proto[@name='frame']/field[@name='frame.number']")
        src_ip = packet.find("proto[@name='ip']/field[@name='ip.src']")
        dst_ip = packet.find("proto[@name='ip']/field[@name='ip.dst']")
        src = packet.find("proto[@name='tcp']/field[@name='tcp.srcport']")
        dst = packet.find("proto[@name='tcp']/field[@name='tcp.dstport']")
        if None in (frame, src_ip, dst_ip, src, dst):
            continue
        assert frame is not None and src is not None and dst is not None
        assert src_ip is not None and dst_ip is not None
        for proto in packet.findall("proto[@name='gnutella']"):
            fields: dict[str, list[str]] = {}
            for field in proto.iter("field"):
                name = field.get("name", "")
                key = "value" if name in _BYTES_FIELDS else "show"
                fields.setdefault(name, []).append(field.get(key, ""))
            if "gnutella.header.id" not in fields:
                continue  # a handshake segment
            decoded.append(
                Decoded(
                    int(frame.get("show", "")),
                    (src_ip.get("show", ""), int(src.get("show", ""))),
                    (dst_ip.get("show", ""), int(dst.get("show", ""))),
                    fields,
                )
            )
    return decoded
