"""Take one backup of a running stack (make backup STACK=... [DEST=...] [KEEP=...]).

    python -m ops.backup --config config/Pulumi.<stack>.yaml [--dest backups] [--keep 7]

In this order, while Synapse keeps serving:
1. the database: `pg_dump --format=custom` inside the postgres container. pg_dump
   reads the whole database in one transaction snapshot and takes only ACCESS SHARE
   locks, which conflict with no INSERT, UPDATE or DELETE: Synapse's writes go on
   and the dump is consistent as of its start (PostgreSQL docs, app-pgdump: "It
   makes consistent backups even if the database is being used concurrently.
   pg_dump does not block other users accessing the database (readers or
   writers).");
2. the media store, after the dump: Synapse writes a file before it records it,
   so every file the dump names is already on disk (files newer than the dump are
   harmless extras); read from the media volume by a throwaway container of the
   stack's postgres image (no network);
3. the generated secrets, signing key included, read from the containers that
   hold them and encrypted with the passphrase (ops/archive.py);
4. a manifest: Synapse's and Postgres's versions, the database schema version,
   sizes and checksums. Then the newest `--keep` backups are kept.
Exit status 0 on success, 1 when the backup failed (nothing half-written is left
looking whole), 2 for a bad stack file or arguments.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from components.plan.errors import ConfigError
from components.plan.stack_config import cli_error
from components.render.synapse_config import MEDIA_DIR
from ops import archive
from ops.archive import BackupError
from ops.docker_cli import docker, running, text, to_file
from ops.stack_data import DB_ARGS, SYNAPSE_USER, StackData, stack_data

DEFAULT_DEST = Path("backups")
DEFAULT_KEEP = 7


def _psql(d: StackData, sql: str) -> str:
    return text("exec", d.postgres, "psql", "-At", *DB_ARGS, "-c", sql)


def read_secrets(d: StackData) -> dict[str, str]:
    out = {}
    for key, (container, path, user) in d.secrets.items():
        out[key] = text("exec", *(["--user", user] if user else []), container, "cat", path)
    return out


def facts(d: StackData) -> dict:
    version = text("exec", "--user", SYNAPSE_USER, d.main, "python", "-c",
                   "import synapse; print(synapse.__version__)")
    return {
        "stack": d.stack,
        "synapse_version": version,
        "synapse_image": d.synapse_image,
        "postgres_image": d.postgres_image,
        "postgres_server_version": _psql(d, "SHOW server_version"),
        "schema_version": int(_psql(d, "SELECT version FROM schema_version")),
    }


def take(d: StackData, dest: Path, keep: int, secret: str) -> Path:
    for name in (d.postgres, d.main):
        if not running(name):
            raise BackupError(f"{name} is not running: a backup reads a deployed stack "
                              "(make up first)")
    started = datetime.now(timezone.utc)
    final = dest / d.stack / started.strftime("%Y%m%dT%H%M%SZ")
    work = final.with_name(final.name + archive.PARTIAL)
    work.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        to_file(work / archive.DATABASE, "exec", d.postgres, "pg_dump", "--format=custom", *DB_ARGS)
        t_db = time.monotonic()
        to_file(work / archive.MEDIA, "run", "--rm", "--network", "none",
                "--volume", f"{d.media_volume}:{MEDIA_DIR}:ro", "--entrypoint", "tar",
                d.postgres_image, "--create", "--numeric-owner", "--directory", MEDIA_DIR, ".")
        t_media = time.monotonic()
        secrets = read_secrets(d)
        (work / archive.SECRETS).write_bytes(archive.encrypt_secrets(secrets, secret))
        signing_key_id = ":".join(secrets["signingKey"].split()[:2])  # public: ed25519:<id>
        archive.write_manifest(work, {
            **facts(d), "created_at": started.isoformat(timespec="seconds"),
            "signing_key_id": signing_key_id,
            "seconds": {"database": round(t_db - t0, 2), "media": round(t_media - t_db, 2),
                        "total": round(time.monotonic() - t0, 2)}})
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    archive.apply_retention(dest, d.stack, keep)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.backup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="config/Pulumi.<stack>.yaml")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help=f"backups land in DEST/<stack>/<UTC time> (default {DEFAULT_DEST})")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP,
                        help=f"keep the newest N backups of the stack (default {DEFAULT_KEEP})")
    args = parser.parse_args(argv)
    try:
        d = stack_data(args.config)
    except (ConfigError, OSError) as e:
        return cli_error(args.config, e)
    try:
        folder = take(d, args.dest, args.keep, archive.passphrase())
    except (BackupError, OSError) as e:
        return _fail(str(e))
    manifest = json.loads((folder / archive.MANIFEST).read_text())
    sizes = ", ".join(f"{n} {v['bytes']} bytes" for n, v in manifest["files"].items())
    print(f"backup {folder}: Synapse {manifest['synapse_version']}, schema "
          f"{manifest['schema_version']}, signing key {manifest['signing_key_id']}; {sizes}")
    return 0


def _fail(message: str) -> int:
    print(f"backup failed: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
