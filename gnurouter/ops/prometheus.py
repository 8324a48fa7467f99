"""The metrics snapshot in the Prometheus text format, for existing Prometheus/Grafana setups.

Served by the control endpoint at `GET /metrics/prometheus` (behind the same
token as the rest of it; Prometheus sends it with `authorization:
{credentials: ...}` in the scrape config).  Built with the official
`prometheus_client` library from a fresh snapshot on every scrape, so there is
no second set of counters to keep in step with the router's own.

Names follow Prometheus conventions: counters end in `_total`, durations are
in seconds, one metric per quantity with the stage (and drop reason/kind) as
labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "SnapshotCollector", "registry_for", "render"]

PREFIX = "gnurouter"

# (snapshot key, metric suffix, help) for the per-stage numbers.
_STAGE_GAUGES = (
    ("queue_length", "stage_queue_length", "events waiting in the stage's queue"),
    ("peak_queue_length", "stage_queue_peak_length", "longest the queue has been"),
    ("threads", "stage_threads", "thread budget of the stage"),
    ("active_threads", "stage_active_threads", "threads running a batch right now"),
    ("batch_size", "stage_batch_size", "events handed to the handler per call"),
)
_STAGE_COUNTERS = (
    ("enqueued", "stage_enqueued", "events accepted into the queue"),
    ("housekeeping", "stage_housekeeping", "timer and lifecycle events (never refused)"),
    ("processed", "stage_processed", "events handled"),
    ("batches", "stage_batches", "handler calls"),
    ("handler_errors", "stage_handler_errors", "batches whose handler raised"),
    ("busy_seconds", "stage_busy_seconds", "time spent in the handler"),
)
_ROUTER_GAUGES = (
    ("peers", "peers", "established neighbours"),
    ("connections", "connections", "open links, handshaking included"),
    ("route_table", "route_table_entries", "entries in the duplicate/reverse route table"),
    ("push_routes", "push_routes", "servent IDs with a push route"),
    ("pong_cache", "pong_cache_entries", "pongs in the pong cache"),
    ("host_cache", "host_cache_entries", "addresses in the host cache"),
    ("paused_links", "paused_links", "links whose reading is paused (back-pressure)"),
)
_ROUTER_COUNTERS = (
    ("messages_in", "messages_in", "messages received from peers"),
    ("messages_out", "messages_out", "messages sent to peers"),
    ("routes_expired", "routes_expired", "routes expired by age"),
    ("routes_evicted", "routes_evicted", "routes evicted because the table was full"),
    ("packet_log_lines", "packet_log_lines", "lines written to the packet log"),
    (
        "packet_log_write_failures",
        "packet_log_write_failures",
        "packet log writes that failed (disk full, directory gone)",
    ),
    ("packet_log_lines_lost", "packet_log_lines_lost", "packet log lines lost to failed writes"),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def snapshot_metrics(snap: dict[str, Any]) -> Iterator[Metric]:
    """Every metric family for one metrics snapshot (see docs/architecture.md)."""
    name = f"{PREFIX}_info"
    info = GaugeMetricFamily(
        name, "the router's name and listening address", labels=["name", "listen"]
    )
    info.add_metric([str(snap.get("name", "")), str(snap.get("listen", ""))], 1.0)
    yield info
    yield GaugeMetricFamily(
        f"{PREFIX}_uptime_seconds", "seconds since the router started", value=snap["uptime"]
    )

    router = snap["router"]
    for key, suffix, text in _ROUTER_GAUGES:
        yield GaugeMetricFamily(f"{PREFIX}_{suffix}", text, value=router[key])
    for key, suffix, text in _ROUTER_COUNTERS:
        yield CounterMetricFamily(f"{PREFIX}_{suffix}", text, value=router[key])
    drops = CounterMetricFamily(
        f"{PREFIX}_drops", "messages dropped, by reason (all stages)", labels=["reason"]
    )
    for reason, count in sorted(router["drops"].items()):
        drops.add_metric([reason], count)
    yield drops
    yield from _neighbourhood_metrics(router)

    stages = snap["stages"]
    for key, suffix, text in _STAGE_GAUGES:
        family = GaugeMetricFamily(f"{PREFIX}_{suffix}", text, labels=["stage"])
        for stage, values in stages.items():
            family.add_metric([stage], values[key])
        yield family
    threshold = GaugeMetricFamily(
        f"{PREFIX}_stage_threshold",
        "queue length at which the stage refuses events (kind=refuse) or pauses input "
        "(kind=pause-input); absent when unbounded",
        labels=["stage", "kind"],
    )
    for stage, values in stages.items():
        if values["threshold"] is not None:
            threshold.add_metric([stage, values["threshold_kind"]], values["threshold"])
    yield threshold
    for key, suffix, text in _STAGE_COUNTERS:
        counter = CounterMetricFamily(f"{PREFIX}_{suffix}", text, labels=["stage"])
        for stage, values in stages.items():
            counter.add_metric([stage], values[key])
        yield counter
    stage_drops = CounterMetricFamily(
        f"{PREFIX}_stage_drops",
        "events refused or dropped by a stage, by reason and event kind",
        labels=["stage", "reason", "kind"],
    )
    for stage, values in stages.items():
        for reason, kinds in sorted(values["drops"].items()):
            for kind, count in sorted(kinds.items()):
                stage_drops.add_metric([stage, reason, kind], count)
    yield stage_drops
    for key, suffix, text in (
        ("queue_delay_ms", "stage_queue_delay_seconds", "time events wait in the queue"),
        ("service_time_ms", "stage_service_time_seconds", "handler time per event"),
    ):
        family = GaugeMetricFamily(
            f"{PREFIX}_{suffix}",
            text + " (recent window; quantile=1 is the maximum)",
            labels=["stage", "quantile"],
        )
        for stage, values in stages.items():
            window = values[key]
            for label, field in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"), ("1", "max")):
                if field in window:
                    family.add_metric([stage, label], window[field] / 1000.0)
        yield family

    parameters = GaugeMetricFamily(
        f"{PREFIX}_parameter",
        "numeric and on/off control parameters (see GET /parameters); unbounded ones are absent",
        labels=["name"],
    )
    for parameter, value in sorted(snap.get("parameters", {}).items()):
        number = _number(value)
        if number is not None:
            parameters.add_metric([parameter], number)
    yield parameters


def _neighbourhood_metrics(router: dict[str, Any]) -> Iterator[Metric]:
    """Leaves without a table, dynamic querying and the Hops-Flow we sent."""
    if "leaves_without_table" in router:
        yield GaugeMetricFamily(
            f"{PREFIX}_leaves_without_table",
            "leaves that have sent no complete QRP table",
            value=router["leaves_without_table"],
        )
    dynamic = router.get("dynamic_querying")
    if dynamic is not None:
        yield GaugeMetricFamily(
            f"{PREFIX}_dynamic_queries_active",
            "leaf queries being run by dynamic querying",
            value=dynamic["active"],
        )
        yield CounterMetricFamily(
            f"{PREFIX}_dynamic_queries",
            "leaf queries started by dynamic querying",
            value=dynamic["launched"],
        )
        yield CounterMetricFamily(
            f"{PREFIX}_dynamic_query_messages",
            "query copies and status requests dynamic querying sent",
            value=dynamic["messages_sent"],
        )
        ended = CounterMetricFamily(
            f"{PREFIX}_dynamic_queries_ended", "leaf queries ended, by why", labels=["outcome"]
        )
        for outcome, count in sorted(dynamic["outcomes"].items()):
            ended.add_metric([outcome], count)
        yield ended
    hops_flow = router.get("hops_flow")
    if hops_flow is not None:
        yield GaugeMetricFamily(
            f"{PREFIX}_hops_flow_overloaded",
            "1 while the router stage's delay is above the Hops-Flow target",
            value=1.0 if hops_flow["overloaded"] else 0.0,
        )
        yield CounterMetricFamily(
            f"{PREFIX}_hops_flow_sent",
            "Hops-Flow limits sent to neighbours",
            value=hops_flow["sent"],
        )
        yield CounterMetricFamily(
            f"{PREFIX}_hops_flow_lifted", "Hops-Flow limits lifted", value=hops_flow["lifted"]
        )
        limits = GaugeMetricFamily(
            f"{PREFIX}_hops_flow_limit",
            "the Hops-Flow a neighbour was asked to keep to (absent: none)",
            labels=["peer"],
        )
        for peer, hops in sorted(hops_flow["limits"].items()):
            limits.add_metric([peer], hops)
        yield limits


class SnapshotCollector:
    """A `prometheus_client` collector that reads a fresh snapshot on every scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_metrics(self._snapshot())


def registry_for(snapshot: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding one router's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
