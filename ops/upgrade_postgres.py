"""Move a stack's database to a newer Postgres major version
(make upgrade-postgres STACK=... TO=N [IMAGE=...]).

    python -m ops.upgrade_postgres --config config/Pulumi.<stack>.yaml --to 17
                                   [--image postgres:17-bookworm] [--set-config]

Postgres opens only a data directory of its own major version ("database files
are incompatible with server"), so a major upgrade is a dump and a restore, as the
anchors do it (matrix-docker-ansible-deploy's upgrade-postgres; the official
image has no pg_upgrade for the old version). With the stack up:
1. Synapse stops (every Synapse container, and the backup container: StackData's
   writers), so nothing
   is written once the dump begins; nginx stays and answers 502;
2. every table's rows are counted, then pg_dump (custom format) of the database
   into a work folder;
3. Postgres stops cleanly; its data volume is copied to `<volume>-pg<old>` (the way
   back, kept until the operator deletes it), then emptied;
4. a throwaway container of the new image, no network, initialises the volume as
   the stack's postgres does (same user, database, password, initdb arguments),
   pg_restore loads the dump in one transaction, ANALYZE rebuilds the planner's
   statistics (a dump carries none), and every table's rows are counted again:
   any difference undoes the upgrade;
5. with --set-config, `pulumi config set --path synapse:images.postgres <image>`.
Then `make up` replaces the postgres container (the new image on the same
volume) and starts Synapse again: Synapse is down from step 1 until that up is
done (make upgrade-postgres runs it). If a step fails, the old data are put back
and the stopped containers started again. Exit 0 done, 1 refused or failed (the
message says why and what state the stack is in), 2 a bad stack file.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.plan import validators
from components.render.containers import POSTGRES_DATA
from components.plan.errors import ConfigError
from components.plan.stack_config import cli_error
from ops.archive import BackupError
from ops.docker_cli import docker, from_file, inspect, running, text, to_file
from ops.restore import start_postgres, stop
from ops.stack_data import DB_ARGS, StackData, stack_data

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")
# Every table of the database with its exact row count, one "name count" a line.
_COUNTS = ("SELECT string_agg(t, E'\\n' ORDER BY t) FROM (SELECT format('%s %s', relname, "
           "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
           "schemaname, relname), false, true, '')))[1]::text) AS t FROM pg_stat_user_tables) x")


@dataclass
class Upgrade:
    old_major: int
    new_major: int
    image: str
    kept_volume: str
    tables: int = 0
    rows: int = 0
    dump_bytes: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def image_major(image: str) -> int:
    """The Postgres major version an image runs (asked of the image itself)."""
    if inspect("image", image) is None:
        docker("pull", image)
    out = text("run", "--rm", "--network", "none", "--entrypoint", "postgres", image, "--version")
    m = _VERSION.search(out)
    if not m:
        raise BackupError(f"{image} does not say which Postgres it is: {out!r}")
    return int(m.group(1))


def data_major(postgres: str) -> int:
    """The major version of the data directory the stack's running postgres serves."""
    return int(text("exec", postgres, "cat", f"{POSTGRES_DATA}/PG_VERSION"))


def default_image(current: str, old: int, new: int) -> str:
    """postgres:15-bookworm -> postgres:17-bookworm; refused (BackupError) if the
    tag does not start with the old major version."""
    tag = validators.image_tag(current)
    m = re.fullmatch(rf"{old}((?:[.-].*)?)", tag) if tag else None
    if not m:
        raise BackupError(f"cannot tell the Postgres {new} image from images.postgres "
                          f"{current!r}: give it (IMAGE=postgres:{new}-bookworm)")
    return f"{current.partition('@')[0].removesuffix(tag)}{new}{m.group(1)}"


def row_counts(container: str) -> dict[str, int]:
    out = text("exec", container, "psql", "-X", "-At", *DB_ARGS, "-c", _COUNTS)
    return {name: int(n) for name, n in (line.rsplit(" ", 1) for line in out.splitlines())}


def _copy_volume(image: str, source: str, target: str) -> None:
    docker("run", "--rm", "--network", "none", "--volume", f"{source}:/from:ro",
           "--volume", f"{target}:/to", "--entrypoint", "cp", image, "-a", "/from/.", "/to/")


def _empty_volume(image: str, volume: str) -> None:
    docker("run", "--rm", "--network", "none", "--volume", f"{volume}:/v", "--entrypoint",
           "find", image, "/v", "-mindepth", "1", "-delete")


def upgrade(config: Path, to: int, image: str | None = None,
            work: Path | None = None) -> Upgrade:
    d = stack_data(config)
    if not running(d.postgres):
        raise BackupError(f"{d.postgres} is not running: the upgrade dumps a deployed stack "
                          "(make up first)")
    old = data_major(d.postgres)
    if to <= old:
        raise BackupError(f"the stack's data are Postgres {old} already; TO must be newer")
    image = image or default_image(d.postgres_image, old, to)
    if (got := image_major(image)) != to:
        raise BackupError(f"{image} is Postgres {got}, not {to}")
    kept = f"{d.postgres_volume}-pg{old}"
    if inspect("volume", kept) is not None:
        raise BackupError(f"volume {kept} exists (an earlier upgrade's copy of the old data): "
                          "remove it (docker volume rm) once it is no longer needed, then retry")
    result = Upgrade(old, to, image, kept)
    password = text("exec", d.postgres, "cat", d.secrets["postgresPassword"][1])
    writers = [c for c in d.writers if running(c)]
    folder = Path(tempfile.mkdtemp(prefix=f"upgrade-{d.stack}-", dir=work))
    t0 = time.monotonic()
    emptied = False
    try:
        if writers:
            docker("stop", "--time", "30", *writers)
        t_stopped = time.monotonic()
        before = row_counts(d.postgres)
        dump = folder / "database.dump"
        to_file(dump, "exec", d.postgres, "pg_dump", "--format=custom", *DB_ARGS)
        result.dump_bytes = dump.stat().st_size
        t_dumped = time.monotonic()
        docker("stop", "--time", "60", d.postgres)
        docker("volume", "create", kept)
        _copy_volume(d.postgres_image, d.postgres_volume, kept)
        t_copied = time.monotonic()
        _empty_volume(d.postgres_image, d.postgres_volume)
        emptied = True
        name = start_postgres(d, password, image)
        try:
            from_file(dump, "exec", "--interactive", name, "pg_restore", "--exit-on-error",
                      "--single-transaction", "--no-owner", *DB_ARGS)
            docker("exec", name, "psql", "-X", "-q", *DB_ARGS, "-c", "ANALYZE")
            after = row_counts(name)
        finally:
            stop(name)
        if after != before:
            differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            raise BackupError(f"the restored database differs from the dump's source in "
                              f"{len(differ)} tables ({', '.join(differ[:5])})")
        result.tables, result.rows = len(before), sum(before.values())
        end = time.monotonic()
        result.seconds = {"stop_synapse": round(t_stopped - t0, 2),
                          "count_and_dump": round(t_dumped - t_stopped, 2),
                          "copy_old_data": round(t_copied - t_dumped, 2),
                          "restore": round(end - t_copied, 2),
                          "synapse_down_so_far": round(end - t0, 2)}
    except BaseException:
        _undo(d, kept, emptied, writers)
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def _undo(d: StackData, kept: str, emptied: bool, writers: list[str]) -> None:
    """Put the old data back and start what was stopped: the stack as it was."""
    if emptied:
        _empty_volume(d.postgres_image, d.postgres_volume)
        _copy_volume(d.postgres_image, kept, d.postgres_volume)
        docker("volume", "rm", kept, check=False)
    elif inspect("volume", kept) is not None:
        docker("volume", "rm", kept, check=False)
    docker("start", d.postgres, check=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and docker(
            "exec", d.postgres, "pg_isready", "-q", check=False).returncode != 0:
        time.sleep(0.5)
    if writers:
        docker("start", *writers, check=False)


def set_stack_image(stack: str, image: str) -> None:
    proc = subprocess.run(["pulumi", "config", "set", "--path", "--stack", stack,
                           "synapse:images.postgres", image], capture_output=True)
    if proc.returncode != 0:
        raise BackupError(f"pulumi config set synapse:images.postgres failed: "
                          f"{proc.stderr.decode(errors='replace').strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.upgrade_postgres", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="config/Pulumi.<stack>.yaml")
    parser.add_argument("--to", type=int, required=True, help="the new major version, e.g. 17")
    parser.add_argument("--image", help="the new image (default: images.postgres with its "
                                        "major version replaced, postgres:15-bookworm -> "
                                        "postgres:17-bookworm)")
    parser.add_argument("--set-config", action="store_true",
                        help="make the new image the stack's images.postgres (pulumi config set)")
    args = parser.parse_args(argv)
    try:
        stack = stack_data(args.config).stack
    except (ConfigError, OSError) as e:
        return cli_error(args.config, e)
    try:
        u = upgrade(args.config, args.to, args.image)
        if args.set_config:
            set_stack_image(stack, u.image)
    except (BackupError, OSError) as e:
        print(f"upgrade-postgres failed: {e}. The stack's data are as they were; the "
              "containers it stopped were started again.", file=sys.stderr)
        return 1
    steps = ", ".join(f"{k.replace('_', ' ')} {v} s" for k, v in u.seconds.items())
    print(f"Postgres {u.old_major} -> {u.new_major} ({u.image}): {u.tables} tables, {u.rows} "
          f"rows, the same after the restore; dump {u.dump_bytes} bytes; {steps}. The old data "
          f"stay in volume {u.kept_volume} until you remove it (docker volume rm {u.kept_volume})."
          f" Next: make up STACK={stack}, which starts Synapse on Postgres {u.new_major}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
