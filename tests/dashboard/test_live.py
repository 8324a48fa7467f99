"""The live path: poller -> channel layer -> WebSocket consumers, and who may connect.

Real router processes, the real ASGI application (origin check + session auth),
channels' WebsocketCommunicator.  Async scenarios run through async_to_sync so
the database work shares the test's connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.project.asgi import application
from dashboard.routers.models import Router, Sample
from dashboard.routers.poller import DOWN_AFTER, Poller, Watch
from tests.dashboard.conftest import RouterProcess

pytestmark = [pytest.mark.network, pytest.mark.django_db(transaction=True)]

ORIGIN = b"http://127.0.0.1"


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return async_to_sync(scenario)()


def session_headers(user: Any, origin: bytes = ORIGIN) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


def watch_of(router: Router) -> Watch:
    return Watch(router.pk, router.name, router.base_url, router.token)


@pytest.fixture
def router(shared_router: RouterProcess) -> Router:
    return Router.objects.create(
        name="live-1", base_url=shared_router.base_url, token=shared_router.token
    )


def test_a_poll_reaches_a_signed_in_viewer_and_is_stored(
    router: Router, viewer: Any, shared_router: RouterProcess
) -> None:
    described = shared_router.parameters()
    headers = session_headers(viewer)

    async def scenario() -> tuple[dict, dict]:
        page = WebsocketCommunicator(application, f"/ws/routers/{router.name}/", headers=headers)
        overview = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
        assert (await page.connect())[0] and (await overview.connect())[0]
        poller = Poller(interval=0.25, timeout=2.0)
        assert await poller.poll(watch_of(router))
        await poller.close()  # flushes the buffered sample
        sample = await page.receive_json_from(timeout=5)
        summaries = await overview.receive_json_from(timeout=5)
        assert summaries["kind"] == "summaries"
        (summary,) = summaries["rows"]
        await page.disconnect()
        await overview.disconnect()
        return sample, summary

    sample, summary = run(scenario)
    assert sample["kind"] == "sample" and sample["up"] is True
    assert sample["parameters"] == {name: d["value"] for name, d in described.items()}
    assert set(sample["stages"]) == set(sample["sample"]["s"]) >= {"router", "connection"}
    assert sample["listen"] == shared_router.gnutella
    assert "peers" in sample and "log" in sample  # the first poll carries the details
    assert summary["router"] == "live-1" and summary["up"] is True
    stored = Sample.objects.get(router=router)
    assert stored.data == sample["sample"]
    router.refresh_from_db()
    assert router.up and router.listen == shared_router.gnutella


@pytest.mark.parametrize(
    ("who", "origin", "path"),
    [
        ("anonymous", ORIGIN, "/ws/routers/live-1/"),
        ("anonymous", ORIGIN, "/ws/overview/"),
        ("outsider", ORIGIN, "/ws/routers/live-1/"),
        ("viewer", b"http://evil.example", "/ws/routers/live-1/"),
        ("viewer", b"http://evil.example", "/ws/overview/"),
        ("viewer", ORIGIN, "/ws/routers/no-such-router/"),
    ],
)
def test_refused_websockets(
    router: Router, viewer: Any, outsider: Any, who: str, origin: bytes, path: str
) -> None:
    user = {"anonymous": None, "outsider": outsider, "viewer": viewer}[who]
    headers = session_headers(user, origin)

    async def scenario() -> bool:
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return bool(connected)

    assert run(scenario) is False
    # ... while the same user from the right origin, on an existing router, gets in.
    if who == "viewer":
        good_headers = session_headers(user)

        async def control() -> bool:
            communicator = WebsocketCommunicator(
                application, "/ws/routers/live-1/", headers=good_headers
            )
            connected, _ = await communicator.connect()
            await communicator.disconnect()
            return bool(connected)

        assert run(control) is True


def test_a_router_that_goes_away_is_down_and_is_picked_up_again(
    db: Any, viewer: Any, router_process: Any
) -> None:
    process = router_process()
    router = Router.objects.create(name="flaky", base_url=process.base_url, token=process.token)
    layer = get_channel_layer()

    async def poll(poller: Poller, watch: Watch) -> bool:
        return await poller.poll(watch)

    async def scenario_up() -> tuple[Poller, Watch, str, bool]:
        channel = await layer.new_channel()
        await layer.group_add(router.group, channel)
        poller = Poller(interval=0.25, timeout=1.0)
        watch = watch_of(router)
        ok = await poller.poll(watch)
        await poller.close()  # each scenario runs on a loop of its own
        return poller, watch, channel, ok

    poller, watch, channel, ok = run(scenario_up)
    assert ok and watch.up is True
    process.stop()

    async def scenario_down() -> dict:
        results = [await poll(poller, watch) for _ in range(DOWN_AFTER)]
        await poller.close()
        assert results == [False] * DOWN_AFTER
        # The first message is the sample from before; then the status change.
        while True:
            message = await layer.receive(channel)
            if message["type"] == "router.status":
                return dict(message["payload"])

    status = run(scenario_down)
    assert status["up"] is False and status["router"] == "flaky" and status["error"]
    router.refresh_from_db()
    assert router.up is False and router.last_error

    process.start()  # same ports

    async def scenario_back() -> bool:
        ok = await poller.poll(watch)
        await poller.close()
        return ok

    assert run(scenario_back) is True
    router.refresh_from_db()
    assert router.up is True and router.last_error == ""


def test_a_wrong_token_is_refused_by_the_router_and_shows_as_down(
    db: Any, shared_router: RouterProcess
) -> None:
    router = Router.objects.create(
        name="badtoken", base_url=shared_router.base_url, token="not-the-right-token-0000"
    )

    async def scenario() -> Watch:
        poller = Poller(interval=0.25, timeout=1.0)
        watch = watch_of(router)
        for _ in range(DOWN_AFTER):
            assert not await poller.poll(watch)
        await poller.close()
        return watch

    watch = run(scenario)
    assert watch.up is False and "401" in watch.error
    assert not Sample.objects.filter(router=router).exists()


def test_a_router_that_never_answers_does_not_hold_up_the_others(
    router: Router, shared_router: RouterProcess
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        stuck = Router.objects.create(name="stuck", base_url=f"http://127.0.0.1:{port}")

        async def scenario() -> list[str]:
            poller = Poller(interval=0.25, timeout=1.0)
            finished: list[str] = []

            async def one(watch: Watch) -> None:
                await poller.poll(watch)
                finished.append(watch.name)

            await asyncio.gather(one(watch_of(stuck)), one(watch_of(router)))
            await poller.close()
            return finished

        assert run(scenario) == ["live-1", "stuck"]


def test_the_poller_follows_the_router_list(db: Any, shared_router: RouterProcess) -> None:
    async def scenario() -> list[set[str]]:
        poller = Poller(interval=0.25, timeout=1.0)
        seen = []
        await poller.refresh_routers(start_tasks=False)
        seen.append({w.name for w in poller.watches.values()})
        await _create("added", shared_router)
        await poller.refresh_routers(start_tasks=False)
        seen.append({w.name for w in poller.watches.values()})
        await _disable("added")
        await poller.refresh_routers(start_tasks=False)
        seen.append({w.name for w in poller.watches.values()})
        await poller.close()
        return seen

    assert run(scenario) == [set(), {"added"}, set()]


async def _create(name: str, process: RouterProcess) -> None:
    from channels.db import database_sync_to_async

    await database_sync_to_async(Router.objects.create)(
        name=name, base_url=process.base_url, token=process.token
    )


async def _disable(name: str) -> None:
    from channels.db import database_sync_to_async

    await database_sync_to_async(lambda: Router.objects.filter(name=name).update(enabled=False))()


def test_a_running_poller_sends_a_routers_samples_only_while_its_page_is_open(
    router: Router, viewer: Any
) -> None:
    headers = session_headers(viewer)
    layer = get_channel_layer()

    async def scenario() -> tuple[list[str], dict]:
        listener = await layer.new_channel()  # on the router's group, but not a page
        await layer.group_add(router.group, listener)
        overview = WebsocketCommunicator(application, "/ws/overview/", headers=headers)
        assert (await overview.connect())[0]
        poller = Poller(interval=0.25, timeout=2.0)
        running = asyncio.ensure_future(poller.run())
        for _ in range(2):  # two rounds of polls have happened
            batch = await overview.receive_json_from(timeout=10)
            assert [row["router"] for row in batch["rows"]] == ["live-1"]
        unseen: list[str] = []
        try:
            await asyncio.wait_for(layer.receive(listener), timeout=0.5)
        except TimeoutError:
            unseen.append("no samples while no page is open")
        page = WebsocketCommunicator(application, f"/ws/routers/{router.name}/", headers=headers)
        assert (await page.connect())[0]
        sample = await page.receive_json_from(timeout=5)
        await page.disconnect()
        await overview.disconnect()
        poller.stop()
        await running
        return unseen, sample

    unseen, sample = run(scenario)
    assert unseen == ["no samples while no page is open"]
    assert sample["kind"] == "sample" and "graph" in sample  # the first one has the details
