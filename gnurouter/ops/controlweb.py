"""The control API and metrics snapshot over HTTP+JSON, for the dashboard and the benchmark.

    GET  /metrics             the snapshot (gnurouter.ops.metrics), plus `control_endpoint`
    GET  /metrics?fields=a,b  only those top-level parts of it (a poller's cheaper poll)
    GET  /metrics/prometheus  the same numbers in the Prometheus text format
    GET  /parameters          every tunable parameter with its value and allowed range
    POST /parameters          {"name": value, ...}: all applied, or none (400 + the reason)

It binds to loopback unless told otherwise: it can retune the router, so it
is meant for the operator's own machine or a trusted management network.
With a control token (`--control-token`, `control_token`, or the
GNUROUTER_CONTROL_TOKEN environment variable) every request must carry
`Authorization: Bearer <token>` and is refused with 401 otherwise; the token
is compared in constant time.  A token is required to listen on anything but
loopback (see RouterConfig.validate).

Without a token, being on loopback is the only protection, and a browser on
the same machine can be talked into reaching loopback: a foreign page can
POST to it (cross-site request) or rename a host of its own to 127.0.0.1
(DNS rebinding).  So without a token a request is answered only when it comes
from a loopback address, its `Host` names loopback (localhost, 127.0.0.0/8,
[::1], any port), and it carries no `Origin` (or, lacking one, `Referer`)
of another, non-loopback site (403 otherwise).  With a token, the token alone
decides: browsers cannot attach it on a foreign page's behalf.

Who may ask, and how much they may send, is decided from the request line and
headers before a single body byte is stored (`ControlRequest`): a refused or
oversized request is answered at once and its connection closed, whatever
body it announces or streams (Content-Length or chunked).  Bodies are held in
memory, at most MAX_BODY bytes, never in a temporary file.

The endpoint only ever answers requests: it never pushes to a dashboard and
never waits for one, so a slow or absent dashboard cannot slow the router.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from twisted.web import http, resource, server
from twisted.web.http_headers import Headers

from gnurouter.config import is_loopback
from gnurouter.ops import prometheus
from gnurouter.ops.lograte import OncePerInterval
from gnurouter.seda.tuning import ControlError, shown

if TYPE_CHECKING:
    from gnurouter.ops.view import RouterView

log = logging.getLogger(__name__)

#: Largest request body accepted (a POST of every parameter is ~3 KiB).
MAX_BODY = 64 * 1024
#: Longest integer accepted in a JSON body; no parameter comes near 10^64, and
#: a bound here keeps int() linear however the process set int_max_str_digits.
MAX_JSON_INT_DIGITS = 64
#: Refused requests are logged at most this often per client address and reason.
REFUSAL_LOG_INTERVAL = 60.0
#: Client addresses remembered for that rate limit; a flood from many
#: addresses (IPv6 gives an attacker plenty) must not grow it without bound.
REFUSAL_LOG_CLIENTS = 1024
#: Several dashboards and a Prometheus scraping at once share a snapshot this young.
SNAPSHOT_MAX_AGE = 0.1

#: Every reason a control request is refused, in `control_endpoint.refused`.
REFUSAL_REASONS = (
    "unauthorized",  # 401: no token, or the wrong one
    "bad-client",  # 403: no token, and the client address is not loopback
    "bad-host",  # 403: no token, and Host does not name loopback (DNS rebinding)
    "cross-origin",  # 403: no token, and Origin/Referer is a non-loopback site
    "body-too-large",  # 413: declared or streamed body over MAX_BODY
    "bad-json",  # 400: the body is not a JSON object of names to plain values
    "bad-value",  # 400: unknown parameter, wrong type or outside the allowed range
)


class SnapshotCache:
    """The router's snapshot, computed at most once per `max_age` however many ask.

    A snapshot costs the reactor real time (percentile windows), so N clients
    polling must not cost N times as much.  A parameter change drops the
    cached copy, so the next request shows it.
    """

    def __init__(
        self, snapshot: Callable[[], dict[str, Any]], max_age: float = SNAPSHOT_MAX_AGE
    ) -> None:
        self._snapshot = snapshot
        self.max_age = max_age
        self._value: dict[str, Any] | None = None
        self._taken = 0.0

    def __call__(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._value is None or now - self._taken >= self.max_age:
            self._value, self._taken = self._snapshot(), now
        return self._value

    def clear(self, *_changed: object) -> None:
        self._value = None


# -- the POST body ------------------------------------------------------------


#: `GET /metrics?fields=`: comma-separated top-level names of the snapshot.
MAX_FIELDS = 32
_FIELD_NAME = frozenset("abcdefghijklmnopqrstuvwxyz_")


def parse_fields(text: bytes) -> list[str]:
    """The snapshot parts a `fields` query asks for (pure, like `parse_changes`)."""
    names = text.decode("ascii", errors="replace").split(",")
    if len(names) > MAX_FIELDS or not all(
        0 < len(name) <= 40 and set(name) <= _FIELD_NAME for name in names
    ):
        raise ControlError(f"fields: up to {MAX_FIELDS} comma-separated names of [a-z_]")
    return names


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently; a request that says two
    # things about one parameter is ambiguous, so it is refused instead.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ControlError(f"request body names {shown(key)} twice")
        result[key] = value
    return result


def _bounded_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_JSON_INT_DIGITS:
        raise ControlError(
            f"request body holds an integer of {digits} digits (at most {MAX_JSON_INT_DIGITS})"
        )
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ControlError(f"request body holds a number out of range: {shown(text)}")
    return value


def _no_constant(name: str) -> float:
    # Python's json reads NaN, Infinity and -Infinity although JSON has none of them.
    raise ControlError(f"request body holds {name}, which is not a JSON number")


def parse_changes(body: bytes) -> dict[str, Any]:
    """A `POST /parameters` body -> {name: value}, or ControlError for any other input.

    Pure (no I/O, no router), for the HTTP resource and for fuzzers alike.
    Accepts only a UTF-8 JSON object without duplicate keys whose values are
    null, true/false, finite numbers or strings; an empty body is no change.
    Whether the names exist and the values fit is `ControlAPI.set_many`'s to say.
    """
    if len(body) > MAX_BODY:
        raise ControlError(f"request body over {MAX_BODY} bytes")
    if not body:
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlError("request body is not UTF-8 text") from None
    try:
        changes = json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except ControlError:
        raise
    except RecursionError:
        # json's C scanner recurses per nesting level; ~1000 levels exhaust the stack.
        raise ControlError("request body is nested too deeply") from None
    except json.JSONDecodeError as error:
        # Its message names the position only, never the body's text.
        raise ControlError(f"request body is not valid JSON: {error}") from None
    except (ValueError, OverflowError) as error:  # none known; a 400 all the same, never a 500
        raise ControlError(f"request body is not valid JSON: {type(error).__name__}") from None
    if not isinstance(changes, dict):
        raise ControlError("expected a JSON object of parameter names to values")
    for name, value in changes.items():
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ControlError(
                f"{shown(name)}: a value must be a number, a string, true, false or null"
            )
    return changes


# -- who may ask ---------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # one of REFUSAL_REASONS
    message: str


class Refusals:
    """Refused control requests counted by reason, logged at most once a minute per client."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self._logging = OncePerInterval(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_CLIENTS)

    def record(self, client: str, refusal: Refusal) -> None:
        self.counts[refusal.reason] = self.counts.get(refusal.reason, 0) + 1
        if not self._logging.allow((client, refusal.reason), time.monotonic()):
            return
        log.warning(
            "control request from %s refused (%s): %s", client, refusal.reason, refusal.message
        )

    def snapshot(self) -> dict[str, Any]:
        return {"refused": dict(self.counts), "refused_total": sum(self.counts.values())}


class GuardedRequest(Protocol):
    """What the guard and the JSON answers use of a request (a `twisted.web.server.Request`).

    Twisted hands resources an `IRequest`, which mypy cannot see into; this
    names the part of it this module relies on.
    """

    requestHeaders: Headers

    def getHeader(self, key: bytes) -> bytes | str | None: ...

    def getClientAddress(self) -> object: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...


def _client_host(request: GuardedRequest) -> str:
    return str(getattr(request.getClientAddress(), "host", "?"))


def _loopback_host_header(value: bytes) -> bool:
    """`Host: localhost`, `127.x.y.z` or `[::1]`, each with an optional port."""
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or ":" not in host:  # brackets hold IPv6 literals only
            return False
    else:
        host, colon, port_text = text.partition(":")
        port = colon + port_text
    if port and not (port.startswith(":") and 1 < len(port) <= 6 and port[1:].isdigit()):
        return False
    return is_loopback(host)


def _loopback_origin(value: bytes) -> bool:
    """An Origin (or Referer) naming an http(s) page served from loopback."""
    try:
        parts = urlsplit(value.decode("ascii").strip())
        _port = parts.port  # raises ValueError for a malformed or out-of-range port
    except (UnicodeDecodeError, ValueError):
        return False
    # "null" (sandboxed frames, file: pages) has no scheme and is foreign.
    return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")


class ControlGuard:
    """Decides who may use the endpoint and how much they may send; counts every refusal."""

    def __init__(self, token: str | None, max_body: int = MAX_BODY) -> None:
        self._token = token.encode() if token is not None else None
        self.max_body = max_body
        self.refusals = Refusals()

    @property
    def enabled(self) -> bool:
        """True when a token is required (off loopback, it always is)."""
        return self._token is not None

    def _token_matches(self, request: GuardedRequest) -> bool:
        assert self._token is not None
        header = request.getHeader(b"authorization") or b""
        if isinstance(header, str):
            header = header.encode("latin-1", "replace")
        scheme, _, credential = header.strip().partition(b" ")
        # compare_digest always runs, so a wrong scheme costs the same as a wrong token.
        matches = hmac.compare_digest(credential.strip(), self._token)
        return matches and scheme.lower() == b"bearer"

    def screen(self, request: GuardedRequest) -> Refusal | None:
        """The refusal for this request from its headers alone, or None to let it in."""
        if self._token is not None:
            if not self._token_matches(request):
                return Refusal(401, "unauthorized", "missing or wrong control token")
            return None
        if not is_loopback(_client_host(request)):
            # RouterConfig.validate keeps a tokenless endpoint on loopback; this
            # holds even if it was bound some other way.
            return Refusal(403, "bad-client", "without a control token only loopback may ask")
        headers = request.requestHeaders
        hosts = headers.getRawHeaders(b"host") or []
        if len(hosts) != 1 or not _loopback_host_header(hosts[0]):
            return Refusal(
                403,
                "bad-host",
                "without a control token the Host header must be localhost, "
                "127.x.x.x or [::1] (with an optional port)",
            )
        # Origin is what browsers attach to cross-site requests; old ones and
        # some navigations send only Referer.  Tools (curl, httpx) send neither.
        origins = headers.getRawHeaders(b"origin") or headers.getRawHeaders(b"referer") or []
        if not all(_loopback_origin(origin) for origin in origins):
            return Refusal(
                403, "cross-origin", "without a control token only loopback pages may ask"
            )
        return None

    def too_large(self) -> Refusal:
        return Refusal(413, "body-too-large", f"request body over {self.max_body} bytes")

    def refuse(self, request: GuardedRequest, refusal: Refusal) -> bytes:
        """Count and log `refusal`, and answer it as a rendered resource would."""
        self.refusals.record(_client_host(request), refusal)
        if refusal.status == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="gnurouter"')
        return _json(request, refusal.status, _refusal_payload(refusal))


def _refusal_payload(refusal: Refusal) -> dict[str, str]:
    return {"error": refusal.message, "reason": refusal.reason}


def _json(request: GuardedRequest, status: int, payload: object) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(payload, default=str).encode()


class ControlRequest(server.Request):
    """A request screened as soon as its headers are in, before its body is stored.

    twisted.web stores a whole body (in a temporary file past 100 kB) before any
    resource sees the request, so a check in `render` comes too late: 300 MiB
    had been written by then.  `HTTPChannel` calls `gotLength` once all the
    headers are parsed and before the first body byte, and hands every body
    piece, Content-Length or chunked, to `handleContentChunk`.  A refused
    request is answered right there and its connection closed; the rest of
    its body is never read.
    """

    _refused = False
    _body_length = 0

    def _guard(self) -> ControlGuard:
        # Twisted types `channel` as HTTPChannel, which does not declare the
        # `site` that Site.buildProtocol sets on it.
        channel: Any = self.channel
        return cast(ControlSite, channel.site).guard

    def gotLength(self, length: int | None) -> None:
        # In memory, never a temporary file: nothing past max_body is ever kept.
        self.content = io.BytesIO()
        guard = self._guard()
        refusal = guard.screen(self)
        if refusal is None and length is not None and length > guard.max_body:
            refusal = guard.too_large()
        if refusal is not None:
            self._refuse_now(refusal)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return  # what was in the same read as the refusal; dropped
        self._body_length += len(data)
        # Also the only cap on a chunked body, whose length is never announced.
        if self._body_length > self._guard().max_body:
            self._refuse_now(self._guard().too_large())
            return
        cast(io.BytesIO, self.content).write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            # Answered already; the channel reports the end of a body that was
            # in the same read as the headers.  Nothing is dispatched.
            return
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated

    def _refuse_now(self, refusal: Refusal) -> None:
        """Answer before the request is complete, then close without reading on.

        The Request's own response machinery needs a complete request
        (method, URI) and would hand the connection back to the parser for the
        next request; neither holds here, so the answer is written raw.
        """
        self._refused = True
        self._guard().refusals.record(_client_host(self), refusal)
        # Otherwise the channel would send "100 Continue" after this final answer.
        self.requestHeaders.removeHeader(b"expect")
        body = json.dumps(_refusal_payload(refusal)).encode()
        phrase = http.RESPONSES.get(refusal.status, b"Refused")
        head = [
            b"HTTP/1.1 %d %s" % (refusal.status, phrase),
            b"Content-Type: application/json",
            b"Cache-Control: no-store",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        if refusal.status == 401:
            head.append(b'WWW-Authenticate: Bearer realm="gnurouter"')
        channel: Any = self.channel
        channel.persistent = False
        channel.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        # Stops reading at once: whatever the client still sends is never
        # buffered (the kernel answers it with a reset once the socket closes).
        channel.loseConnection()


class ControlSite(server.Site):
    """The control endpoint's Site: every request is a ControlRequest screened by `guard`."""

    def __init__(self, root: resource.Resource, guard: ControlGuard) -> None:
        super().__init__(root, requestFactory=ControlRequest)  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated
        self.guard = guard
        self.displayTracebacks = False


# -- resources -----------------------------------------------------------------


class _Guarded(resource.Resource):
    """A leaf resource that answers only requests its guard lets in.

    ControlRequest has screened them already; screening again here keeps the
    resource safe on any Site (and costs one constant-time compare).
    """

    isLeaf = True

    def __init__(self, router: RouterView, guard: ControlGuard) -> None:
        super().__init__()  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated
        self.router = router
        self.guard = guard

    def render(self, request: Any) -> bytes:
        refusal = self.guard.screen(request)
        if refusal is not None:
            return self.guard.refuse(request, refusal)
        return cast(bytes, super().render(request))  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated


class MetricsResource(_Guarded):
    def __init__(self, router: RouterView, guard: ControlGuard) -> None:
        super().__init__(router, guard)
        self.snapshot = SnapshotCache(self._snapshot)
        router.control.add_listener(self.snapshot.clear)
        self.registry = prometheus.registry_for(self.snapshot)

    def _snapshot(self) -> dict[str, Any]:
        # The endpoint's own counters exist only where the endpoint does.
        return {**self.router.snapshot(), "control_endpoint": self.guard.refusals.snapshot()}

    def render_GET(self, request: Any) -> bytes:
        if request.postpath and request.postpath != [b""]:
            if request.postpath == [b"prometheus"]:
                return self.render_prometheus(request)
            return _json(request, 404, {"error": "no such resource"})
        asked = (request.args or {}).get(b"fields")
        if asked:
            try:
                fields = parse_fields(asked[-1])
            except ControlError as error:
                return self.guard.refuse(request, Refusal(400, "bad-value", str(error)))
            whole = self.snapshot()
            return _json(request, 200, {name: whole[name] for name in fields if name in whole})
        return _json(request, 200, self.snapshot())

    def render_prometheus(self, request: Any) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", prometheus.CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return prometheus.render(self.registry)


class ParametersResource(_Guarded):
    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, self.router.control.describe())

    def render_POST(self, request: Any) -> bytes:
        # ControlRequest never stores more than max_body; on another Site this
        # still reads no further than one byte past it.
        body = request.content.read(self.guard.max_body + 1)
        if len(body) > self.guard.max_body:
            return self.guard.refuse(request, self.guard.too_large())
        try:
            changes = parse_changes(body)
        except ControlError as error:
            return self.guard.refuse(request, Refusal(400, "bad-json", str(error)))
        try:
            applied = self.router.control.set_many(changes)
        except ControlError as error:
            return self.guard.refuse(request, Refusal(400, "bad-value", str(error)))
        for name, (old, new) in applied.items():
            log.info("control: %s changed %r -> %r", name, old, new)
        return _json(request, 200, {"changed": {k: [o, n] for k, (o, n) in applied.items()}})


def control_site(router: RouterView, token: str | None = None) -> ControlSite:
    """The control endpoint's site; `token` defaults to the router's `control_token`."""
    if token is None:
        token = getattr(router.config, "control_token", None)
    guard = ControlGuard(token)
    root = resource.Resource()  # type: ignore[no-untyped-call, unused-ignore]  # Twisted: unannotated
    # Twisted's zope interfaces are opaque to mypy; these are IResources.
    root.putChild(b"metrics", cast(Any, MetricsResource(router, guard)))
    root.putChild(b"parameters", cast(Any, ParametersResource(router, guard)))
    return ControlSite(root, guard)
