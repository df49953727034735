"""The render command: files and manifest without Pulumi, and what scaling changes."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.tools.render import deployment_for, main as render_main
from components.plan.errors import ConfigError
from components.plan.stack_config import apply_overrides, override_arg, parse_path
from components.render.synapse_config import PLACEHOLDERS

PROD = Path("config/Pulumi.prod.yaml")


@pytest.fixture(scope="module")
def prod_render(tmp_path_factory):
    out = tmp_path_factory.mktemp("prod")
    assert render_main(["--config", str(PROD), "--out", str(out)]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_prod_renders_the_guide_topology(prod_render):
    _, manifest = prod_render
    roles = [c["role"] for c in manifest["containers"]]
    assert roles.count("main") == 1 and roles.count("worker") == 12
    assert {r for r in roles} == {"main", "worker", "nginx", "nginx-config", "postgres", "redis",
                                  "prometheus", "live-config"}
    assert len(manifest["containers"]) == 19


def test_manifest_describes_each_container(prod_render):
    out, manifest = prod_render
    rooms3 = next(c for c in manifest["containers"] if c["process"] == "rooms3")
    assert rooms3["name"] == "synapse-prod-rooms3"
    assert rooms3["worker_class"] == "rooms"
    assert rooms3["image"].startswith("matrixdotorg/synapse:")
    assert rooms3["command"] == ["run", "--config-path=/conf/homeserver.yaml",
                                 "--config-path=/conf/workers/rooms3.yaml",
                                 "--config-path=/conf/live/reloadable.yaml"]
    assert rooms3["env"]["SYNAPSE_WORKER"] == "synapse.app.generic_worker"
    assert rooms3["healthcheck"]["test"][-2:] == ["/sockets/synapse_inbound_rooms3.sock",
                                                  "http://localhost/health"]
    assert rooms3["sockets"] == ["/sockets/synapse_inbound_rooms3.sock"]
    for path, rel in rooms3["files"].items():
        assert (out / rel).is_file(), path
    assert (out / rooms3["files"]["/conf/workers/rooms3.yaml"]).read_text().startswith(
        "worker_app: synapse.app.generic_worker")


def test_secrets_appear_only_as_placeholders(prod_render):
    out, manifest = prod_render
    pg = next(c for c in manifest["containers"] if c["role"] == "postgres")
    assert "POSTGRES_PASSWORD" not in pg["env"]
    password = out / "postgres" / pg["env"]["POSTGRES_PASSWORD_FILE"].lstrip("/")
    assert password.read_text().strip() == PLACEHOLDERS["postgresPassword"]
    key = (out / "main" / "conf" / "secrets" / "signing.key").read_text()
    assert key.strip() == PLACEHOLDERS["signingKey"]
    # Config files hold no secret at all, not even a placeholder.
    for path in out.rglob("*"):
        if path.is_file() and "/secrets/" not in str(path) and path.name != "manifest.json":
            assert "${secret:" not in path.read_text(), path


def test_bad_config_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  synapse:serverName: example.org\n  synapse:workers:\n    rooms: many\n")
    run = subprocess.run([sys.executable, "-m", "components.tools.render", "--config", str(bad),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"{bad}: Error in configuration at 'synapse:workers.rooms': must be an integer, got str 'many'"
    ]
    assert not (tmp_path / "out").exists()


def _files_by_container(deployment):
    return {c.key: (c.rendered_files(), c.command, dict(c.env), c.labels, c.mounts)
            for c in deployment.containers}


def test_raising_rooms_from_4_to_8_only_adds_workers_and_changes_nginx():
    before = _files_by_container(deployment_for(PROD))
    after = _files_by_container(deployment_for(PROD, {"workers": {
        "client_sync": 1, "federation_reader": 1, "media": 1, "rooms": 8, "sender": 4, "tasks": 1}}))
    assert set(after) - set(before) == {"rooms5", "rooms6", "rooms7", "rooms8"}
    changed = {k for k in before if before[k] != after[k]}
    # nginx itself reloads its config; Prometheus reads the new targets from the
    # files live-config publishes.
    assert changed == {"nginx-config", "live-config"}


def test_raising_senders_changes_every_synapse_process():
    # federation_sender_instances is shared config: every process must agree on it.
    before = _files_by_container(deployment_for(PROD))
    after = _files_by_container(deployment_for(PROD, {"workers": {"sender": 5, "rooms": 4}}))
    changed = {k for k in before if before[k] != after[k]}
    assert {"main", "rooms1", "tasks1"} <= changed and "postgres" not in changed


def test_set_values_are_yaml_and_keys_may_carry_the_namespace():
    # Shared by the render command and the replay's up/down.
    pairs = ["egress=false", "trustedKeyServers=[]", "serverName=x.org",
             'nginx={"clientPort": 1}', "synapse:workers={rooms: 8}"]
    assert dict(override_arg(p) for p in pairs) == {
        "egress": False, "trustedKeyServers": [], "serverName": "x.org",
        "nginx": {"clientPort": 1}, "workers": {"rooms": 8}}
    for bad in ("novalue", "=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            override_arg(bad)


@pytest.mark.parametrize("text, path", [
    ("workers.rooms", ("workers", "rooms")),
    ("synapse:workers.rooms", ("workers", "rooms")),
    ("nginx.adminAllow[0]", ("nginx", "adminAllow", 0)),
    ('extraConfig["a.b"].c', ("extraConfig", "a.b", "c")),
    ("preset", ("preset",)),
])
def test_config_paths_read_as_pulumi_config_set_path_does(text, path):
    assert parse_path(text) == path


@pytest.mark.parametrize("bad", ["workers..rooms", "[0]", "workers.", "a[x]", "a]b", ".a"])
def test_bad_config_paths_are_refused(bad):
    with pytest.raises(ConfigError):
        parse_path(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        override_arg(f"{bad}=1")


def test_a_dotted_set_changes_one_value_and_keeps_its_siblings():
    raw = {"workers": {"rooms": 4, "sender": 4}, "nginx": {"adminAllow": ["10.0.0.0/8"]}}
    out = apply_overrides(raw, {"workers.rooms": 8, "nginx.adminAllow[1]": "::1/128",
                                "log.level": "DEBUG"})
    assert out == {"workers": {"rooms": 8, "sender": 4},
                   "nginx": {"adminAllow": ["10.0.0.0/8", "::1/128"]},
                   "log": {"level": "DEBUG"}}
    assert raw["workers"]["rooms"] == 4  # the stack file's values are left alone


@pytest.mark.parametrize("path, key", [("serverName.x", "synapse:serverName"),
                                       ("workers[0]", "synapse:workers"),
                                       ("nginx.adminAllow[5]", "synapse:nginx.adminAllow[5]")])
def test_a_path_through_a_scalar_or_past_a_list_names_the_key(path, key):
    raw = {"serverName": "x.org", "workers": {}, "nginx": {"adminAllow": []}}
    with pytest.raises(ConfigError) as err:
        apply_overrides(raw, {path: 1})
    assert err.value.key == key


def test_render_command_takes_dotted_sets(tmp_path, capsys):
    assert render_main(["--config", str(PROD), "--out", str(tmp_path),
                        "--set", "workers.rooms=6", "--set", "log.level=DEBUG"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    names = {c["process"] for c in manifest["containers"]}
    assert {"rooms6", "sender4", "client_sync1"} <= names and "rooms7" not in names
    assert render_main(["--config", str(PROD), "--out", str(tmp_path),
                        "--set", "serverName.x=1"]) == 2
    assert "synapse:serverName" in capsys.readouterr().err
