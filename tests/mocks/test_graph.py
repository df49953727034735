"""The resource graph under Pulumi's mocks, for both stacks: what is registered,
under which parent, with which inputs, secrets and ordering."""

import pulumi
import pytest
import yaml

from components import stack as program
from tests.support.capture import Secret, install_mocks, reveal, run_program, run_stack_file

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"


@pytest.fixture(scope="module")
def dev():
    return run_stack_file("config/Pulumi.dev.yaml")


@pytest.fixture(scope="module")
def prod():
    return run_stack_file("config/Pulumi.prod.yaml")


def parent_of(cap, r):
    return cap.by_urn(r.parent)


def uploads(r):
    return {u["file"]: u for u in r.inputs["uploads"]}


@pytest.mark.parametrize("stack, synapse", [("dev", 7), ("prod", 13)])
def test_one_container_per_process_and_service(stack, synapse, request):
    cap = request.getfixturevalue(stack)
    names = sorted(c.plain["name"] for c in cap.containers)
    assert len(names) == synapse + 3
    for service in ("nginx", "postgres", "redis", "main"):
        assert f"synapse-{stack}-{service}" in names


def test_components_parent_their_containers(prod):
    expected = {"main": "synapse:index:SynapseMain", "rooms3": "synapse:index:WorkerClass",
                "sender4": "synapse:index:WorkerClass", "nginx-container": "synapse:index:Nginx",
                "postgres-container": "synapse:index:Postgres",
                "redis-container": "synapse:index:Redis"}
    for name, component in expected.items():
        parent = parent_of(prod, prod.named(name, CONTAINER))
        assert parent.type == component, name
    rooms = prod.named("rooms", "synapse:index:WorkerClass")
    children = [r.name for r in prod.resources if r.parent == rooms.urn]
    assert sorted(children) == sorted([f"rooms{i}" for i in range(1, 5)]
                                      + [f"rooms{i}-data" for i in range(1, 5)])


def test_every_container_has_a_healthcheck_replaced_on_change(prod):
    for c in prod.containers:
        hc = c.plain["healthcheck"]
        assert hc["tests"][0] in ("CMD", "CMD-SHELL"), c.name
        assert c.options["replaceOnChanges"] == ["healthcheck"], c.name
        assert c.plain["wait"] is True and c.plain["restart"] == "unless-stopped"
        assert c.plain["destroyGraceSeconds"] > 0


def test_synapse_healthchecks_curl_their_own_socket(prod):
    for name, sock in [("main", "synapse_inbound_main"), ("rooms2", "synapse_inbound_rooms2"),
                       ("sender3", "synapse_replication_sender3"),
                       ("tasks1", "synapse_replication_tasks1")]:
        test = prod.named(name, CONTAINER).plain["healthcheck"]["tests"]
        assert test == ["CMD", "curl", "-fsS", "--unix-socket", f"/sockets/{sock}.sock",
                        "http://localhost/health"]
    pg = prod.named("postgres-container", CONTAINER).plain["healthcheck"]["tests"]
    assert pg[0] == "CMD-SHELL" and "postmaster.pid" in pg[1]
    assert "pg_isready -q -h /sockets -U synapse -d synapse" in pg[1]
    redis = prod.named("redis-container", CONTAINER).plain["healthcheck"]["tests"]
    assert "redis-cli -s /sockets/synapse_redis.sock ping" in redis[1]


def test_uploads_carry_the_rendered_files(prod):
    rooms2 = uploads(prod.named("rooms2", CONTAINER))
    worker = yaml.safe_load(rooms2["/conf/workers/rooms2.yaml"]["content"])
    assert worker["worker_name"] == "rooms2"
    assert worker["worker_listeners"][0]["path"] == "/sockets/synapse_inbound_rooms2.sock"
    hs = yaml.safe_load(reveal(rooms2["/conf/homeserver.yaml"]["content"]))
    assert hs["instance_map"]["sender4"] == {"path": "/sockets/synapse_replication_sender4.sock"}
    assert rooms2["/conf/start.sh"]["executable"] is True
    nginx = uploads(prod.named("nginx-container", CONTAINER))
    assert "/etc/nginx/nginx.conf" in nginx


def test_files_holding_secrets_are_secret_and_others_are_not(prod):
    for c in prod.containers:
        for path, u in uploads(c).items():
            secret = path in ("/conf/homeserver.yaml", "/conf/signing.key")
            assert isinstance(u["content"], Secret) == secret, (c.name, path)
    pg = prod.named("postgres-container", CONTAINER)
    assert isinstance(pg.inputs["envs"], Secret)
    assert any(e.startswith("POSTGRES_PASSWORD=") and len(e) > 30 for e in pg.plain["envs"])


def test_secrets_in_files_are_the_generated_ones(prod):
    main = uploads(prod.named("main", CONTAINER))
    hs = yaml.safe_load(reveal(main["/conf/homeserver.yaml"]["content"]))
    pg_env = dict(e.split("=", 1) for e in prod.named("postgres-container", CONTAINER).plain["envs"])
    assert hs["database"]["args"]["password"] == pg_env["POSTGRES_PASSWORD"]
    assert len(hs["macaroon_secret_key"]) == 48 and "${secret" not in str(hs)
    key = reveal(main["/conf/signing.key"]["content"]).split()
    assert key[0] == "ed25519" and key[1].startswith("a_") and len(key[2]) == 43
    # Every process signs with the same key.
    other = reveal(uploads(prod.named("rooms1", CONTAINER))["/conf/signing.key"]["content"])
    assert other.split() == key


def test_stack_outputs_hold_no_secret(prod):
    text = str(prod.outputs)
    main = uploads(prod.named("main", CONTAINER))
    hs = yaml.safe_load(reveal(main["/conf/homeserver.yaml"]["content"]))
    for value in (hs["macaroon_secret_key"], hs["registration_shared_secret"],
                  hs["database"]["args"]["password"]):
        assert value not in text
    assert prod.outputs["serverName"] == "example.org"
    assert {p["name"]: p["class"] for p in prod.outputs["processes"]}["rooms4"] == "rooms"


def test_networks_and_mounts(prod):
    nets = {n.plain["name"]: n.plain.get("internal", False) for n in prod.of_type(NETWORK)}
    assert nets == {"synapse-prod-backend": True, "synapse-prod-frontend": False}
    pg = prod.named("postgres-container", CONTAINER).plain
    assert [n["name"] for n in pg["networksAdvanced"]] == ["synapse-prod-backend"]
    nginx = prod.named("nginx-container", CONTAINER).plain
    assert [n["name"] for n in nginx["networksAdvanced"]] == ["synapse-prod-frontend"]
    assert {p["external"] for p in nginx["ports"]} == {8008, 8448}
    media = {m["target"]: m["source"] for m in prod.named("media1", CONTAINER).plain["mounts"]}
    assert media == {"/sockets": "synapse-prod-sockets", "/data": "synapse-prod-media1-data",
                     "/media": "synapse-prod-media"}
    sockets = prod.named("sockets-volume", VOLUME).plain
    assert sockets["driverOpts"] == {"type": "tmpfs", "device": "tmpfs", "o": "mode=1777"}


def test_egress_off_keeps_synapse_on_the_internal_network(dev):
    main = dev.named("main", CONTAINER).plain
    assert [n["name"] for n in main["networksAdvanced"]] == ["synapse-dev-backend"]


def test_creation_order_postgres_redis_then_main_then_workers_then_nginx(prod):
    urn = {c.name: c.urn for c in prod.containers}
    deps = {c.name: set(c.dependencies) for c in prod.containers}
    assert {urn["postgres-container"], urn["redis-container"]} <= deps["main"]
    for worker in ("client_sync1", "rooms4", "sender1", "tasks1", "media1"):
        assert urn["main"] in deps[worker], worker
    for routed in ("main", "client_sync1", "federation_reader1", "media1", "rooms1", "rooms4"):
        assert urn[routed] in deps["nginx-container"], routed
    assert urn["sender1"] not in deps["nginx-container"]


@pytest.mark.parametrize("raw, message", [
    ({"serverName": "example.org", "workers": {"rooms": 99}},
     r"synapse:workers\.rooms': must be between 0 and 64"),
    ({"serverName": "example.org", "signingKey": "not a key"}, r"synapse:signingKey'"),
    ({"serverName": "example.org", "workers": {"rooms": 48}}, r"database connections"),
])
def test_bad_config_fails_before_any_resource(raw, message):
    monitor = install_mocks(raw)
    with pytest.raises(pulumi.RunError, match=message):
        program.main()
    assert [r.type for r in monitor.registered if r.type != "pulumi:pulumi:Stack"] == []


def test_secret_overrides_replace_generated_secrets():
    key = "ed25519 a_mine " + "B" * 43
    cap = run_program({"serverName": "example.org", "signingKey": key,
                       "formSecret": "f" * 20}, secret_keys=("signingKey", "formSecret"))
    main = uploads(cap.named("main", CONTAINER))
    assert reveal(main["/conf/signing.key"]["content"]).strip() == key
    assert yaml.safe_load(reveal(main["/conf/homeserver.yaml"]["content"]))["form_secret"] == "f" * 20
    assert not cap.of_type("random:index/randomBytes:RandomBytes")
    assert {r.name for r in cap.of_type("random:index/randomPassword:RandomPassword")} == {
        "macaroon-secret-key", "registration-shared-secret", "worker-replication-secret",
        "postgres-password"}
