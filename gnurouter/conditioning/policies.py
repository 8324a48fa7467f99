"""The conditioning policies of one router, built from its configuration and tunable live.

`Conditioning` owns every policy object, attaches them to the stages they
govern, registers their parameters with the control API and reports their
state for the metrics snapshot.  Stages only see the generic hooks
(`admission`, `dequeue_policies`, `classify`, `threads`); which policies sit
behind them is decided here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gnurouter.conditioning.classes import OTHER, QUERY, REPLY, ROUTER_CLASSES
from gnurouter.conditioning.clogged import OutputQueueLimits
from gnurouter.conditioning.codel import CoDel, CoDelPolicy
from gnurouter.conditioning.governor import ThreadGovernor
from gnurouter.conditioning.ordering import DependentMessages, is_control_event, is_control_send
from gnurouter.conditioning.query_filter import QueryFilter
from gnurouter.conditioning.response_time import ResponseTimeController
from gnurouter.conditioning.thresholds import QueueThreshold
from gnurouter.config import STAGE_THRESHOLD, RouterConfig, parse_policies
from gnurouter.seda.stage import SomeStage
from gnurouter.seda.tuning import ControlAPI, Parameter, attribute_parameter

#: Refusal thresholds for the message stages: 1000 is the SEDA experiment's.
DEFAULT_THRESHOLDS: dict[str, int | None] = {"router": 1000, "connection": 10_000, "catcher": 1000}
#: CoDel may govern these router classes; control traffic is never CoDel'd.
CODEL_CLASSES = (REPLY, OTHER, QUERY)
#: Everything in one queue: the original router's single FIFO.
FIFO = "fifo"
#: The router stage's queues, served in this order.
ROUTER_STAGE_CLASSES = (*ROUTER_CLASSES, FIFO)


class Conditioning:
    def __init__(self, config: RouterConfig, router_class: Callable[[Any], str]) -> None:
        policies = parse_policies(config.conditioning)
        self.config = config
        #: The router stage's classifier (which class an event is served in).
        self.router_class = router_class
        # Shedding and sojourn policies need queries in a queue of their own.
        self.priority_enabled = bool(
            policies & {"priority", "query-filter", "codel", "response-time"}
        )
        self.thresholds: dict[str, QueueThreshold] = {}
        self.thresholds_enabled = "threshold" in policies
        self.output_limits = OutputQueueLimits(
            max_bytes=config.peer_output_max_bytes, max_messages=config.peer_output_max_messages
        )
        self.output_limits.enabled = "clogged" in policies
        self.query_filter = QueryFilter(
            max_queued=config.query_max_queued,
            rate=config.query_rate,
            order=config.query_shed_order,
        )
        self.query_filter.enabled = "query-filter" in policies
        self.codel = CoDelPolicy(
            {c: CoDel(config.codel_target, config.codel_interval) for c in CODEL_CLASSES},
            {QUERY} if "codel" in policies else set(),
        )
        self._policies = policies

    def attach(self, stages: Mapping[str, SomeStage], stream_stages: set[str]) -> None:
        """Hook the policies into the stages they govern (once, after the graph is built)."""
        config = self.config
        self.router_stage = stages["router"]
        self.router_stage.classify = self._classify
        # Control traffic is never refused by a threshold (bounded per peer
        # upstream); replies never overtake what they answer.
        self.router_stage.guaranteed = is_control_event
        self.router_stage.ordering = DependentMessages()
        if "connection" in stages:
            stages["connection"].guaranteed = is_control_send
        for name, stage in stages.items():
            if name in stream_stages:
                continue
            threshold = QueueThreshold(
                config.stage_thresholds.get(name, DEFAULT_THRESHOLDS.get(name))
            )
            threshold.enabled = self.thresholds_enabled
            stage.admission.append(threshold)
            self.thresholds[name] = threshold
        self.router_stage.admission.append(self.query_filter)
        self.router_stage.dequeue_policies.append(self.codel)
        self.governor = ThreadGovernor(
            self.router_stage,
            interval=config.governor_interval,
            add_threshold=config.governor_add_threshold,
            min_threads=max(config.governor_min_threads, config.router_threads),
            max_threads=max(config.governor_max_threads, config.router_threads),
        )
        self.governor.enabled = "governor" in self._policies
        stage = self.router_stage
        if self.governor.enabled and stage.blocking and stage.threads < self.governor.min_threads:
            stage.threads = self.governor.min_threads
        self.response_time = ResponseTimeController(
            self.router_stage, self.query_filter, target=config.response_target
        )
        self.response_time.enabled = "response-time" in self._policies

    # -- classification ----------------------------------------------------

    def _classify(self, event: object) -> str:
        return self.router_class(event) if self.priority_enabled else FIFO

    # -- periodic controllers --------------------------------------------

    def timers(self) -> list[tuple[Callable[[], float], Callable[[], object]]]:
        """(interval getter, callable) pairs the service runs on LoopingCalls."""
        return [
            (lambda: self.governor.interval, self.governor.sample),
            (lambda: self.response_time.interval, self.response_time.sample),
        ]

    # -- control and metrics ---------------------------------------------

    def register(self, control: ControlAPI) -> None:
        def attr(
            name: str, kind: str, owner: object, attribute: str, description: str, **extra: Any
        ) -> None:
            control.register(
                Parameter(
                    name,
                    kind,
                    lambda: getattr(owner, attribute),
                    lambda value: setattr(owner, attribute, value),
                    description,
                    **extra,
                )
            )

        attr(
            "conditioning.priority.enabled",
            "bool",
            self,
            "priority_enabled",
            "serve control, replies and queries in separate queues, control first",
        )
        for name, threshold in self.thresholds.items():
            attr(
                f"stage.{name}.threshold",
                "int",
                threshold,
                "limit",
                STAGE_THRESHOLD.help,
                low=STAGE_THRESHOLD.low,
                high=STAGE_THRESHOLD.high,
                nullable=True,
            )
        attr(
            "conditioning.threshold.enabled",
            "bool",
            _Together(list(self.thresholds.values())),
            "enabled",
            "refuse events above each stage's threshold",
        )
        attr(
            "conditioning.threshold.displace",
            "bool",
            _Together(list(self.thresholds.values())),
            "displace",
            "a full queue sheds its least important class to admit a more important event",
        )
        limits = self.output_limits
        attr(
            "conditioning.clogged.enabled",
            "bool",
            limits,
            "enabled",
            "bound each peer's output queue, shedding least important messages first",
        )
        setting = attribute_parameter
        control.register(
            setting("conditioning.clogged.max_bytes", "peer_output_max_bytes", limits, "max_bytes")
        )
        control.register(
            setting(
                "conditioning.clogged.max_messages",
                "peer_output_max_messages",
                limits,
                "max_messages",
            )
        )
        query_filter = self.query_filter
        attr(
            "conditioning.query_filter.enabled",
            "bool",
            query_filter,
            "enabled",
            "limit queries at the router stage (everything else passes)",
        )
        control.register(
            setting(
                "conditioning.query_filter.max_queued",
                "query_max_queued",
                query_filter,
                "max_queued",
            )
        )
        control.register(
            setting("conditioning.query_filter.rate", "query_rate", query_filter, "rate")
        )
        attr(
            "conditioning.query_filter.burst",
            "int",
            query_filter,
            "burst",
            "queries admitted at once above the rate",
            low=1,
            high=1_000_000,
        )
        control.register(
            setting("conditioning.query_filter.order", "query_shed_order", query_filter, "order")
        )
        governor = self.governor
        attr(
            "conditioning.governor.enabled",
            "bool",
            governor,
            "enabled",
            "size the router stage's thread pool from its queue length",
        )
        for name, option in (
            ("add_threshold", "governor_add_threshold"),
            ("max_threads", "governor_max_threads"),
            ("min_threads", "governor_min_threads"),
        ):
            control.register(
                setting(
                    f"conditioning.governor.{name}",
                    option,
                    governor,
                    name,
                    high=self.router_stage.max_threads if name.endswith("threads") else None,
                )
            )
        attr(
            "conditioning.governor.add_when_saturated",
            "bool",
            governor,
            "add_when_saturated",
            "also add a thread when all threads are busy and work waits",
        )
        attr(
            "conditioning.governor.size_by_demand",
            "bool",
            governor,
            "size_by_demand",
            "jump to the threads Little's law says the offered load needs",
        )
        attr(
            "conditioning.governor.size_for_bursts",
            "bool",
            governor,
            "size_for_bursts",
            "keep a thread for each event of the largest recent burst",
        )
        attr(
            "conditioning.governor.retire_after",
            "duration",
            governor,
            "retire_after",
            "how long the stage must idle before a thread is retired",
            low=0.1,
            high=3600.0,
        )
        for event_class in CODEL_CLASSES:
            codel = self.codel.queues[event_class]
            control.register(self._codel_switch(event_class))
            for name in ("target", "interval"):
                control.register(
                    setting(
                        f"conditioning.codel.{event_class}.{name}", f"codel_{name}", codel, name
                    )
                )
        controller = self.response_time
        attr(
            "conditioning.response_time.enabled",
            "bool",
            controller,
            "enabled",
            "steer the query admission rate to keep query response time under target",
        )
        control.register(
            setting("conditioning.response_time.target", "response_target", controller, "target")
        )
        attr(
            "conditioning.response_time.percentile",
            "float",
            controller,
            "percentile",
            "which percentile of response time must stay under target",
            low=50.0,
            high=99.99,
        )

    def _codel_switch(self, event_class: str) -> Parameter:
        governed = self.codel.enabled_classes

        def switch(enabled: bool) -> None:
            if enabled:
                governed.add(event_class)
            else:
                governed.discard(event_class)
                self.codel.queues[event_class].dropping = False

        return Parameter(
            f"conditioning.codel.{event_class}.enabled",
            "bool",
            lambda: event_class in governed,
            switch,
            f"CoDel sojourn-time dropping for {event_class} messages",
        )

    def state(self) -> dict[str, Any]:
        stage = self.router_stage
        return {
            "priority": {"enabled": self.priority_enabled, "queues": stage.class_lengths()},
            "threshold": {
                "enabled": any(t.enabled for t in self.thresholds.values()),
                "limits": {name: t.limit for name, t in self.thresholds.items()},
            },
            "clogged": {
                "enabled": self.output_limits.enabled,
                "max_bytes": self.output_limits.max_bytes,
                "max_messages": self.output_limits.max_messages,
            },
            "query_filter": {
                "enabled": self.query_filter.enabled,
                "max_queued": self.query_filter.max_queued,
                "rate": self.query_filter.rate,
                "order": self.query_filter.order,
                "queued": stage.class_length(QUERY),
            },
            "governor": self.governor.state(),
            "codel": {
                event_class: {
                    **codel.state(),
                    "enabled": event_class in self.codel.enabled_classes,
                }
                for event_class, codel in self.codel.queues.items()
            },
            "response_time": self.response_time.state(),
        }


class _Together:
    """Sets one attribute on several objects at once (all thresholds on or off)."""

    def __init__(self, members: list[Any]) -> None:
        object.__setattr__(self, "_members", members)

    def __getattr__(self, name: str) -> Any:
        return all(getattr(member, name) for member in self._members)

    def __setattr__(self, name: str, value: Any) -> None:
        for member in self._members:
            setattr(member, name, value)
