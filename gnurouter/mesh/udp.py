"""UDP pings and pongs as decisions: whom to answer, with what, and what a pong teaches.

Sans I/O: `UdpHosts.receive(datagram, source)` returns the datagrams to send
and the hosts learned; the UDP stage carries them out.  What it does, after
gtk-gnutella's pcache.c:

* A ping gets a pong describing us ("VC", "UP" when we are an ultrapeer,
  "DU", "6" for an IPv6 address).  A ping with "SCP" is a host cache
  request: the pong also packs good hosts from the host cache in "IPP"
  (and "IPP6" when "SCP" asks for IPv6), as a UDP host cache does.
* A pong must answer a ping we sent (its GUID is pending, at most
  `PING_TIMEOUT` old); anything else is unsolicited and dropped.  The hosts
  it packs go to the catcher ("uhc" for a host cache's answer), and the host
  that answered is marked as having answered ("udp-pong").
* A pinger that says it is an ultrapeer ("SCP" flag) is pinged back with a
  fresh GUID: only a pong to that GUID, which a spoofer never sees, puts its
  address in the host cache, so a forged source cannot plant hosts.

A UDP pong must never be an amplifier: the answer to one datagram (pong and
check-back ping together) is never more than `MAX_AMPLIFICATION` times its
size, each source address gets a token bucket of answers, and all answers
together another.  Every refused datagram is counted by reason and handed to
`log_refusal` (the edge writes it, rate-limited, with the source address).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gnurouter.mesh.hostcache import HostCache
from gnurouter.protocol.errors import ProtocolError
from gnurouter.protocol.ggep import SCP_F_IPV6, SCP_F_NO_IPV4, SCP_F_ULTRA
from gnurouter.protocol.messages import (
    HEADER_LENGTH,
    NO_IPV4,
    Message,
    Ping,
    Pong,
    PongInfo,
    scp_flags,
)
from gnurouter.protocol.udp import (
    DatagramError,
    decode_datagram,
    host_cache_ping,
    plain_ping,
)
from gnurouter.routing.tables import TokenBucket

Address = tuple[str, int]

#: An answer (pong plus check-back ping) is at most this many times the size
#: of the datagram it answers.  A host cache request (30+ bytes) still gets
#: a pong with about 30 IPv4 hosts, as gtk-gnutella sends (PCACHE_UHC_MAX_IP).
MAX_AMPLIFICATION = 8
#: Hosts packed in one pong, whatever the budget allows (gtk-gnutella's figure).
MAX_PACKED_HOSTS = 30
#: A pong later than this after our ping is unsolicited (gtk-gnutella's UHC timeout is 20 s).
PING_TIMEOUT = 30.0
#: Pings awaiting their pong; past this, the oldest is forgotten.
MAX_PENDING = 1024
#: Source addresses whose answer budget is remembered (least recently heard of forgotten).
MAX_SOURCES = 4096
#: Vendor code and version byte in our "VC" (as in our GWebCache requests).
VENDOR_CODE = b"GNUR"
VENDOR_VERSION = 1

# Refusal reasons beyond the datagram codec's (gnurouter.protocol.udp).
SOURCE_RATE = "rate-limited-source"
OVERALL_RATE = "rate-limited-overall"
UNSOLICITED = "unsolicited-pong"
BAD_PONG = "malformed-pong-ggep"
WOULD_AMPLIFY = "would-amplify"

#: Where hosts learned over UDP come from, in the host cache's words.
SOURCE_UHC = "uhc"
SOURCE_UDP_PONG = "udp-pong"
PURPOSE_UHC = "uhc"
PURPOSE_CHECK = "check-back"


@dataclass(frozen=True)
class UdpLimits:
    """Answers per second (and burst) per source address and overall (config.py owns the values)."""

    per_source_rate: float
    per_source_burst: int
    overall_rate: float
    overall_burst: int


@dataclass(frozen=True)
class OwnHost:
    """What our pongs say about us; free slots are None when we are no ultrapeer."""

    port: int
    ipv4: str | None
    ipv6: str | None
    free_leaf_slots: int | None
    free_ultrapeer_slots: int | None
    daily_uptime: int
    addresses: frozenset[Address] = frozenset()


@dataclass
class Learned:
    hosts: list[Address]
    source: str
    ultrapeer: bool | None


@dataclass
class Outcome:
    """What one datagram asks of the UDP stage."""

    replies: list[tuple[bytes, Address]] = field(default_factory=list)
    learned: list[Learned] = field(default_factory=list)
    #: A host cache we asked answered: (the address we asked, hosts it packed).
    cache_answered: tuple[Address, int] | None = None


@dataclass
class _Pending:
    address: Address
    purpose: str
    sent_at: float


def family_of(host: str) -> int:
    return 6 if ":" in host else 4


def _unmapped(host: str) -> str:
    """::ffff:a.b.c.d (an IPv4 client seen on an IPv6 socket) -> a.b.c.d."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    return str(address.ipv4_mapped) if address.ipv4_mapped is not None else str(address)


class UdpHosts:
    def __init__(
        self,
        hosts: HostCache,
        own: Callable[[], OwnHost],
        limits: UdpLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_refusal: Callable[[str, Address, str], None] | None = None,
    ) -> None:
        self.hosts = hosts
        self.own = own
        self.limits = limits
        self._clock = clock
        self.log_refusal = log_refusal
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()
        self._overall = TokenBucket(limits.overall_rate, limits.overall_burst, clock())
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()
        self.received = 0
        self.bytes_in = 0
        self.answered = 0
        self.bytes_out = 0
        self.pings_sent = 0
        self.pongs_accepted = 0
        self.hosts_learned = 0
        self.refused: dict[str, int] = {}
        #: The largest answer / request size ratio so far (never above MAX_AMPLIFICATION).
        self.largest_ratio = 0.0

    # -- incoming -------------------------------------------------------------

    def receive(self, data: bytes, source: Address) -> Outcome:
        self.received += 1
        self.bytes_in += len(data)
        now = self._clock()
        self._expire(now)
        try:
            message, body = decode_datagram(data)
        except DatagramError as error:
            return self.refuse(error.kind, source, str(error))
        if isinstance(body, Ping):
            return self._answer(message, body, source, len(data), now)
        return self._pong(message, body, source)

    def refuse(self, reason: str, source: Address, detail: str) -> Outcome:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        if self.log_refusal is not None:
            self.log_refusal(reason, source, detail)
        return Outcome()

    def _within_budget(self, source: Address, now: float) -> str | None:
        key = _unmapped(source[0])
        bucket = self._sources.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.limits.per_source_rate, self.limits.per_source_burst, now)
            while len(self._sources) >= MAX_SOURCES:
                self._sources.popitem(last=False)
        self._sources[key] = bucket
        if not bucket.take(now):
            return SOURCE_RATE
        if not self._overall.take(now):
            return OVERALL_RATE
        return None

    def _answer(self, ping: Message, body: Ping, source: Address, size: int, now: float) -> Outcome:
        refused = self._within_budget(source, now)
        if refused is not None:
            return self.refuse(refused, source, "ping over its answer budget")
        budget = MAX_AMPLIFICATION * size
        flags = scp_flags(body)
        check_back = flags is not None and bool(flags & SCP_F_ULTRA) and not self._answered(source)
        check = plain_ping() if check_back else None
        if check is not None:
            budget -= HEADER_LENGTH + len(check.payload)
        pong = self._pong_for(ping, self.own(), flags, source, budget)
        if pong is None:
            return self.refuse(WOULD_AMPLIFY, source, "even our bare pong is too large")
        outcome = Outcome(replies=[(pong, source)])
        if check is not None:
            self._register(check.guid, source, PURPOSE_CHECK, now)
            outcome.replies.append((check.encode(), source))
        sent = sum(len(data) for data, _ in outcome.replies)
        self.answered += 1
        self.bytes_out += sent
        self.pings_sent += int(check is not None)
        self.largest_ratio = max(self.largest_ratio, sent / size)
        return outcome

    def _pong_for(
        self, ping: Message, own: OwnHost, flags: int | None, source: Address, budget: int
    ) -> bytes | None:
        """Our pong, packing as many hosts as `flags` ask for and `budget` bytes allow."""
        info = PongInfo(
            vendor=VENDOR_CODE,
            vendor_version=VENDOR_VERSION,
            free_leaf_slots=own.free_leaf_slots,
            free_ultrapeer_slots=own.free_ultrapeer_slots,
            daily_uptime=own.daily_uptime,
            ipv6=own.ipv6,
        )
        ip = own.ipv4 if own.ipv4 is not None else NO_IPV4

        def encode(packed: PongInfo) -> bytes:
            pong = Pong(port=own.port, ip=ip, files=0, kbytes=0, ggep=packed.to_ggep())
            return Message.from_body(ping.guid, 1, 0, pong).encode()

        wire = encode(info)
        if len(wire) > budget:
            return None
        if flags is None:
            return wire
        exclude = set(own.addresses) | {source, (_unmapped(source[0]), source[1])}
        want4 = not flags & SCP_F_NO_IPV4
        want6 = bool(flags & (SCP_F_IPV6 | SCP_F_NO_IPV4))
        # Each family's extension header costs up to 7 bytes (flags, ID, 2 length bytes).
        room = budget - len(wire)
        # Asked for both families, each gets half the room (IPv6 entries are 3x larger).
        room4 = room // 2 if want6 else room
        count4 = min(MAX_PACKED_HOSTS, max(0, (room4 - 7) // 6)) if want4 else 0
        hosts4 = self.hosts.sample(count4, exclude, family=4) if count4 else []
        room -= 7 + 6 * len(hosts4) if hosts4 else 0
        count6 = min(MAX_PACKED_HOSTS - len(hosts4), max(0, (room - 7) // 18)) if want6 else 0
        hosts6 = self.hosts.sample(count6, exclude, family=6) if count6 else []
        wire = encode(dataclasses.replace(info, hosts=tuple(hosts4), hosts6=tuple(hosts6)))
        assert len(wire) <= budget, "the packing arithmetic undercounts"
        return wire

    def _answered(self, source: Address) -> bool:
        entry = self.hosts.get((_unmapped(source[0]), source[1]))
        return entry is not None and entry.last_answered is not None

    def _pong(self, message: Message, body: Pong, source: Address) -> Outcome:
        pending = self._pending.pop(message.guid, None)
        if pending is None:
            return self.refuse(UNSOLICITED, source, "pong to no ping of ours")
        try:
            info = PongInfo.from_ggep(body.ggep)
        except ProtocolError as error:
            return self.refuse(BAD_PONG, source, str(error))
        self.pongs_accepted += 1
        outcome = Outcome()
        packed = [*info.hosts, *info.hosts6]
        if packed:
            from_cache = pending.purpose == PURPOSE_UHC
            source_name = SOURCE_UHC if from_cache else SOURCE_UDP_PONG
            outcome.learned.append(Learned(packed, source_name, True if from_cache else None))
        # The host answered from where we asked: it is alive and listening there.
        responder = (_unmapped(source[0]), source[1])
        if info.ultrapeer or pending.purpose == PURPOSE_CHECK:
            outcome.learned.append(Learned([responder], SOURCE_UDP_PONG, info.ultrapeer))
        self.hosts_learned += sum(len(learned.hosts) for learned in outcome.learned)
        if pending.purpose == PURPOSE_UHC:
            outcome.cache_answered = (pending.address, len(packed))
        return outcome

    # -- outgoing -------------------------------------------------------------

    def host_cache_request(self, address: Address) -> bytes:
        """The datagram asking host cache `address` for hosts; its pong is awaited."""
        own = self.own()
        message = host_cache_ping(
            ultrapeer=own.free_ultrapeer_slots is not None,
            want_ipv6=own.ipv6 is not None,
            vendor=VENDOR_CODE,
            vendor_version=VENDOR_VERSION,
        )
        self._register(message.guid, address, PURPOSE_UHC, self._clock())
        self.pings_sent += 1
        data = message.encode()
        self.bytes_out += len(data)
        return data

    def _register(self, guid: bytes, address: Address, purpose: str, now: float) -> None:
        self._pending[guid] = _Pending(address, purpose, now)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._pending:
            guid, pending = next(iter(self._pending.items()))
            if now - pending.sent_at <= PING_TIMEOUT:
                return
            del self._pending[guid]

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "bytes_in": self.bytes_in,
            "answered": self.answered,
            "bytes_out": self.bytes_out,
            "pings_sent": self.pings_sent,
            "pongs_accepted": self.pongs_accepted,
            "hosts_learned": self.hosts_learned,
            "pending_pings": len(self._pending),
            "refused": dict(self.refused),
            "max_amplification": MAX_AMPLIFICATION,
            "largest_ratio": round(self.largest_ratio, 3),
        }
