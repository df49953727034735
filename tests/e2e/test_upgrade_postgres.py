"""Postgres 15 -> 17 (make upgrade-postgres, ops/upgrade_postgres.py) end to end,
on the dev layout as stack `pgup`: deployed on postgres:15-bookworm with data, then
a client keeps sending (retrying with the same transaction ID) while the tool
stops Synapse, dumps, keeps the old data in a volume of their own and restores
into Postgres 17 (the stand-in built from Debian 13), and the up that follows
starts Synapse on it. Every table has the same rows (the tool compares them),
nothing acknowledged is lost, media and logins work, the old data still open in
Postgres 15; the seconds Synapse was down are reported. Before that, an up that
only changes images.postgres to 17 is refused by the schema check, naming the
command, with nothing replaced.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from typing import Any

import nio
import pytest

from ops import schema_check, upgrade_postgres
from ops.docker_cli import text
from ops.stack_data import stack_data
from tests.e2e import replay
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import (
    Recorder, lift_message_rate_limit, make_png, messages_backwards, new_client, register,
)
from tests.e2e.timings import record

pytestmark = pytest.mark.e2e

NEW_IMAGE = "postgres:17-trixie"  # the stand-in (tests/e2e/images/build.py)
PASSWORD = "pgup-password-1"
OVERRIDES: dict[str, Any] = {
    "egress": False, "trustedKeyServers": [],
    "publicBaseUrl": "http://127.0.0.1:23008/",
    "nginx": {"bindAddress": "127.0.0.1", "clientPort": 23008, "federationPort": 23448,
              "adminPort": 23009},
    "metrics": {"port": 23090},
}
NEW = {**OVERRIDES, "images": {"postgres": NEW_IMAGE}}


def _remove_kept(name: str) -> None:
    api = replay.api()
    if any(v["Name"] == name for v in api.volumes().get("Volumes") or []):
        api.remove_volume(name, force=True)


def test_postgres_15_to_17_keeps_everything(tmp_path, docker_engine):
    config = tmp_path / "Pulumi.pgup.yaml"
    shutil.copyfile("config/Pulumi.dev.yaml", config)
    d0 = stack_data(config)
    kept = f"{d0.postgres_volume}-pg15"
    replay.down(config, delete_data=True)
    _remove_kept(kept)
    loop = asyncio.new_event_loop()
    clients: list[nio.AsyncClient] = []
    try:
        d = replay.up(config, OVERRIDES)
        assert upgrade_postgres.data_major(d.containers["postgres"]) == 15
        recorder = Recorder()
        png = make_png(64, 48)

        async def seed():
            async with recorder.session("admin") as s:
                users = {}
                for name, admin in (("pgadmin", True), ("alice", False), ("bob", False)):
                    status, body = await register(s, d.admin_url, d.registration_shared_secret,
                                                  name, PASSWORD, admin)
                    assert status == 200, (name, status, body)
                    users[name] = body
                for name in ("alice", "bob"):
                    await lift_message_rate_limit(s, d.admin_url, users["pgadmin"]["access_token"],
                                                  users[name]["user_id"])
            alice = new_client(d.nginx_url, recorder, "alice", users["alice"]["user_id"])
            bob = new_client(d.nginx_url, recorder, "bob", users["bob"]["user_id"])
            clients.extend([alice, bob])
            for c in (alice, bob):
                assert isinstance(await c.login(PASSWORD), nio.LoginResponse)
            room = await alice.room_create(name="pgup", invite=[bob.user_id])
            assert isinstance(room, nio.RoomCreateResponse), room
            assert isinstance(await bob.join(room.room_id), nio.JoinResponse)
            bodies = []
            for i in range(10):
                sent = await alice.room_send(room.room_id, "m.room.message",
                                             {"msgtype": "m.text", "body": f"on 15: {i}"})
                assert isinstance(sent, nio.RoomSendResponse), sent
                bodies.append(f"on 15: {i}")
            up, _ = await alice.upload(io.BytesIO(png), content_type="image/png",
                                       filename="pg.png", filesize=len(png))
            assert isinstance(up, nio.UploadResponse), up
            return alice, bob, room.room_id, bodies, up.content_uri

        alice, bob, room, bodies, mxc = loop.run_until_complete(seed())

        # Only the image changed: refused before anything is replaced.
        ids = dict(d.ids)
        ok, said = schema_check.check(config, NEW)
        assert not ok and "make upgrade-postgres STACK=pgup TO=17" in said, said
        assert "Postgres 15's" in said and "Nothing was replaced" in said, said
        assert {n: replay.api().inspect_container(n)["Id"] for n in ids} == ids

        result: dict[str, Any] = {}

        def upgrade_then_up() -> None:
            t0 = time.monotonic()
            result["upgrade"] = upgrade_postgres.upgrade(config, 17, NEW_IMAGE, work=tmp_path)
            t1 = time.monotonic()
            result["deployed"] = replay.up(config, NEW)
            result["seconds"] = (t1 - t0, time.monotonic() - t1)

        async def under_traffic() -> Traffic:
            traffic = Traffic(alice, bob, room, d.nginx_url, d.federation_url)
            await traffic.start()
            try:
                await traffic.wait_acked(5)
                await asyncio.get_running_loop().run_in_executor(None, upgrade_then_up)
                n = len(traffic.acked)
                await traffic.wait_acked(n + 5, timeout_s=240)
            except BaseException:
                await traffic.stop(abandon=True)
                raise
            await traffic.stop()
            return traffic

        traffic = loop.run_until_complete(under_traffic())
        u, d2 = result["upgrade"], result["deployed"]
        tool_s, up_s = result["seconds"]
        down = traffic.unavailable_seconds()
        record(f"upgrade-postgres 15 -> 17: tool {tool_s:.1f} s ({u.seconds}), then up "
               f"{up_s:.1f} s; unavailable per class "
               + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(down.items()))
               + f"; failed sends {traffic.failed_sends} (retried, same txn id); "
               f"{u.tables} tables, {u.rows} rows, dump {u.dump_bytes} bytes", tool_s + up_s)

        postgres = d2.containers["postgres"]
        assert upgrade_postgres.data_major(postgres) == 17
        assert int(text("exec", postgres, "psql", "-At", "-U", "synapse", "-d", "synapse",
                        "-c", "SHOW server_version_num")) >= 170000
        assert u.tables > 50 and u.rows > 100, u  # Synapse's schema, with our data
        # The old data, kept: they still open in Postgres 15.
        assert text("run", "--rm", "--network", "none", "--volume", f"{kept}:/old:ro",
                    "--entrypoint", "cat", "postgres:15-bookworm", "/old/PG_VERSION") == "15"

        async def read_back() -> None:
            seen = [e.body for e in await messages_backwards(bob, room, page=100)
                    if isinstance(e, nio.RoomMessageText)]
            expected = bodies + [b for b, _ in traffic.acked.values()]
            missing = [b for b in expected if b not in seen]
            assert not missing, missing[:5]
            fresh = new_client(d2.nginx_url, recorder, "alice-17", alice.user_id)
            clients.append(fresh)
            assert isinstance(await fresh.login(PASSWORD), nio.LoginResponse)
            got = await fresh.download(mxc)
            assert isinstance(got, nio.MemoryDownloadResponse) and got.body == png

        loop.run_until_complete(read_back())
        # A second up changes nothing; the schema check is content with 17 now.
        assert replay.up(config, NEW).plan.summary() == "no changes"
        ok, said = schema_check.check(config, NEW)
        assert ok, said
    finally:
        async def close() -> None:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

        loop.run_until_complete(close())
        loop.close()
        replay.down(config, delete_data=True)
        _remove_kept(kept)
