"""The serving benchmark's arithmetic and report, on made-up figures (no Docker):
percentiles, which messages count as delivered, and commentary that follows the
figures instead of stating a conclusion."""

import json

import yaml

import pytest

from benchmarks import bench_serving as bs


def test_percentile_interpolates_between_ranks():
    assert bs._percentile([], 50) is None
    assert bs._percentile([3.0], 99) == 3.0
    assert bs._percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert bs._percentile(list(range(101)), 95) == 95


def members(rooms):
    out = []
    for room, names in rooms.items():
        for n in names:
            m = bs.Member(n, client=None)
            m.room_id = room
            out.append(m)
    return out


def test_a_message_is_delivered_only_when_every_other_member_saw_it():
    ms = members({"!a": ["u1", "u2", "u3"], "!b": ["u4", "u5"]})
    ledger = bs.Ledger()
    for body, sender, room, start in (("m1", "u1", "!a", 10.0), ("m2", "u4", "!b", 11.0),
                                      ("late", "u1", "!a", 30.0)):
        ledger.start[body], ledger.sender[body], ledger.room[body] = start, sender, room
        ledger.ack[body] = start + 0.05
    ledger.seen[("m1", "u2")] = 10.1
    ledger.seen[("m1", "u3")] = 10.3  # m1 complete
    ledger.seen[("m2", "u4")] = 11.0  # the sender itself does not count
    out = bs.summarise(ledger, ms, 0.0, 20.0, offered=1.0)
    assert out["sent"] == 2  # "late" started after the window
    assert out["delivered_per_s"] == pytest.approx(1 / 20)
    assert out["deliveries_missing"] == 1  # m2 never reached u5
    assert out["latency_ms_from_send_start"]["p50"] == pytest.approx(200.0)
    assert out["latency_ms_from_ack"]["p50"] == pytest.approx(150.0)


def window(seconds, by_class, engine=0.0):
    return {"seconds": seconds, "cpu_s": {f"c-{k}": v for k, v in by_class.items()},
            "cpu_by_class": dict(by_class), "host_busy_s": seconds, "generator_cpu_s": 0.1,
            "engine_cpu_s": engine, "probes": {}, "memory_mib": {}}


def preset(processes, idle, load, p50, delivered=10.0):
    lat = {"p50": p50, "p95": p50 * 2, "p99": p50 * 3}
    return {"processes": processes, "deploy_s": 30.0, "setup_s": 1.0, "probe_cost": {},
            "classes": {f"c-{k}": k for k in load},
            "idle": {**window(10, idle), "redis": {"calls": {}, "total_net_output_bytes": 0,
                                                    "subscribers": {}}},
            "fixed": {"offered_per_s": 10.0, "delivered_per_s": delivered, "sent": 100,
                      "latency_ms_from_send_start": lat, "latency_ms_from_ack": lat,
                      "failed_sends": 0, "skipped_sends": 0, "cpu": window(10, load),
                      "redis": {"calls": {"publish": 5}, "total_net_output_bytes": 100,
                                "subscribers": {"x": processes}},
                      "replication_http": {}},
            "steps": []}


def result(workers_p50, workers_cpu):
    return {"load": {"users": 4, "rooms": 2, "rate": 10.0, "window_s": 10, "warmup_s": 1,
                     "max_in_flight": 2, "sync_timeout_ms": 30000, "steps": []},
            "presets": {
                "monolith": preset(1, {"main": 0.1, "postgres": 0.1}, {"main": 2.0, "postgres": 1.0},
                                   50.0),
                "specialized": preset(13, {"main": 0.1, "rooms": 0.5, "postgres": 0.1},
                                      {"main": 0.5, "rooms": workers_cpu, "postgres": 1.0},
                                      workers_p50)}}


def test_commentary_follows_the_figures():
    worse = bs.markdown(result(workers_p50=90.0, workers_cpu=4.0), [])
    assert "higher at p50, p95, p99" in worse
    assert "Synapse used 0.45 cores against 0.20 (2.2x)" in worse
    better = bs.markdown(result(workers_p50=20.0, workers_cpu=1.0), [])
    assert "no higher at any percentile" in better
    assert "Synapse used 0.15 cores against 0.20 (0.8x)" in better
    json.dumps(result(1.0, 1.0))  # what run() returns must be JSON


def test_stack_files_are_bench_stacks_without_egress(tmp_path):
    path = bs.stack_file("large", tmp_path)
    config = yaml.safe_load(path.read_text())["config"]
    assert path.name == "Pulumi.bench-serving-large.yaml"
    assert config["synapse:preset"] == "large"
    assert config["synapse:egress"] is False and config["synapse:trustedKeyServers"] == []
    assert config["synapse:nginx"]["bindAddress"] == "127.0.0.1"


def test_saturation_counts_queueing_as_well_as_losses():
    def w(offered, delivered, p95):
        return {"offered_per_s": offered, "delivered_per_s": delivered,
                "latency_ms_from_send_start": {"p50": p95 / 2, "p95": p95, "p99": p95}}
    assert not bs.saturated(w(20, 20.0, 99.0))
    assert bs.saturated(w(40, 40.0, 977.0))  # all delivered, but queued
    assert bs.saturated(w(40, 30.0, 100.0))  # fast, but a quarter missing


def test_a_ceiling_is_the_machine_or_the_busiest_process_whichever_is_lower():
    model = {"idle_cores": 0.1, "cores_per_msg": 0.05, "busiest_cores_per_msg": 0.035}
    # 2 cores: (0.7 * 2 - 0.1) / 0.05 = 26 for the machine, 0.7 / 0.035 = 20 for one process.
    assert bs.ceiling(model, 2) == pytest.approx(20.0)
    assert bs.ceiling({**model, "busiest_cores_per_msg": 0.01}, 2) == pytest.approx(26.0)
    assert bs.ceiling(model, 16) == bs.ceiling(model, 2)  # one process does not scale out
