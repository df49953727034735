"""The Swarm target's resource graph under Pulumi's mocks (config/Pulumi.swarm.yaml):
overlay networks, content-named configs and secrets, one service per process with
its placement, update order, dnsrr endpoint and host-mode ports; no secret in
plain text anywhere."""

import base64
import hashlib

import pytest
import yaml

from tests.support.capture import Secret, plain_strings, reveal, run_stack_file

SERVICE = "docker:index/service:Service"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
SECRET = "docker:index/secret:Secret"
NETWORK = "docker:index/network:Network"
PREFIX = "synapse-swarm"


@pytest.fixture(scope="module")
def swarm():
    return run_stack_file("config/Pulumi.swarm.yaml")


def services(cap):
    """By process or service key (the label; names are DNS labels: client-sync1)."""
    return {next(lab["value"] for lab in r.plain["labels"]
                 if lab["label"] == "org.matrix.synapse-workers.process"): r
            for r in cap.of_type(SERVICE)}


def container(svc):
    return svc.plain["taskSpec"]["containerSpec"]


def test_one_service_per_process_and_backing_service_and_no_container(swarm):
    assert sorted(services(swarm)) == sorted([
        "postgres", "redis", "nginx", "main", "client_sync1", "federation_reader1", "media1",
        "rooms1", "sender1", "tasks1"])
    assert not swarm.of_type("docker:index/container:Container")
    for r in swarm.of_type(SERVICE):
        assert swarm.by_urn(r.parent).type == "synapse:index:SwarmService"
        assert r.plain["mode"] == {"replicated": {"replicas": 1}}
        assert r.plain["endpointSpec"]["mode"] == "dnsrr"
        assert r.plain["convergeConfig"]["timeout"] == "5m"


def test_networks_are_overlays_and_the_backend_is_internal_and_closed(swarm):
    nets = {r.plain["name"]: r.plain for r in swarm.of_type(NETWORK)}
    assert nets[f"{PREFIX}-backend"] == {"name": f"{PREFIX}-backend", "driver": "overlay",
                                         "internal": True, "attachable": False}
    assert nets[f"{PREFIX}-frontend"]["internal"] is False


def test_placement_follows_the_stack_config(swarm):
    s = services(swarm)
    data = ["node.labels.synapse.data == true"]
    workers = ["node.labels.synapse.workers == true"]
    for name in ("main", "media1", "postgres", "redis", "nginx"):
        assert s[name].plain["taskSpec"]["placement"]["constraints"] == data, name
    for name in ("rooms1", "sender1", "tasks1", "client_sync1", "federation_reader1"):
        assert s[name].plain["taskSpec"]["placement"]["constraints"] == workers, name


def test_only_processes_synapse_names_nowhere_start_their_new_task_first(swarm):
    orders = {n: r.plain["updateConfig"]["order"] for n, r in services(swarm).items()}
    assert orders.pop("rooms1") == "start-first"
    assert orders.pop("federation_reader1") == "start-first"
    # Writers (client_sync1 writes typing, presence, ...; tasks1 events), senders,
    # the media repository's background jobs, main, and what holds a lock or a port.
    assert set(orders.values()) == {"stop-first"}, orders
    for r in swarm.of_type(SERVICE):
        assert r.plain["updateConfig"]["failureAction"] == "rollback"
        assert r.plain["rollbackConfig"]["order"] == r.plain["updateConfig"]["order"]


def test_processes_listen_on_tcp_and_find_each_other_by_service_name(swarm):
    s = services(swarm)
    hc = container(s["rooms1"])["healthcheck"]["tests"]
    assert hc == ["CMD", "gosu", "991:991", "curl", "-fsS", "-o", "/dev/null",
                  "http://127.0.0.1:8008/health"]
    assert "http://127.0.0.1:9093/health" in container(s["sender1"])["healthcheck"]["tests"]
    home = _config_text(swarm, s["rooms1"], "/conf/homeserver.yaml")
    hs = yaml.safe_load(home)
    assert hs["instance_map"]["sender1"] == {"host": f"{PREFIX}-sender1", "port": 9093}
    assert hs["instance_map"]["client_sync1"]["host"] == f"{PREFIX}-client-sync1"
    assert hs["redis"]["host"] == f"{PREFIX}-redis"
    nginx = _config_text(swarm, s["nginx"], "/etc/nginx/live/nginx.conf")
    assert "include /nginx-run/servers/rooms1.conf;" in nginx
    run = _config_text(swarm, s["nginx"], "/etc/nginx/run.sh")
    assert f"{PREFIX}-rooms1:8008:rooms1" in run and f"{PREFIX}-client-sync1:8008:client_sync1" in run


def test_nginx_publishes_in_host_mode_and_waits_for_what_it_routes_to(swarm):
    nginx = services(swarm)["nginx"]
    ports = {p["targetPort"]: p for p in nginx.plain["endpointSpec"]["ports"]}
    assert {p["publishMode"] for p in ports.values()} == {"host"}
    assert ports[8008]["publishedPort"] == 8108 and ports[8009]["publishedPort"] == 8109
    waits = {swarm.by_urn(d).plain["name"] for d in nginx.dependencies
             if swarm.by_urn(d).type == SERVICE}
    assert waits == {f"{PREFIX}-{n}" for n in ("main", "client-sync1", "federation-reader1",
                                                "media1", "rooms1")}


def test_workers_wait_for_main_and_main_for_postgres_and_redis(swarm):
    s = services(swarm)
    names = lambda r: {swarm.by_urn(d).plain["name"] for d in r.dependencies
                       if swarm.by_urn(d).type == SERVICE}  # noqa: E731
    assert names(s["main"]) == {f"{PREFIX}-postgres", f"{PREFIX}-redis"}
    assert names(s["rooms1"]) == {f"{PREFIX}-main"}


def test_configs_are_named_by_their_content_and_shared(swarm):
    configs = swarm.of_type(CONFIG)
    by_name = {r.plain["name"]: r for r in configs}
    assert len(by_name) == len(configs)
    homeservers = [n for n in by_name if n.startswith(f"{PREFIX}-homeserver.yaml-")]
    assert len(homeservers) == 1  # one config, mounted by every Synapse service
    for r in configs:
        text = base64.b64decode(r.plain["data"]).decode()
        assert r.plain["name"].endswith(hashlib.sha256(text.encode()).hexdigest()[:12])


def test_secrets_are_swarm_secrets_for_their_reader_only(swarm):
    s = services(swarm)
    for r in swarm.of_type(SECRET):
        assert isinstance(r.inputs["data"], Secret) and isinstance(r.inputs["name"], Secret)
    main = {x["fileName"]: x for x in container(s["main"])["secrets"]}
    key = main["/conf/secrets/signing.key"]
    assert (key["fileUid"], key["fileGid"], key["fileMode"]) == ("991", "991", 0o400)
    pg = {x["fileName"]: x for x in container(s["postgres"])["secrets"]}
    assert pg["/conf/secrets/postgres_password"]["fileUid"] == "999"
    assert "secrets" not in container(s["redis"]) or not container(s["redis"])["secrets"]
    worker = {x["fileName"] for x in container(s["rooms1"])["secrets"]}
    assert "/conf/secrets/registration_shared_secret" not in worker  # main's only


def test_no_secret_value_in_any_plain_input_or_output(swarm):
    values = [reveal(base64.b64decode(reveal(r.inputs["data"])).decode()).strip()
              for r in swarm.of_type(SECRET)]
    assert len(values) == 7 and all(len(v) >= 16 for v in values)
    texts = [t for r in swarm.resources for t in plain_strings(r.inputs)]
    texts += [base64.b64decode(r.plain["data"]).decode() for r in swarm.of_type(CONFIG)]
    texts += list(plain_strings(swarm.outputs))
    for value in values:
        for part in (value, value.split()[-1], value.split(":")[-1]):
            assert not any(part in t for t in texts), part[:4]


def _config_text(cap, svc, target):
    ref = next(c for c in container(svc)["configs"] if c["fileName"] == target)
    config = next(r for r in cap.of_type(CONFIG) if r.plain["name"] == ref["configName"])
    return base64.b64decode(config.plain["data"]).decode()


def test_encrypted_overlays_only_when_asked(swarm):
    assert all("options" not in r.plain for r in swarm.of_type(NETWORK))
    cap = run_stack_file("config/Pulumi.swarm.yaml", {"swarm.encrypted": True})
    assert {r.plain["name"]: r.plain.get("options") for r in cap.of_type(NETWORK)} == {
        f"{PREFIX}-backend": {"encrypted": ""}, f"{PREFIX}-frontend": {"encrypted": ""}}


def _durations(value, key=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _durations(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _durations(v, key)
    elif key in ("interval", "timeout", "startPeriod", "stopGracePeriod", "delay", "monitor"):
        yield key, value


def test_no_service_duration_depends_on_how_the_provider_prints_it(swarm):
    """shortDur ("1m") and Go's Duration.String() ("1m0s") differ only on whole
    minutes: none is used, so a second preview is empty either way."""
    from components.provider import model as pm

    found = 0
    for r in swarm.of_type(SERVICE):
        for key, text in _durations({k: v for k, v in r.plain.items() if k != "convergeConfig"}):
            ns = pm.duration_ns(text)
            assert pm.short_duration_read_back(ns) == pm.duration_read_back(ns) == text, \
                (r.name, key, text)
            found += 1
    assert found > 50
