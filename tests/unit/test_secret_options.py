"""Which extraConfig values hold a secret (components/plan/secret_options.py); the
refusal itself goes through every reader in test_validation.py."""

import pytest

from components.plan import secret_options
from components.plan.settings import load_settings


def _nest(path, value):
    for key in reversed(path):
        value = [value] if key == secret_options.ANY else {key: value}
    return value


@pytest.mark.parametrize("pattern", [p for p, _ in secret_options.NAMED],
                         ids=lambda p: ".".join(p))
def test_every_named_option_is_found_where_synapse_reads_it(pattern):
    found = secret_options.find(_nest(pattern, "s3cr3t"))
    assert found is not None
    path, why = found
    assert tuple("*" if isinstance(k, int) else k for k in path) == pattern
    assert "synapse/config/" in why


@pytest.mark.parametrize("config", [
    {"email": {"smtp_host": "mx", "smtp_user": "synapse", "smtp_pass": None}},
    {"email": {"smtp_pass": ""}},
    {"oidc_providers": [{"idp_id": "a", "client_secret_path": "/run/secrets/oidc",
                         "client_auth_method": "client_secret_post",
                         "client_secret_jwt_key": {"key_file": "/run/k.pem"}}]},
    {"modules": [{"module": "m.M", "config": {"token_lifetime": "1h", "secret_file": "/x",
                                              "token_endpoint_auth_method": "none"}}]},
    {"media_storage_providers": [{"module": "s3", "config": {"bucket": "b",
                                                             "access_key_id": "id"}}]},
    {"password_config": {"enabled": True, "policy": {"minimum_length": 12}}},
    {"refresh_token_lifetime": "24h", "turn_uris": ["turn:x"], "turn_username": "u"},
    # Outside a module's config, a secret-like name is Synapse's, and not a secret.
    {"user_directory": {"search_all_users": True}, "form_secret_note": "x"},
], ids=["null-and-host", "empty", "oidc-by-file", "module-non-secrets", "s3-key-id",
        "password-policy", "token-lifetime", "other-names"])
def test_what_only_points_at_or_describes_a_secret_is_accepted(config):
    assert secret_options.find(config) is None
    load_settings({"serverName": "example.org", "extraConfig": config}, "t")


def test_secret_config_may_hold_them_all():
    secret = {"email": {"smtp_pass": "hunter22"}, "turn_shared_secret": "t"}
    s = load_settings({"serverName": "example.org", "secretConfig": secret}, "t")
    assert set(s.secret_config_keys) == {"email", "turn_shared_secret"}
