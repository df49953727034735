"""Serving (issue 11, items 4 and 5): a load generator with a real Matrix client
(matrix-nio) through nginx against `monolith`, `specialized` and `large`, deployed
one after another on this machine through the replay harness.

For each preset: deploy from empty (stack `bench-serving-<preset>`), register N
users with the shared-secret admin API, put them in M public rooms, then
  - idle window: no client request at all; CPU of every container (what each
    process costs doing nothing: replication, Redis pub/sub, background loops);
  - one healthcheck probe's cost (the container's own healthcheck command run by
    `docker exec`), in the container and in the Docker engine;
  - fixed load: every user sends at the same offered rate (open loop: a send is
    started on schedule, at most MAX_IN_FLIGHT per user) and long-polls /sync;
    messages per second, send-to-sync latency, CPU per class and of the Docker
    engine, resident memory, Redis commands and bytes, replication HTTP requests
    and the CPU each Synapse process attributes to its own work (its metrics);
  - steps (full mode): higher offered rates, to see where each preset saturates;
and tear down with delete_data in `finally`.

Latency is measured per (message, receiving member): from the moment the sender
starts the PUT /send request to the moment the receiver's /sync response holding
the event has arrived ("send start"). The same from the sender's 200 ("ack") is
kept too; it can be negative when the receiver's sync returns before the sender
has its answer.

CPU is each container's cgroup v1 `cpuacct.usage` (nanoseconds of CPU, all
threads, user + system), read from the host at the edges of each window; on
another cgroup layout, Docker's stats API (`cpu_stats.cpu_usage.total_usage`,
the same counter). The load generator runs on the same two cores: its own CPU
(time.process_time) and the host's busy time (/proc/stat) are reported beside.

Run alone: .venv/bin/python -m benchmarks.bench_serving [--quick] [--preset P ...]
(creates containers: run under `flock /tmp/e2e.lock`). It writes
benchmarks/results/serving.json, the plots and the generated block of the
docs/sizing.md; `--report-only` redoes those from the JSON; an
experiment (`--set workers.sender=1 --out other.json`) only prints its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from benchmarks import stats
from benchmarks.bench_deploy import PORTS, stack_file as bench_stack_file
from components.plan.workers import CLASS_NAMES, MAIN

NAME = "serving"
TITLE = "Serving: messages per second and send-to-sync latency"

PRESETS = ("monolith", "specialized", "large")
STACK_PREFIX = "bench-serving-"
# Ports of no other stack (dev 8008, prod 18008, the tests'), on loopback.
SERVER_NAME = "bench.localhost"
MAX_IN_FLIGHT = 2  # per user: beyond that an offered send is counted as not sent
SYNC_TIMEOUT_MS = 30_000  # the long poll, as Element uses
DRAIN_S = 5.0  # after a window, how long deliveries of its messages are awaited
WARMUP_S = 3.0
# A rate is kept up with while at least 90% of the offered messages arrive and the
# p95 send-to-sync latency stays under half a second (beyond, messages queue).
SATURATED = 0.9
KEEPS_UP_P95_MS = 500.0


def saturated(window: Mapping[str, Any]) -> bool:
    p95 = window["latency_ms_from_send_start"]["p95"]
    return (window["delivered_per_s"] < SATURATED * window["offered_per_s"]
            or p95 is None or p95 > KEEPS_UP_P95_MS)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / f"{NAME}.json"

# Synapse's default rate limits (rc_message 0.2/s, burst 10) would measure the
# limiter, not the server; every preset gets the same generous ones.
RATE_LIMITS = {
    "rc_message": {"per_second": 10000, "burst_count": 10000},
    "rc_joins": {"local": {"per_second": 1000, "burst_count": 1000}},
    "rc_room_creation": {"per_second": 1000, "burst_count": 1000},
}


@dataclass(frozen=True)
class Load:
    users: int
    rooms: int
    rate: float  # messages per second offered by all users together (fixed load)
    window_s: float
    idle_s: float
    steps: tuple[float, ...]  # offered total rates above the fixed one
    step_s: float


FULL = Load(users=20, rooms=5, rate=10.0, window_s=30, idle_s=15, steps=(20.0, 40.0), step_s=20)
QUICK = Load(users=6, rooms=2, rate=6.0, window_s=12, idle_s=8, steps=(), step_s=0)


# --- statistics ----------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    """stats.percentile, None without values."""
    return stats.percentile(values, q) if values else None


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": (None if (v := _percentile(values, q)) is None else round(v * 1000, 1))
            for q in (50, 95, 99)}


# --- the stack ---------------------------------------------------------------------


def stack_file(preset: str, directory: Path, extra: Mapping[str, Any] | None = None) -> Path:
    """A bench stack file (bench_deploy's) with this benchmark's server name, no
    served-by header, and the rate limits raised."""
    return bench_stack_file(directory, f"{STACK_PREFIX}{preset}", preset, {
        "serverName": SERVER_NAME,
        "nginx": {"bindAddress": "127.0.0.1", **PORTS},
        "extraConfig": {**RATE_LIMITS, **(extra or {})},
    })


# --- CPU and the other counters ------------------------------------------------------


def _cgroup_usage_ns(container_id: str) -> int | None:
    for p in (f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage",
              f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage"):
        try:
            return int(Path(p).read_text())
        except OSError:
            continue
    return None


def cpu_ns(ids: Mapping[str, str]) -> dict[str, int]:
    """Container name -> CPU nanoseconds used so far."""
    from tests.e2e.replay import api

    out = {}
    for name, cid in ids.items():
        ns = _cgroup_usage_ns(cid)
        if ns is None:  # not cgroup v1 cgroupfs: Docker's stats API, one sample
            stats = api().stats(cid, stream=False, one_shot=True)
            ns = int(stats["cpu_stats"]["cpu_usage"]["total_usage"])
        out[name] = ns
    return out


def host_busy_s() -> float:
    """CPU seconds the whole host spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


ENGINE_PROCESSES = ("dockerd", "containerd", "containerd-shim")  # comm is cut at 15 characters


def engine_cpu_s() -> float:
    """CPU seconds of the Docker engine so far: dockerd, containerd and the
    per-container shims, with their reaped children (runc for every exec, such as a
    healthcheck probe, and every container start). It is not in any container's
    cgroup."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        if comm in ENGINE_PROCESSES:
            f = text[text.rindex(")") + 2:].split()
            total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def memory_mib(ids: Mapping[str, str]) -> dict[str, float]:
    """Container name -> resident memory (cgroup v1 memory.stat total_rss), MiB."""
    out = {}
    for name, cid in ids.items():
        try:
            stat = Path(f"/sys/fs/cgroup/memory/docker/{cid}/memory.stat").read_text()
        except OSError:
            continue
        rss = dict(line.split() for line in stat.splitlines()).get("total_rss")
        if rss is not None:
            out[name] = round(int(rss) / 2**20, 1)
    return out


def probes_since(ids: Mapping[str, str], wall_t0: float) -> dict[str, int]:
    """Healthcheck probes Docker ran in each container since wall_t0 (from
    State.Health.Log, which keeps the last five: a lower bound for a container
    probed more often than every window/5 s)."""
    from datetime import datetime

    from tests.e2e.replay import api

    out = {}
    for name, cid in ids.items():
        log = ((api().inspect_container(cid).get("State") or {}).get("Health") or {}).get("Log") or []
        n = 0
        for entry in log:
            start = entry.get("Start", "")
            m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", start)
            if not m:
                continue
            t = datetime.fromisoformat(m.group(1) + "+00:00").timestamp() \
                + float(m.group(2) or 0)
            n += t >= wall_t0
        out[name] = n
    return out


def log_lines(ids: Mapping[str, str], wall: list[float]) -> dict[str, int]:
    """Lines each container wrote to stdout/stderr (what dockerd's log driver
    stores) in the window, to whole seconds."""
    from tests.e2e.replay import api

    return {name: len(api().logs(cid, stdout=True, stderr=True, since=int(wall[0]),
                                 until=int(wall[1]) + 1).splitlines())
            for name, cid in ids.items()}


PROBE_SAMPLES = 10


def probe_cost(container_id: str) -> dict[str, float] | None:
    """What one healthcheck probe costs, measured by running the container's own
    healthcheck command PROBE_SAMPLES times with `docker exec` (what dockerd does
    for a probe: an exec through containerd and runc): CPU in the container's
    cgroup and in the engine, milliseconds per probe, and Docker's interval."""
    from tests.e2e.replay import api

    c = api()
    hc = (c.inspect_container(container_id)["Config"].get("Healthcheck") or {})
    test = hc.get("Test") or []
    if not test or test[0] not in ("CMD", "CMD-SHELL"):
        return None
    cmd = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    ids = {"c": container_id}
    cpu0, eng0 = cpu_ns(ids)["c"], engine_cpu_s()
    for _ in range(PROBE_SAMPLES):
        c.exec_start(c.exec_create(container_id, cmd)["Id"])
    cpu1, eng1 = cpu_ns(ids)["c"], engine_cpu_s()
    return {"container_ms": round((cpu1 - cpu0) / 1e6 / PROBE_SAMPLES, 2),
            "engine_ms": round((eng1 - eng0) * 1e3 / PROBE_SAMPLES, 2),
            "interval_s": hc.get("Interval", 0) / 1e9}


def _exec(container: str, cmd: list[str]) -> str:
    from tests.e2e.replay import api

    c = api()
    ex = c.exec_create(container, cmd, stdout=True, stderr=True)
    return c.exec_start(ex["Id"]).decode(errors="replace")


def redis_counters(container: str) -> dict[str, Any]:
    """Redis' own counters: commands by name (calls), bytes in and out, and the
    pub/sub channels with their subscriber counts."""
    from components.plan.topology import REDIS_SOCKET

    cli = ["redis-cli", "-s", REDIS_SOCKET]
    calls: dict[str, int] = {}
    for line in _exec(container, [*cli, "INFO", "commandstats"]).splitlines():
        m = re.match(r"cmdstat_([\w|]+):calls=(\d+)", line)
        if m:
            calls[m.group(1)] = int(m.group(2))
    stats = {}
    for line in _exec(container, [*cli, "INFO", "stats"]).splitlines():
        k, _, v = line.strip().partition(":")
        if k in ("total_net_input_bytes", "total_net_output_bytes", "total_commands_processed"):
            stats[k] = int(v)
    channels = _exec(container, [*cli, "PUBSUB", "CHANNELS"]).split()
    subs: dict[str, int] = {}
    if channels:
        out = _exec(container, [*cli, "PUBSUB", "NUMSUB", *channels]).split()
        subs = {out[i]: int(out[i + 1]) for i in range(0, len(out) - 1, 2)}
    return {"calls": calls, **stats, "subscribers": subs}


_SAMPLE = re.compile(r'^(synapse_\w+?)(?:_total)?\{([^}]*)\}\s+([0-9.e+-]+)$', re.M)
# Counter -> (label naming the work, key prefix): CPU Synapse itself attributes, per
# background process (synapse/metrics/background_process_metrics.py), per
# Measure() block (synapse/util/metrics.py) and per servlet (synapse/http/request_metrics.py).
_CPU_METRICS = {
    "synapse_background_process_ru_utime_seconds": ("name", "bg"),
    "synapse_background_process_ru_stime_seconds": ("name", "bg"),
    "synapse_util_metrics_block_ru_utime_seconds": ("block_name", "block"),
    "synapse_util_metrics_block_ru_stime_seconds": ("block_name", "block"),
    "synapse_http_server_response_ru_utime_seconds": ("servlet", "http"),
    "synapse_http_server_response_ru_stime_seconds": ("servlet", "http"),
}


def process_metrics(container: str) -> dict[str, dict[str, float]]:
    """From a Synapse process' metrics listener (port 9000 inside its container):
    replication HTTP requests it served by servlet, and the CPU seconds it
    attributes to each background process, Measure block and servlet."""
    from components.plan.topology import METRICS_PORT

    text = _exec(container, ["curl", "-s", f"http://127.0.0.1:{METRICS_PORT}/_synapse/metrics"])
    http: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for metric, labels, value in _SAMPLE.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if metric == "synapse_http_server_requests_received" \
                and lab.get("servlet", "").startswith("Replication"):
            http[lab["servlet"]] = http.get(lab["servlet"], 0) + float(value)
        elif metric in _CPU_METRICS:
            label, prefix = _CPU_METRICS[metric]
            key = f"{prefix}:{lab.get(label, '?')}"
            cpu[key] = cpu.get(key, 0) + float(value)
    return {"replication_http": http, "cpu": cpu}


def _diff(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def redis_delta(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """Redis' counters over a window. They include our own INFO and PUBSUB calls
    (listed under their names; a few hundred bytes), not Synapse's traffic."""
    calls = _diff(after["calls"], before["calls"])
    return {"calls": calls,
            **{k: after[k] - before[k] for k in ("total_net_input_bytes",
                                                   "total_net_output_bytes",
                                                   "total_commands_processed")},
            "subscribers": after["subscribers"]}


class Window:
    """CPU of every container, the host and this process between start() and stop()."""

    def __init__(self, ids: Mapping[str, str]) -> None:
        self.ids = dict(ids)

    def start(self) -> None:
        self.t0, self.busy0, self.me0 = time.monotonic(), host_busy_s(), time.process_time()
        self.wall0, self.engine0 = time.time(), engine_cpu_s()
        self.cpu0 = cpu_ns(self.ids)
        # The engine is shared: other people's running containers (their probes) are
        # in its CPU too.
        from tests.e2e.replay import api

        mine = set(self.ids.values())
        self.others = [c["Names"][0].lstrip("/") for c in api().containers()
                       if c["Id"] not in mine]

    def stop(self) -> dict[str, Any]:
        cpu1 = cpu_ns(self.ids)
        seconds = time.monotonic() - self.t0
        engine = engine_cpu_s() - self.engine0
        return {"seconds": round(seconds, 2),
                "wall": [self.wall0, time.time()],
                "engine_cpu_s": round(engine, 2),
                "other_containers": self.others,
                "probes": probes_since(self.ids, self.wall0),
                "memory_mib": memory_mib(self.ids),
                "cpu_s": {n: round((cpu1[n] - self.cpu0[n]) / 1e9, 3) for n in self.ids},
                "host_busy_s": round(host_busy_s() - self.busy0, 2),
                "generator_cpu_s": round(time.process_time() - self.me0, 2)}


# --- the client side -----------------------------------------------------------------


@dataclass
class Member:
    name: str
    client: Any  # nio.AsyncClient
    room_id: str = ""
    next_batch: str | None = None


@dataclass
class Ledger:
    """Every message sent and every time a member's sync had it."""
    start: dict[str, float] = field(default_factory=dict)  # body -> send start (monotonic)
    ack: dict[str, float] = field(default_factory=dict)  # body -> 200 received
    room: dict[str, str] = field(default_factory=dict)  # body -> room
    sender: dict[str, str] = field(default_factory=dict)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)  # (body, member) -> time
    failed: int = 0
    skipped: int = 0  # offered but not started: MAX_IN_FLIGHT sends already pending
    sync_errors: int = 0
    errors: list[str] = field(default_factory=list)


async def register_members(admin_url: str, client_url: str, secret: str, n: int,
                           tag: str) -> list[Member]:
    import aiohttp
    import nio

    from tests.e2e.matrix_client import register

    members = []
    async with aiohttp.ClientSession() as session:
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> Member:
            name = f"load{tag}{i:02d}"
            async with sem:
                status, body = await register(session, admin_url, secret, name,
                                              secrets.token_urlsafe(12))
            if status != 200:
                raise RuntimeError(f"registering {name}: {status} {body}")
            config = nio.AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False,
                                           max_timeouts=2, max_timeout_retry_wait_time=1,
                                           request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
                                           max_limit_exceeded=0)
            client = nio.AsyncClient(client_url, user=body["user_id"],
                                     device_id=body["device_id"], config=config)
            client.access_token, client.user_id = body["access_token"], body["user_id"]
            return Member(name, client)

        members = list(await asyncio.gather(*(one(i) for i in range(n))))
    return members


async def make_rooms(members: list[Member], rooms: int) -> None:
    import nio

    for r in range(rooms):
        group = members[r::rooms]
        resp = await group[0].client.room_create(preset=nio.RoomPreset.public_chat,
                                                 name=f"load {r}")
        if not isinstance(resp, nio.RoomCreateResponse):
            raise RuntimeError(f"createRoom: {resp}")
        for m in group:
            m.room_id = resp.room_id
        for m in group[1:]:
            j = await m.client.join(resp.room_id)
            if not isinstance(j, nio.JoinResponse):
                raise RuntimeError(f"join: {j}")
    # An initial sync each: the load's syncs are all incremental.
    await asyncio.gather(*(sync_once(m, Ledger(), 0) for m in members))


SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}


async def sync_once(m: Member, ledger: Ledger, timeout_ms: int) -> None:
    import nio

    resp = await m.client.sync(timeout=timeout_ms, since=m.next_batch, sync_filter=SYNC_FILTER)
    now = time.monotonic()
    if not isinstance(resp, nio.SyncResponse):
        ledger.sync_errors += 1
        if len(ledger.errors) < 10:
            ledger.errors.append(f"sync: {resp}")
        await asyncio.sleep(0.2)
        return
    for room in resp.rooms.join.values():
        for e in room.timeline.events:
            body = getattr(e, "body", None)
            if body and e.sender != m.client.user_id:
                ledger.seen.setdefault((body, m.name), now)
    m.next_batch = resp.next_batch


async def sync_loop(m: Member, ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await sync_once(m, ledger, SYNC_TIMEOUT_MS)
        except Exception as e:  # noqa: BLE001 - a connection error counts, the loop goes on
            ledger.sync_errors += 1
            if len(ledger.errors) < 10:
                ledger.errors.append(f"sync: {e!r}")
            await asyncio.sleep(0.2)


async def send_one(m: Member, ledger: Ledger, body: str) -> None:
    import nio

    ledger.start[body], ledger.room[body], ledger.sender[body] = time.monotonic(), m.room_id, m.name
    try:
        resp = await m.client.room_send(m.room_id, "m.room.message",
                                        {"msgtype": "m.text", "body": body})
    except Exception as e:  # noqa: BLE001
        resp = e
    if isinstance(resp, nio.RoomSendResponse):
        ledger.ack[body] = time.monotonic()
    else:
        ledger.failed += 1
        if len(ledger.errors) < 10:
            ledger.errors.append(f"send: {resp!r}"[:300])


async def send_loop(m: Member, ledger: Ledger, rate: float, until: float, tag: str,
                    phase: float) -> None:
    """Open loop: the k-th send is due at t0 + phase + k / rate, whatever the
    server's answers; a due send with MAX_IN_FLIGHT pending is skipped (counted)."""
    pending: set[asyncio.Task] = set()
    t0, k = time.monotonic() + phase, 0
    while True:
        due = t0 + k / rate
        if due >= until:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        pending = {t for t in pending if not t.done()}
        if len(pending) >= MAX_IN_FLIGHT:
            ledger.skipped += 1
        else:
            pending.add(asyncio.create_task(send_one(m, ledger, f"{tag} {m.name} {k}")))
        k += 1
    if pending:
        await asyncio.wait(pending, timeout=60)


def summarise(ledger: Ledger, members: list[Member], t0: float, t1: float,
              offered: float) -> dict[str, Any]:
    """Figures for the messages whose send started in [t0, t1)."""
    in_room: dict[str, list[str]] = {}
    for m in members:
        in_room.setdefault(m.room_id, []).append(m.name)
    bodies = [b for b, s in ledger.start.items() if t0 <= s < t1]
    from_start, from_ack, delivered, expected, complete = [], [], 0, 0, 0
    for b in bodies:
        receivers = [n for n in in_room[ledger.room[b]] if n != ledger.sender[b]]
        expected += len(receivers)
        got = 0
        for n in receivers:
            seen = ledger.seen.get((b, n))
            if seen is None:
                continue
            got += 1
            from_start.append(seen - ledger.start[b])
            if b in ledger.ack:
                from_ack.append(seen - ledger.ack[b])
        delivered += got
        complete += got == len(receivers) and b in ledger.ack
    span = t1 - t0
    return {
        "offered_per_s": offered,
        "window_s": round(span, 2),
        "sent": len(bodies),
        "acked": sum(1 for b in bodies if b in ledger.ack),
        # A message counts as delivered when every other member of its room saw it.
        "delivered_per_s": round(complete / span, 2),
        "deliveries_per_s": round(delivered / span, 2),  # (message, receiver) pairs
        "deliveries_missing": expected - delivered,
        "latency_ms_from_send_start": _pcts(from_start),
        "latency_ms_from_ack": _pcts(from_ack),
        "samples": len(from_start),
    }


async def drive(members: list[Member], rate: float, seconds: float, tag: str,
                ledger: Ledger, window: Window | None) -> dict[str, Any]:
    """Everyone syncs; everyone sends rate/len(members) messages per second for
    WARMUP_S + seconds; figures for the `seconds` after the warm-up."""
    stop = asyncio.Event()
    syncs = [asyncio.create_task(sync_loop(m, ledger, stop)) for m in members]
    per_user = rate / len(members)
    begin = time.monotonic()
    until = begin + WARMUP_S + seconds
    senders = [asyncio.create_task(send_loop(m, ledger, per_user, until, tag,
                                             phase=i / rate))
               for i, m in enumerate(members)]
    await asyncio.sleep(WARMUP_S)
    t0 = time.monotonic()
    if window:
        window.start()
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    t1 = time.monotonic()
    cpu = window.stop() if window else None
    await asyncio.gather(*senders)
    await asyncio.sleep(DRAIN_S)  # the last messages reach the syncs
    stop.set()
    # A long poll ends on the next event or its timeout: do not wait for it.
    for t in syncs:
        t.cancel()
    await asyncio.gather(*syncs, return_exceptions=True)
    out = summarise(ledger, members, t0, t1, rate)
    out["failed_sends"], out["skipped_sends"] = ledger.failed, ledger.skipped
    out["sync_errors"], out["errors"] = ledger.sync_errors, ledger.errors[:5]
    if cpu:
        out["cpu"] = cpu
    return out


# --- one preset ----------------------------------------------------------------------


def _classes(deployed) -> dict[str, str]:
    """Docker container name -> class (main, a worker class, postgres, redis, nginx)."""
    return {deployed.containers[k]: c for k, c in deployed.classes.items()
            if deployed.containers[k] in deployed.ids}


def by_class(cpu_s: Mapping[str, float], classes: Mapping[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, s in cpu_s.items():
        out[classes[name]] = round(out.get(classes[name], 0.0) + s, 3)
    return out


def _synapse(deployed) -> dict[str, str]:
    """Process key -> container name, Synapse processes only."""
    return {k: deployed.containers[k] for k in deployed.synapse
            if deployed.containers[k] in deployed.ids}


async def serve(deployed, load: Load) -> dict[str, Any]:
    classes = _classes(deployed)
    ids = {n: deployed.ids[n] for n in classes}
    redis = deployed.containers[deployed.by_class("redis")[0]]
    synapse = _synapse(deployed)
    tag = secrets.token_hex(2)
    t = time.monotonic()
    members = await register_members(deployed.admin_url, deployed.nginx_url,
                                     deployed.registration_shared_secret, load.users, tag)
    await make_rooms(members, load.rooms)
    setup_s = time.monotonic() - t
    out: dict[str, Any] = {"setup_s": round(setup_s, 1), "processes": len(synapse),
                           "classes": classes}
    try:
        await asyncio.sleep(3)  # let the set-up's own work settle
        # Idle: no client request at all.
        r0 = redis_counters(redis)
        w = Window(ids)
        w.start()
        await asyncio.sleep(load.idle_s)
        idle = w.stop()
        r1 = redis_counters(redis)
        idle["cpu_by_class"] = by_class(idle["cpu_s"], classes)
        idle["redis"] = redis_delta(r1, r0)
        out["idle"] = idle
        # One probe's cost, in main and (when there is one) a worker, after the idle
        # window so that its execs are not in it.
        keys = ["main"] + [k for k in synapse if k != "main"][:1]
        out["probe_cost"] = {k: probe_cost(deployed.ids[synapse[k]]) for k in keys}

        # Fixed load, with the replication counters around it.
        rep0 = {k: process_metrics(c) for k, c in synapse.items()}
        r0 = redis_counters(redis)
        fixed = await drive(members, load.rate, load.window_s, f"f{tag}", Ledger(), Window(ids))
        r1 = redis_counters(redis)
        rep1 = {k: process_metrics(c) for k, c in synapse.items()}
        fixed["cpu"]["cpu_by_class"] = by_class(fixed["cpu"]["cpu_s"], classes)
        fixed["log_lines"] = log_lines(ids, fixed["cpu"]["wall"])
        fixed["redis"] = redis_delta(r1, r0)
        fixed["replication_http"] = {
            k: d for k in synapse
            if (d := _diff(rep1[k]["replication_http"], rep0[k]["replication_http"]))}
        # Per class: the work Synapse says its processes spent CPU on, summed.
        attributed: dict[str, dict[str, float]] = {}
        for k in synapse:
            cls = deployed.classes[k]
            for name, v in _diff(rep1[k]["cpu"], rep0[k]["cpu"]).items():
                attributed.setdefault(cls, {})[name] = attributed.get(cls, {}).get(name, 0) + v
        fixed["cpu_attributed"] = {c: dict(sorted(((n, round(v, 3)) for n, v in d.items()
                                                  if v >= 0.005), key=lambda nv: -nv[1])[:12])
                                   for c, d in attributed.items()}
        out["fixed"] = fixed
        print(f"  fixed {load.rate:g}/s: {fixed['delivered_per_s']} msgs/s delivered, "
              f"latency {fixed['latency_ms_from_send_start']} ms, cpu "
              f"{fixed['cpu']['cpu_by_class']}", flush=True)

        steps = []
        for rate in load.steps:
            step = await drive(members, rate, load.step_s, f"s{int(rate)}{tag}", Ledger(),
                               Window(ids))
            step["cpu"]["cpu_by_class"] = by_class(step["cpu"]["cpu_s"], classes)
            steps.append(step)
            print(f"  step {rate:g}/s: {step['delivered_per_s']} msgs/s delivered, "
                  f"latency {step['latency_ms_from_send_start']} ms", flush=True)
            if saturated(step):
                break  # saturated: a higher rate only queues more
        out["steps"] = steps
    finally:
        from tests.e2e.matrix_client import close_all

        await close_all(*(m.client for m in members))
    return out


def run_preset(preset: str, load: Load, directory: Path,
               overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from tests.e2e.replay import stack

    config = stack_file(preset, directory)
    t = time.monotonic()
    try:
        deployed = stack.up(config, overrides)
        deploy_s = time.monotonic() - t
        print(f"{preset}: deployed in {deploy_s:.0f} s", flush=True)
        result = asyncio.run(serve(deployed, load))
        result["deploy_s"] = round(deploy_s, 1)
        return result
    finally:
        stack.down(config, delete_data=True)


def run(quick: bool, presets: tuple[str, ...] = PRESETS,
        overrides: Mapping[str, Any] | None = None) -> dict:
    """Measure each preset in turn. `overrides` (stack config paths, as `--set`)
    apply to every preset: for experiments, whose results are labelled with them."""
    load = QUICK if quick else FULL
    out: dict[str, Any] = {
        "quick": quick,
        "load": load.__dict__ | {"steps": list(load.steps), "max_in_flight": MAX_IN_FLIGHT,
                                 "sync_timeout_ms": SYNC_TIMEOUT_MS, "warmup_s": WARMUP_S,
                                 "drain_s": DRAIN_S, "tls": False},
        "cpu_source": "cgroup v1 cpuacct.usage per container (Docker stats API elsewhere)",
        "latency_from": "send start (the PUT is issued) to the receiver's /sync response; "
                        "from_ack: from the sender's 200",
        "presets": {},
    }
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as d:
        for preset in presets:
            label = preset + "".join(f" {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
            out["presets"][label] = run_preset(preset, load, Path(d), overrides)
    out["total_s"] = round(time.monotonic() - t, 1)
    out["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return out


# --- report --------------------------------------------------------------------------


def _fmt(v: float | None, nd: int = 0) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def _cpu_cores(window: Mapping[str, Any]) -> dict[str, float]:
    """Per class: CPU seconds per second of the window (cores used)."""
    return {c: s / window["seconds"] for c, s in window["cpu_by_class"].items()}


# Synapse's classes, from the worker table; every other container is a service.
SYNAPSE_CLASSES = (MAIN, *CLASS_NAMES)


def _synapse_cores(cores: Mapping[str, float]) -> float:
    return sum(v for c, v in cores.items() if c in SYNAPSE_CLASSES)


NOISY_CORES = 0.2  # other work on the host beyond this, in a window, is called out


def other_cores(window: Mapping[str, Any]) -> float:
    """Cores the host spent on anything but the stack's containers and the load
    generator (the machine is shared: other people's work)."""
    mine = sum(window["cpu_s"].values()) + window["generator_cpu_s"] + window.get("engine_cpu_s", 0)
    return max(0.0, (window["host_busy_s"] - mine) / window["seconds"])


def markdown(result: dict, plots: list[str]) -> str:
    presets = result["presets"]
    load = result["load"]
    lines = [
        f"{load['users']} users in {load['rooms']} rooms (each room {load['users'] // load['rooms']}"
        f" members), every user sending at the same rate and long-polling `/sync` "
        f"(timeout {load['sync_timeout_ms'] // 1000} s) with matrix-nio over plain HTTP through "
        f"nginx; fixed load {load['rate']:g} messages/s offered (open loop, at most "
        f"{load['max_in_flight']} sends in flight per user) for {load['window_s']:g} s after a "
        f"{load['warmup_s']:g} s warm-up. Presets deployed one after another from empty on this "
        "machine; Synapse's message and join rate limits raised alike for all. "
        "Latency: from the start of the sender's PUT to the receiver's `/sync` response "
        "holding the event (per message and receiving member); *from ack* counts from the "
        "sender's 200 instead. CPU: each container's cgroup `cpuacct.usage` over the window, "
        "in cores (CPU seconds per second); the load generator shares the two cores and its "
        "own CPU is shown, and so is the rest of the host's busy time (/proc/stat) in the same "
        "window, other work on this shared machine.",
        "",
        "| preset | Synapse processes | deploy s | delivered msgs/s | p50 ms | p95 ms | p99 ms "
        "| p50 / p99 from ack ms | failed / skipped sends | Synapse cores | generator cores "
        "| other host load, cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, r in presets.items():
        f = r["fixed"]
        lat, ack = f["latency_ms_from_send_start"], f["latency_ms_from_ack"]
        cpu = f["cpu"]
        lines.append(
            f"| {p} | {r['processes']} | {r['deploy_s']:.0f} | {f['delivered_per_s']:.1f} of "
            f"{f['offered_per_s']:g} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | "
            f"{_fmt(lat['p99'])} | {_fmt(ack['p50'])} / {_fmt(ack['p99'])} | "
            f"{f['failed_sends']} / {f['skipped_sends']} | "
            f"{_synapse_cores(_cpu_cores(cpu)):.2f} | "
            f"{cpu['generator_cpu_s'] / cpu['seconds']:.2f} | "
            f"{other_cores(cpu):.2f} |")

    busy = {p: other_cores(r["fixed"]["cpu"]) for p, r in presets.items()}
    if any(v > NOISY_CORES for v in busy.values()):
        lines += ["", "**Disturbed:** other work on this shared machine took "
                  + ", ".join(f"{v:.2f} cores during `{p}`'s window" for p, v in busy.items()
                              if v > NOISY_CORES)
                  + f" (over {NOISY_CORES} cores): those figures are lower and slower than the "
                  "machine alone would give."]

    # CPU per class, idle and loaded.
    classes: list[str] = []
    for r in presets.values():
        for c in list(r["idle"]["cpu_by_class"]) + list(r["fixed"]["cpu"]["cpu_by_class"]):
            if c not in classes:
                classes.append(c)
    order = ["postgres", "redis", "nginx", "main"]
    classes.sort(key=lambda c: (order.index(c) if c in order else len(order), c))
    lines += ["", "CPU per class in cores, idle (no client at all) / under the fixed load:", "",
              "| class | " + " | ".join(presets) + " |", "|---|" + "---|" * len(presets)]
    for c in classes + ["Synapse total"]:
        cells = []
        for r in presets.values():
            idle, fixed = _cpu_cores(r["idle"]), _cpu_cores(r["fixed"]["cpu"])
            if c == "Synapse total":
                i, f = _synapse_cores(idle), _synapse_cores(fixed)
            else:
                i, f = idle.get(c), fixed.get(c)
            cells.append("–" if i is None and f is None else f"{_fmt(i, 3)} / {_fmt(f, 3)}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    cells = [f"{_fmt(r['idle'].get('engine_cpu_s', 0) / r['idle']['seconds'], 3)} / "
             f"{_fmt(r['fixed']['cpu'].get('engine_cpu_s', 0) / r['fixed']['cpu']['seconds'], 3)}"
             for r in presets.values()]
    if all("engine_cpu_s" in r["idle"] for r in presets.values()):
        lines.append("| Docker engine (dockerd, containerd, shims, runc) | " + " | ".join(cells)
                     + " |")
        others = [len(r["idle"].get("other_containers", [])) for r in presets.values()]
        if any(others):
            lines += ["", "The engine is shared: other people's running containers (their "
                      "healthchecks) count in its CPU too; running beside this stack in its idle "
                      "window: " + ", ".join(f"`{p}` {n}" for p, n in zip(presets, others))
                      + " other containers."]

    # Memory.
    if all(r["fixed"]["cpu"].get("memory_mib") for r in presets.values()):
        lines += ["", "Resident memory (cgroup `total_rss`) per class at the end of the fixed load, "
                  "MiB:", "", "| class | " + " | ".join(presets) + " |",
                  "|---|" + "---|" * len(presets)]
        mem = {p: by_class(r["fixed"]["cpu"]["memory_mib"], r["classes"])
               for p, r in presets.items()}
        for c in classes + ["total"]:
            cells = [(_fmt(sum(mem[p].values())) if c == "total" else
                      _fmt(mem[p].get(c))) for p in presets]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")

    # Replication: Redis and HTTP.
    lines += ["", "Replication during the fixed-load window: Redis commands (all processes "
              "together) and bytes Redis sent out, and replication HTTP requests served:", "",
              "| preset | Redis PUBLISH | Redis bytes out | subscribers per channel | replication "
              "HTTP requests | idle: Redis PUBLISH/s, bytes out/s |", "|---|---|---|---|---|---|"]
    for p, r in presets.items():
        rd, idle = r["fixed"]["redis"], r["idle"]
        http = sum(sum(v.values()) for v in r["fixed"].get("replication_http", {}).values())
        subs = max(rd["subscribers"].values(), default=0)
        lines.append(
            f"| {p} | {rd['calls'].get('publish', 0)} | {rd['total_net_output_bytes']:,} | {subs} "
            f"| {http:.0f} | {idle['redis']['calls'].get('publish', 0) / idle['seconds']:.1f}, "
            f"{idle['redis']['total_net_output_bytes'] / idle['seconds']:,.0f} |")

    if any(r.get("steps") for r in presets.values()):
        lines += ["", "Stepping up the offered rate (delivered msgs/s, p50 / p99 ms from send "
                  "start; a step under "
                  f"{SATURATED:.0%} delivered or with p95 over {KEEPS_UP_P95_MS:.0f} ms is "
                  "saturated and ends the preset's steps):", "",
                  "| preset | " + " | ".join(f"{s:g}/s offered" for s in load["steps"]) + " |",
                  "|---|" + "---|" * len(load["steps"])]
        for p, r in presets.items():
            cells = []
            for s in load["steps"]:
                st = next((x for x in r.get("steps", []) if x["offered_per_s"] == s), None)
                cells.append("not run (saturated below)" if st is None else
                             f"{st['delivered_per_s']:.1f}, {_fmt(st['latency_ms_from_send_start']['p50'])}"
                             f" / {_fmt(st['latency_ms_from_send_start']['p99'])}")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")

    lines += ["", *commentary(result), "", "Where the worker layouts' extra CPU goes:", "",
              overhead_markdown(result), "Sizing model:", "", sizing_markdown(result)]
    lines += [f"![{Path(x).stem}]({x})" for x in plots]
    return "\n".join(lines) + "\n"


def commentary(result: dict) -> list[str]:
    """What the figures say, computed from them."""
    presets = result["presets"]
    if "monolith" not in presets:
        return []
    out = []
    mono = presets["monolith"]
    m_f = mono["fixed"]
    m_syn = _synapse_cores(_cpu_cores(m_f["cpu"]))
    m_idle = _synapse_cores(_cpu_cores(mono["idle"]))
    for p, r in presets.items():
        if p == "monolith":
            continue
        f = r["fixed"]
        syn = _synapse_cores(_cpu_cores(f["cpu"]))
        idle = _synapse_cores(_cpu_cores(r["idle"]))
        lat, mlat = f["latency_ms_from_send_start"], m_f["latency_ms_from_send_start"]
        worse = [q for q in ("p50", "p95", "p99")
                 if lat[q] is not None and mlat[q] is not None and lat[q] > mlat[q]]
        out.append(
            f"- `{p}` ({r['processes']} Synapse processes) against `monolith` at the same load: "
            f"Synapse used {syn:.2f} cores against {m_syn:.2f} ({syn / m_syn:.1f}x), of which "
            f"{idle:.2f} (against {m_idle:.2f}) is what its processes cost with no client at all; "
            f"delivered {f['delivered_per_s']:.1f} against {m_f['delivered_per_s']:.1f} msgs/s; "
            f"latency p50/p95/p99 {_fmt(lat['p50'])}/{_fmt(lat['p95'])}/{_fmt(lat['p99'])} ms "
            f"against {_fmt(mlat['p50'])}/{_fmt(mlat['p95'])}/{_fmt(mlat['p99'])} "
            f"({'higher at ' + ', '.join(worse) if worse else 'no higher at any percentile'}).")
    if any(r.get("steps") for r in presets.values()):
        for p, r in presets.items():
            windows = sorted([r["fixed"], *r.get("steps", [])], key=lambda w: w["offered_per_s"])
            kept = [w["offered_per_s"] for w in windows if not saturated(w)]
            first = next((w for w in windows if saturated(w)), None)
            text = (f"kept up with {max(kept):g} msgs/s offered" if kept
                    else "kept up with none of the offered rates")
            if first:
                lat = first["latency_ms_from_send_start"]
                text += (f"; at {first['offered_per_s']:g} offered it delivered "
                         f"{first['delivered_per_s']:.1f} msgs/s with p50/p95 "
                         f"{_fmt(lat['p50'])}/{_fmt(lat['p95'])} ms (saturated)")
            else:
                text += ", the highest rate offered"
            out.append(f"- `{p}` on this machine: {text}.")
    return out


# --- sizing: a model fitted to the figures -----------------------------------------------

SIZING_CORES = (2, 4, 8, 16)
# Stays off the model's ceiling: the load generator, the engine, bursts.
HEADROOM = 0.7


def cost_model(r: Mapping[str, Any]) -> dict[str, float]:
    """Per preset, from its idle and fixed-load windows: the whole stack's idle
    cores, its cores per delivered message/s above idle, and the busiest single
    Synapse process' cores per message/s (a Python process runs on one core at a
    time: that process saturates at 1 core whatever the machine)."""
    f = r["fixed"]
    delivered = max(f["delivered_per_s"], 1e-9)
    idle = sum(r["idle"]["cpu_s"].values()) / r["idle"]["seconds"]
    load = sum(f["cpu"]["cpu_s"].values()) / f["cpu"]["seconds"]
    engine_idle = r["idle"].get("engine_cpu_s", 0) / r["idle"]["seconds"]
    engine_load = f["cpu"].get("engine_cpu_s", 0) / f["cpu"]["seconds"]
    synapse = {n for n, c in r["classes"].items() if c in SYNAPSE_CLASSES}
    busiest = max(s for n, s in f["cpu"]["cpu_s"].items() if n in synapse) / f["cpu"]["seconds"]
    return {"idle_cores": idle + engine_idle,
            "cores_per_msg": max(0.0, load + engine_load - idle - engine_idle) / delivered,
            "busiest_cores_per_msg": busiest / delivered}


def ceiling(model: Mapping[str, float], cores: float) -> float:
    """Messages/s a preset would carry on `cores` by the model, at HEADROOM of the
    machine and of its busiest process."""
    whole = max(0.0, cores * HEADROOM - model["idle_cores"]) / max(model["cores_per_msg"], 1e-9)
    one = HEADROOM / max(model["busiest_cores_per_msg"], 1e-9)
    return min(whole, one)


def sizing(result: dict) -> dict[str, Any]:
    presets = result["presets"]
    models = {p: cost_model(r) for p, r in presets.items()}
    table = {p: {c: round(ceiling(m, c), 1) for c in SIZING_CORES} for p, m in models.items()}
    best = {c: max(table, key=lambda p: table[p][c]) for c in SIZING_CORES}
    return {"models": models, "ceilings": table, "best": best}


def sizing_markdown(result: dict) -> str:
    """The model table and what it says, for BENCHMARKS.md and docs/sizing.md."""
    sz = sizing(result)
    presets = list(sz["models"])
    load = result["load"]
    lines = [
        f"A linear model fitted to each preset's figures above (the {load['users']}-user, "
        f"{load['rate']:g} msgs/s window and the idle window): the stack's idle cores (Synapse, "
        "Postgres, Redis, nginx and the Docker engine), its cores per delivered message/s above "
        "idle, and the busiest Synapse process' cores per message/s (one Python process uses "
        f"one core at a time). Ceiling = the lower of ({HEADROOM:.0%} of the cores − idle) / "
        f"cores per message and {HEADROOM:.0%} of one core / the busiest process' cost. "
        "An extrapolation from one load shape (few users, small rooms, no federation), "
        "not a measurement beyond this machine's 2 cores.",
        "",
        "| preset | idle cores | cores per msg/s | busiest process, cores per msg/s | "
        "measured here: kept up with, msgs/s | "
        + " | ".join(f"ceiling on {c} cores, msgs/s" for c in SIZING_CORES) + " |",
        "|---|---|---|---|---|" + "---|" * len(SIZING_CORES),
    ]
    for p in presets:
        m = sz["models"][p]
        r = result["presets"][p]
        kept = [w["offered_per_s"] for w in [r["fixed"], *r.get("steps", [])] if not saturated(w)]
        lines.append(f"| {p} | {m['idle_cores']:.3f} | {m['cores_per_msg']:.4f} | "
                     f"{m['busiest_cores_per_msg']:.4f} | {f'{max(kept):g}' if kept else 'none'} | "
                     + " | ".join(f"{sz['ceilings'][p][c]:.0f}" for c in SIZING_CORES) + " |")
    lines.append("")
    for c in SIZING_CORES:
        best = sz["best"][c]
        others = ", ".join(f"`{p}` {sz['ceilings'][p][c]:.0f}" for p in presets if p != best)
        lines.append(f"- {c} cores: `{best}` carries the most ({sz['ceilings'][best][c]:.0f} "
                     f"msgs/s; {others}).")
    if "monolith" in sz["models"]:
        mono = sz["models"]["monolith"]
        for p in presets:
            if p == "monolith":
                continue
            m = sz["models"][p]
            # Cores from which the preset's whole-machine bound passes the monolith's
            # one-process ceiling: the size where splitting starts to pay.
            target = HEADROOM / max(mono["busiest_cores_per_msg"], 1e-9)
            need = (target * m["cores_per_msg"] + m["idle_cores"]) / HEADROOM
            lines.append(
                f"- `{p}` costs {m['cores_per_msg'] / max(mono['cores_per_msg'], 1e-9):.1f}x the "
                f"monolith's CPU per message and {m['idle_cores'] - mono['idle_cores']:+.2f} cores "
                f"idle; it passes the monolith's one-process ceiling ({target:.0f} msgs/s) from "
                f"about {need:.0f} cores"
                + (" (and never, if its own busiest process caps it lower)"
                   if HEADROOM / max(m["busiest_cores_per_msg"], 1e-9) <= target else "") + ".")
    return "\n".join(lines) + "\n"


def overhead_markdown(result: dict) -> str:
    """Where a worker layout's extra CPU goes, against the monolith, from the
    figures: by class at the fixed load, replication fan-out through Redis, the
    federation senders' per-event lookups, and the idle cost per process with the
    healthcheck probes' share of it."""
    presets = result["presets"]
    if "monolith" not in presets:
        return ""
    mono = presets["monolith"]
    m_cores = _cpu_cores(mono["fixed"]["cpu"])
    m_sent = max(mono["fixed"]["sent"], 1)
    lines = []
    for p, r in presets.items():
        if p == "monolith":
            continue
        f = r["fixed"]
        cores = _cpu_cores(f["cpu"])
        extra = _synapse_cores(cores) - _synapse_cores(m_cores)
        top = sorted(((c, v) for c, v in cores.items() if c in SYNAPSE_CLASSES),
                     key=lambda cv: -cv[1])[:4]
        counts = {}
        for c in r["classes"].values():
            counts[c] = counts.get(c, 0) + 1
        sent = max(f["sent"], 1)
        rd, mrd = f["redis"], mono["fixed"]["redis"]
        pg = cores.get("postgres", 0) - m_cores.get("postgres", 0)
        lines.append(
            f"- `{p}`: Synapse {extra:+.2f} cores against the monolith at the same load "
            f"({_synapse_cores(cores):.2f} against {_synapse_cores(m_cores):.2f}); the busiest "
            "classes " + ", ".join(f"{c} ×{counts.get(c, 0)} {v:.3f}" for c, v in top)
            + f"; Postgres {pg:+.3f} cores. Redis sent "
            f"{rd['total_net_output_bytes'] / sent / 1024:.1f} KiB per message to "
            f"{max(rd['subscribers'].values(), default=0)} subscribers (monolith "
            f"{mrd['total_net_output_bytes'] / m_sent / 1024:.1f} KiB to "
            f"{max(mrd['subscribers'].values(), default=0)}), and answered "
            f"{rd['calls'].get('get', 0) / sent:.1f} GETs per message (monolith "
            f"{mrd['calls'].get('get', 0) / m_sent:.1f}): every federation sender looks up "
            f"each new event's destinations ({counts.get('sender', 0)} senders).")
        attributed = f.get("cpu_attributed") or {}
        if attributed:
            secs = f["cpu"]["seconds"]
            parts = []
            for c, _ in top[:3]:
                items = sorted((attributed.get(c) or {}).items(), key=lambda kv: -kv[1])[:3]
                if items:
                    parts.append(f"{c}: " + ", ".join(f"`{n}` {v / secs * 1000:.0f}"
                                                       for n, v in items))
            if parts:
                lines.append(f"  What Synapse itself attributes that CPU to (millicores; "
                             "background processes `bg:`, measured blocks `block:`, "
                             "servlets `http:`, which overlap): " + "; ".join(parts) + ".")
    for p, r in presets.items():
        idle = r["idle"]
        synapse = [n for n, c in r["classes"].items() if c in SYNAPSE_CLASSES]
        per_proc = sum(idle["cpu_s"][n] for n in synapse) / idle["seconds"] / max(len(synapse), 1)
        probe = next((v for v in (r.get("probe_cost") or {}).values() if v), None)
        text = (f"- `{p}` idle: {per_proc * 1000:.1f} millicores per Synapse process "
                f"({len(synapse)} processes), Docker engine "
                f"{idle.get('engine_cpu_s', 0) / idle['seconds'] * 1000:.0f} millicores")
        if probe and probe["interval_s"]:
            in_c = probe["container_ms"] / probe["interval_s"]
            eng = probe["engine_ms"] / probe["interval_s"]
            text += (f"; one healthcheck probe costs {probe['container_ms']:.0f} ms of CPU in the "
                     f"container and {probe['engine_ms']:.0f} ms in the engine, every "
                     f"{probe['interval_s']:g} s: {in_c:.1f} + {eng:.1f} millicores per container, "
                     f"{in_c / max(per_proc * 1000, 1e-9):.0%} of a process' idle CPU")
        lines.append(text + ".")
    return "\n".join(lines) + "\n"


SIZING_BEGIN = "<!-- serving-sizing:begin (benchmarks/bench_serving.py refresh_sizing) -->"
SIZING_END = "<!-- serving-sizing:end -->"


def refresh_docs(result: dict) -> None:
    """Called by the runner after a run: the generated figures of docs/sizing.md."""
    refresh_sizing(result)


def refresh_sizing(result: dict, page: Path = ROOT / "docs" / "sizing.md") -> bool:
    """Replace the generated part of docs/sizing.md with the model
    computed from `result`; False if the markers are missing."""
    text = page.read_text()
    if SIZING_BEGIN not in text or SIZING_END not in text:
        return False
    head, rest = text.split(SIZING_BEGIN, 1)
    _, tail = rest.split(SIZING_END, 1)
    body = (f"Figures from the run of {result.get('date', '?')} (`benchmarks/results/{NAME}.json`). "
            f"Where the worker layouts' extra CPU goes:\n\n{overhead_markdown(result)}\n"
            f"Sizing model:\n\n{sizing_markdown(result)}")
    page.write_text(f"{head}{SIZING_BEGIN}\n{body}{SIZING_END}{tail}")
    return True


ENGINE = "Docker engine"


def plots(result: dict, outdir: Path) -> list[Path]:
    from benchmarks.plotting import pyplot, save

    plt = pyplot()

    outdir.mkdir(parents=True, exist_ok=True)
    presets = result["presets"]
    names = list(presets)
    written = []

    # Throughput and latency percentiles per preset.
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for p in names:
        r = presets[p]
        pts = [r["fixed"]] + r.get("steps", [])
        pts.sort(key=lambda x: x["offered_per_s"])
        line, = a.plot([x["offered_per_s"] for x in pts], [x["delivered_per_s"] for x in pts],
                       "-", label=p)
        for x in pts:  # hollow: saturated (messages lost or queued past KEEPS_UP_P95_MS)
            a.plot(x["offered_per_s"], x["delivered_per_s"], "o", color=line.get_color(),
                   markerfacecolor="none" if saturated(x) else line.get_color())
    hi = max(x["offered_per_s"] for r in presets.values() for x in [r["fixed"]] + r.get("steps", []))
    a.plot([0, hi], [0, hi], ":", color="grey", label="offered")
    a.set_xlabel("offered messages/s")
    a.set_ylabel("delivered messages/s")
    a.set_title("Throughput (hollow: saturated)")
    a.legend()
    width = 0.8 / len(names)
    for i, p in enumerate(names):
        lat = presets[p]["fixed"]["latency_ms_from_send_start"]
        b.bar([j + i * width for j in range(3)], [lat[q] or 0 for q in ("p50", "p95", "p99")],
              width, label=p)
    b.set_xticks([j + width * (len(names) - 1) / 2 for j in range(3)], ["p50", "p95", "p99"])
    b.set_yscale("log")  # the presets differ by orders of magnitude once one saturates
    b.set_ylabel("ms, send start to receiver's /sync (log)")
    b.set_title(f"Latency at {result['load']['rate']:g} msgs/s offered")
    b.legend()
    path = save(fig, outdir, "serving_throughput_latency.png")
    written.append(path)

    # CPU per class, stacked, idle and loaded, per preset.
    classes: list[str] = []
    for r in presets.values():
        for w in (r["idle"], r["fixed"]["cpu"]):
            classes += [c for c in w["cpu_by_class"] if c not in classes]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels, bottoms = [], []
    bars = []
    for p in names:
        for kind, w in (("idle", presets[p]["idle"]), ("load", presets[p]["fixed"]["cpu"])):
            labels.append(f"{p}\n{kind}")
            bars.append({**_cpu_cores(w), ENGINE: w.get("engine_cpu_s", 0.0) / w["seconds"]})
    bottoms = [0.0] * len(bars)
    cmap = plt.get_cmap("tab20")
    for k, c in enumerate(classes + [ENGINE]):
        vals = [b.get(c, 0.0) for b in bars]
        style = ({"color": "white", "edgecolor": "grey", "hatch": "//"} if c == ENGINE
                 else {"color": cmap(k % 20)})
        ax.bar(range(len(bars)), vals, bottom=bottoms, label=c, **style)
        bottoms = [x + v for x, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(bars)), labels, fontsize=8)
    ax.set_ylabel("cores (CPU s per s)")
    ax.set_title("CPU per class (and the Docker engine): idle, and at the fixed load")
    ax.legend(fontsize=7, ncol=2)
    path = save(fig, outdir, "serving_cpu_by_class.png")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preset", action="append", choices=PRESETS,
                    help="only these presets (default: all three)")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=JSON",
                    help="an experiment: a stack config override for every preset "
                         "(e.g. workers.sender=1); write it to another --out")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true",
                    help="no measurement: plots, docs/sizing.md figures and the report from --out")
    args = ap.parse_args(argv)
    if args.report_only:
        record = json.loads(args.out.read_text())
        result = record.get("result", record)  # the runner's file, or an experiment's
        written = plots(result, ROOT / "benchmarks" / "plots")
        refresh_docs(result)
        print(markdown(result, [str(p.relative_to(ROOT)) for p in written]))
        return 0
    overrides = {k: json.loads(v) for k, v in (x.split("=", 1) for x in args.set)}
    if not overrides and not args.preset:  # the benchmark itself: through the runner
        from benchmarks.__main__ import main as runner

        return runner(["--only", NAME, *(["--quick"] if args.quick else [])])
    if args.out == RESULTS:
        ap.error("an experiment (--set) or a partial run (--preset) goes to another --out, "
                 "not the results file")
    result = run(args.quick, tuple(args.preset or PRESETS), overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(markdown(result, []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
