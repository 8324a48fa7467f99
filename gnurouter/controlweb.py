"""The control API and metrics snapshot over HTTP+JSON, for the dashboard and the benchmark.

    GET  /metrics      the snapshot (gnurouter.metrics)
    GET  /parameters   every tunable parameter with its value and allowed range
    POST /parameters   {"name": value, ...}: all applied, or none (400 + the reason)

It binds to loopback unless told otherwise: it can retune the router, so it
is meant for the operator's own machine or a trusted management network.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, cast

from twisted.web import resource, server

from gnurouter.control import ControlError

if TYPE_CHECKING:
    from gnurouter.service import RouterService

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


def _json(request: Any, status: int, payload: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(payload, default=str).encode()


class MetricsResource(resource.Resource):
    isLeaf = True

    def __init__(self, router: RouterService) -> None:
        super().__init__()
        self.router = router

    def render_GET(self, request: Any) -> bytes:
        return _json(request, 200, self.router.snapshot())


class ParametersResource(resource.Resource):
    isLeaf = True

    def __init__(self, router: RouterService) -> None:
        super().__init__()
        self.router = router

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


def control_site(router: RouterService) -> server.Site:
    root = resource.Resource()
    # Twisted's zope interfaces are opaque to mypy; these are IResources.
    root.putChild(b"metrics", cast(Any, MetricsResource(router)))
    root.putChild(b"parameters", cast(Any, ParametersResource(router)))
    site = server.Site(root)
    site.displayTracebacks = False
    return site
