"""The Gnutella 0.6 connection handshake as a state machine, plus 0.4 acceptance.

    initiator                                   acceptor
    GNUTELLA CONNECT/0.6 + headers   ------->   ConnectRequest
    ConnectResponse                  <-------   GNUTELLA/0.6 200 OK + headers
    GNUTELLA/0.6 200 OK + headers    ------->   ConnectResponse, HandshakeComplete
    (messages, deflated if negotiated, both ways)

Either side may answer with another status instead (503 + X-Try-Ultrapeers,
typically), which ends the handshake. A 0.4 servent sends
"GNUTELLA CONNECT/0.4\\n\\n" and gets "GNUTELLA OK\\n\\n"; that is the whole
handshake.

Events come out of `receive_data()`. The decisions (`accept`, `confirm`,
`refuse`) are the caller's; they return the bytes to send. When one of them
ends the handshake (`confirm`, `refuse`, a 0.4 `accept`), the resulting
`HandshakeComplete` / `HandshakeRefused` event is also available at once as
`result` / `refusal` and is delivered by the next `receive_data()` call, which
may be `receive_data(b"")`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import overload

from gnurouter.protocol.errors import ProtocolError


class Role(enum.Enum):
    INITIATOR = "initiator"
    ACCEPTOR = "acceptor"


class Headers:
    """Handshake headers: ordered, case-insensitive, immutable.

    A header repeated in one block reads as its values joined with ", " (as
    HTTP does); `pairs` keeps the lines exactly as given, and `encode()`
    writes those.
    """

    __slots__ = ("_index", "_pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = tuple((str(name), str(value)) for name, value in pairs)
        index: dict[str, tuple[str, str]] = {}
        for name, value in self._pairs:
            key = name.lower()
            known = index.get(key)
            index[key] = (name, value) if known is None else (known[0], f"{known[1]}, {value}")
        self._index = index

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        return cls(pairs)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return self._pairs

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    @overload
    def get(self, name: str, default: None) -> str | None: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self._index.get(name.lower())
        return found[1] if found is not None else default

    def tokens(self, name: str) -> list[str]:
        """The comma-separated values of a header, lower-cased, parameters dropped."""
        value = self.get(name)
        if not value:
            return []
        return [item.split(";", 1)[0].strip().lower() for item in value.split(",") if item.strip()]

    def items(self) -> list[tuple[str, str]]:
        return list(self._index.values())

    def replaced(self, newer: Headers) -> Headers:
        """These headers with every name present in `newer` replaced by its lines."""
        pairs = [(n, v) for n, v in self._pairs if n.lower() not in newer._index]
        pairs.extend(newer._pairs)
        return Headers(pairs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[tuple[str, str], ...]:
        return tuple((name.lower(), value) for name, value in self._pairs)

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"

    def encode(self) -> bytes:
        lines = []
        for name, value in self._pairs:
            if (
                not name
                or any(ch in name for ch in ":\r\n \t")
                or any(ch in value for ch in "\r\n")
            ):
                raise ValueError(f"header {name!r}: {value!r} cannot be written on one line")
            lines.append(f"{name}: {value}\r\n")
        return "".join(lines).encode("utf-8")


@dataclass(frozen=True, slots=True)
class HandshakeLimits:
    """Bounds on what a peer may send during the handshake.

    gtk-gnutella (lib/header.h) allows 128 header lines and 16 KiB per block,
    and lines up to that same 16 KiB. One line rarely needs more than a few
    hundred bytes; the longest real ones are X-Try-Ultrapeers lists of ~10-30
    "ip:port" entries, so 4 KiB per line is generous without letting a single
    line use up the block.
    """

    max_line_length: int = 4096
    max_headers: int = 128
    max_total_bytes: int = 16384

    def __post_init__(self) -> None:
        for name in ("max_line_length", "max_headers", "max_total_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


DEFAULT_HANDSHAKE_LIMITS = HandshakeLimits()


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Acceptor side: the initiator's "GNUTELLA CONNECT/<version>" block."""

    version: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """A 200 block: the acceptor's reply (initiator side) or the initiator's
    final reply (acceptor side). Other statuses arrive as HandshakeRefused."""

    status: int
    reason: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Both sides said 200; messages follow.

    `our_headers` / `their_headers` merge each side's blocks, a later block's
    header replacing an earlier one of the same name (the final 200 may, for
    instance, turn "X-Ultrapeer: True" into "False" after leaf guidance).
    `deflate_out` is whether our last block said Content-Encoding: deflate,
    `deflate_in` whether theirs did.
    """

    version: str
    our_headers: Headers
    their_headers: Headers
    deflate_in: bool
    deflate_out: bool


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """A non-200 status ended the handshake; `by_us` tells who sent it.

    Ultrapeers refusing a connection usually list others to try in
    `headers.get("X-Try-Ultrapeers")`.
    """

    status: int
    reason: str
    headers: Headers
    by_us: bool


HandshakeEvent = ConnectRequest | ConnectResponse | HandshakeComplete | HandshakeRefused


def negotiate_encoding(
    their_headers: Headers, *, we_support_deflate: bool
) -> list[tuple[str, str]]:
    """The Content-Encoding header to add to our reply, if any.

    Per the 0.6 draft the acceptor's 200 carries Content-Encoding: deflate
    when the initiator offered Accept-Encoding: deflate, and the initiator's
    final 200 does the same for what the acceptor offered.
    """
    if we_support_deflate and _accepts_deflate(their_headers.get("Accept-Encoding")):
        return [("Content-Encoding", "deflate")]
    return []


def _accepts_deflate(value: str | None) -> bool:
    if not value:
        return False
    for item in value.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "deflate":
            continue
        name, _, q = params.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(q) > 0
            except ValueError:
                return False
        return True
    return False


def _says_deflate(value: str | None) -> bool:
    return bool(value) and any(
        item.strip().lower() == "deflate" for item in (value or "").split(",")
    )


class _State(enum.Enum):
    IDLE = "idle"  # initiator, start() not called yet
    SENT_REQUEST = "sent-request"  # initiator, awaiting the acceptor's reply
    GOT_RESPONSE = "got-response"  # initiator, must confirm() or refuse()
    AWAIT_REQUEST = "await-request"  # acceptor, awaiting CONNECT
    GOT_REQUEST = "got-request"  # acceptor, must accept() or refuse()
    SENT_RESPONSE = "sent-response"  # acceptor, awaiting the final reply
    COMPLETE = "complete"
    REFUSED = "refused"
    FAILED = "failed"


_READING = (_State.SENT_REQUEST, _State.AWAIT_REQUEST, _State.SENT_RESPONSE)

_CONNECT_LINE = re.compile(r"GNUTELLA CONNECT/(\d{1,3})\.(\d{1,3})[ \t]*")
_STATUS_LINE = re.compile(r"GNUTELLA/(\d{1,3})\.(\d{1,3})[ \t]+(\d{3})(?:[ \t]+(.*?))?[ \t]*")
_VERSION_06 = "0.6"
_VERSION_04 = "0.4"


class Handshake:
    """One side of one connection's handshake. See the module doc for the flow."""

    def __init__(self, role: Role, limits: HandshakeLimits = DEFAULT_HANDSHAKE_LIMITS) -> None:
        self.role = role
        self.limits = limits
        self._state = _State.IDLE if role is Role.INITIATOR else _State.AWAIT_REQUEST
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._block_bytes = 0
        self._header_count = 0
        self._pending: list[HandshakeEvent] = []
        self._error: ProtocolError | None = None
        self._version: str | None = None
        self._ours: list[Headers] = []
        self._theirs: list[Headers] = []
        self.result: HandshakeComplete | None = None
        self.refusal: HandshakeRefused | None = None

    # -- state ---------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._state is _State.COMPLETE

    @property
    def refused(self) -> bool:
        return self._state is _State.REFUSED

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def leftover(self) -> bytes:
        """Bytes received after the end of the handshake: the start of the message stream."""
        return bytes(self._buffer) if self._state is _State.COMPLETE else b""

    def take_leftover(self) -> bytes:
        data = self.leftover
        if self._state is _State.COMPLETE:
            self._buffer.clear()
        return data

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[HandshakeEvent]:
        if self._error is not None:
            raise self._error
        events = self._pending
        self._pending = []
        if self._state is _State.REFUSED:
            return events  # the caller is closing; what else arrives is moot
        self._buffer += data
        if self._state is _State.COMPLETE:
            return events
        try:
            events.extend(self._advance())
        except ProtocolError as error:
            self._error = error
            self._state = _State.FAILED
            self._buffer.clear()
            raise
        return events

    def _advance(self) -> list[HandshakeEvent]:
        if self._state not in _READING:
            # Awaiting our decision: the peer should be silent; keep what it
            # sends anyway (it becomes leftover) but not without bound.
            if len(self._buffer) > self.limits.max_total_bytes:
                raise ProtocolError(
                    f"peer sent {len(self._buffer)} bytes during the handshake before our reply"
                )
            return []
        lines = self._read_block()
        if lines is None:
            return []
        first = lines[0].decode("latin-1")
        headers = Headers(_parse_header_lines(lines[1:]))
        if self._state is _State.AWAIT_REQUEST:
            return [self._on_request(first, headers)]
        status, reason = _parse_status_line(first)
        self._theirs.append(headers)
        if status != 200:
            self._state = _State.REFUSED
            self._buffer.clear()
            self.refusal = HandshakeRefused(status, reason, headers, by_us=False)
            return [self.refusal]
        response = ConnectResponse(status, reason, headers)
        if self._state is _State.SENT_REQUEST:
            self._state = _State.GOT_RESPONSE
            return [response]
        return [response, self._finish()]

    def _read_block(self) -> list[bytes] | None:
        """The lines of the next complete block (up to its blank line), or None."""
        buffer = self._buffer
        limits = self.limits
        pos = 0
        while True:
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                partial = len(buffer) - pos
                if partial > limits.max_line_length:
                    raise ProtocolError(
                        f"handshake line longer than {limits.max_line_length} bytes"
                    )
                if self._block_bytes + partial > limits.max_total_bytes:
                    raise ProtocolError(
                        f"handshake block larger than {limits.max_total_bytes} bytes"
                    )
                del buffer[:pos]
                return None
            end = newline - 1 if newline > pos and buffer[newline - 1] == 0x0D else newline
            line = bytes(buffer[pos:end])
            self._block_bytes += newline + 1 - pos
            pos = newline + 1
            if len(line) > limits.max_line_length:
                raise ProtocolError(f"handshake line longer than {limits.max_line_length} bytes")
            if self._block_bytes > limits.max_total_bytes:
                raise ProtocolError(f"handshake block larger than {limits.max_total_bytes} bytes")
            if not line:
                if not self._lines:
                    raise ProtocolError("handshake block starts with an empty line")
                lines = self._lines
                self._lines = []
                self._block_bytes = 0
                self._header_count = 0
                del buffer[:pos]
                return lines
            if self._lines and line[0] not in b" \t":
                self._header_count += 1
                if self._header_count > limits.max_headers:
                    raise ProtocolError(f"more than {limits.max_headers} handshake headers")
            self._lines.append(line)

    def _on_request(self, first: str, headers: Headers) -> ConnectRequest:
        match = _CONNECT_LINE.fullmatch(first)
        if match is None:
            raise ProtocolError(f"expected 'GNUTELLA CONNECT/<version>', got {first[:80]!r}")
        version = (int(match[1]), int(match[2]))
        if version == (0, 4):
            self._version = _VERSION_04
        elif version >= (0, 6):
            # Later minor versions (0.7 was proposed) are spoken as 0.6.
            self._version = _VERSION_06
        else:
            raise ProtocolError(f"unsupported protocol version {version[0]}.{version[1]}")
        self._theirs.append(headers)
        self._state = _State.GOT_REQUEST
        return ConnectRequest(self._version, headers)

    def _finish(self) -> HandshakeComplete:
        self._state = _State.COMPLETE
        ours = _merge(self._ours)
        theirs = _merge(self._theirs)
        our_last = self._ours[-1] if self._ours else Headers()
        their_last = self._theirs[-1] if self._theirs else Headers()
        self.result = HandshakeComplete(
            version=self._version or _VERSION_06,
            our_headers=ours,
            their_headers=theirs,
            deflate_in=_says_deflate(their_last.get("Content-Encoding")),
            deflate_out=_says_deflate(our_last.get("Content-Encoding")),
        )
        return self.result

    # -- our decisions -------------------------------------------------------

    def _expect(self, role: Role, state: _State, action: str) -> None:
        if self.role is not role or self._state is not state:
            raise RuntimeError(f"cannot {action} as {self.role.value} in state {self.state}")

    def start(self, headers: Headers) -> bytes:
        """Initiator: the CONNECT block."""
        self._expect(Role.INITIATOR, _State.IDLE, "start")
        block = b"GNUTELLA CONNECT/0.6\r\n" + headers.encode() + b"\r\n"
        self._ours.append(headers)
        self._version = _VERSION_06
        self._state = _State.SENT_REQUEST
        return block

    def accept(self, headers: Headers) -> bytes:
        """Acceptor, after ConnectRequest: our 200 block (0.4: "GNUTELLA OK", and done)."""
        self._expect(Role.ACCEPTOR, _State.GOT_REQUEST, "accept")
        if self._version == _VERSION_04:
            # 0.4 has no headers and no third step.
            self._pending.append(self._finish())
            return b"GNUTELLA OK\n\n"
        block = b"GNUTELLA/0.6 200 OK\r\n" + headers.encode() + b"\r\n"
        self._ours.append(headers)
        self._state = _State.SENT_RESPONSE
        return block

    def confirm(self, headers: Headers) -> bytes:
        """Initiator, after a 200 ConnectResponse: the final 200 block; the handshake is done."""
        self._expect(Role.INITIATOR, _State.GOT_RESPONSE, "confirm")
        block = b"GNUTELLA/0.6 200 OK\r\n" + headers.encode() + b"\r\n"
        self._ours.append(headers)
        self._pending.append(self._finish())
        return block

    def refuse(self, status: int, reason: str, headers: Headers) -> bytes:
        """Either side, instead of accept()/confirm(): a non-200 block ending the handshake.

        A 0.4 servent has no way to hear a refusal: b"" is returned, just close.
        """
        if self._state not in (_State.GOT_REQUEST, _State.GOT_RESPONSE):
            raise RuntimeError(f"cannot refuse as {self.role.value} in state {self.state}")
        if not 100 <= status <= 999 or status == 200:
            raise ValueError(f"refusal status must be a 3-digit code other than 200, got {status}")
        if any(ch in reason for ch in "\r\n"):
            raise ValueError("refusal reason must be a single line")
        block = b""
        if self._version != _VERSION_04:
            block = f"GNUTELLA/0.6 {status} {reason}\r\n".encode() + headers.encode() + b"\r\n"
        self._state = _State.REFUSED
        self._buffer.clear()
        self.refusal = HandshakeRefused(status, reason, headers, by_us=True)
        self._pending.append(self.refusal)
        return block


def _merge(blocks: list[Headers]) -> Headers:
    merged = Headers()
    for block in blocks:
        merged = merged.replaced(block)
    return merged


def _parse_status_line(line: str) -> tuple[int, str]:
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"malformed handshake status line {line[:80]!r}")
    if (int(match[1]), int(match[2])) < (0, 6):
        raise ProtocolError(f"unsupported protocol version in status line {line[:80]!r}")
    return int(match[3]), match[4] or ""


def _parse_header_lines(lines: list[bytes]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for raw in lines:
        text = raw.decode("utf-8", errors="replace")
        if text[0] in " \t":
            if not pairs:
                raise ProtocolError("handshake continuation line without a header before it")
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {text.strip()}".strip())
            continue
        name, sep, value = text.partition(":")
        name = name.rstrip()
        if not sep or not name or any(ch.isspace() for ch in name):
            raise ProtocolError(f"malformed handshake header line {text[:80]!r}")
        pairs.append((name, value.strip()))
    return pairs
