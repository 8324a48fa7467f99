"""The metrics snapshot: one JSON-ready dict describing a running router.

Counters are cumulative; the `*_per_s` fields are rates over the last
sampling interval (one second by default), computed by `MetricsSampler`.
The layout is documented in docs/architecture.md and is what the dashboard
and the overload benchmark read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gnurouter.conditioning.thresholds import threshold_of
from gnurouter.graph import describe as describe_graph
from gnurouter.seda.stage import SomeStage
from gnurouter.seda.stats import MetricsSampler

if TYPE_CHECKING:
    from gnurouter.ops.view import RouterView


def _ms(summary: dict[str, float]) -> dict[str, float]:
    return {key: round(value * 1000.0, 3) for key, value in summary.items()}


def stage_counters(stage: SomeStage) -> dict[str, float]:
    counters = stage.counters
    values: dict[str, float] = {
        f"stage.{stage.name}.arrivals": counters.enqueued + counters.housekeeping,
        f"stage.{stage.name}.completions": counters.processed,
        f"stage.{stage.name}.drops": stage.drop_count(),
    }
    for reason in list(stage.drops):
        values[f"stage.{stage.name}.drops.{reason}"] = stage.drop_count(reason)
    return values


def stage_snapshot(
    stage: SomeStage, sampler: MetricsSampler, pause_length: int | None
) -> dict[str, Any]:
    threshold = threshold_of(stage)
    with_drops = {reason: dict(kinds) for reason, kinds in stage.drops.items()}
    return {
        "name": stage.name,
        "queue_length": stage.queue_length,
        "peak_queue_length": stage.peak_queue_length,
        "threshold": threshold.limit if threshold is not None else pause_length,
        "threshold_kind": "refuse" if threshold is not None else "pause-input",
        "threads": stage.threads,
        "active_threads": stage.active_threads,
        "blocking": stage.blocking,
        "batch_size": stage.batch_size,
        "enqueued": stage.counters.enqueued,
        "housekeeping": stage.counters.housekeeping,
        "processed": stage.counters.processed,
        "batches": stage.counters.batches,
        "handler_errors": stage.counters.handler_errors,
        "guaranteed": stage.counters.guaranteed,
        "held_in_order": stage.counters.held_in_order,
        "busy_seconds": round(stage.counters.busy_seconds, 6),
        "arrivals_per_s": sampler.rate(f"stage.{stage.name}.arrivals"),
        "completions_per_s": sampler.rate(f"stage.{stage.name}.completions"),
        "drops": with_drops,
        "drops_total": stage.drop_count(),
        "drops_per_s": sampler.rate(f"stage.{stage.name}.drops"),
        "drops_per_s_by_reason": {
            reason: sampler.rate(f"stage.{stage.name}.drops.{reason}") for reason in with_drops
        },
        "queue_delay_ms": _ms(stage.queue_delay.summary()),
        "service_time_ms": _ms(stage.service_time.summary()),
        "classes": {
            name: {
                "queue_length": stage.class_length(name),
                "served": stage.class_taken[name],
                "queue_delay_ms": _ms(stage.class_delay[name].summary()),
                "response_ms": _ms(stage.class_response[name].summary()),
            }
            for name in stage.classes
        },
        "express": sorted(stage.express),
    }


def router_counters(service: RouterView) -> dict[str, float]:
    messages_in = messages_out = 0
    for peer in service.peers:
        messages_in += peer.counters.messages_in
        messages_out += peer.counters.messages_out
    # Departed peers' counts live on in the service totals.
    messages_in += service.peers.departed.messages_in
    messages_out += service.peers.departed.messages_out
    drops = sum(stage.drop_count() for stage in service.stages.values())
    return {
        "router.messages_in": messages_in,
        "router.messages_out": messages_out,
        "router.drops": drops,
    }


def snapshot(service: RouterView) -> dict[str, Any]:
    now = time.time()
    counters = router_counters(service)
    routing = service.routing
    stages = {
        name: stage_snapshot(
            stage,
            service.sampler,
            service.flow.pause_length if name in service.stream_stages else None,
        )
        for name, stage in service.stages.items()
    }
    drops_by_reason: dict[str, int] = {}
    for stage in stages.values():
        for reason, kinds in stage["drops"].items():
            drops_by_reason[reason] = drops_by_reason.get(reason, 0) + sum(kinds.values())
    peers = []
    routing_info = routing.peer_info
    for peer in service.peers:
        info = routing_info(peer.id)
        live = info.snapshot() if info is not None else {"role": peer.role}
        peers.append(
            {
                "id": peer.id,
                "address": peer.label,
                "listen_address": (
                    f"{peer.listen_address[0]}:{peer.listen_address[1]}"
                    if peer.listen_address
                    else None
                ),
                "direction": "out" if peer.outgoing else "in",
                "state": peer.state,
                "user_agent": peer.user_agent,
                "uptime": round(now - peer.connected_at, 3),
                "messages_in": peer.counters.messages_in,
                "messages_out": peer.counters.messages_out,
                "bytes_in": peer.counters.bytes_in,
                "bytes_out": peer.counters.bytes_out,
                "malformed": peer.counters.malformed,
                "queued_messages": len(peer.output),
                "queued_bytes": peer.output.bytes,
                "write_paused": peer.link.write_paused,
                "deflate_in": peer.connection.deflate_in,
                "deflate_out": peer.connection.deflate_out,
                "drops": dict(peer.counters.drops),
                "hops_flow_sent": peer.hops_flow_sent,
                **live,
            }
        )
    host, port = service.listening_address()
    return {
        "name": service.config_name,
        "time": now,
        "uptime": round(now - service.started_at, 3) if service.started_at else 0.0,
        "listen": f"{host}:{port}",
        "router": {
            "peers": sum(1 for peer in peers if peer["state"] == "established"),
            "connections": len(peers),
            "messages_in": counters["router.messages_in"],
            "messages_out": counters["router.messages_out"],
            "messages_in_per_s": service.sampler.rate("router.messages_in"),
            "messages_out_per_s": service.sampler.rate("router.messages_out"),
            "drops": drops_by_reason,
            "drops_total": counters["router.drops"],
            "drops_per_s": service.sampler.rate("router.drops"),
            "route_table": len(routing.seen),
            "push_routes": len(routing.push_routes),
            "routes_expired": routing.seen.expired + routing.push_routes.expired,
            "routes_evicted": routing.seen.evicted + routing.push_routes.evicted,
            "pong_cache": len(routing.pong_cache),
            "host_cache": len(service.hosts),
            "hosts_learned": dict(service.hosts.learned),
            "hosts_rejected": service.hosts.rejected,
            "roles": routing.counts(),
            "slots": {
                role: {"taken": taken, "limit": limit}
                for role, (taken, limit) in service.policy.slots().items()
            },
            "x_degree": service.policy.degree,
            "refused": dict(service.policy.refused),
            "leaf_guidance_declined": service.policy.leaf_guidance_declined,
            "qrp_errors": routing.qrp_errors,
            "leaves_without_table": routing.leaves_without_table(),
            "dynamic_querying": routing.dynamic.snapshot(),
            "hops_flow": routing.hops_flow.snapshot(),
            "rejected": dict(service.peers.rejected),
            "limits": routing.limit_counters(),
            "handshakes": {
                "open": len(service.handshakes),
                "limit": service.handshakes.limit,
                "per_address": service.handshakes.per_address,
                "displaced": dict(service.handshakes.displaced),
            },
            "bootstrap": service.bootstrap.snapshot(),
            "paused_links": service.flow.paused_links,
            "packet_log_lines": service.packet_log.lines_written,
            "packet_log_write_failures": service.packet_log.write_failures,
            "packet_log_lines_lost": service.packet_log.lines_lost,
        },
        "stages": stages,
        # The router says what it is made of: the dashboard draws this, never its own copy.
        "graph": describe_graph(),
        "peers": peers,
        "packet_log_tail": list(service.packet_log.tail)[-50:],
        "conditioning": service.conditioning.state(),
        "parameters": service.control.values(),
    }
