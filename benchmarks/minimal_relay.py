"""The comparison baseline for `throughput.py`: a minimal single-function Gnutella relay.

One Twisted `Protocol` whose `dataReceived` does everything: a bare-bones 0.6
handshake (accept `GNUTELLA CONNECT/0.6`, answer 200, wait for the final 200,
deflate if the servent offers it), then it cuts the stream into messages at
their 23-byte headers and writes each one, TTL - 1 and hops + 1, to every
other connected peer.  No stages, no queues, no duplicate table, no routing
table, no packet log, no validation beyond the header: the point is to show
what the stage graph costs compared with the least a relay can do on Twisted.
Of gnurouter it uses the header's layout (`protocol.messages.HEADER_FIELDS`,
the one coding of it) and the hard payload ceiling, nothing else.

By default the messages of one socket read are joined and written with one
call per peer (deflated with one sync flush), as the router's connection
stage batches per peer; `--write-per-message` writes (and flushes) every
message on its own instead.

    python benchmarks/minimal_relay.py --port 6350

Not a servent to put on a network: it floods every message, replies included.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Sequence
from typing import Any

from twisted.internet import protocol
from twisted.python.failure import Failure

from gnurouter.protocol.framer import HARD_PAYLOAD_CEILING
from gnurouter.protocol.messages import HEADER_FIELDS, HEADER_LENGTH, LENGTH_OFFSET, TTL_OFFSET

#: Bound on the handshake, so a bad client cannot grow a buffer forever (a
#: message is bounded by HARD_PAYLOAD_CEILING).
MAX_HANDSHAKE_BYTES = 16 * 1024

_HANDSHAKING, _CONFIRMING, _STREAMING = 0, 1, 2


class MinimalRelay(protocol.Protocol):
    """All of the relay is `dataReceived`; `send` deflates if needed, `connectionLost` forgets."""

    def __init__(self, peers: list[MinimalRelay], *, batch_writes: bool = True) -> None:
        self.peers = peers
        self.batch_writes = batch_writes
        self.state = _HANDSHAKING
        self.buffer = b""
        self.inflater: Any = None
        self.deflater: Any = None

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        if self.inflater is not None:
            data = self.inflater.decompress(data)
        buf = self.buffer + data if self.buffer else data
        # -- handshake: CONNECT -> our 200 -> their 200, each block ends with a blank line
        while self.state != _STREAMING:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HANDSHAKE_BYTES:
                    transport.loseConnection()
                self.buffer = buf
                return
            block, buf = buf[:end].lower(), buf[end + 4 :]
            if self.state == _HANDSHAKING:
                if not block.startswith(b"gnutella connect/0.6"):
                    transport.write(b"GNUTELLA/0.6 503 Only 0.6\r\n\r\n")
                    transport.loseConnection()
                    return
                reply = b"GNUTELLA/0.6 200 OK\r\nUser-Agent: minimal-relay/0.1\r\n"
                if b"accept-encoding: deflate" in block:
                    reply += b"Accept-Encoding: deflate\r\nContent-Encoding: deflate\r\n"
                    self.deflater = zlib.compressobj()
                transport.write(reply + b"\r\n")
                self.state = _CONFIRMING
            else:
                if not block.startswith(b"gnutella/0.6 200"):
                    transport.loseConnection()
                    return
                if b"content-encoding: deflate" in block:
                    self.inflater = zlib.decompressobj()
                    buf = self.inflater.decompress(buf)
                self.state = _STREAMING
                self.peers.append(self)
        # -- messages: split at the headers, TTL - 1, hops + 1, to everybody else
        pos, size = 0, len(buf)
        out: list[bytes] = []
        header_fields = HEADER_FIELDS.unpack_from
        while size - pos >= HEADER_LENGTH:
            _, ttl, hops, length = header_fields(buf, pos)
            if length > HARD_PAYLOAD_CEILING:
                transport.loseConnection()
                return
            end = pos + HEADER_LENGTH + length
            if end > size:
                break
            if ttl > 1:
                # TTL and hops are the two bytes before the length: rewrite them in place.
                forwarded = bytes((ttl - 1, min(hops + 1, 0xFF)))
                message = buf[pos : pos + TTL_OFFSET] + forwarded + buf[pos + LENGTH_OFFSET : end]
                if self.batch_writes:
                    out.append(message)
                else:
                    for peer in self.peers:
                        if peer is not self:
                            peer.send(message)
            pos = end
        self.buffer = buf[pos:]
        if out:
            wire = b"".join(out)
            for peer in self.peers:
                if peer is not self:
                    peer.send(wire)

    def send(self, data: bytes) -> None:
        if self.deflater is not None:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        transport: Any = self.transport
        transport.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self in self.peers:
            self.peers.remove(self)


class MinimalRelayFactory(protocol.Factory):
    def __init__(self, *, batch_writes: bool = True) -> None:
        self.peers: list[MinimalRelay] = []
        self.batch_writes = batch_writes

    def buildProtocol(self, addr: Any) -> MinimalRelay:
        return MinimalRelay(self.peers, batch_writes=self.batch_writes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument(
        "--write-per-message",
        action="store_true",
        help="one transport.write per message and peer, instead of one per read and peer",
    )
    args = parser.parse_args(argv)

    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor
    factory = MinimalRelayFactory(batch_writes=not args.write_per_message)
    reactor.listenTCP(args.port, factory, interface=args.host)
    reactor.run()  # SIGINT/SIGTERM stop it
    return 0


if __name__ == "__main__":
    sys.exit(main())
