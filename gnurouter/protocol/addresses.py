"""Strict readers for the values peers put in handshake headers.

Everything here takes text a remote peer chose and returns either a value
that is safe to store, log and echo back in our own headers, or None.  They
never raise: a bad value is the caller's to count and ignore, never a reason
for an exception to reach a stage.

Only IP literals are accepted from peers (gtk-gnutella's `string_to_host_addr`
does the same for Listen-IP, X-My-Address, Node and X-Try-Ultrapeers): a name
would make us resolve what a stranger chose, and anything but digits, dots,
colons and hex in a host we repeat to others is a header-injection risk.
"""

from __future__ import annotations

import ipaddress

#: "[ffff:...:ffff]:65535" is 47 characters; nothing legitimate is longer.
MAX_ENDPOINT_LENGTH = 64
#: X-Try-Ultrapeers carries ~10-30 entries in practice; more is never read.
MAX_ENDPOINTS = 64
#: User-Agent and other free text we keep for display and logs.
MAX_TEXT_LENGTH = 200

_ASCII_DIGITS = frozenset("0123456789")
_HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


def parse_int(text: str | None, low: int, high: int) -> int | None:
    """ASCII decimal digits only (no sign, no "²", no spaces inside), within [low, high]."""
    if text is None:
        return None
    text = text.strip()
    # A bound on the length keeps int() linear and refuses absurd values early.
    if not text or len(text) > len(str(high)) + 2 or not _ASCII_DIGITS.issuperset(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_port(text: str | None) -> int | None:
    """A TCP/UDP port a peer listens on: 1..65535 (0 is not a listening port)."""
    return parse_int(text, 1, 65535)


def parse_ip(text: str | None, *, allow_unspecified: bool = False) -> str | None:
    """An IPv4 or IPv6 literal (brackets allowed) in its canonical form, else None.

    Multicast addresses, and unless `allow_unspecified` (a listening address)
    the unspecified ones (0.0.0.0, ::), are refused: nobody can be reached there.
    """
    if text is None:
        return None
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text or len(text) > MAX_ENDPOINT_LENGTH or not text.isascii():
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if (address.is_unspecified and not allow_unspecified) or address.is_multicast:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None  # "fe80::1%eth0": a zone is meaningful on the sender's machine only
    return str(address)


def parse_host(text: str | None) -> str | None:
    """An IP literal (canonical form) or a DNS name of letters, digits, '-' and '.', else None.

    For hosts an operator names (configuration, the hosts file, GWebCache
    URLs); what a peer sends goes through `parse_ip` only.
    """
    ip = parse_ip(text, allow_unspecified=True)
    if ip is not None or text is None:
        return ip
    name = text.strip().rstrip(".")
    if not 0 < len(name) <= 253 or not _HOSTNAME_CHARS.issuperset(name):
        return None
    labels = name.split(".")
    if any(not 0 < len(label) <= 63 or label.startswith("-") for label in labels):
        return None
    if all(label.isdigit() for label in labels):
        return None  # "1.2.3" or "999.1.1.1": a broken IP literal, not a name
    return name.lower()


def parse_endpoint(text: str | None) -> tuple[str, int] | None:
    """'1.2.3.4:6346' or '[2001:db8::1]:6346' -> (canonical host, port), else None."""
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_ENDPOINT_LENGTH:
        return None
    host_text, sep, port_text = text.rpartition(":")
    if not sep:
        return None
    if ":" in host_text and not host_text.startswith("["):
        return None  # a bare IPv6 host is ambiguous with its port
    host = parse_ip(host_text)
    port = parse_port(port_text)
    if host is None or port is None:
        return None
    return host, port


def parse_endpoints(
    text: str | None, limit: int = MAX_ENDPOINTS
) -> tuple[list[tuple[str, int]], int]:
    """A comma-separated endpoint list -> (the good ones, up to `limit`; how many were bad).

    Entries past `limit` are not looked at (nor counted): a peer cannot make
    us spend more than `limit` parses on one header.
    """
    if not text:
        return [], 0
    found: list[tuple[str, int]] = []
    bad = 0
    for index, item in enumerate(text.split(",", limit)):
        if index >= limit:
            break
        if not item.strip():
            continue
        endpoint = parse_endpoint(item)
        if endpoint is None:
            bad += 1
        elif endpoint not in found:
            found.append(endpoint)
    return found, bad


def clean_text(text: str | None, limit: int = MAX_TEXT_LENGTH) -> str:
    """Free text (User-Agent) made safe for a log line or a page: printable, bounded."""
    if not text:
        return ""
    kept = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    return kept.strip()


def format_endpoint(address: tuple[str, int]) -> str:
    """(host, port) -> 'host:port', bracketing IPv6 hosts."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
