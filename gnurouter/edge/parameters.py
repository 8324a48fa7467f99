"""The router's live-tunable parameters: what the control API may change, and its range.

The service builds the router; this module says which of its knobs an
operator may turn while it runs (stage batch sizes and threads, routing
rules, slots, timers, the packet log), each bound to the live object it tunes.
Conditioning policies register their own (`Conditioning.register`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from gnurouter.seda.tuning import ControlAPI, Parameter
from gnurouter.stages.catcher import CatcherHandler
from gnurouter.stages.router import RouterHandler

if TYPE_CHECKING:
    from gnurouter.ops.view import RouterView


def attribute_parameter(
    name: str, kind: str, owner: object, attribute: str, description: str, **limits: Any
) -> Parameter:
    """A parameter that reads and writes one attribute of a live object."""
    return Parameter(
        name,
        kind,
        lambda: getattr(owner, attribute),
        lambda value: setattr(owner, attribute, value),
        description,
        **limits,
    )


def register_parameters(router: RouterView, control: ControlAPI) -> None:
    """Every live-tunable parameter of a router, registered with its control API."""
    router = router
    control_params: list[Parameter] = []
    for name, stage in router.stages.items():
        control_params.append(
            attribute_parameter(
                f"stage.{name}.batch_size",
                "int",
                stage,
                "batch_size",
                "events handed to the handler per call",
                low=1,
                high=10_000,
            )
        )
    router_stage = router.stages["router"]
    router_handler = router_stage.handler
    assert isinstance(router_handler, RouterHandler)
    control_params.append(
        Parameter(
            "stage.router.threads",
            "int",
            lambda: router_stage.threads,
            lambda value: setattr(router_stage, "threads", value),
            "threads running the router stage",
            low=1,
            high=router_stage.max_threads,
        )
    )
    control_params.append(
        Parameter(
            "input.pause_length",
            "int",
            lambda: router.flow.pause_length,
            lambda value: setattr(router.flow, "pause_length", value),
            "reader/parser backlog at which sockets stop being read",
            low=1,
            high=10_000_000,
        )
    )

    def set_query_delay(value: float) -> None:
        router_handler.query_delay = value
        # A blocking handler must not run on the reactor thread.
        router_stage.blocking = value > 0

    control_params.append(
        Parameter(
            "router.query_delay",
            "duration",
            lambda: router_handler.query_delay,
            set_query_delay,
            "artificial blocking time per query (the SEDA experiment's bottleneck)",
            low=0.0,
            high=10.0,
        )
    )
    rule_ranges: dict[str, tuple[str, float, float]] = {
        "max_ttl": ("int", 1, 15),
        "route_ttl": ("duration", 1.0, 86_400.0),
        "route_table_max": ("int", 16, 10_000_000),
        "pongs_per_ping": ("int", 0, 1000),
        "ping_rate_per_peer": ("float", 0.001, 1000.0),
    }
    for field_name, (kind, low, high) in rule_ranges.items():
        control_params.append(_rule_parameter(router, field_name, kind, low, high))
    control_params.append(
        Parameter(
            "router.ping_mode",
            "choice",
            lambda: router.routing.rules.ping_mode,
            lambda value: _set_rule(router, "ping_mode", value),
            "answer pings from the pong cache, or flood them like the original",
            choices=("cache", "flood"),
        )
    )
    control_params.append(
        Parameter(
            "packet_log.enabled",
            "bool",
            lambda: router.packet_log.enabled,
            lambda value: setattr(
                router.packet_log, "enabled", value and router.packet_log.path is not None
            ),
            "write the packet log file (needs --packet-log)",
        )
    )
    catcher_handler = router.stages["catcher"].handler
    assert isinstance(catcher_handler, CatcherHandler)
    control_params.append(
        Parameter(
            "catcher.target_peers",
            "int",
            lambda: catcher_handler.target_peers,
            lambda value: setattr(catcher_handler, "target_peers", value),
            "ultrapeer links the catcher keeps up (connecting out as needed)",
            low=0,
            high=10_000,
        )
    )
    control_params.extend(_live_network_parameters(router, catcher_handler))
    for parameter in control_params:
        control.register(parameter)
    router.conditioning.register(control)


def _live_network_parameters(router: RouterView, catcher: CatcherHandler) -> list[Parameter]:
    """Slot limits, QRP and bootstrap switches (see gnurouter/mesh/handshaking.py)."""
    policy = router.policy

    def set_max_ultrapeers(value: int) -> None:
        policy.max_ultrapeers = value
        catcher.max_ultrapeers = value

    def set_max_peers(value: int) -> None:
        policy.max_peers = value
        catcher.max_peers = value

    return [
        Parameter(
            "peers.max_peers",
            "int",
            lambda: policy.max_peers,
            set_max_peers,
            "most neighbours of any role (new links are refused with 503 beyond it)",
            low=1,
            high=10_000,
        ),
        Parameter(
            "peers.max_ultrapeers",
            "int",
            lambda: policy.max_ultrapeers,
            set_max_ultrapeers,
            "ultrapeer (and old-style) slots; the X-Degree new handshakes advertise",
            low=0,
            high=10_000,
        ),
        attribute_parameter(
            "peers.max_leaves", "int", policy, "max_leaves", "leaf slots", low=0, high=10_000
        ),
        attribute_parameter(
            "peers.accept_legacy",
            "bool",
            policy,
            "accept_legacy",
            "accept servents that send no X-Ultrapeer header (as ultrapeers)",
        ),
        Parameter(
            "router.flood_tableless_leaves",
            "bool",
            lambda: router.routing.rules.flood_tableless_leaves,
            lambda value: _set_rule(router, "flood_tableless_leaves", value),
            "a leaf without a QRP table yet gets every query (else none until it sends one)",
        ),
        _rule_parameter(router, "qrp_update_interval", "duration", 1.0, 86_400.0),
        attribute_parameter(
            "bootstrap.enabled",
            "bool",
            router.bootstrap,
            "enabled",
            "ask GWebCaches for hosts when the host cache runs dry",
        ),
    ]


def _rule_parameter(
    router: RouterView, field_name: str, kind: str, low: float, high: float
) -> Parameter:
    return Parameter(
        f"router.{field_name}",
        kind,
        lambda: getattr(router.routing.rules, field_name),
        lambda value: _set_rule(router, field_name, value),
        low=low,
        high=high,
    )


def _set_rule(router: RouterView, field_name: str, value: Any) -> None:
    router_handler = router.stages["router"].handler
    assert isinstance(router_handler, RouterHandler)
    rules = dataclasses.replace(router.routing.rules, **{field_name: value})
    with router_handler._lock:
        router.routing.apply_rules(rules)
