"""Link compression: each direction of a deflated link is one zlib stream.

Servents negotiate it with Accept-Encoding / Content-Encoding: deflate in the
handshake; from then on everything after the handshake is a single zlib
(RFC 1950) stream per direction, flushed with Z_SYNC_FLUSH so the peer can
decode each batch as soon as it arrives (gtk-gnutella's tx_deflate flushes on
every send burst and on a timer).

Inflating is where a peer gets the most work out of us per byte it sends:
a megabyte of 23-byte messages deflates to about a kilobyte, and every one
of those ~45,000 messages is framed, validated and routed.  Three bounds
keep that in proportion (`InflateLimits`, enforced by `InflateBudget`):

* per read, `max_output` (a decompression bomb costs one bounded buffer);
* the compression ratio sustained over a window of inflated bytes;
* inflated bytes per second, a token bucket fed with the caller's clock
  (`now`; nothing in this package reads a clock).

Deflating is where a link costs the most memory: zlib's compressor holds
(1 << (window_bits + 2)) + (1 << (memory_level + 9)) bytes, 256 KiB at its
defaults, per link.  `DeflateSettings` chooses them per link
(`LEAF_DEFLATE` for the many leaves, as gtk-gnutella does); the inflater
must keep the full 32 KiB window, since the peer chooses its own.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
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
#: Bye code for a peer over its inflate budget: the Bye-Packet proposal's
#: 4xx class ("the User did something wrong"), 400 being "packets deemed
#: too big", which is what a stream expanding beyond its budget is.
INFLATE_BUDGET_BYE = 400

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class InflateLimits:
    """How much inflating one link may cost; see `DEFAULT_INFLATE_LIMITS` for the reasons.

    `max_ratio`: inflated / compressed bytes, judged once `ratio_window`
    inflated bytes have been seen and from then on over (roughly) the last
    `ratio_window` to 2 x `ratio_window` inflated bytes.  `max_rate`:
    inflated bytes per second sustained, with bursts up to `rate_burst`
    bytes.  0 turns a bound off.
    """

    max_ratio: float = 100.0
    ratio_window: int = 256 * 1024
    max_rate: float = 8 * _MIB
    rate_burst: int = 16 * _MIB

    def __post_init__(self) -> None:
        if self.max_ratio < 0 or self.max_rate < 0 or self.rate_burst < 0:
            raise ValueError("inflate limits must not be negative")
        if self.max_ratio and self.max_ratio < 1:
            raise ValueError("max_ratio below 1 would refuse every deflated stream")
        if self.max_ratio and self.ratio_window < 64 * 1024:
            raise ValueError(
                "ratio_window must be at least 64 KiB: a short window judges a "
                "handful of messages, not a stream"
            )
        if self.max_rate and self.rate_burst < DEFAULT_MAX_INFLATE_CHUNK:
            raise ValueError("rate_burst must hold at least one full read (1 MiB)")


#: Defaults, with room for every honest link we know of:
#:
#: * ratio 100:1: Gnutella traffic deflates 2-10x (gtk-gnutella reports
#:   50-70% savings on its links; QRP patches travel already deflated), so
#:   100:1 sustained is 10x above the most compressible real stream, while a
#:   stream of tiny identical messages (the attack: ~45,000 messages per KiB
#:   on the wire) deflates ~1000:1.  An attacker kept under 100:1 pays at
#:   least 1 byte per 100 we inflate, instead of 1 per 1000.
#: * window 256 KiB inflated: four times the minimum that judges a stream
#:   rather than a few messages; a link must carry that much before it can
#:   be judged, so short honest sessions never are, and an attacker gets at
#:   most ~11,000 tiny messages free once per connection.
#: * 8 MiB/s sustained, 16 MiB burst: a busy real ultrapeer link carries
#:   tens of KiB/s; 8 MiB/s is more than this router routes from all its
#:   links together (~200,000 queries/s, ~10 MB/s), so the bound never cuts
#:   off a link the router could serve, not even the throughput benchmark's
#:   deliberately saturating deflated sender (5-20 MB per run), while one
#:   deflated link can never feed the parser more than that per second.
#:   The ratio is the bound that matters against amplification; this one
#:   caps what a link costs whatever its ratio.
DEFAULT_INFLATE_LIMITS = InflateLimits()


class InflateBudgetExceeded(ProtocolError):
    """A peer's deflated stream went past its `InflateLimits` (Bye 400).

    `limit` says which bound: "inflate-ratio" or "inflate-rate", for counters.
    """

    def __init__(self, reason: str, *, limit: str) -> None:
        super().__init__(reason, bye_code=INFLATE_BUDGET_BYE)
        self.limit = limit


class InflateBudget:
    """Accounts one link's inflation against its `InflateLimits`.

    `charge(compressed, inflated, now)` after each read; it raises
    `InflateBudgetExceeded` past a bound.  The rate bound is a token bucket
    refilled from `now`, the caller's monotonic clock in seconds; a call
    without `now` is judged on the ratio only.  Counters: `compressed`,
    `inflated` (totals), `ratio_trips`, `rate_trips`.
    """

    __slots__ = (
        "_tokens",
        "_updated",
        "_window_in",
        "_window_out",
        "compressed",
        "inflated",
        "limits",
        "rate_trips",
        "ratio_trips",
    )

    def __init__(self, limits: InflateLimits = DEFAULT_INFLATE_LIMITS) -> None:
        self.limits = limits
        self.compressed = 0
        self.inflated = 0
        self.ratio_trips = 0
        self.rate_trips = 0
        self._window_in = 0
        self._window_out = 0
        self._tokens = float(limits.rate_burst)
        self._updated: float | None = None

    @property
    def ratio(self) -> float:
        """Inflated / compressed over the current window (0 before any input)."""
        return self._window_out / self._window_in if self._window_in else 0.0

    def charge(self, compressed: int, inflated: int, now: float | None = None) -> None:
        self.compressed += compressed
        self.inflated += inflated
        limits = self.limits
        if limits.max_ratio:
            window_in = self._window_in + compressed
            window_out = self._window_out + inflated
            if window_out >= limits.ratio_window and window_out > limits.max_ratio * window_in:
                self.ratio_trips += 1
                raise InflateBudgetExceeded(
                    f"deflate ratio {window_out / max(window_in, 1):.0f}:1 over the last "
                    f"{window_out // 1024} KiB exceeds {limits.max_ratio:g}:1",
                    limit="inflate-ratio",
                )
            if window_out >= 2 * limits.ratio_window:
                # Age the window: older reads count half as much each time
                # it fills, so the ratio follows the stream as it is now.
                window_in //= 2
                window_out //= 2
            self._window_in = window_in
            self._window_out = window_out
        if limits.max_rate and now is not None:
            updated = self._updated
            tokens = self._tokens
            if updated is not None and now > updated:
                tokens = min(float(limits.rate_burst), tokens + (now - updated) * limits.max_rate)
            self._updated = now if updated is None or now > updated else updated
            tokens -= inflated
            self._tokens = tokens
            if tokens < 0:
                self.rate_trips += 1
                raise InflateBudgetExceeded(
                    f"deflated stream inflates faster than {limits.max_rate / _MIB:g} MiB/s "
                    f"(burst {limits.rate_burst / _MIB:g} MiB)",
                    limit="inflate-rate",
                )


@dataclass(frozen=True, slots=True)
class DeflateSettings:
    """zlib's compressor settings for one link (see `deflateInit2`)."""

    level: int = zlib.Z_DEFAULT_COMPRESSION
    window_bits: int = zlib.MAX_WBITS
    memory_level: int = 8  # zlib's DEF_MEM_LEVEL

    def __post_init__(self) -> None:
        if not 9 <= self.window_bits <= zlib.MAX_WBITS:
            raise ValueError(f"window_bits must be 9..{zlib.MAX_WBITS}, got {self.window_bits}")
        if not 1 <= self.memory_level <= 9:
            raise ValueError(f"memory_level must be 1..9, got {self.memory_level}")

    @property
    def nbytes(self) -> int:
        """The compressor's memory, as zlib.h states it."""
        return (1 << (self.window_bits + 2)) + (1 << (self.memory_level + 9))


#: zlib's defaults: 256 KiB per link, for ultrapeer links (a few dozen).
DEFAULT_DEFLATE = DeflateSettings()
#: Ultrapeer to leaf: gtk-gnutella's "reduced" compressor (tx_deflate.c:
#: window 14 bits, memory level 6, default level), 96 KiB instead of 256 KiB.
#: A leaf gets only the queries its table matches, so a smaller window
#: costs little ratio, and there are hundreds or thousands of leaves.
LEAF_DEFLATE = DeflateSettings(window_bits=14, memory_level=6)


class Deflater:
    """Compresses one direction of a link; every `compress()` ends with a sync flush."""

    __slots__ = ("_compressor",)

    def __init__(self, settings: DeflateSettings = DEFAULT_DEFLATE) -> None:
        self._compressor = zlib.compressobj(
            settings.level, zlib.DEFLATED, settings.window_bits, settings.memory_level
        )

    def compress(self, data: bytes) -> bytes:
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


class Inflater:
    """Inflates one direction of a link.

    `decompress()` returns everything the input decodes to, or raises
    `ProtocolError` if that would exceed `max_output` bytes ("deflate stream
    expands beyond ...") or if the stream is corrupt. Feeding reads of a
    bounded size (a socket read) therefore bounds memory per call.  With a
    `budget`, each read is also charged to it (`InflateBudget.charge`), so
    a stream past its ratio or rate raises `InflateBudgetExceeded` before
    its output is handed on.
    """

    __slots__ = ("_decompressor", "_failed", "budget", "max_output")

    def __init__(
        self, max_output: int = DEFAULT_MAX_INFLATE_CHUNK, budget: InflateBudget | None = None
    ) -> None:
        if max_output <= 0:
            raise ValueError("max_output must be positive")
        self.max_output = max_output
        self.budget = budget
        self._decompressor = zlib.decompressobj()
        self._failed: ProtocolError | None = None

    def decompress(self, data: bytes, now: float | None = None) -> bytes:
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
        if self.budget is not None:
            try:
                self.budget.charge(len(data), len(out), now)
            except ProtocolError as error:
                self._failed = error
                raise
        return out

    def _fail(self, reason: str) -> NoReturn:
        self._failed = ProtocolError(reason, bye_code=_DESYNC_BYE)
        raise self._failed
