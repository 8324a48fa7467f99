"""Link compression: each direction of a deflated link is one zlib stream.

Servents negotiate it with Accept-Encoding / Content-Encoding: deflate in the
handshake; from then on everything after the handshake is a single zlib
(RFC 1950) stream per direction, flushed with Z_SYNC_FLUSH so the peer can
decode each batch as soon as it arrives (gtk-gnutella's tx_deflate flushes on
every send burst and on a timer).
"""

from __future__ import annotations

import zlib
from typing import NoReturn

from gnurouter.protocol.errors import ProtocolError

#: Largest output one `Inflater.decompress()` call may produce. A legitimate
#: stream compresses by a few times (gtk-gnutella reports ~50-70% savings), so
#: a 64 KiB socket read expands to a few hundred KiB at most; 1 MiB leaves a
#: wide margin while bounding a decompression bomb (deflate reaches ~1000:1)
#: to one MiB of messages per read. gtk-gnutella reaches the same end by
#: inflating into fixed-size buffers under flow control.
DEFAULT_MAX_INFLATE_CHUNK = 1024 * 1024

_DESYNC_BYE = 501


class Deflater:
    """Compresses one direction of a link; every `compress()` ends with a sync flush."""

    __slots__ = ("_compressor",)

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._compressor = zlib.compressobj(level)

    def compress(self, data: bytes) -> bytes:
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


class Inflater:
    """Inflates one direction of a link.

    `decompress()` returns everything the input decodes to, or raises
    `ProtocolError` if that would exceed `max_output` bytes ("deflate stream
    expands beyond ...") or if the stream is corrupt. Feeding reads of a
    bounded size (a socket read) therefore bounds memory per call.
    """

    __slots__ = ("_decompressor", "_failed", "max_output")

    def __init__(self, max_output: int = DEFAULT_MAX_INFLATE_CHUNK) -> None:
        if max_output <= 0:
            raise ValueError("max_output must be positive")
        self.max_output = max_output
        self._decompressor = zlib.decompressobj()
        self._failed: ProtocolError | None = None

    def decompress(self, data: bytes) -> bytes:
        if self._failed is not None:
            raise self._failed
        decompressor = self._decompressor
        if decompressor.eof:
            if data:
                self._fail("data after the end of the deflate stream")
            return b""
        try:
            # One byte more than allowed: getting it proves the limit was
            # crossed even when zlib holds the rest internally instead of
            # in unconsumed_tail.
            out = decompressor.decompress(data, self.max_output + 1)
        except zlib.error as error:
            self._fail(f"corrupt deflate stream: {error}")
        if len(out) > self.max_output or decompressor.unconsumed_tail:
            self._fail(f"deflate stream expands beyond {self.max_output} bytes in one read")
        if decompressor.unused_data:
            self._fail("data after the end of the deflate stream")
        return out

    def _fail(self, reason: str) -> NoReturn:
        self._failed = ProtocolError(reason, bye_code=_DESYNC_BYE)
        raise self._failed
