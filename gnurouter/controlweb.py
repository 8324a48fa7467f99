"""The control API and metrics snapshot over HTTP+JSON, for the dashboard and the benchmark.

    GET  /metrics             the snapshot (gnurouter.metrics)
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

The endpoint only ever answers requests: it never pushes to a dashboard and
never waits for one, so a slow or absent dashboard cannot slow the router.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from twisted.web import resource, server

from gnurouter import prometheus
from gnurouter.control import ControlError

if TYPE_CHECKING:
    from gnurouter.service import RouterService

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
#: Refused requests are logged at most this often per client address.
REFUSAL_LOG_INTERVAL = 60.0
#: Several dashboards and a Prometheus scraping at once share a snapshot this young.
SNAPSHOT_MAX_AGE = 0.1


class SnapshotCache:
    """The router's snapshot, computed at most once per `max_age` however many ask.

    A snapshot costs the reactor real time (percentile windows), so N clients
    polling must not cost N times as much.  A parameter change drops the
    cached copy, so the next request shows it.
    """

    def __init__(self, snapshot: Any, max_age: float = SNAPSHOT_MAX_AGE) -> None:
        self._snapshot = snapshot
        self.max_age = max_age
        self._value: dict[str, Any] | None = None
        self._taken = 0.0

    def __call__(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._value is None or now - self._taken >= self.max_age:
            self._value, self._taken = self._snapshot(), now
        return self._value

    def clear(self, *_changed: Any) -> None:
        self._value = None


def _json(request: Any, status: int, payload: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(payload, default=str).encode()


class TokenCheck:
    """`Authorization: Bearer <token>` against the configured token (None: no check)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token is not None else None
        self._last_logged: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def allows(self, request: Any) -> bool:
        if self._token is None:
            return True
        header = request.getHeader(b"authorization") or b""
        if isinstance(header, str):
            header = header.encode("latin-1", "replace")
        scheme, _, credential = header.strip().partition(b" ")
        # compare_digest always runs, so a wrong scheme costs the same as a wrong token.
        matches = hmac.compare_digest(credential.strip(), self._token)
        return matches and scheme.lower() == b"bearer"

    def refuse(self, request: Any) -> bytes:
        client = getattr(request.getClientAddress(), "host", "?")
        now = time.monotonic()
        if now - self._last_logged.get(client, -REFUSAL_LOG_INTERVAL) >= REFUSAL_LOG_INTERVAL:
            self._last_logged[client] = now
            log.warning("control request from %s refused: missing or wrong token", client)
        request.setHeader(b"www-authenticate", b'Bearer realm="gnurouter"')
        return _json(request, 401, {"error": "missing or wrong control token"})


class _Guarded(resource.Resource):
    """A leaf resource that answers only requests carrying the control token."""

    isLeaf = True

    def __init__(self, router: RouterService, check: TokenCheck) -> None:
        super().__init__()
        self.router = router
        self.check = check

    def render(self, request: Any) -> bytes:
        if not self.check.allows(request):
            return self.check.refuse(request)
        return cast(bytes, super().render(request))


class MetricsResource(_Guarded):
    def __init__(self, router: RouterService, check: TokenCheck) -> None:
        super().__init__(router, check)
        self.snapshot = SnapshotCache(router.snapshot)
        router.control.add_listener(self.snapshot.clear)
        self.registry = prometheus.registry_for(self.snapshot)

    def render_GET(self, request: Any) -> bytes:
        if request.postpath and request.postpath != [b""]:
            if request.postpath == [b"prometheus"]:
                return self.render_prometheus(request)
            return _json(request, 404, {"error": "no such resource"})
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
        body = request.content.read(MAX_BODY + 1)
        peer = request.getClientAddress()
        if len(body) > MAX_BODY:
            return _json(request, 413, {"error": f"request body over {MAX_BODY} bytes"})
        try:
            changes = json.loads(body or b"{}")
            if not isinstance(changes, dict):
                raise ControlError("expected a JSON object of parameter names to values")
            applied = self.router.control.set_many(changes)
        except (ValueError, ControlError) as error:  # JSONDecodeError is a ValueError
            log.warning("control request from %s refused: %s", getattr(peer, "host", peer), error)
            return _json(request, 400, {"error": str(error)})
        for name, (old, new) in applied.items():
            log.info("control: %s changed %r -> %r", name, old, new)
        return _json(request, 200, {"changed": {k: [o, n] for k, (o, n) in applied.items()}})


def control_site(router: RouterService, token: str | None = None) -> server.Site:
    """The control endpoint's site; `token` defaults to the router's `control_token`."""
    if token is None:
        token = getattr(router.config, "control_token", None)
    check = TokenCheck(token)
    root = resource.Resource()
    # Twisted's zope interfaces are opaque to mypy; these are IResources.
    root.putChild(b"metrics", cast(Any, MetricsResource(router, check)))
    root.putChild(b"parameters", cast(Any, ParametersResource(router, check)))
    site = server.Site(root)
    site.displayTracebacks = False
    return site
