"""Router configuration: one dataclass, filled from defaults, a TOML file, then the command line.

Every option has the same name in both places (`--max-peers` on the command
line, `max_peers` in the file).  Validation lives here so that the CLI, the
config file and the control API refuse the same bad values with the same words.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def check(self, name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"{name}: expected an integer in {self.low}..{self.high}, got {value!r}"
            )
        if not self.low <= value <= self.high:
            raise ConfigError(
                f"{name}: {value} is outside the allowed range {self.low}..{self.high}"
            )
        return value


@dataclass
class RouterConfig:
    listen: tuple[str, int] = ("127.0.0.1", 6346)
    peers: list[tuple[str, int]] = field(default_factory=list)
    max_peers: int = 62  # every neighbour, of any role
    max_ultrapeers: int = 32  # ultrapeer (and legacy) neighbours; also our X-Degree
    max_leaves: int = 30
    target_peers: int = 8  # ultrapeer links the catcher keeps up (connecting out)
    accept_legacy_peers: bool = True  # servents that send no X-Ultrapeer (0.4, early 0.6)
    hosts_file: str | None = None
    hosts_save_interval: float = 300.0
    bootstrap: list[str] = field(default_factory=list)  # GWebCache URLs
    bootstrap_enabled: bool = True  # --no-bootstrap: never any HTTP request
    user_agent: str = "gnurouter/0.1"
    ultrapeer: bool = True
    deflate: bool = True
    flood_tableless_leaves: bool = True
    qrp_update_interval: float = 300.0
    # Routing
    max_ttl: int = 7
    route_ttl: float = 600.0
    route_table_max: int = 200_000
    route_cleanup_interval: float = 10.0
    ping_mode: str = "cache"
    ping_refresh_interval: float = 5.0
    pong_cache_size: int = 50
    pongs_per_ping: int = 10
    ping_rate_per_peer: float = 1.0
    ping_burst_per_peer: int = 5
    # Hostile peers (reasons in docs/security.md and the named classes).
    ping_flood_refusals: int = 1000  # refused pings in ping_flood_window that cut a peer off
    # Control messages (never displaced at the router stage) per link: a
    # token bucket in the parser; past twice the burst refused, Bye 400.
    control_rate_per_peer: float = 1000.0  # 0 = unbounded
    control_burst_per_peer: int = 500
    ping_flood_window: float = 10.0
    route_share_max: float = 0.25  # of a full route table, per peer (RouteTable)
    # The protocol's limits own these defaults (reasons there).
    qrp_max_slots: int = DEFAULT_QRP_LIMITS.max_slots
    inflate_max_ratio: float = DEFAULT_INFLATE_LIMITS.max_ratio  # inflated / compressed
    inflate_max_rate: int = int(DEFAULT_INFLATE_LIMITS.max_rate)  # inflated bytes/s per link
    max_malformed_per_peer: int = 50
    keepalive_interval: float = 30.0
    handshake_timeout: float = 20.0
    # Sockets still shaking hands: a pool of their own, never peer slots.
    max_handshakes: int = 256
    max_handshakes_per_address: int = 16
    # A neighbour whose socket takes nothing for this long is closed (Bye 405),
    # as gtk-gnutella does after node_tx_flowc_timeout (60 s).
    flow_control_timeout: float = 60.0
    # Stages
    query_delay: float = 0.0
    router_threads: int = 1
    batch_size: int = 64
    reader_pause_length: int = 2000
    conditioning: str = "default"
    stage_thresholds: dict[str, int | None] = field(default_factory=dict)
    peer_output_max_bytes: int = 256 * 1024
    peer_output_max_messages: int = 2000
    query_max_queued: int | None = 200
    query_rate: float | None = None
    query_shed_order: str = "highest-hops"
    governor_interval: float = 2.0
    governor_add_threshold: int = 100
    governor_max_threads: int = 10
    # Three: a burst of ten messages at a 15% query share brings three or
    # fewer queries 95% of the time, and each gets a thread of its own.
    governor_min_threads: int = 3
    codel_target: float = 0.005
    codel_interval: float = 0.100
    response_target: float = 0.100
    # Packet log
    packet_log: str | None = None
    packet_log_max_bytes: int = 10 * 1024 * 1024
    packet_log_backups: int = 5
    # Trace recording: every message received, with connection events (gnurouter.traces)
    record: str | None = None
    # Protocol limits
    payload_limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS
    # Control and observation
    control_listen: tuple[str, int] | None = None
    control_token: str | None = None  # Bearer token the control endpoint requires
    log_level: str = "info"

    def validate(self) -> RouterConfig:
        IntRange(1, 10_000).check("max_peers", self.max_peers)
        IntRange(0, 10_000).check("max_ultrapeers", self.max_ultrapeers)
        IntRange(0, 10_000).check("max_leaves", self.max_leaves)
        IntRange(0, 10_000).check("target_peers", self.target_peers)
        if self.target_peers > self.max_peers:
            raise ConfigError(
                f"target_peers ({self.target_peers}) cannot exceed max_peers ({self.max_peers})"
            )
        if self.target_peers > self.max_ultrapeers:
            raise ConfigError(
                f"target_peers ({self.target_peers}) cannot exceed max_ultrapeers "
                f"({self.max_ultrapeers})"
            )
        for url in self.bootstrap:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ConfigError(f"bootstrap: expected an http:// or https:// URL, got {url!r}")
        if not 1.0 <= self.hosts_save_interval <= 86_400.0:
            raise ConfigError(
                f"hosts_save_interval: {self.hosts_save_interval}s is outside 1s..24h"
            )
        if not 1.0 <= self.qrp_update_interval <= 86_400.0:
            raise ConfigError(
                f"qrp_update_interval: {self.qrp_update_interval}s is outside 1s..24h"
            )
        IntRange(1, 15).check("max_ttl", self.max_ttl)
        IntRange(16, 10_000_000).check("route_table_max", self.route_table_max)
        IntRange(1, 64).check("router_threads", self.router_threads)
        IntRange(1, 10_000).check("batch_size", self.batch_size)
        IntRange(1, 10_000_000).check("reader_pause_length", self.reader_pause_length)
        IntRange(0, 10_000).check("pong_cache_size", self.pong_cache_size)
        IntRange(0, 1000).check("pongs_per_ping", self.pongs_per_ping)
        IntRange(1, 1_000_000).check("ping_burst_per_peer", self.ping_burst_per_peer)
        IntRange(1, 1_000_000).check("max_malformed_per_peer", self.max_malformed_per_peer)
        IntRange(1024, 1 << 30).check("peer_output_max_bytes", self.peer_output_max_bytes)
        IntRange(4096, 1 << 40).check("packet_log_max_bytes", self.packet_log_max_bytes)
        IntRange(0, 1000).check("packet_log_backups", self.packet_log_backups)
        if not 1.0 <= self.route_ttl <= 86_400.0:
            raise ConfigError(f"route_ttl: {self.route_ttl}s is outside 1s..24h")
        if not 0.1 <= self.route_cleanup_interval <= 3600.0:
            raise ConfigError("route_cleanup_interval must be within 100ms..1h")
        if not 0.0 <= self.query_delay <= 10.0:
            raise ConfigError(f"query_delay: {self.query_delay}s is outside 0..10s")
        if not self.ping_rate_per_peer > 0:  # NaN too
            raise ConfigError("ping_rate_per_peer must be positive")
        if self.keepalive_interval < 1.0:
            raise ConfigError("keepalive_interval must be at least 1s")
        if not 0.1 <= self.handshake_timeout <= 600.0:
            raise ConfigError(f"handshake_timeout: {self.handshake_timeout}s is outside 100ms..10m")
        IntRange(0, 100_000_000).check("ping_flood_refusals", self.ping_flood_refusals)
        if not 0.0 <= self.control_rate_per_peer <= 10_000_000.0:  # NaN fails too
            raise ConfigError(
                f"control_rate_per_peer: {self.control_rate_per_peer}/s is outside 0..10000000"
            )
        IntRange(1, 10_000_000).check("control_burst_per_peer", self.control_burst_per_peer)
        if not 0.1 <= self.ping_flood_window <= 3600.0:
            raise ConfigError(f"ping_flood_window: {self.ping_flood_window}s is outside 100ms..1h")
        if not 0.01 <= self.route_share_max <= 1.0:  # NaN fails too
            raise ConfigError(f"route_share_max: {self.route_share_max} is outside 0.01..1")
        if self.qrp_max_slots not in [1 << bits for bits in range(13, 25)]:
            raise ConfigError(
                f"qrp_max_slots: {self.qrp_max_slots} is not a power of two from 8192 to 2^24"
            )
        if not 1.0 <= self.inflate_max_ratio <= 100_000.0:
            raise ConfigError(f"inflate_max_ratio: {self.inflate_max_ratio} is outside 1..100000")
        IntRange(1024 * 1024, 1 << 34).check("inflate_max_rate", self.inflate_max_rate)
        IntRange(1, 100_000).check("max_handshakes", self.max_handshakes)
        IntRange(1, 100_000).check("max_handshakes_per_address", self.max_handshakes_per_address)
        if not 1.0 <= self.flow_control_timeout <= 3600.0:
            raise ConfigError(
                f"flow_control_timeout: {self.flow_control_timeout}s is outside 1s..1h"
            )
        if self.ping_mode not in ("cache", "flood"):
            raise ConfigError(f"ping_mode: expected 'cache' or 'flood', got {self.ping_mode!r}")
        parse_policies(self.conditioning)
        IntRange(1, 1_000_000).check("peer_output_max_messages", self.peer_output_max_messages)
        if self.query_max_queued is not None:
            IntRange(1, 10_000_000).check("query_max_queued", self.query_max_queued)
        if self.query_rate is not None and not 0.1 <= self.query_rate <= 1_000_000:
            raise ConfigError(f"query_rate: {self.query_rate}/s is outside 0.1..1000000")
        if self.query_shed_order not in SHED_ORDERS:
            raise ConfigError(
                f"query_shed_order: expected one of {', '.join(SHED_ORDERS)}, "
                f"got {self.query_shed_order!r}"
            )
        if not 0.1 <= self.governor_interval <= 60.0:
            raise ConfigError(f"governor_interval: {self.governor_interval}s is outside 100ms..60s")
        IntRange(1, 10_000_000).check("governor_add_threshold", self.governor_add_threshold)
        IntRange(1, 64).check("governor_max_threads", self.governor_max_threads)
        IntRange(1, 64).check("governor_min_threads", self.governor_min_threads)
        if self.governor_min_threads > self.governor_max_threads:
            raise ConfigError(
                f"governor_min_threads ({self.governor_min_threads}) cannot exceed "
                f"governor_max_threads ({self.governor_max_threads})"
            )
        if not 0.0001 <= self.codel_target <= 10.0:
            raise ConfigError(f"codel_target: {self.codel_target}s is outside 100us..10s")
        if not 0.001 <= self.codel_interval <= 60.0:
            raise ConfigError(f"codel_interval: {self.codel_interval}s is outside 1ms..60s")
        if not 0.001 <= self.response_target <= 60.0:
            raise ConfigError(f"response_target: {self.response_target}s is outside 1ms..60s")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log_level: expected debug/info/warning/error, got {self.log_level!r}"
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
            if stage not in ("reader", "parser", "router", "connection", "catcher"):
                raise ConfigError(f"stage_thresholds: unknown stage {stage!r}")
            if threshold is not None:
                IntRange(1, 10_000_000).check(f"stage_thresholds.{stage}", threshold)
        return self


_DURATION_FIELDS = {
    "route_ttl",
    "route_cleanup_interval",
    "ping_refresh_interval",
    "keepalive_interval",
    "governor_interval",
    "codel_target",
    "codel_interval",
    "response_target",
    "handshake_timeout",
    "flow_control_timeout",
    "ping_flood_window",
    "query_delay",
    "hosts_save_interval",
    "qrp_update_interval",
}
_FIELD_TYPES = {f.name: f for f in dataclasses.fields(RouterConfig)}


def _coerce(name: str, value: Any) -> Any:
    if name in _DURATION_FIELDS:
        return parse_duration(value, name=name)
    if name in ("listen", "control_listen"):
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected 'HOST:PORT', got {value!r}")
        return parse_address(value, name=name)
    if name == "peers":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("peers: expected a list of 'HOST:PORT' strings")
        return [parse_address(v, name="peers") for v in value]
    if name == "bootstrap":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("bootstrap: expected a list of GWebCache URLs")
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
    expected = _FIELD_TYPES[name].type
    if expected == "bool" and not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if expected in ("str", "str | None") and not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if expected == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
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
            raise ConfigError(f"unknown option {raw_name!r}")
        changes[name] = _coerce(name, value)
    return dataclasses.replace(config, **changes).validate()


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
    return router
