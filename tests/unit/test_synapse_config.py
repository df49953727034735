"""Plan -> Synapse files: parsed back with PyYAML and by Synapse itself."""

from pathlib import Path

import pytest
import yaml

from components.render.containers import build_deployment
from components.plan.errors import ConfigError
from components.tools.render import deployment_for
from components.plan.settings import load_settings
from components.render.synapse_config import reloadable_dict, render_homeserver, render_log_config
from components.plan.topology import build_plan
from components.plan import workers
from components.plan.workers import PRESETS
from tests.support.synapse_parser import TEST_SECRETS, live_files, parse

STACKS = ["config/Pulumi.dev.yaml", "config/Pulumi.prod.yaml"]


def plan_for(**raw):
    return build_plan(load_settings({"serverName": "example.org", **raw}, "t"))


def synapse_containers(stack):
    d = deployment_for(Path(stack))
    return [(c, live_files(d)) for c in d.containers if c.role in ("main", "worker")]


@pytest.mark.parametrize(
    "stack, spec, live",
    [(s, c, live) for s in STACKS for c, live in synapse_containers(s)],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "key", "live"),
)
def test_synapse_accepts_every_process_config(stack, spec, live, tmp_path):
    cfg = parse(spec, tmp_path, live=live)  # with --no-secrets-in-config: nothing inline
    assert cfg.server.server_name == load_settings_of(stack).server_name
    # Every secret came from its own file, and only main can register users.
    assert cfg.key.macaroon_secret_key == TEST_SECRETS["macaroonSecretKey"].encode()
    assert cfg.key.form_secret == TEST_SECRETS["formSecret"]
    assert cfg.worker.worker_replication_secret == TEST_SECRETS["workerReplicationSecret"]
    assert cfg.registration.registration_shared_secret == (
        TEST_SECRETS["registrationSharedSecret"] if spec.role == "main" else None)
    assert cfg.database.databases[0].config["args"]["passfile"] == str(tmp_path / "conf/secrets/pgpass")
    if spec.role == "main":
        assert cfg.worker.worker_name is None
        assert [l.type for l in cfg.server.listeners] == ["http", "http", "metrics"]
    else:
        assert cfg.worker.worker_name == spec.key
        assert cfg.worker.worker_app == ("synapse.app.media_repository"
                                         if spec.worker_class == "media" else "synapse.app.generic_worker")
    # Synapse resolved the same replication map as the plan (it renames main).
    resolved = {"main" if n == "master" else n for n in cfg.worker.instance_map}
    assert resolved == set(build_plan_of(stack).instance_map)
    assert cfg.redis.redis_enabled and cfg.redis.redis_path == "/sockets/synapse_redis.sock"
    assert cfg.key.signing_key[0].version == "a_test"


def load_settings_of(stack):
    from components.plan.stack_config import read_stack_file

    return read_stack_file(Path(stack)).settings


def build_plan_of(stack):
    return build_plan(load_settings_of(stack))


def test_media_workers_and_main_load_the_media_repo_and_media1_runs_its_jobs(tmp_path):
    """Main keeps the repository as nginx's fallback (workers.py, the media class);
    only media1 expires URL previews (url_previewer.py reads
    media_instance_running_background_jobs)."""
    d = deployment_for(Path("config/Pulumi.prod.yaml"))
    media1 = parse(d.container("media1"), tmp_path / "m", live=live_files(d)).media
    main = parse(d.container("main"), tmp_path / "x", live=live_files(d)).media
    assert media1.can_load_media_repo and main.can_load_media_repo
    assert main.media_instance_running_background_jobs == "media1"


def test_homeserver_layers_defaults_then_extra_config_then_enforced():
    plan = plan_for(extraConfig={"presence": {"enabled": False}, "caches": {"global_factor": 2}})
    hs = yaml.safe_load(render_homeserver(plan))
    assert hs["presence"] == {"enabled": False}
    # Deep merge keeps the default siblings of an overridden key; `caches` goes to
    # the file every process re-reads on SIGHUP.
    caches = reloadable_dict(plan)["caches"]
    assert caches["global_factor"] == 2 and caches["expire_caches"] is True
    assert "caches" not in hs and hs["event_cache_size"] == "30K"
    assert hs["user_directory"]["enabled"] is True  # untouched default
    assert list(hs)[:3] == ["server_name", "public_baseurl", "report_stats"]


def test_homeserver_uses_sockets_for_postgres_and_redis():
    hs = yaml.safe_load(render_homeserver(plan_for()))
    assert hs["database"]["args"]["host"] == "/sockets"
    assert hs["redis"] == {"enabled": True, "path": "/sockets/synapse_redis.sock"}
    assert "password" not in hs["database"]["args"]
    assert hs["database"]["args"]["passfile"] == "/conf/secrets/pgpass"
    assert hs["trusted_key_servers"] == [{"server_name": "matrix.org"}]


def test_homeserver_names_secret_files_and_holds_no_secret():
    hs = yaml.safe_load(render_homeserver(plan_for()))
    assert hs["macaroon_secret_key_path"] == "/conf/secrets/macaroon_secret_key"
    assert hs["worker_replication_secret_path"] == "/conf/secrets/worker_replication_secret"
    assert hs["signing_key_path"] == "/conf/secrets/signing.key"
    # Only main reads the registration secret (from main.yaml).
    assert "registration_shared_secret_path" not in hs
    for key in ("macaroon_secret_key", "registration_shared_secret", "form_secret",
                "worker_replication_secret"):
        assert key not in hs


def test_operator_secret_config_goes_to_its_own_file(tmp_path):
    """SSO client secrets, SMTP password, reCAPTCHA keys and a TURN secret, as the
    guide writes them, given as synapse:secretConfig: Synapse reads them from the
    secret file, and homeserver.yaml stays plain."""
    secret_config = {
        "email": {"smtp_host": "mail.example.org", "smtp_user": "synapse",
                  "smtp_pass": "smtp-password-1", "notif_from": "%(app)s <synapse@example.org>"},
        "oidc_providers": [{"idp_id": "keycloak", "idp_name": "SSO",
                            "issuer": "https://sso.example.org/realms/matrix",
                            "client_id": "synapse", "client_secret": "oidc-secret-1",
                            "discover": False, "authorization_endpoint": "https://sso.example.org/a",
                            "token_endpoint": "https://sso.example.org/t",
                            "userinfo_endpoint": "https://sso.example.org/u",
                            "jwks_uri": "https://sso.example.org/j",
                            "user_mapping_provider": {"config": {
                                "localpart_template": "{{ user.preferred_username }}"}}}],
        "recaptcha_public_key": "recaptcha-public-1",
        "recaptcha_private_key": "recaptcha-private-1",
        "turn_shared_secret": "turn-secret-1",
        "turn_uris": ["turn:turn.example.org:3478?transport=udp"],
    }
    plan = plan_for(secretConfig=secret_config)
    d = build_deployment(plan)
    main = d.container("main")
    assert main.command[-1] == "--config-path=/conf/secrets/config.yaml"
    cfg = parse(main, tmp_path, {**TEST_SECRETS, "secretConfig": secret_config}, strict=False,
                live=live_files(d))
    assert cfg.email.email_smtp_pass == "smtp-password-1"
    assert cfg.oidc.oidc_providers[0].client_secret == "oidc-secret-1"
    assert cfg.captcha.recaptcha_private_key == "recaptcha-private-1"
    assert cfg.voip.turn_shared_secret == "turn-secret-1"
    plain = {p: t for p, t in main.rendered_files(TEST_SECRETS).items() if "/secrets/" not in p}
    for value in ("smtp-password-1", "oidc-secret-1", "recaptcha-private-1", "turn-secret-1"):
        assert not any(value in t for t in plain.values()), value


def test_secret_config_may_not_split_a_section_or_touch_the_topology():
    with pytest.raises(ConfigError, match=r"secretConfig\.email': is also set in synapse:extraConfig"):
        plan_for(extraConfig={"email": {"smtp_host": "x"}}, secretConfig={"email": {"smtp_pass": "y"}})
    with pytest.raises(ConfigError, match=r"secretConfig\.macaroon_secret_key_path'"):
        plan_for(secretConfig={"macaroon_secret_key_path": "/x"})


def test_log_config_is_per_class_with_rotation_and_retention():
    plan = plan_for(log={"level": "DEBUG", "daysKept": 9})
    log = yaml.safe_load(render_log_config(plan, "rooms"))
    assert log["handlers"]["file"]["filename"] == "/data/log/rooms.log"
    assert log["handlers"]["file"]["when"] == "midnight"
    assert log["handlers"]["file"]["backupCount"] == 9
    assert log["handlers"]["buffer"]["class"] == (
        "synapse.logging.handlers.PeriodicallyFlushingMemoryHandler")
    assert log["root"]["level"] == "DEBUG" and "buffer" in log["root"]["handlers"]


def test_workers_of_one_class_share_one_log_config_which_live_config_publishes():
    d = build_deployment(plan_for(workers={"rooms": 3}))
    named = {yaml.safe_load(d.container(k).rendered_files()[f"/conf/workers/{k}.yaml"])[
        "worker_log_config"] for k in ("rooms1", "rooms2", "rooms3")}
    assert named == {"/conf/live/log/rooms.log.config"}
    # Not an upload of theirs (a change would replace them) but live-config's.
    assert not any("/log/" in p for k in ("rooms1", "rooms2", "rooms3")
                   for p in d.container(k).rendered_files())
    assert "/stage/log/rooms.log.config" in d.container("live-config").rendered_files()


def test_extra_config_cannot_override_the_topology():
    with pytest.raises(ConfigError, match="extraConfig.stream_writers"):
        plan_for(extraConfig={"stream_writers": {"events": ["main"]}})


def _preset_processes():
    for preset in PRESETS:
        d = deployment_for(Path("config/Pulumi.dev.yaml"), {"preset": preset})
        for c in d.containers:
            if c.role in ("main", "worker") and (c.key == "main" or c.key[-1] in "1256"):
                yield preset, c, live_files(d)


@pytest.mark.parametrize("preset, spec, live", list(_preset_processes()),
                         ids=lambda v: v if isinstance(v, str) else getattr(v, "key", "live"))
def test_synapse_accepts_every_preset_and_places_the_writers_as_planned(preset, spec, live,
                                                                        tmp_path):
    cfg = parse(spec, tmp_path, live=live)
    plan = build_plan(load_settings({"serverName": "dev.localhost", "preset": preset}, "dev"))
    writers = cfg.worker.writers
    for stream, names in plan.stream_writers.items():
        # Synapse knows main as "master" in stream_writers.
        assert list(getattr(writers, stream)) == [
            "master" if n == "main" else n for n in names], stream
    unmoved = set(workers.STREAMS) - set(plan.stream_writers)
    for stream in unmoved:
        assert list(getattr(writers, stream)) == ["master"], stream
    assert cfg.worker.federation_shard_config.instances == list(
        plan.duties.get("federation_sender_instances", ["master"]))


def test_synapse_accepts_writers_from_the_stream_writers_setting(tmp_path):
    # Main named as a writer is rendered "master", Synapse's instance name for it;
    # every other writer is in instance_map (WorkerConfig.read_config checks both).
    overrides = {"streamWriters": {"events": ["main", "tasks1"], "typing": "rooms1",
                                   "device_lists": ["client_sync1", "rooms1"],
                                   "thread_subscriptions": ["rooms1", "main"]}}
    d = deployment_for(Path("config/Pulumi.dev.yaml"), overrides)
    specs = {c.key: c for c in d.containers if c.role in ("main", "worker")}
    for key in ("main", "rooms1", "tasks1"):
        writers = parse(specs[key], tmp_path / key, live=live_files(d)).worker.writers
        assert writers.events == ["master", "tasks1"]
        assert writers.typing == ["rooms1"]
        assert writers.device_lists == ["client_sync1", "rooms1"]
        assert writers.thread_subscriptions == ["rooms1", "master"]
        assert writers.quarantined_media_changes == ["master", "media1"]


def test_federation_settings_reach_synapse_as_its_own_options(tmp_path):
    """synapse:federation, parsed back by Synapse: each CA its own file in every
    Synapse container (and only there), the ranges, the closed federation."""
    from tests.support.certs import self_signed

    ca1, ca2 = self_signed("CA one"), self_signed("CA two")
    settings = load_settings({"serverName": "a.test", "federation": {
        "customCaCertificates": [ca1 + ca2, ca1],  # a bundle, and a repeat
        "ipRangeWhitelist": ["172.16.0.0/12", "fd00::/8"],
        "domainWhitelist": ["b.test", "c.test:8448"],
        "minimumTlsVersion": "1.3",
        "allowPublicRooms": True,
        "allowProfileLookup": False,
    }}, "t")
    deployment = build_deployment(build_plan(settings))
    paths = ["/conf/federation-ca/ca-0.pem", "/conf/federation-ca/ca-1.pem"]
    for spec in deployment.containers:
        has = [p for p in paths if p in spec.rendered_files()]
        assert has == (paths if spec.role in ("main", "worker") else []), spec.key
    cfg = parse(deployment.container("sender1"), tmp_path, live=live_files(deployment))
    # Synapse built its trust root from exactly the two CAs, in order.
    roots = cfg.tls.federation_ca_trust_root._caCerts
    assert [r.to_cryptography().subject.rfc4514_string() for r in roots] == ["CN=CA one", "CN=CA two"]
    assert "172.20.1.1" in cfg.server.federation_ip_range_allowlist
    assert "10.0.0.1" not in cfg.server.federation_ip_range_allowlist
    assert cfg.federation.federation_domain_whitelist == {"b.test": True, "c.test:8448": True}
    assert cfg.tls.federation_client_minimum_tls_version == "1.3"
    assert cfg.server.allow_public_rooms_over_federation is True
    assert cfg.federation.allow_profile_lookup_over_federation is False


def test_federation_defaults_open_federation_over_tls_1_2_and_a_closed_directory(tmp_path):
    d = build_deployment(plan_for())
    cfg = parse(d.container("main"), tmp_path, live=live_files(d))
    assert cfg.federation.federation_domain_whitelist is None
    assert cfg.tls.federation_ca_trust_root is None  # the system's CAs
    assert cfg.tls.federation_client_minimum_tls_version == "1.2"
    assert cfg.server.allow_public_rooms_over_federation is False
    assert cfg.federation.allow_profile_lookup_over_federation is True
    assert "172.20.1.1" not in (cfg.server.federation_ip_range_allowlist or [])


def test_synapse_reads_the_reloadable_caches_after_homeserver_yaml(tmp_path):
    """`caches` lives in the file live-config publishes (reload_cache_config in
    synapse/app/_base.py reads it again on SIGHUP); Synapse sees the operator's
    factor there, and a cache change touches that file only."""
    extra = {"caches": {"global_factor": 2.5, "per_cache_factors": {"get_users_in_room": 4}}}
    d = build_deployment(plan_for(extraConfig=extra))
    cfg = parse(d.container("rooms1"), tmp_path, live=live_files(d))
    assert cfg.caches.global_factor == 2.5
    assert cfg.caches.cache_factors == {"get_users_in_room": 4.0}
    plain = build_deployment(plan_for())
    assert plain.container("rooms1").rendered_files() == d.container("rooms1").rendered_files()
    assert live_files(plain) != live_files(d)
