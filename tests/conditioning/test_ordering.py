"""The router stage's ordering rule on its own: hits wait behind their query, pushes
behind the hit naming their servent, and being held costs a reply nothing else."""

from __future__ import annotations

from typing import Any

from gnurouter.conditioning.classes import QUERY, ROUTER_CLASSES, message_class
from gnurouter.conditioning.ordering import DependentMessages, is_control_event
from gnurouter.conditioning.query_filter import QueryFilter
from gnurouter.protocol.messages import Message, Push, new_guid
from gnurouter.seda.stage import Stage
from gnurouter.stages.events import MessageArrived
from tests.fixtures import ManualExecutor, handshaking_peer, ping, query, query_hit

PEER = handshaking_peer("127.0.0.2")
SERVENT = bytes(range(100, 116))


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def handle_events(self, batch: list[Any]) -> None:
        self.messages += [event.message for event in batch]


def router_stage() -> tuple[Stage[Any], Recorder, ManualExecutor]:
    executor, recorder = ManualExecutor(), Recorder()
    stage: Stage[Any] = Stage(
        "router",
        recorder,
        executor,
        classes=ROUTER_CLASSES,
        classify=lambda event: message_class(event.message),
        batch_size=100,
    )
    stage.ordering = DependentMessages()
    return stage, recorder, executor


def arrived(*messages: Message) -> list[MessageArrived]:
    return [MessageArrived(PEER, message, None) for message in messages]


def push_for(servent_id: bytes) -> Message:
    return Message.from_body(new_guid(), 3, 0, Push(servent_id, 1, "10.0.0.1", 6346))


def test_hits_wait_for_their_query_and_pushes_for_the_hit_naming_their_servent() -> None:
    stage, recorder, executor = router_stage()
    asked = query("asked")
    hit = query_hit(asked.guid, SERVENT)
    push = push_for(SERVENT)
    unrelated_hit = query_hit(new_guid())
    unrelated_push = push_for(bytes(16))
    stage.enqueue_many(arrived(asked, hit, push, unrelated_hit, unrelated_push))
    executor.run()
    # Replies for nothing queued still go first; the dependent ones keep their place.
    assert recorder.messages == [unrelated_hit, unrelated_push, asked, hit, push]
    assert stage.counters.held_in_order == 2


def test_a_held_hit_is_never_shed_as_a_query() -> None:
    stage, recorder, executor = router_stage()
    query_filter = QueryFilter(max_queued=2, order="highest-hops")
    stage.admission.append(query_filter)
    asked = query("asked", hops=1)
    far_hit = query_hit(asked.guid)  # held behind `asked`, in the query queue
    far_hit = far_hit.forwarded(far_hit.ttl, 6)
    stage.enqueue_many(arrived(asked, far_hit))
    newcomer = query("newcomer", hops=0)
    assert stage.enqueue_many(arrived(newcomer)) == []
    executor.run()
    # The filter shed the query with the most hops (1), never the hit (6).
    assert recorder.messages == [far_hit, newcomer]
    query_filter.order = "oldest"
    again = query("again")
    held = query_hit(again.guid)
    latest = query("latest")
    stage.enqueue_many(arrived(again, held))
    assert stage.enqueue_many(arrived(query("later"))) == []
    assert stage.enqueue_many(arrived(latest)) == []
    executor.run()
    # Each newcomer shed the oldest query queued; the hit before them stayed.
    assert recorder.messages[2:] == [held, latest]


class DropEveryQuery:
    """A dequeue policy on the query class as harsh as can be (CoDel at its worst)."""

    def governs(self, event_class: str) -> bool:
        return event_class == QUERY

    def on_dequeue(
        self, stage: Any, event_class: str, sojourn: float, now: float, event: Any
    ) -> str:
        return "codel"


def test_a_held_hit_keeps_its_own_class_dequeue_policies() -> None:
    stage, recorder, executor = router_stage()
    stage.dequeue_policies.append(DropEveryQuery())
    stale = query("stale")
    hit = query_hit(stale.guid)
    stage.enqueue_many(arrived(stale, hit))
    executor.run()
    assert recorder.messages == [hit]
    assert stage.drops == {"codel": {"query": 1}}


def test_control_messages_are_what_no_threshold_refuses() -> None:
    keepalive, relayed = ping(ttl=1, hops=0), ping(ttl=3, hops=2)
    assert [is_control_event(e) for e in arrived(keepalive, relayed, query("q"))] == [
        True,
        False,
        False,
    ]
