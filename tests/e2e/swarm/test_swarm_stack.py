"""The one-of-each stack on the swarm bed (config/Pulumi.swarm.yaml): placed as its
constraints say (main, media, Postgres, Redis and nginx on the node labelled for
data, the manager here; the other workers on the two Debian 13 nodes); the client
scenarios of test_stack.py and an end-to-end encrypted message pass through nginx,
each request served by the class the routing table names; a second up plans
nothing and one repairs a service changed behind its back; rooms 1 -> 3 places the
new workers on the worker nodes; a config change rolls the services by Synapse's
rules; a worker node drained and then stopped moves its services and loses no
acknowledged message. Runs in file order on one stack."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import docker
import nio
import pytest

from components.tools.impact import load_side
from components.tools.swarm_impact import swarm_impact
from tests.e2e import replay
from tests.e2e import test_stack as scenarios
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import Recorder, close_all, process_of
from tests.e2e.replay.swarm_provider import service_logs
from tests.e2e.stacks import PUBLISH_RULES
from tests.e2e.swarm import stack as swarm_stack
from tests.e2e.swarm.bed import MANAGER_LABELS, NODE_IPS
from tests.e2e.test_stack import World
from tests.e2e.timings import record

pytestmark = pytest.mark.e2e
CONFIG = "config/Pulumi.swarm.yaml"
PREFIX = "synapse-swarm"
IMAGES = ("matrixdotorg/synapse:v1.163.2", "postgres:15-bookworm", "redis:7.0-bookworm",
          "nginx:1.22.1")
WORKER_CLASSES_ON_NODES = ("client_sync", "federation_reader", "rooms", "sender", "tasks")
OVERRIDES = {"extraConfig": PUBLISH_RULES}  # the directory scenario publishes a room


@pytest.fixture(scope="module")
def world(bed, request):
    record("swarm: push the stand-in images to the bed's registry", bed.push(IMAGES))
    swarm_stack.destroy_data(CONFIG, _engines(bed), PREFIX)
    t0 = time.monotonic()
    deployed = swarm_stack.up(CONFIG, OVERRIDES)
    record("swarm: empty -> every service running healthy", time.monotonic() - t0)
    loop = asyncio.new_event_loop()
    w = World("swarm", CONFIG, dict(OVERRIDES), deployed, loop, recorder=Recorder())
    w.bed = bed  # type: ignore[attr-defined]
    failed_before = request.session.testsfailed
    yield w
    loop.run_until_complete(close_all(*[u.client for u in w.users.values() if u.client]))
    loop.close()
    print("\nswarm: requests per (endpoint, process): "
          + json.dumps({f"{e} -> {p}": n for (e, p), n in sorted(w.routed.items())}))
    if request.session.testsfailed > failed_before:
        for name in deployed.containers.values():
            print(f"\n----- docker service logs {name} -----\n"
                  + service_logs(name, 40))
    swarm_stack.destroy_data(CONFIG, _engines(bed), PREFIX)


def _engines(bed) -> dict[str, docker.DockerClient]:
    return {"manager": bed.manager, **bed.nodes}


def _manager_hostname(bed) -> str:
    return next(n.attrs["Description"]["Hostname"] for n in bed.manager.nodes.list()
                if n.attrs["Spec"]["Labels"].items() >= MANAGER_LABELS.items())


def test_services_run_where_their_constraints_place_them(world):
    placed = swarm_stack.tasks_by_node(world.bed.manager, PREFIX)
    data_node = _manager_hostname(world.bed)
    for key in ("main", "media1", "postgres", "redis", "nginx"):
        assert placed[key] == data_node, placed
    for cls in WORKER_CLASSES_ON_NODES:
        assert placed[f"{cls}1"] in NODE_IPS, placed  # one of the Debian 13 nodes
    assert set(placed.values()) == {data_node, *NODE_IPS}, placed  # all three used


def test_a_second_up_plans_nothing_and_an_up_repairs_drift(world):
    plan = replay.up_plan(CONFIG, world.overrides)
    assert plan.summary() == "no changes", plan.summary()
    world.bed.manager.services.get(f"{PREFIX}-rooms1").update(env=["DRIFT=1"])
    plan = replay.up_plan(CONFIG, world.overrides)
    assert [(s.docker_name, s.action) for s in plan.steps if s.action != "same"] == [
        (f"{PREFIX}-rooms1", "update")], plan.summary()
    world.deployed = swarm_stack.up(CONFIG, world.overrides)
    assert replay.up_plan(CONFIG, world.overrides).summary() == "no changes"


# The client scenarios of the single-host suite, in their order, on this stack.
def test_register_users_with_shared_secret(world):
    scenarios.test_register_users_with_shared_secret(world)


def test_login_create_room_invite_join(world):
    scenarios.test_login_create_room_invite_join(world)


def test_hundred_messages_through_sync_and_messages(world):
    scenarios.test_hundred_messages_through_sync_and_messages(world)


def test_typing_receipts_to_device(world):
    scenarios.test_typing_receipts_to_device(world)


def test_media_upload_download_thumbnail(world):
    scenarios.test_media_upload_download_thumbnail(world)


def test_profile_change(world):
    scenarios.test_profile_change(world)


def test_room_directory(world):
    scenarios.test_room_directory(world)


def test_federation_version_and_key_server(world):
    scenarios.test_federation_version_and_key_server(world)


def test_an_encrypted_message_decrypts_for_its_recipient(world, tmp_path):
    """Olm and megolm through the workers: keys upload, claim and query, to-device
    (the room key) and the encrypted event, each over the overlay networks."""
    d = world.deployed

    async def go():
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False,
                                       store=nio.store.SqliteMemoryStore)
        clients = {}
        for name in ("alice", "bob"):
            (tmp_path / name).mkdir()
            c = nio.AsyncClient(d.nginx_url, world.user(name).user_id,
                                store_path=str(tmp_path / name), config=config)
            c.client_session = world.recorder.session(f"{name}-e2e")
            assert isinstance(await c.login(world.user(name).password, device_name="e2ee"),
                              nio.LoginResponse)
            if c.should_upload_keys:
                assert isinstance(await c.keys_upload(), nio.KeysUploadResponse)
            clients[name] = c
        a, b = clients["alice"], clients["bob"]
        try:
            await a.sync(timeout=0)
            await b.sync(timeout=0)
            resp = await a.room_create(name="swarm e2ee", invite=[b.user_id], initial_state=[
                {"type": "m.room.encryption", "state_key": "",
                 "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
            assert isinstance(resp, nio.RoomCreateResponse), resp
            room = resp.room_id
            for _ in range(60):
                await b.sync(timeout=1000)
                if room in b.invited_rooms:
                    break
            assert isinstance(await b.join(room), nio.JoinResponse)
            for _ in range(60):
                await a.sync(timeout=1000)
                if b.user_id in a.rooms[room].users:
                    break
            body = f"secret {secrets.token_hex(4)}"
            resp = await a.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body},
                                     ignore_unverified_devices=True)
            assert isinstance(resp, nio.RoomSendResponse), resp
            for _ in range(60):
                sync = await b.sync(timeout=1000)
                events = sync.rooms.join.get(room).timeline.events if room in sync.rooms.join else []
                texts = [e.body for e in events if isinstance(e, nio.RoomMessageText)]
                if body in texts:
                    return
                assert not any(isinstance(e, nio.MegolmEvent) for e in events), \
                    "bob got the event but could not decrypt it"
            raise AssertionError("bob never got the encrypted message")
        finally:
            await close_all(a, b)

    mark = world.recorder.mark()
    world.run(go())
    sends = [e for e in world.recorder.since(mark) if "/send/m.room.encrypted/" in e.path]
    assert sends and all(world.deployed.classes.get(
        process_of(e.served_by, world.deployed.classes)) == "rooms" for e in sends)


def test_scaling_rooms_one_to_three_places_the_new_workers_on_the_worker_nodes(world):
    overrides = {**world.overrides, "workers": {"rooms": 3}}
    t0 = time.monotonic()
    world.deployed = swarm_stack.up(CONFIG, overrides)
    world.overrides = overrides
    record("swarm: rooms 1 -> 3", time.monotonic() - t0)
    created = sorted(s.docker_name for s in world.deployed.plan.steps
                     if s.type == replay.SERVICE and s.action == "create")
    assert created == [f"{PREFIX}-rooms2", f"{PREFIX}-rooms3"], world.deployed.plan.summary()
    placed = swarm_stack.tasks_by_node(world.bed.manager, PREFIX)
    for key in ("rooms1", "rooms2", "rooms3"):
        assert placed[key] in NODE_IPS, placed
    # Rooms are hashed over the three: new rooms land on more than one worker, and
    # every request for one room on one of them.
    mark = world.recorder.mark()
    alice = world.client("alice")

    async def go():
        for i in range(9):
            resp = await alice.room_create(name=f"spread {i}")
            assert isinstance(resp, nio.RoomCreateResponse), resp
            resp = await alice.room_send(resp.room_id, "m.room.message",
                                         {"msgtype": "m.text", "body": f"hello {i}"})
            assert isinstance(resp, nio.RoomSendResponse), resp

    world.run(go())
    scenarios.assert_routed(world, mark)
    used = {process_of(e.served_by, world.deployed.classes)
            for e in world.recorder.since(mark) if "/send/" in e.path}
    assert len(used) > 1 and used <= {"rooms1", "rooms2", "rooms3"}, used


def _traffic(world) -> Traffic:
    return Traffic(world.client("alice"), world.client("bob"), world.room_id, world.url,
                   world.deployed.federation_url)


def _no_acknowledged_message_lost(world, traffic: Traffic, title: str) -> None:
    world.run(traffic.assert_stored(world.client("alice"), title))


def test_a_config_change_rolls_the_services_by_synapses_rules(world):
    """A log level change is a new log config for every class: every Synapse
    service updates. Rooms workers start their new task before the old one stops;
    main, the writers, the sender and the media repository stop first."""
    overrides = {**world.overrides, "log": {"level": "WARNING", "daysKept": 3}}
    report = swarm_impact(load_side(Path(CONFIG), world.overrides), load_side(Path(CONFIG), overrides))
    traffic = _traffic(world)
    manager = world.bed.manager
    overlaps: dict[str, int] = {}
    stop = asyncio.Event()

    async def watch():
        # Most tasks of a service running at once during the change.
        while not stop.is_set():
            for svc in manager.services.list(filters={"name": PREFIX}):
                running = [t for t in svc.tasks() if t["Status"]["State"] == "running"]
                key = swarm_stack.process_of(svc)
                overlaps[key] = max(overlaps.get(key, 0), len(running))
            await asyncio.sleep(0.3)

    async def go():
        await traffic.start()
        watcher = asyncio.create_task(watch())
        try:
            await traffic.wait_acked(5)
            deployed = await asyncio.to_thread(swarm_stack.up, CONFIG, overrides)
            await traffic.wait_acked(len(traffic.acked) + 5)
        finally:
            stop.set()
            await watcher
            await traffic.stop()
        return deployed

    world.deployed = world.run(go())
    world.overrides = overrides
    key_of = {name: key for key, name in world.deployed.containers.items()}
    updated = {key_of[s.docker_name] for s in world.deployed.plan.steps
               if s.type == replay.SERVICE and s.action == "update"}
    synapse = set(world.deployed.synapse)
    assert updated == synapse, world.deployed.plan.summary()
    # The impact report said so beforehand.
    assert report.actions() == {world.deployed.containers[k]: "update" for k in synapse}
    for key in ("rooms1", "rooms2", "rooms3", "federation_reader1"):
        assert overlaps.get(key, 0) == 2, f"{key} did not start first: {overlaps}"
    for key in ("main", "client_sync1", "sender1", "tasks1", "media1"):
        assert overlaps.get(key, 0) == 1, f"{key} ran twice at once: {overlaps}"
    _no_acknowledged_message_lost(world, traffic, "log level change")
    down = traffic.unavailable_seconds()
    print(f"\nswarm: log level change: {world.deployed.seconds_to_healthy:.1f} s, "
          f"{len(traffic.acked)} messages, {traffic.failed_sends} retried sends, "
          f"unavailable per class (s): {json.dumps(down)}")
    # Rooms and federation readers roll start-first: never down.
    assert down["rooms"] == 0.0 and down["federation_reader"] == 0.0, down


def _set_availability(manager: docker.DockerClient, hostname: str, availability: str) -> None:
    node = next(n for n in manager.nodes.list() if n.attrs["Description"]["Hostname"] == hostname)
    spec = dict(node.attrs["Spec"])
    spec["Availability"] = availability
    node.update(spec)


def test_a_drained_then_stopped_worker_node_moves_its_services_and_loses_nothing(world):
    manager = world.bed.manager
    placed = swarm_stack.tasks_by_node(manager, PREFIX)
    node = next(n for n in NODE_IPS if list(placed.values()).count(n) >= 1)
    moved = sorted(k for k, n in placed.items() if n == node)
    other = next(n for n in NODE_IPS if n != node)
    traffic = _traffic(world)
    timings = {}

    async def go():
        await traffic.start()
        try:
            await traffic.wait_acked(5)
            t0 = time.monotonic()
            await asyncio.to_thread(_set_availability, manager, node, "drain")
            timings["drain"] = await asyncio.to_thread(swarm_stack.wait_settled, manager, PREFIX)
            after = swarm_stack.tasks_by_node(manager, PREFIX)
            assert all(after[k] == other for k in moved), (moved, after)
            t1 = time.monotonic()
            await asyncio.to_thread(manager.containers.get(node).stop, timeout=30)
            down_state = ""
            for _ in range(120):  # the manager notices the node is gone
                n = next(n for n in manager.nodes.list()
                         if n.attrs["Description"]["Hostname"] == node)
                down_state = n.attrs["Status"]["State"]
                if down_state == "down":
                    break
                await asyncio.sleep(1)
            timings["stop"] = time.monotonic() - t1
            assert down_state == "down", down_state
            await traffic.wait_acked(len(traffic.acked) + 5)
            timings["all"] = time.monotonic() - t0
        finally:
            await traffic.stop()

    try:
        world.run(go())
    finally:
        manager.containers.get(node).start()
        _set_availability(manager, node, "active")
    _no_acknowledged_message_lost(world, traffic, f"{node} drained and stopped")
    down = traffic.unavailable_seconds()
    print(f"\nswarm: {node} drained ({timings.get('drain', 0):.1f} s until its services "
          f"{moved} ran on {other}) then stopped: {len(traffic.acked)} messages, "
          f"{traffic.failed_sends} retried sends, unavailable per class (s): {json.dumps(down)}")
    record(f"swarm: drain {node} until its services run elsewhere", timings["drain"])
    for _ in range(60):  # back in the swarm for whatever runs next
        if world.bed.ready().get(node) == "ready":
            break
        time.sleep(1)
