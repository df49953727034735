"""The stack's secrets: generated once by pulumi-random and kept (encrypted) in
state, unless the operator sets one with `pulumi config set --secret synapse:<key>`."""

from __future__ import annotations

import re
from typing import Any, Mapping

import pulumi
import pulumi_random as random

from components.plan import secret_keys

SECRET_LENGTH = 48


def _kebab(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower()


# Generated secrets exist only in state: `protect` keeps them through `pulumi
# destroy --exclude-protected` (make down); retain_on_delete would drop the value.
KEEP = pulumi.ResourceOptions(protect=True)


def _signing_key() -> pulumi.Output[str]:
    key_id = random.RandomString("signing-key-id", length=6, special=False, upper=False,
                                 opts=KEEP)
    seed = random.RandomBytes("signing-key-seed", length=32, opts=KEEP)
    # Synapse's key file: "<algorithm> <version> <unpadded base64 seed>".
    return pulumi.Output.all(key_id.result, seed.base64).apply(
        lambda a: f"ed25519 a_{a[0]} {a[1].rstrip('=')}"
    )


def stack_secrets(overrides: Mapping[str, str | None],
                  secret_config: Mapping[str, Any] | None = None) -> pulumi.Output[dict]:
    """One secret Output holding every secret by its config key, and the
    operator's `synapse:secretConfig` under "secretConfig"."""
    values: dict[str, pulumi.Input[Any]] = {"secretConfig": dict(secret_config or {})}
    for secret in secret_keys.SECRETS:
        key, given = secret.key, overrides.get(secret.key)
        if given is not None:
            # PEM keeps its trailing newline; the others are one line.
            values[key] = pulumi.Output.secret(given if secret.readers == secret_keys.NGINX
                                               else given.strip())
        elif secret.generated == secret_keys.SIGNING_KEY:
            values[key] = _signing_key()
        elif secret.generated == secret_keys.PASSWORD:
            values[key] = random.RandomPassword(_kebab(key), length=SECRET_LENGTH,
                                                special=False, opts=KEEP).result
        # else: never generated; settings require it where it is used
    return pulumi.Output.secret(pulumi.Output.all(**values))
