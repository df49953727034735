"""Backup and restore time and size against database and media size (ops/backup.py,
ops/restore.py), on a `monolith` stack through the replay harness.

For each size: an empty stack is deployed, a few real messages are sent, the
database is grown with a padding table of random bytes (pg_dump and pg_restore
carry it like any table) and media are uploaded through the client API; then a
backup is taken (database dump, media archive, encrypted secrets, manifest), the
stack is destroyed with its data, and the backup is restored into the empty stack.
Random bytes do not compress, so the figures are what incompressible data costs.

Run alone: .venv/bin/python -m benchmarks.bench_backup [--quick]   (needs Docker;
run it under `flock /tmp/e2e.lock`)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nio

from ops import archive, backup, restore
from ops.docker_cli import text
from ops.stack_data import DB_ARGS, stack_data
from tests.e2e import replay
from tests.e2e.matrix_client import Recorder, close_all, new_client, register

NAME = "backup"
TITLE = "Backup and restore: time and size against database and media size"
# (database padding MB, media MB)
SIZES = ((0, 10), (100, 100), (400, 400))
QUICK_SIZES = ((0, 5), (20, 20))
MEDIA_FILE_MB = 10
PORT = 29000
PASSPHRASE = "bench-backup-passphrase"


def _overrides() -> dict[str, Any]:
    return {"preset": "monolith", "egress": False, "trustedKeyServers": [],
            "publicBaseUrl": f"http://127.0.0.1:{PORT + 8}/",
            "nginx": {"bindAddress": "127.0.0.1", "clientPort": PORT + 8,
                      "federationPort": PORT + 448, "adminPort": PORT + 9},
            "metrics": {"port": PORT + 90}, "maxUploadSizeMb": MEDIA_FILE_MB + 1}


def _db_bytes(postgres: str) -> int:
    return int(text("exec", postgres, "psql", "-At", *DB_ARGS, "-c",
                    "SELECT pg_database_size(current_database())"))


async def _fill(d: replay.Deployed, media_mb: int) -> None:
    recorder = Recorder()
    async with recorder.session("admin") as s:
        status, body = await register(s, d.admin_url, d.registration_shared_secret, "filler",
                                      "filler-password-1", False)
        assert status == 200, body
    client = new_client(d.nginx_url, recorder, "filler", body["user_id"])
    try:
        assert isinstance(await client.login("filler-password-1"), nio.LoginResponse)
        room = (await client.room_create(name="bench")).room_id
        for i in range(20):
            await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"m{i}"})
        left = media_mb
        while left > 0:
            n = min(MEDIA_FILE_MB, left)
            data = os.urandom(n << 20)
            resp, _ = await client.upload(lambda *_: data, "application/octet-stream",
                                          "pad.bin", filesize=len(data))
            assert isinstance(resp, nio.UploadResponse), resp
            left -= n
    finally:
        await close_all(client)


def run_size(config: Path, work: Path, db_mb: int, media_mb: int) -> dict[str, Any]:
    replay.down(config, delete_data=True)
    d = replay.up(config, _overrides())
    postgres = d.containers["postgres"]
    if db_mb:
        # Rows of 64 KiB of random bytes (4096 random MD5s), 16 rows a MiB.
        text("exec", postgres, "psql", "-q", *DB_ARGS, "-c",
             "CREATE TABLE bench_padding AS SELECT i, decode(string_agg(md5(random()::text), "
             f"''), 'hex') AS pad FROM generate_series(1, {db_mb * 16}) AS i, "
             "generate_series(1, 4096) AS j GROUP BY i")
    asyncio.run(_fill(d, media_mb))
    db_bytes = _db_bytes(postgres)
    data = stack_data(config)
    t0 = time.monotonic()
    folder = backup.take(data, work / "backups", 1, PASSPHRASE)
    backup_s = time.monotonic() - t0
    manifest = archive.read_verified(folder)
    replay.down(config, delete_data=True)
    t0 = time.monotonic()
    restore.restore_data(data, folder, PASSPHRASE)
    restore_s = time.monotonic() - t0
    files = manifest["files"]
    result = {
        "db_padding_mb": db_mb, "media_mb": media_mb, "database_bytes": db_bytes,
        "backup_s": round(backup_s, 2), "backup_parts_s": manifest["seconds"],
        "restore_s": round(restore_s, 2),
        "dump_bytes": files[archive.DATABASE]["bytes"], "media_tar_bytes": files[archive.MEDIA]["bytes"],
        "backup_bytes": sum(f["bytes"] for f in files.values()),
    }
    replay.down(config, delete_data=True)
    shutil.rmtree(folder)
    print(f"[backup] db {db_bytes >> 20} MiB, media {media_mb} MB: backup {backup_s:.1f} s, "
          f"restore {restore_s:.1f} s, backup size {result['backup_bytes'] >> 20} MiB", flush=True)
    return result


def run(quick: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    config = work / "Pulumi.bench-backup.yaml"
    shutil.copyfile("config/Pulumi.dev.yaml", config)
    try:
        return {"sizes": [run_size(config, work, db, media)
                          for db, media in (QUICK_SIZES if quick else SIZES)]}
    finally:
        replay.down(config, delete_data=True)
        shutil.rmtree(work, ignore_errors=True)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f}"


def markdown(result: dict, plots: list[str]) -> str:
    lines = [
        "A `monolith` stack per size (ops/backup.py, ops/restore.py through the replay). The "
        "database is grown with a padding table of random bytes, media uploaded through the "
        "client API in 10 MB files of random bytes (incompressible: the dump's compression "
        "gains nothing). Backup: `pg_dump -Fc` in the postgres container, then the media "
        "tar, the encrypted secrets and the manifest, while the stack runs. Restore: after "
        "`destroy-data`, into the empty stack (initdb, `pg_restore` in one transaction, "
        "media untarred), before Synapse starts.",
        "",
        "| database (MiB) | media (MiB) | backup (s) | of which dump / media (s) | backup size (MiB) "
        "| restore (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["sizes"]:
        parts = r["backup_parts_s"]
        lines.append(f"| {_mib(r['database_bytes'])} | {r['media_mb']} | {r['backup_s']:.1f} | "
                     f"{parts['database']:.1f} / {parts['media']:.1f} | {_mib(r['backup_bytes'])} | "
                     f"{r['restore_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plots(result: dict, outdir) -> list:
    return []


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import main as runner

    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    return runner(["--only", NAME, *(["--quick"] if quick else [])])


if __name__ == "__main__":
    sys.exit(main())
