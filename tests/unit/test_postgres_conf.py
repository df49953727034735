"""Postgres tuning, overrides and the connection budget (components/plan/postgres_conf.py)."""

from __future__ import annotations

import pytest

from components.plan import postgres_conf
from components.plan.errors import ConfigError
from components.plan.settings import MAX_WORKERS_PER_CLASS, load_settings
from components.plan.topology import build_plan, postgres_settings
from components.plan.workers import PRESETS, WORKER_CLASSES


def _plan(**raw):
    return build_plan(load_settings({"serverName": "example.org", **raw}, "test"))


def test_the_guides_starting_point_for_4_cores_and_8_gb():
    t = postgres_conf.tuned(4, 8192)
    # The guide's Postgres page, "on a quad-core server with 8GB RAM".
    assert {k: t[k] for k in ("max_worker_processes", "max_parallel_workers",
                               "max_parallel_workers_per_gather",
                               "max_parallel_maintenance_workers", "effective_cache_size",
                               "effective_io_concurrency", "maintenance_work_mem",
                               "shared_buffers", "wal_buffers", "work_mem")} == {
        "max_worker_processes": "4", "max_parallel_workers": "4",
        "max_parallel_workers_per_gather": "2", "max_parallel_maintenance_workers": "1",
        "effective_cache_size": "2GB", "effective_io_concurrency": "200",
        "maintenance_work_mem": "512MB", "shared_buffers": "1GB", "wal_buffers": "32MB",
        "work_mem": "28MB"}
    assert t["max_connections"] == "500" and t["random_page_cost"] == "1.1"


def test_small_containers_get_postgres_sized_memory():
    t = postgres_conf.tuned(1, 512)
    assert t["shared_buffers"] == "64MB" and t["work_mem"] == "4MB"
    assert t["effective_cache_size"] == "128MB" and t["max_worker_processes"] == "2"


def test_commits_stay_durable():
    # synchronous_commit=off would acknowledge commits a crash can lose.
    for cpus, mem in ((1, 512), (2, 4096), (16, 65536)):
        assert "synchronous_commit" not in postgres_conf.tuned(cpus, mem)


def test_every_tuned_value_is_one_postgres_accepts():
    for cpus, mem in ((0.5, 64), (1, 512), (2, 4096), (4, 8192), (256, 1 << 20)):
        for name, value in postgres_conf.tuned(cpus, mem).items():
            assert postgres_conf.check(name, value) == value, (cpus, mem, name)


def test_the_stack_command_carries_the_size_class_and_overrides():
    plan = _plan(containerSizes={"postgres": "large"},
                 postgres={"settings": {"work_mem": "64MB", "jit": False}})
    s = postgres_settings(plan.settings)
    assert s["shared_buffers"] == "1GB" and s["work_mem"] == "64MB" and s["jit"] == "off"


GOOD = [
    ("work_mem", "64MB", "64MB"), ("work_mem", 4096, "4096"), ("shared_buffers", "1GB", "1GB"),
    ("random_page_cost", 1.5, "1.5"), ("jit", "off", "off"), ("jit", True, "on"),
    ("checkpoint_timeout", "30min", "30min"), ("log_min_duration_statement", "3s", "3s"),
    ("synchronous_commit", "OFF", "off"), ("max_connections", 1000, "1000"),
    ("statement_timeout", 0, "0"), ("wal_buffers", -1, "-1"),
]


@pytest.mark.parametrize("name,value,arg", GOOD)
def test_values_postgres_accepts(name, value, arg):
    assert postgres_conf.check(name, value) == arg


BAD = [
    ("listen_addresses", "*", "set by this program"),
    ("unix_socket_directories", "/tmp", "set by this program"),
    ("port", 5433, "set by this program"),
    ("shared_buffer", "1GB", "not a Postgres 15 setting"),
    ("work_mem", "10XB", "unit 'XB'"),
    ("work_mem", "1min", "unit 'min'"),
    ("work_mem", "32", "between 64 and"),
    ("work_mem", "lots", "must be a number"),
    ("work_mem", [1], "must be an integer"),
    ("shared_buffers", "64kB", "between 16 and"),
    ("checkpoint_timeout", "10s", "between 30 and 86400"),
    ("checkpoint_timeout", "2d", "between 30 and 86400"),
    ("max_connections", 0, "between 1 and"),
    ("max_connections", 1.5, "must be an integer"),
    ("max_connections", "10MB", "takes a bare number"),
    ("jit", "maybe", "on or off"),
    ("jit", 2, "on or off"),
    ("synchronous_commit", "sometimes", "must be one of"),
    ("random_page_cost", -1, "between 0 and"),
    ("checkpoint_completion_target", 1.5, "between 0 and 1"),
    ("effective_io_concurrency", 1001, "between 0 and 1000"),
    ("enable_partitionwise_join", 1.0, "on or off"),
    ("max_parallel_workers", True, "must be an integer"),
]


@pytest.mark.parametrize("name,value,reason", BAD)
def test_values_postgres_refuses_are_refused_naming_the_key(name, value, reason):
    with pytest.raises(ConfigError) as err:
        load_settings({"serverName": "example.org", "postgres": {"settings": {name: value}}}, "t")
    assert err.value.key == f"synapse:postgres.settings.{name}"
    assert reason in err.value.reason, err.value.reason


def test_postgres_section_shapes_are_checked():
    for raw, key in (({"postgres": []}, "synapse:postgres"),
                     ({"postgres": {"tuning": {}}}, "synapse:postgres.tuning"),
                     ({"postgres": {"settings": "work_mem=1MB"}}, "synapse:postgres.settings")):
        with pytest.raises(ConfigError) as err:
            load_settings({"serverName": "example.org", **raw}, "t")
        assert err.value.key == key, err.value


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_fits_the_default_connection_limit(preset):
    plan = _plan(preset=preset)
    assert len(plan.processes) * postgres_conf.DB_POOL_MAX + postgres_conf.RESERVED_CONNECTIONS \
        <= postgres_conf.max_connections(postgres_settings(plan.settings))


def test_largest_layout_that_fits_and_the_first_that_does_not():
    # 48 processes x 10 + 20 = 500 fits; one more does not.
    fits = {c.name: 0 for c in WORKER_CLASSES} | {"rooms": 47}
    assert len(_plan(workers=fits).processes) == 48
    with pytest.raises(ConfigError) as err:
        _plan(workers={**fits, "rooms": 48})
    assert err.value.key == "synapse:workers"
    assert "49 Synapse processes x cp_max 10 = 490" in err.value.reason
    assert "max_connections >= 510; Postgres allows 500" in err.value.reason


def test_every_allowed_layout_either_fits_or_is_refused_with_the_numbers():
    everything = {c.name: MAX_WORKERS_PER_CLASS for c in WORKER_CLASSES}
    n = 1 + len(WORKER_CLASSES) * MAX_WORKERS_PER_CLASS
    need = n * postgres_conf.DB_POOL_MAX + postgres_conf.RESERVED_CONNECTIONS
    with pytest.raises(ConfigError) as err:
        _plan(workers=everything)
    assert f"need max_connections >= {need}" in err.value.reason
    plan = _plan(workers=everything, postgres={"settings": {"max_connections": need}})
    assert len(plan.processes) == n


def test_a_lowered_max_connections_is_refused_at_its_key():
    with pytest.raises(ConfigError) as err:
        _plan(preset="large", postgres={"settings": {"max_connections": 100}})
    assert err.value.key == "synapse:postgres.settings.max_connections"
    assert "Postgres allows 100" in err.value.reason
