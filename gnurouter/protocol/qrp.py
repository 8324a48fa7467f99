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

Tables are kept as Python ints (slot 0 = most significant bit) while being
patched, so a patch is applied with a few C-speed string/int conversions
rather than a Python loop per slot.
"""

from __future__ import annotations

import base64
import functools
import re
import unicodedata
import zlib
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
#: Tables outside these sizes are refused: gtk-gnutella's smallest table has 8
#: slots; 2**24 slots (2 MiB as a bitset) is far above what servents send.
MIN_TABLE_SLOTS = 8
MAX_TABLE_SLOTS = 1 << 24
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

    Slot i is bit 7 - (i % 8) of byte i // 8 (gtk-gnutella's compacted
    layout).  Built from an int whose most significant of `slots` bits is
    slot 0.
    """

    __slots__ = ("bits", "bitset", "infinity", "mask", "set_count", "shift", "slots")

    def __init__(self, slots: int, mask: int = 0, infinity: int = 2) -> None:
        if slots < MIN_TABLE_SLOTS or slots & (slots - 1):
            raise QrpError(f"QRP table length {slots} is not a power of two >= 8")
        self.slots = slots
        self.bits = _log2(slots)
        self.shift = 32 - self.bits
        self.mask = mask
        self.infinity = infinity
        self.bitset = mask.to_bytes(slots // 8, "big")
        self.set_count = mask.bit_count()

    @property
    def fill_ratio(self) -> float:
        return self.set_count / self.slots

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

    def resized_bits(self, bits: int) -> str:
        """The table as a '0'/'1' string of 2**bits slots (folded or spread as needed).

        A keyword at slot i of a 2**b table is at slot i >> (b - B) of a 2**B
        one, so folding ORs groups of slots and spreading repeats each slot.
        """
        text = format(self.mask, f"0{self.slots}b")
        if bits == self.bits:
            return text
        if bits < self.bits:
            factor = 1 << (self.bits - bits)
            folded = 0
            for offset in range(factor):
                folded |= int(text[offset::factor], 2)
            return format(folded, f"0{1 << bits}b")
        factor = 1 << (bits - self.bits)
        return text.translate({ord("0"): "0" * factor, ord("1"): "1" * factor})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QrpTable):
            return NotImplemented
        return self.slots == other.slots and self.mask == other.mask

    def __hash__(self) -> int:
        return hash((self.slots, self.mask))

    def __repr__(self) -> str:
        return f"QrpTable(slots={self.slots}, set={self.set_count})"

    @classmethod
    def from_hashcodes(cls, codes: list[int] | set[int], bits: int) -> QrpTable:
        mask = 0
        slots = 1 << bits
        for code in codes:
            mask |= 1 << (slots - 1 - (code >> (32 - bits)))
        return cls(slots, mask)

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


class QrpReceiver:
    """One peer's route table as it arrives: RESET, then PATCH sequences.

    `table` is the last complete table (None until the first sequence
    completes); a sequence in progress never shows half-applied.  `handle()`
    returns True when it installed a new table.
    """

    def __init__(self, max_slots: int = MAX_TABLE_SLOTS) -> None:
        self.max_slots = max_slots
        self.table: QrpTable | None = None
        self.resets = 0
        self.patches = 0
        self.tables_installed = 0
        self._size: int | None = None  # slots announced by the last RESET
        self._infinity = 2
        self._base: int | None = None  # the table a sequence patches (int mask)
        self._actions: bytearray | None = None
        self._seq_no = 0
        self._seq_size = 0
        self._entry_bits = 0
        self._compressor = QRP_COMPRESSOR_NONE
        self._inflater: zlib._Decompress | None = None

    @property
    def slots(self) -> int | None:
        return self._size

    @property
    def in_sequence(self) -> bool:
        return self._actions is not None

    def handle(self, body: RouteTableReset | RouteTablePatch) -> bool:
        if isinstance(body, RouteTableReset):
            self._reset(body)
            return False
        return self._patch(body)

    def _reset(self, reset: RouteTableReset) -> None:
        length = reset.table_length
        if length < MIN_TABLE_SLOTS or length & (length - 1):
            raise QrpError(f"Invalid QRP table length {length}")
        if length > self.max_slots:
            raise QrpError(f"QRP table of {length} slots is larger than {self.max_slots}")
        if reset.infinity < 1:
            raise QrpError(f"Invalid QRP infinity {reset.infinity}")
        self.resets += 1
        self._size = length
        self._infinity = reset.infinity
        self._base = 0  # a RESET starts from an empty table
        self._abandon()

    def _abandon(self) -> None:
        self._actions = None
        self._inflater = None
        self._seq_no = 0

    def _patch(self, patch: RouteTablePatch) -> bool:
        if self._size is None or self._base is None:
            raise QrpError("No QRP RESET received before PATCH")
        if patch.seq_no == 1:
            if self._actions is not None:
                raise QrpError(
                    f"QRP patch sequence restarted at #1 after #{self._seq_no}/{self._seq_size}"
                )
            self._actions = bytearray()
            self._seq_no = 0
            self._seq_size = patch.seq_size
            self._entry_bits = patch.entry_bits
            self._compressor = patch.compressor
            self._inflater = (
                zlib.decompressobj() if patch.compressor == QRP_COMPRESSOR_DEFLATE else None
            )
        elif self._actions is None or patch.seq_no != self._seq_no + 1:
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
            room = (self._size - len(self._actions)) * self._entry_bits // 8 + 1
            try:
                data = self._inflater.decompress(data, room)
                if last:
                    data += self._inflater.flush()
            except zlib.error as error:
                raise QrpError(
                    f"QRP patch #{patch.seq_no}/{patch.seq_size} decompression failed: {error}"
                ) from None
            if self._inflater.unconsumed_tail:
                raise QrpError(f"QRP patch overflowed table ({self._size} slots)")
        self._actions += patch_actions(data, self._entry_bits)
        if len(self._actions) > self._size:
            raise QrpError(f"QRP patch overflowed table ({self._size} slots)")
        if not last:
            return False
        return self._install()

    def _install(self) -> bool:
        actions = self._actions
        assert actions is not None and self._size is not None and self._base is not None
        size = self._size
        if len(actions) < size:
            covered = len(actions)
            self._abandon()
            raise QrpError(
                f"Incomplete {self._entry_bits}-bit QRP patch covered {covered}/{size} slots"
            )
        mask = self._base
        present = int(actions.translate(_TO_PRESENT), 2)
        absent = int(actions.translate(_TO_ABSENT), 2)
        toggle = int(actions.translate(_TO_TOGGLE), 2)
        mask = ((mask | present) & ~absent) ^ toggle
        self._base = mask
        self._abandon()
        self.table = QrpTable(size, mask, self._infinity)
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


def merge_tables(tables: list[QrpTable], bits: int = UP_TABLE_BITS) -> str:
    """The union of `tables` as a '0'/'1' string of 2**bits slots."""
    mask = 0
    for table in tables:
        mask |= int(table.resized_bits(bits), 2)
    return format(mask, f"0{1 << bits}b")
