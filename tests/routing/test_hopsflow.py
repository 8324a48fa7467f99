"""The Hops-Flow controller: whom it slows down, how hard, and when it lets go."""

from __future__ import annotations

from gnurouter.routing.hopsflow import NO_LIMIT, HopsFlowController, HopsFlowPolicy

POLICY = HopsFlowPolicy(delay_target=0.1, hold=2.0, neighbours=2, start_hops=3, floor_hops=1)
NEIGHBOURS = [1, 2, 3, 4]


def look(
    controller: HopsFlowController, now: float, delay: float, fed: dict[int, int] | None = None
) -> list[tuple[int, int]]:
    return controller.update(now, delay, fed or {}, NEIGHBOURS)


def test_short_overload_sends_nothing() -> None:
    controller = HopsFlowController(POLICY)
    assert look(controller, 0.0, 0.5, {1: 100}) == []
    assert look(controller, 1.5, 0.5, {1: 100}) == []
    assert look(controller, 2.5, 0.01) == []  # recovered before the hold ran out
    assert controller.limits == {}


def test_lasting_overload_slows_the_biggest_feeders_step_by_step_then_lifts() -> None:
    controller = HopsFlowController(POLICY)
    fed = {1: 500, 2: 50, 3: 300, 4: 0}
    look(controller, 0.0, 0.5, fed)
    assert sorted(look(controller, 2.0, 0.5, fed)) == [(1, 3), (3, 3)]
    # Still overloaded a hold later: one hop less, never below the floor.
    assert sorted(look(controller, 4.0, 0.5, fed)) == [(1, 2), (3, 2)]
    assert sorted(look(controller, 6.0, 0.5, fed)) == [(1, 1), (3, 1)]
    assert look(controller, 8.0, 0.5, fed) == []
    assert controller.limits == {1: 1, 3: 1}
    # In between the target and half of it: no change either way.
    assert look(controller, 9.0, 0.07) == []
    # Recovered for a whole hold: every limit lifted.
    assert look(controller, 10.0, 0.01) == []
    assert sorted(look(controller, 12.0, 0.01)) == [(1, NO_LIMIT), (3, NO_LIMIT)]
    assert controller.limits == {}
    assert controller.state.sent == 6 and controller.state.lifted == 2


def test_only_eligible_neighbours_are_limited_and_departed_ones_forgotten() -> None:
    controller = HopsFlowController(POLICY)
    fed = {1: 500, 99: 1000}  # 99 is a leaf, say: not eligible
    look(controller, 0.0, 0.5, fed)
    assert look(controller, 2.0, 0.5, fed) == [(1, 3)]
    controller.forget(1)
    assert look(controller, 4.0, 0.01) == []
    assert controller.limits == {}


def test_switched_off_lifts_what_it_had_sent() -> None:
    controller = HopsFlowController(HopsFlowPolicy(**{**POLICY.__dict__}))
    look(controller, 0.0, 0.5, {2: 10})
    assert look(controller, 2.0, 0.5, {2: 10}) == [(2, 3)]
    controller.policy.enabled = False
    assert look(controller, 3.0, 0.5, {2: 10}) == [(2, NO_LIMIT)]
