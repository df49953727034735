"""Federation, proven: our stacks federate with servers we did not deploy.

The bed (tests/e2e/fedbed/bed.py): A, our `specialized` stack (4 senders, a
federation reader, 4 rooms workers) behind TLS; B, our `one-of-each` stack reached
through /.well-known delegation; C and D, Synapse monoliths of an older release
configured by hand. Users: alice on A, bob on B, carol on C, dave on D, each
driven by matrix-nio from the host.

The scenarios run in order and build on each other (rooms, users, messages); the
faults come next, and last B is backed up, destroyed and restored, and C accepts
what it signs after. Every inbound federation request A served is then checked
against the process the routing rules name, and every outbound transaction
against the sender Synapse's sharding gives its destination.

Run: .venv/bin/python -m pytest tests/e2e/test_federation.py -x -s
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import nio
import pytest
import yarl
from signedjson.key import decode_verify_key_bytes, generate_signing_key, read_signing_keys
from signedjson.sign import sign_json, verify_signed_json
from unpaddedbase64 import decode_base64

from ops import archive, backup, restore
from ops.stack_data import stack_data
from tests.e2e import replay
from tests.e2e.fedbed import bed as fedbed
from tests.e2e.matrix_client import (
    Recorder,
    SyncLog,
    bodies,
    close_all,
    lift_message_rate_limit,
    make_png,
    messages_backwards,
    process_of,
    raw,
    register,
    sync_once,
    sync_until,
)
from tests.e2e.live import wait_restarted_healthy
from tests.e2e.timings import record

pytestmark = pytest.mark.e2e

PASSWORD = "fedbed-password-1"
USERS = {"A": "alice", "B": "bob", "C": "carol", "D": "dave"}
MESSAGES = 20


@dataclass
class World:
    bed: fedbed.Bed
    loop: asyncio.AbstractEventLoop
    recorder: Recorder
    clients: dict[str, nio.AsyncClient] = field(default_factory=dict)  # by server key
    logs: dict[str, SyncLog] = field(default_factory=dict)
    rooms: dict[str, str] = field(default_factory=dict)  # purpose -> room ID
    sent: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # room -> (body, id)
    since: float = field(default_factory=time.time)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def server(self, key: str) -> fedbed.Server:
        return self.bed.servers[key]

    def user_id(self, key: str) -> str:
        return f"@{USERS[key]}:{self.server(key).name}"

    def client(self, key: str) -> nio.AsyncClient:
        assert key in self.clients, f"{USERS[key]} is not logged in (an earlier test failed)"
        return self.clients[key]

    def room(self, purpose: str) -> str:
        assert purpose in self.rooms, f"no {purpose} room (an earlier test failed)"
        return self.rooms[purpose]

    @property
    def a(self):
        return self.server("A").deployed


def client_config(encryption: bool = False) -> nio.AsyncClientConfig:
    store = {"store": nio.store.SqliteMemoryStore} if encryption else {}  # else nio's default
    return nio.AsyncClientConfig(
        encryption_enabled=encryption, store_sync_tokens=False, max_timeouts=2,
        max_timeout_retry_wait_time=1, request_timeout=60, max_limit_exceeded=0, **store)


def new_client(world: World, key: str, who: str, *, encryption: bool = False,
               store: Path | None = None) -> nio.AsyncClient:
    server = world.server(key)
    client = nio.AsyncClient(server.url, world.user_id(key), store_path=str(store or ""),
                             config=client_config(encryption))
    client.client_session = world.recorder.session(who)
    return client


async def until(client: nio.AsyncClient, log: SyncLog, done, what: str, timeout_s: float = 90):
    ok = await sync_until(client, log, done, timeout_s=timeout_s, poll_ms=1000)
    assert ok, f"{client.user_id}: {what} not seen within {timeout_s} s; sync errors: {log.errors[-3:]}"


def timeline_bodies(log: SyncLog, room_id: str, prefix: str) -> list[str]:
    return bodies(log.timeline.get(room_id, []), prefix)


@pytest.fixture(scope="module")
def world(request, docker_engine):
    t0 = time.monotonic()
    bed = fedbed.up()
    record(f"federation bed up (A, B replayed; C, D on {bed.servers['C'].version})",
           time.monotonic() - t0)
    loop = asyncio.new_event_loop()
    w = World(bed, loop, Recorder(ssl.create_default_context(cafile=str(bed.ca_file))))
    failed_before = request.session.testsfailed
    yield w
    loop.run_until_complete(close_all(*w.clients.values()))
    loop.close()
    if request.session.testsfailed > failed_before:
        # Left running for inspection, like the stack tests.
        print(f"\nfederation: a test failed: the bed is left running ({bed.workdir}); "
              "`python -c 'from tests.e2e.fedbed import bed; bed.remove_bed()'` and "
              "`python -m tests.e2e.replay down --delete-data --config <Pulumi.fed-a.yaml>` remove it")
    else:
        record("federation bed down", _timed(fedbed.down, bed))


def _timed(fn, *args) -> float:
    t0 = time.monotonic()
    fn(*args)
    return time.monotonic() - t0


# --- set-up scenarios ------------------------------------------------------------


def test_peers_are_an_older_synapse_and_every_server_answers_federation(world: World):
    from tests.e2e.images.build import PEER_SYNAPSE_VERSION

    async def go():
        async with world.recorder.session("probe") as s:
            versions = {}
            for key, server in world.bed.servers.items():
                async with s.get(f"{server.url}/_matrix/federation/v1/version") as r:
                    versions[key] = (await r.json())["server"]["version"]
            return versions

    versions = world.run(go())
    assert versions["C"] == versions["D"] == PEER_SYNAPSE_VERSION
    assert versions["A"] == versions["B"] != PEER_SYNAPSE_VERSION


def test_register_and_log_in_one_user_per_server(world: World):
    async def go():
        async with world.recorder.session("admin") as s:
            for key, localpart in USERS.items():
                server = world.server(key)
                status, body = await register(s, server.admin_url, server.registration_secret,
                                              localpart, PASSWORD, admin=True)
                assert status == 200, (key, body)
                client = new_client(world, key, localpart)
                resp = await client.login(PASSWORD, device_name=f"fedbed {localpart}")
                assert isinstance(resp, nio.LoginResponse), resp
                world.clients[key] = client
                world.logs[key] = SyncLog()
                if server.ours:  # the peers' configs raise the limit themselves
                    await lift_message_rate_limit(s, server.admin_url, client.access_token,
                                                  client.user_id)
        for key, client in world.clients.items():
            await sync_once(client, world.logs[key])

    world.run(go())


# --- membership ------------------------------------------------------------------


def test_invites_and_joins_across_servers_both_ways(world: World):
    """Remote users join A's room (C and B through A's make_join/send_join), and
    A's user joins a room on C (A's rooms worker asks C)."""
    alice, carol = world.client("A"), world.client("C")

    async def go():
        resp = await alice.room_create(visibility=nio.RoomVisibility.public, name="fedbed A",
                                       preset=nio.RoomPreset.public_chat,
                                       invite=[world.user_id("B"), world.user_id("C")])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        world.rooms["shared"] = room = resp.room_id
        for key in ("B", "C"):
            c, log = world.client(key), world.logs[key]
            await until(c, log, lambda _l, c=c: room in c.invited_rooms, f"the invite to {room}")
            joined = await c.join(room)
            assert isinstance(joined, nio.JoinResponse), (key, joined)
        resp = await carol.room_create(name="fedbed C", preset=nio.RoomPreset.public_chat,
                                       visibility=nio.RoomVisibility.public,
                                       invite=[world.user_id("A")])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        world.rooms["on_c"] = on_c = resp.room_id
        await until(alice, world.logs["A"], lambda _l: on_c in alice.invited_rooms, "carol's invite")
        joined = await alice.join(on_c)
        assert isinstance(joined, nio.JoinResponse), joined
        for key, r in (("A", room), ("B", room), ("C", room), ("A", on_c), ("C", on_c)):
            members = await world.client(key).joined_members(r)
            assert isinstance(members, nio.JoinedMembersResponse), members
            have = {m.user_id for m in members.members}
            want = {world.user_id(k) for k in (("A", "B", "C") if r == room else ("A", "C"))}
            assert have == want, (key, r, have)

    world.run(go())


def test_messages_both_ways_reach_sync_and_messages(world: World):
    room = world.room("shared")
    alice, carol, bob = world.client("A"), world.client("C"), world.client("B")

    async def go():
        sent = world.sent.setdefault(room, [])
        for i in range(MESSAGES):
            body = f"from-a {i}"
            resp = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(resp, nio.RoomSendResponse), resp
            sent.append((body, resp.event_id))
        for i in range(MESSAGES // 2):
            body = f"from-c {i}"
            resp = await carol.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(resp, nio.RoomSendResponse), resp
            sent.append((body, resp.event_id))
        want_a = [f"from-a {i}" for i in range(MESSAGES)]
        want_c = [f"from-c {i}" for i in range(MESSAGES // 2)]
        await until(carol, world.logs["C"],
                    lambda log: timeline_bodies(log, room, "from-a ") == want_a, "A's messages")
        await until(bob, world.logs["B"],
                    lambda log: timeline_bodies(log, room, "from-c ") == want_c, "C's messages on B")
        await until(alice, world.logs["A"],
                    lambda log: timeline_bodies(log, room, "from-c ") == want_c, "C's messages")
        for key in ("A", "B", "C"):
            history = await messages_backwards(world.client(key), room)
            assert bodies(history, "from-a ") == want_a, key
            assert bodies(history, "from-c ") == want_c, key

    world.run(go())


def test_a_late_joiner_on_d_backfills_the_history_from_a(world: World):
    room = world.room("shared")
    alice, dave = world.client("A"), world.client("D")

    async def go():
        resp = await alice.room_invite(room, world.user_id("D"))
        assert isinstance(resp, nio.RoomInviteResponse), resp
        await until(dave, world.logs["D"], lambda _l: room in dave.invited_rooms, "the invite")
        joined = await dave.join(room)
        assert isinstance(joined, nio.JoinResponse), joined
        # D joined with A's recent state only: the older messages come from A's
        # /backfill as dave pages back.
        history = await messages_backwards(dave, room, page=10)
        assert bodies(history, "from-a ") == [f"from-a {i}" for i in range(MESSAGES)]
        assert bodies(history, "from-c ") == [f"from-c {i}" for i in range(MESSAGES // 2)]

    world.run(go())


# --- EDUs --------------------------------------------------------------------------


def test_typing_receipts_presence_and_to_device_cross_servers(world: World):
    room = world.room("shared")
    alice, carol = world.client("A"), world.client("C")
    alice_id, carol_id = world.user_id("A"), world.user_id("C")

    def typing(log: SyncLog, user: str) -> bool:
        return any(isinstance(e, nio.TypingNoticeEvent) and user in e.users
                   for e in log.ephemeral.get(room, []))

    def receipt(log: SyncLog, user: str, event_id: str) -> bool:
        return any(isinstance(e, nio.ReceiptEvent) and any(
            r.user_id == user and r.event_id == event_id for r in e.receipts)
            for e in log.ephemeral.get(room, []))

    async def go():
        assert isinstance(await alice.room_typing(room, True, 30000), nio.RoomTypingResponse)
        await until(carol, world.logs["C"], lambda log: typing(log, alice_id), "alice typing")
        assert isinstance(await carol.room_typing(room, True, 30000), nio.RoomTypingResponse)
        await until(alice, world.logs["A"], lambda log: typing(log, carol_id), "carol typing")

        last_a = world.sent[room][MESSAGES - 1][1]
        resp = await carol.update_receipt_marker(room, last_a)
        assert isinstance(resp, nio.UpdateReceiptMarkerResponse), resp
        await until(alice, world.logs["A"], lambda log: receipt(log, carol_id, last_a),
                    "carol's read receipt")
        last_c = world.sent[room][-1][1]
        resp = await alice.update_receipt_marker(room, last_c)
        assert isinstance(resp, nio.UpdateReceiptMarkerResponse), resp
        await until(carol, world.logs["C"], lambda log: receipt(log, alice_id, last_c),
                    "alice's read receipt")

        # Presence: carol's status reaches A, A's reaches C.
        presence: dict[str, list] = {"A": [], "C": []}
        for key, c in (("A", alice), ("C", carol)):
            c.add_presence_callback(lambda e, key=key: presence[key].append(e), nio.PresenceEvent)
        assert isinstance(await carol.set_presence("online", "fedbed carol"), nio.PresenceSetResponse)
        assert isinstance(await alice.set_presence("online", "fedbed alice"), nio.PresenceSetResponse)
        await until(alice, world.logs["A"], lambda _l: any(
            e.user_id == carol_id and e.status_msg == "fedbed carol" for e in presence["A"]),
            "carol's presence")
        await until(carol, world.logs["C"], lambda _l: any(
            e.user_id == alice_id and e.status_msg == "fedbed alice" for e in presence["C"]),
            "alice's presence")

        # To-device: straight to the other server's device, no room involved.
        for src, dst in (("A", "C"), ("C", "A")):
            sender, target = world.client(src), world.client(dst)
            marker = f"to-device {src}->{dst} {time.time()}"
            status, body = await raw(
                sender, "PUT", f"/_matrix/client/v3/sendToDevice/org.example.fedbed/{time.time_ns()}",
                {"messages": {target.user_id: {target.device_id: {"marker": marker}}}})
            assert status == 200, body
            await until(target, world.logs[dst], lambda log, m=marker: any(
                getattr(e, "source", {}).get("content", {}).get("marker") == m
                for e in log.to_device), f"the to-device message {marker}")

    world.run(go())


# --- end-to-end encryption ---------------------------------------------------------


def test_megolm_messages_decrypt_across_servers_after_keys_cross_federation(world: World,
                                                                            tmp_path_factory):
    """Encrypted clients on A and C: device lists and one-time keys cross federation
    (/keys/query, /keys/claim), the megolm session travels as an olm to-device
    message, and each side decrypts the other's message."""

    async def go():
        enc: dict[str, nio.AsyncClient] = {}
        for key in ("A", "C"):
            c = new_client(world, key, f"{USERS[key]}-e2e", encryption=True,
                           store=tmp_path_factory.mktemp(f"e2e-{key}"))
            resp = await c.login(PASSWORD, device_name=f"fedbed {USERS[key]} e2e")
            assert isinstance(resp, nio.LoginResponse), resp
            if c.should_upload_keys:
                assert isinstance(await c.keys_upload(), nio.KeysUploadResponse)
            enc[key] = c
        world.clients["A-e2e"], world.clients["C-e2e"] = enc["A"], enc["C"]
        a, c = enc["A"], enc["C"]
        await a.sync(timeout=0)
        await c.sync(timeout=0)
        resp = await a.room_create(name="fedbed encrypted", invite=[c.user_id], initial_state=[
            {"type": "m.room.encryption", "state_key": "",
             "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        room = world.rooms["encrypted"] = resp.room_id
        for _ in range(60):
            await c.sync(timeout=1000)
            if room in c.invited_rooms:
                break
        assert isinstance(await c.join(room), nio.JoinResponse)

        async def converse(sender: nio.AsyncClient, receiver: nio.AsyncClient, body: str):
            for _ in range(60):  # until the sender's client sees the receiver joined
                await sender.sync(timeout=1000)
                if receiver.user_id in sender.rooms.get(room, nio.MatrixRoom(room, "")).users:
                    break
            if sender.should_query_keys:
                assert isinstance(await sender.keys_query(), nio.KeysQueryResponse)
            assert receiver.device_id in sender.device_store[receiver.user_id], \
                f"{sender.user_id} never learnt {receiver.user_id}'s device over federation"
            resp = await sender.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body},
                                          ignore_unverified_devices=True)
            assert isinstance(resp, nio.RoomSendResponse), resp
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                sync = await receiver.sync(timeout=1000)
                if isinstance(sync, nio.SyncResponse) and room in sync.rooms.join:
                    for event in sync.rooms.join[room].timeline.events:
                        if isinstance(event, nio.MegolmEvent):
                            raise AssertionError(f"{receiver.user_id} could not decrypt "
                                                 f"{event.event_id} (session {event.session_id})")
                        if isinstance(event, nio.RoomMessageText) and event.body == body:
                            assert event.decrypted, "arrived in clear"
                            return
            raise AssertionError(f"{receiver.user_id} never received {body!r}")

        await converse(a, c, "megolm from A")
        await converse(c, a, "megolm from C")

    world.run(go())


# --- media, profiles, directory, ACLs ----------------------------------------------


def test_remote_media_is_fetched_through_the_media_worker_both_ways(world: World):
    alice, carol = world.client("A"), world.client("C")
    png_c, png_a = make_png(120, 90), make_png(90, 120)

    async def go():
        mark = world.recorder.mark()
        up_c, _ = await carol.upload(lambda *_: png_c, "image/png", "from-c.png", filesize=len(png_c))
        assert isinstance(up_c, nio.UploadResponse), up_c
        got = await alice.download(up_c.content_uri)  # A's media worker fetches it from C
        assert isinstance(got, nio.MemoryDownloadResponse), got
        assert got.body == png_c
        served = [e for e in world.recorder.since(mark)
                  if e.who == "alice" and "/media/download/" in e.path]
        assert served and all(process_of(e.served_by, world.a.synapse) == "media1"
                              for e in served), served
        # ... which asked C through authenticated federation media (MSC3916), not the
        # old unauthenticated /_matrix/media/v3/download.
        media_id = up_c.content_uri.rsplit("/", 1)[1]
        # Synapse logs a streamed download as "Completed: 200 OK [N bytes] GET ...".
        fetched = re.compile(r"\[c\.test\] Completed(?: request)?: 200 .*GET matrix-federation://"
                             rf"c\.test/_matrix/federation/v1/media/download/{re.escape(media_id)}")
        assert fetched.search(fedbed.container_logs(world.a.containers["media1"])), \
            "A's media worker did not fetch it from C over /_matrix/federation/v1/media"
        up_a, _ = await alice.upload(lambda *_: png_a, "image/png", "from-a.png", filesize=len(png_a))
        assert isinstance(up_a, nio.UploadResponse), up_a
        got = await carol.download(up_a.content_uri)  # C fetches it from A's media worker
        assert isinstance(got, nio.MemoryDownloadResponse), got
        assert got.body == png_a

    world.run(go())


def test_profiles_and_room_directories_over_federation(world: World):
    alice, carol = world.client("A"), world.client("C")

    async def go():
        assert isinstance(await alice.set_displayname("Alice of A"), nio.ProfileSetDisplayNameResponse)
        assert isinstance(await carol.set_displayname("Carol of C"), nio.ProfileSetDisplayNameResponse)
        seen = await carol.get_profile(world.user_id("A"))  # C asks A
        assert isinstance(seen, nio.ProfileGetResponse) and seen.displayname == "Alice of A", seen
        seen = await alice.get_profile(world.user_id("C"))  # A asks C
        assert isinstance(seen, nio.ProfileGetResponse) and seen.displayname == "Carol of C", seen
        # Each room directory, read by the other server's user.
        for reader, server, room in ((carol, "a.test", world.room("shared")),
                                     (alice, "c.test", world.room("on_c"))):
            status, body = await raw(reader, "GET", f"/_matrix/client/v3/publicRooms?server={server}")
            assert status == 200, body
            assert room in [r["room_id"] for r in body["chunk"]], (server, body)

    world.run(go())


def test_a_server_acl_keeps_the_denied_server_out(world: World):
    alice, dave, carol = world.client("A"), world.client("D"), world.client("C")

    async def go():
        resp = await alice.room_create(name="fedbed acl", preset=nio.RoomPreset.public_chat,
                                       invite=[world.user_id("C"), world.user_id("D")],
                                       initial_state=[{"type": "m.room.server_acl", "state_key": "",
                                                       "content": {"allow": ["*"], "deny": ["d.test"],
                                                                   "allow_ip_literals": False}}])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        room = world.rooms["acl"] = resp.room_id
        await until(carol, world.logs["C"], lambda _l: room in carol.invited_rooms, "the invite")
        assert isinstance(await carol.join(room), nio.JoinResponse)
        refused = await dave.join(room)  # A refuses D's make_join: the ACL denies d.test
        assert isinstance(refused, nio.JoinError), refused
        members = await alice.joined_members(room)
        assert {m.user_id for m in members.members} == {world.user_id("A"), world.user_id("C")}

    world.run(go())


# --- signing keys -----------------------------------------------------------------


def _verify_keys(body: dict) -> dict:
    return {kid: decode_verify_key_bytes(kid, decode_base64(v["key"]))
            for kid, v in body["verify_keys"].items()}


def test_signing_keys_direct_and_through_a_as_notary(world: World):
    """Each server's own keys, then A (and C) as a notary for the others: the answer
    carries the origin's signature and the notary's, both valid."""

    async def go():
        async with world.recorder.session("keys") as s:
            own = {}
            for key, server in world.bed.servers.items():
                async with s.get(f"{server.url}/_matrix/key/v2/server") as r:
                    body = await r.json()
                assert body["server_name"] == server.name
                keys = _verify_keys(body)
                for k in keys.values():
                    verify_signed_json(body, server.name, k)  # self-signed
                own[server.name] = keys
            for notary_key in ("A", "C"):
                notary = world.server(notary_key)
                for target in ("a.test", "b.test", "c.test", "d.test"):
                    if target == notary.name:
                        continue
                    async with s.get(f"{notary.url}/_matrix/key/v2/query/{target}") as r:
                        assert r.status == 200, (notary.name, target, await r.text())
                        answer = (await r.json())["server_keys"]
                    assert len(answer) == 1, (notary.name, target, answer)
                    keys = answer[0]
                    assert set(keys["verify_keys"]) == set(own[target]), (notary.name, target)
                    for k in own[target].values():
                        verify_signed_json(keys, target, k)
                    for k in own[notary.name].values():
                        verify_signed_json(keys, notary.name, k)

    world.run(go())


# --- which process did the work --------------------------------------------------


# From docs/workers.md, not from components/plan/routing.py (the table is under test):
# federation requests for one room go to the room's worker; the media repository
# takes /_matrix/federation/v1/media/; the rest of federation and the key server
# go to the federation reader.
def _expected_class(path: str) -> str:
    if path.startswith("/_matrix/federation/v1/media/"):
        return "media"
    if re.match(r"^/_matrix/federation/(?:[^/]+/)+![^/]+", path):
        return "rooms"
    return "federation_reader"


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[0-9.]+" (?P<status>\d+) .*?'
                     r'route=(?P<route>\S+) served_by=(?P<served_by>\S*)')


def test_every_inbound_federation_request_reached_the_class_the_table_names(world: World):
    a = world.a
    lines = fedbed.container_logs(a.containers["nginx"]).splitlines()
    by_class: Counter = Counter()
    room_procs: dict[str, set[str]] = defaultdict(set)
    problems = []
    for line in lines:
        m = _ACCESS.search(line)
        if not m:
            continue
        path = m["uri"].split("?")[0]
        from urllib.parse import unquote
        path = unquote(path)
        if not path.startswith(("/_matrix/federation/", "/_matrix/key/")):
            continue
        process = process_of(m["served_by"], a.synapse)
        want = _expected_class(path)
        got = a.classes.get(process or "", None)
        by_class[(want, process)] += 1
        if got != want:
            problems.append(f"{m['method']} {path} -> {m['served_by']} (class {got}, want {want})")
        room = re.search(r"/(![^/]+)", path)
        if want == "rooms" and room:
            room_procs[room.group(1)].add(process)
    print("\ninbound federation on A by (class, process):", dict(by_class))
    assert not problems, "\n".join(problems[:20])
    assert sum(n for (c, _), n in by_class.items() if c == "rooms") > 0, "no room-scoped request seen"
    assert sum(n for (c, _), n in by_class.items() if c == "federation_reader") > 0
    assert sum(n for (c, _), n in by_class.items() if c == "media") > 0, "C never fetched A's media"
    split = {r: p for r, p in room_procs.items() if len(p) > 1}
    assert not split, f"rooms served by several processes: {split}"


def sender_of(world: World, destination: str) -> str:
    """The sender Synapse's own sharding picks for a destination."""
    from synapse.config.workers import ShardedWorkerHandlingConfig

    instances = world.a.homeserver["federation_sender_instances"]
    return ShardedWorkerHandlingConfig(instances)._get_instance(destination)


_TX = re.compile(r"TX \[(?P<dest>[^\]]+)\] \{[^}]*\} Sending transaction")


def test_every_outbound_transaction_came_from_its_destinations_one_sender(world: World):
    a = world.a
    seen: dict[str, Counter] = defaultdict(Counter)
    for proc in a.synapse:
        for m in _TX.finditer(fedbed.container_logs(a.containers[proc])):
            seen[m["dest"]][proc] += 1
    print("\nA's outbound transactions by destination:", {d: dict(c) for d, c in seen.items()})
    destinations = ("b.test", "c.test", "d.test")
    owners = {}
    for dest in destinations:
        assert dest in seen, f"A never sent a transaction to {dest}"
        assert set(seen[dest]) == {sender_of(world, dest)}, (dest, dict(seen[dest]))
        owners[dest] = sender_of(world, dest)
        assert a.classes[owners[dest]] == "sender"
    assert len(set(owners.values())) > 1, f"all destinations on one sender: {owners}"


# --- faults ----------------------------------------------------------------------


async def _send_series(client: nio.AsyncClient, room: str, prefix: str, count: int,
                       every_s: float, sent: list[tuple[str, str]]) -> None:
    """Send `count` messages, retrying each with its transaction ID until
    acknowledged (as the spec asks of clients)."""
    for i in range(count):
        body, txn = f"{prefix} {i}", f"{prefix.replace(' ', '-')}-{i}-{time.time_ns()}"
        for _ in range(60):
            resp = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body},
                                          tx_id=txn)
            if isinstance(resp, nio.RoomSendResponse):
                sent.append((body, resp.event_id))
                break
            await asyncio.sleep(1)
        else:
            raise AssertionError(f"{body} never acknowledged")
        await asyncio.sleep(every_s)


async def _arrives(world: World, key: str, room: str, prefix: str,
                   sent: list[tuple[str, str]], timeout_s: float = 180) -> float:
    """Seconds until every acknowledged message (body, event ID) in `sent` is in the
    room's history on `key`'s server under the same event ID, and no body is stored
    under a second ID. Read through /messages, which backfills: a sender that
    restarts or a server that comes back catches up with each room's latest event
    only, and the receiver fetches what it missed (get_missing_events, then
    /backfill as a client pages back), so /sync may show a gap where /messages
    does not (synapse/federation/sender/per_destination_queue.py, catch-up). An
    event seen twice while backfill moves the page boundaries is one event."""
    t0, want = time.monotonic(), dict(sent)
    client = world.client(key)
    while True:
        ids: dict[str, set[str]] = defaultdict(set)
        for e in await messages_backwards(client, room):
            if isinstance(e, nio.RoomMessageText) and e.body.startswith(prefix):
                ids[e.body].add(e.event_id)
        doubled = {b: sorted(i) for b, i in ids.items() if len(i) > 1}
        assert not doubled, f"stored twice on {key}: {doubled}"
        if {b: next(iter(i)) for b, i in ids.items()} == want:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout_s, \
            f"missing on {key} after {timeout_s} s: {sorted(set(want) - set(ids))}"
        await asyncio.sleep(2)


def _kill_pid1(container: str) -> tuple[int, int]:
    """SIGKILL a container's PID 1 from the host (docker kill would cancel its
    restart policy); returns (that PID, the restart count before)."""
    info = fedbed._client().api.inspect_container(container)
    os.kill(info["State"]["Pid"], signal.SIGKILL)
    return info["State"]["Pid"], info["RestartCount"]


def test_fault_c_down_for_60_s_catches_up_when_back(world: World):
    room = world.room("shared")
    docker_client, peer = fedbed._client(), world.server("C").container

    async def go():
        sent: list[tuple[str, str]] = []
        fedbed.peers.stop(docker_client, peer)
        t0 = time.monotonic()
        await _send_series(world.client("A"), room, "while-c-down", 12, 4.0, sent)
        await asyncio.sleep(max(0.0, 60 - (time.monotonic() - t0)))
        fedbed.peers.resume(docker_client, peer)
        fedbed.peers.wait_healthy(world.server("C").url, world.bed.ca_file)
        world.logs["C"].next_batch = world.clients["C"].next_batch  # same sync position
        seconds = await _arrives(world, "C", room, "while-c-down", sent)
        record("federation: C back after 60 s down -> every event on C", seconds)

    world.run(go())


def test_fault_the_sender_owning_c_killed_mid_stream(world: World):
    room = world.room("shared")
    owner = sender_of(world, "c.test")
    container = world.a.containers[owner]

    async def go():
        sent: list[tuple[str, str]] = []
        sending = asyncio.ensure_future(_send_series(world.client("A"), room, "sender-kill", 20,
                                                     0.5, sent))
        await asyncio.sleep(3)
        pid, restarts = _kill_pid1(container)
        back = await asyncio.to_thread(wait_restarted_healthy, container, pid, restarts, 120)
        await sending
        seconds = await _arrives(world, "C", room, "sender-kill", sent)
        record(f"federation: {owner} killed, healthy again", back)
        record("federation: after the kill, every event on C", seconds)

    world.run(go())


def test_fault_a_federation_reader_restarted_while_c_sends(world: World):
    room = world.room("shared")
    reader = world.a.containers["federation_reader1"]

    async def go():
        sent: list[tuple[str, str]] = []
        sending = asyncio.ensure_future(_send_series(world.client("C"), room, "reader-restart", 20,
                                                     0.5, sent))
        await asyncio.sleep(2)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: fedbed._client().containers.get(reader).restart(timeout=30))
        await sending
        seconds = await _arrives(world, "A", room, "reader-restart", sent)
        record("federation: reader restarted, every event of C's on A", seconds)

    world.run(go())


def test_a_peer_with_an_untrusted_certificate_is_refused(world: World):
    """e.test:443 presents a certificate from a CA A does not trust: A's request
    fails at the handshake and never reaches it as HTTP (the explicit port skips
    the well-known and SRV lookups)."""
    alice = world.client("A")
    rogue = fedbed.start_rogue(world.bed, world.a)

    async def go():
        resp = await alice.get_profile("@eve:e.test:443")
        assert isinstance(resp, nio.ProfileGetError), resp

    try:
        world.run(go())
        served = fedbed.container_logs(rogue)
        assert "HTTP request" not in served, served
        logs = "".join(fedbed.container_logs(world.a.containers[p], since=world.since)
                       for p in world.a.synapse)
        assert re.search(r"e\.test.*(?:certificate verify failed|SSL|TLS)", logs, re.I), \
            "no TLS failure for e.test in A's logs"
    finally:
        fedbed._client().containers.get(rogue).remove(force=True, v=True)


def _x_matrix(origin: str, destination: str, method: str, uri: str, key) -> str:
    signed = sign_json({"method": method, "uri": uri, "origin": origin,
                        "destination": destination}, origin, key)
    sig = signed["signatures"][origin][f"ed25519:{key.version}"]
    return (f'X-Matrix origin="{origin}",destination="{destination}",'
            f'key="ed25519:{key.version}",sig="{sig}"')


def test_a_request_with_a_bad_x_matrix_signature_gets_401(world: World):
    """Signed as C with C's real key: 200. Signed as C with any other key under
    the same key ID: 401."""
    uri = f"/_matrix/federation/v1/query/profile?user_id={quote(world.user_id('A'), safe='')}"
    folder = world.bed.workdir / "c"
    with open(folder / "signing.key") as f:
        real = read_signing_keys(f)[0]
    forged = generate_signing_key(real.version)
    # Sent exactly as signed: the signature covers the request URI byte for byte.
    url = yarl.URL(world.a.federation_url + uri, encoded=True)

    async def go():
        async with world.recorder.session("forger") as s:
            results = {}
            for what, key in (("real", real), ("forged", forged)):
                headers = {"Authorization": _x_matrix("c.test", "a.test", "GET", uri, key)}
                async with s.get(url, headers=headers) as r:
                    results[what] = (r.status, await r.text())
            return results

    results = world.run(go())
    assert results["real"][0] == 200, results
    assert results["forged"][0] == 401, results
    assert "M_UNAUTHORIZED" in results["forged"][1], results


# --- data lifecycle ----------------------------------------------------------------


def test_after_a_restore_the_peers_accept_what_b_signs(world: World, tmp_path, monkeypatch):
    """B backed up, its data destroyed (make destroy-data), restored: it keeps its
    signing key, so C, which cached B's key before, accepts the events B signs
    after the restore, and bob's old access token still sends them."""
    room, config = world.room("shared"), world.bed.configs["B"]
    key_before = world.server("B").deployed.secrets["signingKey"]
    monkeypatch.setenv("BACKUP_PASSPHRASE", "fedbed-backup-passphrase")
    t0 = time.monotonic()
    folder = backup.take(stack_data(config), tmp_path, 1, archive.passphrase())
    fedbed.disconnect_frontend(world.bed, "B")
    replay.down(config, delete_data=True)
    restored = restore.restore_data(stack_data(config), folder, archive.passphrase())
    deployed = replay.up(config, {**world.bed.overrides["B"], **restored})
    world.server("B").deployed = deployed
    fedbed.connect_frontend(world.bed, "B")
    record("B backed up, destroyed, restored and up", time.monotonic() - t0)
    assert deployed.secrets["signingKey"] == key_before

    sent: list[tuple[str, str]] = []

    async def go():
        await _send_series(world.client("B"), room, "after-restore", 3, 0.2, sent)
        return await _arrives(world, "C", room, "after-restore", sent, timeout_s=120)

    seconds = world.run(go())
    record(f"B's events after the restore on C ({len(sent)} messages)", seconds)

    # C knows B by the one key ID it had before: no new key appeared.
    async def keys_on_c():
        async with world.recorder.session("key-query") as s:
            async with s.get(f"{world.server('C').url}/_matrix/key/v2/query/b.test") as r:
                assert r.status == 200, await r.text()
                return await r.json()

    body = world.run(keys_on_c())
    alg, version, _ = key_before.split()
    ids = {k for sk in body["server_keys"] for k in (*sk["verify_keys"], *sk.get("old_verify_keys", {}))}
    assert ids == {f"{alg}:{version}"}, body
