"""WebSocket consumers: the live feeds of the overview and of one router's page.

Connections go through `AllowedHostsOriginValidator` (a foreign Origin is
refused before the handshake completes) and `AuthMiddlewareStack` (the
Django session); a consumer refuses anyone who may not view routers.  The
poller (dashboard.routers.poller) sends to the groups; these only forward.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.routers.models import Router
from dashboard.routers.poller import OVERVIEW_GROUP
from dashboard.routers.roles import can_view


@database_sync_to_async
def _allowed(user: Any) -> bool:
    return can_view(user)


@database_sync_to_async
def _router_group(name: str) -> str | None:
    router = Router.objects.filter(name=name).only("id").first()
    return router.group if router is not None else None


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

    async def router_summary(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])

    async def router_audit(self, event: dict[str, Any]) -> None:
        await self.send_json(event["payload"])


class OverviewConsumer(_LiveConsumer):
    async def _group_for_scope(self) -> str | None:
        return OVERVIEW_GROUP


class RouterConsumer(_LiveConsumer):
    async def _group_for_scope(self) -> str | None:
        return await _router_group(self.scope["url_route"]["kwargs"]["name"])
