"""Faults on a running stack, with a client sending and reading throughout.

One stack at a time (from empty, through the replay), two users and a room; then
one test per fault: every fault on dev, the Postgres and Redis restarts on prod
too. In each, tests/e2e/live.py's Traffic runs from before the fault until well
after the stack is back: Alice sends through nginx (every message retried with
its transaction ID until acknowledged), Bob reads through /sync, and one probe
per endpoint class every 0.25 s says how long each class was unavailable. Each
test then checks that

  - every acknowledged message is in the room (read back with /messages) exactly
    once, and reached Bob's /sync (all of them while his timeline had no gap;
    at least those sent after the recovery otherwise);
  - every container is running and healthy again, by Docker's restart policy
    alone: nothing is deployed in between;

and prints the seconds each endpoint class was unavailable (also recorded for
the run's summary and listed at the end of the module).

The faults: Postgres restarted; Redis restarted (the workers reconnect, and
replication over Redis works again); every container SIGKILLed at once (stale
sockets, lock files and pid files must not block start-up; an `up` afterwards
plans nothing); the Docker engine itself restarted (containers come back by
their restart policy, and a refresh plans nothing); one worker crash-looping
(the other classes keep serving throughout).

The engine restart stops the shared engine: run only under the e2e lock,
  flock /tmp/e2e.lock .venv/bin/python -m pytest tests/e2e/test_faults.py -m e2e -x -s
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import ssl
import subprocess
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import docker
import nio
import pytest

from components.render.containers import POSTGRES_DATA
from components.render.nginx_conf import HEALTH_SOCKET
from components.render.synapse_config import worker_config_path
from components.plan.topology import REDIS_SOCKET, SOCKET_DIR
from tests.e2e import replay
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import (
    Recorder,
    bodies,
    close_all,
    lift_message_rate_limit,
    messages_backwards,
    new_client,
    register,
)
from tests.e2e.replay import engine as replay_engine
from tests.e2e.stacks import prepare
from tests.e2e.timings import record

pytestmark = pytest.mark.e2e


def on(*stacks: str):
    """The stacks (tests/e2e/stacks.py) a test runs on: every fault on dev, the
    Postgres and Redis restarts on prod too (18 containers, four rooms workers)."""
    return pytest.mark.parametrize("stack", stacks, indirect=True)


HOST_SETUP = Path(__file__).with_name("host_setup.sh")
BEFORE = 10  # messages acknowledged before the fault
AFTER = 20  # ... and after the stack is back
SEEN_WITHIN_S = 60  # a message sent after the recovery reaches Bob's /sync within this
HEALTHY_WITHIN_S = 300  # every container healthy again after a fault, at most
CRASH_LOOP_S = 30  # how long the one worker is left crash-looping
POSTMASTER_PID = f"{POSTGRES_DATA}/postmaster.pid"

RESULTS: list[dict[str, Any]] = []


@dataclass
class Stack:
    name: str
    config: str
    overrides: dict[str, Any]
    deployed: replay.Deployed
    loop: asyncio.AbstractEventLoop
    recorder: Recorder = field(default_factory=Recorder)
    clients: dict[str, nio.AsyncClient] = field(default_factory=dict)
    room_id: str = ""

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def synapse(self) -> list[str]:
        """Process keys of the Synapse containers."""
        return self.deployed.synapse


async def _set_up_users_and_room(st: Stack) -> None:
    d = st.deployed
    passwords = {}
    async with st.recorder.session("admin") as s:
        admin_token = ""
        for name, admin in (("faultadmin", True), ("alice", False), ("bob", False)):
            passwords[name] = secrets.token_urlsafe(16)
            status, body = await register(s, d.admin_url, d.registration_shared_secret, name,
                                          passwords[name], admin)
            assert status == 200, f"registering {name}: {status} {body}"
            if admin:
                admin_token = body["access_token"]
        # Traffic sends several messages a second; rc_message allows 0.2/s.
        for name in ("alice", "bob"):
            await lift_message_rate_limit(s, d.admin_url, admin_token, f"@{name}:{d.server_name}")
    for name in ("alice", "bob"):
        c = new_client(d.nginx_url, st.recorder, name, user=f"@{name}:{d.server_name}")
        resp = await c.login(passwords[name], device_name=f"faults {name}")
        assert isinstance(resp, nio.LoginResponse), f"{name} login: {resp}"
        st.clients[name] = c
    alice, bob = st.clients["alice"], st.clients["bob"]
    resp = await alice.room_create(name=f"faults {secrets.token_hex(3)}")
    assert isinstance(resp, nio.RoomCreateResponse), resp
    st.room_id = resp.room_id
    resp = await alice.room_invite(st.room_id, bob.user_id)
    assert isinstance(resp, nio.RoomInviteResponse), resp
    resp = await bob.join(st.room_id)
    assert isinstance(resp, nio.JoinResponse), resp


@pytest.fixture(scope="module")
def stack(request, docker_engine):
    name = request.param
    config, overrides, ca = prepare(name)
    replay.down(config, delete_data=True)  # from empty
    t0 = time.monotonic()
    deployed = replay.up(config, overrides)
    record(f"{name} (faults): empty -> all healthy ({len(deployed.containers)} containers)",
           time.monotonic() - t0)
    loop = asyncio.new_event_loop()
    st = Stack(name, config, dict(overrides), deployed, loop,
               recorder=Recorder(ssl.create_default_context(cafile=str(ca)) if ca else None))
    failed_before = request.session.testsfailed
    try:
        st.run(_set_up_users_and_room(st))
        yield st
    finally:
        loop.run_until_complete(close_all(*st.clients.values()))
        loop.close()
        mine = [r for r in RESULTS if r["stack"] == name]
        if mine:
            print(f"\n{name}: seconds unavailable per endpoint class, by fault:")
            for r in mine:
                print(f"  {r['fault']}: {json.dumps(r['unavailable_s'])}")
    if request.session.testsfailed > failed_before:
        for key, name in st.deployed.containers.items():
            print(f"\n----- docker logs --tail {replay.LOG_TAIL} {name} -----")
            print(replay.container_logs(name))
        print(f"\n{name}: a test failed: the stack is left running for inspection; "
              f"`python -m tests.e2e.replay down --config {config} --delete-data` removes it")
    else:
        record(f"{name} (faults): down --delete-data", replay.down(config, delete_data=True))


# --- containers -----------------------------------------------------------------


def _state(name: str) -> dict[str, Any]:
    info = replay.api().inspect_container(name)
    s = info["State"]
    return {"id": info["Id"], "pid": s["Pid"], "started": s["StartedAt"],
            "restarts": info["RestartCount"], "running": s["Running"],
            "status": s["Status"], "health": (s.get("Health") or {}).get("Status")}


def _snapshot(st: Stack) -> dict[str, dict[str, Any]]:
    return {k: _state(n) for k, n in st.deployed.containers.items()}


def _all_healthy(st: Stack) -> None:
    bad = {k: (s["status"], s["health"]) for k, s in _snapshot(st).items()
           if not (s["running"] and s["health"] == "healthy")}
    assert not bad, f"containers not running and healthy: {bad}"


def _wait_healthy(st: Stack, before: dict[str, dict[str, Any]], restarted: Iterable[str],
                  timeout_s: float = HEALTHY_WITHIN_S) -> float:
    """Wait until every container runs and is healthy, and each of `restarted` was
    started again since `before`. Returns the seconds waited."""
    restarted = set(restarted)
    t0 = time.monotonic()
    while True:
        now = _snapshot(st)
        pending = {k: (s["status"], s["health"]) for k, s in now.items()
                   if not (s["running"] and s["health"] == "healthy")
                   or (k in restarted and s["started"] == before[k]["started"])}
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            logs = "\n".join(f"--- {st.deployed.containers[k]} ---\n"
                             f"{replay.container_logs(st.deployed.containers[k])}"
                             for k in pending)
            raise AssertionError(f"not back within {timeout_s} s: {pending}\n{logs}")
        time.sleep(0.25)


def _exec(name: str, cmd: list[str]) -> str:
    api = replay.api()
    ex = api.exec_create(name, cmd)
    out = api.exec_start(ex["Id"]).decode(errors="replace")
    code = api.exec_inspect(ex["Id"])["ExitCode"]
    assert code == 0, f"{name}: {cmd} exited {code}: {out}"
    return out


def _put_file(name: str, path: str, content: str, mode: int = 0o644) -> None:
    """Write one file into a container (running or not), root-owned."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.mtime = len(data), mode, time.time()
        tar.addfile(info, io.BytesIO(data))
    assert replay.api().put_archive(name, "/", buf.getvalue()), f"{name}: could not write {path}"


def _registered_upload(st: Stack, key: str, path: str) -> dict[str, Any]:
    name = st.deployed.containers[key]
    res = next(r for r in st.deployed.capture.containers if r.plain["name"] == name)
    return next(u for u in res.plain["uploads"] if u["file"] == path)


def _no_changes(plan: replay.StepPlan) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {s.docker_name: (s.action, s.changed) for s in plan.steps if s.action != replay.SAME}


# --- one fault under traffic ----------------------------------------------------


@dataclass
class Outcome:
    traffic: Traffic
    recovered_at: float  # time.monotonic() when the stack was back (fault-specific)
    down: dict[str, float]  # endpoint class -> seconds unavailable
    details: dict[str, Any]


def under_traffic(st: Stack, title: str, fault: Callable[[], tuple[float, dict[str, Any]]]
                  ) -> Outcome:
    """Start Traffic, wait for BEFORE acknowledged messages, run `fault` (in a
    thread; it injects the fault, waits until the stack is back and returns that
    moment and what it measured; "_" keys are not printed), then wait for AFTER
    more; stop. Checks: no
    acknowledged message lost or stored twice, every acknowledged message reached
    Bob's /sync (those after the recovery, if his timeline had a gap), every
    container healthy."""
    alice = st.clients["alice"]
    traffic = Traffic(alice, st.clients["bob"], st.room_id, st.deployed.nginx_url,
                      st.deployed.federation_url, ssl_context=st.recorder.ssl)

    async def go() -> tuple[float, dict[str, Any]]:
        await traffic.start()
        try:
            await traffic.wait_acked(BEFORE)
            recovered_at, details = await asyncio.to_thread(fault)
            after = [t for t, at in traffic.acked_at.items() if at > recovered_at]
            await traffic.wait_acked(len(traffic.acked) - len(after) + AFTER, timeout_s=240)
            # Every acknowledged message reaches Bob's /sync: all of them while his
            # timeline had no gap (a limited sync skips events by design; a client
            # would paginate), else those acknowledged after the recovery.
            later = {traffic.acked[t][0] for t, at in traffic.acked_at.items()
                     if at > recovered_at}
            every = {b for b, _ in traffic.acked.values()}

            def unseen() -> set[str]:
                return (every if traffic.gaps == 0 else later) - set(traffic.seen)

            end = time.monotonic() + SEEN_WITHIN_S
            while unseen() and time.monotonic() < end:
                await asyncio.sleep(0.25)
        except BaseException:
            await traffic.stop(abandon=True)  # report this, not a send still retrying
            raise
        await traffic.stop()
        missing = sorted(unseen())
        assert not missing, (f"{title}: {len(missing)} acknowledged messages never reached "
                             f"Bob's /sync ({traffic.gaps} gaps; {len(later)} sent after the "
                             f"recovery): {missing[:5]}")
        events = await messages_backwards(alice, st.room_id, max_pages=200)
        ids = {e.event_id for e in events}
        lost = {t: v for t, v in traffic.acked.items() if v[1] not in ids}
        assert not lost, f"{title}: acknowledged messages lost: {lost}"
        got = Counter(bodies(events, traffic.prefix))
        dupes = {b: n for b, n in got.items() if n > 1}
        assert not dupes, f"{title}: messages stored more than once: {dupes}"
        assert set(got) == {b for b, _ in traffic.acked.values()}, \
            f"{title}: unexpected messages: {set(got) ^ {b for b, _ in traffic.acked.values()}}"
        return recovered_at, details

    recovered_at, details = st.run(go())
    _all_healthy(st)
    down = traffic.unavailable_seconds()
    # Keys starting with "_" are for the test's own checks, not the summary.
    summary = {"stack": st.name, "fault": title, **{k: v for k, v in details.items() if not k.startswith("_")},
               "messages": len(traffic.acked),
               "failed_sends": traffic.failed_sends, "sync_gaps": traffic.gaps,
               "unavailable_s": down}
    print(f"\n{st.name}: fault: {json.dumps(summary)}")
    record(f"{st.name}: {title}: longest unavailable class (" + ", ".join(
        f"{c} {s:.1f} s" for c, s in down.items()) + ")", max(down.values()))
    RESULTS.append(summary)
    return Outcome(traffic, recovered_at, down, details)


# --- the faults -------------------------------------------------------------------


@on("dev", "prod")
def test_fault_postgres_restarted(stack: Stack):
    """`docker restart` of Postgres: Synapse's connection pools reconnect (no Synapse
    process restarts), and nothing acknowledged is lost."""
    _all_healthy(stack)
    pg = stack.deployed.containers["postgres"]

    def fault():
        before = _snapshot(stack)
        t0 = time.monotonic()
        replay.api().restart(pg)
        restarted = time.monotonic()
        _wait_healthy(stack, before, ["postgres"])
        return time.monotonic(), {"docker_restart_s": round(restarted - t0, 1),
                                  "healthy_after_s": round(time.monotonic() - t0, 1),
                                  "_before": before}

    out = under_traffic(stack, "postgres restarted", fault)
    before = out.details["_before"]
    after = _snapshot(stack)
    assert after["postgres"]["started"] != before["postgres"]["started"]
    died = {k: (before[k]["pid"], after[k]["pid"]) for k in stack.synapse()
            if after[k]["pid"] != before[k]["pid"]}
    assert not died, f"Synapse processes restarted instead of reconnecting: {died}"


def _redis_clients(redis: str) -> int:
    """Connections Redis has, besides the redis-cli asking (0 while it is down)."""
    try:
        out = _exec(redis, ["redis-cli", "-s", REDIS_SOCKET, "client", "list"])
    except (AssertionError, docker.errors.APIError):
        return 0
    return sum(1 for line in out.splitlines()
               if line.startswith("id=") and "cmd=client" not in line)


@on("dev", "prod")
def test_fault_redis_restarted(stack: Stack):
    """`docker restart` of Redis: every Synapse process reconnects (as many Redis
    clients as before), none restarts, and replication over Redis works again:
    messages persisted by the events writer after the restart reach Bob's /sync
    on client_sync (checked for every fault by under_traffic)."""
    _all_healthy(stack)
    redis = stack.deployed.containers["redis"]
    clients_before = _redis_clients(redis)
    assert clients_before >= len(stack.synapse()), \
        f"{clients_before} Redis clients for {len(stack.synapse())} Synapse processes"

    def fault():
        before = _snapshot(stack)
        t0 = time.monotonic()
        replay.api().restart(redis)
        restarted = time.monotonic()
        while (n := _redis_clients(redis)) < clients_before:
            assert time.monotonic() - restarted < 120, \
                f"only {n} of {clients_before} Redis clients came back"
            time.sleep(0.1)
        clients_back = time.monotonic()
        _wait_healthy(stack, before, ["redis"])
        return time.monotonic(), {"docker_restart_s": round(restarted - t0, 1),
                                  "clients_back_after_s": round(clients_back - t0, 1),
                                  "redis_healthy_after_s": round(time.monotonic() - t0, 1),
                                  "redis_clients": clients_before, "_before": before}

    out = under_traffic(stack, "redis restarted", fault)
    before = out.details["_before"]
    after = _snapshot(stack)
    assert after["redis"]["started"] != before["redis"]["started"]
    died = {k: (before[k]["pid"], after[k]["pid"]) for k in stack.synapse()
            if after[k]["pid"] != before[k]["pid"]}
    assert not died, f"Synapse processes restarted instead of reconnecting: {died}"
    assert _redis_clients(redis) == clients_before


def _ctimes(container: str, directory: str) -> dict[str, float]:
    """File name -> inode change time (epoch seconds), for every file in a
    directory of a container. (Not inode numbers: ext4 under overlayfs hands a
    just-freed one out again.)"""
    out = _exec(container, ["find", directory, "-mindepth", "1", "-maxdepth", "1",
                            "-printf", r"%f %C@\n"])
    return {name: float(t) for name, t in (line.rsplit(" ", 1) for line in out.splitlines())}


@on("dev")
def test_fault_every_container_killed_at_once(stack: Stack):
    """SIGKILL to every container's process at once (a crash of everything, not
    `docker kill`, which cancels the restart policy). Docker restarts each by its
    policy; the sockets, their `.lock` files and Postgres' postmaster.pid left
    behind must not block start-up. A witness container keeps the sockets tmpfs
    mounted throughout, so the stale files are really there when the processes
    start again (with no container left mounting it, Docker would unmount the
    tmpfs and the files would be gone). Afterwards `up` plans no change."""
    _all_healthy(stack)
    d = stack.deployed
    api = replay.api()
    prefix = d.outputs["namePrefix"]
    sockets_volume = f"{prefix}-sockets"
    witness = f"{prefix}-fault-witness"
    nginx_image = api.inspect_container(d.containers["nginx"])["Config"]["Image"]
    try:
        api.remove_container(witness, force=True)
    except docker.errors.NotFound:
        pass
    api.create_container(nginx_image, name=witness, entrypoint=["sleep", "infinity"],
                         network_disabled=True,
                         host_config=api.create_host_config(
                             binds={sockets_volume: {"bind": SOCKET_DIR, "mode": "rw"}},
                             network_mode="none"))
    api.start(witness)
    marker = ".fault-witness"  # no process makes it: it survives only if the volume does
    try:
        _exec(witness, ["touch", f"{SOCKET_DIR}/{marker}"])
        stale = _ctimes(witness, SOCKET_DIR)
        sockets = [s for k in stack.synapse() for s in
                   (f"synapse_inbound_{k}.sock", f"synapse_replication_{k}.sock")
                   if s in stale]
        want = {f"{s}.lock" for s in sockets} | {"synapse_redis.sock", ".s.PGSQL.5432",
                                                 ".s.PGSQL.5432.lock"}
        assert sockets and want <= set(stale), f"sockets missing before the kill: {want - set(stale)}"
        pidfile = _exec(d.containers["postgres"], ["head", "-n1", POSTMASTER_PID]).strip()
        assert pidfile == "1", pidfile
        # In nginx's own filesystem (kept across its restarts): its health socket.
        nginx_stale = _ctimes(d.containers["nginx"], str(Path(HEALTH_SOCKET).parent))
        assert Path(HEALTH_SOCKET).name in nginx_stale, nginx_stale

        def fault():
            before = _snapshot(stack)
            t0, killed_at = time.monotonic(), time.time()
            for key, s in before.items():
                os.kill(s["pid"], signal.SIGKILL)
            _wait_healthy(stack, before, before)
            return time.monotonic(), {"healthy_after_s": round(time.monotonic() - t0, 1),
                                      "containers": len(before), "_before": before,
                                      "_killed_at": killed_at}

        out = under_traffic(stack, "every container killed at once", fault)
        before = out.details["_before"]
        after = _snapshot(stack)
        again = {k: (s["restarts"] - before[k]["restarts"]) for k, s in after.items()}
        assert all(n >= 1 for n in again.values()), f"not restarted by the policy: {again}"
        assert {k: s["id"] for k, s in after.items()} == {k: s["id"] for k, s in before.items()}
        fresh = _ctimes(witness, SOCKET_DIR)
        # The volume was never emptied (the marker survived), so the restarted
        # processes met every stale socket and lock file, and made each anew.
        killed_at = out.details["_killed_at"]
        assert fresh.get(marker) == stale[marker], "the sockets volume was emptied"
        old = sorted(f for f in want if fresh[f] < killed_at)
        assert not old, f"stale files were not replaced: {old}"
        health = Path(HEALTH_SOCKET)
        assert nginx_stale[health.name] < killed_at
        assert _ctimes(d.containers["nginx"], str(health.parent))[health.name] > killed_at, \
            "nginx's health socket was not made anew"
        assert _exec(d.containers["postgres"], ["head", "-n1", POSTMASTER_PID]).strip() == "1"
        assert _ctimes(d.containers["postgres"], POSTGRES_DATA)["postmaster.pid"] > killed_at, \
            "Postgres did not write its pid file anew"
        print(f"\n{stack.name}: restarts per container after the kill: {json.dumps(again)}")
    finally:
        api.exec_start(api.exec_create(witness, ["rm", "-f", f"{SOCKET_DIR}/{marker}"])["Id"])
        api.remove_container(witness, force=True)
    # A deploy afterwards has nothing to do.
    again_up = replay.up(stack.config, stack.overrides)
    assert _no_changes(again_up.plan) == {}, f"up after the kill planned changes: " \
                                             f"{_no_changes(again_up.plan)}"
    assert again_up.ids == d.ids
    stack.deployed = again_up


@on("dev")
def test_fault_docker_engine_restarted(stack: Stack):
    """The Docker engine stopped cleanly and started again (host_setup.sh
    --restart-engine): every container comes back by its restart policy and turns
    healthy, with the same container IDs and no deploy; a refresh then plans
    nothing, and the egress DROP rule is still in force."""
    _all_healthy(stack)
    ids = dict(stack.deployed.ids)

    def fault():
        before = _snapshot(stack)
        t0 = time.monotonic()
        run = subprocess.run(["bash", str(HOST_SETUP), "--restart-engine"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"host_setup.sh --restart-engine failed:\n{run.stderr}"
        print(f"\n{run.stderr.strip()}")
        engine_back = time.monotonic()
        _wait_healthy(stack, before, before)
        return time.monotonic(), {"engine_restart_s": round(engine_back - t0, 1),
                                  "healthy_after_s": round(time.monotonic() - t0, 1),
                                  "_before": before}

    out = under_traffic(stack, "docker engine restarted", fault)
    before = out.details["_before"]
    after = _snapshot(stack)
    assert {k: s["id"] for k, s in after.items()} == {k: s["id"] for k, s in before.items()}
    assert all(after[k]["started"] != before[k]["started"] for k in after)
    # host_setup.sh --restart-engine checked the rule without re-adding it; so does this.
    print(f"\n{stack.name}: after the engine restart: {replay.check_isolation()}")
    preview = replay_engine.up(stack.config, stack.overrides, dry_run=True)
    assert _no_changes(preview.plan) == {}, \
        f"refresh after the engine restart planned changes: {_no_changes(preview.plan)}"
    assert {n: replay.api().inspect_container(n)["Id"] for n in ids} == ids


@on("dev")
def test_fault_one_worker_crash_looping(stack: Stack):
    """One worker (media1) crash-loops: its config file in the container gets a
    YAML error (an operator's hand edit), and the process is killed. Docker keeps
    restarting it, it keeps failing; meanwhile main serves media (nginx's fallback:
    main keeps the media repository) and every endpoint class, media included,
    serves without a single failed probe. The file is put back as registered, and
    the worker comes back healthy on the policy's next restart."""
    _all_healthy(stack)
    key = stack.deployed.by_class("media")[0]
    crashing_class = "media"
    name = stack.deployed.containers[key]
    path = worker_config_path(key)
    upload = _registered_upload(stack, key, path)
    broken = upload["content"] + "worker_listeners: [\n"  # an unclosed flow sequence

    def fault():
        before = _snapshot(stack)
        _put_file(name, path, broken)
        t0 = time.monotonic()
        os.kill(before[key]["pid"], signal.SIGKILL)
        healthy_seen = False
        while time.monotonic() - t0 < CRASH_LOOP_S:
            s = _state(name)
            healthy_seen |= s["started"] != before[key]["started"] and s["health"] == "healthy"
            time.sleep(0.25)
        looping = _state(name)
        logs = replay.container_logs(name, tail=20)
        _put_file(name, path, upload["content"])  # the operator reverts the edit
        t1 = time.monotonic()
        # Healthy is enough: a start already under way when the file was put back
        # reads the good file and never crashes (a race seen once), and a start
        # that read the broken file never turns healthy.
        _wait_healthy(stack, {key: looping}, [])
        return time.monotonic(), {
            "crash_loop_s": CRASH_LOOP_S, "restarts_while_looping":
                looping["restarts"] - before[key]["restarts"],
            "healthy_after_revert_s": round(time.monotonic() - t1, 1),
            "healthy_during_loop": healthy_seen, "_logs": logs, "_before": before}

    out = under_traffic(stack, f"{key} crash-looping", fault)
    before, logs = out.details["_before"], out.details["_logs"]
    assert not out.details["healthy_during_loop"], f"{key} turned healthy with a broken config"
    assert out.details["restarts_while_looping"] >= 3, \
        f"{key} did not crash-loop: {out.details}\n{logs}"
    assert "worker_listeners" in logs or "Error" in logs, logs
    assert set(out.down.values()) == {0.0}, \
        f"a class failed while {key} crash-looped (main should serve {crashing_class}): {out.down}"
    assert out.traffic.failed_sends == 0, "sends failed while only the media worker was down"
    after = _snapshot(stack)
    moved = {k: (before[k]["pid"], after[k]["pid"]) for k in after
             if k != key and after[k]["pid"] != before[k]["pid"]}
    assert not moved, f"other containers restarted: {moved}"
    assert _exec(name, ["cat", path]) == upload["content"]
