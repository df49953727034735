"""The impact report for a Swarm stack: per service update, create or delete and
why, how Swarm rolls each update, and who serves meanwhile."""

import json
from pathlib import Path

from components.tools import impact
from components.tools.impact import load_side
from components.tools.swarm_impact import swarm_impact

SWARM = Path("config/Pulumi.swarm.yaml")
P = "synapse-swarm"


def report(new, old=None):
    return swarm_impact(load_side(SWARM, old), load_side(SWARM, new))


def test_a_log_level_change_updates_every_synapse_service_by_its_order():
    r = report({"log.level": "WARNING"})
    synapse = {f"{P}-{n}" for n in ("main", "client-sync1", "federation-reader1", "media1",
                                     "rooms1", "sender1", "tasks1")}
    assert r.actions() == {n: "update" for n in synapse}
    notes = {c.container: c.causes[-1]["summary"] for c in r.changed()}
    assert "start-first" in notes[f"{P}-rooms1"] and "start-first" in notes[f"{P}-federation-reader1"]
    for n in ("main", "client-sync1", "sender1", "tasks1", "media1"):
        assert "stop-first" in notes[f"{P}-{n}"], n
    assert r.order[0] == [f"{P}-main"]  # workers wait for main
    assert r.serving["rooms"] == "serves" and "main serves" in r.serving["media"]
    assert "presence" in r.writers_down


def test_scaling_rooms_creates_services_and_rolls_nginx_onto_its_new_routes():
    r = report({"workers.rooms": 3})
    assert r.actions() == {f"{P}-rooms2": "create", f"{P}-rooms3": "create", f"{P}-nginx": "update"}
    nginx = next(c for c in r.changed() if c.container == f"{P}-nginx")
    changed = [c["path"] for c in nginx.causes if c["kind"] == "file"]
    assert changed == ["/etc/nginx/live/nginx.conf", "/etc/nginx/run.sh"]
    assert "stop-first" in nginx.causes[-1]["summary"]
    assert r.volumes_created == [f"{P}-rooms2-data", f"{P}-rooms3-data"]
    assert r.order == [[f"{P}-rooms2", f"{P}-rooms3"], [f"{P}-nginx"]]


def test_scaling_down_leaves_the_volumes_on_their_node():
    r = report({"workers.rooms": 1}, {"workers.rooms": 2})
    assert r.actions()[f"{P}-rooms2"] == "delete"
    assert r.volumes_left == [f"{P}-rooms2-data"]


def test_a_secret_change_names_the_secret_not_its_value(capsys):
    r = report({"registrationSharedSecret": "a-new-secret-of-enough-length"})
    main = next(c for c in r.changed() if c.container == f"{P}-main")
    assert [c["summary"] for c in main.causes if c["kind"] == "secret_file"] == [
        "secret /conf/secrets/registration_shared_secret changed: a new secret is created"]
    assert "a-new-secret" not in json.dumps(r.to_json())


def test_the_command_reports_services_and_refuses_a_change_of_target(capsys):
    assert impact.main(["--config", str(SWARM), "--against", str(SWARM),
                        "--set", "workers.rooms=2"]) == 0
    out = capsys.readouterr().out
    assert f"+ create    {P}-rooms2" in out and "services keep running" in out
    assert impact.main(["--config", str(SWARM), "--against", "config/Pulumi.dev.yaml"]) == 2
    assert "a new stack on another target" in capsys.readouterr().err
