"""The resource graph under Pulumi's mocks, for both stacks: what is registered,
under which parent, with which inputs, secrets and ordering."""

import pulumi
import pytest
import yaml

from components import program
from components.render.containers import NGINX_STAGED_TLS
from components.render.nginx_conf import TLS_CERTIFICATE, TLS_KEY
from tests.support.capture import (
    Secret, install_mocks, plain_strings, reveal, run_program, run_stack_file,
)
from tests.support.tls import issue

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
    assert len(names) == synapse + 6
    for service in ("nginx", "nginx-config", "postgres", "redis", "prometheus", "main",
                    "live-config"):
        assert f"synapse-{stack}-{service}" in names


def test_components_parent_their_containers(prod):
    expected = {"main": "synapse:index:SynapseMain", "rooms3": "synapse:index:WorkerClass",
                "sender4": "synapse:index:WorkerClass", "nginx-container": "synapse:index:Nginx",
                "postgres-container": "synapse:index:Postgres",
                "redis-container": "synapse:index:Redis",
                "prometheus-container": "synapse:index:Prometheus"}
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
        assert c.options["replaceOnChanges"] == ["healthcheck", "tmpfs", "mounts"], c.name
        # A replacement that only replace_on_changes causes is create-before-delete
        # unless asked otherwise, and the fixed name would clash.
        assert c.options["deleteBeforeReplace"] is True, c.name
        assert c.plain["wait"] is True and c.plain["restart"] == "unless-stopped"
        assert c.plain["destroyGraceSeconds"] > 0


def test_synapse_healthchecks_curl_their_own_socket(prod):
    for name, sock in [("main", "synapse_inbound_main"), ("rooms2", "synapse_inbound_rooms2"),
                       ("sender3", "synapse_replication_sender3"),
                       ("tasks1", "synapse_replication_tasks1")]:
        test = prod.named(name, CONTAINER).plain["healthcheck"]["tests"]
        # As the Synapse user: Docker would run it as root, the container's user.
        assert test == ["CMD", "gosu", "991:991", "curl", "-fsS", "--unix-socket",
                        f"/sockets/{sock}.sock", "http://localhost/health"]
    pg = prod.named("postgres-container", CONTAINER).plain["healthcheck"]["tests"]
    assert pg[0] == "CMD-SHELL" and "postmaster.pid" in pg[1]
    assert "pg_isready -q -h /sockets -U synapse -d synapse" in pg[1]
    redis = prod.named("redis-container", CONTAINER).plain["healthcheck"]["tests"]
    assert "redis-cli -s /sockets/synapse_redis.sock ping" in redis[1]


def test_probe_intervals_singletons_faster_than_workers(prod):
    """One each of postgres, redis, main, nginx-config and nginx (on the up's critical
    path, whatever the preset) is probed every 2 s; workers every 5 s; no
    start_interval unless set."""
    intervals = {c.name: c.plain["healthcheck"]["interval"] for c in prod.containers}
    for name in ("postgres-container", "redis-container", "main", "nginx-config",
                 "nginx-container"):
        assert intervals[name] == "2s", name
    for name in ("rooms1", "sender4", "client_sync1", "tasks1"):
        assert intervals[name] == "5s", name
    assert {c.plain["healthcheck"]["startInterval"] for c in prod.containers} == {"0s"}


def test_healthcheck_start_interval_on_every_starting_healthcheck():
    cap = run_stack_file("config/Pulumi.prod.yaml", {"healthcheckStartInterval": 1})
    for c in cap.containers:
        hc = c.plain["healthcheck"]
        # nginx-config has no start period: Docker 25+ would never use it there.
        want = "1s" if hc["startPeriod"] != "0s" else "0s"
        assert hc["startInterval"] == want, c.name
    assert cap.named("main", CONTAINER).plain["healthcheck"]["startInterval"] == "1s"


def test_uploads_carry_the_rendered_files(prod):
    rooms2 = uploads(prod.named("rooms2", CONTAINER))
    worker = yaml.safe_load(rooms2["/conf/workers/rooms2.yaml"]["content"])
    assert worker["worker_name"] == "rooms2"
    assert worker["worker_listeners"][0]["path"] == "/sockets/synapse_inbound_rooms2.sock"
    hs = yaml.safe_load(rooms2["/conf/homeserver.yaml"]["content"])  # plain: no reveal
    assert hs["instance_map"]["sender4"] == {"path": "/sockets/synapse_replication_sender4.sock"}
    assert rooms2["/conf/start.sh"]["executable"] is True
    # nginx has no file at all (so its root filesystem can be read-only): the config
    # is nginx-config's upload, its run script an argument of its entrypoint.
    nginx = prod.named("nginx-container", CONTAINER).plain
    assert nginx["uploads"] == []
    assert nginx["entrypoints"][:2] == ["/bin/sh", "-c"]
    assert "nginx -t -q -c /etc/nginx/live/nginx.conf" in nginx["entrypoints"][2]
    publisher = uploads(prod.named("nginx-config", CONTAINER))
    assert "upstream class_rooms" in publisher["/stage/nginx.conf"]["content"]


SECRET_DIR = "/conf/secrets/"


def test_only_the_secret_files_are_secret(prod):
    """Config files are plain (a preview shows their diff); each secret has its own
    file, secret in state and readable only by its owner; no env var is secret."""
    seen = set()
    for c in prod.containers:
        assert not isinstance(c.inputs["envs"], Secret), c.name
        for path, u in uploads(c).items():
            secret = path.startswith(SECRET_DIR)
            assert isinstance(u["content"], Secret) == secret, (c.name, path)
            # A secret is its owner's alone, but for a non-root reader's root-owned
            # upload (containers.File.non_root_reader: postgres's password).
            shared = c.name == "postgres-container"
            assert u["permissions"] == ("0444" if secret and shared else "0400" if secret
                                        else "0744" if u["executable"] else "0644"), (c.name, path)
            if secret:
                seen.add(path.removeprefix(SECRET_DIR))
    assert seen == {"macaroon_secret_key", "form_secret", "worker_replication_secret",
                    "signing.key", "registration_shared_secret", "pgpass", "postgres_password"}
    # Only main gets the registration secret; Postgres gets only its password.
    for c in prod.containers:
        files = set(uploads(c))
        assert ("/conf/secrets/registration_shared_secret" in files) == (c.name == "main"), c.name
    pg = uploads(prod.named("postgres-container", CONTAINER))
    assert [p for p in pg if p.startswith(SECRET_DIR)] == ["/conf/secrets/postgres_password"]
    env = dict(e.split("=", 1) for e in prod.named("postgres-container", CONTAINER).plain["envs"])
    assert env["POSTGRES_PASSWORD_FILE"] == "/conf/secrets/postgres_password"


def _generated(cap) -> list[str]:
    """Every secret value the stack generated (pulumi-random outputs)."""
    main = uploads(cap.named("main", CONTAINER))
    return [reveal(u["content"]).strip() for p, u in main.items() if p.startswith(SECRET_DIR)]


def test_no_secret_value_in_any_plain_input_or_output(prod):
    values = _generated(prod)
    assert len(values) == 6 and all(len(v) >= 16 for v in values)
    password = reveal(uploads(prod.named("postgres-container", CONTAINER))
                      ["/conf/secrets/postgres_password"]["content"]).strip()
    values.append(password)

    texts = [t for r in prod.resources for t in plain_strings(r.inputs)]
    texts += list(plain_strings(prod.outputs))
    for value in values:
        for secret_part in (value, value.split()[-1]):  # the signing key's seed alone too
            assert not any(secret_part in t for t in texts)


def test_secrets_in_files_are_the_generated_ones(prod):
    main = uploads(prod.named("main", CONTAINER))
    pg = uploads(prod.named("postgres-container", CONTAINER))
    password = reveal(pg["/conf/secrets/postgres_password"]["content"]).strip()
    assert reveal(main["/conf/secrets/pgpass"]["content"]) == f"*:*:synapse:synapse:{password}\n"
    assert len(reveal(main["/conf/secrets/macaroon_secret_key"]["content"]).strip()) == 48
    key = reveal(main["/conf/secrets/signing.key"]["content"]).split()
    assert key[0] == "ed25519" and key[1].startswith("a_") and len(key[2]) == 43
    # Every process signs with the same key.
    other = reveal(uploads(prod.named("rooms1", CONTAINER))["/conf/secrets/signing.key"]["content"])
    assert other.split() == key


def test_data_survives_destroy_and_secrets_stay_in_state(prod):
    """Data volumes are retained on delete (destroy and scaling down leave them);
    the sockets tmpfs is not. Generated secrets are protected: they exist only in
    state, so `make down` (destroy --exclude-protected) keeps them."""
    for v in prod.of_type(VOLUME):
        name = v.plain["name"]
        derived = name in ("synapse-prod-sockets", "synapse-prod-nginx-config",
                           "synapse-prod-live-config")
        assert v.options["retainOnDelete"] is not derived, name
    assert sorted(prod.outputs["dataVolumes"]) == sorted(
        v.plain["name"] for v in prod.of_type(VOLUME) if v.options["retainOnDelete"])
    randoms = [r for r in prod.resources if r.type.startswith("random:")]
    # Five passwords, and the signing key's ID and seed.
    assert len(randoms) == 7 and all(r.options["protect"] for r in randoms)
    assert not any(r.options["protect"] for r in prod.resources if r.type.startswith("docker:"))


def test_stack_outputs_hold_no_secret(prod):
    assert not any(isinstance(v, Secret) for v in prod.outputs.values())
    assert prod.outputs["serverName"] == "example.org"
    assert {p["name"]: p["class"] for p in prod.outputs["processes"]}["rooms4"] == "rooms"


def test_networks_and_mounts(prod):
    nets = {n.plain["name"]: n.plain.get("internal", False) for n in prod.of_type(NETWORK)}
    assert nets == {"synapse-prod-backend": True, "synapse-prod-frontend": False}
    pg = prod.named("postgres-container", CONTAINER).plain
    assert [n["name"] for n in pg["networksAdvanced"]] == ["synapse-prod-backend"]
    nginx = prod.named("nginx-container", CONTAINER).plain
    assert [n["name"] for n in nginx["networksAdvanced"]] == ["synapse-prod-frontend"]
    # Public listeners on the stack's address, the admin listener on loopback only.
    assert {(p["external"], p["ip"]) for p in nginx["ports"]} == {
        (8008, "0.0.0.0"), (8448, "0.0.0.0"), (8009, "127.0.0.1")}
    published = [c.plain["name"] for c in prod.of_type(CONTAINER) if c.plain.get("ports")]
    # Prometheus too, on loopback only (tests/mocks/test_least_privilege.py).
    assert sorted(published) == ["synapse-prod-nginx", "synapse-prod-prometheus"], published
    media = {m["target"]: m["source"] for m in prod.named("media1", CONTAINER).plain["mounts"]}
    assert media == {"/sockets": "synapse-prod-sockets", "/data": "synapse-prod-media1-data",
                     "/media": "synapse-prod-media", "/conf/live": "synapse-prod-live-config"}
    sockets = prod.named("sockets-volume", VOLUME).plain
    # Root's and Synapse's group (991), setgid and sticky, others may only pass.
    assert sockets["driverOpts"] == {"type": "tmpfs", "device": "tmpfs",
                                     "o": "mode=3771,uid=0,gid=991"}


def test_egress_off_keeps_synapse_on_the_internal_network(dev):
    main = dev.named("main", CONTAINER).plain
    assert [n["name"] for n in main["networksAdvanced"]] == ["synapse-dev-backend"]


def test_creation_order_postgres_redis_then_main_then_workers_then_nginx(prod):
    urn = {c.name: c.urn for c in prod.containers}
    deps = {c.name: set(c.dependencies) for c in prod.containers}
    assert {urn["postgres-container"], urn["redis-container"]} <= deps["main"]
    for worker in ("client_sync1", "rooms4", "sender1", "tasks1", "media1"):
        assert urn["main"] in deps[worker], worker
    # Routes are published once the processes they name are healthy; nginx after.
    for routed in ("main", "client_sync1", "federation_reader1", "media1", "rooms1", "rooms4"):
        assert urn[routed] in deps["nginx-config"], routed
    assert urn["sender1"] not in deps["nginx-config"]
    assert urn["nginx-config"] in deps["nginx-container"]


def test_rooms_workers_roll_in_halves_senders_do_not(prod):
    """rooms3 and rooms4 wait for rooms1 and rooms2 (components/plan/rollout.py), by a
    plain depends_on: no input of theirs comes from their partner, so the engine
    never replaces them because their partner is (step_generator.go
    calculateDependentReplacements reads property dependencies only)."""
    urn = {c.name: c.urn for c in prod.containers}
    by_name = {c.name: c for c in prod.containers}
    assert urn["rooms1"] in by_name["rooms3"].dependencies
    assert urn["rooms2"] in by_name["rooms4"].dependencies
    assert not {urn["rooms3"], urn["rooms4"]} & set(by_name["rooms1"].dependencies)
    for c in prod.containers:
        for deps in c.property_dependencies.values():
            assert not {urn[w] for w in ("rooms1", "rooms2")} & set(deps), c.name
    senders = [urn[f"sender{i}"] for i in range(1, 5)]
    for i in range(1, 5):
        assert not set(senders) & set(by_name[f"sender{i}"].dependencies)


@pytest.mark.parametrize("raw, message", [
    ({"serverName": "example.org", "workers": {"rooms": 99}},
     r"synapse:workers\.rooms': must be between 0 and 64"),
    ({"serverName": "example.org", "signingKey": "not a key"}, r"synapse:signingKey'"),
    ({"serverName": "example.org", "workers": {"rooms": 48}}, r"database connections"),
    ({"serverName": "example.org", "nginx": {"tls": True}}, r"synapse:tlsCertificate': is required"),
    ({"serverName": "example.org", "nginx": {"tls": True}, "tlsCertificate": "x" * 40,
      "tlsKey": "y" * 40}, r"synapse:tlsCertificate': must be PEM"),
    ({"serverName": "example.org", "postgres": {"settings": {"work_mem": "1XB"}}},
     r"synapse:postgres\.settings\.work_mem'"),
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
    assert reveal(main["/conf/secrets/signing.key"]["content"]).strip() == key
    assert reveal(main["/conf/secrets/form_secret"]["content"]).strip() == "f" * 20
    assert not cap.of_type("random:index/randomBytes:RandomBytes")
    assert {r.name for r in cap.of_type("random:index/randomPassword:RandomPassword")} == {
        "macaroon-secret-key", "registration-shared-secret", "worker-replication-secret",
        "postgres-password"}


def test_operator_secret_config_lands_only_in_a_secret_file():
    cap = run_program({"serverName": "example.org",
                       "secretConfig": {"turn_shared_secret": "turn-secret-value-1",
                                        "turn_uris": ["turn:turn.example.org"]}},
                      secret_keys=("secretConfig",))
    for c in cap.containers:
        up = uploads(c).get("/conf/secrets/config.yaml")
        role = {lab["label"].rsplit(".", 1)[-1]: lab["value"] for lab in c.plain["labels"]}["role"]
        is_synapse = role in ("main", "worker")
        assert (up is not None) == is_synapse, c.name
        if up:
            assert isinstance(up["content"], Secret)
            assert yaml.safe_load(reveal(up["content"]))["turn_shared_secret"] == "turn-secret-value-1"
            assert c.plain["command"][-1] == "--config-path=/conf/secrets/config.yaml"
    plain = [t for r in cap.resources for t in plain_strings(r.inputs)]
    assert plain and not any("turn-secret-value-1" in t for t in plain)


def test_tls_certificate_and_key_are_secret_files_staged_for_nginx_only(tmp_path):
    """Staged in nginx-config (root's uploads, readable by its nginx user), published
    as nginx's own 0400 copies into the volume nginx reads (read-only nginx takes
    no uploads) at the paths nginx.conf names."""
    issued = issue(tmp_path, ["example.org"])  # publicBaseUrl's host, by default
    cap = run_program({"serverName": "example.org", "nginx": {"tls": True},
                       "tlsCertificate": issued.fullchain, "tlsKey": issued.key},
                      secret_keys=("tlsCertificate", "tlsKey"))
    staged = uploads(cap.named("nginx-config", CONTAINER))
    assert sorted(NGINX_STAGED_TLS.values()) == sorted([TLS_CERTIFICATE, TLS_KEY])
    want = {TLS_CERTIFICATE: issued.fullchain, TLS_KEY: issued.key}
    for src, dst in NGINX_STAGED_TLS.items():
        up = staged[src]
        assert isinstance(up["content"], Secret), src
        assert reveal(up["content"]) == want[dst].strip() + "\n", src
        assert up["permissions"] == "0444" and "owner" not in up, up
    conf = reveal(staged["/stage/nginx.conf"]["content"])
    assert f"ssl_certificate {TLS_CERTIFICATE};" in conf and f"ssl_certificate_key {TLS_KEY};" in conf
    for c in cap.containers:
        if c.name != "nginx-config":
            assert not set(NGINX_STAGED_TLS) & set(uploads(c)), c.name
    assert cap.outputs["nginxUrl"].startswith("https://")
    ports = {int(p["internal"]) for p in cap.named("nginx-container", CONTAINER).plain["ports"]}
    assert ports == {8008, 8448, 8009, 8080}


def test_scheduled_backups_get_the_generated_secrets_sealed_and_a_kept_volume():
    """synapse:backup: the backup container's one secret file opens with the
    operator's passphrase to exactly the generated secrets (that sealing is
    repeatable: tests/unit/test_backup_schedule.py)."""
    from ops import archive

    on = {"backup": {"enabled": True, "schedule": "every 6h"},
          "backupPassphrase": "a backup passphrase"}
    cap = run_stack_file("config/Pulumi.dev.yaml", on)
    sealed = reveal(uploads(cap.named("backup-container", CONTAINER))
                    ["/conf/backup/secrets.enc"]["content"])
    main = uploads(cap.named("main", CONTAINER))
    opened = archive.decrypt_secrets(sealed.encode(), "a backup passphrase")
    assert opened["signingKey"] == reveal(main["/conf/secrets/signing.key"]["content"]).strip()
    assert len(opened) == 6 and "backupPassphrase" not in opened
    for value in opened.values():
        assert value not in sealed
    assert cap.outputs["backupsVolume"] == "synapse-dev-backups"
    assert "synapse-dev-backups" in cap.outputs["dataVolumes"]
    vol = cap.named("backup-data", VOLUME)
    assert vol.options["retainOnDelete"] and parent_of(cap, vol).type == "synapse:index:Backup"
