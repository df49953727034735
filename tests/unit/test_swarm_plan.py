"""target: swarm in the layers before any resource: the settings it reads (placement,
what must stay on one node) and the plan's TCP addresses, rendered into Synapse's
and nginx's files. The Docker target's rendering is unchanged (tests/mocks/test_urns.py
and the render tests hold that)."""

import hashlib

import pytest
import yaml

from components.plan.errors import ConfigError
from components.plan.settings import DATA_NODE, load_settings
from components.plan.topology import INBOUND_PORT, REPLICATION_PORT, build_plan
from components.render.nginx_conf import render_nginx_conf
from components.render.synapse_config import render_homeserver, render_worker

WORKERS = "node.labels.synapse.workers == true"


def swarm(**raw):
    return load_settings({"serverName": "example.org", "namePrefix": "hs", "target": "swarm",
                          "nginx": {"bindAddress": "0.0.0.0"}, **raw}, "t")


def test_docker_is_the_default_target_and_swarm_keys_need_swarm():
    assert load_settings({"serverName": "example.org"}, "t").target == "docker"
    with pytest.raises(ConfigError) as e:
        load_settings({"serverName": "example.org", "swarm": {"placement": {}}}, "t")
    assert e.value.path == ("swarm",)


def test_what_holds_a_volume_is_pinned_to_the_data_node_by_default():
    s = swarm(swarm={"placement": {"rooms": [WORKERS]}})
    for name in ("main", "media", "postgres", "prometheus", "redis", "nginx"):
        assert s.swarm.constraints(name) == (DATA_NODE,), name
    assert s.swarm.constraints("rooms") == (WORKERS,)
    assert s.swarm.constraints("sender") == ()  # anywhere


@pytest.mark.parametrize("raw, key, reason", [
    ({"target": "kubernetes"}, "target", "must be one of docker, swarm"),
    ({"swarm": {"placement": {"rooms": "node.colour == red"}}}, "swarm.placement.rooms[0]",
     "a Swarm constraint"),
    ({"swarm": {"placement": {"rooms": ["node.labels.a = b"]}}}, "swarm.placement.rooms[0]",
     "a Swarm constraint"),
    ({"swarm": {"placement": {"bogus": []}}}, "swarm.placement.bogus", "unknown key"),
    ({"swarm": {"placement": {"postgres": []}}}, "swarm.placement.postgres",
     "keeps its data in a volume on one node"),
    ({"swarm": {"placement": {"main": ["node.hostname == a"]}}}, "swarm.placement.media",
     "must equal swarm.placement.main"),
    ({"backup": {"enabled": True}}, "backup.enabled", "not available on target swarm"),
    ({"swarm": {"nodes": 3}}, "swarm.nodes", "unknown key"),
    ({"nginx": {"bindAddress": "127.0.0.1"}}, "nginx.bindAddress", "every address of the node"),
])
def test_bad_swarm_config_names_the_key(raw, key, reason):
    with pytest.raises(ConfigError) as e:
        swarm(**raw)
    assert ".".join(str(k) for k in e.value.path).replace(".0", "[0]") == key, e.value
    assert reason in str(e.value)


def test_processes_listen_on_tcp_and_are_reached_by_service_name():
    plan = build_plan(swarm(workers={"rooms": 2, "sender": 1}))
    assert plan.process("rooms1").inbound.upstream == f"hs-rooms1:{INBOUND_PORT}"
    assert plan.process("rooms1").sockets == ()
    assert plan.instance_map["sender1"].instance == {"host": "hs-sender1", "port": REPLICATION_PORT}
    hs = yaml.safe_load(render_homeserver(plan))
    assert hs["instance_map"]["main"] == {"host": "hs-main", "port": REPLICATION_PORT}
    assert hs["redis"] == {"enabled": True, "host": "hs-redis", "port": 6379}
    assert hs["database"]["args"]["host"] == "hs-postgres"
    listeners = {tuple(r["names"]): l for l in hs["listeners"] for r in l.get("resources", [])}
    assert listeners[("replication",)]["port"] == REPLICATION_PORT
    assert listeners[("replication",)]["bind_addresses"] == ["0.0.0.0"]
    assert "path" not in listeners[("replication",)]
    worker = yaml.safe_load(render_worker(plan.process("rooms1")))
    assert [l.get("port") for l in worker["worker_listeners"] if l["type"] == "http"] == [INBOUND_PORT]
    nginx = render_nginx_conf(plan)
    # Servers by address, written as names resolve (nginx's Swarm entrypoint).
    assert "include /nginx-run/servers/rooms1.conf;" in nginx
    assert "unix:/sockets/synapse_inbound" not in nginx and "hs-rooms1" not in nginx


def test_service_names_are_dns_labels():
    """Synapse's HTTP client refuses a host with '_' (measured on the bed: "invalid
    hostname: synapse-swarm-client_sync1"), Swarm a service name with '.'."""
    plan = build_plan(swarm(namePrefix="hs_a.b", workers={"client_sync": 1}))
    assert plan.instance_map["client_sync1"].host == "hs-a-b-client-sync1"


def test_the_docker_target_keeps_its_sockets():
    plan = build_plan(load_settings({"serverName": "example.org"}, "t"))
    assert plan.main.inbound.path == "/sockets/synapse_inbound_main.sock"
    assert yaml.safe_load(render_homeserver(plan))["redis"] == {
        "enabled": True, "path": "/sockets/synapse_redis.sock"}


def test_encryption_between_nodes_is_asked_for_explicitly():
    assert not swarm().swarm.encrypted
    assert swarm(swarm={"encrypted": True}).swarm.encrypted
    with pytest.raises(ConfigError) as e:
        swarm(swarm={"encrypted": "yes"})
    assert e.value.path == ("swarm", "encrypted")


def test_a_long_content_name_keeps_its_whole_hash():
    from components.swarm.specs import SWARM_NAME_MAX, content_name

    a = content_name("a-rather-long-prefix", "live-log-federation_reader.log.config", "one")
    b = content_name("a-rather-long-prefix", "live-log-federation_reader.log.config", "two")
    assert len(a) == len(b) == SWARM_NAME_MAX and a != b
    assert a.endswith("-" + hashlib.sha256(b"one").hexdigest()[:12])
    assert content_name("hs", "homeserver.yaml", "x").startswith("hs-homeserver.yaml-")
