"""The production backends: PostgreSQL (DATABASE_URL) and the Redis channel layer (REDIS_URL).

Both are required under CI=true (fail, not skip); locally they are used when present.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client

from dashboard.project.config import channel_layers as layers_for
from dashboard.routers import history
from dashboard.routers.bootstrap import ensure_admin
from dashboard.routers.models import Router, Sample
from dashboard.routers.poller import Poller, Watch
from tests.dashboard.conftest import RouterProcess, require_postgresql, require_redis


def test_the_suite_runs_on_postgresql_when_database_url_says_so(db: Any) -> None:
    url = require_postgresql()
    assert connection.vendor == "postgresql", url
    with connection.cursor() as cursor:
        cursor.execute("select version()")
        assert "PostgreSQL" in cursor.fetchone()[0]
    # JSON history round-trips through jsonb and downsamples there too.
    router = Router.objects.create(name="pg", base_url="http://127.0.0.1:1")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    data = {"r": {"peers": 1, "in": 1.5, "out": 2.0, "drop": 0.0}, "s": {"router": {"q": 7}}}
    Sample.objects.bulk_create(
        Sample(router=router, time=now - timedelta(seconds=100 - i), data=data) for i in range(100)
    )
    made = history.downsample(router.pk, now, raw=30, medium=3600, retention=86400)
    assert made["medium"] >= 6
    assert Sample.objects.filter(router=router, resolution=10).first().data["s"]["router"]["q"] == 7


def test_first_run_creates_one_administrator_and_shows_the_password_once(db: Any) -> None:
    out = io.StringIO()
    password = ensure_admin(out)
    assert password and password in out.getvalue()
    client = Client()
    signed_in = client.post("/accounts/login/", {"username": "admin", "password": password})
    assert signed_in.status_code == 302 and "_auth_user_id" in client.session
    again = io.StringIO()
    assert ensure_admin(again) is None and again.getvalue() == ""


def redis_layer_and_page_headers(settings: Any, viewer: Any) -> list[tuple[bytes, bytes]]:
    """Switch to the Redis channel layer (a prefix of this test's own) and sign the viewer
    in; returns a page's WebSocket headers."""
    config = layers_for(require_redis())
    config["default"]["CONFIG"]["prefix"] = f"gnurouter-test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = config  # channels resets its layers on this signal
    assert type(channel_layers["default"]).__name__ == "RedisChannelLayer"
    client = Client()
    client.force_login(viewer)
    return [
        (b"origin", b"http://127.0.0.1"),
        (b"host", b"127.0.0.1"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]


@pytest.mark.network
@pytest.mark.django_db(transaction=True)
def test_live_samples_cross_processes_through_redis(
    settings: Any, shared_router: RouterProcess, viewer: Any
) -> None:
    """The poller and the daphne worker as separate layer instances, as in two processes."""
    headers = redis_layer_and_page_headers(settings, viewer)
    router = Router.objects.create(
        name="via-redis", base_url=shared_router.base_url, token=shared_router.token
    )
    from dashboard.project.asgi import application

    async def scenario() -> dict:
        page = WebsocketCommunicator(application, "/ws/routers/via-redis/", headers=headers)
        assert (await page.connect())[0]
        poller_layer = channel_layers.make_backend("default")  # a second, separate client
        assert poller_layer is not channel_layers["default"]
        poller = Poller(interval=0.25, timeout=2.0, layer=poller_layer)
        assert await poller.poll(Watch(router.pk, router.name, router.base_url, router.token))
        await poller.close()
        message = await page.receive_json_from(timeout=5)
        await page.disconnect()
        await poller_layer.flush()
        return dict(message)

    message = async_to_sync(scenario)()
    assert message["kind"] == "sample" and message["router"] == "via-redis"
    assert message["listen"] == shared_router.gnutella


@pytest.mark.network
@pytest.mark.django_db(transaction=True)
def test_a_page_open_on_a_worker_gets_samples_from_a_running_poller_through_redis(
    settings: Any, shared_router: RouterProcess, viewer: Any
) -> None:
    """The page tells the pollers it is open (they send only then), across processes."""
    headers = redis_layer_and_page_headers(settings, viewer)
    Router.objects.create(name="viewed", base_url=shared_router.base_url, token=shared_router.token)
    from dashboard.project.asgi import application

    async def scenario() -> dict:
        poller_layer = channel_layers.make_backend("default")
        poller = Poller(interval=0.25, timeout=2.0, layer=poller_layer)
        running = asyncio.ensure_future(poller.run())
        async with asyncio.timeout(10):  # its first renewal gives it the router
            while not poller.watches:
                await asyncio.sleep(0.05)
        page = WebsocketCommunicator(application, "/ws/routers/viewed/", headers=headers)
        assert (await page.connect())[0]
        message = await page.receive_json_from(timeout=5)
        await page.disconnect()
        poller.stop()
        await running
        await poller_layer.flush()
        return dict(message)

    message = async_to_sync(scenario)()
    assert message["kind"] == "sample" and message["router"] == "viewed"
