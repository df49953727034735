"""Federation latency and its cost: on the federation test bed (tests/e2e/fedbed),
alice on A sends at a fixed rate into rooms shared with a user on each of B, C
and D; each of them syncs. Measured: from just before alice's send to the event in
each remote user's /sync, p50/p95/p99 per destination server, and the CPU each of
A's classes spent in the window (cgroup CPU time; senders, federation reader,
rooms, ...). Once with A on `specialized` (4 senders), once on `monolith`.

Run alone: .venv/bin/python -m benchmarks.bench_federation [--quick]   (needs Docker;
run it under `flock /tmp/e2e.lock`)
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from typing import Any

import nio

from benchmarks.bench_serving import SYNAPSE_CLASSES, by_class, cpu_ns
from benchmarks.stats import latency_summary
from tests.e2e.fedbed import bed as fedbed
from tests.e2e.matrix_client import Recorder, close_all, lift_message_rate_limit, register

NAME = "federation"
TITLE = "Federation: send on A to a remote user's /sync"
PRESETS = ("specialized", "monolith")
RATE = 5.0  # messages per second offered by alice, round robin over the rooms
ROOMS = 3
RECEIVERS = {"B": "bob", "C": "carol", "D": "dave"}
PASSWORD = "fedbed-bench-password"


async def _users(bed: fedbed.Bed, recorder: Recorder) -> dict[str, nio.AsyncClient]:
    clients = {}
    async with recorder.session("admin") as s:
        for key, name in {"A": "alice", **RECEIVERS}.items():
            server = bed.servers[key]
            status, body = await register(s, server.admin_url, server.registration_secret,
                                          name, PASSWORD, admin=True)
            assert status == 200, (key, body)
            c = nio.AsyncClient(server.url, body["user_id"])
            c.client_session = recorder.session(name)
            assert isinstance(await c.login(PASSWORD), nio.LoginResponse)
            if server.ours:
                await lift_message_rate_limit(s, server.admin_url, c.access_token, c.user_id)
            clients[key] = c
    return clients


async def _rooms(clients: dict[str, nio.AsyncClient]) -> list[str]:
    alice, rooms = clients["A"], []
    for i in range(ROOMS):
        resp = await alice.room_create(name=f"bench federation {i}",
                                       invite=[clients[k].user_id for k in RECEIVERS])
        assert isinstance(resp, nio.RoomCreateResponse), resp
        rooms.append(resp.room_id)
    for key in RECEIVERS:
        c = clients[key]
        deadline = time.monotonic() + 120
        while not set(rooms) <= set(c.invited_rooms) | set(c.rooms):
            assert time.monotonic() < deadline, f"{key}: invites not seen"
            await c.sync(timeout=1000)
        for room in rooms:
            assert isinstance(await c.join(room), nio.JoinResponse), (key, room)
        await c.sync(timeout=0)
    return rooms


async def _measure(clients: dict[str, nio.AsyncClient], rooms: list[str], seconds: float,
                   ids: dict[str, str]) -> dict[str, Any]:
    sent: dict[str, float] = {}
    arrived: dict[str, dict[str, float]] = {k: {} for k in RECEIVERS}
    stop = asyncio.Event()

    async def receive(key: str) -> None:
        c = clients[key]
        while not stop.is_set():
            resp = await c.sync(timeout=1000)
            now = time.monotonic()
            if isinstance(resp, nio.SyncResponse):
                for room in resp.rooms.join.values():
                    for e in room.timeline.events:
                        if isinstance(e, nio.RoomMessageText) and e.body.startswith("bench "):
                            arrived[key].setdefault(e.body, now)

    async def send() -> None:
        alice, n, t0 = clients["A"], 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            body = f"bench {n}"
            sent[body] = time.monotonic()
            resp = await alice.room_send(rooms[n % len(rooms)], "m.room.message",
                                         {"msgtype": "m.text", "body": body})
            assert isinstance(resp, nio.RoomSendResponse), resp
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / RATE - time.monotonic()))

    receivers = [asyncio.ensure_future(receive(k)) for k in RECEIVERS]
    cpu0, wall0 = cpu_ns(ids), time.monotonic()
    await send()
    cpu1, wall1 = cpu_ns(ids), time.monotonic()
    deadline = time.monotonic() + 60  # drain: every event everywhere, or a minute
    while time.monotonic() < deadline and any(len(a) < len(sent) for a in arrived.values()):
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*receivers)
    window = wall1 - wall0
    cores = {name: (cpu1[name] - cpu0[name]) / 1e9 / window for name in ids}
    latency = {}
    for key, got in arrived.items():
        values = [got[b] - sent[b] for b in sent if b in got]
        latency[key] = {**latency_summary(values), "lost": len(sent) - len(values)}
    everywhere = [arrived[k][b] - sent[b] for k in RECEIVERS for b in sent if b in arrived[k]]
    return {"messages": len(sent), "window_s": round(window, 1), "rate": RATE,
            "latency_s": latency, "latency_all_s": latency_summary(everywhere),
            "cores_by_container": cores}


def run_preset(preset: str, seconds: float) -> dict[str, Any]:
    bed = fedbed.up(a_preset=preset)
    loop = asyncio.new_event_loop()
    recorder = Recorder(ssl.create_default_context(cafile=str(bed.ca_file)))
    clients: dict[str, nio.AsyncClient] = {}
    try:
        a = bed.servers["A"].deployed
        ids = {a.containers[p]: a.ids[a.containers[p]] for p in a.containers}
        clients = loop.run_until_complete(_users(bed, recorder))
        rooms = loop.run_until_complete(_rooms(clients))
        result = loop.run_until_complete(_measure(clients, rooms, seconds, ids))
        names = {a.containers[p]: c for p, c in a.classes.items()}
        result["cores_by_class"] = by_class(result["cores_by_container"], names)
        result["preset"] = preset
        return result
    finally:
        loop.run_until_complete(close_all(*clients.values()))
        loop.close()
        fedbed.down(bed)


def run(quick: bool) -> dict[str, Any]:
    seconds = 20 if quick else 60
    return {"seconds": seconds, "presets": {p: run_preset(p, seconds) for p in PRESETS}}


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.0f}"


def markdown(result: dict, plots: list[str]) -> str:
    presets = result["presets"]
    # Synapse's classes from the worker table (bench_serving's), not a list of services.
    synapse_cores = {preset: sum(r["cores_by_class"].get(c, 0.0) for c in SYNAPSE_CLASSES)
                     for preset, r in presets.items()}
    lines = [
        f"alice on A sends {RATE:g} messages/s for {result['seconds']} s, round robin into "
        f"{ROOMS} rooms each shared with bob (B, our `one-of-each`, delegated), carol and dave "
        "(C and D, Synapse 1.140 monoliths); each syncs with a 1 s long poll. Latency: from "
        "just before the send to the event in that user's `/sync` response, in ms. All four "
        "servers share this machine's 2 cores.",
        "",
        "| A's preset | to B p50 / p95 / p99 | to C | to D | lost | A's Synapse cores |",
        "|---|---|---|---|---|---|",
    ]
    for preset, r in presets.items():
        cells = []
        for key in RECEIVERS:
            lat = r["latency_s"][key]
            cells.append(f"{_ms(lat['p50'])} / {_ms(lat['p95'])} / {_ms(lat['p99'])}")
        lost = sum(r["latency_s"][k]["lost"] for k in RECEIVERS)
        lines.append(f"| {preset} | {' | '.join(cells)} | {lost} | {synapse_cores[preset]:.2f} |")
    if {"specialized", "monolith"} <= set(presets) and synapse_cores["monolith"]:
        spec = presets["specialized"]["cores_by_class"]
        lines += ["", f"On this load `specialized` spends {synapse_cores['specialized'] / synapse_cores['monolith']:.1f}x "
                  f"the Synapse CPU of `monolith` ({synapse_cores['specialized']:.2f} against "
                  f"{synapse_cores['monolith']:.2f} cores), {spec.get('sender', 0):.2f} of it in the "
                  "senders: every sender follows every event over replication, and only one of "
                  "them owns each destination. The latency adds an extra replication hop (rooms "
                  "worker, then sender) and, to B, B's own hop to its client_sync worker; a 1 s "
                  "long poll on each receiver is part of every figure."]
    lines += ["", "CPU of A's containers in the window, cores per class:", "",
              "| class | " + " | ".join(presets) + " |", "|---|" + "---|" * len(presets)]
    classes = sorted({c for r in presets.values() for c in r["cores_by_class"]},
                     key=lambda c: -max(r["cores_by_class"].get(c, 0) for r in presets.values()))
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(f"{r['cores_by_class'].get(c, 0):.3f}"
                                              for r in presets.values()) + " |")
    return "\n".join(lines) + "\n"


def plots(result: dict, outdir) -> list:
    return []


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import main as runner

    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    return runner(["--only", NAME, *(["--quick"] if quick else [])])


if __name__ == "__main__":
    sys.exit(main())
