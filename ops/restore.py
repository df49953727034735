"""Restore a backup into a stack that is down (make restore STACK=... FROM=...).

    python -m ops.restore --config config/Pulumi.<stack>.yaml --from DIR [--force]
                          [--set-secrets]

Before any Synapse process starts (the stack's containers must not exist: `make
down`, or a new host or stack name):
1. the backup's checksums are verified and its secrets decrypted (the passphrase);
2. the database: a throwaway container of the stack's postgres image, no network,
   initialises the stack's `postgres-data` volume as the stack's postgres would
   (same user, database, password and initdb arguments), `pg_restore` loads the dump
   in one transaction, and the one-time keys are emptied: devices may have handed
   out keys after the backup, and a key claimed twice breaks the Olm sessions made
   with it (Synapse's docs/usage/administration/backups.md asks for exactly this);
3. the media store into the stack's `media` volume, owners kept;
4. with --set-secrets, the generated secrets (signing key included) become the
   stack's secrets: `pulumi config set --secret synapse:<key>`, the value on stdin,
   so the next `up` renders the same keys instead of generating new ones.
Then `make up` starts the stack on the restored data (make restore runs it).
A volume that already holds a database or media is refused, naming what is in it,
unless --force (which replaces it). Exit status 0 restored, 1 refused or failed,
2 for a bad stack file or arguments.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from components.render.containers import POSTGRES_DATA
from components.plan.errors import ConfigError
from components.plan.stack_config import cli_error
from components.render.synapse_config import MEDIA_DIR, POSTGRES_DB, POSTGRES_USER
from ops import archive
from ops.archive import BackupError
from ops.docker_cli import docker, from_file, inspect, text
from ops.stack_data import DB_ARGS, StackData, stack_data

PASSWORD_DIR = "/run/restore"
READY_TIMEOUT_S = 180
# Cleared after the load (module docstring, step 2).
CLEARED_TABLES = ("e2e_one_time_keys_json",)


def _helper(d: StackData) -> str:
    return f"{d.prefix}-restore-postgres"


def start_postgres(d: StackData, password: str, image: str | None = None) -> str:
    """A throwaway postgres (the stack's image, or `image`) on the stack's data
    volume, no network, initialising it as the stack's postgres would if empty."""
    name = _helper(d)
    docker("rm", "--force", name, check=False)
    docker("create", "--name", name, "--network", "none",
           "--volume", f"{d.postgres_volume}:{POSTGRES_DATA}",
           "--env", f"POSTGRES_USER={POSTGRES_USER}", "--env", f"POSTGRES_DB={POSTGRES_DB}",
           "--env", f"POSTGRES_PASSWORD_FILE={PASSWORD_DIR}/password",
           "--env", f"POSTGRES_INITDB_ARGS={d.initdb_args}",
           image or d.postgres_image, "postgres", "-c", "listen_addresses=")
    docker("cp", "-", f"{name}:/run", stdin=_tar_dir(PASSWORD_DIR, password))
    docker("start", name)
    deadline = time.monotonic() + READY_TIMEOUT_S
    # The entrypoint's init-time server answers too: only the final one, PID 1, counts.
    probe = (f'test "$(head -n1 {POSTGRES_DATA}/postmaster.pid 2>/dev/null)" = 1 '
             f"&& pg_isready -q -U {POSTGRES_USER} -d {POSTGRES_DB}")
    while time.monotonic() < deadline:
        if docker("exec", name, "sh", "-c", probe, check=False).returncode == 0:
            return name
        if not inspect("container", name)["State"]["Running"]:
            logs = docker("logs", "--tail", "5", name, check=False).stderr.decode(errors="replace")
            raise BackupError(f"the restore's postgres stopped: {logs.strip()}")
        time.sleep(0.5)
    raise BackupError(f"the restore's postgres was not ready in {READY_TIMEOUT_S} s")


def _tar_dir(directory: str, password: str) -> bytes:
    """A tar of `directory`/password (root's, 0400) for `docker cp - <c>:/run`."""
    buf = io.BytesIO()
    data = password.encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        top = tarfile.TarInfo(directory.rsplit("/", 1)[1])
        top.type, top.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(top)
        info = tarfile.TarInfo(f"{top.name}/password")
        info.size, info.mode = len(data), 0o400
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def stop(name: str) -> None:
    docker("stop", "--time", "60", name, check=False)  # a clean shutdown: no recovery later
    docker("rm", "--force", name, check=False)


def what_the_database_holds(name: str) -> str | None:
    """'N users, N rooms, N events' if the stack's database has Synapse's tables."""
    sql = ("SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM rooms)"
           " || ' rooms, ' || (SELECT count(*) FROM events) || ' events'")
    has = text("exec", name, "psql", "-At", *DB_ARGS, "-c",
               "SELECT to_regclass('public.events') IS NOT NULL")
    return text("exec", name, "psql", "-At", *DB_ARGS, "-c", sql) if has == "t" else None


def _media_files(d: StackData) -> int:
    if inspect("volume", d.media_volume) is None:
        return 0
    out = text("run", "--rm", "--network", "none", "--volume", f"{d.media_volume}:{MEDIA_DIR}:ro",
               "--entrypoint", "sh", d.postgres_image, "-c", f"find {MEDIA_DIR} -type f | wc -l")
    return int(out)


def restore_data(d: StackData, folder: Path, secret: str, force: bool = False) -> dict[str, str]:
    """Database and media into the stack's volumes; returns the backup's secrets."""
    manifest = archive.read_verified(folder)
    secrets = archive.decrypt_secrets((folder / archive.SECRETS).read_bytes(), secret)
    for c in (d.main, d.postgres):
        if inspect("container", c) is not None:
            raise BackupError(f"{c} exists: a restore goes into a stack that is down "
                              "(make down first), so Synapse starts only on restored data")
    docker("volume", "create", d.postgres_volume)
    name = start_postgres(d, secrets["postgresPassword"])
    try:
        held = what_the_database_holds(name)
        media = _media_files(d)
        if (held or media) and not force:
            there = "; ".join(
                ([f"a Synapse database ({held}) in {d.postgres_volume}"] if held else [])
                + ([f"{media} media files in {d.media_volume}"] if media else []))
            raise BackupError(f"the stack's volumes hold data the restore would replace: "
                              f"{there}. Make destroy-data first, or pass --force")
        if held:
            # The cluster, and its role's password, stay; only local (trusted)
            # connections reach it, so the password is not what lets Synapse in.
            docker("exec", name, "psql", "-q", "--username", POSTGRES_USER, "--dbname", "postgres",
                   "-c", f"DROP DATABASE {POSTGRES_DB} WITH (FORCE)",
                   "-c", f"CREATE DATABASE {POSTGRES_DB}")
        from_file(folder / archive.DATABASE, "exec", "--interactive", name, "pg_restore",
                  "--exit-on-error", "--single-transaction", "--no-owner", *DB_ARGS)
        for table in CLEARED_TABLES:
            docker("exec", name, "psql", "-q", *DB_ARGS, "-c", f"TRUNCATE {table}")
        schema = int(text("exec", name, "psql", "-At", *DB_ARGS, "-c",
                          "SELECT version FROM schema_version"))
        if schema != manifest["schema_version"]:
            raise BackupError(f"restored schema {schema}, the manifest says "
                              f"{manifest['schema_version']}")
    finally:
        stop(name)
    docker("volume", "create", d.media_volume)
    clear = f"find {MEDIA_DIR} -mindepth 1 -delete && " if media else ""
    from_file(folder / archive.MEDIA, "run", "--rm", "--interactive", "--network", "none",
              "--volume", f"{d.media_volume}:{MEDIA_DIR}", "--entrypoint", "sh",
              d.postgres_image, "-c",
              f"{clear}tar --extract --numeric-owner --same-permissions --directory {MEDIA_DIR}")
    return secrets


def set_stack_secrets(stack: str, secrets: dict[str, str]) -> None:
    """`pulumi config set --secret synapse:<key>` each, the value on stdin (never in
    argv, where `ps` would show it); PULUMI_BACKEND_URL and the passphrase come
    from the environment, as make sets them."""
    for key, value in sorted(secrets.items()):
        proc = subprocess.run(["pulumi", "config", "set", "--secret", "--stack", stack,
                               f"synapse:{key}"], input=value.encode(), capture_output=True)
        if proc.returncode != 0:
            raise BackupError(f"pulumi config set synapse:{key} failed: "
                              f"{proc.stderr.decode(errors='replace').strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.restore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="config/Pulumi.<stack>.yaml")
    parser.add_argument("--from", dest="source", type=Path, required=True,
                        help="a backup directory (backups/<stack>/<UTC time>)")
    parser.add_argument("--force", action="store_true",
                        help="replace a database or media store the stack's volumes already hold")
    parser.add_argument("--set-secrets", action="store_true",
                        help="make the backup's secrets the stack's (pulumi config set --secret)")
    args = parser.parse_args(argv)
    try:
        d = stack_data(args.config)
    except (ConfigError, OSError) as e:
        return cli_error(args.config, e)
    try:
        secrets = restore_data(d, args.source, archive.passphrase(), args.force)
        if args.set_secrets:
            set_stack_secrets(d.stack, secrets)
    except (BackupError, OSError) as e:
        print(f"restore failed: {e}", file=sys.stderr)
        return 1
    print(f"restored {args.source} into stack {d.stack}: database and media in "
          f"{d.postgres_volume} and {d.media_volume}"
          + ("; its secrets are the stack's" if args.set_secrets else "")
          + ". Next: make up STACK=" + d.stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
