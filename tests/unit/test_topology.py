"""Settings -> plan: the guide's topology, and Synapse's worker rules."""

import dataclasses

import pytest

from components.plan import topology
from components.plan import workers
from components.plan.errors import ConfigError
from components.plan.settings import load_settings
from components.render.synapse_config import render_homeserver
from components.plan.topology import PlanError, build_plan

GUIDE = {"client_sync": 1, "federation_reader": 1, "media": 1, "rooms": 4, "sender": 4, "tasks": 1}


SPREAD = ("typing", "to_device", "account_data", "presence", "receipts")


def plan_for(**counts):
    return build_plan(load_settings({"serverName": "example.org", "workers": counts}, "t"))


def test_guide_instance_map_and_writers():
    # The guide's worker page, section "Synapse Configuration".
    plan = plan_for(**GUIDE)
    assert list(plan.instance_map) == [
        "main", "client_sync1", "media1", "sender1", "sender2", "sender3", "sender4", "tasks1",
    ]
    assert plan.instance_map["client_sync1"].path == "/sockets/synapse_replication_client_sync1.sock"
    assert dict(plan.stream_writers) == {
        "typing": ("client_sync1",), "to_device": ("client_sync1",),
        "account_data": ("client_sync1",), "presence": ("client_sync1",),
        "receipts": ("client_sync1",), "events": ("tasks1",),
        # main's background update and media1's quarantine admin APIs write it.
        "quarantined_media_changes": ("main", "media1"),
    }
    assert plan.duties["federation_sender_instances"] == ["sender1", "sender2", "sender3", "sender4"]
    assert plan.duties["media_instance_running_background_jobs"] == "media1"
    assert plan.duties["run_background_tasks_on"] == "tasks1"
    assert plan.duties["pusher_instances"] == ["tasks1"]
    assert plan.duties["update_user_directory_from_worker"] == "client_sync1"
    # Main keeps the media repository (nginx's fallback): no enable_media_repo: false.
    assert "media" in plan.main.inbound_resources and plan.main.volumes == ("media",)


def test_guide_process_names():
    # The guide's Docker page lists 12 workers; with main, 13 Synapse processes.
    assert [p.name for p in plan_for(**GUIDE).processes] == [
        "main", "client_sync1", "federation_reader1", "media1", "rooms1", "rooms2", "rooms3",
        "rooms4", "sender1", "sender2", "sender3", "sender4", "tasks1",
    ]


def test_sockets_follow_the_roles():
    plan = plan_for(**GUIDE)
    rooms1, sender1, media1 = plan.process("rooms1"), plan.process("sender1"), plan.process("media1")
    # Rooms workers only take requests from nginx: inbound socket, no replication.
    assert rooms1.replication is None
    assert rooms1.inbound.path == "/sockets/synapse_inbound_rooms1.sock"
    assert rooms1.health == rooms1.inbound
    # Senders get no HTTP traffic: replication only, health-checked over it.
    assert sender1.inbound is None and sender1.health == sender1.replication
    assert media1.sockets == (
        "/sockets/synapse_replication_media1.sock", "/sockets/synapse_inbound_media1.sock",
    )
    assert plan.process("federation_reader1").replication is None


def test_second_instances_are_not_writers_and_not_in_instance_map():
    plan = plan_for(client_sync=1, rooms=2, tasks=2)
    assert plan.stream_writers["typing"] == ("client_sync1",)
    assert "rooms2" not in plan.instance_map
    # Events are sharded over every tasks worker; background jobs run once.
    assert plan.stream_writers["events"] == ("tasks1", "tasks2")
    assert plan.duties["run_background_tasks_on"] == "tasks1"
    assert "tasks2" in plan.instance_map


def test_client_sync_streams_spread_over_their_slots_and_wrap_round():
    one = plan_for(client_sync=1)
    assert {s: one.stream_writers[s] for s in SPREAD} == {s: ("client_sync1",) for s in SPREAD}
    two = plan_for(client_sync=2)
    assert [two.stream_writers[s] for s in SPREAD] == [
        ("client_sync1",), ("client_sync2",), ("client_sync1",), ("client_sync2",),
        ("client_sync1",)]
    six = plan_for(client_sync=6)
    assert [six.stream_writers[s] for s in SPREAD] == [(f"client_sync{i}",) for i in range(1, 6)]
    assert "client_sync5" in six.instance_map and "client_sync6" not in six.instance_map


def test_client_sync_beyond_the_stream_writers_changes_nothing_synapse_wide():
    five, nine = plan_for(client_sync=5), plan_for(client_sync=9)
    assert five.instance_map == nine.instance_map
    assert five.stream_writers == nine.stream_writers and five.duties == nine.duties


def test_a_class_with_no_workers_leaves_its_work_to_main():
    plan = plan_for(client_sync=0, media=0, tasks=0, sender=0)
    assert "typing" not in plan.stream_writers and "events" not in plan.stream_writers
    assert "federation_sender_instances" not in plan.duties
    assert "media" in plan.main.inbound_resources and plan.main.volumes == ("media",)


def test_main_serves_media_beside_the_media_workers():
    """So nginx can fall back to it, and media 0 -> 1 has no gap (workers.py)."""
    zero, one = plan_for(media=0), plan_for(media=1)
    assert zero.main == one.main
    assert one.process("media1").volumes == ("media",)
    assert "enable_media_repo" not in render_homeserver(one)


def test_scaling_rooms_changes_nothing_synapse_wide():
    small, big = plan_for(**GUIDE), plan_for(**{**GUIDE, "rooms": 8})
    assert small.instance_map == big.instance_map
    assert small.stream_writers == big.stream_writers and small.duties == big.duties


def test_check_plan_rejects_two_writers_of_a_single_writer_stream(monkeypatch):
    broken = dataclasses.replace(
        workers.BY_NAME["client_sync"],
        streams={"typing": workers.ALL},
    )
    table = tuple(broken if c.name == "client_sync" else c for c in workers.WORKER_CLASSES)
    monkeypatch.setattr(topology, "WORKER_CLASSES", table)
    with pytest.raises(PlanError, match="typing.*one writer"):
        plan_for(client_sync=2)


def test_too_many_processes_for_postgres_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        plan_for(rooms=48)
    assert err.value.key == "synapse:workers" and "database connections" in err.value.reason


def test_table_invariants():
    names = [c.name for c in workers.WORKER_CLASSES]
    assert len(names) == len(set(names))
    for c in workers.WORKER_CLASSES:
        for stream, slot in c.streams.items():
            if stream in workers.SINGLE_WRITER_STREAMS:
                assert slot != workers.ALL, (c.name, stream)


def test_every_media_process_and_main_write_quarantined_media_changes():
    # RoomWorkerStore._insert_quarantine_changes_txn asserts its caller is a writer:
    # main's background update, and the quarantine admin APIs on the media workers.
    assert plan_for(media=3).stream_writers["quarantined_media_changes"] == (
        "main", "media1", "media2", "media3")
    assert "media3" in plan_for(media=3).instance_map
    # No media worker: main serves the admin APIs and keeps Synapse's default.
    assert "quarantined_media_changes" not in plan_for(media=0).stream_writers


def test_large_preset_hands_every_stream_to_workers():
    plan = build_plan(load_settings({"serverName": "example.org", "preset": "large"}, "t"))
    assert dict(plan.stream_writers) == {
        "events": ("tasks1", "tasks2", "tasks3", "tasks4"),
        "typing": ("client_sync1",),
        "to_device": ("client_sync2",),
        "account_data": ("client_sync3",),
        "presence": ("client_sync4",),
        "receipts": ("client_sync5", "client_sync6"),
        "push_rules": ("client_sync3",),
        "device_lists": ("client_sync2", "client_sync6"),
        "thread_subscriptions": ("client_sync1",),
        "quarantined_media_changes": ("main", "media1", "media2"),
    }
    assert set(plan.stream_writers) == set(workers.STREAMS)
    for names in plan.stream_writers.values():
        assert all(n in plan.instance_map for n in names)


def test_large_preset_writers_wrap_round_when_counts_shrink():
    s = load_settings({"serverName": "example.org", "preset": "large",
                       "workers": {"client_sync": 2}}, "t")
    plan = build_plan(s)
    assert plan.stream_writers["receipts"] == ("client_sync1", "client_sync2")
    assert plan.stream_writers["device_lists"] == ("client_sync2",)
    # With no client_sync, its streams stay with main.
    s = load_settings({"serverName": "example.org", "preset": "large",
                       "workers": {"client_sync": 0}}, "t")
    assert "device_lists" not in build_plan(s).stream_writers


def test_stream_writers_setting_overrides_the_preset():
    s = load_settings({"serverName": "example.org", "preset": "large",
                       "streamWriters": {"device_lists": ["client_sync4"]}}, "t")
    assert build_plan(s).stream_writers["device_lists"] == ("client_sync4",)


def test_check_plan_rejects_a_routed_stream_on_a_process_nginx_cannot_reach(monkeypatch):
    broken = dataclasses.replace(workers.BY_NAME["sender"], streams={"typing": 1})
    table = tuple(broken if c.name == "sender" else c for c in workers.WORKER_CLASSES)
    monkeypatch.setattr(topology, "WORKER_CLASSES", table)
    with pytest.raises(PlanError, match=r"stream_writers.typing \(sender1\): sender1 does not serve the client API"):
        plan_for(client_sync=0, sender=1)


def test_table_and_presets_name_only_synapse_streams():
    for c in workers.WORKER_CLASSES:
        assert set(c.streams) <= set(workers.STREAMS), c.name
    for preset, streams in workers.PRESET_STREAMS.items():
        assert preset in workers.PRESETS and set(streams) <= set(workers.STREAMS)
        for stream, (cls, slots) in streams.items():
            assert cls in workers.BY_NAME
            if stream in workers.SINGLE_WRITER_STREAMS:
                assert slots != workers.ALL and len(slots) == 1, stream


def test_who_writes_with_main_comes_from_the_table_not_a_class_name(monkeypatch):
    """The media special case is the table's: any class given a stream main keeps
    writing for ALL its processes must write it with main."""
    rooms = dataclasses.replace(workers.BY_NAME["rooms"],
                                streams={"quarantined_media_changes": workers.ALL})
    table = tuple(rooms if c.name == "rooms" else c for c in workers.WORKER_CLASSES)
    monkeypatch.setattr(workers, "WORKER_CLASSES", table)
    names = workers.process_names({"media": 1, "rooms": 2})
    assert workers.must_write_with_main("quarantined_media_changes", names) == \
        ["main", "media1", "rooms1", "rooms2"]
    problems = workers.writer_problems("quarantined_media_changes", ["main", "media1"],
                                       {"main": "main", "media1": "media", "rooms1": "rooms",
                                        "rooms2": "rooms"}, names)
    assert problems == [(None, "must include rooms1, rooms2: main's background update and the "
                               "quarantine admin APIs (main or the media workers) write it")]


def _plan_on(image: str, preset: str, **raw):
    return build_plan(load_settings({"serverName": "example.org", "preset": preset,
                                     "images": {"synapse": image}, **raw}, "t"))


def test_streams_an_older_synapse_lacks_are_left_out():
    """Synapse's WriterLocations refuses a key it does not know: 1.140 has no
    quarantined_media_changes, 1.134 no device_lists or thread_subscriptions either
    (workers.STREAM_SINCE), so their keys go and the streams stay main's."""
    from components.render.synapse_config import render_homeserver
    import yaml

    current = _plan_on("matrixdotorg/synapse:v1.163.2", "large")
    assert {"quarantined_media_changes", "device_lists", "thread_subscriptions"} <= set(
        current.stream_writers)
    on_140 = _plan_on("matrixdotorg/synapse:v1.140.0", "large")
    assert "quarantined_media_changes" not in on_140.stream_writers
    assert on_140.stream_writers["device_lists"] == current.stream_writers["device_lists"]
    on_134 = _plan_on("matrixdotorg/synapse:v1.134.0", "large")
    assert not {"quarantined_media_changes", "device_lists", "thread_subscriptions"} & set(
        on_134.stream_writers)
    rendered = yaml.safe_load(render_homeserver(on_134))["stream_writers"]
    assert not {"quarantined_media_changes", "device_lists", "thread_subscriptions"} & set(rendered)
    # A tag naming no version is taken as current.
    assert _plan_on("matrixdotorg/synapse:latest", "large").stream_writers == current.stream_writers


def test_a_stream_writer_for_a_stream_the_image_lacks_is_refused():
    from components.plan.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _plan_on("matrixdotorg/synapse:v1.140.0", "one-of-each",
                 streamWriters={"quarantined_media_changes": ["main", "media1"]})
    assert e.value.path == ("streamWriters", "quarantined_media_changes")
    assert "Synapse 1.140" in str(e.value) and "new in 1.152" in str(e.value)
