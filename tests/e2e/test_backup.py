"""Backups and restore, end to end (ops/backup.py, ops/restore.py) on a stack of
its own (dev's file as stack `bk`, plain HTTP on its own ports).

A client writes messages, media, a profile, room state, device keys and a
megolm-encrypted message; a backup is taken while a client keeps sending; the
stack is destroyed with its data (`make destroy-data`); the backup is restored
into the empty stack and the stack comes up on it. Then every message sent before
the backup is there, the media are byte-identical, the user logs in with their
password, the old access token works, the signing key is the same and the
encrypted message still decrypts for its recipient. A restore over a stack that
is up, or over a database that holds data, is refused and names what is there.

The stack also takes backups on a schedule (synapse:backup, every few seconds
here): they are whole, retained as configured, their secrets sealed; Prometheus
scrapes the time of the last good one; a run that fails (Postgres stopped) turns
the container unhealthy and the metric says so, and the next run after Postgres
returns succeeds; `make destroy-data` keeps them, and one restores.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nio
import pytest

from components.render.containers import backups_volume
from ops import archive, backup, restore
from ops.archive import BackupError
from ops.stack_data import stack_data
from tests.e2e import prometheus, replay
from tests.e2e.matrix_client import (
    Recorder, lift_message_rate_limit, make_png, new_client, raw, register,
)
from tests.e2e.timings import record
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

PASSPHRASE = "bk-" + secrets.token_urlsafe(12)
SCHEDULE_S, KEEP_SCHEDULED = 15, 2
OVERRIDES: dict[str, Any] = {
    "egress": False,
    "trustedKeyServers": [],
    "publicBaseUrl": "http://127.0.0.1:25008/",
    "nginx": {"bindAddress": "127.0.0.1", "clientPort": 25008, "federationPort": 25448,
              "adminPort": 25009},
    "metrics": {"port": 25090, "scrapeIntervalSeconds": 2},
    "backup": {"enabled": True, "schedule": f"every {SCHEDULE_S}s", "keep": KEEP_SCHEDULED},
    "backupPassphrase": PASSPHRASE,
}
GENERATED = {"macaroonSecretKey", "formSecret", "workerReplicationSecret", "signingKey",
             "registrationSharedSecret", "postgresPassword"}
SENT_BEFORE = 20  # messages before the backup


@dataclass
class Before:
    """What the stack held when the backup was taken, to find again after."""
    deployed: replay.Deployed
    password: str
    token: str
    room: str
    bodies: list[str]  # confirmed before the backup began
    mxc: str
    png: bytes
    topic: str
    displayname: str
    bob_keys: dict[str, str]  # bob's e2e device keys, as /keys/query served them
    encrypted_room: str
    encrypted_event: str
    encrypted_body: str
    folder: Path | None = None
    stall_s: float = 0.0
    sends_during: int = 0
    failed_during: list[str] = field(default_factory=list)


def _client_config(encryption: bool) -> nio.AsyncClientConfig:
    store = {"store": nio.store.SqliteMemoryStore} if encryption else {}
    return nio.AsyncClientConfig(encryption_enabled=encryption, store_sync_tokens=False,
                                 max_timeouts=2, max_timeout_retry_wait_time=1,
                                 request_timeout=60, max_limit_exceeded=0, **store)


@pytest.fixture(scope="module")
def bk(tmp_path_factory, docker_engine):
    work = tmp_path_factory.mktemp("bk")
    config = work / "Pulumi.bk.yaml"
    shutil.copyfile("config/Pulumi.dev.yaml", config)
    replay.down(config, delete_data=True)  # a clean slate, whatever a failed run left
    _remove_backups_volume()
    loop = asyncio.new_event_loop()
    env = {"BACKUP_PASSPHRASE": PASSPHRASE}
    old_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    state: dict[str, Any] = {"config": config, "loop": loop, "work": work,
                             "recorder": Recorder(), "clients": {}}
    try:
        yield state
    finally:
        async def close() -> None:
            await asyncio.gather(*(c.close() for c in state["clients"].values()),
                                 return_exceptions=True)

        loop.run_until_complete(close())
        loop.close()
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        replay.down(config, delete_data=True)
        _remove_backups_volume()


def _remove_backups_volume() -> None:
    """destroy-data keeps it (the scheduled backups); a test cleans up after itself."""
    api = replay.api()
    for v in api.volumes().get("Volumes") or []:
        if v["Name"] == backups_volume("synapse-bk"):
            api.remove_volume(v["Name"], force=True)

def _write_and_back_up(bk: dict[str, Any]) -> Before:
    config, loop, recorder = bk["config"], bk["loop"], bk["recorder"]
    t0 = time.monotonic()
    d = replay.up(config, OVERRIDES)
    record("backup stack up", time.monotonic() - t0)
    password = secrets.token_urlsafe(16)
    png = make_png(160, 120)

    async def go() -> Before:
        async with recorder.session("admin") as s:
            users = {}
            for name, admin in (("bkadmin", True), ("alice", False), ("bob", False)):
                status, body = await register(s, d.admin_url, d.registration_shared_secret,
                                              name, password, admin)
                assert status == 200, (name, status, body)
                users[name] = body
            for name in ("alice", "bob"):
                await lift_message_rate_limit(s, d.admin_url, users["bkadmin"]["access_token"],
                                              users[name]["user_id"])
        alice = new_client(d.nginx_url, recorder, "alice", users["alice"]["user_id"])
        bk["clients"]["alice"] = alice
        assert isinstance(await alice.login(password, device_name="bk alice"), nio.LoginResponse)
        resp = await alice.room_create(name="bk room")
        assert isinstance(resp, nio.RoomCreateResponse), resp
        room = resp.room_id
        topic, displayname = f"topic {secrets.token_hex(4)}", f"Alice {secrets.token_hex(4)}"
        assert isinstance(await alice.update_room_topic(room, topic), nio.RoomPutStateResponse)
        assert isinstance(await alice.set_displayname(displayname), nio.ProfileSetDisplayNameResponse)
        bodies = []
        for i in range(SENT_BEFORE):
            body = f"before {i}"
            resp = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(resp, nio.RoomSendResponse), resp
            bodies.append(body)
        up, _ = await alice.upload(io.BytesIO(png), content_type="image/png", filename="bk.png",
                                   filesize=len(png))
        assert isinstance(up, nio.UploadResponse), up

        # Encrypted: alice-e2e sends a megolm message that bob-e2e decrypts.
        enc = {}
        for name in ("alice", "bob"):
            c = nio.AsyncClient(d.nginx_url, users[name]["user_id"],
                                store_path=str(bk["work"] / f"store-{name}"),
                                config=_client_config(True))
            (bk["work"] / f"store-{name}").mkdir(exist_ok=True)
            c.client_session = recorder.session(f"{name}-e2e")
            assert isinstance(await c.login(password, device_name=f"bk {name} e2e"),
                              nio.LoginResponse)
            if c.should_upload_keys:
                assert isinstance(await c.keys_upload(), nio.KeysUploadResponse)
            bk["clients"][f"{name}-e2e"] = enc[name] = c
        a, b = enc["alice"], enc["bob"]
        await a.sync(timeout=0)
        await b.sync(timeout=0)
        resp = await a.room_create(name="bk encrypted", invite=[b.user_id], initial_state=[
            {"type": "m.room.encryption", "state_key": "",
             "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        enc_room = resp.room_id
        for _ in range(60):
            await b.sync(timeout=1000)
            if enc_room in b.invited_rooms:
                break
        assert isinstance(await b.join(enc_room), nio.JoinResponse)
        for _ in range(60):
            await a.sync(timeout=1000)
            if b.user_id in a.rooms.get(enc_room, nio.MatrixRoom(enc_room, "")).users:
                break
        if a.should_query_keys:
            assert isinstance(await a.keys_query(), nio.KeysQueryResponse)
        secret_body = f"megolm {secrets.token_hex(6)}"
        resp = await a.room_send(enc_room, "m.room.message",
                                 {"msgtype": "m.text", "body": secret_body},
                                 ignore_unverified_devices=True)
        assert isinstance(resp, nio.RoomSendResponse), resp
        event_id = resp.event_id
        deadline = time.monotonic() + 60
        got = False
        while time.monotonic() < deadline and not got:
            sync = await b.sync(timeout=1000)
            if isinstance(sync, nio.SyncResponse) and enc_room in sync.rooms.join:
                got = any(isinstance(e, nio.RoomMessageText) and e.body == secret_body
                          for e in sync.rooms.join[enc_room].timeline.events)
        assert got, "bob did not decrypt the megolm message before the backup"
        status, keys = await raw(alice, "POST", "/_matrix/client/v3/keys/query",
                                 {"device_keys": {b.user_id: [b.device_id]}})
        assert status == 200, keys
        bob_keys = keys["device_keys"][b.user_id][b.device_id]["keys"]
        return Before(d, password, alice.access_token, room, bodies, up.content_uri, png, topic,
                      displayname, bob_keys, enc_room, event_id, secret_body)

    before = loop.run_until_complete(go())

    # The backup, in a thread, while alice keeps sending.
    done = threading.Event()
    result: dict[str, Any] = {}

    def take() -> None:
        try:
            result["folder"] = backup.take(stack_data(config), bk["work"] / "backups", 3,
                                           archive.passphrase())
        except BaseException as e:  # noqa: BLE001 - re-raised in the test
            result["error"] = e
        finally:
            done.set()

    async def keep_sending() -> None:
        alice = bk["clients"]["alice"]
        last = time.monotonic()
        i = 0
        thread = threading.Thread(target=take)
        thread.start()
        while not done.is_set():
            resp = await alice.room_send(before.room, "m.room.message",
                                         {"msgtype": "m.text", "body": f"during {i}"})
            now = time.monotonic()
            if isinstance(resp, nio.RoomSendResponse):
                before.stall_s = max(before.stall_s, now - last)
                before.sends_during += 1
            else:
                before.failed_during.append(str(resp))
            last = now
            i += 1
            await asyncio.sleep(0.05)
        thread.join()

    t0 = time.monotonic()
    loop.run_until_complete(keep_sending())
    record(f"backup taken while sending ({before.sends_during} sends, longest send "
           f"{before.stall_s:.2f} s)", time.monotonic() - t0)
    if "error" in result:
        raise result["error"]
    before.folder = result["folder"]
    return before


@pytest.fixture(scope="module")
def before(bk) -> Before:
    return _write_and_back_up(bk)


def test_a_backup_is_whole_encrypted_and_described(before: Before):
    folder = before.folder
    manifest = archive.read_verified(folder)
    assert manifest["synapse_version"] and manifest["schema_version"] > 0, manifest
    assert manifest["stack"] == "bk"
    alg, version, _ = before.deployed.secrets["signingKey"].split()
    assert manifest["signing_key_id"] == f"{alg}:{version}"
    # Nothing secret in plain text at rest: no generated secret appears in any file.
    for name in (archive.SECRETS, archive.MANIFEST, archive.DATABASE):
        data = (folder / name).read_bytes()
        for key, value in before.deployed.secrets.items():
            assert value.encode() not in data, (name, key)
    opened = archive.decrypt_secrets((folder / archive.SECRETS).read_bytes(), PASSPHRASE)
    assert opened == {k: before.deployed.secrets[k] for k in opened}
    assert set(opened) == GENERATED
    # Sending went on while the dump ran: every send succeeded.
    assert before.sends_during > 0 and not before.failed_during, before.failed_during


def test_restore_refuses_a_stack_that_is_up(before: Before, bk):
    with pytest.raises(BackupError, match="exists: a restore goes into a stack that is down"):
        restore.restore_data(stack_data(bk["config"]), before.folder, PASSPHRASE)


# --- scheduled backups -------------------------------------------------------------


def _scheduled_folder(d: replay.Deployed) -> Path:
    """The stack's folder in the backups volume, on this host."""
    return Path(replay.api().inspect_volume(d.outputs["backupsVolume"])["Mountpoint"]) / "bk"


def _health(container: str) -> str:
    return replay.api().inspect_container(container)["State"]["Health"]["Status"]


def test_scheduled_backups_are_whole_kept_and_scraped(before: Before, bk):
    d = before.deployed
    metric = functools.partial(prometheus.value, d.outputs)
    # A second up changes nothing: the sealed secrets are the same bytes, and the
    # container reads back as registered (its read-only media mount included).
    again = replay.up(bk["config"], OVERRIDES)
    assert again.plan.summary() == "no changes", [s.line() for s in again.plan.steps
                                                  if s.action != replay.SAME]
    folder, backup_container = _scheduled_folder(d), d.containers["backup"]
    since = time.time()
    # Two more runs after now: by then retention has had runs to remove.
    newer = lambda: [p for p in archive.complete_backups(folder.parent, "bk")  # noqa: E731
                     if p.stat().st_mtime > since]
    wait_for("two scheduled backups", lambda: len(newer()) >= 2, 4 * SCHEDULE_S + 60, step_s=1)
    kept = archive.complete_backups(folder.parent, "bk")
    assert len(kept) == KEEP_SCHEDULED, kept
    assert b"backup: removed" in replay.api().logs(backup_container), "retention never ran"
    for p in kept:
        manifest = archive.read_verified(p)
        assert manifest["scheduled"] and manifest["stack"] == "bk", manifest
        assert manifest["schema_version"] > 0 and manifest["synapse_version"] == "1.163.2", manifest
        # Sealed: no secret, nor the passphrase, in plain text in any file.
        for name in archive.PAYLOAD + (archive.MANIFEST,):
            data = (p / name).read_bytes()
            for key, value in d.secrets.items():
                assert value.encode() not in data, (p, name, key)
        opened = archive.decrypt_secrets((p / archive.SECRETS).read_bytes(), PASSPHRASE)
        assert opened == {k: d.secrets[k] for k in GENERATED}
        with pytest.raises(BackupError, match="passphrase does not open"):
            archive.decrypt_secrets((p / archive.SECRETS).read_bytes(), PASSPHRASE + "x")
    assert _health(backup_container) == "healthy"
    newest = max(p.joinpath(archive.MANIFEST).stat().st_mtime for p in kept)
    wait_for("Prometheus scraping the newest backup's time",
             lambda: (metric("synapse_backup_last_success_timestamp_seconds") or 0) >= int(newest)
             and metric("synapse_backup_kept") == KEEP_SCHEDULED
             and metric("synapse_backup_last_run_failed") == 0, 30, step_s=1)


def test_a_failed_scheduled_backup_is_visible_and_retried(before: Before):
    d = before.deployed
    metric = functools.partial(prometheus.value, d.outputs)
    api, folder = replay.api(), _scheduled_folder(d)
    backup_container, postgres = d.containers["backup"], d.containers["postgres"]
    api.stop(postgres, timeout=60)
    try:
        # The next run fails; five failed probes later the container is unhealthy.
        wait_for("the backup container unhealthy", lambda: _health(backup_container) == "unhealthy",
                 SCHEDULE_S + 5 * 5 + 60, step_s=1)
        assert "psql" in (folder / ".failed").read_text() or "pg_dump" in (
            folder / ".failed").read_text(), (folder / ".failed").read_text()
        wait_for("the failure scraped", lambda: metric("synapse_backup_last_run_failed") == 1
                 and (metric("synapse_backup_last_failure_timestamp_seconds") or 0) > 0,
                 30, step_s=1)
        assert not list(folder.glob("*.partial")), "a failed run left a partial backup"
    finally:
        api.start(postgres)
    failed_at = metric("synapse_backup_last_failure_timestamp_seconds")
    wait_for("a good run after Postgres returned", lambda: _health(backup_container) == "healthy"
             and not (folder / ".failed").exists(), 2 * SCHEDULE_S + 60, step_s=1)
    newest = archive.complete_backups(folder.parent, "bk")[-1]
    assert newest.joinpath(archive.MANIFEST).stat().st_mtime >= failed_at
    archive.read_verified(newest)
    wait_for("the recovery scraped", lambda: metric("synapse_backup_last_run_failed") == 0, 30,
             step_s=1)


def test_restore_brings_everything_back(before: Before, bk):
    config, loop, recorder = bk["config"], bk["loop"], bk["recorder"]
    bob_e2e = bk["clients"]["bob-e2e"]
    replay.down(config, delete_data=True)  # make destroy-data: volumes and secrets gone
    api = replay.api()
    prefix = before.deployed.outputs["namePrefix"]
    # ...but the scheduled backups' volume.
    assert [v["Name"] for v in api.volumes().get("Volumes") or []
            if v["Name"].startswith(prefix)] == [before.deployed.outputs["backupsVolume"]]
    t0 = time.monotonic()
    restored_secrets = restore.restore_data(stack_data(config), before.folder, PASSPHRASE)
    record("restore (database and media)", time.monotonic() - t0)
    d = replay.up(config, {**OVERRIDES, **restored_secrets})
    assert d.secrets["signingKey"] == before.deployed.secrets["signingKey"]

    async def go() -> None:
        old = new_client(d.nginx_url, recorder, "alice-old-token", f"@alice:{d.server_name}")
        bk["clients"]["alice-old"] = old
        old.access_token = before.token
        status, who = await raw(old, "GET", "/_matrix/client/v3/account/whoami")
        assert status == 200 and who["user_id"] == f"@alice:{d.server_name}", (status, who)

        fresh = new_client(d.nginx_url, recorder, "alice-again", f"@alice:{d.server_name}")
        bk["clients"]["alice-again"] = fresh
        assert isinstance(await fresh.login(before.password), nio.LoginResponse)

        seen: list[str] = []
        token = ""
        for _ in range(20):
            resp = await fresh.room_messages(before.room, start=token, limit=100,
                                             direction=nio.MessageDirection.back)
            assert isinstance(resp, nio.RoomMessagesResponse), resp
            seen += [e.body for e in resp.chunk if isinstance(e, nio.RoomMessageText)]
            if not resp.chunk or not resp.end:
                break
            token = resp.end
        missing = [b for b in before.bodies if b not in seen]
        assert not missing, missing

        got = await fresh.download(before.mxc)
        assert isinstance(got, nio.MemoryDownloadResponse) and got.body == before.png
        status, topic = await raw(fresh, "GET",
                                  f"/_matrix/client/v3/rooms/{before.room}/state/m.room.topic")
        assert status == 200 and topic["topic"] == before.topic, (status, topic)
        resp = await fresh.get_displayname(f"@alice:{d.server_name}")
        assert getattr(resp, "displayname", None) == before.displayname, resp
        status, keys = await raw(fresh, "POST", "/_matrix/client/v3/keys/query",
                                 {"device_keys": {bob_e2e.user_id: [bob_e2e.device_id]}})
        assert status == 200, keys
        assert keys["device_keys"][bob_e2e.user_id][bob_e2e.device_id]["keys"] == before.bob_keys

        # bob's own client, its keys in its store, with its old token: the megolm
        # message from before the backup still decrypts.
        resp = await bob_e2e.room_context(before.encrypted_room, before.encrypted_event, limit=0)
        assert isinstance(resp, nio.RoomContextResponse), resp
        event = resp.event
        if isinstance(event, nio.MegolmEvent):
            event = bob_e2e.decrypt_event(event)
        assert isinstance(event, nio.RoomMessageText) and event.body == before.encrypted_body, event

        async with recorder.session("federation") as s:
            async with s.get(f"{d.federation_url}/_matrix/key/v2/server") as r:
                assert r.status == 200, await r.text()
                served = await r.json()
        alg, version, _ = before.deployed.secrets["signingKey"].split()
        assert f"{alg}:{version}" in served["verify_keys"], served

    loop.run_until_complete(go())
    bk["restored"] = d


def test_restore_refuses_a_database_that_holds_data(before: Before, bk):
    """After `make down` the data stays: a restore would replace it, so it is
    refused, naming what is in it."""
    assert "restored" in bk, "needs the restored stack"
    replay.down(bk["config"])
    with pytest.raises(BackupError, match=r"a Synapse database \(\d+ users, \d+ rooms, "
                                          r"\d+ events\) in .*postgres-data; \d+ media files"):
        restore.restore_data(stack_data(bk["config"]), before.folder, PASSPHRASE)
    # The refusal changed nothing: the stack comes back on its own data.
    d = replay.up(bk["config"], {**OVERRIDES, **bk["restored"].secrets})
    assert d.secrets["signingKey"] == before.deployed.secrets["signingKey"]


def test_a_scheduled_backup_restores_after_destroy_data(before: Before, bk):
    """The way back after `make destroy-data`: the newest scheduled backup, from
    the volume destroy-data kept, restored into the empty stack."""
    assert "restored" in bk, "needs the restored stack"
    config, loop, recorder = bk["config"], bk["loop"], bk["recorder"]
    folder = _scheduled_folder(bk["restored"])
    replay.down(config, delete_data=True)
    newest = archive.complete_backups(folder.parent, "bk")[-1]
    restored = restore.restore_data(stack_data(config), newest, PASSPHRASE)
    d = replay.up(config, {**OVERRIDES, **restored})
    assert d.secrets["signingKey"] == before.deployed.secrets["signingKey"]

    async def go() -> None:
        c = new_client(d.nginx_url, recorder, "alice-scheduled", f"@alice:{d.server_name}")
        bk["clients"]["alice-scheduled"] = c
        assert isinstance(await c.login(before.password), nio.LoginResponse)
        resp = await c.room_messages(before.room, start="", limit=200,
                                     direction=nio.MessageDirection.back)
        assert isinstance(resp, nio.RoomMessagesResponse), resp
        seen = {e.body for e in resp.chunk if isinstance(e, nio.RoomMessageText)}
        assert set(before.bodies) <= seen, sorted(set(before.bodies) - seen)[:5]
        got = await c.download(before.mxc)
        assert isinstance(got, nio.MemoryDownloadResponse) and got.body == before.png

    loop.run_until_complete(go())
