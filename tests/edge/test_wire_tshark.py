"""The router's own bytes on the wire, as Wireshark's Gnutella dissector reads them.

One router and two servents on loopback, with a real capture (tshark, on
`lo`, filtered on the router's port; `tests.traces.capture`) running from
before the servents connect, so the pcap holds every TCP and Gnutella
handshake. The servents send a query, a ping, a query hit and a push through
the router; the pcap is then decoded with `tshark -d tcp.port==PORT,gnutella`
and every Gnutella message the router sent is checked against what the
servents received and what we know the router must have written (relayed
TTL/hops, its own pong).

Nothing here sleeps to synchronise: the capture start is awaited on tshark
reporting a UDP probe (see `start_capture`), the end of the traffic on the
FIN segments tshark reports live, tshark's exit on the process ending, and
messages on their arrival at the servents. Every wait has a timeout and
tshark is killed in a `finally`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from gnurouter.edge.servent import ServentProtocol, connect_servent
from gnurouter.edge.service import RouterService
from gnurouter.protocol.framer import MessageFramer
from gnurouter.protocol.messages import (
    QUERY_F_GGEP_H,
    QUERY_F_MARK,
    Message,
    MessageType,
    Ping,
    Pong,
    Push,
    Query,
    QueryHit,
    QueryHitResult,
    new_guid,
)
from tests.fixtures import at_least_established, local_address, require
from tests.traces.capture import (
    Capture,
    Decoded,
    bounded,
    decode_gnutella,
    start_capture,
    stop_capture,
)

pytestmark = [pytest.mark.external, pytest.mark.network]

TIMEOUT = 15.0


def framed_after_handshake(wire: bytes | bytearray) -> list[Message]:
    """The messages in what a servent received, after the router's handshake response."""
    end = wire.index(b"\r\n\r\n") + 4
    framer = MessageFramer()
    messages = framer.feed(bytes(wire[end:]))
    assert framer.buffered == 0 and framer.failed is None
    return messages


def header_of(message: Message) -> tuple[bytes, int, int, int, int]:
    return message.guid, message.type, message.ttl, message.hops, len(message.payload)


# -- the test -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_router_output_dissects_as_gnutella(start_router: Any, tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "tshark")
    router = start_router()
    host, port = router.listening_address()
    pcap = tmp_path / "router.pcap"
    capture, _ = await start_capture(port, pcap)
    try:
        await run_traffic_and_check(router, host, port, capture, pcap)
    finally:
        if not capture.ended.called:
            await stop_capture(capture, kill=True)


async def run_traffic_and_check(
    router: RouterService, host: str, port: int, capture: Capture, pcap: Path
) -> None:
    s2_pong = Pong(port=6349, ip="10.1.2.3", files=42, kbytes=4242)
    s1 = await connect_servent(reactor, host, port)
    s2 = await connect_servent(reactor, host, port, answer_pings=s2_pong)
    assert not s1.deflate and not s2.deflate
    await at_least_established(router, 2, TIMEOUT)
    servent_port = {servent: local_address(servent)[1] for servent in (s1, s2)}

    # A query from s1 is flooded to s2 with TTL - 1, hops + 1, payload untouched.
    query = Message.from_body(
        new_guid(), 5, 0, Query(flags=QUERY_F_MARK | QUERY_F_GGEP_H | 7, criteria="wire check ogg")
    )
    s1.send(query)
    relayed_query = await s2.next_message(reactor, lambda m: m.guid == query.guid, timeout=TIMEOUT)
    assert (relayed_query.ttl, relayed_query.hops) == (4, 1)

    # A ping from s1: the router answers with its own pong, relays the ping to
    # s2 (pong cache refresh), and routes s2's pong back to s1.
    ping = Message.from_body(new_guid(), 7, 0, Ping())
    s1.send(ping)
    relayed_ping = await s2.next_message(reactor, lambda m: m.guid == ping.guid, timeout=TIMEOUT)
    assert (relayed_ping.type, relayed_ping.ttl, relayed_ping.hops) == (MessageType.PING, 6, 1)
    router_pong = Pong(port=port, ip=host, files=0, kbytes=0)
    pongs = [
        await s1.next_message(
            reactor, lambda m: m.guid == ping.guid and m.type == MessageType.PONG, timeout=TIMEOUT
        )
        for _ in range(2)
    ]
    by_body = {pong.body(): (pong.ttl, pong.hops) for pong in pongs}
    assert by_body == {router_pong: (1, 0), s2_pong: (1, 1)}

    # s2 answers the query; the hit goes back to s1.
    servent_id = bytes(range(0x40, 0x50))
    hit = Message.from_body(
        query.guid,
        5,
        0,
        QueryHit(
            port=6348,
            ip="10.1.2.3",
            speed=512,
            results=(
                QueryHitResult(index=3, size=123456, name="wire check.ogg"),
                QueryHitResult(index=9, size=654321, name="wire check (live).ogg"),
            ),
            servent_id=servent_id,
        ),
    )
    s2.send(hit)
    relayed_hit = await s1.next_message(
        reactor, lambda m: m.type == MessageType.QUERY_HIT, timeout=TIMEOUT
    )
    assert relayed_hit == hit.forwarded(4, 1)

    # A push for s2's servent id follows the hit back to s2.
    push = Message.from_body(new_guid(), 7, 0, Push(servent_id, 9, "10.7.7.7", 6350))
    s1.send(push)
    relayed_push = await s2.next_message(
        reactor, lambda m: m.type == MessageType.PUSH, timeout=TIMEOUT
    )
    assert relayed_push == push.forwarded(6, 1)

    # Close both links and wait until the capture holds both FINs of both
    # connections: every byte the router wrote precedes its FIN.
    for servent in (s1, s2):
        servent.close()
    for servent in (s1, s2):
        await bounded(servent.closed)
    await capture.wait_for(lambda: capture.fins >= 4)
    await stop_capture(capture)
    # The pcap has both connections from their SYN on (so the Gnutella
    # handshakes too), which is what lets tshark frame the streams.
    assert {src for src, dst, syn, _ in capture.tcp if syn and dst == port} == set(
        servent_port.values()
    )

    decoded = await decode_gnutella(pcap, port)
    from_router = [d for d in decoded if d.src[1] == port]
    assert from_router, "tshark dissected no Gnutella message from the router"

    # The dissector sees exactly the messages each servent framed from its bytes.
    for servent in (s1, s2):
        framed = framed_after_handshake(servent.wire_in)
        on_wire = [d for d in from_router if d.dst[1] == servent_port[servent]]
        assert [d.header for d in on_wire] == [header_of(m) for m in framed]
        assert framed == servent.received
    assert len(from_router) == len(s1.received) + len(s2.received)

    def find(guid: bytes, type_: int, dst: ServentProtocol) -> list[Decoded]:
        return [
            d
            for d in from_router
            if d.header[:2] == (guid, type_) and d.dst[1] == servent_port[dst]
        ]

    # Query, relayed to s2.
    [q] = find(query.guid, MessageType.QUERY, s2)
    assert q.header == header_of(query.forwarded(4, 1))
    assert q.one("gnutella.query.search") == "wire check ogg"
    assert q.number("gnutella.query.min_speed") == int.from_bytes(query.payload[:2], "little")

    # Ping, relayed to s2 (no payload, so no payload tree).
    [p] = find(ping.guid, MessageType.PING, s2)
    assert p.header == header_of(ping.forwarded(6, 1))

    # Pongs to s1, in the order s1 got them: the router's own and s2's.
    decoded_pongs = find(ping.guid, MessageType.PONG, s1)
    assert [d.header for d in decoded_pongs] == [header_of(m) for m in pongs]
    for decoded_pong, message in zip(decoded_pongs, pongs, strict=True):
        pong = message.body()
        assert isinstance(pong, Pong)
        assert decoded_pong.number("gnutella.pong.port") == pong.port
        assert decoded_pong.one("gnutella.pong.ip") == pong.ip
        assert decoded_pong.number("gnutella.pong.files") == pong.files
        assert decoded_pong.number("gnutella.pong.kbytes") == pong.kbytes

    # Query hit, relayed to s1.
    [h] = find(query.guid, MessageType.QUERY_HIT, s1)
    assert h.header == header_of(hit.forwarded(4, 1))
    assert h.number("gnutella.queryhit.count") == 2
    assert h.number("gnutella.queryhit.port") == 6348
    assert h.one("gnutella.queryhit.ip") == "10.1.2.3"
    assert h.number("gnutella.queryhit.speed") == 512
    assert h.raw("gnutella.queryhit.servent_id") == servent_id
    assert h.fields["gnutella.queryhit.hit.name"] == ["wire check.ogg", "wire check (live).ogg"]
    assert [int(v) for v in h.fields["gnutella.queryhit.hit.index"]] == [3, 9]
    assert [int(v) for v in h.fields["gnutella.queryhit.hit.size"]] == [123456, 654321]

    # Push, relayed to s2.
    [u] = find(push.guid, MessageType.PUSH, s2)
    assert u.header == header_of(push.forwarded(6, 1))
    assert u.raw("gnutella.push.servent_id") == servent_id
    assert u.number("gnutella.push.index") == 9
    assert u.one("gnutella.push.ip") == "10.7.7.7"
    assert u.number("gnutella.push.port") == 6350

    # And the servents' side of the story, for the record: what they sent the
    # router is in the pcap too, unchanged.
    to_router = [d.header for d in decoded if d.dst[1] == port]
    for sent in (query, ping, hit, push):
        assert header_of(sent) in to_router
    assert (ping.guid, MessageType.PONG, 2, 0, len(s2_pong.encode())) in to_router
