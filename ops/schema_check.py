"""Before an `up` changes `images.synapse`: can that Synapse run on this stack's
database? (make up and make impact run it; no Pulumi import.)

    python -m ops.schema_check --config config/Pulumi.<stack>.yaml [--set key=YAML ...]

Synapse keeps two numbers in the database: `schema_version` (the schema it has been
migrated to) and `schema_compat_version` (the oldest code that may still use it).
On start, before anything else, Synapse refuses a database whose compat version is
above its own SCHEMA_VERSION ("Cannot use this database as it is too new for the
server to understand"), and a worker refuses one older than its SCHEMA_VERSION
until main has migrated it (synapse/storage/prepare_database.py,
`_upgrade_existing_database`; synapse/storage/schema/__init__.py). Every Synapse
container is replaced when the image changes, main first: an image the database is
too new for would leave the stack with no Synapse at all, and the way back is a
restore (docs/backups.md). So:
  - refused (exit 1): the image's SCHEMA_VERSION is below the database's compat
    version; nothing has been replaced;
  - said (exit 0): an upgrade (main migrates, then the workers start), or an older
    image within the compatibility window (a rollback Synapse allows);
  - not checked (exit 0): the stack's database is not running (a first deploy, or
    the stack is down), said as such.
The image's numbers come from the image itself (`docker run --rm --network none`),
pulled first if it is not on this host. Exit 2 for a bad stack file.

Postgres too: a new `images.postgres` of another major version than the data the
stack's running postgres serves is refused before anything is replaced (Postgres
would refuse the data directory, "database files are incompatible with server",
and the stack would be left without a database): `make upgrade-postgres` moves
the data first (ops/upgrade_postgres.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from components.plan.errors import ConfigError
from components.plan.stack_config import cli_error, override_arg, read_stack_file
from ops import upgrade_postgres
from ops.archive import BackupError
from ops.docker_cli import docker, inspect, running, text
from ops.stack_data import DB_ARGS

_IMAGE_SCHEMA = ("from synapse.storage.schema import SCHEMA_VERSION as v, "
                 "SCHEMA_COMPAT_VERSION as c; import synapse; print(v, c, synapse.__version__)")


@dataclass(frozen=True)
class ImageSchema:
    schema: int  # SCHEMA_VERSION: what the code migrates to and understands
    compat: int  # SCHEMA_COMPAT_VERSION: what it writes as the oldest compatible code
    version: str  # Synapse's version


@dataclass(frozen=True)
class DatabaseSchema:
    schema: int
    compat: int | None  # None before Synapse 1.x wrote one


def verdict(image_ref: str, image: ImageSchema, db: DatabaseSchema) -> tuple[bool, str]:
    """(allowed, what happens), by Synapse's own start-up rules."""
    if db.compat is not None and db.compat > image.schema:
        return False, (f"refused: images.synapse {image_ref} is Synapse {image.version} "
                       f"(schema {image.schema}), but this stack's database is at schema "
                       f"{db.schema} and usable only by code of schema {db.compat} or newer: "
                       "Synapse refuses to start on it (\"too new for the server to "
                       "understand\"). Nothing was replaced. Keep the newer image, or go back "
                       "by restoring a backup taken before the upgrade (docs/backups.md)")
    if image.schema > db.schema:
        return True, (f"upgrade: Synapse {image.version} migrates the database from schema "
                      f"{db.schema} to {image.schema}; main is replaced and migrates first, "
                      "the workers start after it (a worker refuses an unmigrated schema)")
    if image.schema < db.schema:
        return True, (f"rollback within Synapse's compatibility window: Synapse {image.version} "
                      f"(schema {image.schema}) may use this database (schema {db.schema}, "
                      f"compatible back to {db.compat})")
    return True, f"same schema ({db.schema}): no migration"


def image_schema(ref: str) -> ImageSchema:
    if inspect("image", ref) is None:
        docker("pull", ref)
    out = text("run", "--rm", "--network", "none", "--entrypoint", "python", ref, "-c", _IMAGE_SCHEMA)
    schema, compat, version = out.split()
    return ImageSchema(int(schema), int(compat), version)


def database_schema(postgres: str) -> DatabaseSchema | None:
    """The stack's database's numbers, or None if it holds no Synapse schema yet."""
    def one(sql: str) -> str:
        return text("exec", postgres, "psql", "-At", *DB_ARGS, "-c", sql)

    if one("SELECT to_regclass('public.schema_version') IS NOT NULL") != "t":
        return None
    compat = one("SELECT to_regclass('public.schema_compat_version') IS NOT NULL") == "t" and \
        one("SELECT compat_version FROM schema_compat_version")
    return DatabaseSchema(int(one("SELECT version FROM schema_version")),
                          int(compat) if compat else None)


def postgres_check(stack: str, postgres: str, image: str) -> tuple[bool, str] | None:
    """A refusal if `image` is another Postgres major version than the running
    `postgres` container's data; None if it is the same (or the same image)."""
    if (inspect("container", postgres) or {}).get("Config", {}).get("Image") == image:
        return None
    data, new = upgrade_postgres.data_major(postgres), upgrade_postgres.image_major(image)
    if data == new:
        return None
    return False, (f"refused: images.postgres {image} is Postgres {new}, but this stack's "
                   f"database is Postgres {data}'s: Postgres opens only its own major "
                   f"version's data, so the stack would be left without a database. Nothing "
                   f"was replaced. Move the data first: make upgrade-postgres STACK={stack} "
                   f"TO={new} IMAGE={image}" if new > data else
                   f"refused: images.postgres {image} is Postgres {new}, older than this "
                   f"stack's database (Postgres {data}); nothing was replaced. Going back is "
                   "a restore, or the old data kept by make upgrade-postgres "
                   "(docs/upgrades.md)")


def check(config: Path, overrides: dict | None = None) -> tuple[bool, str]:
    settings = read_stack_file(config, overrides).settings
    postgres = f"{settings.name_prefix}-postgres"
    if not running(postgres):
        return True, f"not checked: {postgres} is not running (nothing deployed, or down)"
    refused = postgres_check(settings.stack, postgres, settings.images.postgres)
    if refused:
        return refused
    db = database_schema(postgres)
    if db is None:
        return True, "not checked: the database holds no Synapse schema yet"
    ref = settings.images.synapse
    return verdict(ref, image_schema(ref), db)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.schema_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="config/Pulumi.<stack>.yaml")
    parser.add_argument("--set", action="append", type=override_arg, default=[],
                        metavar="PATH=VALUE", help="a change to check, as `make impact SET=...` "
                                                   "takes it: images.synapse=...")
    args = parser.parse_args(argv)
    try:
        ok, message = check(args.config, dict(args.set))
    except (ConfigError, OSError) as e:
        return cli_error(args.config, e)
    except BackupError as e:
        print(f"schema check failed: {e}", file=sys.stderr)
        return 1
    print(f"synapse schema: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
