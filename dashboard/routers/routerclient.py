"""Talking to a router's control endpoint (gnurouter/ops/controlweb.py) with its token."""

from __future__ import annotations

from typing import Any

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


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text[:300]


def _check(response: httpx.Response) -> Any:
    if response.status_code == 401:
        raise RouterUnavailable("the router refused the dashboard's token (401)")
    if response.status_code == 400:
        raise RouterRefused(_error_text(response))
    if response.status_code != 200:
        raise RouterUnavailable(f"HTTP {response.status_code}: {_error_text(response)}")
    try:
        return response.json()
    except ValueError as error:
        raise RouterUnavailable("the router's answer is not JSON") from error


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


async def fetch_metrics(client: httpx.AsyncClient, base_url: str, token: str) -> dict[str, Any]:
    """GET /metrics through a shared async client (the poller's)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = await client.get(base_url.rstrip("/") + "/metrics", headers=headers)
    except httpx.HTTPError as error:
        raise RouterUnavailable(f"{type(error).__name__}: {error}".rstrip(": ")) from error
    snapshot = _check(response)
    if not isinstance(snapshot, dict) or "stages" not in snapshot:
        raise RouterUnavailable("GET /metrics did not return a metrics snapshot")
    return snapshot
