"""The poller: asks every router for /metrics a few times a second and fans the answers out.

For each enabled `Router` one asyncio task polls `GET /metrics` every
`POLL_INTERVAL` (0.25 s) with a short timeout, sends the live sample to the
router's channel-layer group (the WebSocket consumers forward it to browsers)
and a summary to the overview group, and buffers a compact sample that is
written to the database once a second.  Every minute the history is
downsampled (dashboard.routers.history).  The stage graph a router reports
(dashboard.routers.stagegraph) is kept on its `Router` row whenever it changes,
and goes to the router's page with the peers table, at most once a second.

The router is only ever asked, never pushed to: a dashboard that is slow or
gone costs a router nothing.  A router that stops answering is shown as down
after `DOWN_AFTER` failed polls and is asked again every `DOWN_INTERVAL`, so
it is picked up as soon as it is back.  A browser that cannot keep up loses
samples in the channel layer (bounded) instead of slowing the poller.

It runs inside the dashboard's daphne process (`manage.py serve`, the
default, which works with the in-memory channel layer) or on its own
(`manage.py watch_routers`, with REDIS_URL set so daphne workers see its
messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection

from dashboard.routers import history, stagegraph
from dashboard.routers.models import Router, Sample
from dashboard.routers.routerclient import RouterUnavailable, fetch_metrics

log = logging.getLogger(__name__)

OVERVIEW_GROUP = "overview"
#: Views ask the poller to poll a router at once (after a change) through this group.
POLLER_GROUP = "poller"
DOWN_AFTER = 2  # consecutive failures
DOWN_INTERVAL = 1.0  # seconds between polls of a router that is down
DETAIL_INTERVAL = 1.0  # peers table and packet-log tail at most this often
ROUTERS_REFRESH = 2.0  # pick up added, removed, edited routers
FLUSH_INTERVAL = 1.0
DOWNSAMPLE_INTERVAL = 60.0
LAST_SEEN_INTERVAL = 5.0


@dataclass
class Watch:
    """What the poller knows about one router between polls."""

    id: int
    name: str
    base_url: str
    token: str
    up: bool | None = None  # None: not polled yet
    failures: int = 0
    error: str = ""
    last_detail: float = 0.0
    last_log: list[str] = field(default_factory=list)
    last_seen_saved: float = 0.0
    listen: str = ""
    #: The stage graph as the router last reported it (raw), and as kept (cleaned).
    reported_graph: Any = None
    graph: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def group(self) -> str:
        return f"router.{self.id}"


def live_payload(watch: Watch, snapshot: dict[str, Any], now: float, detail: bool) -> dict:
    """What browsers on the router page get for one poll."""
    payload: dict[str, Any] = {
        "kind": "sample",
        "router": watch.name,
        "up": True,
        "t": now,
        "sample": history.compact(snapshot),
        "stages": snapshot.get("stages", {}),
        "totals": snapshot.get("router", {}),
        "parameters": snapshot.get("parameters", {}),
        "uptime": snapshot.get("uptime"),
        "listen": snapshot.get("listen"),
    }
    if detail:
        payload["peers"] = snapshot.get("peers", [])
        payload["log"] = snapshot.get("packet_log_tail", [])
        payload["graph"] = stagegraph.for_page(watch.graph, list(payload["stages"]))
    return payload


def summary(watch: Watch, snapshot: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """One row of the overview page."""
    row: dict[str, Any] = {
        "kind": "summary",
        "router": watch.name,
        "up": bool(watch.up),
        "t": now,
        "error": watch.error,
        "listen": watch.listen,
    }
    if snapshot is not None:
        totals = snapshot.get("router", {})
        row.update(
            peers=totals.get("peers", 0),
            messages_in_per_s=totals.get("messages_in_per_s", 0.0),
            messages_out_per_s=totals.get("messages_out_per_s", 0.0),
            drops_per_s=totals.get("drops_per_s", 0.0),
            uptime=snapshot.get("uptime"),
        )
    return row


class Poller:
    def __init__(
        self,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        layer: Any = None,
    ) -> None:
        self.interval = settings.POLL_INTERVAL if interval is None else interval
        self.timeout = settings.POLL_TIMEOUT if timeout is None else timeout
        self.layer = layer if layer is not None else get_channel_layer()
        self.watches: dict[int, Watch] = {}
        self.pending: list[Sample] = []
        self.client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(0.5, self.timeout)),
                limits=httpx.Limits(max_keepalive_connections=64, max_connections=256),
            )
        return self.client

    async def run(self) -> None:
        """Poll until `stop()`; never raises for a router's sake."""
        log.info("poller: polling every %.2fs", self.interval)
        self._tasks = [
            asyncio.ensure_future(self._every(ROUTERS_REFRESH, self.refresh_routers)),
            asyncio.ensure_future(self._every(FLUSH_INTERVAL, self.flush)),
            asyncio.ensure_future(self._every(DOWNSAMPLE_INTERVAL, self.downsample)),
            asyncio.ensure_future(self._listen()),
        ]
        try:
            await self._stopping.wait()
        finally:
            await self.close()

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        tasks = self._tasks + [w.task for w in self.watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for watch in self.watches.values():
            watch.task = None
        await self.flush()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poller: %s failed", getattr(job, "__name__", job))
            await asyncio.sleep(interval)

    # -- routers -------------------------------------------------------------

    @database_sync_to_async
    def _enabled_routers(self) -> list[tuple[int, str, str, str]]:
        return list(
            Router.objects.filter(enabled=True).values_list("id", "name", "base_url", "token")
        )

    @database_sync_to_async
    def _stored_graphs(self, router_ids: list[int]) -> dict[int, Any]:
        return dict(Router.objects.filter(id__in=router_ids).values_list("id", "graph"))

    async def refresh_routers(self, start_tasks: bool = True) -> None:
        current = {row[0]: row for row in await self._enabled_routers()}
        for router_id in list(self.watches):
            if router_id not in current:
                gone = self.watches.pop(router_id)
                if gone.task is not None:
                    gone.task.cancel()
                log.info("poller: no longer watching %s", gone.name)
        added: list[int] = []
        for router_id, (_, name, base_url, token) in current.items():
            watch = self.watches.get(router_id)
            if watch is None:
                watch = self.watches[router_id] = Watch(router_id, name, base_url, token)
                added.append(router_id)
                log.info("poller: watching %s at %s", name, base_url)
            else:
                watch.name, watch.base_url, watch.token = name, base_url, token
        if added:
            # The graph each reported before (kept while a router reports none), so that
            # an unchanged graph is not written again.
            for router_id, graph in (await self._stored_graphs(added)).items():
                if router_id in self.watches:
                    self.watches[router_id].graph = stagegraph.clean(graph)
        if start_tasks:
            for watch in self.watches.values():
                if watch.task is None:
                    watch.task = asyncio.ensure_future(self._watch(watch))

    async def _watch(self, watch: Watch) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll(watch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the watch
                log.exception("poller: polling %s failed", watch.name)
            pause = self.interval if watch.up else DOWN_INTERVAL
            watch.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), max(0.0, pause - (loop.time() - started)))

    async def _listen(self) -> None:
        """Poll a router at once when a view asks (a parameter just changed)."""
        channel = await self.layer.new_channel()
        await self.layer.group_add(POLLER_GROUP, channel)
        try:
            while True:
                message = await self.layer.receive(channel)
                watch = self.watches.get(message.get("router_id"))
                if message.get("type") == "poll.now" and watch is not None:
                    watch.wake.set()
        finally:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(POLLER_GROUP, channel)

    # -- one poll ----------------------------------------------------------

    async def poll(self, watch: Watch) -> bool:
        """Poll one router once; True if it answered."""
        try:
            snapshot = await fetch_metrics(self._client(), watch.base_url, watch.token)
        except RouterUnavailable as error:
            await self._failed(watch, str(error))
            return False
        now = time.time()
        was_up = watch.up
        watch.up, watch.failures, watch.error = True, 0, ""
        watch.listen = str(snapshot.get("listen", ""))
        graph_changed = self._take_graph(watch, snapshot.get("graph"))
        detail = graph_changed or now - watch.last_detail >= DETAIL_INTERVAL
        tail = snapshot.get("packet_log_tail", [])
        if tail[-1:] != watch.last_log[-1:]:
            detail = True
        if detail:
            watch.last_detail, watch.last_log = now, tail
        if was_up is not True:
            log.info("poller: %s is up (%s)", watch.name, watch.listen)
        await self._send(watch.group, "router.sample", live_payload(watch, snapshot, now, detail))
        await self._send(OVERVIEW_GROUP, "router.summary", summary(watch, snapshot, now))
        moment = datetime.fromtimestamp(now, tz=UTC)
        self.pending.append(Sample(router_id=watch.id, time=moment, data=history.compact(snapshot)))
        if was_up is not True or graph_changed or now - watch.last_seen_saved >= LAST_SEEN_INTERVAL:
            watch.last_seen_saved = now
            await self._save_status(watch, moment, save_graph=graph_changed)
        return True

    @staticmethod
    def _take_graph(watch: Watch, reported: Any) -> bool:
        """Keep the stage graph the router reports; True if it is new or changed.

        A snapshot without one (an older router) leaves the last reported graph as it is.
        """
        if reported is None or reported == watch.reported_graph:
            return False
        watch.reported_graph = reported
        graph = stagegraph.clean(reported)
        if graph is None or graph == watch.graph:
            return False
        if watch.graph is not None:
            log.info("poller: %s reports a changed stage graph", watch.name)
        watch.graph = graph
        return True

    async def _failed(self, watch: Watch, error: str) -> None:
        watch.failures += 1
        watch.error = error[:300]
        if watch.up is False or (watch.up and watch.failures < DOWN_AFTER):
            return
        log.warning("poller: %s is down: %s", watch.name, watch.error)
        watch.up = False
        now = time.time()
        await self._send(
            watch.group,
            "router.status",
            {"kind": "status", "router": watch.name, "up": False, "error": watch.error, "t": now},
        )
        await self._send(OVERVIEW_GROUP, "router.summary", summary(watch, None, now))
        await self._save_status(watch, None)

    async def _send(self, group: str, kind: str, payload: dict[str, Any]) -> None:
        try:
            await self.layer.group_send(group, {"type": kind, "payload": payload})
        except Exception as error:  # e.g. Redis unreachable: history and polling go on
            log.warning("poller: channel layer send to %s failed: %s", group, error)

    @database_sync_to_async
    def _save_status(self, watch: Watch, seen: datetime | None, save_graph: bool = False) -> None:
        fields: dict[str, Any] = {"up": bool(watch.up), "last_error": watch.error}
        if seen is not None:
            fields.update(last_seen=seen, listen=watch.listen[:100])
        if save_graph:
            fields["graph"] = watch.graph
        Router.objects.filter(id=watch.id).update(**fields)

    # -- storage -----------------------------------------------------------

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        await self._store(batch)

    @database_sync_to_async
    def _store(self, batch: list[Sample]) -> None:
        known = set(
            Router.objects.filter(id__in={s.router_id for s in batch}).values_list("id", flat=True)
        )
        Sample.objects.bulk_create([s for s in batch if s.router_id in known])

    async def downsample(self) -> None:
        await sync_to_async(self._downsample_all, thread_sensitive=False)()

    def _downsample_all(self) -> None:
        close_old_connections()
        try:
            now = datetime.now(tz=UTC)
            for router_id in Router.objects.values_list("id", flat=True):
                history.downsample(
                    router_id,
                    now,
                    raw=settings.HISTORY_RAW,
                    medium=settings.HISTORY_MEDIUM,
                    retention=settings.HISTORY_RETENTION,
                )
        finally:
            connection.close()  # this executor thread's own connection
