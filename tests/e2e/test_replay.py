"""The replay harness itself, without Docker: it refuses what it does not apply,
orders resources by their dependencies, writes uploads as the provider does,
keeps the stack's secrets like Pulumi state, and plans with the provider model."""

from __future__ import annotations

import copy
import io
import tarfile

import pytest

from components.provider import model as pm
from components.render.containers import LABEL_PREFIX
from tests.e2e import replay
from tests.e2e.replay import engine, graph, state as state_mod
from tests.e2e.replay.docker_api import upload_archive
from tests.support.capture import Registered

CONTAINER = replay.CONTAINER


@pytest.fixture(scope="module")
def dev():
    return replay.capture_stack("config/Pulumi.dev.yaml", {}, state_mod.empty())


@pytest.fixture(scope="module")
def prod():
    return replay.capture_stack("config/Pulumi.prod.yaml", {"egress": False}, state_mod.empty())


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
    {"pidMode": "host"},
    {"init": True},
    {"capabilities": {"adds": ["CAP_NET_ADMIN"], "drops": ["ALL"], "x": 1}},
    {"uploads": [{"file": "/x", "content": "x", "owner": "999"}]},  # 5.2.0's, not 5.1.0's
    {"volumes": [{"containerPath": "/x", "hostPath": "/"}]},
    {"uploads": [{"file": "/x", "contentBase64": "eA=="}]},
    {"networksAdvanced": [{"name": "n", "ipv4Address": "10.0.0.2"}]},
    {"mounts": [{"target": "/x", "type": "volume", "source": "v", "volumeOptions": {}}]},
    {"memory": "1024"},
])
def test_unapplied_container_inputs_are_refused(dev, change):
    main = next(r for r in dev.containers if r.name == "main")
    with pytest.raises(replay.UnsupportedInput):
        replay.check_inputs(_with(main, **change))


def test_unmodelled_resource_options_are_refused(dev):
    main = next(r for r in dev.containers if r.name == "main")
    odd = Registered(main.type, main.name, main.urn, main.inputs, main.parent, main.dependencies,
                     {**main.options, "ignoreChanges": ["envs"]})
    with pytest.raises(replay.UnsupportedInput, match="ignoreChanges"):
        replay.check_inputs(odd)


def test_unknown_resource_types_are_refused(dev):
    net = dev.of_type(replay.NETWORK)[0]
    with pytest.raises(replay.UnsupportedInput):
        replay.check_inputs(Registered("docker:index/plugin:Plugin", "s", "urn:s", {},
                                       "", [], {}))
    with pytest.raises(replay.UnsupportedInput):
        replay.check_inputs(_with(net, ipamConfigs=[{"subnet": "10.9.0.0/24"}]))


def test_dependency_order(prod):
    g = replay.dependency_graph(prod)
    by_urn = {r.urn: r for r in prod.resources}
    stages = graph.depth(g, lambda u: by_urn[u].type == CONTAINER)
    by_name = {by_urn[u].name: s for u, s in stages.items()}
    # Prometheus waits only for its target files (live-config), as every Synapse
    # process does for its log config; a target not up yet is scraped as down.
    assert by_name["postgres-container"] == by_name["redis-container"] == 1
    assert by_name["live-config-container"] == 1
    assert by_name["prometheus-container"] == 2
    assert by_name["main"] == 2
    workers = [n for n in by_name if n[-1].isdigit()]
    # rooms3 and rooms4 wait for rooms1 and rooms2 (rollout.py: they roll).
    rolled = {"rooms3", "rooms4"}
    assert len(workers) == 12 and all(by_name[w] == 3 for w in workers if w not in rolled)
    assert all(by_name[w] == 4 for w in rolled)
    assert by_name["nginx-config"] == 5 and by_name["nginx-container"] == 6
    for c in prod.containers:  # every container waits for its networks, volumes and image
        kinds = {by_urn[d].type for d in g[c.urn]}
        assert {replay.NETWORK, replay.VOLUME, replay.IMAGE} <= kinds, c.name


def test_depending_on_a_component_waits_for_its_children():
    def res(name, typ, parent="", deps=()):
        return Registered(typ, name, f"urn:{name}", {}, parent, list(deps), {})

    comp = res("comp", "synapse:index:WorkerClass")
    child = res("child", CONTAINER, parent="urn:comp")
    later = res("later", CONTAINER, deps=["urn:comp"])
    g = replay.dependency_graph(replay.engine.Capture("t", [comp, child, later], {}))
    assert "urn:child" in g["urn:later"]
    assert "urn:comp" in g["urn:child"]


def test_each_resource_starts_when_its_own_dependencies_are_done():
    """Not in stages: `late` depends only on `fast`, so it runs while `slow` (which
    it does not depend on) is still running; `slow` finishes only once `late` has
    started, so a staged run would stall and fail."""
    import threading

    late_started = threading.Event()

    def action(key):
        if key == "slow":
            assert late_started.wait(20), "late waited for slow, which it does not depend on"
        if key == "late":
            late_started.set()
        return key

    done = graph.run_graph(["slow", "fast", "late"], {"late": {"fast"}}, action, str)
    assert done["late"].started_at >= done["fast"].finished_at
    assert done["late"].started_at < done["slow"].finished_at


def test_steps_run_with_no_parallelism_limit():
    """Pulumi's --parallel is unbounded by default: 40 independent steps all run at
    once (a barrier of 40 would break under any smaller limit)."""
    import threading

    barrier = threading.Barrier(40, timeout=20)
    done = graph.run_graph([f"k{i}" for i in range(40)], {}, lambda k: str(barrier.wait()), str)
    assert len(done) == 40


def test_deletes_run_in_antichains_dependents_first(prod):
    """The engine deletes one antichain at a time: what depends on a resource goes
    in an earlier antichain than the resource itself."""
    g = replay.dependency_graph(prod)
    by_urn = {r.urn: r for r in prod.resources}
    custom = {u for u in g if not replay.is_no_op(by_urn[u])}
    chains = graph.delete_antichains({u: g[u] & custom for u in custom})
    index = {u: i for i, chain in enumerate(chains) for u in chain}
    assert set(index) == custom
    for u in custom:
        for d in g[u] & custom:
            assert index[u] < index[d], (by_urn[u].name, by_urn[d].name)
    name = {by_urn[u].name: i for u, i in index.items()}
    assert name["nginx-container"] < name["nginx-config"] < name["rooms1"] < name["main"] \
        < name["postgres-container"]
    # Independent resources share an antichain: the workers nginx routes to go
    # together, but for the rolling pairs (rooms3 before rooms1, rollout.py); the
    # senders, on which nothing depends, go first, with nginx.
    assert name["client_sync1"] == name["rooms3"] == name["rooms4"] < name["rooms1"] \
        == name["rooms2"]
    assert name["sender1"] == name["nginx-container"] == 0
    with pytest.raises(replay.ReplayError):
        graph.delete_antichains({"a": {"b"}, "b": {"a"}})


def test_state_from_before_dependencies_deletes_by_type_and_rank():
    entries = {
        "v": {"type": replay.VOLUME, "inputs": {"name": "v"}},
        "m": {"type": CONTAINER, "inputs": {"name": "m", "labels": [
            {"label": f"{LABEL_PREFIX}.role", "value": "main"}]}},
        "n": {"type": CONTAINER, "inputs": {"name": "n", "labels": [
            {"label": f"{LABEL_PREFIX}.role", "value": "nginx"}]}},
        "kept": {"type": CONTAINER, "inputs": {"name": "k"}, "dependencies": []},
    }
    chains = graph.delete_antichains(engine._delete_deps(entries))
    order = {k: i for i, c in enumerate(chains) for k in c}
    assert order["n"] < order["m"] < order["v"]


def test_uploads_are_written_like_the_provider():
    data = upload_archive([
        {"file": "/conf/start.sh", "content": "#!/bin/sh\n", "executable": True},
        {"file": "/conf/a.yaml", "content": "a: 1\n"},
        {"file": "/conf/secrets/k", "content": "s\n", "permissions": "0400"},
        {"file": "/conf/secrets/p", "content": "p\n", "permissions": "0444"},
    ])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["/conf/start.sh"].mode == 0o744
        assert members["/conf/a.yaml"].mode == 0o644
        assert members["/conf/secrets/k"].mode == 0o400
        assert tar.extractfile(members["/conf/a.yaml"]).read() == b"a: 1\n"
        assert all(m.isfile() for m in members.values())
        assert members["/conf/secrets/p"].mode == 0o444
        # Root's, always: pulumi-docker 5.1.0 has no upload owner.
        assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


def test_secrets_are_kept_like_pulumi_state():
    st = state_mod.empty()

    def secrets(s):
        cap = replay.capture_stack("config/Pulumi.dev.yaml", {}, s)
        return replay.describe(cap, None, {}, "", "dev").secrets

    a, b, c = secrets(st), secrets(st), secrets(state_mod.empty())
    assert a == b
    assert a["registrationSharedSecret"] != c["registrationSharedSecret"]
    assert set(a) == {"registrationSharedSecret", "macaroonSecretKey", "formSecret",
                      "workerReplicationSecret", "postgresPassword", "signingKey"}
    assert a["signingKey"].startswith("ed25519 a_")


def test_describe_finds_what_the_tests_need(dev):
    d = replay.describe(dev, None, {}, "config/Pulumi.dev.yaml", "dev")
    assert d.nginx_url == "http://127.0.0.1:8008"
    assert d.federation_url == "http://127.0.0.1:8448"
    assert d.admin_url == "http://127.0.0.1:8009"
    assert d.classes["rooms1"] == "rooms" and d.classes["main"] == "main"
    assert d.containers["nginx"] == "synapse-dev-nginx"
    assert len(d.registration_shared_secret) >= 16


def _stored_state(cap) -> dict:
    """The state the provider would hold right after creating `cap`'s resources."""
    st = state_mod.empty()
    for res in cap.resources:
        if replay.is_no_op(res):
            continue
        inputs = {k: pm.normal_form(res.type, k, v) for k, v in res.plain.items()}
        st["resources"][state_mod.key_of(res.type, res.name)] = {
            "type": res.type, "id": "x", "inputs": inputs, "options": {}}
    return st


def _desired(cap):
    return {r.urn: engine.desired_inputs(r, {}) for r in cap.resources if not replay.is_no_op(r)}


def test_an_unchanged_stack_plans_nothing(prod):
    plan = engine.make_plan(prod, _stored_state(prod), _desired(prod))
    assert plan.counts() == {replay.SAME: len(_desired(prod))}


def test_plan_follows_the_provider_model(prod):
    st = _stored_state(prod)
    key = lambda name: state_mod.key_of(CONTAINER, name)  # noqa: E731
    st["resources"][key("rooms1")]["inputs"]["memory"] = 1
    st["resources"][key("rooms2")]["inputs"]["cpus"] = "1.0"  # was 2.0 (medium)
    st["resources"][key("rooms3")]["inputs"]["healthcheck"]["interval"] = "1m0s"
    st["resources"][key("sender1")]["inputs"]["mustRun"] = False  # found stopped
    st["resources"][key("gone")] = {"type": CONTAINER, "id": "y", "inputs": {"name": "gone"}}
    del st["resources"][key("tasks1")]
    plan = engine.make_plan(prod, st, _desired(prod))
    by = {s.name: s for s in plan.steps if s.type == CONTAINER}
    assert (by["rooms1"].action, by["rooms1"].changed) == (replay.UPDATE, ("memory",))
    assert (by["rooms2"].action, by["rooms2"].replace_keys) == (replay.REPLACE, ("cpus",))
    assert by["rooms2"].delete_before_replace
    # Healthcheck: an in-place change for the provider, a replacement by the program's option.
    assert by["rooms3"].action == replay.REPLACE and by["rooms3"].delete_before_replace
    assert (by["sender1"].action, by["sender1"].changed) == (replay.UPDATE, ("mustRun",))
    assert by["tasks1"].action == replay.CREATE
    assert by["gone"].action == replay.DELETE
    assert by["main"].action == replay.SAME


def test_a_volume_replaced_first_deletes_the_containers_that_mount_it(prod):
    """Pulumi's delete-before-replace of a volume deletes its dependents first (they
    are replaced too: their mounts name it); Docker refuses to remove a volume in use."""
    st = _stored_state(prod)
    vol = st["resources"][state_mod.key_of(replay.VOLUME, "nginx-config-volume")]
    vol["inputs"]["driverOpts"] = {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}  # not ours
    plan = engine.make_plan(prod, st, _desired(prod))
    step = next(s for s in plan.steps if s.name == "nginx-config-volume")
    assert (step.action, step.delete_before_replace) == (replay.REPLACE, True)
    key = lambda name: state_mod.key_of(CONTAINER, name)  # noqa: E731
    assert step.dependents == (key("nginx-container"), key("nginx-config"))  # nginx first
    by = {s.name: s for s in plan.steps if s.type == CONTAINER}
    for name in ("nginx-container", "nginx-config"):
        assert (by[name].action, by[name].replace_keys) == (replay.REPLACE, ("mounts",)), name
        assert by[name].delete_before_replace
    assert by["main"].action == replay.SAME
