"""The replay harness itself, without Docker: it refuses what it does not apply,
orders resources by their dependencies, converts inputs as the provider does and
keeps the stack's secrets between runs."""

from __future__ import annotations

import copy
import io
import tarfile

import pytest

from tests.e2e import replay
from tests.support.capture import Registered

CONTAINER = replay.CONTAINER


def _empty_state() -> dict:
    return {"random": {}, "containers": {}, "networks": [], "volumes": []}


@pytest.fixture(scope="module")
def dev():
    return replay.capture_stack("config/Pulumi.dev.yaml", {}, _empty_state())


@pytest.fixture(scope="module")
def prod():
    return replay.capture_stack("config/Pulumi.prod.yaml", {"egress": False}, _empty_state())


def _with(res: Registered, **changes) -> Registered:
    inputs = copy.deepcopy(res.inputs)
    inputs.update(changes)
    return Registered(res.type, res.name, res.urn, inputs, res.parent, res.dependencies, res.options)


def test_every_registered_resource_is_applied(dev, prod):
    for cap in (dev, prod):
        for res in cap.resources:
            if not replay.is_no_op(res):
                replay.check_inputs(res)  # raises on anything unapplied


@pytest.mark.parametrize("change", [
    {"privileged": True},
    {"user": "0"},
    {"volumes": [{"containerPath": "/x", "hostPath": "/"}]},
    {"healthcheck": {"tests": ["CMD", "true"], "startInterval": "1s"}},
    {"uploads": [{"file": "/x", "contentBase64": "eA=="}]},
    {"networksAdvanced": [{"name": "n", "ipv4Address": "10.0.0.2"}]},
    {"mounts": [{"target": "/x", "type": "volume", "source": "v", "readOnly": True}]},
    {"memory": "1024"},
])
def test_unapplied_container_inputs_are_refused(dev, change):
    main = next(r for r in dev.containers if r.name == "main")
    with pytest.raises(replay.UnsupportedInput):
        replay.check_inputs(_with(main, **change))


def test_unknown_resource_types_are_refused(dev):
    net = dev.of_type(replay.NETWORK)[0]
    with pytest.raises(replay.UnsupportedInput):
        replay.check_inputs(Registered("docker:index/service:Service", "s", "urn:s", {},
                                       "", [], {}))
    with pytest.raises(replay.UnsupportedInput):
        replay.check_inputs(_with(net, ipamConfigs=[{"subnet": "10.9.0.0/24"}]))


def test_dependency_order(prod):
    graph = replay.dependency_graph(prod)
    stages = replay.container_stages(prod, graph)
    by_name = {r.name: stages[r.urn] for r in prod.containers}
    assert by_name["postgres-container"] == by_name["redis-container"] == 1
    assert by_name["main"] == 2
    workers = [n for n in by_name if n[-1].isdigit()]
    assert len(workers) == 12 and all(by_name[w] == 3 for w in workers)
    assert by_name["nginx-container"] == 4
    # Every container waits for its networks, volumes and image.
    by_urn = {r.urn: r for r in prod.resources}
    for c in prod.containers:
        kinds = {by_urn[d].type for d in graph[c.urn]}
        assert {replay.NETWORK, replay.VOLUME, replay.IMAGE} <= kinds, c.name


def test_depending_on_a_component_waits_for_its_children():
    def res(name, typ, parent="", deps=()):
        return Registered(typ, name, f"urn:{name}", {}, parent, list(deps), {})

    comp = res("comp", "synapse:index:WorkerClass")
    child = res("child", CONTAINER, parent="urn:comp")
    later = res("later", CONTAINER, deps=["urn:comp"])
    cap = replay.Capture("t", [comp, child, later], {})
    graph = replay.dependency_graph(cap)
    assert "urn:child" in graph["urn:later"]
    assert "urn:comp" in graph["urn:child"]


def test_provider_conversions():
    assert replay.duration_ns("5s", "x") == 5 * 10**9
    assert replay.duration_ns("1m30s", "x") == 90 * 10**9
    assert replay.duration_ns("250ms", "x") == 250 * 10**6
    with pytest.raises(replay.ReplayError):
        replay.duration_ns("5 seconds", "x")
    assert replay.nano_cpus("1", "x") == 10**9
    assert replay.nano_cpus("0.5", "x") == 5 * 10**8
    with pytest.raises(replay.ReplayError):
        replay.nano_cpus("two", "x")


def test_uploads_are_written_like_the_provider():
    data = replay.upload_archive([
        {"file": "/conf/start.sh", "content": "#!/bin/sh\n", "executable": True},
        {"file": "/conf/a.yaml", "content": "a: 1\n"},
    ])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["/conf/start.sh"].mode == 0o744
        assert members["/conf/a.yaml"].mode == 0o644
        assert tar.extractfile(members["/conf/a.yaml"]).read() == b"a: 1\n"
        assert all(m.uid == 0 and m.isfile() for m in members.values())


def test_secrets_are_kept_like_pulumi_state():
    state = _empty_state()
    a = replay.describe(replay.capture_stack("config/Pulumi.dev.yaml", {}, state), {}, "", "dev")
    b = replay.describe(replay.capture_stack("config/Pulumi.dev.yaml", {}, state), {}, "", "dev")
    c = replay.describe(replay.capture_stack("config/Pulumi.dev.yaml", {}, _empty_state()), {},
                        "", "dev")
    assert a.registration_shared_secret == b.registration_shared_secret
    assert a.homeserver["macaroon_secret_key"] == b.homeserver["macaroon_secret_key"]
    assert a.registration_shared_secret != c.registration_shared_secret


def test_describe_finds_what_the_tests_need(dev):
    d = replay.describe(dev, {}, "config/Pulumi.dev.yaml", "dev")
    assert d.nginx_url == "http://127.0.0.1:8008"
    assert d.federation_url == "http://127.0.0.1:8448"
    assert d.classes["rooms1"] == "rooms" and d.classes["main"] == "main"
    assert d.containers["nginx"] == "synapse-dev-nginx"
    assert len(d.registration_shared_secret) >= 16
    assert set(d.secrets) == {"registrationSharedSecret", "macaroonSecretKey", "formSecret",
                              "workerReplicationSecret", "postgresPassword", "signingKey"}
    assert d.secrets["registrationSharedSecret"] == d.registration_shared_secret
    assert d.secrets["signingKey"].startswith("ed25519 a_")
