"""The rollout order (components/plan/rollout.py): which processes roll, in which
order an up replaces them, and who serves each class meanwhile."""

from __future__ import annotations

import pytest

from components.plan import rollout
from components.render.containers import build_deployment
from components.plan.settings import load_settings
from components.plan.topology import build_plan
from components.plan.workers import PRESETS


def plan_of(preset: str, **workers):
    raw = {"serverName": "example.org", "preset": preset}
    if workers:
        raw["workers"] = {**PRESETS[preset], **workers}
    return build_plan(load_settings(raw, "test"))


def depends_on(plan):
    return {c.key: c.depends_on for c in build_deployment(plan).containers}


def test_only_processes_synapse_names_nowhere_roll():
    plan = plan_of("large")
    rolling = {p.name for p in plan.processes if rollout.rolls(plan, p.name)}
    assert rolling == {*(f"rooms{i}" for i in range(1, 9)), "federation_reader1",
                       "federation_reader2"}
    # Every writer, sender, pusher and duty holder is replaced with its class.
    assert not any(n.startswith(("sender", "tasks", "media", "client_sync")) for n in rolling)


@pytest.mark.parametrize("n, pairs", [
    (1, {}), (2, {"rooms2": "rooms1"}), (3, {"rooms3": "rooms1"}),
    (4, {"rooms3": "rooms1", "rooms4": "rooms2"}),
])
def test_the_second_half_waits_for_the_first_pair_by_pair(n, pairs):
    assert rollout.partners(plan_of("one-of-each", rooms=n)) == pairs


def test_a_shared_config_change_replaces_main_then_the_rest_then_the_second_half():
    plan = plan_of("specialized")
    synapse = {p.name for p in plan.processes}
    steps = rollout.order(depends_on(plan), synapse)
    assert steps[0] == ("main",)
    assert set(steps[1]) == synapse - {"main", "rooms3", "rooms4"}
    assert set(steps[2]) == {"rooms3", "rooms4"}


def test_unchanged_containers_take_no_step_but_keep_the_order():
    deps = {"a": (), "b": ("a",), "c": ("b",)}
    assert rollout.order(deps, {"a", "c"}) == [("a",), ("c",)]
    assert rollout.order(deps, {"c"}) == [("c",)]


def test_who_serves_while_every_synapse_process_restarts():
    plan = plan_of("specialized")
    everyone = {p.name for p in plan.processes}
    serving = rollout.serving(plan, depends_on(plan), everyone)
    assert serving["main"] == "down while it restarts"
    assert serving["rooms"].startswith("serves")  # rooms1/rooms3 never down together
    for cls in ("client_sync", "federation_reader", "media"):  # one process each
        assert serving[cls].startswith("main serves"), cls
    assert "typing" in rollout.writers_down(plan, everyone)
    assert "events" in rollout.writers_down(plan, everyone)


def test_a_class_with_one_process_left_running_serves():
    plan = plan_of("specialized")
    assert rollout.serving(plan, depends_on(plan), {"rooms1"})["rooms"].startswith("serves")
    assert rollout.serving(plan, depends_on(plan), {"rooms1"})["main"] == "serves"


def test_without_the_rolling_order_rooms_would_go_down_together():
    """The check can fail: the same processes with no partner are an antichain."""
    plan = plan_of("specialized")
    flat = {k: tuple(d for d in v if not d.startswith("rooms")) for k, v in depends_on(plan).items()}
    rooms = {f"rooms{i}" for i in range(1, 5)}
    assert rollout.serving(plan, flat, rooms)["rooms"].startswith("main serves")
