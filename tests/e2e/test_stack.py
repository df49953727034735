"""The dev and prod stacks, replayed on Docker and driven by a real Matrix client.

For each stack (module-scoped fixture, dev first): bring it up from empty through
the replay (tests/e2e/replay/), then, with matrix-nio through nginx: register
users with the shared-secret admin API, log in, create a room, invite, join, send
100 messages and read them back through /sync and /messages, typing, receipts,
to-device, media, profile, room directory, the federation version and key server;
then take the stack down keeping its volumes and up again (everything is still
there), then kill -9 a rooms worker while messages are being sent.

Every request is checked against the process nginx says served it (the
SERVED_BY_HEADER response header): EXPECTED below states, from Synapse's
docs/workers.md and the worker-class design, which class must serve each endpoint.
It is deliberately not read from components/plan/routing.py: the table is what is
under test.

Run: .venv/bin/python -m pytest tests/e2e -m e2e -x -s   (one stack: add -k "[dev]")
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import ssl
import threading
import time
from collections import Counter
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import nio
import pytest
import yaml

from components.tools import impact
from components.render import nginx_conf
from components.plan import postgres_conf
from components.tools import render
from components.render.containers import NGINX_PORTS, POSTGRES_UID
from components.render.nginx_conf import SERVED_BY_HEADER
from components.render.synapse_config import POSTGRES_DB, POSTGRES_USER, log_config_path, log_file_path
from components.plan.topology import POSTGRES_SOCKET_DIR, postgres_settings
from tests.e2e import prometheus, replay
from tests.e2e.images.build import SYNAPSE_NEXT
from tests.e2e.live import Traffic, wait_restarted_healthy
from tests.e2e.stacks import STACKS, TLS_NAMES, prepare
from tests.e2e.timings import record
from tests.e2e.matrix_client import (
    Recorder,
    Served,
    SyncLog,
    bodies,
    close_all,
    image_size,
    lift_message_rate_limit,
    make_png,
    messages_backwards,
    new_client,
    process_of,
    raw,
    register,
    sync_once,
    sync_until,
)
from components.provider import model as pm
from tests.support.capture import reveal
from tests.support.tls import renew, served_certificate

pytestmark = pytest.mark.e2e

MESSAGES = 100
# Concurrent load for the connection-pool test: per round, sends and /messages at
# once, all to the room's one rooms worker. At most 45 at once: Synapse listens on
# its UNIX sockets with a fixed backlog of 50 (synapse/app/_base.py listen_unix),
# and beyond that a busy process's socket refuses new connections (EAGAIN) and
# nginx answers 502 (docs/operations.md, Operating notes).
LOAD_SENDS, LOAD_READS, LOAD_ROUNDS = 20, 25, 4
WRITER = "writer"  # expected: the process writing `stream` (homeserver.yaml stream_writers)
_V = "(?:r0|v3)"


@dataclass(frozen=True)
class Expect:
    name: str
    methods: tuple[str, ...]  # empty: any
    pattern: str
    target: str  # a class, or WRITER
    stream: str | None = None


# Which class serves each endpoint the scenarios use. Sources: docs/workers.md
# (generic_worker endpoint lists, "Stream writers", media_repository) and the
# worker-class design (components/plan/workers.py summaries: client_sync does sync and
# writes typing/to_device/receipts; rooms takes room-scoped requests hashed by room;
# federation_reader takes federation without a room and the key server; main keeps
# login, registration, room creation, profile, the directory and the admin API).
EXPECTED: tuple[Expect, ...] = (
    Expect("sync", ("GET",), rf"^/_matrix/client/{_V}/sync$", "client_sync"),
    # docs: "The typing stream ... should be routed directly to the stream writer".
    Expect("typing", ("PUT",), rf"^/_matrix/client/{_V}/rooms/[^/]+/typing/", WRITER, "typing"),
    Expect("receipt", ("POST",), rf"^/_matrix/client/{_V}/rooms/[^/]+/receipt/", WRITER, "receipts"),
    Expect("read_markers", ("POST",), rf"^/_matrix/client/{_V}/rooms/[^/]+/read_markers$",
           WRITER, "receipts"),
    Expect("to_device", ("PUT",), rf"^/_matrix/client/{_V}/sendToDevice/", WRITER, "to_device"),
    # docs: event sending requests, client API requests, pagination.
    Expect("send", ("PUT",), rf"^/_matrix/client/{_V}/rooms/![^/]+/send/", "rooms"),
    Expect("state", ("GET", "PUT"), rf"^/_matrix/client/{_V}/rooms/![^/]+/state(?:/|$)", "rooms"),
    Expect("invite", ("POST",), rf"^/_matrix/client/{_V}/rooms/![^/]+/invite$", "rooms"),
    Expect("join", ("POST",), rf"^/_matrix/client/{_V}/(?:join/!|rooms/![^/]+/join$)", "rooms"),
    Expect("messages", ("GET",), rf"^/_matrix/client/{_V}/rooms/![^/]+/messages$", "rooms"),
    # docs: media_repository serves /_matrix/media/ and /_matrix/client/v1/media/.
    Expect("media", (), r"^/_matrix/(?:media|client/v1/media)/", "media"),
    Expect("login", ("POST",), rf"^/_matrix/client/{_V}/login$", "main"),
    Expect("admin", (), r"^/_synapse/admin/v1/(?:register|users/[^/]+/override_ratelimit)$", "main"),
    Expect("create_room", ("POST",), rf"^/_matrix/client/{_V}/createRoom$", "main"),
    Expect("profile", ("GET", "PUT"), rf"^/_matrix/client/{_V}/profile/", "main"),
    # Directory visibility is main-only in Synapse (not in the generic_worker list).
    Expect("directory_list", ("PUT",), rf"^/_matrix/client/{_V}/directory/list/room/", "main"),
    Expect("public_rooms", ("GET",), rf"^/_matrix/client/{_V}/publicRooms$", "main"),
    # docs: federation requests; the key resource comes with a federation listener.
    Expect("federation_version", ("GET",), r"^/_matrix/federation/v1/version$", "federation_reader"),
    Expect("key_server", ("GET",), r"^/_matrix/key/v2/server(?:/|$)", "federation_reader"),
)

ROOM_IN_PATH = re.compile(r"/(?:rooms|join)/(![^/]+)")


def expectation(entry: Served) -> Expect | None:
    for e in EXPECTED:
        if (not e.methods or entry.method in e.methods) and re.search(e.pattern, entry.path):
            return e
    return None


@dataclass
class User:
    localpart: str
    password: str
    user_id: str = ""
    client: nio.AsyncClient | None = None


@dataclass
class World:
    """One stack under test and what the scenarios built in it, in order."""
    name: str
    config: str
    overrides: dict[str, Any]
    deployed: replay.Deployed
    loop: asyncio.AbstractEventLoop
    recorder: Recorder = field(default_factory=Recorder)
    users: dict[str, User] = field(default_factory=dict)
    admin_token: str = ""
    room_id: str = ""
    room_name: str = ""
    sent: list[tuple[str, str]] = field(default_factory=list)  # (body, event_id)
    media: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, str] = field(default_factory=dict)
    routed: Counter = field(default_factory=Counter)  # (expectation, process) -> requests
    ca_file: Path | None = None  # nginx.tls: the CA the stack's certificate comes from

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @property
    def url(self) -> str:
        return self.deployed.nginx_url

    def user(self, name: str) -> User:
        assert name in self.users, f"no user {name}: the scenarios run in order, from registration"
        return self.users[name]

    def client(self, name: str) -> nio.AsyncClient:
        c = self.users[name].client
        assert c is not None, f"{name} is not logged in (an earlier scenario failed)"
        return c

    def writers(self, stream: str) -> list[str]:
        # homeserver.yaml names main "master" (its instance name inside Synapse).
        named = self.deployed.homeserver.get("stream_writers", {}).get(stream, ["main"])
        return ["main" if n == "master" else n for n in named]


def assert_routed(world: World, mark: int, *, failover_ok: bool = False) -> None:
    """Every request since `mark` was served by the class EXPECTED names, and every
    room-scoped request for one room by one process (rooms are hashed by room ID).
    With `failover_ok`, a request for a class may have reached another process of
    it (nginx's next upstream while one is down) or main (nginx's fallback when
    none of the class could take it; never for a stream writer's endpoint)."""
    classes = world.deployed.classes
    problems: list[str] = []
    room_procs: dict[str, set[str]] = {}
    for entry in world.recorder.since(mark):
        exp = expectation(entry)
        where = f"{entry.who}: {entry.method} {entry.path} -> {entry.status}"
        if exp is None:
            problems.append(f"{where}: no expectation for this endpoint (add it to EXPECTED)")
            continue
        if entry.status is None:
            continue  # no response at all (a worker was down): nothing to attribute
        proc = process_of(entry.served_by, classes)
        if proc is None:
            problems.append(f"{where}: response names no Synapse process "
                            f"({replay_header()}: {entry.served_by!r})")
            continue
        world.routed[(exp.name, proc)] += 1
        if exp.target == WRITER:
            writers = world.writers(exp.stream or "")
            if proc not in writers:
                problems.append(f"{where}: served by {proc}, but the {exp.stream} stream "
                                f"writer(s) are {writers}")
        elif classes.get(proc) != exp.target and not (failover_ok and proc == "main"):
            problems.append(f"{where}: served by {proc} ({classes.get(proc)}), expected class "
                            f"{exp.target} ({exp.name})")
        m = ROOM_IN_PATH.search(entry.path)
        if m and exp.target == "rooms":
            room_procs.setdefault(m.group(1), set()).add(proc)
    if not failover_ok:
        for room, procs in room_procs.items():
            if len(procs) > 1:
                problems.append(f"room {room} was served by several rooms workers: {sorted(procs)}")
    assert not problems, "requests not served where they should be:\n  " + "\n  ".join(problems)


def replay_header() -> str:
    from components.render.nginx_conf import SERVED_BY_HEADER
    return SERVED_BY_HEADER


def dump_logs(deployed: replay.Deployed) -> None:
    for key, name in deployed.containers.items():
        print(f"\n----- docker logs --tail {replay.LOG_TAIL} {name} -----")
        print(replay.container_logs(name))


# --- the stack ------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(STACKS))
def stack(request, docker_engine):
    name = request.param
    config, overrides, ca = prepare(name)
    replay.down(config, delete_data=True)  # from empty
    t0 = time.monotonic()
    deployed = replay.up(config, overrides)
    seconds = time.monotonic() - t0
    print(f"\n{name}: time from empty to all healthy: {seconds:.1f} s "
          f"({len(deployed.containers)} containers; stages: "
          + ", ".join(f"{k}: {v:.1f} s" for k, v in deployed.stage_seconds.items()) + ")")
    record(f"{name}: empty -> all healthy ({len(deployed.containers)} containers)", seconds)
    loop = asyncio.new_event_loop()
    world = World(name, config, overrides, deployed, loop,
                  recorder=Recorder(ssl.create_default_context(cafile=str(ca)) if ca else None),
                  ca_file=ca)
    failed_before = request.session.testsfailed
    yield world
    clients = [u.client for u in world.users.values() if u.client]
    loop.run_until_complete(close_all(*clients))
    loop.close()
    print(f"\n{name}: requests per (endpoint, process): "
          + json.dumps({f"{e} -> {p}": n for (e, p), n in sorted(world.routed.items())}))
    if request.session.testsfailed > failed_before:
        dump_logs(world.deployed)
        print(f"\n{name}: a test failed: the stack is left running for inspection; "
              f"`python -m tests.e2e.replay down --config {config} --delete-data` removes it")
    else:
        record(f"{name}: down --delete-data", replay.down(config, delete_data=True))


# --- scenarios, in order --------------------------------------------------------


def test_every_container_healthy_as_registered(stack: World):
    """Every registered container runs, is healthy, never restarted, and carries
    what the program asked for (resources, restart policy, healthcheck, networks,
    files); test stacks cannot federate out."""
    api = replay.api()
    d = stack.deployed
    assert len(d.containers) == len(d.capture.containers) >= 10
    for res in d.capture.containers:
        inputs = reveal(res.inputs)
        name = inputs["name"]
        info = api.inspect_container(name)
        state = info["State"]
        assert state["Running"], f"{name} is not running: {state}"
        assert state["Health"]["Status"] == "healthy", f"{name}: {state['Health']}"
        assert info["RestartCount"] == 0, f"{name} restarted {info['RestartCount']} times"
        host = info["HostConfig"]
        assert host["Memory"] == int(inputs["memory"]) * 1024 * 1024, name
        assert host["NanoCpus"] == int(float(inputs["cpus"]) * 1e9), name
        assert host["RestartPolicy"]["Name"] == inputs["restart"], name
        assert host["LogConfig"] == {"Type": inputs["logDriver"], "Config": inputs["logOpts"]}, name
        hc = info["Config"]["Healthcheck"]
        assert hc["Test"] == inputs["healthcheck"]["tests"], name
        assert hc["Interval"] == pm.duration_ns(inputs["healthcheck"]["interval"]), name
        if inputs.get("entrypoints"):  # else the image's own
            assert info["Config"]["Entrypoint"] == inputs["entrypoints"], name
        assert info["Config"]["Cmd"] == inputs["command"], name
        nets = info["NetworkSettings"]["Networks"]
        assert set(nets) == {n["name"] for n in inputs["networksAdvanced"]}, name
        for n in inputs["networksAdvanced"]:
            assert set(n["aliases"]) <= set(nets[n["name"]]["Aliases"] or []), (name, n)
        mounts = {(m["Destination"], m["Name"]) for m in info["Mounts"] if m["Type"] == "volume"}
        assert {(m["target"], m["source"]) for m in inputs["mounts"]} <= mounts, name
        for up in inputs.get("uploads", []):
            stream, stat = api.get_archive(name, up["file"])
            import tarfile
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.getmembers()[0]
                content = tar.extractfile(member).read().decode()
            assert content == up["content"], f"{name}:{up['file']} differs from the registered upload"
            assert member.mode & 0o111 == (0o100 if up.get("executable") else 0), (name, up["file"])
    # Isolation: Synapse only on internal networks, nginx and Prometheus published
    # on loopback only, no outside key servers.
    internal = {n["Name"]: n["Internal"] for n in api.networks()}
    for key, cls in d.classes.items():
        if cls in ("nginx", "prometheus"):
            continue
        nets = api.inspect_container(d.containers[key])["NetworkSettings"]["Networks"]
        assert all(internal[n] for n in nets), f"{key} is on a network with a way out: {list(nets)}"
    for key in ("nginx", "prometheus"):
        for bindings in api.inspect_container(d.containers[key])["HostConfig"]["PortBindings"].values():
            assert all(b["HostIp"] == "127.0.0.1" for b in bindings), (key, bindings)
    assert d.homeserver["trusted_key_servers"] == []
    replay.check_isolation()


def test_secret_files_readable_only_by_their_process(stack: World):
    """Each secret is its own file. Synapse's are 0400 and the Synapse user's (991,
    handed over by start.sh): another user in the same container cannot read
    them. Postgres's is root's 0444 upload (pulumi-docker 5.1.0 has no upload
    owner), read by postgres, the only user its container runs; with TLS, the key
    nginx reads is nginx's own 0400 copy."""
    api = replay.api()
    d = stack.deployed
    for key in ("main", "rooms1"):
        name = d.containers[key]
        # As the owner: even root cannot list Synapse's 0500 secrets directory
        # (no CAP_DAC_READ_SEARCH in the container).
        out = _exec(api, name, ["sh", "-c", "stat -c '%u %a %n' /conf/secrets/*"],
                    user="991:991")
        lines = out.strip().splitlines()
        assert lines and all(l.split()[:2] == ["991", "400"] for l in lines), (name, lines)
        code, text = _exec_rc(api, name, ["cat", lines[0].split()[2]], user="65534")
        assert code != 0 and "Permission denied" in text, (name, code, text)
    pg = d.containers["postgres"]
    out = _exec(api, pg, ["stat", "-c", "%u %a", "/conf/secrets/postgres_password"])
    assert out.split() == ["0", "444"], out
    uids = _exec(api, pg, ["sh", "-c", "for s in /proc/[0-9]*/status; do "
                               "awk '/^Uid:/ {print $2}' $s; done"]).split()
    # Every process but the probe's own shell (`docker exec` runs as the container's
    # user too) is postgres.
    assert uids and set(uids) == {str(POSTGRES_UID)}, uids
    if stack.ca_file is not None:
        key = _exec(api, d.containers["nginx"], ["stat", "-c", "%u %a", nginx_conf.TLS_KEY])
        assert key.split() == ["101", "400"], key
    main_files = _exec(api, d.containers["main"], ["ls", "/conf/secrets"], user="991:991").split()
    worker_files = _exec(api, d.containers["rooms1"], ["ls", "/conf/secrets"],
                         user="991:991").split()
    assert "registration_shared_secret" in main_files
    assert "registration_shared_secret" not in worker_files  # only main registers users


def test_least_privilege(stack: World):
    """Every process of every container runs as its non-root user with no
    effective capabilities and no-new-privileges (read in /proc/<pid>/status);
    Synapse's bounding set keeps only what start.sh needed as root. The process
    user cannot write the root filesystem (read-only for Redis and nginx, even for
    root). Postgres and Redis listen on no TCP port and answer on their sockets to
    Synapse's group only, not to nginx; only nginx and Prometheus publish ports."""
    api = replay.api()
    d = stack.deployed
    registered = {reveal(r.inputs)["name"]: reveal(r.inputs) for r in d.capture.containers}
    redis_uid = _exec(api, d.containers["redis"], ["id", "-u", "redis"]).strip()
    user = {"postgres": "999:999", "redis": f"{redis_uid}:{redis_uid}",
            "nginx": "101:101", "nginx-config": "101:101", "prometheus": "65534:65534",
            "live-config": f"{SYNAPSE_UID}:{SYNAPSE_UID}"}
    # Supplementary groups: Postgres and Redis join Synapse's (group_add); gosu
    # leaves Synapse none but its own, primary, group.
    groups = {"postgres": {"999", SYNAPSE_UID}, "redis": {redis_uid, SYNAPSE_UID},
              "nginx": {"101"}, "nginx-config": {"101"}, "prometheus": {"65534"},
              "live-config": {SYNAPSE_UID}}
    for key, name in d.containers.items():
        inputs = registered[name]
        uid, gid = user.get(key, f"{SYNAPSE_UID}:{SYNAPSE_UID}").split(":")
        procs = _processes(api, name)
        assert procs, name
        synapse = key not in user
        for proc in procs:
            what = f"{name} pid {proc['Pid']} ({proc['Cmd'][:60]})"
            assert set(proc["Uid"].split()) == {uid}, (what, proc["Uid"])
            assert set(proc["Gid"].split()) == {gid}, (what, proc["Gid"])
            assert set(proc["Groups"].split()) == groups.get(key, set()), (what, proc["Groups"])
            assert int(proc["CapEff"], 16) == 0 and int(proc["CapPrm"], 16) == 0, what
            assert proc["NoNewPrivs"] == "1", what
            bounding = CAP_CHOWN_SETGID_SETUID if synapse else 0
            assert int(proc["CapBnd"], 16) == bounding, (what, proc["CapBnd"])
        # The process user cannot write the root filesystem; read-only: not even root.
        code, out = _exec_rc(api, name, ["touch", "/etc/lp-probe"], user=user.get(key, "991:991"))
        assert code != 0, (name, out)
        if inputs["readOnly"]:
            assert "Read-only file system" in out, (name, out)
            code, out = _exec_rc(api, name, ["touch", "/etc/lp-probe"], user="0")
            assert code != 0 and "Read-only file system" in out, (name, out)
        # Only nginx and Prometheus publish ports.
        ports = api.inspect_container(name)["HostConfig"]["PortBindings"] or {}
        assert bool(ports) == (key in ("nginx", "prometheus")), (name, ports)

    # Sockets: a directory of root and Synapse's group, setgid and sticky; others pass.
    main = d.containers["main"]
    listing = _exec(api, main, ["stat", "-c", "%a %u %g %n", "/sockets",
                                "/sockets/.s.PGSQL.5432", "/sockets/synapse_redis.sock"])
    assert listing.split("\n")[:3] == [
        f"3771 0 {SYNAPSE_UID} /sockets", f"770 999 {SYNAPSE_UID} /sockets/.s.PGSQL.5432",
        f"660 {redis_uid} {SYNAPSE_UID} /sockets/synapse_redis.sock"], listing
    # Synapse reaches Postgres and Redis through their sockets, never over TCP.
    probe = ("import socket\n"
             "for host, port in (('postgres', 5432), ('redis', 6379)):\n"
             "    try:\n"
             "        socket.create_connection((host, port), timeout=5)\n"
             "        print(host, 'tcp open')\n"
             "    except OSError as e:\n"
             "        print(host, 'tcp', type(e).__name__)\n"
             "for path in ('/sockets/.s.PGSQL.5432', '/sockets/synapse_redis.sock'):\n"
             "    s = socket.socket(socket.AF_UNIX)\n"
             "    s.connect(path)\n"
             "    print(path, 'unix ok')\n")
    out = _exec(api, main, ["python", "-c", probe], user="991:991")
    assert out.split("\n")[:4] == [
        "postgres tcp ConnectionRefusedError", "redis tcp ConnectionRefusedError",
        "/sockets/.s.PGSQL.5432 unix ok", "/sockets/synapse_redis.sock unix ok"], out
    # nginx, outside Synapse's group, reaches Synapse's inbound sockets only.
    nginx = d.containers["nginx"]
    for path in ("/sockets/.s.PGSQL.5432", "/sockets/synapse_redis.sock"):
        code, out = _exec_rc(api, nginx, ["curl", "-sv", "--unix-socket", path, "http://x/"],
                             user="101:101")
        assert code != 0 and "Permission denied" in out, (path, out)
    code, out = _exec_rc(api, nginx, ["touch", "/sockets/lp-probe"], user="101:101")
    assert code != 0 and "Permission denied" in out, out
    _exec(api, nginx, ["curl", "-fsS", "--unix-socket", "/sockets/synapse_inbound_main.sock",
                       "http://localhost/health"], user="101:101")
    # Postgres and Redis are on the internal network alone.
    internal = {n["Name"]: n["Internal"] for n in api.networks()}
    for key in ("postgres", "redis"):
        nets = api.inspect_container(d.containers[key])["NetworkSettings"]["Networks"]
        assert [internal[n] for n in nets] == [True], (key, list(nets))


# Least privilege, as the program asks for it (docs/least-privilege.md): the
# process user of each role, and the capabilities left in its bounding set.
SYNAPSE_UID = "991"
CAP_CHOWN_SETGID_SETUID = 0xC1  # bits 0, 6, 7
PROBE = "lp-probe"  # marks this test's own exec'd processes


def _processes(api, container: str) -> list[dict[str, str]]:
    """The container's own processes, PID 1 and its descendants, each as its
    /proc status fields and command line. Exec'd processes (Docker's healthchecks,
    this probe) have no parent inside the container and are left out."""
    script = (f": {PROBE}; for d in /proc/[0-9]*; do echo ==; cat $d/status; "
              "printf 'Cmd:\t%s\n' \"$(tr '\\0' ' ' < $d/cmdline)\"; done 2>/dev/null; true")
    out = _exec(api, container, ["sh", "-c", script])
    by_pid = {}
    for block in out.split("==\n")[1:]:
        fields = dict(line.split(":\t", 1) for line in block.splitlines() if ":\t" in line)
        if "Pid" in fields:
            by_pid[fields["Pid"]] = fields

    def own(pid: str) -> bool:
        seen = set()
        while pid in by_pid and pid not in seen:
            if pid == "1":
                return True
            seen.add(pid)
            pid = by_pid[pid]["PPid"]
        return False

    return [f for pid, f in by_pid.items() if own(pid) and PROBE not in f.get("Cmd", "")]


def _exec_rc(api, container: str, cmd: list[str], user: str = "") -> tuple[int, str]:
    ex = api.exec_create(container, cmd, user=user)
    out = api.exec_start(ex["Id"]).decode(errors="replace")
    return api.exec_inspect(ex["Id"])["ExitCode"], out


def _exec(api, container: str, cmd: list[str], user: str = "") -> str:
    code, out = _exec_rc(api, container, cmd, user)
    assert code == 0, f"{container}: {cmd} exited {code}: {out}"
    return out


def test_no_drift_live_containers_read_back_as_registered(stack: World):
    """Read every container back from Docker the way the provider does (what its
    state then holds) and compare with the registered inputs, input by input, for
    every input the provider reads back: what a preview diffs."""
    d = stack.deployed
    image_ids = {r.plain["name"]: replay.api().inspect_image(r.plain["name"])["Id"]
                 for r in d.capture.of_type(replay.IMAGE)}
    compared = set()
    for res in d.capture.containers:
        sent = res.plain
        sent["image"] = image_ids[sent["image"]]
        found = replay.read_container(sent["name"])
        assert found is not None, sent["name"]
        _, read_back = found
        assert read_back.get("mustRun", True), f"{sent['name']} is not running"
        for key, attr in pm.CONTAINER_ATTRS.items():
            if not attr.read or key not in sent:
                continue
            assert key in read_back, f"{sent['name']}: {key} was not read back"
            d_ = pm.diff(pm.CONTAINER, {key: read_back[key]}, {key: sent[key]})
            assert d_.same, f"{sent['name']}.{key}: sent {sent[key]!r}, read back {read_back[key]!r}"
            compared.add(key)
    assert compared >= {"cpus", "memory", "memorySwap", "healthcheck", "restart", "logDriver",
                        "logOpts", "entrypoints", "command", "mounts", "image", "name"}, compared
    assert "ports" in compared
    # The provider does not read env, labels and networks back (state keeps them as
    # sent), so no preview can see them drift: check Docker applied them all the same.
    api = replay.api()
    for res in d.capture.containers:
        sent = res.plain
        info = api.inspect_container(sent["name"])
        assert set(sent["envs"]) <= set(info["Config"]["Env"]), sent["name"]
        labels = {lab["label"]: lab["value"] for lab in sent["labels"]}
        assert labels.items() <= (info["Config"]["Labels"] or {}).items(), sent["name"]
        nets = info["NetworkSettings"]["Networks"]
        assert set(nets) == {n["name"] for n in sent["networksAdvanced"]}, sent["name"]


def test_second_up_changes_nothing(stack: World):
    """A second `up` of the unchanged stack (refresh, then plan) is empty, and every
    container keeps its Docker ID."""
    before = dict(stack.deployed.ids)
    again = replay.up(stack.config, stack.overrides)
    changes = {s.docker_name: (s.action, s.changed) for s in again.plan.steps
               if s.action != replay.SAME}
    assert changes == {}, f"the second up was not a no-op: {changes}"
    assert again.ids == before
    print(f"\n{stack.name}: second up: {again.plan.summary()}; "
          f"{len(before)} containers kept their IDs")
    replaced = len(again.plan.by_action(replay.REPLACE))
    record(f"{stack.name}: second up: {replaced} containers replaced, {again.plan.summary()}",
           again.seconds_to_healthy)
    stack.deployed = again


def test_up_repairs_a_stopped_and_a_lost_container(stack: World):
    """`up --refresh` after one container was stopped and another removed behind
    Pulumi's back: the provider starts the stopped one again (must_run, same ID) and
    creates the lost one; nothing else changes."""
    api = replay.api()
    d = stack.deployed
    stopped, lost = d.containers["sender1"], d.containers["tasks1"]
    api.stop(stopped, timeout=30)
    api.remove_container(lost, force=True)
    again = replay.up(stack.config, stack.overrides)
    changes = {s.docker_name: (s.action, s.changed) for s in again.plan.steps
               if s.action != replay.SAME}
    assert changes == {stopped: (replay.UPDATE, ("mustRun",)), lost: (replay.CREATE, ())}, changes
    assert again.ids[stopped] == d.ids[stopped]
    assert api.inspect_container(stopped)["State"]["Running"]
    assert api.inspect_container(lost)["State"]["Health"]["Status"] == "healthy"
    assert {k: v for k, v in again.ids.items() if k != lost} == \
        {k: v for k, v in d.ids.items() if k != lost}
    stack.deployed = again


def test_register_users_with_shared_secret(stack: World):
    d = stack.deployed
    mark = stack.recorder.mark()

    async def go():
        async with stack.recorder.session("admin") as s:
            status, body = await register(s, d.admin_url, d.registration_shared_secret, "mallory",
                                          secrets.token_urlsafe(12), mac="0" * 40)
            assert status == 403, f"a wrong HMAC was not refused: {status} {body}"
            for name, admin in (("e2eadmin", True), ("alice", False), ("bob", False)):
                user = User(name, secrets.token_urlsafe(16))
                status, body = await register(s, d.admin_url, d.registration_shared_secret,
                                              name, user.password, admin)
                assert status == 200, f"registering {name}: {status} {body}"
                assert body["user_id"] == f"@{name}:{d.server_name}", body
                user.user_id = body["user_id"]
                stack.users[name] = user
                if admin:
                    stack.admin_token = body["access_token"]
            # 100 messages would hit rc_message (0.2/s): lift it for the test users.
            for name in ("alice", "bob"):
                await lift_message_rate_limit(s, d.admin_url, stack.admin_token,
                                              stack.users[name].user_id)

    stack.run(go())
    assert_routed(stack, mark)


def test_admin_api_only_through_the_admin_listener(stack: World):
    """nginx refuses /_synapse/admin on the public listeners (client and
    federation), whoever asks, even with an admin's token; the admin listener,
    published on loopback only, hands it to main. Before, a private-range
    allow-list admitted every request arriving through Docker's bridge gateway."""
    d = stack.deployed
    nginx = replay.api().inspect_container(d.containers["nginx"])
    admin_port = d.admin_url.rsplit(":", 1)[1]
    assert nginx["HostConfig"]["PortBindings"][f"{NGINX_PORTS['admin']}/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": admin_port}]
    auth = {"Authorization": f"Bearer {stack.admin_token}"}
    target = "/_synapse/admin/v1/server_version"

    async def go():
        async with stack.recorder.session("admin-check") as s:
            for base in (stack.url, d.federation_url):
                async with s.get(base + target, headers=auth) as r:
                    body = await r.json()
                    assert r.status == 403 and body["errcode"] == "M_FORBIDDEN", (base, r.status, body)
                    assert r.headers.get(SERVED_BY_HEADER) == "nginx", (base, dict(r.headers))
            async with s.get(d.admin_url + target, headers=auth) as r:
                assert r.status == 200, await r.text()
                assert r.headers.get(SERVED_BY_HEADER) == "main", dict(r.headers)
                assert "server_version" in await r.json()
            async with s.get(d.admin_url + "/_matrix/client/versions") as r:
                assert r.status == 404, f"the admin listener served a client request: {r.status}"

    stack.run(go())
    # nginx saw the refused requests coming from Docker's gateway: a private
    # address, which the old default allow-list admitted.
    log = replay.container_logs(d.containers["nginx"])
    refused = [line for line in log.splitlines() if target in line and '" 403 ' in line]
    assert refused, "nginx logged no refused admin request"
    client = refused[-1].split()[0]
    assert ipaddress.ip_address(client).is_private, refused[-1]


def test_https_front_door_verifies_the_chain(stack: World):
    """nginx.tls: the client and federation listeners speak TLS 1.3 with the
    stack's certificate; a client that trusts only the usual CAs is refused on
    both; plain HTTP is redirected to the public base URL. (Every other dev
    scenario already runs over HTTPS through the same verified chain.)"""
    if stack.ca_file is None:
        pytest.skip(f"{stack.name} has no nginx.tls")
    d = stack.deployed
    assert d.nginx_url.startswith("https://") and d.federation_url.startswith("https://")
    trusting = ssl.create_default_context(cafile=str(stack.ca_file))
    for url in (d.nginx_url, d.federation_url):
        host, port = url.removeprefix("https://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw_sock:
            with trusting.wrap_socket(raw_sock, server_hostname=host) as tls:
                assert tls.version() == "TLSv1.3", tls.version()
                san = dict(tls.getpeercert()["subjectAltName"])
                assert san.get("IP Address") == "127.0.0.1", san
        with socket.create_connection((host, int(port)), timeout=10) as raw_sock:
            with pytest.raises(ssl.SSLCertVerificationError):
                ssl.create_default_context().wrap_socket(raw_sock, server_hostname=host)
    http_port = next(int(p["external"]) for p in d.capture.named("nginx-container").plain["ports"]
                     if int(p["internal"]) == NGINX_PORTS["http"])

    async def go():
        async with aiohttp.ClientSession() as s:  # the system's CAs only
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"{d.nginx_url}/_matrix/client/versions")
            async with s.get(f"http://127.0.0.1:{http_port}/_matrix/client/versions?x=1",
                             allow_redirects=False) as r:
                assert r.status == 301, r.status
                assert r.headers["Location"] == f"{d.nginx_url}/_matrix/client/versions?x=1"
        async with stack.recorder.session("tls") as s:
            async with s.get(f"{d.nginx_url}/_matrix/client/versions") as r:
                assert r.status == 200
                assert r.headers["Strict-Transport-Security"].startswith("max-age=")

    stack.run(go())


async def log_in_both(stack: World, device_suffix: str) -> None:
    """A fresh nio client for alice and bob, logged in through nginx."""
    for name in ("alice", "bob"):
        u = stack.user(name)
        u.client = new_client(stack.url, stack.recorder, name, user=u.user_id)
        resp = await u.client.login(u.password, device_name=f"e2e {name}{device_suffix}")
        assert isinstance(resp, nio.LoginResponse), f"{name} login{device_suffix}: {resp}"
        assert resp.user_id == u.user_id


def test_login_create_room_invite_join(stack: World):
    mark = stack.recorder.mark()
    stack.room_name = f"e2e {stack.name} {secrets.token_hex(3)}"

    async def go():
        await log_in_both(stack, "")
        alice, bob = stack.client("alice"), stack.client("bob")
        resp = await alice.room_create(name=stack.room_name)
        assert isinstance(resp, nio.RoomCreateResponse), resp
        stack.room_id = resp.room_id
        resp = await alice.room_put_state(stack.room_id, "m.room.topic", {"topic": "replayed"})
        assert isinstance(resp, nio.RoomPutStateResponse), resp
        resp = await alice.room_invite(stack.room_id, stack.user("bob").user_id)
        assert isinstance(resp, nio.RoomInviteResponse), resp
        resp = await bob.join(stack.room_id)
        assert isinstance(resp, nio.JoinResponse), resp
        assert resp.room_id == stack.room_id
        resp = await bob.room_get_state_event(stack.room_id, "m.room.member",
                                              stack.user("bob").user_id)
        assert isinstance(resp, nio.RoomGetStateEventResponse), resp
        assert resp.content["membership"] == "join"
        resp = await bob.room_get_state_event(stack.room_id, "m.room.topic")
        assert isinstance(resp, nio.RoomGetStateEventResponse), resp
        assert resp.content["topic"] == "replayed"

    stack.run(go())
    assert_routed(stack, mark)


def test_hundred_messages_through_sync_and_messages(stack: World):
    mark = stack.recorder.mark()
    room = stack.room_id
    alice, bob = stack.client("alice"), stack.client("bob")
    tag = secrets.token_hex(3)

    async def go() -> float:
        alog, blog = SyncLog(), SyncLog()
        await sync_once(alice, alog)
        await sync_once(bob, blog)
        assert room in alog.timeline and room in blog.timeline, "the room is not in both syncs"
        sent: list[tuple[str, str]] = []

        async def send_all() -> float:
            t0 = time.monotonic()
            for i in range(MESSAGES):
                body = f"msg {i:03d} {tag}"
                resp = await alice.room_send(room, "m.room.message",
                                             {"msgtype": "m.text", "body": body}, tx_id=f"m{tag}{i}")
                assert isinstance(resp, nio.RoomSendResponse), f"message {i}: {resp}"
                sent.append((body, resp.event_id))
            return time.monotonic() - t0

        def saw_all(log: SyncLog) -> bool:
            seen = {e.event_id for e in log.timeline.get(room, [])}
            return len(sent) == MESSAGES and all(eid in seen for _, eid in sent)

        # Bob is a live client: his sync loop runs while Alice sends.
        send_seconds, bob_ok = await asyncio.gather(send_all(), sync_until(bob, blog, saw_all, 180))
        assert bob_ok, f"bob's /sync did not deliver all {MESSAGES} messages: {blog.errors[-3:]}"
        assert await sync_until(alice, alog, saw_all, 60), "alice's /sync misses messages"
        want = [eid for _, eid in sent]
        for who, log in (("alice", alog), ("bob", blog)):
            assert not log.gaps, f"{who}'s sync timeline had gaps: {log.gaps}"
            got = [e.event_id for e in log.timeline[room] if e.event_id in set(want)]
            assert got == want, f"{who}'s /sync order differs from the send order"
        for who, client in (("alice", alice), ("bob", bob)):
            events = await messages_backwards(client, room)
            assert bodies(events, "msg ") == [b for b, _ in sent], f"{who}'s /messages differ"
        stack.sent = sent
        return send_seconds

    seconds = stack.run(go())
    record(f"{stack.name}: {MESSAGES} messages sent ({MESSAGES / seconds:.0f}/s)", seconds)
    assert_routed(stack, mark)


def test_typing_receipts_to_device(stack: World):
    mark = stack.recorder.mark()
    room = stack.room_id
    alice, bob = stack.client("alice"), stack.client("bob")
    alice_id, bob_id = stack.user("alice").user_id, stack.user("bob").user_id
    last = stack.sent[-1][1]

    async def go():
        alog, blog = SyncLog(), SyncLog()
        await sync_once(alice, alog)
        await sync_once(bob, blog)

        resp = await alice.room_typing(room, True, 30000)
        assert isinstance(resp, nio.RoomTypingResponse), resp
        assert await sync_until(bob, blog, lambda log: any(
            isinstance(e, nio.TypingNoticeEvent) and alice_id in e.users
            for e in log.ephemeral.get(room, [])), 30), "bob never saw alice typing"
        resp = await alice.room_typing(room, False)
        assert isinstance(resp, nio.RoomTypingResponse), resp

        resp = await bob.update_receipt_marker(room, last)
        assert isinstance(resp, nio.UpdateReceiptMarkerResponse), resp
        resp = await bob.room_read_markers(room, fully_read_event=last, read_event=last)
        assert isinstance(resp, nio.RoomReadMarkersResponse), resp
        assert await sync_until(alice, alog, lambda log: any(
            isinstance(e, nio.ReceiptEvent)
            and any(r.user_id == bob_id and r.event_id == last for r in e.receipts)
            for e in log.ephemeral.get(room, [])), 30), "alice never saw bob's read receipt"

        nonce = secrets.token_hex(8)
        msg = nio.ToDeviceMessage("org.example.e2e.ping", bob_id, bob.device_id, {"nonce": nonce})
        resp = await alice.to_device(msg, tx_id=f"td{nonce}")
        assert isinstance(resp, nio.ToDeviceResponse), resp
        assert await sync_until(bob, blog, lambda log: any(
            e.source.get("content", {}).get("nonce") == nonce and e.source.get("sender") == alice_id
            for e in log.to_device), 30), "bob never got alice's to-device message"

    stack.run(go())
    assert_routed(stack, mark)


def test_media_upload_download_thumbnail(stack: World):
    mark = stack.recorder.mark()
    alice, bob = stack.client("alice"), stack.client("bob")
    png = make_png(200, 150)

    async def go():
        resp, _ = await alice.upload(io.BytesIO(png), content_type="image/png",
                                     filename="e2e.png", filesize=len(png))
        assert isinstance(resp, nio.UploadResponse), resp
        mxc = resp.content_uri
        assert mxc.startswith(f"mxc://{stack.deployed.server_name}/"), mxc
        resp = await bob.download(mxc)
        assert isinstance(resp, nio.MemoryDownloadResponse), resp
        assert resp.body == png, "downloaded media differs from the upload"
        media_id = mxc.rsplit("/", 1)[1]
        resp = await bob.thumbnail(stack.deployed.server_name, media_id, 32, 32,
                                   method=nio.ResizingMethod.crop)
        assert isinstance(resp, nio.ThumbnailResponse), resp
        fmt, size = image_size(resp.body)
        assert size == (32, 32), f"thumbnail is {fmt} {size}, expected a 32x32 crop"
        stack.media = {"mxc": mxc, "data": png}

    stack.run(go())
    assert_routed(stack, mark)


def test_profile_change(stack: World):
    mark = stack.recorder.mark()
    alice, bob = stack.client("alice"), stack.client("bob")
    alice_id = stack.user("alice").user_id
    name = f"Alice {secrets.token_hex(2)}"

    async def go():
        resp = await alice.set_displayname(name)
        assert isinstance(resp, nio.ProfileSetDisplayNameResponse), resp
        resp = await alice.set_avatar(stack.media["mxc"])
        assert isinstance(resp, nio.ProfileSetAvatarResponse), resp
        resp = await bob.get_profile(alice_id)
        assert isinstance(resp, nio.ProfileGetResponse), resp
        assert (resp.displayname, resp.avatar_url) == (name, stack.media["mxc"]), resp
        stack.profile = {"displayname": name, "avatar_url": stack.media["mxc"]}

    stack.run(go())
    assert_routed(stack, mark)


def test_room_directory(stack: World):
    mark = stack.recorder.mark()
    alice, bob = stack.client("alice"), stack.client("bob")
    room = quote(stack.room_id, safe="")

    async def go():
        # publicRooms lists only rooms anyone can join (or read): open it first.
        resp = await alice.room_put_state(stack.room_id, "m.room.join_rules",
                                          {"join_rule": "public"})
        assert isinstance(resp, nio.RoomPutStateResponse), resp
        status, body = await raw(alice, "PUT", f"/_matrix/client/v3/directory/list/room/{room}",
                                 {"visibility": "public"})
        assert status == 200, body
        # The room list comes from room stats, updated in the background.
        deadline = time.monotonic() + 30
        while True:
            status, body = await raw(bob, "GET", "/_matrix/client/v3/publicRooms")
            assert status == 200, body
            listed = {r["room_id"]: r for r in body.get("chunk", [])}
            if stack.room_id in listed:
                assert listed[stack.room_id].get("name") == stack.room_name, listed[stack.room_id]
                return
            assert time.monotonic() < deadline, f"room never listed in publicRooms: {body}"
            await asyncio.sleep(1)

    stack.run(go())
    assert_routed(stack, mark)


def test_federation_version_and_key_server(stack: World):
    from signedjson.key import decode_signing_key_base64, encode_verify_key_base64, get_verify_key
    from signedjson.sign import verify_signed_json

    mark = stack.recorder.mark()
    d = stack.deployed
    alg, version, seed = d.secrets["signingKey"].split()
    signing_key = decode_signing_key_base64(alg, version, seed)
    verify_key = get_verify_key(signing_key)

    async def go():
        async with stack.recorder.session("federation") as s:
            async with s.get(f"{d.federation_url}/_matrix/federation/v1/version") as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            assert body["server"]["name"] == "Synapse", body
            async with s.get(f"{d.federation_url}/_matrix/key/v2/server") as r:
                assert r.status == 200, await r.text()
                keys = await r.json()
        assert keys["server_name"] == d.server_name, keys
        key_id = f"{alg}:{version}"
        assert keys["verify_keys"][key_id]["key"] == encode_verify_key_base64(verify_key), keys
        verify_signed_json(keys, d.server_name, verify_key)  # raises if the signature is bad

    stack.run(go())
    assert_routed(stack, mark)


# --- metrics ---------------------------------------------------------------------


def _scraped_since(stack: World, t: float, timeout_s: float = 60) -> None:
    """Wait until every target has been scraped after `t` (unix time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = prometheus.query(stack.deployed.outputs, 'min(timestamp(up{job="synapse"}))')
        if last and float(last[0]["value"][1]) > t:
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus scraped not every process within {timeout_s} s")


# The client scenario's requests, by the servlet that counts them and the class
# nginx must have sent them to (the routing table); media by name, its servlets
# differ between Synapse's media APIs.
COUNTED = {"sync": ("client_sync", re.compile(r"^SyncRestServlet$")),
           "room send": ("rooms", re.compile(r"^RoomSendEventRestServlet$")),
           "media": ("media", re.compile(r"Upload|Download|Thumbnail"))}


def _requests_by_class(stack: World) -> dict[tuple[str, str], float]:
    rows = prometheus.query(stack.deployed.outputs, "sum by (worker_class, servlet) "
                            '(synapse_http_server_requests_received_total{job="synapse"})')
    return {(r["metric"]["worker_class"], r["metric"]["servlet"]): float(r["value"][1])
            for r in rows}


def test_prometheus_scrapes_every_process_with_the_dashboard_labels(stack: World):
    """up is 1 for every Synapse process, each its own instance and index, its
    class in worker_class, and Synapse's server_name label, all of which Synapse's
    Grafana dashboard selects on."""
    d = stack.deployed
    synapse = {k: d.classes[k] for k in d.synapse}
    _scraped_since(stack, time.time())
    up = prometheus.query(stack.deployed.outputs, 'up{job="synapse"}')
    got = {r["metric"]["instance"]: (r["metric"]["index"], r["metric"]["worker_class"],
                                     r["value"][1]) for r in up}
    assert got == {k: (k, c, "1") for k, c in synapse.items()}, got
    names = prometheus.query(stack.deployed.outputs, "synapse_server_name_info")
    assert {r["metric"]["instance"]: r["metric"]["server_name"] for r in names} == {
        k: d.server_name for k in synapse}


def test_request_counters_grow_on_the_classes_that_serve_them(stack: World):
    """While the client syncs, sends and fetches media, Prometheus sees the
    requests counted by the processes of the class nginx routes each to, and by
    no other class."""
    alice, bob = stack.client("alice"), stack.client("bob")
    sends = 5
    _scraped_since(stack, time.time())
    before = _requests_by_class(stack)

    async def go():
        await sync_once(bob, SyncLog())
        for i in range(sends):
            resp = await alice.room_send(stack.room_id, "m.room.message",
                                         {"msgtype": "m.text", "body": f"counted {i}"})
            assert isinstance(resp, nio.RoomSendResponse), resp
        png = make_png(40, 30)
        resp, _ = await alice.upload(io.BytesIO(png), content_type="image/png",
                                     filename="counted.png", filesize=len(png))
        assert isinstance(resp, nio.UploadResponse), resp
        assert isinstance(await bob.download(resp.content_uri), nio.MemoryDownloadResponse)

    stack.run(go())
    _scraped_since(stack, time.time())
    after = _requests_by_class(stack)
    grew: dict[str, Counter] = {what: Counter() for what in COUNTED}
    for (cls, servlet), n in after.items():
        for what, (_, pattern) in COUNTED.items():
            if pattern.search(servlet) and n > before.get((cls, servlet), 0):
                grew[what][cls] += n - before.get((cls, servlet), 0)
    for what, (cls, _) in COUNTED.items():
        assert set(grew[what]) == {cls}, f"{what}: counted by {dict(grew[what])}, expected {cls}"
    assert grew["room send"]["rooms"] >= sends, grew


# --- Postgres, capacity and logs ------------------------------------------------


def _psql(stack: World, sql: str) -> str:
    """One query as the database owner over Postgres' socket, unaligned output."""
    return _exec(replay.api(), stack.deployed.containers["postgres"],
                 ["psql", "-h", POSTGRES_SOCKET_DIR, "-U", POSTGRES_USER, "-d", POSTGRES_DB,
                  "-AtX", "-F", "|", "-c", sql], user=f"{POSTGRES_UID}:{POSTGRES_UID}")


def _plan_of(stack: World):
    return render.plan_for(Path(stack.config), stack.overrides, stack=stack.name)


def test_postgres_runs_with_the_tuned_settings(stack: World):
    """SHOW gives, for every setting the program passes, the value tuned from
    the container's size class (or the stack's override)."""
    want = postgres_settings(_plan_of(stack).settings)
    rows = dict(line.split("|", 1) for line in _psql(
        stack, "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ("
        + ",".join(f"'{n}'" for n in want) + ")").splitlines())
    assert set(rows) == set(want), set(want) ^ set(rows)
    wrong = {n: (v, rows[n]) for n, v in want.items()
             if postgres_conf.value_of(n, rows[n]) != postgres_conf.value_of(n, v)}
    assert not wrong, f"(passed, SHOW) differ: {wrong}"
    print(f"\n{stack.name}: Postgres runs with "
          + ", ".join(f"{n}={rows[n]}" for n in ("shared_buffers", "effective_cache_size",
                                                 "work_mem", "maintenance_work_mem",
                                                 "max_connections")))


def test_postgres_accepts_exactly_what_the_parameter_table_says(stack: World):
    """postgres_conf.PARAMETERS, which checks synapse:postgres.settings before any
    deploy, states the live server's own pg_settings (type, unit, range, values)."""
    if stack.name != "dev":
        pytest.skip("one server is enough")
    names = ",".join(f"'{n}'" for n in postgres_conf.PARAMETERS)
    live = {}
    for line in _psql(stack, "SELECT name, vartype, coalesce(unit, ''), coalesce(min_val, ''), "
                             "coalesce(max_val, ''), coalesce(array_to_string(enumvals, ','), '') "
                             f"FROM pg_settings WHERE name IN ({names})").splitlines():
        name, vartype, unit, lo, hi, values = line.split("|")
        live[name] = (vartype, unit or None, lo, hi, values)
    wrong = {}
    for name, p in postgres_conf.PARAMETERS.items():
        vartype, unit, lo, hi, values = live[name]
        same = vartype == p.vartype and unit == p.unit
        if p.vartype in ("integer", "real"):
            same = same and math.isclose(float(lo), p.min) and math.isclose(float(hi), p.max,
                                                                            rel_tol=1e-5)
        if p.vartype == "enum":
            same = same and set(values.split(",")) == set(p.values)
        if not same:
            wrong[name] = (live[name], p)
    assert not wrong, f"the table disagrees with Postgres: {wrong}"


def test_concurrent_load_opens_more_than_cp_min_and_postgres_refuses_none(stack: World):
    """Sends, /messages and syncs at once make Synapse's pools grow past cp_min
    (pg_stat_activity names each process: PGAPPNAME); Postgres never refuses a
    connection, and no pool goes past cp_max."""
    room, alice, bob = stack.room_id, stack.client("alice"), stack.client("bob")
    peak: Counter = Counter()
    stop = threading.Event()
    query = ("SELECT application_name, count(*) FROM pg_stat_activity "
             "WHERE datname = current_database() AND backend_type = 'client backend' "
             "AND application_name <> 'psql' GROUP BY 1")

    def sample() -> None:
        while not stop.is_set():
            for line in _psql(stack, query).splitlines():
                name, n = line.split("|")
                peak[name] = max(peak[name], int(n))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tag = secrets.token_hex(3)

    async def go() -> int:
        async with stack.recorder.session("load") as s:
            headers = {"Authorization": f"Bearer {bob.access_token}"}
            messages = f"{stack.url}/_matrix/client/v3/rooms/{quote(room)}/messages?dir=b&limit=100"

            async def read() -> int:
                async with s.get(messages, headers=headers) as r:
                    return r.status

            sends = [alice.room_send(room, "m.room.message", {"msgtype": "m.text",
                                                               "body": f"load {tag} {i}"})
                     for i in range(LOAD_SENDS)]
            reads = [read() for _ in range(LOAD_READS)]
            results = await asyncio.gather(*sends, *reads)
        sent = [r for r in results[:LOAD_SENDS] if isinstance(r, nio.RoomSendResponse)]
        assert len(sent) == LOAD_SENDS, [r for r in results[:LOAD_SENDS] if r not in sent][:3]
        assert set(results[LOAD_SENDS:]) == {200}, Counter(results[LOAD_SENDS:])
        return len(sent)

    try:
        for _ in range(LOAD_ROUNDS):
            stack.run(go())
    finally:
        stop.set()
        sampler.join()
    procs = set(stack.deployed.synapse)
    print(f"\n{stack.name}: peak database connections per process under load: "
          + json.dumps(dict(sorted(peak.items()))))
    assert procs <= set(peak), f"processes with no connection seen: {procs - set(peak)}"
    assert max(peak[p] for p in procs) > postgres_conf.DB_POOL_MIN, peak
    assert all(peak[p] <= postgres_conf.DB_POOL_MAX for p in procs), peak
    log = replay.container_logs(stack.deployed.containers["postgres"])
    for refusal in ("too many clients already", "remaining connection slots are reserved"):
        assert refusal not in log, f"Postgres refused a connection: {refusal}"
    for key in procs:
        log = replay.container_logs(stack.deployed.containers[key])
        assert "OperationalError" not in log, f"{key} lost a database connection:\n{log[-2000:]}"


def test_every_process_logs_to_its_own_rotated_file(stack: World):
    """Each Synapse process writes its own file on its own volume (docker logs
    gets the same lines): it holds the process's start-up, PID 1 has it open, and
    the log config the process was started with rotates it daily keeping
    log.daysKept files; Python's logging, loading that config in the container,
    schedules the next rotation for the coming midnight."""
    api = replay.api()
    days = _plan_of(stack).settings.log.days_kept
    synapse_user = f"{SYNAPSE_UID}:{SYNAPSE_UID}"
    procs = {p["name"]: p for p in stack.deployed.outputs["processes"]}
    for key, cls in stack.deployed.classes.items():
        if key not in procs:
            continue
        name = stack.deployed.containers[key]
        path = log_file_path(cls)
        text = _exec(api, name, ["cat", path], user=synapse_user)
        for sock in procs[key]["sockets"]:
            assert f"Synapse now listening on Unix Socket at: {sock}" in text, (name, sock)
        # As the process user and group: root in a container lacks CAP_SYS_PTRACE
        # to read another user's, and ptrace access wants uid and gid to match.
        fds = _exec(api, name, ["sh", "-c", "ls -l /proc/1/fd"], user=synapse_user)
        assert f"-> {path}" in fds, f"{name}: PID 1 does not have {path} open:\n{fds}"
        argv = _exec(api, name, ["cat", "/proc/1/cmdline"]).split("\0")
        configs = [a.split("=", 1)[1] for a in argv if a.startswith("--config-path=")]
        merged: dict[str, Any] = {}
        for c in configs:
            merged.update(yaml.safe_load(_exec(api, name, ["cat", c])) or {})
        log_config = merged.get("worker_log_config") or merged["log_config"]
        handler = yaml.safe_load(_exec(api, name, ["cat", log_config]))["handlers"]["file"]
        assert (handler["class"], handler["filename"], handler["when"], handler["backupCount"]) \
            == ("logging.handlers.TimedRotatingFileHandler", path, "midnight", days), handler
        probe = ("import logging.config, time, yaml; "
                 f"logging.config.dictConfig(yaml.safe_load(open({log_config!r}))); "
                 "h = next(x.target for x in logging.getLogger().handlers "
                 "if hasattr(x, 'target')); "
                 "print(h.when, h.interval, h.backupCount, round(h.rolloverAt - time.time()))")
        when, interval, kept, due = _exec(api, name, ["/opt/synapse/bin/python", "-c", probe],
                                          user=synapse_user).split()
        assert (when, interval, int(kept)) == ("MIDNIGHT", "86400", days), (name, when, kept)
        assert 0 < int(due) <= 86400, f"{name}: next rotation in {due} s"


def _served_key_ids(stack: World) -> set[str]:
    async def go():
        async with stack.recorder.session("federation") as s:
            async with s.get(f"{stack.deployed.federation_url}/_matrix/key/v2/server") as r:
                assert r.status == 200, await r.text()
                return set((await r.json())["verify_keys"])
    return stack.run(go())


def test_persistence_across_down_and_up(stack: World):
    """`make down` (destroy --exclude-protected), then up: the data volumes and the
    generated secrets survive, so users log in, the room, all messages, media and
    profile are there, and the server signs with the same key."""
    old = stack.deployed
    key_ids = _served_key_ids(stack)
    stack.run(close_all(*(u.client for u in stack.users.values() if u.client)))
    for u in stack.users.values():
        u.client = None
    seconds = replay.down(stack.config)
    record(f"{stack.name}: down (data kept)", seconds)
    api = replay.api()
    for name in old.containers.values():
        with pytest.raises(Exception):
            api.inspect_container(name)  # really gone
    kept = {v["Name"] for v in api.volumes()["Volumes"] or []}
    assert set(old.outputs["dataVolumes"]) <= kept, "a data volume did not survive down"
    t0 = time.monotonic()
    stack.deployed = replay.up(stack.config, stack.overrides)
    seconds = time.monotonic() - t0
    print(f"\n{stack.name}: time from volumes only to all healthy: {seconds:.1f} s")
    record(f"{stack.name}: up again on kept volumes", seconds)
    assert stack.deployed.secrets == old.secrets, "the stack's secrets changed across down/up"
    assert _served_key_ids(stack) == key_ids, "the server's signing key changed"
    mark = stack.recorder.mark()

    async def go():
        await log_in_both(stack, " again")
        for name in ("alice", "bob"):
            log = SyncLog()
            await sync_once(stack.client(name), log)
            assert stack.room_id in log.timeline, f"{name} is no longer in the room"
            events = await messages_backwards(stack.client(name), stack.room_id)
            assert bodies(events, "msg ") == [b for b, _ in stack.sent], \
                f"{name}: the {MESSAGES} messages are not all there after up"
        resp = await stack.client("bob").download(stack.media["mxc"])
        assert isinstance(resp, nio.MemoryDownloadResponse), resp
        assert resp.body == stack.media["data"], "media differs after up"
        resp = await stack.client("bob").get_profile(stack.user("alice").user_id)
        assert isinstance(resp, nio.ProfileGetResponse), resp
        assert resp.displayname == stack.profile["displayname"], resp

    stack.run(go())
    assert_routed(stack, mark)


def _room_process(stack: World) -> str:
    """The rooms worker nginx sends this room's requests to (from the header)."""
    procs = Counter(
        process_of(e.served_by, stack.deployed.classes) for e in stack.recorder.entries
        if e.path.startswith("/_matrix/client/v3/rooms/" + stack.room_id + "/send/")
        and e.status == 200)
    procs.pop(None, None)
    assert procs, "no send request of this room names its rooms worker (no served-by header?)"
    proc, _ = procs.most_common(1)[0]
    assert stack.deployed.classes[proc] == "rooms", f"sends were served by {proc}"
    return proc


def test_fault_rooms_worker_killed(stack: World):
    """kill -9 the Synapse process of the room's worker while Alice sends: Docker
    restarts it (restart policy), it turns healthy again, and every message the
    client saw acknowledged is in the room afterwards, exactly once."""
    room = stack.room_id
    alice = stack.client("alice")
    proc = _room_process(stack)
    container = stack.deployed.containers[proc]
    api = replay.api()
    info = api.inspect_container(container)
    pid, restarts = info["State"]["Pid"], info["RestartCount"]
    tag = secrets.token_hex(3)
    acked: dict[str, tuple[str, str]] = {}  # txn -> (body, event_id)
    failures: list[str] = []
    mark = stack.recorder.mark()

    async def go() -> tuple[float, float]:
        stop = asyncio.Event()

        async def sender():
            i = 0
            while not stop.is_set():
                txn, body = f"f{tag}{i}", f"fault {i:03d} {tag}"
                deadline = time.monotonic() + 120
                while True:  # retried with the same txn id until acknowledged
                    try:
                        resp = await alice.room_send(room, "m.room.message",
                                                     {"msgtype": "m.text", "body": body}, tx_id=txn)
                    except Exception as e:  # noqa: BLE001 - connection errors while it is down
                        resp = e
                    if isinstance(resp, nio.RoomSendResponse):
                        acked[txn] = (body, resp.event_id)
                        break
                    failures.append(f"{txn}: {resp}")
                    assert time.monotonic() < deadline, f"{txn} never acknowledged: {failures[-3:]}"
                    await asyncio.sleep(0.2)
                i += 1
                await asyncio.sleep(0.05)

        async def until(n: int, timeout_s: float = 60) -> None:
            t_end = time.monotonic() + timeout_s
            while len(acked) < n:
                assert not task.done() or task.exception() is None, task.exception()
                assert time.monotonic() < t_end, f"only {len(acked)} messages acknowledged"
                await asyncio.sleep(0.05)

        task = asyncio.create_task(sender())
        await until(10)
        os.kill(pid, signal.SIGKILL)  # a crash, not a `docker stop`: the restart policy applies
        back = await asyncio.to_thread(wait_restarted_healthy, container, pid, restarts, 180)
        await until(len(acked) + 10)
        stop.set()
        await task
        events = await messages_backwards(alice, room)
        ids = {e.event_id for e in events}
        lost = {t: v for t, v in acked.items() if v[1] not in ids}
        assert not lost, f"acknowledged messages lost: {lost}"
        got = Counter(bodies(events, "fault "))
        want = {b for b, _ in acked.values()}
        dupes = {b: n for b, n in got.items() if n > 1}
        assert not dupes, f"messages stored more than once: {dupes}"
        assert set(got) == want, f"unexpected fault messages: {set(got) ^ want}"
        return back, len(acked)

    back, n = stack.run(go())
    print(f"\n{stack.name}: killed {proc} (pid {pid}); healthy again {back:.1f} s later; "
          f"{n} messages acknowledged, {len(failures)} failed attempts retried")
    record(f"{stack.name}: {proc} killed -> healthy again", back)
    info = api.inspect_container(container)
    assert info["RestartCount"] == restarts + 1, info["RestartCount"]
    # While the worker was down nginx may have sent the room to another rooms worker.
    assert_routed(stack, mark, failover_ok=True)


# --- live changes ---------------------------------------------------------------

# Each change is applied on top of the previous ones, while Alice sends and Bob
# reads, and one probe per endpoint class goes out every 0.25 s (live.Traffic).
# Kinds: "reload" restarts nothing (live-config publishes, Synapse reloads on
# SIGHUP); "nginx" replaces no Synapse container (nginx reloads its config);
# "restart" replaces Synapse processes, rolling where they may (rollout.py).
LIVE_CHANGES: dict[str, list[tuple[str, dict[str, Any], str]]] = {
    "prod": [
        ("rooms 4 -> 8", {"workers.rooms": 8}, "nginx"),
        ("rooms 8 -> 4", {"workers.rooms": 4}, "nginx"),
        ("sender 4 -> 5", {"workers.sender": 5}, "restart"),
    ],
    "dev": [
        ("log level INFO -> WARNING", {"log.level": "WARNING"}, "reload"),
        # The `caches` section (reloadable.yaml): Synapse resizes its caches on SIGHUP.
        ("caches global_factor 1 -> 2", {"extraConfig.caches.global_factor": 2.0}, "reload"),
        ("Synapse image -> a second tag", {"images.synapse": SYNAPSE_NEXT}, "restart"),
        ("preset one-of-each -> monolith", {"preset": "monolith"}, "restart"),
        # media (and every class) 0 -> n: main serves them until nginx routes to
        # the new workers, so no gap beyond main's own restart.
        ("preset monolith -> specialized", {"preset": "specialized"}, "restart"),
        ("preset specialized -> monolith", {"preset": "monolith"}, "restart"),
    ],
}
# One probe interval and a little: a failed probe counts until the next success.
PROBE_SLACK_S = 0.5
# Streams whose writer a class's probe needs wherever it is served: a /sync bumps
# the user's presence, which a process that does not write presence asks the
# presence writer to do over replication (ReplicationBumpPresenceActiveTime);
# while that writer restarts, Synapse answers 502 after its retries.
PROBE_NEEDS_WRITER = {"client_sync": ("presence",)}


def assert_availability_targets(title: str, before: replay.Deployed, after: replay.Deployed,
                                down: dict[str, float]) -> float:
    """Issue 21's targets, per endpoint class: a class that has processes before
    and after the change is never unavailable (its processes roll, or main serves
    it while they restart), unless its probe needs a stream writer that restarts
    (PROBE_NEEDS_WRITER: then no longer than that writer's own replacement); main,
    and a class that main serves until the change, no longer than main's own
    replacement (delete, create, healthy). A class that
    goes 0 -> n may take stream writers from main (client_sync: presence, typing,
    ...): from its restart on, main refers those to the new writer, which Synapse
    answers with 502 until it is up; so such a class is down at most from main's
    stop until its last new process is healthy. Returns main's replacement in
    seconds (0 when main was not replaced)."""
    main = after.containers["main"]
    step = after.applied.get(main)
    main_s = (step[1] - step[0]) if step else 0.0
    writers = after.homeserver.get("stream_writers", {})

    def writer_restart(cls: str) -> float:
        """The longest replacement of a writer the class's probe needs."""
        out = 0.0
        for stream in PROBE_NEEDS_WRITER.get(cls, ()):
            for w in writers.get(stream, ["master"]):
                s = after.applied.get(after.containers["main" if w == "master" else w])
                out = max(out, (s[1] - s[0]) if s else 0.0)
        return out

    for cls, seconds in down.items():
        if cls == "main":
            bound = main_s
        elif not before.by_class(cls) and after.by_class(cls):
            assert step, f"{title}: {cls} went 0 -> n without main's restart"
            bound = max(after.applied[after.containers[k]][1]
                        for k in after.by_class(cls)) - step[0]
        elif before.by_class(cls) and after.by_class(cls):
            bound = writer_restart(cls)
        else:
            bound = max(main_s, writer_restart(cls))
        assert seconds <= bound + (PROBE_SLACK_S if bound else 0.0), (
            f"{title}: {cls} unavailable {seconds} s, target {bound:.1f} s: {down}")
    return main_s


# @cached(max_entries=10000) in RoomWorkerStore, scaled by the factors; every
# process reports it once a room request has used it.
CACHE_PROBE = "get_room_version_id"


def _cache_max_size(api, container: str) -> float:
    """A cache's size limit, as the process reports it on its metrics listener."""
    text = _exec(api, container, ["curl", "-fsS", "http://127.0.0.1:9000/_synapse/metrics"])
    m = re.search(rf'^synapse_util_caches_cache_max_size{{[^}}]*name="{CACHE_PROBE}"[^}}]*}} '
                  r"(\S+)$", text, re.M)
    assert m, f"{container}: no {CACHE_PROBE} cache in its metrics"
    return float(m.group(1))


def _info_lines(api, container: str, since: float) -> list[str]:
    logs = api.logs(container, stdout=True, stderr=True, since=int(since)).decode(errors="replace")
    return [line for line in logs.splitlines() if " - INFO - " in line]


def _live_change(stack: World, title: str, change: dict[str, Any], kind: str) -> dict[str, Any]:
    old_overrides = dict(stack.overrides)
    new_overrides = {**old_overrides, **change}
    path = Path(stack.config)
    new_side = impact.load_side(path, new_overrides)
    report = impact.impact(impact.load_side(path, old_overrides), new_side)
    before = stack.deployed
    ids_before = dict(before.ids)
    traffic = Traffic(stack.client("alice"), stack.client("bob"), stack.room_id,
                      stack.url, stack.deployed.federation_url,
                      ssl_context=stack.recorder.ssl)

    async def go() -> replay.Deployed:
        await traffic.start()
        try:
            await traffic.wait_acked(5)
            deployed = await asyncio.to_thread(replay.up, stack.config, new_overrides)
            await traffic.wait_acked(len(traffic.acked) + 5)
        finally:
            await traffic.stop()
        await traffic.assert_stored(stack.client("alice"), title)
        return deployed

    deployed = stack.run(go())
    stack.deployed, stack.overrides = deployed, new_overrides
    # The report predicted the plan, and what it called "same" kept running.
    planned = {s.docker_name: s.action for s in deployed.plan.steps
               if s.type == replay.CONTAINER and s.action != replay.SAME}
    assert planned == report.actions(), f"{title}: the impact report did not predict the plan"
    for c in report.changes:
        if c.action == "same":
            assert deployed.ids[c.container] == ids_before[c.container], \
                f"{title}: {c.container} was reported 'same' but its container changed"
    # The engine's order, on the clock: a changed container started only once what
    # it depends on (rollout.py: main, a rolling partner) was done.
    for spec in new_side.deployment.containers:
        mine = deployed.applied.get(spec.name)
        for dep in spec.depends_on:
            theirs = deployed.applied.get(new_side.deployment.container(dep).name)
            if mine and theirs:
                assert mine[0] >= theirs[1], f"{title}: {spec.key} started before {dep} was done"
    down = traffic.unavailable_seconds()
    main_s = assert_availability_targets(title, before, deployed, down)
    summary = {"change": title, "kind": kind, "seconds": round(deployed.seconds_to_healthy, 1),
               "replaced": sum(a == "replace" for a in planned.values()),
               "created": sum(a == "create" for a in planned.values()),
               "deleted": sum(a == "delete" for a in planned.values()),
               "messages": len(traffic.acked), "retried_sends": traffic.failed_sends,
               "main_replaced_s": round(main_s, 1), "unavailable_s": down}
    print(f"\n{stack.name}: live change: {json.dumps(summary)}")
    record(f"{stack.name}: live change {title}", deployed.seconds_to_healthy)
    LIVE_RESULTS.append({"stack": stack.name, **summary})
    synapse = {deployed.containers[k] for k in deployed.synapse}  # after the change
    if kind in ("reload", "nginx"):
        assert not {n for n, a in planned.items() if a == "replace"} & synapse, planned
        assert deployed.containers["nginx"] not in planned, "nginx must reload, not restart"
        assert traffic.failed_sends == 0 and set(down.values()) == {0.0}, \
            f"{title}: requests failed during a change that restarts nothing: {down}"
    if kind == "nginx":
        assert planned.get(deployed.containers["nginx-config"]) == "replace"
    if kind == "reload":
        assert set(planned) == {deployed.containers["live-config"]}, planned
    return summary


LIVE_RESULTS: list[dict[str, Any]] = []


def test_live_changes_lose_nothing_and_keep_what_the_report_calls_same(stack: World):
    api = replay.api()
    next_id = api.inspect_image(SYNAPSE_NEXT)["Id"]
    for title, change, kind in LIVE_CHANGES[stack.name]:
        t0 = time.time()
        sizes = ({k: _cache_max_size(api, stack.deployed.containers[k])
                  for k in ("main", "rooms1")} if "caches" in title else {})
        _live_change(stack, title, change, kind)
        for key, size in sizes.items():  # resized by the running process, not a new one
            assert _cache_max_size(api, stack.deployed.containers[key]) == 2 * size, key
        if "image" in title:
            # Main is up (healthy, so on the schema) before any worker starts.
            main_done = stack.deployed.applied[stack.deployed.containers["main"]][1]
            for key in stack.deployed.synapse:
                if key != "main":
                    name = stack.deployed.containers[key]
                    assert stack.deployed.applied[name][0] >= main_done, (name, main_done)
                    assert api.inspect_container(name)["Image"] == next_id, name
        if "log level" in title:
            # Published, and reloaded by the running processes (their watcher's
            # SIGHUP): what they log from now on is WARNING and above.
            main = stack.deployed.containers["main"]
            conf = _exec(api, main, ["cat", log_config_path("main")])
            assert "level: WARNING" in conf, conf
            for key in stack.deployed.synapse:
                name = stack.deployed.containers[key]
                assert "SIGHUP sent to Synapse" in replay.container_logs(name, tail=400), name
            time.sleep(1.5)  # past the second of the reload in the log's timestamps
            since = time.time()
            for _ in range(5):  # requests main would log at INFO (synapse.access)
                stack.run(stack.client("alice").get_profile(stack.client("alice").user_id))
            assert _info_lines(api, main, since) == [], "main still logs at INFO"
            assert t0 < since
    if stack.name == "dev":
        assert stack.deployed.by_class("rooms") == [] and stack.deployed.by_class("main") == ["main"]


def _served_certificate(url: str, cafile: Path) -> bytes:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return served_certificate(int(port), host, cafile, host=host)[0]


def test_a_renewed_certificate_is_reloaded_not_restarted(stack: World):
    """A renewal (a new key and certificate from the same CA, set as the stack's
    TLS secrets): the impact report and the plan replace nginx-config only, nginx
    keeps its container and serves the new certificate after a reload, and no
    request fails while it happens."""
    if stack.ca_file is None:
        pytest.skip(f"{stack.name} has no nginx.tls")
    d = stack.deployed
    before = _served_certificate(d.nginx_url, stack.ca_file)
    renewed = renew(stack.ca_file.parent, TLS_NAMES)
    nginx_id = d.ids[d.containers["nginx"]]
    _live_change(stack, "TLS certificate renewed",
                 {"tlsCertificate": renewed.fullchain, "tlsKey": renewed.key}, "nginx")
    after = _served_certificate(stack.deployed.nginx_url, stack.ca_file)
    end = "-----END CERTIFICATE-----"
    server_pem = renewed.fullchain.split(end)[0] + end + "\n"  # the chain's first
    assert after != before and after == ssl.PEM_cert_to_DER_cert(server_pem)
    assert stack.deployed.ids[stack.deployed.containers["nginx"]] == nginx_id
