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
messages).  Several pollers (on one machine or several) split the routers
between them through leases in the database (dashboard.routers.sharing); each
one downsamples the history of its own share, and reports its share, polls per
second, CPU per poll and lag in its lease (the Pollers page).

Each router is asked over one kept-alive HTTP connection
(routerclient.MetricsConnection); overview summaries go out as one batch per
poll interval rather than one message per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection, transaction

from dashboard.routers import history, sharing, stagegraph
from dashboard.routers.models import Router, Sample
from dashboard.routers.routerclient import MetricsConnection, RouterUnavailable

log = logging.getLogger(__name__)

OVERVIEW_GROUP = "overview"
#: Views ask the poller to poll a router at once (after a change) through this group.
POLLER_GROUP = "poller"
DOWN_AFTER = 2  # consecutive failures
DOWN_INTERVAL = 1.0  # seconds between polls of a router that is down
DETAIL_INTERVAL = 1.0  # peers table and packet-log tail at most this often
#: While nobody looks at a router's page it is asked for the brief snapshot
#: (routerclient.BRIEF_FIELDS), and for the whole one (its stage graph) this often.
FULL_INTERVAL = 10.0
FLUSH_INTERVAL = 1.0
DOWNSAMPLE_INTERVAL = 60.0
LAST_SEEN_INTERVAL = 5.0
#: A router page announces itself to the pollers this often while it is open
#: (consumers.RouterConsumer); a router's live samples go to the channel layer only
#: while a page has announced itself within VIEWED_FOR, as nobody else reads them.
VIEWER_RENEW = 5.0
VIEWED_FOR = 3 * VIEWER_RENEW
#: Channel-layer groups forget members after a day (channels_redis' group_expiry):
#: the poller joins its group again this often.
GROUP_REJOIN = 3600.0
#: Pollers take a PostgreSQL advisory lock (this class, router id) to downsample a router,
#: so two pollers never roll up the same rows while a router changes hands.
DOWNSAMPLE_LOCK = 0x6E7572


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
    #: Until when (monotonic) a router page is known to be open.
    viewed_until: float = 0.0
    last_full: float = 0.0

    @property
    def group(self) -> str:
        return f"router.{self.id}"


def live_payload(
    watch: Watch, snapshot: dict[str, Any], now: float, detail: bool, sample: dict[str, Any]
) -> dict:
    """What browsers on the router page get for one poll (`sample`: its compact form)."""
    payload: dict[str, Any] = {
        "kind": "sample",
        "router": watch.name,
        "up": True,
        "t": now,
        "sample": sample,
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


@dataclass
class PollerStats:
    """What a poller reports in its lease: counted since the last renewal."""

    polls: int = 0
    lags: list[float] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    cpu_since: float = field(default_factory=time.process_time)
    retention_at: datetime | None = None
    retention_ms: float = 0.0

    def facts(self, routers: list[int]) -> dict[str, Any]:
        """The lease's figures for the period just ended; starts the next one."""
        now, cpu = time.monotonic(), time.process_time()
        lags = sorted(self.lags)
        facts: dict[str, Any] = {
            "routers": routers,
            "polls_per_s": round(self.polls / max(now - self.since, 1e-3), 2),
            "cpu_per_poll_ms": round((cpu - self.cpu_since) * 1000 / max(self.polls, 1), 3),
            "lag_p50_ms": round(lags[len(lags) // 2] * 1000, 1) if lags else 0.0,
            "lag_p99_ms": round(lags[min(len(lags) - 1, len(lags) * 99 // 100)] * 1000, 1)
            if lags
            else 0.0,
            "retention_ms": round(self.retention_ms, 1),
        }
        if self.retention_at is not None:
            facts["retention_at"] = self.retention_at
        self.polls, self.lags, self.since, self.cpu_since = 0, [], now, cpu
        return facts


class Poller:
    def __init__(
        self,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        layer: Any = None,
        name: str | None = None,
    ) -> None:
        self.interval = settings.POLL_INTERVAL if interval is None else interval
        self.timeout = settings.POLL_TIMEOUT if timeout is None else timeout
        self.layer = layer if layer is not None else get_channel_layer()
        self.name = name or sharing.default_name()
        #: True while it runs (`run()`): it then takes only its share of the routers, and
        #: sends live samples only for routers whose page is open (it hears of them).
        self.sharing = False
        self.watches: dict[int, Watch] = {}
        #: Every router (enabled or not) whose history this poller downsamples.
        self.owned: set[int] = set()
        self.pending: list[Sample] = []
        #: One kept-alive connection per router (closed by `close()`: its loop may end).
        self.connections: dict[int, MetricsConnection] = {}
        self.summaries: dict[str, dict[str, Any]] = {}
        self.stats = PollerStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._lease_thread: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------

    async def run(self) -> None:
        """Poll its share of the routers until `stop()`; never raises for a router's sake."""
        log.info("poller %s: polling every %.2fs", self.name, self.interval)
        self.sharing = True
        with contextlib.suppress(Exception):  # (retried by the renewal job)
            await self.refresh_routers()  # its share first, so the first downsampling has it
        self._tasks = [
            asyncio.ensure_future(self._every(settings.POLLER_LEASE_RENEW, self.refresh_routers)),
            asyncio.ensure_future(self._every(FLUSH_INTERVAL, self.flush)),
            asyncio.ensure_future(self._every(self.interval, self.send_summaries)),
            asyncio.ensure_future(self._every(DOWNSAMPLE_INTERVAL, self.downsample)),
            asyncio.ensure_future(self._listen()),
        ]
        try:
            await self._stopping.wait()
        finally:
            with contextlib.suppress(Exception):  # the others take its routers at once
                await self._in_lease_thread(sharing.release, self.name)
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
        for open_connection in self.connections.values():
            open_connection.close()
        self.connections.clear()
        await self.send_summaries()
        await self.flush()
        if self._lease_thread is not None:
            with contextlib.suppress(Exception):
                await self._in_lease_thread(connection.close)  # that thread's own
            self._lease_thread.shutdown(wait=False)
            self._lease_thread = None

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

    async def _in_lease_thread(self, job: Any, *args: Any) -> Any:
        """Run `job` on the poller's own database thread for leases and the router list,
        so a renewal never waits behind history writes (a late one would cost the lease)."""
        if self._lease_thread is None:
            self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="poller-lease")

        def call() -> Any:
            close_old_connections()  # a connection past its age or broken: a fresh one
            return job(*args)

        return await asyncio.get_running_loop().run_in_executor(self._lease_thread, call)

    @staticmethod
    def _routers() -> list[tuple[int, str, str, str, bool]]:
        return list(Router.objects.values_list("id", "name", "base_url", "token", "enabled"))

    def _renew(self, facts: dict[str, Any]) -> list[str]:
        return sharing.renew(
            self.name,
            settings.POLLER_LEASE_TTL,
            host=socket.gethostname()[:200],
            pid=os.getpid(),
            **facts,
        )

    @database_sync_to_async
    def _stored_graphs(self, router_ids: list[int]) -> dict[int, Any]:
        return dict(Router.objects.filter(id__in=router_ids).values_list("id", "graph"))

    async def refresh_routers(self, start_tasks: bool = True) -> None:
        """Follow the router list (added, removed, edited) and, while sharing, renew the
        lease and keep to this poller's share."""
        routers = await self._in_lease_thread(self._routers)
        self.owned = {row[0] for row in routers}
        if self.sharing:
            facts = self.stats.facts(sorted(self.watches))
            live = await self._in_lease_thread(self._renew, facts)
            self.owned = sharing.share(self.owned, live, self.name)
        current = {row[0]: row for row in routers if row[4] and row[0] in self.owned}
        for router_id in list(self.watches):
            if router_id not in current:
                gone = self.watches.pop(router_id)
                if gone.task is not None:
                    gone.task.cancel()
                self._drop_connection(router_id)
                log.info("poller %s: no longer watching %s", self.name, gone.name)
        added: list[int] = []
        for router_id, (_, name, base_url, token, _) in current.items():
            watch = self.watches.get(router_id)
            if watch is None:
                watch = self.watches[router_id] = Watch(router_id, name, base_url, token)
                added.append(router_id)
                log.info("poller %s: watching %s at %s", self.name, name, base_url)
            elif (watch.base_url, watch.token) != (base_url, token):
                watch.base_url, watch.token = base_url, token
                self._drop_connection(router_id)
            watch.name = name
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

    def _drop_connection(self, router_id: int) -> None:
        dropped = self.connections.pop(router_id, None)
        if dropped is not None:
            dropped.close()

    async def _watch(self, watch: Watch) -> None:
        loop = asyncio.get_running_loop()
        due: float | None = None
        while True:
            started = loop.time()
            if due is not None:
                # How late this poll starts: the poller's own backlog (0 when woken early).
                self.stats.lags.append(max(0.0, started - due))
            try:
                await self.poll(watch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the watch
                log.exception("poller: polling %s failed", watch.name)
            pause = self.interval if watch.up else DOWN_INTERVAL
            due = started + pause
            watch.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.wake.wait(), max(0.0, due - loop.time()))

    async def _listen(self) -> None:
        """Poll a router at once when a view asks (a parameter just changed), and note
        which router pages are open.  A channel-layer failure (Redis away) is retried."""
        channel = await self.layer.new_channel()
        joined = -GROUP_REJOIN
        try:
            while True:
                try:
                    if time.monotonic() - joined >= GROUP_REJOIN:
                        await self.layer.group_add(POLLER_GROUP, channel)
                        joined = time.monotonic()
                    self._heard(await self.layer.receive(channel))
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.warning(
                        "poller %s: listening for views: %r; again in 1 s", self.name, error
                    )
                    joined = -GROUP_REJOIN
                    await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await self.layer.group_discard(POLLER_GROUP, channel)

    def _heard(self, message: dict[str, Any]) -> None:
        watch = self.watches.get(message.get("router_id"))  # type: ignore[arg-type]
        if watch is None:
            return
        if message.get("type") == "poll.now":
            watch.wake.set()
        elif message.get("type") == "router.viewed":
            now = time.monotonic()
            if watch.viewed_until < now:  # a first viewer: details and a sample now
                watch.last_detail = 0.0
                watch.wake.set()
            watch.viewed_until = now + VIEWED_FOR

    # -- one poll ----------------------------------------------------------

    async def poll(self, watch: Watch) -> bool:
        """Poll one router once; True if it answered."""
        self.stats.polls += 1
        viewed = not self.sharing or watch.viewed_until > time.monotonic()
        full = viewed or time.monotonic() - watch.last_full >= FULL_INTERVAL
        try:
            link = self.connections.get(watch.id)
            if link is None:
                link = MetricsConnection(watch.base_url, watch.token, self.timeout)
                self.connections[watch.id] = link
            snapshot = await link.fetch(brief=not full)
        except (RouterUnavailable, ValueError) as error:
            await self._failed(watch, str(error))
            return False
        now = time.time()
        was_up = watch.up
        watch.up, watch.failures, watch.error = True, 0, ""
        watch.listen = str(snapshot.get("listen", ""))
        graph_changed = False
        if full:
            watch.last_full = time.monotonic()
            graph_changed = self._take_graph(watch, snapshot.get("graph"))
        if was_up is not True:
            log.info("poller %s: %s is up (%s)", self.name, watch.name, watch.listen)
        sample = history.compact(snapshot)
        if viewed:
            detail = graph_changed or now - watch.last_detail >= DETAIL_INTERVAL
            tail = snapshot.get("packet_log_tail")
            tail = tail if isinstance(tail, list) else []
            if tail[-1:] != watch.last_log[-1:]:
                detail = True
            if detail:
                watch.last_detail, watch.last_log = now, tail
            payload = live_payload(watch, snapshot, now, detail, sample)
            await self._send(watch.group, "router.sample", payload)
        self.summaries[watch.name] = summary(watch, snapshot, now)
        moment = datetime.fromtimestamp(now, tz=UTC)
        self.pending.append(Sample(router_id=watch.id, time=moment, data=sample))
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
        log.warning("poller %s: %s is down: %s", self.name, watch.name, watch.error)
        watch.up = False
        now = time.time()
        await self._send(
            watch.group,
            "router.status",
            {"kind": "status", "router": watch.name, "up": False, "error": watch.error, "t": now},
        )
        self.summaries[watch.name] = summary(watch, None, now)
        await self._save_status(watch, None)

    async def send_summaries(self) -> None:
        """The overview rows that changed since the last call, as one message."""
        if not self.summaries:
            return
        rows, self.summaries = list(self.summaries.values()), {}
        await self._send(OVERVIEW_GROUP, "router.summaries", {"kind": "summaries", "rows": rows})

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
        """Apply the history tiers to this poller's routers (all of them when not sharing)."""
        close_old_connections()
        started = time.perf_counter()
        try:
            now = datetime.now(tz=UTC)
            owned = self.owned if self.sharing else set(Router.objects.values_list("id", flat=True))
            for router_id in sorted(owned):
                with transaction.atomic():
                    if not _downsample_lock(router_id):
                        continue  # its previous poller is still at it
                    history.downsample(
                        router_id,
                        now,
                        raw=settings.HISTORY_RAW,
                        medium=settings.HISTORY_MEDIUM,
                        retention=settings.HISTORY_RETENTION,
                    )
        finally:
            connection.close()  # this executor thread's own connection
        self.stats.retention_at = datetime.now(tz=UTC)
        self.stats.retention_ms = (time.perf_counter() - started) * 1000


def _downsample_lock(router_id: int) -> bool:
    """Take the router's downsampling lock for this transaction (PostgreSQL; elsewhere
    there is one writer at a time anyway); False if another poller holds it."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [DOWNSAMPLE_LOCK, router_id])
        return bool(cursor.fetchone()[0])
