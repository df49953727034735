"""Synapse upgrades across real releases: the dev and prod layouts deployed on
Synapse 1.140 (the stand-in built from PyPI's 1.140.0), given data, then moved to
the default image while a client keeps sending and reading and every endpoint
class is probed. Main is replaced and migrates the schema before any worker
starts; nothing acknowledged is lost; the seconds each class was unavailable are
reported. And the guard before an up (ops/schema_check.py): an image the database
is too new for is refused before anything is replaced, which is what Synapse
itself does on start (checked on the real process).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import nio
import pytest

from components.plan.settings import DEFAULT_IMAGES
from ops import schema_check
from ops.docker_cli import text
from ops.stack_data import DB_ARGS
from tests.e2e import replay
from tests.e2e.images.build import PEER_SYNAPSE_VERSION, SYNAPSE_PEER
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import (
    Recorder, lift_message_rate_limit, messages_backwards, new_client, register,
)
from tests.e2e.timings import record

pytestmark = pytest.mark.e2e

LAYOUTS = {  # stack file, ports
    "dev": ("config/Pulumi.dev.yaml", 26000),
    "prod": ("config/Pulumi.prod.yaml", 27000),
}
PASSWORD = "upgrade-password-1"


def overrides(base: int, image: str) -> dict[str, Any]:
    return {
        "egress": False, "trustedKeyServers": [],
        "publicBaseUrl": f"http://127.0.0.1:{base + 8}/",
        "nginx": {"bindAddress": "127.0.0.1", "clientPort": base + 8,
                  "federationPort": base + 448, "adminPort": base + 9},
        "metrics": {"port": base + 90},
        "images": {"synapse": image},
    }


def _schema(postgres: str) -> tuple[int, int]:
    one = lambda sql: int(text("exec", postgres, "psql", "-At", *DB_ARGS, "-c", sql))  # noqa: E731
    return (one("SELECT version FROM schema_version"),
            one("SELECT compat_version FROM schema_compat_version"))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_upgrade_from_an_older_release_keeps_everything(layout, tmp_path, docker_engine):
    source, base = LAYOUTS[layout]
    config = tmp_path / f"Pulumi.up-{layout}.yaml"
    shutil.copyfile(source, config)
    old, new = overrides(base, SYNAPSE_PEER), overrides(base, DEFAULT_IMAGES["synapse"])
    replay.down(config, delete_data=True)
    loop = asyncio.new_event_loop()
    clients: list[nio.AsyncClient] = []
    try:
        t0 = time.monotonic()
        d = replay.up(config, old)
        record(f"{layout} on Synapse {PEER_SYNAPSE_VERSION} up", time.monotonic() - t0)
        postgres = d.containers["postgres"]
        schema_before = _schema(postgres)
        recorder = Recorder()

        async def seed() -> tuple[nio.AsyncClient, nio.AsyncClient, str, list[str]]:
            async with recorder.session("admin") as s:
                users = {}
                for name, admin in (("upadmin", True), ("alice", False), ("bob", False)):
                    status, body = await register(s, d.admin_url, d.registration_shared_secret,
                                                  name, PASSWORD, admin)
                    assert status == 200, (name, status, body)
                    users[name] = body
                for name in ("alice", "bob"):
                    await lift_message_rate_limit(s, d.admin_url, users["upadmin"]["access_token"],
                                                  users[name]["user_id"])
            alice = new_client(d.nginx_url, recorder, "alice", users["alice"]["user_id"])
            bob = new_client(d.nginx_url, recorder, "bob", users["bob"]["user_id"])
            clients.extend([alice, bob])
            for c in (alice, bob):
                assert isinstance(await c.login(PASSWORD), nio.LoginResponse)
            resp = await alice.room_create(name="upgrade", invite=[bob.user_id])
            assert isinstance(resp, nio.RoomCreateResponse), resp
            assert isinstance(await bob.join(resp.room_id), nio.JoinResponse)
            bodies = []
            for i in range(10):
                body = f"on {PEER_SYNAPSE_VERSION} {i}"
                sent = await alice.room_send(resp.room_id, "m.room.message",
                                             {"msgtype": "m.text", "body": body})
                assert isinstance(sent, nio.RoomSendResponse), sent
                bodies.append(body)
            return alice, bob, resp.room_id, bodies

        alice, bob, room, bodies = loop.run_until_complete(seed())

        ok, said = schema_check.check(config, new)
        assert ok and said.startswith("upgrade: "), said

        async def upgrade() -> tuple[Traffic, replay.Deployed]:
            traffic = Traffic(alice, bob, room, d.nginx_url, d.federation_url)
            await traffic.start()
            try:
                await traffic.wait_acked(5)
                upgraded = await asyncio.get_running_loop().run_in_executor(
                    None, replay.up, config, new)
                n = len(traffic.acked)
                await traffic.wait_acked(n + 5, timeout_s=240)
            except BaseException:
                await traffic.stop(abandon=True)
                raise
            await traffic.stop()
            return traffic, upgraded

        t0 = time.monotonic()
        traffic, up2 = loop.run_until_complete(upgrade())
        record(f"{layout}: {PEER_SYNAPSE_VERSION} -> {DEFAULT_IMAGES['synapse']} up",
               time.monotonic() - t0)
        down_s = traffic.unavailable_seconds()
        record(f"{layout} upgrade: unavailable per class "
               + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(down_s.items()))
               + f"; failed sends {traffic.failed_sends} (retried, same txn id)", 0.0)

        # Every Synapse container was replaced; main finished (healthy: migrated)
        # before any worker was created.
        synapse = set(up2.synapse)
        replaced = {s.docker_name for s in up2.plan.by_action("replace")}
        assert {up2.containers[k] for k in synapse} <= replaced
        main_done = up2.applied[up2.containers["main"]][1]
        for k in synapse - {"main"}:
            assert up2.applied[up2.containers[k]][0] >= main_done, k
        schema_after = _schema(postgres)
        assert schema_after[0] > schema_before[0], (schema_before, schema_after)

        # Nothing lost: what was sent on the old release and everything acknowledged
        # during the upgrade, read back through the new one.
        async def read_back() -> list[str]:
            events = await messages_backwards(bob, room, page=100)
            return [e.body for e in events if isinstance(e, nio.RoomMessageText)]

        seen = loop.run_until_complete(read_back())
        missing = [b for b in bodies + [b for b, _ in traffic.acked.values()] if b not in seen]
        assert not missing, missing[:5]

        if layout == "dev":
            _older_than_the_database_is_refused(config, up2, new)
    finally:
        async def close() -> None:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

        loop.run_until_complete(close())
        loop.close()
        replay.down(config, delete_data=True)


def _older_than_the_database_is_refused(config, d: replay.Deployed, current: dict) -> None:
    """A database from a Synapse newer than the image (its compat version above the
    image's SCHEMA_VERSION, as the next releases will write): the check refuses the
    image before anything is replaced, and Synapse itself refuses to start on it."""
    postgres, main = d.containers["postgres"], d.containers["main"]
    schema, compat = _schema(postgres)
    image_schema = schema_check.image_schema(DEFAULT_IMAGES["synapse"]).schema
    ids = dict(d.ids)

    def set_compat(value: int) -> None:
        text("exec", postgres, "psql", "-q", *DB_ARGS, "-c",
             f"UPDATE schema_compat_version SET compat_version = {value}")

    set_compat(image_schema + 1)
    try:
        ok, said = schema_check.check(config, current)
        assert not ok and said.startswith("refused: ") and "Nothing was replaced" in said, said
        assert f"schema {image_schema}" in said and f"{image_schema + 1} or newer" in said, said
        # The same rule, in Synapse: main restarted on that database does not start.
        api = replay.api()
        pid = api.inspect_container(main)["State"]["Pid"]
        api.restart(main, timeout=30)
        deadline = time.monotonic() + 90
        logs = b""
        while time.monotonic() < deadline:
            logs = api.logs(main, tail=200)
            if b"too new for the server to understand" in logs:
                break
            time.sleep(1)
        assert b"too new for the server to understand" in logs, logs[-2000:]
    finally:
        set_compat(compat)
    api.restart(main, timeout=30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = api.inspect_container(main)["State"]
        if state["Running"] and state["Pid"] != pid and state["Health"]["Status"] == "healthy":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"{main} did not come back healthy: {replay.container_logs(main)}")
    # Nothing else was touched.
    assert {n: api.inspect_container(n)["Id"] for n in ids} == ids
