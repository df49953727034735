"""Least privilege, as registered under Pulumi's mocks for both stacks: who each
container runs as, with which capabilities and options, which volumes and
networks it gets. What each choice rests on is measured in docs/least-privilege.md;
tests/e2e/test_stack.py::test_least_privilege checks the same on the live stack."""

import pytest

from tests.support.capture import run_program, run_stack_file

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
NETWORK = "docker:index/network:Network"
SYNAPSE_CAPS = ["CAP_CHOWN", "CAP_SETGID", "CAP_SETUID"]

# role label -> (user, supplementary groups, capabilities added, read-only)
EXPECTED = {
    "postgres": ("999:999", ["991"], [], False),
    "redis": ("redis", ["991"], [], True),
    "main": (None, None, SYNAPSE_CAPS, False),
    "worker": (None, None, SYNAPSE_CAPS, False),
    "nginx-config": ("101:101", None, [], False),
    # The Synapse user, who owns the live-config volume, from the start.
    "live-config": ("991:991", None, [], False),
    "nginx": ("101:101", None, [], True),
    "prometheus": ("65534:65534", None, [], False),
    # Root only to hand its volume over, then gosu to Synapse's user (backup_conf).
    "backup": (None, None, SYNAPSE_CAPS, False),
}
BACKUP_ON = {"backup": {"enabled": True}, "backupPassphrase": "a backup passphrase"}


@pytest.fixture(scope="module", params=["dev", "prod"])
def cap(request):
    # prod with scheduled backups, so every role is checked.
    return run_stack_file(f"config/Pulumi.{request.param}.yaml",
                          BACKUP_ON if request.param == "prod" else None)


def role(res) -> str:
    labels = {lab["label"]: lab["value"] for lab in res.plain["labels"]}
    return labels["org.matrix.synapse-workers.role"]


def test_every_container_drops_everything_but_what_it_needs(cap):
    roles = set()
    for c in cap.containers:
        p, r = c.plain, role(c)
        roles.add(r)
        user, groups, adds, read_only = EXPECTED[r]
        assert p.get("user") == user, c.name
        assert p.get("groupAdds") == groups, c.name
        assert p["capabilities"] == {"adds": adds, "drops": ["ALL"]}, c.name
        assert p["securityOpts"] == ["no-new-privileges:true"], c.name
        assert p["readOnly"] is read_only, c.name
        # Docker refuses uploads into a read-only container: none has any.
        assert not (read_only and p["uploads"]), c.name
        # Capabilities in Docker's CAP_ form, which it keeps as sent.
        assert all(a.startswith("CAP_") for a in p["capabilities"]["adds"]), c.name
    assert roles <= set(EXPECTED) and roles >= set(EXPECTED) - {"backup"}


def test_synapse_drops_root_in_its_image_after_start_sh(cap):
    """Root only for start.sh, which gosu's for everything it need not do as root;
    /start.py then drops to 991:991 (its UID/GID)."""
    for c in cap.containers:
        if role(c) not in ("main", "worker"):
            continue
        env = dict(e.split("=", 1) for e in c.plain["envs"])
        assert (env["UID"], env["GID"]) == ("991", "991"), c.name
        start = next(u for u in c.plain["uploads"] if u["file"] == "/conf/start.sh")["content"]
        lines = start.splitlines()
        assert lines[-1] == 'exec /start.py "$@"', c.name
        assert 'gosu "$user" sh -c \'mkdir -p /data/log && chmod 0500 /conf/secrets\'' in lines
        # Chowned only while still root's: without CAP_DAC_READ_SEARCH root cannot
        # walk the Synapse user's 0500 directory on a restart.
        assert ('[ "$(stat -c %u:%g /conf/secrets)" = "$user" ] || '
                'chown -R "$user" /conf/secrets') in lines
        assert not any(l.startswith(("chmod", "mkdir")) for l in lines), c.name


def test_postgres_and_redis_sockets_are_for_the_sockets_group_only(cap):
    pg = cap.named("postgres-container", CONTAINER).plain
    assert "unix_socket_permissions=0770" in pg["command"]
    password = next(u for u in pg["uploads"] if u["file"] == "/conf/secrets/postgres_password")
    # Root's (no upload owner in pulumi-docker 5.1.0) and readable by postgres, the
    # container's only user; Synapse's secrets stay 0400.
    assert password["permissions"] == "0444" and "owner" not in password
    synapse = cap.named("main", CONTAINER).plain["uploads"]
    assert {u["permissions"] for u in synapse if u["file"].startswith("/conf/secrets/")} == {"0400"}
    redis = cap.named("redis-container", CONTAINER).plain["command"]
    assert redis[redis.index("--unixsocketperm") + 1] == "660"
    assert redis[redis.index("--port") + 1] == "0"  # sockets only
    assert "listen_addresses=" in pg["command"]


def test_volumes_sockets_group_and_nginx_config_in_memory(cap):
    vols = {v.plain["name"].split("-", 2)[2]: v.plain for v in cap.of_type(VOLUME)}
    # root and group 991, setgid (sockets take the group), sticky, others pass only
    assert vols["sockets"]["driverOpts"] == {"type": "tmpfs", "device": "tmpfs",
                                             "o": "mode=3771,uid=0,gid=991"}
    assert vols["nginx-config"]["driverOpts"] == {"type": "tmpfs", "device": "tmpfs",
                                                  "o": "uid=101,gid=101,mode=0700"}


def test_nginx_temp_paths_are_bounded_tmpfs():
    cap = run_program({"serverName": "example.org", "maxUploadSizeMb": 30})
    nginx = cap.named("nginx-container", CONTAINER).plain
    assert nginx["tmpfs"] == {
        "/run": "uid=101,gid=101,mode=0755,size=1m",
        "/var/cache/nginx": "uid=101,gid=101,mode=0700,size=120m",
        "/var/lib/nginx": "uid=101,gid=101,mode=0700,size=120m",
    }
    # The provider only writes a tmpfs change to state: the program replaces.
    assert "tmpfs" in nginx and "tmpfs" in cap.named("nginx-container", CONTAINER).options[
        "replaceOnChanges"]
    assert all("tmpfs" not in c.plain for c in cap.containers if c.name != "nginx-container")


def test_only_nginx_and_prometheus_publish_and_services_stay_internal(cap):
    internal = {n.plain["name"]: n.plain.get("internal", False) for n in cap.of_type(NETWORK)}
    for c in cap.containers:
        p, r = c.plain, role(c)
        assert bool(p.get("ports")) == (r in ("nginx", "prometheus")), c.name
        if r == "prometheus":  # no authentication: loopback only
            assert [(q["internal"], q["ip"]) for q in p["ports"]] == [(9090, "127.0.0.1")]
            assert sorted(internal[n["name"]] for n in p["networksAdvanced"]) == [False, True]
        if r in ("postgres", "redis", "nginx-config", "backup"):
            assert [internal[n["name"]] for n in p["networksAdvanced"]] == [True], c.name


def test_the_backup_container_reads_media_read_only_and_no_plain_secret():
    """Only the sealed secrets, readable (it drops to the Synapse user) but opened
    only by the passphrase, which it never gets."""
    cap = run_stack_file("config/Pulumi.dev.yaml", BACKUP_ON)
    b = cap.named("backup-container", CONTAINER)
    mounts = {m["target"]: m for m in b.plain["mounts"]}
    assert mounts["/media"]["readOnly"] is True
    assert mounts["/backups"]["source"] == "synapse-dev-backups"
    assert not mounts["/sockets"]["readOnly"]  # connecting to a socket is a write
    ups = {u["file"]: u for u in b.inputs["uploads"]}
    sealed = ups["/conf/backup/secrets.enc"]
    assert sealed["permissions"] == "0444"
    assert set(ups) == {"/conf/backup/run.sh", "/conf/backup/metrics.pl",
                        "/conf/backup/secrets.enc"}
    assert not any("a backup passphrase" in str(v) for v in b.plain.values())


def test_the_acme_client_is_root_without_capabilities_and_its_store_is_kept():
    """nginx.tls: acme: lego's image as it runs (root, which owns both its volumes)
    with no capability; its account and certificates survive `pulumi destroy`;
    `up` does not wait for its first certificate."""
    cap = run_program({"serverName": "example.org", "publicBaseUrl": "https://m.example.org/",
                       "nginx": {"tls": "acme", "acme": {"email": "ops@example.org"}}})
    acme = next(c for c in cap.containers if role(c) == "acme")
    p = acme.plain
    assert p.get("user") is None and p["capabilities"] == {"adds": [], "drops": ["ALL"]}
    assert p["securityOpts"] == ["no-new-privileges:true"] and p["wait"] is False
    assert acme.parent.endswith("synapse:index:Acme::acme")
    volumes = {v.plain["name"]: v for v in cap.of_type(VOLUME)}
    assert volumes["synapse-test-acme-data"].options["retainOnDelete"]
    public = volumes["synapse-test-acme-public"]
    assert not public.options["retainOnDelete"]
    assert public.plain["driverOpts"]["o"] == "uid=0,gid=101,mode=0750"
    assert cap.outputs["acmeContainer"] == "synapse-test-acme"
    assert "synapse-test-acme-data" in cap.outputs["dataVolumes"]
