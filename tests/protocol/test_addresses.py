"""Property tests of the header-value readers (gnurouter.protocol.addresses).

Whatever a peer writes, they never raise, and whatever they return is safe
to store, log and repeat in our own headers: hosts are canonical IP
literals, ports are 1..65535 spelled in ASCII digits, and no returned text
holds a control character, a comma or whitespace.
"""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gnurouter.protocol.addresses import (
    MAX_ENDPOINT_LENGTH,
    MAX_ENDPOINTS,
    MAX_TEXT_LENGTH,
    clean_text,
    format_endpoint,
    parse_endpoint,
    parse_endpoints,
    parse_host,
    parse_int,
    parse_ip,
    parse_port,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ASCII_DIGITS = frozenset("0123456789")
HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")

# -- strategies ---------------------------------------------------------------

#: Characters that have broken parsers like these: digits int() takes but a
#: peer must not use ("²" is int-able in no Python, "٣" and fullwidth "3" in every one),
#: line and field separators, whitespace str.strip() removes, zone and
#: bracket syntax, signs, and a NUL.
TRICKY = (
    "0123456789abcdefABCDEF.:[]%,;-+_ /\\@#x"
    "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1c\x1d\x1e\x1f\x7f\x85\xa0"
    "\u2028\u2029\u200b\u3000\ufeff"
    "²³¹٣۳३\uff10\uff11\u0660⁰₀①ⅷ"
    "İ\u0131\u017f\u212a"  # dotless i, long s, Kelvin: lower()/upper() land in ASCII
)
tricky_text = st.text(st.sampled_from(TRICKY), max_size=60)
any_text = st.text(max_size=120)  # every code point but surrogates

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@st.composite
def host_spellings(draw: st.DrawFn) -> str:
    """An IP literal as peers may spell it: canonical or not, bracketed, padded, zoned."""
    address = draw(st.ip_addresses())
    text = str(address)
    if isinstance(address, ipaddress.IPv6Address):
        text = draw(
            st.sampled_from(
                [text, address.exploded, address.exploded.upper(), text.upper(), f"[{text}]"]
            )
        )
        if draw(st.booleans()):
            text = text.rstrip("]") + "%" + draw(st.sampled_from(["eth0", "1", "", "\r\nX: y"]))
    elif draw(st.booleans()):
        text = draw(st.sampled_from([f"[{text}]", f" {text} ", f"0{text}", text + "."]))
    return text


port_spellings = st.one_of(
    st.integers(-5, 70_000).map(str),
    st.integers(0, 65535).map(lambda p: f"00{p}"),
    st.sampled_from(
        ["", " ", "+1", "-1", "1e3", "0x10", "6346 ", " 6346", "\uff16\uff13\uff14\uff16", "²", "٣"]
    ),
    tricky_text,
)


@st.composite
def endpoint_spellings(draw: st.DrawFn) -> str:
    host = draw(st.one_of(host_spellings(), tricky_text, ipv4))
    port = draw(port_spellings)
    separator = draw(st.sampled_from([":", ":", ":", " : ", "::", ";", ""]))
    text = f"{host}{separator}{port}"
    if draw(st.integers(0, 4)) == 0:  # splice junk in somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(tricky_text) + text[at:]
    return text


hostile = st.one_of(any_text, tricky_text, endpoint_spellings())

# -- what "safe" means ----------------------------------------------------------


def assert_safe_text(text: str) -> None:
    """Nothing in it could end a header line, split a list, or hide in a log."""
    assert text
    for ch in text:
        assert ch.isprintable(), repr(text)
        assert not ch.isspace(), repr(text)
        assert ch != ",", repr(text)
    assert text.isascii(), repr(text)


def assert_canonical_ip(host: str) -> None:
    assert_safe_text(host)
    address = ipaddress.ip_address(host)  # raises if it is not an IP literal
    assert str(address) == host
    assert "%" not in host and "[" not in host
    assert not address.is_multicast


def assert_safe_endpoint(endpoint: tuple[str, int]) -> None:
    host, port = endpoint
    assert_canonical_ip(host)
    assert not ipaddress.ip_address(host).is_unspecified
    assert type(port) is int and 1 <= port <= 65535
    text = format_endpoint(endpoint)
    assert_safe_text(text)
    assert len(text) <= MAX_ENDPOINT_LENGTH
    assert parse_endpoint(text) == endpoint


# -- properties -------------------------------------------------------------------


@SETTINGS
@given(hostile, st.integers(0, 10**6), st.integers(0, 10**12))
def test_parse_int_takes_only_ascii_digits_within_bounds(text: str, low: int, span: int) -> None:
    high = low + span
    value = parse_int(text, low, high)
    if value is None:
        return
    stripped = text.strip()
    assert stripped and ASCII_DIGITS.issuperset(stripped), repr(text)
    assert type(value) is int and low <= value <= high
    assert value == int(stripped)


@SETTINGS
@given(st.one_of(hostile, port_spellings))
def test_parse_port_is_a_listening_port_in_ascii_digits(text: str) -> None:
    port = parse_port(text)
    if port is None:
        return
    assert ASCII_DIGITS.issuperset(text.strip()), repr(text)
    assert type(port) is int and 1 <= port <= 65535


@SETTINGS
@given(st.one_of(hostile, host_spellings()), st.booleans())
def test_parse_ip_returns_a_canonical_literal_or_none(text: str, unspecified: bool) -> None:
    host = parse_ip(text, allow_unspecified=unspecified)
    if host is None:
        return
    assert_canonical_ip(host)
    if not unspecified:
        assert not ipaddress.ip_address(host).is_unspecified
    # Canonical means a fixed point.
    assert parse_ip(host, allow_unspecified=unspecified) == host


@SETTINGS
@given(st.one_of(ipv4, ipv6))
def test_parse_ip_accepts_every_unicast_literal(text: str) -> None:
    address = ipaddress.ip_address(text)
    assume(not address.is_multicast)
    expected = str(address)
    assert parse_ip(text, allow_unspecified=True) == expected
    if ":" in text:
        assert parse_ip(f"[{text}]", allow_unspecified=True) == expected
        assert parse_ip(address.exploded.upper(), allow_unspecified=True) == expected


@SETTINGS
@given(st.one_of(hostile, host_spellings()))
def test_parse_host_returns_an_ip_literal_or_a_plain_dns_name(text: str) -> None:
    host = parse_host(text)
    if host is None:
        return
    assert_safe_text(host)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        assert HOSTNAME_CHARS.issuperset(host), repr(host)
        assert len(host) <= 253 and not host.endswith(".")
        assert not all(label.isdigit() for label in host.split("."))
    else:
        assert str(address) == host
    assert parse_host(host) == host


@SETTINGS
@given(hostile)
def test_parse_endpoint_returns_safe_endpoints_that_round_trip(text: str) -> None:
    endpoint = parse_endpoint(text)
    if endpoint is None:
        return
    assert_safe_endpoint(endpoint)
    # The port was written in ASCII digits (after the last colon).
    port_text = text.strip().rpartition(":")[2].strip()
    assert ASCII_DIGITS.issuperset(port_text), repr(text)


@SETTINGS
@given(st.ip_addresses(), st.integers(1, 65535))
def test_format_then_parse_is_the_identity_on_good_endpoints(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    assume(not address.is_multicast and not address.is_unspecified)
    endpoint = (str(address), port)
    assert parse_endpoint(format_endpoint(endpoint)) == endpoint
    assert_safe_endpoint(endpoint)


@st.composite
def endpoint_lists(draw: st.DrawFn) -> tuple[list[str], list[bool]]:
    """Entries (no commas inside) and whether each is good."""
    entries: list[str] = []
    good: list[bool] = []
    for _ in range(draw(st.integers(0, 70))):
        if draw(st.booleans()):
            host = draw(
                st.ip_addresses().filter(lambda a: not (a.is_multicast or a.is_unspecified))
            )
            entry = format_endpoint((str(host), draw(st.integers(1, 65535))))
            entries.append(draw(st.sampled_from([entry, f" {entry}", f"{entry}\t"])))
            good.append(True)
        else:
            entry = draw(st.one_of(tricky_text, endpoint_spellings())).replace(",", "")
            if not entry.strip():
                continue
            entries.append(entry)
            good.append(parse_endpoint(entry) is not None)
    return entries, good


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(endpoint_lists(), st.integers(1, 80))
def test_parse_endpoints_bounds_and_counts(case: tuple[list[str], list[bool]], limit: int) -> None:
    entries, good = case
    found, bad = parse_endpoints(",".join(entries), limit)
    assert len(found) <= limit and 0 <= bad <= limit
    assert len(set(found)) == len(found)
    for endpoint in found:
        assert_safe_endpoint(endpoint)
    # Only the first `limit` entries are looked at; each bad one counts once.
    looked_at = list(zip(entries, good, strict=True))[:limit]
    assert bad == sum(1 for _, ok in looked_at if not ok)
    expected: list[tuple[str, int]] = []
    for entry, ok in looked_at:
        parsed = parse_endpoint(entry)
        if ok and parsed is not None and parsed not in expected:
            expected.append(parsed)
    assert found == expected


@SETTINGS
@given(hostile, st.integers(0, 400))
def test_parse_endpoints_never_raises_on_anything(text: str, limit: int) -> None:
    found, bad = parse_endpoints(text, limit)
    assert len(found) <= limit and bad <= limit
    for endpoint in found:
        assert_safe_endpoint(endpoint)


@SETTINGS
@given(st.one_of(any_text, tricky_text), st.integers(0, 300))
def test_clean_text_is_printable_and_bounded(text: str, limit: int) -> None:
    cleaned = clean_text(text, limit)
    assert len(cleaned) <= limit
    assert all(ch.isprintable() for ch in cleaned), repr(cleaned)
    assert "\r" not in cleaned and "\n" not in cleaned
    assert cleaned == cleaned.strip()
    assert len(clean_text(text)) <= MAX_TEXT_LENGTH


@FEW
@given(
    st.sampled_from(["1", "9", ",", "1.2.3.4:6346,", "²", " ", "\r\n", "[::1]:1,", "x"]),
    st.integers(10_000, 300_000),
)
def test_huge_values_never_raise_and_stay_cheap(unit: str, repeat: int) -> None:
    text = unit * repeat
    started = time.perf_counter()
    assert parse_int(text, 0, 65535) is None or len(text.strip()) <= 7
    assert parse_port(text) is None or len(text.strip()) <= 7
    assert parse_ip(text) is None or len(text.strip()) <= MAX_ENDPOINT_LENGTH
    parse_host(text)
    assert parse_endpoint(text) is None or len(text.strip()) <= MAX_ENDPOINT_LENGTH
    found, bad = parse_endpoints(text)
    assert len(found) <= MAX_ENDPOINTS and bad <= MAX_ENDPOINTS
    assert len(clean_text(text)) <= MAX_TEXT_LENGTH
    # Linear work on a value a peer chose: well under a second even for 2 MB.
    assert time.perf_counter() - started < 2.0


def test_none_and_empty_are_refused_without_raising() -> None:
    for parse in (parse_port, parse_ip, parse_host, parse_endpoint):
        assert parse(None) is None
        assert parse("") is None
    assert parse_int(None, 0, 10) is None
    assert parse_endpoints(None) == ([], 0)
    assert parse_endpoints("") == ([], 0)
    assert clean_text(None) == ""


# -- the known attacks -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:²",  # int("²") raises; int("٣") == 3: neither is a port here
        "127.0.0.1:٣",
        "127.0.0.1:\uff16\uff13\uff14\uff16",  # fullwidth 6346
        "1.2.3.4\r\nX-Evil: 1:6346",  # header injection through the host
        "1.2.3.4:6346\r\nX-Evil: 1",  # ... or the port
        "[fe80::1%eth0]:6346",  # a zone means something on the sender's machine only
        "0.0.0.0:6346",  # nobody listens there
        "[::]:6346",
        "224.0.0.1:6346",  # multicast
        "127.0.0.1.example:6346",  # a name, which we would have to resolve
        "localhost:6346",
        "fe80::1:6346",  # bare IPv6: which colon is the port's?
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "1.2.3.4:-1",
        "1.2.3.4:+6346",
        "1.2.3.4:",
        ":6346",
        "01.2.3.4:6346",  # leading zeros read as octal by some stacks
        "1.2.3:6346",
    ],
)
def test_known_attacks_are_refused(text: str) -> None:
    assert parse_endpoint(text) is None
    found, bad = parse_endpoints(f"5.6.7.8:6346,{text}")
    assert found == [("5.6.7.8", 6346)]
    assert bad == 1


def test_known_attacks_on_single_values() -> None:
    assert parse_port("²") is None
    assert parse_port("٣") is None
    assert parse_int("٣", 0, 9) is None  # int() itself would say 3
    assert parse_port("0") is None
    assert parse_port(" 6346 ") == 6346
    assert parse_ip("fe80::1%eth0") is None
    assert parse_ip("[fe80::1%eth0]") is None
    assert parse_ip("0.0.0.0") is None
    assert parse_ip("0.0.0.0", allow_unspecified=True) == "0.0.0.0"
    assert parse_ip("1.2.3.4\r\n") == "1.2.3.4"  # surrounding whitespace is not the value
    assert parse_ip("1.2.3.4\r\nX-Evil: 1") is None
    assert parse_host("127.0.0.1.example") == "127.0.0.1.example"  # operator input only
    assert parse_host("evil\r\nX: 1.example") is None
    assert parse_host("999.1.1.1") is None


def test_good_endpoints_are_canonicalised() -> None:
    assert parse_endpoint("1.2.3.4:6346") == ("1.2.3.4", 6346)
    assert parse_endpoint(" 1.2.3.4:06346 ") == ("1.2.3.4", 6346)
    assert parse_endpoint("[fe80::1]:6346") == ("fe80::1", 6346)
    assert parse_endpoint("[FE80:0:0:0:0:0:0:1]:6346") == ("fe80::1", 6346)
    assert format_endpoint(("fe80::1", 6346)) == "[fe80::1]:6346"
    assert parse_endpoints("1.2.3.4:1, 1.2.3.4:1 ,bad,,[::1]:2") == (
        [("1.2.3.4", 1), ("::1", 2)],
        1,
    )


def test_parse_endpoints_limit_bounds_the_work() -> None:
    assert parse_endpoints("x," * 1_000_000) == ([], MAX_ENDPOINTS)
    found, bad = parse_endpoints(",".join(f"10.0.{i // 256}.{i % 256}:1" for i in range(500)))
    assert len(found) == MAX_ENDPOINTS and bad == 0
    assert parse_endpoints("1.1.1.1:1,x,y", limit=1) == ([("1.1.1.1", 1)], 0)


def test_clean_text_examples() -> None:
    assert clean_text("gtk-gnutella/1.2.2 (Linux)") == "gtk-gnutella/1.2.2 (Linux)"
    assert clean_text("a\r\nX-Evil: 1") == "a??X-Evil: 1"
    assert clean_text("\x1b[31mred\x1b[0m") == "?[31mred?[0m"
    assert clean_text("x" * 1000) == "x" * MAX_TEXT_LENGTH
    assert clean_text("  padded  ") == "padded"
