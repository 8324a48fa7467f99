"""The poller's connection to a router: kept alive, reopened when it breaks, bounded."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from dashboard.routers import routerclient
from dashboard.routers.routerclient import BRIEF_FIELDS, MetricsConnection, RouterUnavailable
from tests.dashboard.conftest import RouterProcess

pytestmark = pytest.mark.network


def test_polls_share_one_connection_and_a_brief_poll_is_half_the_snapshot(
    shared_router: RouterProcess,
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], int, int]:
        link = MetricsConnection(shared_router.base_url, shared_router.token, timeout=5)
        whole = await link.fetch()
        for _ in range(5):
            brief = await link.fetch(brief=True)
        link.close()
        return whole, brief, link.connects, link.requests

    whole, brief, connects, requests = async_to_sync(scenario)()
    assert connects == 1 and requests == 6
    assert set(brief) == set(BRIEF_FIELDS)
    assert {"graph", "parameters", "peers"} <= set(whole) - set(brief)
    assert brief["stages"].keys() == whole["stages"].keys()


def test_a_restarted_router_is_asked_again_on_a_new_connection(router_process: Any) -> None:
    router = router_process()
    link = MetricsConnection(router.base_url, router.token, timeout=5)

    async def fetch() -> dict[str, Any]:
        return await link.fetch()

    async def twice() -> None:
        await link.fetch()
        await link.fetch()

    async_to_sync(twice)()
    link.close()  # (each async_to_sync runs a loop of its own)
    router.stop()

    async def refused() -> str:
        with pytest.raises(RouterUnavailable) as caught:
            await link.fetch()
        return str(caught.value)

    assert async_to_sync(refused)()
    router.start()  # the same ports
    assert "stages" in async_to_sync(fetch)()
    link.close()


def test_a_wrong_token_and_a_bad_fields_query_are_clear_errors(
    shared_router: RouterProcess,
) -> None:
    async def scenario() -> list[str]:
        errors = []
        wrong = MetricsConnection(shared_router.base_url, "wrong-token-0123456789", timeout=5)
        with pytest.raises(RouterUnavailable) as caught:
            await wrong.fetch()
        errors.append(str(caught.value))
        bad = MetricsConnection(shared_router.base_url, shared_router.token, timeout=5)
        bad.brief_target = bad.target + "?fields=graph,Not-A-Name"
        with pytest.raises(RouterUnavailable) as caught:
            await bad.fetch(brief=True)
        errors.append(str(caught.value))
        wrong.close()
        bad.close()
        return errors

    token_error, fields_error = async_to_sync(scenario)()
    assert "401" in token_error
    assert "HTTP 400" in fields_error and "fields" in fields_error


def test_an_answer_past_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 'router' that streams more than any snapshot: cut off, not held in memory."""
    monkeypatch.setattr(routerclient, "MAX_METRICS_BYTES", 64 * 1024)

    async def scenario() -> str:
        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
            try:
                while True:
                    writer.write(b"x" * 65536)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass

        server = await asyncio.start_server(endless, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = MetricsConnection(f"http://127.0.0.1:{port}", "", timeout=5)
        try:
            with pytest.raises(RouterUnavailable) as caught:
                await link.fetch()
            return str(caught.value)
        finally:
            link.close()
            server.close()

    assert "bytes" in async_to_sync(scenario)()


def test_a_silent_router_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]

        async def scenario() -> str:
            link = MetricsConnection(f"http://127.0.0.1:{port}", "", timeout=0.5)
            with pytest.raises(RouterUnavailable) as caught:
                await link.fetch()
            link.close()
            return str(caught.value)

        assert "timed out" in async_to_sync(scenario)()
