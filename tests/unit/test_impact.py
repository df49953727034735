"""The impact report: actions and causes per container, Synapse's restart rules,
and agreement with the replay's own plan (the provider model applied to what the
program registers under mocks)."""

import json
from pathlib import Path

import pytest
import yaml

from components.tools import impact
from components.tools.impact import load_side
from tests.e2e.replay import engine, state as state_mod
from tests.e2e.replay.inputs import CONTAINER, is_no_op

PROD = Path("config/Pulumi.prod.yaml")
DEV = Path("config/Pulumi.dev.yaml")


def report(path, new, old=None):
    return impact.impact(load_side(path, old), load_side(path, new))


def synapse_names(side_report, prefix):
    return {c.container for c in side_report.changes
            if c.container.startswith(prefix) and c.container.rsplit("-", 1)[-1] not in
            ("postgres", "redis", "nginx", "config", "prometheus")}



def test_adding_rooms_replaces_no_synapse_container_and_nginx_reloads():
    r = report(PROD, {"workers.rooms": 8})
    # nginx reloads its routes, Prometheus reads its new targets (file_sd): the
    # two publishers are all that is replaced.
    assert r.actions() == {**{f"synapse-prod-rooms{i}": "create" for i in range(5, 9)},
                           "synapse-prod-nginx-config": "replace",
                           "synapse-prod-live-config": "replace"}
    # Their log config published first, then the new workers, then the routes.
    assert r.order == [["synapse-prod-live-config"],
                       [f"synapse-prod-rooms{i}" for i in range(5, 9)],
                       ["synapse-prod-nginx-config"]]
    publisher = next(c for c in r.changes if c.container == "synapse-prod-nginx-config")
    (conf,) = [c for c in publisher.causes if c["kind"] == "file"]
    assert conf["path"] == "/stage/nginx.conf"
    assert "+        server unix:/sockets/synapse_inbound_rooms8.sock max_fails=0;" in conf["diff"]
    assert any("reloads" in c["summary"] for c in publisher.causes)
    assert r.warnings == [] and r.volumes_created == [f"synapse-prod-rooms{i}-data" for i in range(5, 9)]
    # Prometheus scrapes the new workers from the target file live-config publishes.
    live = next(c for c in r.changes if c.container == "synapse-prod-live-config")
    (targets,) = [c for c in live.causes if c.get("path") == "/stage/prometheus/synapse.yml"]
    assert "+  - synapse-prod-rooms8:9000" in targets["diff"]
    assert any("nothing restarts" in c["summary"] for c in live.causes)


@pytest.mark.parametrize("old, new", [
    ({"workers.rooms": 8}, {"workers.rooms": 4}),
    ({}, {"workers.federation_reader": 3}),
    ({"preset": "large"}, {"preset": "large", "workers.client_sync": 8}),  # beyond the 5 writers
])
def test_cheap_scaling_touches_only_the_new_or_removed_workers_and_nginx_config(old, new):
    r = report(PROD, new, old)
    for c in r.changed():
        if c.action in ("replace", "update"):
            assert c.container in ("synapse-prod-nginx-config", "synapse-prod-live-config"), (
                c.container, c.causes)
    assert r.warnings == []


def test_scaling_down_leaves_the_data_volumes():
    r = report(PROD, {"workers.rooms": 4}, {"workers.rooms": 6})
    assert r.actions()["synapse-prod-rooms6"] == "delete"
    assert r.volumes_left == ["synapse-prod-rooms5-data", "synapse-prod-rooms6-data"]
    (cause,) = next(c for c in r.changes if c.container == "synapse-prod-rooms6").causes
    assert "synapse-prod-rooms6-data is retained" in cause["summary"]


def test_another_sender_replaces_every_synapse_process_and_warns_with_the_docs():
    r = report(PROD, {"workers.sender": 5})
    actions = r.actions()
    assert actions.pop("synapse-prod-sender5") == "create"
    # Every Synapse process, nginx-config and live-config (Prometheus's targets).
    assert set(actions.values()) == {"replace"} and len(actions) == 14
    assert "synapse-prod-nginx" not in actions and "synapse-prod-postgres" not in actions
    main = next(c for c in r.changes if c.container == "synapse-prod-main")
    assert [c["path"] for c in main.causes] == ["/conf/homeserver.yaml"]
    assert "+- sender5" in main.causes[0]["diff"]
    (warning,) = r.warnings
    assert "federation_sender_instances" in warning and "stopped at the same time" in warning


def test_a_memory_change_updates_in_place():
    r = report(PROD, {"sizes.small.memoryMb": 768})
    assert set(r.actions().values()) == {"update"}
    assert "synapse-prod-nginx" in r.actions()  # nginx and redis are small
    causes = next(c for c in r.changes if c.container == "synapse-prod-nginx").causes
    assert {c["input"] for c in causes} == {"memory", "memorySwap"}


def test_a_log_level_change_restarts_nothing_synapse_reloads_it():
    r = report(DEV, {"log.level": "DEBUG"})
    assert r.actions() == {"synapse-dev-live-config": "replace"}
    (publisher,) = r.changed()
    assert {c["path"] for c in publisher.causes if c["kind"] == "file"} == {
        f"/stage/log/{cls}.log.config" for cls in
        ("main", "client_sync", "federation_reader", "media", "rooms", "sender", "tasks")}
    assert any("SIGHUP" in c["summary"] for c in publisher.causes)
    assert r.serving == {}  # no process restarts


def test_a_cache_factor_change_restarts_nothing_synapse_reloads_it():
    r = report(DEV, {"extraConfig.caches.global_factor": 3})
    assert r.actions() == {"synapse-dev-live-config": "replace"}
    (publisher,) = r.changed()
    (cause,) = [c for c in publisher.causes if c["kind"] == "file"]
    assert cause["path"] == "/stage/reloadable.yaml" and "+  global_factor: 3" in cause["diff"]


def test_moving_work_from_main_to_a_new_class_and_back_warns():
    to_workers = report(DEV, {"preset": "one-of-each"}, {"preset": "monolith"})
    assert any("media goes 0 -> 1" in w and "media_instance_running_background_jobs" in w
               for w in to_workers.warnings)
    assert any("event persisters change ['main'] -> ['tasks1']" in w for w in to_workers.warnings)
    assert any("pushers change" in w for w in to_workers.warnings)
    back = report(DEV, {"preset": "monolith"})
    assert any("from tasks back to main" in w for w in back.warnings)
    assert back.actions()["synapse-dev-tasks1"] == "delete"


def test_an_image_change_warns_that_main_migrates_first():
    r = report(DEV, {"images.synapse": "matrixdotorg/synapse:v1.164.0"})
    assert set(r.actions()) == synapse_names(r, "synapse-dev-")
    assert any("migrates the schema" in w for w in r.warnings)


def test_a_changed_secret_names_its_files_without_their_content(tmp_path):
    old, new = tmp_path / "old" / "Pulumi.prod.yaml", tmp_path / "new" / "Pulumi.prod.yaml"
    for path, cipher in ((old, "v1"), (new, "v2")):
        path.parent.mkdir()
        doc = yaml.safe_load(PROD.read_text())
        doc["config"]["synapse:formSecret"] = {"secure": f"AAABA{cipher}"}
        path.write_text(yaml.safe_dump(doc))
    r = impact.impact(load_side(old), load_side(new))
    main = next(c for c in r.changes if c.container == "synapse-prod-main")
    assert main.action == "replace"
    assert main.causes == [{"kind": "secret_file", "path": "/conf/secrets/form_secret",
                            "summary": "secret file /conf/secrets/form_secret changed"}]
    assert "synapse-prod-postgres" not in r.actions()  # it never reads the form secret


def test_a_renewed_tls_certificate_replaces_only_nginx_config(tmp_path):
    """nginx reads the certificate from the volume nginx-config fills: a renewal
    is a reload, like a routing change, not a new nginx."""
    old, new = tmp_path / "old" / "Pulumi.prod.yaml", tmp_path / "new" / "Pulumi.prod.yaml"
    for path, cipher in ((old, "v1"), (new, "v2")):
        path.parent.mkdir()
        doc = yaml.safe_load(PROD.read_text())
        doc["config"]["synapse:nginx"]["tls"] = True
        doc["config"]["synapse:tlsCertificate"] = {"secure": f"AAABAcert{cipher}"}
        doc["config"]["synapse:tlsKey"] = {"secure": f"AAABAkey{cipher}"}
        path.write_text(yaml.safe_dump(doc))
    r = impact.impact(load_side(old), load_side(new))
    assert r.actions() == {"synapse-prod-nginx-config": "replace"}
    (change,) = r.changed()
    assert [c["path"] for c in change.causes if c["kind"] == "secret_file"] == [
        "/stage/tls/fullchain.pem", "/stage/tls/privkey.pem"]
    assert any("reloads" in c["summary"] for c in change.causes)


def test_json_lists_only_changed_containers(capsys):
    assert impact.main(["--config", str(PROD), "--against", str(PROD), "--set", "workers.rooms=5",
                        "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"changes", "warnings", "order", "serving", "writersDown", "unit"}
    assert out["unit"] == "container"
    assert [(c["container"], c["action"]) for c in out["changes"]] == [
        ("synapse-prod-live-config", "replace"), ("synapse-prod-rooms5", "create"),
        ("synapse-prod-nginx-config", "replace")]
    assert all(isinstance(c["causes"], list) and c["causes"] for c in out["changes"])


def test_enabling_backups_adds_one_container_and_never_prints_the_passphrase(capsys):
    passphrase = "do not print this passphrase"
    assert impact.main(["--config", str(PROD), "--against", str(PROD), "--set",
                        "backup.enabled=true", "--set", f"backupPassphrase={passphrase}"]) == 0
    out = capsys.readouterr().out
    assert passphrase not in out and "backupPassphrase=[secret]" in out
    assert "+ create    synapse-prod-backup" in out
    assert "volumes created: synapse-prod-backups" in out
    # Only live-config, for Prometheus's new target, is replaced.
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("+- replace")] == [
        "synapse-prod-live-config"]


def test_unchanged_config_reports_nothing(capsys):
    assert impact.main(["--config", str(PROD), "--against", str(PROD)]) == 0
    out = capsys.readouterr().out
    assert "no container changes" in out and "19 containers keep running" in out


@pytest.mark.parametrize("argv, key", [
    (["--set", "workers.room=8"], "synapse:workers.room"),
    (["--set", "workers.rooms=-1"], "synapse:workers.rooms"),
    (["--set", "serverName.x=1"], "synapse:serverName"),
])
def test_bad_new_config_exits_2_naming_the_key(argv, key, capsys):
    assert impact.main(["--config", str(PROD), "--against", str(PROD), *argv]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- the report predicts the replay's plan -----------------------------------------


def replay_plan(config, old_overrides, new_overrides):
    """The replay's plan for NEW against a state holding OLD as the provider stored
    it (the program registers read-back forms, so as registered)."""
    st = {"random": {}, "resources": {}}
    old = engine.capture_stack(config, old_overrides, st)
    for res in old.resources:
        if not is_no_op(res):
            st["resources"][state_mod.key_of(res.type, res.name)] = {
                "type": res.type, "inputs": engine.desired_inputs(res, {}),
                "options": engine._options(res)}
    new = engine.capture_stack(config, new_overrides, st)
    desired = {r.urn: engine.desired_inputs(r, {}) for r in new.resources if not is_no_op(r)}
    plan = engine.make_plan(new, st, desired)
    return {s.docker_name: s.action for s in plan.steps
            if s.type == CONTAINER and s.action != "same"}


@pytest.mark.parametrize("config, old, new", [
    (PROD, {}, {"workers.rooms": 8}),
    (PROD, {"workers.rooms": 8}, {"workers.rooms": 4}),
    (PROD, {}, {"workers.sender": 5}),
    (PROD, {}, {"sizes.small.memoryMb": 768}),
    (PROD, {}, {"sizes.medium.cpus": 3}),
    (DEV, {}, {"log.level": "DEBUG"}),
    (DEV, {"preset": "monolith"}, {"preset": "specialized"}),
    (DEV, {}, {"images.synapse": "matrixdotorg/synapse:v1.164.0"}),
    (DEV, {}, {"nginx.clientPort": 18008}),
], ids=lambda v: str(v) if isinstance(v, dict) else v.stem)
def test_the_report_predicts_the_replays_plan(config, old, new):
    predicted = report(config, new, old).actions()
    assert predicted == replay_plan(config, old, new)
    assert predicted  # every case changes something
