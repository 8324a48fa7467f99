"""Query Routing Protocol (QRP 0.1/0.2, LimeWire's scheme), sans I/O.

A leaf tells its ultrapeer which keywords it may answer with a table of
2**bits one-bit slots: a keyword hashes (`qrp_hash`) to a slot, and a set
slot means "a query with this word may match here".  The table travels as a
RESET (size, infinity) followed by a sequence of PATCH messages carrying one
signed delta per slot (8, 4 or 2 bits, negative = present, positive =
absent, 0 = unchanged; 1-bit patches toggle), optionally deflated as one zlib
stream across the whole sequence.  Later sequences without a RESET patch the
table in place.

* `qrp_hashcode` / `qrp_hash`: the hash every servent computes (the QRP
  spec's multiplicative hash over the lower-cased keyword's bytes taken as
  little-endian 32-bit words), checked against the values published with
  the spec.
* `QueryKeys.from_payload`: the hashes a query must hit, the way ultrapeers
  read queries (words of 3+ characters AND-ed, SHA1 URNs OR-ed).
* `QrpTable`: an installed table (bitset, gtk-gnutella's slot layout).
* `QrpReceiver`: applies RESET/PATCH messages and installs a table when a
  sequence completes; a broken sequence raises `QrpError` (Bye 413).
* `build_update`: the RESET/PATCH messages that turn one table into another
  (what an ultrapeer sends its ultrapeer neighbours).

Tables are kept as bitsets (slots / 8 bytes), and patched in place as each
PATCH arrives, with a few C-speed translations and int conversions per
64 KiB of patch data rather than a Python loop per slot; `QrpLimits` caps
the table size (2**21 slots, gtk-gnutella's maximum) and paces RESETs and
update sequences per peer.
"""

from __future__ import annotations

import base64
import functools
import re
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.ggep import parse_extension_area
from gnurouter.protocol.messages import (
    QRP_COMPRESSOR_DEFLATE,
    QRP_COMPRESSOR_NONE,
    RouteTablePatch,
    RouteTableReset,
)

#: The multiplier of the QRP hash (floor(2**32 * (sqrt(5) - 1) / 2)).
A_INT = 0x4F1BBCDC
_U32 = 0xFFFFFFFF
#: Words shorter than this are in nobody's table (gtk-gnutella QRP_MIN_WORD_LENGTH).
MIN_WORD_LENGTH = 3
#: The smallest table: gtk-gnutella's empty table has 8 slots.  The largest
#: is `QrpLimits.max_slots` (MAX_TABLE_SLOTS, 2**21).
MIN_TABLE_SLOTS = 8
#: Bye code for a broken QRP update (gtk-gnutella's choice).
QRP_BYE_CODE = 413
#: What ultrapeers send each other: LimeWire's default 64 Ki slots, infinity 7,
#: "present" = 1 - 7 and "absent" = 7 - 1 as 4-bit deltas.
UP_TABLE_BITS = 16
UP_INFINITY = 7
PATCH_CHUNK = 4096  # LimeWire's MAX_PATCH_SIZE


class QrpError(ValueError):
    """A QRP update that cannot be applied; the link should close with Bye 413."""


# -- hashing ---------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def qrp_hashcode(word: bytes) -> int:
    """The 32-bit QRP hash code of `word` (ASCII letters folded to lower case).

    XOR of the word's bytes taken four at a time as little-endian 32-bit
    integers (zero-padded), times A_INT modulo 2**32.  `qrp_hash` keeps the
    top `bits` bits of it.
    """
    data = word.lower()  # bytes.lower folds ASCII only, as the spec does
    if len(data) % 4:
        data += b"\x00" * (4 - len(data) % 4)
    value = int.from_bytes(data, "little")
    folded = 0
    while value:
        folded ^= value & _U32
        value >>= 32
    return (folded * A_INT) & _U32


def qrp_hash(word: str | bytes, bits: int) -> int:
    """The slot of `word` in a table of 2**bits slots."""
    if not 1 <= bits <= 32:
        raise ValueError(f"QRP hash bits must be 1..32, got {bits}")
    data = word.encode("utf-8") if isinstance(word, str) else word
    return qrp_hashcode(data) >> (32 - bits)


# -- what a query asks for ---------------------------------------------------

_TOKEN_PUNCTUATION = "\"'`.,;:!?()[]{}<>*+/\\|&#%=~^$@"
_SUBWORD = re.compile(r"[^\W_]+")
_SHA1_URN = re.compile(rb"urn:sha1:([A-Za-z2-7]{32})", re.IGNORECASE)


def _canonical(text: str) -> str:
    """NFKD, combining marks removed, lower case: how servents canonize words."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def _hash_of(word: str) -> int:
    return qrp_hashcode(word.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class QueryKeys:
    """The QRP hash codes a query must hit to be worth sending to a table's owner.

    `terms`: each must be present; a term is satisfied when every hash of one
    of its alternatives is present.  A plain word has one alternative (its
    own hash).  A token with punctuation inside ("don't", "ac/dc") has two,
    because servents split words differently: LimeWire keeps "don't" whole,
    gtk-gnutella indexes "don" and drops the 1-letter "t".  `urns`: hashes of
    "urn:sha1:..." strings; any one present is enough (they are OR-ed, as
    in gtk-gnutella's qrp_can_route).
    """

    terms: tuple[tuple[tuple[int, ...], ...], ...] = ()
    urns: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.terms and not self.urns

    @classmethod
    def from_criteria(cls, criteria: str, urns: tuple[str, ...] = ()) -> QueryKeys:
        terms: list[tuple[tuple[int, ...], ...]] = []
        seen: set[tuple[tuple[int, ...], ...]] = set()
        for token in _canonical(criteria).split():
            core = token.strip(_TOKEN_PUNCTUATION)
            if core.lower().startswith("urn:sha1:"):
                urns = (*urns, core)
                continue
            subwords = [w for w in _SUBWORD.findall(core) if len(w) >= MIN_WORD_LENGTH]
            if _SUBWORD.fullmatch(core):
                if len(core) < MIN_WORD_LENGTH:
                    continue
                term: tuple[tuple[int, ...], ...] = ((_hash_of(core),),)
            else:
                alternatives: list[tuple[int, ...]] = []
                if len(core) >= MIN_WORD_LENGTH:
                    alternatives.append((_hash_of(core),))
                if subwords:
                    alternatives.append(tuple(_hash_of(w) for w in subwords))
                if not alternatives:
                    continue
                term = tuple(alternatives)
            if term not in seen:
                seen.add(term)
                terms.append(term)
        urn_hashes = tuple(
            dict.fromkeys(qrp_hashcode(urn.lower().encode("ascii", "replace")) for urn in urns)
        )
        return cls(tuple(terms), urn_hashes)

    @classmethod
    def from_payload(cls, payload: bytes) -> QueryKeys:
        """Keys of a raw query payload (flags, NUL-terminated criteria, extensions).

        URNs come from the extension area (HUGE "urn:sha1:" items, and GGEP
        "H" with a binary SHA1, which servents hash as its urn:sha1 text).
        Nothing here can fail: a query the router relays is never refused for
        what this reader does not understand.
        """
        nul = payload.find(b"\x00", 2)
        if nul < 0:
            return cls()
        criteria = payload[2:nul].decode("utf-8", errors="replace")
        rest = payload[nul + 1 :]
        urns: list[str] = []
        if rest:
            urns.extend(
                "urn:sha1:" + match.group(1).decode("ascii").upper()
                for match in _SHA1_URN.finditer(rest)
            )
            urns.extend(_ggep_h_urns(rest))
        return cls.from_criteria(criteria, tuple(urns))


def _ggep_h_urns(area: bytes) -> list[str]:
    if b"\xc3" not in area:
        return []
    try:
        parsed = parse_extension_area(area)
    except (ProtocolError, ValueError):
        return []
    found = []
    for ext in parsed.ggep:
        # GGEP "H": a hash type byte (1 = SHA1, 2 = bitprint = SHA1 + TTH), then the hash.
        if ext.id == "H" and len(ext.data) >= 21 and ext.data[0] in (1, 2):
            found.append("urn:sha1:" + base64.b32encode(ext.data[1:21]).decode("ascii"))
    return found


# -- tables ----------------------------------------------------------------


def _log2(slots: int) -> int:
    return slots.bit_length() - 1


class QrpTable:
    """An installed route table: `slots` one-bit entries, read-only.

    Stored compactly, as gtk-gnutella does: `bitset` holds slot i in bit
    7 - (i % 8) of byte i // 8 (slots / 8 bytes: 8 KiB for LimeWire's 64 Ki
    slots, 256 KiB at the 2 Mi-slot maximum).  `mask` is the same bits as
    an int (slot 0 = most significant bit), computed when asked for.
    Folded copies (`folded_mask`) are cached: a table never changes.
    """

    __slots__ = ("_folds", "bits", "bitset", "infinity", "set_count", "shift", "slots")

    def __init__(self, slots: int, mask: int = 0, infinity: int = 2) -> None:
        if slots < MIN_TABLE_SLOTS or slots & (slots - 1):
            raise QrpError(f"QRP table length {slots} is not a power of two >= 8")
        self._init(slots, mask.to_bytes(slots // 8, "big"), infinity)

    def _init(self, slots: int, bitset: bytes, infinity: int) -> None:
        self.slots = slots
        self.bits = _log2(slots)
        self.shift = 32 - self.bits
        self.infinity = infinity
        self.bitset = bitset
        self.set_count = int.from_bytes(bitset, "big").bit_count()
        self._folds: dict[int, int] = {}

    @classmethod
    def from_bitset(cls, slots: int, bitset: bytes, infinity: int = 2) -> QrpTable:
        """A table over `bitset` as it is (slots / 8 bytes, gtk-gnutella's layout)."""
        if slots < MIN_TABLE_SLOTS or slots & (slots - 1):
            raise QrpError(f"QRP table length {slots} is not a power of two >= 8")
        if len(bitset) != slots // 8:
            raise ValueError(f"a {slots}-slot table takes {slots // 8} bytes, got {len(bitset)}")
        table = cls.__new__(cls)
        table._init(slots, bytes(bitset), infinity)
        return table

    @property
    def mask(self) -> int:
        return int.from_bytes(self.bitset, "big")

    @property
    def fill_ratio(self) -> float:
        return self.set_count / self.slots

    @property
    def nbytes(self) -> int:
        """Memory held by the slots (the bitset and cached folds)."""
        return len(self.bitset) + sum((1 << bits) // 8 for bits in tuple(self._folds))

    def has(self, hashcode: int) -> bool:
        index = hashcode >> self.shift
        return bool(self.bitset[index >> 3] & (0x80 >> (index & 7)))

    def slot_set(self, slot: int) -> bool:
        return bool(self.bitset[slot >> 3] & (0x80 >> (slot & 7)))

    def matches(self, keys: QueryKeys) -> bool:
        """May the table's owner answer a query with these keys?"""
        has = self.has
        if keys.urns:
            # A SHA1 query goes where one of its URNs is (gtk-gnutella qrp_can_route).
            return any(has(code) for code in keys.urns)
        if not keys.terms:
            return False  # nothing to route on: an empty hash vector routes nowhere
        for term in keys.terms:
            for alternative in term:
                if all(has(code) for code in alternative):
                    break
            else:
                return False
        return True

    def folded_mask(self, bits: int) -> int:
        """The table as an int of 2**bits slots, folded or spread as needed (cached).

        A keyword at slot i of a 2**b table is at slot i >> (b - B) of a 2**B
        one, so folding ORs runs of 2**(b - B) slots and spreading repeats
        each slot.  Linear in the table (string slicing and int parsing at C
        speed), and done once per table and size.
        """
        cached = self._folds.get(bits)
        if cached is not None:
            return cached
        if bits == self.bits:
            folded = self.mask
        else:
            text = format(self.mask, f"0{self.slots}b")
            if bits < self.bits:
                factor = 1 << (self.bits - bits)
                folded = 0
                for offset in range(factor):
                    folded |= int(text[offset::factor], 2)
            else:
                factor = 1 << (bits - self.bits)
                folded = int(text.translate({ord("0"): "0" * factor, ord("1"): "1" * factor}), 2)
        if bits < self.bits and bits <= UP_TABLE_BITS:
            self._folds[bits] = folded  # small; the full-size mask is cheap to rebuild
        return folded

    def resized_bits(self, bits: int) -> str:
        """The table as a '0'/'1' string of 2**bits slots (see `folded_mask`)."""
        return format(self.folded_mask(bits), f"0{1 << bits}b")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QrpTable):
            return NotImplemented
        return self.slots == other.slots and self.bitset == other.bitset

    def __hash__(self) -> int:
        return hash((self.slots, self.bitset))

    def __repr__(self) -> str:
        return f"QrpTable(slots={self.slots}, set={self.set_count})"

    @classmethod
    def from_hashcodes(cls, codes: list[int] | set[int], bits: int) -> QrpTable:
        slots = 1 << bits
        bitset = bytearray(slots // 8)
        for code in codes:
            index = code >> (32 - bits)
            bitset[index >> 3] |= 0x80 >> (index & 7)
        return cls.from_bitset(slots, bytes(bitset))

    @classmethod
    def from_words(cls, words: list[str], bits: int) -> QrpTable:
        return cls.from_hashcodes({_hash_of(_canonical(word)) for word in words}, bits)


# Per-slot actions decoded from patch bytes: 0 none, 1 present, 2 absent, 3 toggle.
_NONE, _PRESENT, _ABSENT, _TOGGLE = 0, 1, 2, 3


def _signed_action(value: int, bits: int) -> int:
    if value == 0:
        return _NONE
    return _PRESENT if value & (1 << (bits - 1)) else _ABSENT


def _build_action_tables(bits: int) -> list[bytes]:
    """For each position within a byte, a 256-entry translation to its slot action."""
    per_byte = 8 // bits
    tables = []
    for position in range(per_byte):
        shift = 8 - bits * (position + 1)
        table = bytearray(256)
        for byte in range(256):
            value = (byte >> shift) & ((1 << bits) - 1)
            if bits == 1:
                table[byte] = _TOGGLE if value else _NONE
            else:
                table[byte] = _signed_action(value, bits)
        tables.append(bytes(table))
    return tables


_ACTION_TABLES = {bits: _build_action_tables(bits) for bits in (1, 2, 4, 8)}
_TO_PRESENT = bytes.maketrans(bytes([_NONE, _PRESENT, _ABSENT, _TOGGLE]), b"0100")
_TO_ABSENT = bytes.maketrans(bytes([_NONE, _PRESENT, _ABSENT, _TOGGLE]), b"0010")
_TO_TOGGLE = bytes.maketrans(bytes([_NONE, _PRESENT, _ABSENT, _TOGGLE]), b"0001")
#: Patch bytes applied per step: bounds the temporary action and bit
#: strings (8 per byte at 1-bit entries: 512 KiB) whatever a message holds.
_APPLY_STEP = 64 * 1024


def patch_actions(data: bytes, entry_bits: int) -> bytes:
    """One action byte per slot for raw (inflated) patch data."""
    tables = _ACTION_TABLES[entry_bits]
    if len(tables) == 1:
        return data.translate(tables[0])
    out = bytearray(len(data) * len(tables))
    step = len(tables)
    for position, table in enumerate(tables):
        out[position::step] = data.translate(table)
    return bytes(out)


def _bits_of(actions: bytes, translation: bytes) -> int:
    """The slots whose action `translation` maps to '1', as an int (first slot most significant)."""
    text = actions.translate(translation)
    return int(text, 2) if b"1" in text else 0


@dataclass(frozen=True, slots=True)
class QrpLimits:
    """What one peer's QRP updates may cost; see `DEFAULT_QRP_LIMITS` for the reasons.

    `max_slots`: largest table accepted (a RESET announcing more is Bye 413).
    Table rebuilds (a RESET whose table is then sent: counted at its first
    PATCH) and patch sequences are each paced by a token bucket: up to
    `reset_burst` / `update_burst` at once, then one more per
    `reset_interval` / `update_interval` seconds.  A peer over a bucket is
    cut off (Bye 413).  An interval of 0 turns that pacing off.  A RESET
    that no PATCH follows costs nothing (no table is allocated before the
    first PATCH) and is only counted.
    """

    max_slots: int = 1 << 21
    reset_burst: int = 4
    reset_interval: float = 60.0
    update_burst: int = 8
    update_interval: float = 15.0

    def __post_init__(self) -> None:
        if self.max_slots < MIN_TABLE_SLOTS or self.max_slots & (self.max_slots - 1):
            raise ValueError(f"max_slots must be a power of two >= {MIN_TABLE_SLOTS}")
        if min(self.reset_burst, self.update_burst) < 1:
            raise ValueError("QRP bursts must allow at least one RESET and one update")
        if min(self.reset_interval, self.update_interval) < 0:
            raise ValueError("QRP intervals must not be negative")


#: Defaults and their sources:
#:
#: * 2**21 slots (256 KiB as a bitset): gtk-gnutella's own ceiling
#:   (qrp.c MAX_TABLE_BITS = 21, "2 MB" uncompacted) both for the tables it
#:   builds and for those it keeps (it shrinks larger ones to that).
#:   LimeWire and gtk-gnutella leaves send 64 Ki slots by default, inter-
#:   ultrapeer tables are at most 128 Ki (gtk-gnutella MAX_UP_TABLE_SIZE).
#:   Larger tables are refused rather than shrunk: shrinking still means
#:   decoding every slot of, say, a 2**24-slot patch that deflates to 2 KB.
#: * RESETs followed by a table: 4 at once, then one a minute.  Servents
#:   RESET when a link comes up or their table size changes, then patch.
#: * patch sequences: 8 at once, then one every 15 s.  The most eager
#:   sender, LimeWire, updates an ultrapeer at most once a minute
#:   (ULTRAPEER_QUERY_ROUTE_UPDATE_TIME) and a leaf every 5 minutes;
#:   gtk-gnutella's ultrapeers every 5 minutes (LEAF_MONITOR_PERIOD).
DEFAULT_QRP_LIMITS = QrpLimits()
MAX_TABLE_SLOTS = DEFAULT_QRP_LIMITS.max_slots


class QrpLimitError(QrpError):
    """A peer went past a `QrpLimits` bound; `limit` names it for counters
    ("qrp-table-too-large", "qrp-reset-rate", "qrp-update-rate")."""

    def __init__(self, reason: str, *, limit: str) -> None:
        super().__init__(reason)
        self.limit = limit


class _Pacer:
    """A token bucket on a clock the caller passes in."""

    __slots__ = ("burst", "interval", "tokens", "updated")

    def __init__(self, burst: int, interval: float) -> None:
        self.burst = burst
        self.interval = interval
        self.tokens = float(burst)
        self.updated: float | None = None

    def take(self, now: float | None) -> bool:
        if now is None or not self.interval:
            return True
        if self.updated is not None and now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) / self.interval)
        if self.updated is None or now > self.updated:
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class QrpReceiver:
    """One peer's route table as it arrives: RESET, then PATCH sequences.

    `table` is the last complete table (None until the first sequence
    completes); a sequence in progress never shows half-applied.  `handle()`
    returns True when it installed a new table.

    Memory is two bitsets at most (the installed table and the one being
    patched, slots / 8 bytes each), and a patch costs time linear in its
    bytes: each message is applied to the working bitset as it arrives, in
    bounded steps, runs of "no change" skipped without decoding.  `limits`
    bounds the table size and paces table builds (see `QrpLimits`) on the
    `now` passed to `handle()` (no `now`, no pacing).
    """

    def __init__(
        self, max_slots: int | None = None, *, limits: QrpLimits = DEFAULT_QRP_LIMITS
    ) -> None:
        self.limits = limits
        self.max_slots = limits.max_slots if max_slots is None else max_slots
        self.table: QrpTable | None = None
        self.resets = 0
        self.patches = 0
        self.tables_installed = 0
        self._size: int | None = None  # slots announced by the last RESET
        self._infinity = 2
        self._base: QrpTable | None = None  # what a sequence patches (None: empty)
        self._rebuild = False  # a RESET since the last sequence began
        self._work: bytearray | None = None  # the table being patched
        self._pos = 0  # slots of the sequence applied so far
        self._carry = b""  # actions of slots short of a whole byte
        self._seq_no = 0
        self._seq_size = 0
        self._entry_bits = 0
        self._compressor = QRP_COMPRESSOR_NONE
        self._inflater: zlib._Decompress | None = None
        self._resets = _Pacer(limits.reset_burst, limits.reset_interval)
        self._updates = _Pacer(limits.update_burst, limits.update_interval)

    @property
    def slots(self) -> int | None:
        return self._size

    @property
    def in_sequence(self) -> bool:
        return self._work is not None

    @property
    def nbytes(self) -> int:
        """Memory held by this peer's tables (installed, being patched)."""
        table, work = self.table, self._work  # read once: a snapshot may run meanwhile
        return (table.nbytes if table is not None else 0) + (len(work) if work is not None else 0)

    def handle(self, body: RouteTableReset | RouteTablePatch, now: float | None = None) -> bool:
        if isinstance(body, RouteTableReset):
            self._reset(body)
            return False
        return self._patch(body, now)

    def _reset(self, reset: RouteTableReset) -> None:
        length = reset.table_length
        if length < MIN_TABLE_SLOTS or length & (length - 1):
            raise QrpError(f"Invalid QRP table length {length}")
        if length > self.max_slots:
            raise QrpLimitError(
                f"QRP table of {length} slots is larger than {self.max_slots}",
                limit="qrp-table-too-large",
            )
        if reset.infinity < 1:
            raise QrpError(f"Invalid QRP infinity {reset.infinity}")
        self.resets += 1
        self._size = length
        self._infinity = reset.infinity
        self._base = None  # a RESET starts from an empty table
        self._rebuild = True
        self._abandon()

    def _abandon(self) -> None:
        self._work = None
        self._inflater = None
        self._carry = b""
        self._pos = 0
        self._seq_no = 0

    def _patch(self, patch: RouteTablePatch, now: float | None) -> bool:
        if self._size is None:
            raise QrpError("No QRP RESET received before PATCH")
        size = self._size
        if patch.seq_no == 1:
            if self._work is not None:
                raise QrpError(
                    f"QRP patch sequence restarted at #1 after #{self._seq_no}/{self._seq_size}"
                )
            if self._rebuild:
                # The RESET's table is being built: that is what is paced.
                if not self._resets.take(now):
                    raise QrpLimitError(
                        f"Too many QRP RESETs (more than {self.limits.reset_burst}, then one "
                        f"per {self.limits.reset_interval:g}s)",
                        limit="qrp-reset-rate",
                    )
                self._rebuild = False
            if not self._updates.take(now):
                raise QrpLimitError(
                    f"Too many QRP updates (more than {self.limits.update_burst}, then one per "
                    f"{self.limits.update_interval:g}s)",
                    limit="qrp-update-rate",
                )
            base = self._base
            self._work = bytearray(base.bitset) if base is not None else bytearray(size // 8)
            self._pos = 0
            self._carry = b""
            self._seq_no = 0
            self._seq_size = patch.seq_size
            self._entry_bits = patch.entry_bits
            self._compressor = patch.compressor
            self._inflater = (
                zlib.decompressobj() if patch.compressor == QRP_COMPRESSOR_DEFLATE else None
            )
        elif self._work is None or patch.seq_no != self._seq_no + 1:
            raise QrpError(f"Invalid QRP seq number {patch.seq_no} (expected {self._seq_no + 1})")
        if patch.seq_size != self._seq_size:
            raise QrpError(
                f"Changed QRP seq size to {patch.seq_size} at message #{patch.seq_no} "
                f"(began with {self._seq_size})"
            )
        if patch.entry_bits != self._entry_bits or patch.compressor != self._compressor:
            raise QrpError(f"Changed QRP entry bits or compressor at message #{patch.seq_no}")
        self._seq_no = patch.seq_no
        self.patches += 1
        data = patch.data
        last = patch.seq_no == patch.seq_size
        if self._inflater is not None:
            # Bound what one message may inflate to: the rest of the table.
            pending = self._pos + len(self._carry)
            room = (size - pending) * self._entry_bits // 8 + 1
            try:
                data = self._inflater.decompress(data, room)
                if last and not self._inflater.unconsumed_tail:
                    data += self._inflater.flush()
            except zlib.error as error:
                self._abandon()
                raise QrpError(
                    f"QRP patch #{patch.seq_no}/{patch.seq_size} decompression failed: {error}"
                ) from None
            if self._inflater.unconsumed_tail:
                self._abandon()
                raise QrpError(f"QRP patch overflowed table ({size} slots)")
        self._apply(data)
        if not last:
            return False
        return self._install()

    def _apply(self, data: bytes) -> None:
        """Apply raw patch bytes to the working table, from slot `_pos` on."""
        work = self._work
        assert work is not None and self._size is not None
        size = self._size
        per_byte = 8 // self._entry_bits
        if (self._pos + len(self._carry) + len(data) * per_byte) > size:
            self._abandon()
            raise QrpError(f"QRP patch overflowed table ({size} slots)")
        for start in range(0, len(data), _APPLY_STEP):
            piece = data[start : start + _APPLY_STEP]
            if not self._carry and piece.count(0) == len(piece):
                # Nothing changes in this run: skip it undecoded, keeping
                # `_pos` on a byte boundary (the rest is "no change" too).
                slots = len(piece) * per_byte
                whole = slots & ~7
                self._pos += whole
                self._carry = bytes(slots - whole)
                continue
            actions = self._carry + patch_actions(piece, self._entry_bits)
            usable = len(actions) & ~7
            self._carry = actions[usable:]
            if not usable:
                continue
            actions = actions[:usable]
            first = self._pos >> 3
            last = first + (usable >> 3)
            old = int.from_bytes(work[first:last], "big")
            present = _bits_of(actions, _TO_PRESENT)
            absent = _bits_of(actions, _TO_ABSENT)
            toggle = _bits_of(actions, _TO_TOGGLE)
            new = ((old | present) & ~absent) ^ toggle
            work[first:last] = new.to_bytes(last - first, "big")
            self._pos += usable

    def _install(self) -> bool:
        work = self._work
        assert work is not None and self._size is not None
        size = self._size
        covered = self._pos + len(self._carry)
        if covered < size:
            self._abandon()
            raise QrpError(
                f"Incomplete {self._entry_bits}-bit QRP patch covered {covered}/{size} slots"
            )
        table = QrpTable.from_bitset(size, bytes(work), self._infinity)
        self._abandon()
        self._base = table
        self.table = table
        self.tables_installed += 1
        return True


# -- sending ---------------------------------------------------------------


def _nibbles(bits: str, digit: str) -> int:
    """'0'/'1' slot string -> int whose 4-bit digit per slot is `digit` where '1'."""
    return int(bits.translate({ord("1"): digit}), 16) if "1" in bits else 0


def build_update(
    old: str | None, new: str, *, infinity: int = UP_INFINITY, chunk: int = PATCH_CHUNK
) -> list[RouteTableReset | RouteTablePatch]:
    """QRP messages turning table `old` into `new` ('0'/'1' slot strings, same length).

    `old` None means the receiver has no table: a RESET goes first.  Nothing
    is returned when the tables are equal.  Patches are 4-bit deltas
    (present = 1 - infinity, absent = infinity - 1; what both LimeWire and
    gtk-gnutella read), deflated as one stream cut into `chunk`-byte pieces.
    """
    slots = len(new)
    if old is not None and len(old) != slots:
        old = None
    messages: list[RouteTableReset | RouteTablePatch] = []
    if old is None:
        messages.append(RouteTableReset(slots, infinity))
        old_mask = 0
    else:
        old_mask = int(old, 2)
        if old == new:
            return []
    new_mask = int(new, 2)
    changed = old_mask ^ new_mask
    added = format(changed & new_mask, f"0{slots}b")
    removed = format(changed & old_mask, f"0{slots}b")
    present = (1 - infinity) & 0xF
    absent = (infinity - 1) & 0xF
    value = _nibbles(added, f"{present:x}") | _nibbles(removed, f"{absent:x}")
    raw = value.to_bytes(slots // 2, "big")
    data = zlib.compress(raw, 9)
    compressor = QRP_COMPRESSOR_DEFLATE
    if len(data) >= len(raw):
        data, compressor = raw, QRP_COMPRESSOR_NONE
    chunk = max(chunk, -(-len(data) // 255))
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    for number, piece in enumerate(pieces, 1):
        messages.append(RouteTablePatch(number, len(pieces), compressor, 4, piece))
    return messages


def union_mask(tables: Iterable[QrpTable], bits: int = UP_TABLE_BITS) -> int:
    """The union of `tables` at 2**bits slots, as an int (slot 0 most significant)."""
    mask = 0
    for table in tables:
        mask |= table.folded_mask(bits)
    return mask


def merge_tables(tables: list[QrpTable], bits: int = UP_TABLE_BITS) -> str:
    """The union of `tables` as a '0'/'1' string of 2**bits slots."""
    return format(union_mask(tables, bits), f"0{1 << bits}b")
