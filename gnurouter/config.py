"""Router configuration: one dataclass, filled from defaults, a TOML file, then the command line.

Every option has the same name in both places (`--max-peers` on the command
line, `max_peers` in the file).  Validation lives here so that the CLI, the
config file and the control API refuse the same bad values with the same words.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnurouter.protocol.addresses import parse_host, parse_int
from gnurouter.protocol.deflate import DEFAULT_INFLATE_LIMITS
from gnurouter.protocol.framer import DEFAULT_PAYLOAD_LIMITS, PayloadLimits
from gnurouter.protocol.qrp import DEFAULT_QRP_LIMITS

#: Load-conditioning policies, each switchable on its own (see gnurouter/conditioning/).
POLICIES = (
    "priority",
    "threshold",
    "clogged",
    "query-filter",
    "governor",
    "codel",
    "response-time",
)
DEFAULT_POLICIES = frozenset(
    {"priority", "threshold", "clogged", "query-filter", "governor", "codel"}
)
#: Which query the query filter sheds when one must: the one that has travelled
#: furthest (its sender is furthest away and likely has other paths), the
#: oldest (least likely to still matter), or the newcomer (plain drop-tail).
SHED_ORDERS = ("highest-hops", "oldest", "newest")


class ConfigError(ValueError):
    """A configuration value is unusable; the message says which and why."""


def parse_policies(text: str) -> frozenset[str]:
    """'default', 'none', 'all', or a comma-separated list of policy names."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if words == ["default"]:
        return DEFAULT_POLICIES
    if words in (["none"], []):
        return frozenset()
    if words == ["all"]:
        return frozenset(POLICIES)
    unknown = [word for word in words if word not in POLICIES]
    if unknown:
        raise ConfigError(
            f"conditioning: unknown policy {unknown[0]!r}; expected default, none, all "
            f"or a comma-separated list of {', '.join(POLICIES)}"
        )
    return frozenset(words)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str | float | int, *, name: str = "duration") -> float:
    """'20ms', '2s', '5m', '1h' or a bare number of seconds -> seconds."""
    if isinstance(text, bool):
        raise ConfigError(f"{name}: expected a duration like 20ms or 2s, got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ConfigError(f"{name}: expected a duration like 20ms, 2s or 5m, got {text!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    # NaN slips through a check like `x < 0` (every comparison with it is
    # false), and a 400-digit number is inf: neither is a duration.
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{name}: expected a finite, non-negative duration, got {text!r}")
    return seconds


def parse_address(text: str, *, name: str = "address") -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port); HOST is an IP literal or a DNS name."""
    host_text, sep, port_text = text.rpartition(":")
    if not sep or not host_text:
        raise ConfigError(f"{name}: expected HOST:PORT, got {text!r}")
    port = parse_int(port_text, 0, 65535)
    if port is None:
        raise ConfigError(f"{name}: port must be a number from 0 to 65535, got {port_text!r}")
    host = parse_host(host_text)
    if host is None:
        raise ConfigError(f"{name}: {host_text!r} is neither an IP address nor a host name")
    return host, port


MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (the control endpoint's safe default).

    Decided by `ipaddress`, never by a string prefix: "127.0.0.1.example.com" is a
    DNS name its owner points anywhere.  "localhost" is the one name taken on trust.
    """
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    # ::ffff:127.0.0.1 is IPv4 loopback seen through a dual-stack socket, but
    # Python < 3.13 calls it not loopback.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


#: Kinds whose values are numbers with a range.
NUMERIC_KINDS = ("int", "float", "duration")


def format_duration(seconds: float) -> str:
    """Seconds in the shortest spelling `parse_duration` reads back: 0.02 -> '20ms'."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds == 0:
        return "0s"
    milliseconds = seconds * 1000.0
    return f"{milliseconds:g}ms" if seconds < 1 else f"{seconds:g}s"


@dataclass(frozen=True)
class Setting:
    """What one option may hold, declared once beside its default.

    The config file, the command line (its options and their help are made
    from these) and the control API (its ranges and words) all read this one
    declaration, so a range or a default can never differ between them.
    """

    kind: str  # a NUMERIC_KIND, or bool, choice, str, path, address, addresses, urls, table
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    #: The command-line spelling when it is not --the-name (e.g. --no-deflate), or
    #: None with `on_command_line` False for file-only tables.
    flag: str | None = None
    #: What a negating `flag` does, when `help` describes the setting itself.
    flag_help: str = ""
    on_command_line: bool = True

    def bounds(self) -> str:
        if self.kind == "duration":
            return f"{format_duration(self.low or 0.0)}..{format_duration(self.high or 0.0)}"
        return f"{_number(self.low)}..{_number(self.high)}"

    def check(self, name: str, value: object) -> None:
        """Raise ConfigError unless `value` (already of the setting's type) is allowed."""
        if value is None and self.nullable:
            return
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(
                    f"{name}: expected one of {', '.join(self.choices)}, got {value!r}"
                )
            return
        if self.kind not in NUMERIC_KINDS:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"{name}: expected {_ARTICLE[self.kind]} in {self.bounds()}, got {value!r}"
            )
        if self.kind == "int" and not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer in {self.bounds()}, got {value!r}")
        # `not low <= x <= high` is also true for NaN, which compares false with everything.
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            shown = format_duration(value) if self.kind == "duration" and value >= 0 else value
            raise ConfigError(f"{name}: {shown} is outside the allowed range {self.bounds()}")

    def from_text(self, name: str, text: str) -> object:
        """A command-line word as the config file would hold it (numbers parsed, strictly)."""
        if self.nullable and text.strip().lower() in ("none", "null"):
            return None
        if self.kind == "int":
            number = parse_int(text.strip(), -(1 << 62), 1 << 62)
            if number is None:
                raise ConfigError(f"{name}: expected an integer in {self.bounds()}, got {text!r}")
            return number
        if self.kind == "float":
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{name}: expected a number, got {text!r}") from None
            if not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {text!r}")
            return value
        return text


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_ARTICLE = {"int": "an integer", "float": "a number", "duration": "a duration"}


def setting(default: Any = dataclasses.MISSING, *, factory: Any = None, **declaration: Any) -> Any:
    """A RouterConfig field with its `Setting` (see there) in the field's metadata."""
    metadata = {"setting": Setting(**declaration)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _count(low: int, high: int, help: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "int", "low": low, "high": high, "help": help, **extra}


def _seconds(low: float, high: float, help: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "duration", "low": low, "high": high, "help": help, **extra}


#: The QRP table sizes a neighbour may be allowed: powers of two, 8192..2^24.
QRP_TABLE_SIZES = tuple(1 << bits for bits in range(13, 25))
LOG_LEVELS = ("debug", "info", "warning", "error")
PING_MODES = ("cache", "flood")
STAGES = ("reader", "parser", "router", "connection", "catcher", "udp")
# A stage threshold from the config file: the same range as the control API's
# stage.NAME.threshold parameters.
STAGE_THRESHOLD = Setting(
    "int", "queue length above which new events are refused", 1, 10_000_000, nullable=True
)


@dataclass
class RouterConfig:
    """Every option of a router: its default, and (in `Setting`) its range and words."""

    listen: tuple[str, int] = setting(
        ("127.0.0.1", 6346), kind="address", help="address to accept peers on"
    )
    peers: list[tuple[str, int]] = setting(
        factory=list,
        kind="addresses",
        flag="--peer",
        help="a servent to stay connected to (repeatable)",
    )
    max_peers: int = setting(62, **_count(1, 10_000, "most neighbours at once, of any role"))
    max_ultrapeers: int = setting(
        32,
        **_count(
            0,
            10_000,
            "ultrapeer (and old-style) slots; also the X-Degree new handshakes advertise",
        ),
    )
    max_leaves: int = setting(30, **_count(0, 10_000, "leaf slots"))
    target_peers: int = setting(
        8, **_count(0, 10_000, "ultrapeer links the catcher keeps up (connecting out as needed)")
    )
    accept_legacy_peers: bool = setting(
        True,
        kind="bool",
        flag="--refuse-legacy-peers",
        help="accept servents that send no X-Ultrapeer header (as ultrapeers)",
        flag_help="refuse servents that send no X-Ultrapeer header (accepted as ultrapeers "
        "by default)",
    )
    hosts_file: str | None = setting(
        None,
        kind="path",
        nullable=True,
        help="host cache file (HOST:PORT [key=value...] per line): loaded at start, "
        "saved every --hosts-save-interval and on exit",
    )
    hosts_save_interval: float = setting(300.0, **_seconds(1.0, 86_400.0, "host cache saves"))
    bootstrap: list[str] = setting(
        factory=list,
        kind="urls",
        help="a GWebCache to ask for hosts when the host cache runs dry (repeatable)",
    )
    bootstrap_enabled: bool = setting(
        True,
        kind="bool",
        flag="--no-bootstrap",
        help="ask UDP host caches, then GWebCaches, for hosts when the host cache runs dry",
        flag_help="never ask UDP host caches or GWebCaches (no host cache ping, no HTTP "
        "request at all): for closed networks",
    )
    # UDP on the Gnutella port (gnurouter/mesh/udp.py, gnurouter/mesh/uhc.py)
    uhc: list[tuple[str, int]] = setting(
        factory=list,
        kind="addresses",
        help="a UDP host cache to ask for hosts (before any GWebCache) when the host cache "
        "runs dry (repeatable)",
    )
    udp: bool = setting(
        True,
        kind="bool",
        flag="--no-udp",
        help="answer UDP pings on the Gnutella port and ping UDP host caches",
        flag_help="open no UDP socket (no UDP pings answered, no UDP host cache asked)",
    )
    # gtk-gnutella answers one UDP ping per minute per address (pcache.c UDP_PING_FREQ).
    udp_rate_per_source: float = setting(
        1 / 60,
        kind="float",
        low=0.0001,
        high=1_000_000.0,
        help="UDP pings answered per second per source address",
    )
    udp_burst_per_source: int = setting(
        4, **_count(1, 1_000_000, "UDP pings one address may have answered at once")
    )
    udp_rate: float = setting(
        100.0,
        kind="float",
        low=0.01,
        high=1_000_000.0,
        help="UDP pings answered per second from all addresses together",
    )
    udp_burst: int = setting(
        200, **_count(1, 10_000_000, "UDP pings answered at once from all addresses together")
    )
    user_agent: str = setting("gnurouter/0.1", kind="str", help="User-Agent header value")
    ultrapeer: bool = setting(True, kind="bool", help="act as an ultrapeer (leaves may connect)")
    deflate: bool = setting(
        True,
        kind="bool",
        flag="--no-deflate",
        help="offer and accept deflate-compressed links",
        flag_help="refuse deflate links",
    )
    flood_tableless_leaves: bool = setting(
        False,
        kind="bool",
        help="a leaf without a QRP table gets every query (else none during "
        "tableless_leaf_grace, then those at their last hop)",
    )
    tableless_leaf_grace: float = setting(
        20.0,
        **_seconds(
            0.0, 3600.0, "a leaf without a QRP table gets no query this long after it joined"
        ),
    )
    dynamic_querying: bool = setting(
        True,
        kind="bool",
        flag="--no-dynamic-querying",
        help="run leaves' queries a few ultrapeers at a time (X-Dynamic-Querying)",
        flag_help="flood leaves' queries at their TTL (and do not say X-Dynamic-Querying)",
    )
    dq_probe_ultrapeers: int = setting(
        3, **_count(1, 100, "dynamic querying: ultrapeers the first probe goes to")
    )
    dq_round_interval: float = setting(
        3.7, **_seconds(0.05, 600.0, "dynamic querying: time between rounds")
    )
    dq_lifetime: float = setting(
        600.0, **_seconds(1.0, 86_400.0, "dynamic querying: longest a leaf's query runs")
    )
    hops_flow: bool = setting(
        True,
        kind="bool",
        flag="--no-hops-flow",
        help="send Hops-Flow to the neighbours feeding the most queries while overloaded",
        flag_help="never send Hops-Flow",
    )
    hops_flow_delay_target: float = setting(
        0.100,
        **_seconds(0.001, 60.0, "Hops-Flow: router-stage queueing delay (p90) that means overload"),
    )
    hops_flow_hold: float = setting(
        2.0, **_seconds(0.1, 600.0, "Hops-Flow: how long overload or recovery lasts before a step")
    )
    hops_flow_neighbours: int = setting(
        3, **_count(1, 10_000, "Hops-Flow: neighbours limited at each step (biggest feeders)")
    )
    qrp_update_interval: float = setting(
        300.0, **_seconds(1.0, 86_400.0, "least time between QRP updates to one ultrapeer")
    )
    # Routing
    max_ttl: int = setting(7, **_count(1, 15, "clamp hops+TTL of relayed messages to this"))
    route_ttl: float = setting(600.0, **_seconds(1.0, 86_400.0, "how long routes live"))
    route_table_max: int = setting(200_000, **_count(16, 10_000_000, "most routes kept"))
    route_cleanup_interval: float = setting(
        10.0, **_seconds(0.1, 3600.0, "how often expired routes are swept")
    )
    ping_mode: str = setting(
        "cache",
        kind="choice",
        choices=PING_MODES,
        help="answer pings from the pong cache, or flood them like the original",
    )
    ping_refresh_interval: float = setting(
        5.0, **_seconds(0.1, 3600.0, "how often the pong cache pings its neighbours")
    )
    pong_cache_size: int = setting(50, **_count(0, 10_000, "pongs the pong cache keeps"))
    pongs_per_ping: int = setting(10, **_count(0, 1000, "cached pongs sent back per ping"))
    ping_rate_per_peer: float = setting(
        1.0,
        kind="float",
        low=0.001,
        high=1_000_000.0,
        help="pings per second one peer may have answered or relayed",
    )
    ping_burst_per_peer: int = setting(
        5, **_count(1, 1_000_000, "pings one peer may send at once above that rate")
    )
    # Hostile peers (reasons in docs/security.md and the named classes).
    ping_flood_refusals: int = setting(
        1000,
        **_count(
            0,
            100_000_000,
            "refused pings within --ping-flood-window that cut a peer off; 0 = never",
        ),
    )
    ping_flood_window: float = setting(
        10.0, **_seconds(0.1, 3600.0, "the window --ping-flood-refusals counts in")
    )
    # Control messages (never displaced at the router stage) per link: a
    # token bucket in the parser; past twice the burst refused, Bye 400.
    control_rate_per_peer: float = setting(
        1000.0,
        kind="float",
        low=0.0,
        high=10_000_000.0,
        help="control messages (pongs, hops-0 pings, QRP, vendor, Bye) per second a link "
        "may send; 0 = unbounded",
    )
    control_burst_per_peer: int = setting(
        500, **_count(1, 10_000_000, "control messages a link may send at once above that rate")
    )
    route_share_max: float = setting(
        0.25,
        kind="float",
        low=0.01,
        high=1.0,
        help="largest share of a full route table one peer may own (see RouteTable)",
    )
    # The protocol's limits own these defaults (reasons there).
    qrp_max_slots: int = setting(
        DEFAULT_QRP_LIMITS.max_slots,
        **_count(
            QRP_TABLE_SIZES[0],
            QRP_TABLE_SIZES[-1],
            "largest QRP table a neighbour may send, in slots (a power of two)",
        ),
    )
    inflate_max_ratio: float = setting(
        DEFAULT_INFLATE_LIMITS.max_ratio,
        kind="float",
        low=1.0,
        high=100_000.0,
        help="most inflated bytes per compressed byte on a deflate link",
    )
    inflate_max_rate: int = setting(
        int(DEFAULT_INFLATE_LIMITS.max_rate),
        **_count(1024 * 1024, 1 << 34, "most inflated bytes per second on one link"),
    )
    max_malformed_per_peer: int = setting(
        50, **_count(1, 1_000_000, "malformed messages after which a peer is cut off")
    )
    keepalive_interval: float = setting(30.0, **_seconds(1.0, 3600.0, "ping neighbours this often"))
    handshake_timeout: float = setting(
        20.0,
        **_seconds(0.1, 600.0, "close a socket that has not finished its handshake by then"),
    )
    # Sockets still shaking hands: a pool of their own, never peer slots.
    max_handshakes: int = setting(
        256, **_count(1, 100_000, "incoming sockets shaking hands at once, apart from peer slots")
    )
    max_handshakes_per_address: int = setting(
        16, **_count(1, 100_000, "of those, from any one IP address")
    )
    # None: room for every peer slot and handshake at once (edge/children.py
    # accept_backlog); the kernel caps it at net.core.somaxconn.
    listen_backlog: int | None = setting(
        None,
        **_count(
            1,
            65_535,
            "connections the kernel holds for us until accepted (default: max peers + handshakes)",
            nullable=True,
        ),
    )
    # As gtk-gnutella does after node_tx_flowc_timeout (60 s).
    flow_control_timeout: float = setting(
        60.0,
        **_seconds(
            1.0, 3600.0, "close (Bye 405) a neighbour whose socket has taken nothing this long"
        ),
    )
    # Stages
    query_delay: float = setting(
        0.0,
        **_seconds(
            0.0,
            10.0,
            "block the router stage this long per query, e.g. 20ms "
            "(the SEDA experiment's bottleneck)",
        ),
    )
    router_threads: int = setting(1, **_count(1, 64, "threads of the router stage"))
    batch_size: int = setting(64, **_count(1, 10_000, "events handed to a handler per call"))
    reader_pause_length: int = setting(
        2000, **_count(1, 10_000_000, "reader/parser backlog at which sockets stop being read")
    )
    conditioning: str = setting(
        "default",
        kind="policies",
        help="load-conditioning policies: 'default' (priority,threshold,clogged,query-filter,"
        "governor,codel), 'none' (one thread, unbounded FIFO queues: the original's "
        "collapse), 'all', or a comma-separated list of " + ", ".join(POLICIES),
    )
    stage_thresholds: dict[str, int | None] = setting(
        factory=dict,
        kind="table",
        on_command_line=False,
        help="refusal threshold per stage ([router.stage_thresholds] table; 0 = unbounded)",
    )
    peer_output_max_bytes: int = setting(
        256 * 1024, **_count(1024, 1 << 30, "bytes a clogged peer may have queued")
    )
    peer_output_max_messages: int = setting(
        2000, **_count(1, 1_000_000, "messages a clogged peer may have queued")
    )
    query_max_queued: int | None = setting(
        200,
        **_count(
            1, 10_000_000, "query filter: queries that may wait at the router stage", nullable=True
        ),
    )
    query_rate: float | None = setting(
        None,
        kind="float",
        low=0.1,
        high=1_000_000.0,
        nullable=True,
        help="query filter: queries admitted per second (none: no rate limit)",
    )
    query_shed_order: str = setting(
        "highest-hops",
        kind="choice",
        choices=SHED_ORDERS,
        help="query filter: which query is shed first when the queue is full",
    )
    governor_interval: float = setting(
        2.0, **_seconds(0.1, 60.0, "thread governor sampling period")
    )
    governor_add_threshold: int = setting(
        100, **_count(1, 10_000_000, "router queue length at which the governor adds a thread")
    )
    governor_max_threads: int = setting(
        10, **_count(1, 64, "most threads the governor gives the router stage")
    )
    # Three: a burst of ten messages at a 15% query share brings three or
    # fewer queries 95% of the time, and each gets a thread of its own.
    governor_min_threads: int = setting(
        3, **_count(1, 64, "fewest threads the governor leaves the router stage")
    )
    codel_target: float = setting(
        0.005, **_seconds(0.0001, 10.0, "CoDel: acceptable standing queueing delay")
    )
    codel_interval: float = setting(
        0.100,
        **_seconds(0.001, 60.0, "CoDel: how long delay may stay above target before dropping"),
    )
    response_target: float = setting(
        0.100, **_seconds(0.001, 60.0, "response-time controller: query response-time target")
    )
    # Packet log
    packet_log: str | None = setting(
        None, kind="path", nullable=True, help="write the packet log here (rotating)"
    )
    packet_log_max_bytes: int = setting(
        10 * 1024 * 1024, **_count(4096, 1 << 40, "rotate the packet log at this size")
    )
    packet_log_backups: int = setting(5, **_count(0, 1000, "rotated packet logs kept"))
    # Trace recording: every message received, with connection events (gnurouter.traces)
    record: str | None = setting(
        None,
        kind="path",
        nullable=True,
        help="record every message the router receives, with connection opens and closes, "
        "to this trace file (.gz: gzipped); bounded memory, never blocks routing",
    )
    # Protocol limits
    payload_limits: PayloadLimits = setting(
        DEFAULT_PAYLOAD_LIMITS,
        kind="table",
        on_command_line=False,
        help="largest payload per message type ([router.payload_limits] table, bytes)",
    )
    # Control and observation
    control_listen: tuple[str, int] | None = setting(
        None,
        kind="address",
        nullable=True,
        flag="--control",
        help="serve metrics and the control API (HTTP+JSON) here, e.g. 127.0.0.1:6347",
    )
    control_token: str | None = setting(
        None,
        kind="str",
        nullable=True,
        help="require 'Authorization: Bearer TOKEN' on the control endpoint "
        "(prefer the GNUROUTER_CONTROL_TOKEN environment variable: arguments show in ps)",
    )
    log_level: str = setting(
        "info", kind="choice", choices=LOG_LEVELS, help="least severity of log lines shown"
    )

    @staticmethod
    def setting(name: str) -> Setting:
        """The declaration of option `name` (KeyError for an unknown one)."""
        return _SETTINGS[name]

    def validate(self) -> RouterConfig:
        for name, declared in _SETTINGS.items():
            declared.check(name, getattr(self, name))
        if self.target_peers > self.max_peers:
            raise ConfigError(
                f"target_peers ({self.target_peers}) cannot exceed max_peers ({self.max_peers})"
            )
        if self.target_peers > self.max_ultrapeers:
            raise ConfigError(
                f"target_peers ({self.target_peers}) cannot exceed max_ultrapeers "
                f"({self.max_ultrapeers})"
            )
        for host, port in self.uhc:
            if port == 0:
                raise ConfigError(f"uhc: {host}:0 has no port; expected HOST:PORT")
        for url in self.bootstrap:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ConfigError(f"bootstrap: expected an http:// or https:// URL, got {url!r}")
        if self.qrp_max_slots not in QRP_TABLE_SIZES:
            raise ConfigError(
                f"qrp_max_slots: {self.qrp_max_slots} is not a power of two from 8192 to 2^24"
            )
        parse_policies(self.conditioning)
        if self.governor_min_threads > self.governor_max_threads:
            raise ConfigError(
                f"governor_min_threads ({self.governor_min_threads}) cannot exceed "
                f"governor_max_threads ({self.governor_max_threads})"
            )
        if self.control_token is not None and len(self.control_token) < MIN_TOKEN_LENGTH:
            raise ConfigError(f"control_token: use at least {MIN_TOKEN_LENGTH} characters")
        if (
            self.control_listen is not None
            and self.control_token is None
            and not is_loopback(self.control_listen[0])
        ):
            raise ConfigError(
                f"control_listen: {self.control_listen[0]} is not loopback; "
                "a control token (--control-token or GNUROUTER_CONTROL_TOKEN) is required"
            )
        for stage, threshold in self.stage_thresholds.items():
            if stage not in STAGES:
                raise ConfigError(f"stage_thresholds: unknown stage {stage!r}")
            STAGE_THRESHOLD.check(f"stage_thresholds.{stage}", threshold)
        return self


_SETTINGS: dict[str, Setting] = {
    f.name: f.metadata["setting"] for f in dataclasses.fields(RouterConfig)
}
_FIELD_TYPES = {f.name: f for f in dataclasses.fields(RouterConfig)}


def _coerce(name: str, value: Any) -> Any:
    kind = _SETTINGS[name].kind
    if value is None and _SETTINGS[name].nullable:
        return None
    if kind == "duration":
        return parse_duration(value, name=name)
    if kind == "address":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected 'HOST:PORT', got {value!r}")
        return parse_address(value, name=name)
    if kind == "addresses":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of 'HOST:PORT' strings")
        return [parse_address(v, name=name) for v in value]
    if kind == "urls":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of URLs")
        return list(value)
    if name == "payload_limits":
        if not isinstance(value, Mapping):
            raise ConfigError("payload_limits: expected a table of type = bytes")
        try:
            return PayloadLimits.from_mapping(value)
        except ValueError as error:
            raise ConfigError(f"payload_limits: {error}") from error
    if name == "stage_thresholds":
        if not isinstance(value, Mapping):
            raise ConfigError("stage_thresholds: expected a table of stage = length")
        return {str(k): (None if v in (0, "none") else v) for k, v in value.items()}
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if kind in ("str", "path", "choice", "policies") and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if kind == "float":
        return float(value)
    return value


def config_from_mapping(
    values: Mapping[str, Any], base: RouterConfig | None = None
) -> RouterConfig:
    """Apply `values` (file keys, dashes or underscores) over `base`; unknown keys are errors."""
    config = base if base is not None else RouterConfig()
    changes: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = raw_name.replace("-", "_")
        if name not in _FIELD_TYPES:
            raise unknown_option(raw_name)
        changes[name] = _coerce(name, value)
    return dataclasses.replace(config, **changes).validate()


def unknown_option(raw_name: str, where: str = "") -> ConfigError:
    """The error for an option that does not exist, with the likely one it was meant to be."""
    likely = difflib.get_close_matches(raw_name.replace("-", "_"), _FIELD_TYPES, n=1)
    hint = f" (did you mean {likely[0]!r}?)" if likely else ""
    return ConfigError(f"{where}unknown option {raw_name!r}{hint}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; its `[router]` table, or the top level if there is none."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    router = data.get("router", data)
    if not isinstance(router, dict):
        raise ConfigError(f"config file {path}: [router] must be a table")
    for key in router:
        if key.replace("-", "_") not in _FIELD_TYPES:
            raise unknown_option(key, f"config file {path}: ")
    return router
