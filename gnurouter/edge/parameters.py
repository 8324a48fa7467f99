"""The router's live-tunable parameters: which of its knobs the control API may turn.

The service builds the router; this module binds each tunable router option
(stage batch sizes and threads, routing rules, slots, timers, the packet log)
to the live object it tunes.  Kinds, ranges and descriptions are not restated
here: each comes from the option's declaration in `gnurouter.config`, which the
config file and the command line read too.  Conditioning policies register
their own (`Conditioning.register`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from gnurouter.seda.tuning import ControlAPI, Parameter, attribute_parameter, setting_parameter
from gnurouter.stages.catcher import CatcherHandler
from gnurouter.stages.router import RouterHandler

if TYPE_CHECKING:
    from gnurouter.ops.view import RouterView

#: Routing rules tunable live, each under router.NAME (see RoutingRules).
LIVE_RULES = (
    "max_ttl",
    "route_ttl",
    "route_table_max",
    "pongs_per_ping",
    "ping_rate_per_peer",
    "ping_mode",
    "flood_tableless_leaves",
    "qrp_update_interval",
    "tableless_leaf_grace",
    "dq_round_interval",
)


def register_parameters(router: RouterView, control: ControlAPI) -> None:
    """Every live-tunable parameter of a router, registered with its control API."""
    control_params: list[Parameter] = [
        attribute_parameter(f"stage.{name}.batch_size", "batch_size", stage, "batch_size")
        for name, stage in router.stages.items()
    ]
    router_stage = router.stages["router"]
    router_handler = router_stage.handler
    assert isinstance(router_handler, RouterHandler)
    control_params.append(
        attribute_parameter(
            "stage.router.threads",
            "router_threads",
            router_stage,
            "threads",
            high=router_stage.max_threads,
        )
    )
    control_params.append(
        attribute_parameter(
            "input.pause_length", "reader_pause_length", router.flow, "pause_length"
        )
    )

    def set_query_delay(value: float) -> None:
        router_handler.query_delay = value
        # A blocking handler must not run on the reactor thread.
        router_stage.blocking = value > 0

    control_params.append(
        setting_parameter(
            "router.query_delay",
            "query_delay",
            lambda: router_handler.query_delay,
            set_query_delay,
        )
    )
    control_params.extend(_rule_parameter(router, field_name) for field_name in LIVE_RULES)
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
        attribute_parameter("catcher.target_peers", "target_peers", catcher_handler, "target_peers")
    )
    control_params.extend(_live_network_parameters(router, catcher_handler))
    control_params.extend(_hops_flow_parameters(router_handler))
    for parameter in control_params:
        control.register(parameter)
    router.conditioning.register(control)


def _hops_flow_parameters(router_handler: RouterHandler) -> list[Parameter]:
    """The Hops-Flow policy (see gnurouter/routing/hopsflow.py), read on every look."""
    policy = router_handler.hops_flow.policy
    return [
        attribute_parameter(f"hops_flow.{name}", setting, policy, name)
        for name, setting in (
            ("enabled", "hops_flow"),
            ("delay_target", "hops_flow_delay_target"),
            ("hold", "hops_flow_hold"),
            ("neighbours", "hops_flow_neighbours"),
        )
    ]


def _live_network_parameters(router: RouterView, catcher: CatcherHandler) -> list[Parameter]:
    """Slot limits and the bootstrap switch (see gnurouter/mesh/handshaking.py)."""
    policy = router.policy

    def set_max_ultrapeers(value: int) -> None:
        policy.max_ultrapeers = value
        catcher.max_ultrapeers = value

    def set_max_peers(value: int) -> None:
        policy.max_peers = value
        catcher.max_peers = value

    return [
        setting_parameter("peers.max_peers", "max_peers", lambda: policy.max_peers, set_max_peers),
        setting_parameter(
            "peers.max_ultrapeers",
            "max_ultrapeers",
            lambda: policy.max_ultrapeers,
            set_max_ultrapeers,
        ),
        attribute_parameter("peers.max_leaves", "max_leaves", policy, "max_leaves"),
        attribute_parameter("peers.accept_legacy", "accept_legacy_peers", policy, "accept_legacy"),
        attribute_parameter("bootstrap.enabled", "bootstrap_enabled", router.bootstrap, "enabled"),
    ]


def _rule_parameter(router: RouterView, field_name: str) -> Parameter:
    return setting_parameter(
        f"router.{field_name}",
        field_name,
        lambda: getattr(router.routing.rules, field_name),
        lambda value: _set_rule(router, field_name, value),
    )


def _set_rule(router: RouterView, field_name: str, value: Any) -> None:
    router_handler = router.stages["router"].handler
    assert isinstance(router_handler, RouterHandler)
    rules = dataclasses.replace(router.routing.rules, **{field_name: value})
    with router_handler._lock:
        router.routing.apply_rules(rules)
