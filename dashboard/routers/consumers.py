"""WebSocket consumers: the live feeds of the overview and of one router's page.

Connections go through `AllowedHostsOriginValidator` (a foreign Origin is
refused before the handshake completes) and `AuthMiddlewareStack` (the
Django session); a consumer refuses anyone who may not view routers.  The
poller (dashboard.routers.poller) sends to the groups; these only forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.routers.models import Router
from dashboard.routers.poller import OVERVIEW_GROUP, POLLER_GROUP, VIEWER_RENEW
from dashboard.routers.roles import can_view

log = logging.getLogger(__name__)


@database_sync_to_async
def _allowed(user: Any) -> bool:
    return can_view(user)


@database_sync_to_async
def _router(name: str) -> Router | None:
    return Router.objects.filter(name=name).only("id").first()


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def _group_for_scope(self) -> str | None:
        raise NotImplementedError

    async def connect(self) -> None:
        if not await _allowed(self.scope.get("user")):
            await self.close(code=4403)  # before accept: the handshake is refused (403)
            return
        self.group = await self._group_for_scope()
        if self.group is None:
            await self.close(code=4404)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Browsers only listen; anything they send is ignored."""

    async def router_sample(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def router_status(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def router_summaries(self, event: dict[str, Any]) -> None:
        """The overview rows of one poll interval, in one frame."""
        await self.send_json(event["payload"])

    async def router_audit(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])


class OverviewConsumer(_LiveConsumer):
    async def _group_for_scope(self) -> str | None:
        return OVERVIEW_GROUP


class RouterConsumer(_LiveConsumer):
    """One router's page; while it is open it tells the pollers so (every VIEWER_RENEW),
    as they send a router's live samples only while someone is looking."""

    router_id: int | None = None
    _announcing: asyncio.Task[None] | None = None

    async def _group_for_scope(self) -> str | None:
        router = await _router(self.scope["url_route"]["kwargs"]["name"])
        if router is None:
            return None
        self.router_id = router.pk
        return router.group

    async def connect(self) -> None:
        await super().connect()
        if self.router_id is not None and self.group is not None:
            self._announcing = asyncio.ensure_future(self._announce(self.router_id))

    async def _announce(self, router_id: int) -> None:
        while True:
            try:
                await self.channel_layer.group_send(
                    POLLER_GROUP, {"type": "router.viewed", "router_id": router_id}
                )
            except Exception as error:  # Redis away: the page gets samples once it is back
                log.warning("telling the pollers about a viewer failed: %s", error)
            await asyncio.sleep(VIEWER_RENEW)

    async def disconnect(self, code: int) -> None:
        if self._announcing is not None:
            self._announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcing
        await super().disconnect(code)
