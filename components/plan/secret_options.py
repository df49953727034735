"""Synapse options that hold a secret, so that none reaches the plain
homeserver.yaml a preview prints through `synapse:extraConfig`: they belong in
`synapse:secretConfig` (a Pulumi secret, rendered to its own 0400 file). No Pulumi
import.

The named options are read from Synapse 1.163's config code (file and reader
below); `msc3861` is Synapse's before 1.150 (1.140's experimental.py), since the
program accepts images from 1.126. The options a module or provider defines are
unknown to Synapse itself (password providers, modules, media storage providers):
there any key named like a secret is refused.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

ANY = "*"  # any list index

# (option path, where Synapse reads it)
NAMED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("email", "smtp_pass"), "emailconfig.py EmailConfig.read_config"),
    (("oidc_providers", ANY, "client_secret"), "oidc.py _parse_oidc_config_dict"),
    (("oidc_providers", ANY, "client_secret_jwt_key", "key"), "oidc.py _parse_oidc_config_dict"),
    (("oidc_config", "client_secret"), "oidc.py (the single-provider form)"),
    (("oidc_config", "client_secret_jwt_key", "key"), "oidc.py (the single-provider form)"),
    (("jwt_config", "secret"), "jwt.py JWTConfig.read_config"),
    (("recaptcha_private_key",), "captcha.py CaptchaConfig.read_config"),
    # Synapse counts the public key as an in-line secret too (--no-secrets-in-config).
    (("recaptcha_public_key",), "captcha.py CaptchaConfig.read_config"),
    (("turn_shared_secret",), "voip.py VoipConfig.read_config"),
    (("turn_password",), "voip.py VoipConfig.read_config"),
    (("password_config", "pepper"), "auth.py AuthConfig.read_config"),
    (("matrix_authentication_service", "secret"), "mas.py MasConfigModel"),
    (("experimental_features", "msc3861", "client_secret"), "experimental.py MSC3861 (< 1.150)"),
    (("experimental_features", "msc3861", "admin_token"), "experimental.py MSC3861 (< 1.150)"),
    (("experimental_features", "msc3861", "jwk"), "experimental.py MSC3861 (< 1.150)"),
)

# Config Synapse hands to a module or provider as it is: its schema is theirs.
OPAQUE: tuple[tuple[str, ...], ...] = (
    ("password_providers", ANY, "config"),  # e.g. synapse-ldap3's bind_password
    ("modules", ANY, "config"),
    ("media_storage_providers", ANY, "config"),  # e.g. s3 storage's secret_access_key
    ("oidc_providers", ANY, "user_mapping_provider", "config"),
)
_SECRETISH = re.compile(r"(?:^|_)(?:password|passwd|secret|token|private_key|api_key)(?:_|$)",
                        re.IGNORECASE)
# Names that only point at or describe a secret.
_NOT_SECRET = re.compile(r"_(?:path|file|lifetime|ttl|length|url|uri|endpoint|header|type|method)$",
                         re.IGNORECASE)


def _matches(pattern: tuple[str, ...], path: tuple[Any, ...]) -> bool:
    return len(pattern) == len(path) and all(
        p == ANY and isinstance(k, int) or p == k for p, k in zip(pattern, path))


def _under(prefix: tuple[str, ...], path: tuple[Any, ...]) -> bool:
    return len(path) > len(prefix) and _matches(prefix, path[:len(prefix)])


def _walk(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, path + (i,))


def find(config: Mapping[str, Any]) -> tuple[tuple[Any, ...], str] | None:
    """The first (path, why) in `config` that holds a secret, or None. An option
    set to null or an empty string holds nothing."""
    for path, value in _walk(config):
        if not path or value in (None, ""):
            continue
        for pattern, source in NAMED:
            if _matches(pattern, path):
                return path, f"Synapse's {'.'.join(p for p in pattern if p != ANY)} " \
                             f"(synapse/config/{source})"
        key = path[-1]
        if (isinstance(key, str) and not isinstance(value, (Mapping, list))
                and any(_under(prefix, path) for prefix in OPAQUE)
                and _SECRETISH.search(key) and not _NOT_SECRET.search(key)):
            return path, "a module's or provider's option named like a secret"
    return None
