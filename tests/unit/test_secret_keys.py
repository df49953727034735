"""The one table of secrets (components/plan/secret_keys.py) and what is derived from
it: the keys the config accepts, the options extraConfig may not set, the files
each container gets, the placeholders."""

from components.plan import secret_keys as sk
from components.render.containers import build_deployment
from components.plan.settings import ENFORCED_HOMESERVER_KEYS, KNOWN_KEYS, load_settings
from components.plan.topology import build_plan


def test_every_secret_is_a_config_key_with_a_placeholder():
    assert set(sk.KEYS) <= set(KNOWN_KEYS)
    assert set(sk.PLACEHOLDERS) == {*sk.KEYS, "secretConfig"}


def test_synapse_options_are_the_table_s_and_extra_config_may_not_set_them():
    for s in sk.SECRETS:
        if s.readers in (sk.SYNAPSE, sk.MAIN):
            assert s.option and s.option.endswith("_path"), s.key
            assert {s.option, s.option[:-5]} <= ENFORCED_HOMESERVER_KEYS, s.key
        else:
            assert s.option is None, s.key  # not Synapse's: nothing in homeserver.yaml


def test_each_container_gets_the_files_of_the_secrets_it_reads():
    settings = load_settings({"serverName": "example.org", "nginx": {"tls": True},
                              "backup": {"enabled": True}}, "t")
    deployment = build_deployment(build_plan(settings))
    readers = {"main": {sk.SYNAPSE, sk.MAIN}, "worker": {sk.SYNAPSE}, "postgres": {sk.POSTGRES},
               "nginx-config": {sk.NGINX}, "nginx": set(), "redis": set(), "prometheus": set(),
               "live-config": set(),
               "backup": {sk.BACKUP}}
    for c in deployment.containers:
        secret_files = {f.path for f in c.files if f.secret}
        want = {s.path for s in sk.SECRETS if s.readers in readers[c.role]}
        # Synapse also gets libpq's password file, made from postgresPassword.
        assert want <= secret_files, c.key
        assert not {s.path for s in sk.SECRETS} - want & secret_files, c.key


def test_only_the_never_generated_secrets_are_required_of_the_operator():
    assert set(sk.GIVEN_ONLY) == {"tlsCertificate", "tlsKey", "backupPassphrase"}
    assert all(s.generated for s in sk.SECRETS if s.readers not in (sk.NGINX, sk.BACKUP))
