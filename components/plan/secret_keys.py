"""The stack's secrets, one table (no Pulumi import): each secret's config key,
the file it is written to, which containers get that file, the Synapse option
that names it, whether the program generates it, and how a value the operator
gives is checked. Settings, the reader, rendering, the containers, the impact
report and the replay all derive what they need from it: adding a secret is one
entry (and, for a new kind of check or generation, its code).

Every secret is its own file, never inline in a config file, so each config
file stays plain and a preview can show its diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

CONFIG_DIR = "/conf"  # rendered files, uploaded into each container
SECRETS_DIR = f"{CONFIG_DIR}/secrets"  # one file per secret (containers.File.mode)

# Who gets a secret's file.
SYNAPSE = "synapse"  # every Synapse process
MAIN = "main"  # the main process only
POSTGRES = "postgres"
NGINX = "nginx"  # staged in nginx-config, published beside nginx.conf (with nginx.tls)
BACKUP = "backup"  # the scheduled backup container (synapse:backup)

# How a secret comes to be when the operator gives none.
PASSWORD = "password"  # pulumi-random, 48 letters and digits, kept in state
SIGNING_KEY = "signing key"  # an ed25519 key in Synapse's key-file format

# How a value the operator gives is checked (settings.check_secret_overrides).
LENGTH = "at least 16 characters"
KEY_FILE = "one line of a Synapse .signing.key file"
CERTIFICATES = "PEM certificates"
PRIVATE_KEY = "one PEM private key"


@dataclass(frozen=True)
class Secret:
    key: str  # stack config key: synapse:<key>
    path: str  # the file in the container
    readers: str  # SYNAPSE | MAIN | POSTGRES | NGINX | BACKUP
    check: str
    option: str | None = None  # the homeserver.yaml `*_path` option naming the file
    generated: str | None = None  # PASSWORD | SIGNING_KEY; None: only the operator's


# Synapse reads each of its secrets from a file (Synapse >= 1.126 for all of them).
SECRETS: tuple[Secret, ...] = (
    Secret("macaroonSecretKey", f"{SECRETS_DIR}/macaroon_secret_key", SYNAPSE, LENGTH,
           "macaroon_secret_key_path", PASSWORD),
    Secret("formSecret", f"{SECRETS_DIR}/form_secret", SYNAPSE, LENGTH, "form_secret_path", PASSWORD),
    Secret("workerReplicationSecret", f"{SECRETS_DIR}/worker_replication_secret", SYNAPSE, LENGTH,
           "worker_replication_secret_path", PASSWORD),
    Secret("signingKey", f"{SECRETS_DIR}/signing.key", SYNAPSE, KEY_FILE, "signing_key_path",
           SIGNING_KEY),
    # Only main serves /_synapse/admin/v1/register, its one user.
    Secret("registrationSharedSecret", f"{SECRETS_DIR}/registration_shared_secret", MAIN, LENGTH,
           "registration_shared_secret_path", PASSWORD),
    # Postgres's entrypoint reads it on first start (POSTGRES_PASSWORD_FILE); Synapse
    # gets it as libpq's password file (synapse_config.PGPASS_PATH).
    Secret("postgresPassword", f"{SECRETS_DIR}/postgres_password", POSTGRES, LENGTH,
           generated=PASSWORD),
    # nginx.tls: staged paths in nginx-config (nginx_conf names where nginx reads them).
    Secret("tlsCertificate", "/stage/tls/fullchain.pem", NGINX, CERTIFICATES),
    Secret("tlsKey", "/stage/tls/privkey.pem", NGINX, PRIVATE_KEY),
    # synapse:backup: the passphrase itself is written nowhere; the backup container
    # gets this file, the generated secrets sealed with it (backup_secrets.py), and
    # copies it into every backup.
    Secret("backupPassphrase", f"{CONFIG_DIR}/backup/secrets.enc", BACKUP, LENGTH),
)
BY_KEY: Mapping[str, Secret] = {s.key: s for s in SECRETS}
KEYS: tuple[str, ...] = tuple(BY_KEY)
GENERATED: tuple[str, ...] = tuple(s.key for s in SECRETS if s.generated)
GIVEN_ONLY: tuple[str, ...] = tuple(s.key for s in SECRETS if not s.generated)


def for_readers(*readers: str) -> tuple[Secret, ...]:
    return tuple(s for s in SECRETS if s.readers in readers)


def synapse_options() -> frozenset[str]:
    """The homeserver.yaml options the table owns: each `*_path` option and the
    in-line option it stands for (`macaroon_secret_key`)."""
    return frozenset(o for s in SECRETS if s.option for o in (s.option, s.option[:-len("_path")]))


# What the render command and the config hash see instead of the real values.
PLACEHOLDERS: Mapping[str, str] = {k: f"${{secret:{k}}}" for k in (*KEYS, "secretConfig")}
