"""Talking to a router's control endpoint (gnurouter/ops/controlweb.py) with its token.

Views use one shared httpx client.  The poller keeps one persistent HTTP/1.1
connection per router (`MetricsConnection`, h11 over asyncio streams): a poll
then costs about a fifth of the CPU an httpx request does, most of what is
left being the JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx

from dashboard.routers.models import Router

#: Tuning requests wait at most this long for a router.
TUNE_TIMEOUT = 3.0

_shared: httpx.Client | None = None


def _client() -> httpx.Client:
    """One client for the views (thread-safe, keeps connections; making one costs ~25 ms)."""
    global _shared
    if _shared is None:
        _shared = httpx.Client(timeout=TUNE_TIMEOUT)
    return _shared


class RouterUnavailable(Exception):
    """The router did not answer, or answered something that is not its control API."""


class RouterRefused(Exception):
    """The router refused a change (HTTP 400); the message names the allowed values."""


def _url(router: Router, path: str) -> str:
    return router.base_url.rstrip("/") + path


def _error_text(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        return str(json.loads(body).get("error", text))[:300]
    except (ValueError, AttributeError):
        return text[:300]


def _answer(status: int, body: bytes) -> Any:
    """The JSON of a 200 answer; any other answer as the error it stands for."""
    if status == 401:
        raise RouterUnavailable("the router refused the dashboard's token (401)")
    if status == 400:
        raise RouterRefused(_error_text(body))
    if status != 200:
        raise RouterUnavailable(f"HTTP {status}: {_error_text(body)}")
    try:
        return json.loads(body)
    except ValueError as error:
        raise RouterUnavailable("the router's answer is not JSON") from error


def _check(response: httpx.Response) -> Any:
    return _answer(response.status_code, response.content)


def describe_parameters(router: Router, timeout: float = TUNE_TIMEOUT) -> list[dict[str, Any]]:
    """GET /parameters: name, kind, value, low, high, choices, nullable, allowed, description."""
    try:
        response = _client().get(
            _url(router, "/parameters"), headers=router.headers(), timeout=timeout
        )
    except httpx.HTTPError as error:
        raise RouterUnavailable(f"{type(error).__name__}: {error}") from error
    described = _check(response)
    if not isinstance(described, list):
        raise RouterUnavailable("GET /parameters did not return a list")
    return described


def set_parameters(
    router: Router, changes: dict[str, Any], timeout: float = TUNE_TIMEOUT
) -> dict[str, list[Any]]:
    """POST /parameters; returns {name: [old, new]} as the router applied them."""
    try:
        response = _client().post(
            _url(router, "/parameters"), json=changes, headers=router.headers(), timeout=timeout
        )
    except httpx.HTTPError as error:
        raise RouterUnavailable(f"{type(error).__name__}: {error}") from error
    answer = _check(response)
    changed = answer.get("changed") if isinstance(answer, dict) else None
    if not isinstance(changed, dict):
        raise RouterUnavailable("POST /parameters returned no 'changed' map")
    return changed


def _snapshot(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("stages"), dict):
        raise RouterUnavailable("GET /metrics did not return a metrics snapshot")
    return answer


#: A metrics snapshot larger than this is not one (a router reports a few tens of KB).
MAX_METRICS_BYTES = 4 * 1024 * 1024
#: What a poll needs when nobody is looking at the router's page: history and the
#: overview row (half the bytes of the whole snapshot, half the JSON to decode).
BRIEF_FIELDS = ("name", "uptime", "listen", "router", "stages")


class _Closed(Exception):
    """The router closed a kept-alive connection before answering (it may, when idle)."""


class MetricsConnection:
    """GET /metrics over one kept-alive connection to a router, reopened when it breaks.

    A router may close an idle connection at any time; a request that finds its
    kept-alive connection closed before any answer is sent once more on a new one.
    Anything else that goes wrong (refused, timed out, malformed, too large) closes
    the connection and raises `RouterUnavailable`.
    """

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.target = parts.path.rstrip("/") + "/metrics"
        self.brief_target = self.target + "?fields=" + ",".join(BRIEF_FIELDS)
        self.headers = [("Host", parts.netloc), ("Accept", "application/json")]
        if token:
            self.headers.append(("Authorization", f"Bearer {token}"))
        self.timeout = timeout
        self.requests = 0
        self.connects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._http: h11.Connection | None = None

    async def fetch(self, brief: bool = False) -> dict[str, Any]:
        """The snapshot; `brief`: only BRIEF_FIELDS of it (from a router that knows
        `?fields=`; an older one answers the whole snapshot)."""
        target = self.brief_target if brief else self.target
        try:
            async with asyncio.timeout(self.timeout):
                reused = self._writer is not None
                try:
                    status, body = await self._exchange(target)
                except _Closed:
                    if not reused:
                        raise
                    status, body = await self._exchange(target)
        except (TimeoutError, OSError, h11.ProtocolError, _Closed) as error:
            self.close()
            kind = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            raise RouterUnavailable(f"{kind}: {error}".rstrip(": ")) from error
        except BaseException:
            self.close()
            raise
        try:
            return _snapshot(_answer(status, body))
        except RouterRefused as error:  # a 400 to a poll is the router saying no, as any other
            raise RouterUnavailable(f"HTTP 400: {error}") from error

    async def _exchange(self, target: str) -> tuple[int, bytes]:
        if self._writer is None:
            context = ssl.create_default_context() if self.tls else None
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=context
            )
            self._http = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
            self.connects += 1
        assert self._reader is not None and self._http is not None
        http = self._http
        self._writer.write(
            http.send(h11.Request(method="GET", target=target, headers=self.headers))
            + http.send(h11.EndOfMessage())
        )
        self.requests += 1
        status, body, size, answered = 0, [], 0, False
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(256 * 1024)
                if not data and not answered:
                    self.close()
                    raise _Closed("connection closed before an answer")
                http.receive_data(data)
            elif isinstance(event, h11.Response):
                status, answered = event.status_code, True
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_METRICS_BYTES:
                    raise h11.RemoteProtocolError(f"answer over {MAX_METRICS_BYTES} bytes")
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed("connection closed mid-answer")
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()  # kept alive for the next poll
        else:
            self.close()
        return status, b"".join(body)

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = self._http = None
