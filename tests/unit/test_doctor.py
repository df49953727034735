"""The pre-flight (components/tools/doctor.py): each engine setting the provider model
says makes a stack drift, or fail, is named with its fix."""

from components.tools.doctor import Engine, findings

CLEAN = Engine(api_version="1.41", swap_limit=True, new_networks_ipv6=False,
               daemon_log_opts={"max-size": "10m"}, log_driver="json-file")


def test_a_clean_engine_has_nothing_to_say():
    assert findings(CLEAN, start_interval_s=0) == []


def test_each_drift_is_named_with_its_fix():
    engine = Engine(api_version="1.41", swap_limit=False, new_networks_ipv6=True,
                    daemon_log_opts={"max-file": "5", "compress": "true", "labels": "a"},
                    log_driver="json-file")
    found = findings(engine, start_interval_s=0)
    assert [f.fatal for f in found] == [False, False, False]
    ipv6, logs, swap = found
    assert "replace the stack's networks" in ipv6.what and '"ipv6": false' in ipv6.fix
    assert "['compress', 'labels']" in logs.what and "remove compress, labels" in logs.fix
    assert "memory_swap reads back as -1" in swap.what


def test_other_drivers_log_opts_do_not_reach_json_file():
    assert findings(Engine("1.41", True, False, {"compress": "true"}, "journald"), 0) == []


def test_start_interval_on_an_old_engine_is_fatal_and_on_a_new_one_fine():
    (old,) = findings(CLEAN, start_interval_s=1)
    assert old.fatal and "needs Docker API 1.44" in old.what and "1.41" in old.what
    assert findings(Engine("1.44", True, False, {}, "json-file"), 1) == []
    assert findings(Engine("1.47", True, False, {}, "json-file"), 1) == []
