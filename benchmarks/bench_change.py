"""Change cost: from a deployed one-of-each bench stack with client traffic running
(tests/e2e/live.py Traffic: Alice sends, Bob syncs, one probe per endpoint class
every 0.25 s), each kind of change applied with the replay harness in sequence,
each relative to the previous state: the containers the up replaced, updated,
created and deleted (the harness's plan) beside what the impact report
(components/impact.py) predicted, the seconds each endpoint class was unavailable,
and how long the up took.

Run alone: .venv/bin/python -m benchmarks.bench_change [--quick]   (needs Docker;
run it under `flock /tmp/e2e.lock`)
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nio

from benchmarks.bench_deploy import stack_file
from components import impact
from tests.e2e import replay
from tests.e2e.images.build import SYNAPSE_NEXT
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import (Recorder, close_all, lift_message_rate_limit, new_client,
                                     register)

NAME = "change"
TITLE = "Change cost: what each kind of change replaces and interrupts"
STACK = "bench-change"
PRESET = "one-of-each"
# (title, override on top of the previous ones), in order.
CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("rooms +1", {"workers.rooms": 2}),
    ("sender +1", {"workers.sender": 2}),
    ("log level INFO -> WARNING", {"log.level": "WARNING"}),
    ("Synapse image -> a second tag", {"images.synapse": SYNAPSE_NEXT}),
    # A homeserver.yaml key the topology does not own (synapse_config).
    ("extraConfig enable_search: false", {"extraConfig": {"enable_search": False}}),
]
QUICK = ("rooms +1", "log level INFO -> WARNING")
SETTLE_MESSAGES = 3  # acknowledged before the up, and again after it


async def _users(d: replay.Deployed, recorder: Recorder) -> tuple[nio.AsyncClient,
                                                                   nio.AsyncClient, str]:
    """Alice and Bob registered (shared-secret admin API), logged in, in one room;
    Alice (an admin) lifts rc_message (0.2/s) for both, so a failed send means an
    unavailable process, not a rate limit."""
    clients = {}
    async with aiohttp.ClientSession() as s:
        for name in ("alice", "bob"):
            password = secrets.token_urlsafe(12)
            status, body = await register(s, d.admin_url, d.registration_shared_secret,
                                          name, password, admin=name == "alice")
            assert status == 200, (name, status, body)
            c = new_client(d.nginx_url, recorder, name, user=body["user_id"])
            resp = await c.login(password, device_name=f"bench {name}")
            assert isinstance(resp, nio.LoginResponse), resp
            clients[name] = c
        for c in clients.values():
            await lift_message_rate_limit(s, d.admin_url, clients["alice"].access_token, c.user_id)
    alice, bob = clients["alice"], clients["bob"]
    room = await alice.room_create(name="bench change")
    assert isinstance(room, nio.RoomCreateResponse), room
    assert isinstance(await alice.room_invite(room.room_id, bob.user_id), nio.RoomInviteResponse)
    assert isinstance(await bob.join(room.room_id), nio.JoinResponse)
    return alice, bob, room.room_id


def _containers_by_action(plan: replay.StepPlan) -> dict[str, str]:
    return {s.docker_name: s.action for s in plan.steps
            if s.type == replay.CONTAINER and s.action != replay.SAME}


def _short(names: dict[str, str], prefix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, action in sorted(names.items()):
        out.setdefault(action, []).append(name.removeprefix(prefix))
    return out


def run(quick: bool) -> dict[str, Any]:
    changes = [c for c in CHANGES if not quick or c[0] in QUICK]
    tmp = Path(tempfile.mkdtemp(prefix="bench-change-"))
    path = stack_file(tmp, STACK, PRESET)
    prefix = f"synapse-{STACK}-"
    results: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    clients: list[nio.AsyncClient] = []
    try:
        replay.down(path, delete_data=True)
        t0 = time.monotonic()
        deployed = replay.up(path)
        first_up = time.monotonic() - t0
        recorder = Recorder()
        alice, bob, room_id = loop.run_until_complete(_users(deployed, recorder))
        clients = [alice, bob]
        overrides: dict[str, Any] = {}
        for title, change in changes:
            new_overrides = {**overrides, **change}
            t = time.monotonic()
            report = impact.impact(impact.load_side(path, overrides),
                                   impact.load_side(path, new_overrides))
            report_s = time.monotonic() - t
            traffic = Traffic(alice, bob, room_id, deployed.nginx_url, deployed.federation_url)

            async def go() -> tuple[replay.Deployed, float]:
                await traffic.start()
                try:
                    await traffic.wait_acked(SETTLE_MESSAGES)
                    t1 = time.monotonic()
                    d = await asyncio.to_thread(replay.up, path, new_overrides)
                    up_s = time.monotonic() - t1
                    await traffic.wait_acked(len(traffic.acked) + SETTLE_MESSAGES)
                except BaseException:
                    await traffic.stop(abandon=True)
                    raise
                await traffic.stop()
                return d, up_s

            deployed, up_s = loop.run_until_complete(go())
            overrides = new_overrides
            happened = _containers_by_action(deployed.plan)
            predicted = report.actions()
            entry = {
                "change": title, "override": change, "up_s": round(up_s, 1),
                "apply_s": round(deployed.seconds_to_healthy, 1),
                "impact_report_s": round(report_s, 2),
                "happened": _short(happened, prefix), "predicted": _short(predicted, prefix),
                "prediction_matches": happened == predicted,
                "unavailable_s": traffic.unavailable_seconds(),
                "messages_acked": len(traffic.acked), "failed_sends": traffic.failed_sends,
            }
            results.append(entry)
            print(json.dumps(entry), flush=True)
    finally:
        if clients:
            loop.run_until_complete(close_all(*clients))
        loop.close()
        replay.down(path, delete_data=True)
    return {"quick": quick, "preset": PRESET, "first_up_s": round(first_up, 1),
            "changes": results}


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    classes = sorted({c for r in result["changes"] for c in r["unavailable_s"]})
    lines = [f"A `{result['preset']}` bench stack (first up {result['first_up_s']} s), then each "
             "change applied with the replay harness on top of the previous ones, while Alice "
             "sends and Bob syncs through nginx and one request per endpoint class goes out "
             "every 0.25 s (tests/e2e/live.py). *Unavailable*: from a failed probe to the next "
             "successful one. *Predicted*: the impact report (components/impact.py) run before "
             "the change.", "",
             "| change | up (s) | replaced | created | deleted | updated | report = plan | "
             + " | ".join(f"{c} down (s)" for c in classes) + " | failed sends |",
             "|---|---|---|---|---|---|---|" + "---|" * len(classes) + "---|"]
    for r in result["changes"]:
        h = r["happened"]

        def names(action: str) -> str:
            got = h.get(action, [])
            return (", ".join(got) if len(got) <= 4 else f"{len(got)}: " + ", ".join(got[:3])
                    + " …") or "–"

        lines.append(f"| {r['change']} | {r['up_s']} | {names('replace')} | {names('create')} | "
                     f"{names('delete')} | {names('update')} | "
                     f"{'yes' if r['prediction_matches'] else 'NO: ' + json.dumps(r['predicted'])} | "
                     + " | ".join(f"{r['unavailable_s'].get(c, 0):.2f}" for c in classes)
                     + f" | {r['failed_sends']} |")
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines)


def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    from benchmarks.plotting import pyplot, save

    plt = pyplot()

    outdir.mkdir(parents=True, exist_ok=True)
    changes = [r["change"] for r in result["changes"]]
    classes = sorted({c for r in result["changes"] for c in r["unavailable_s"]})
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(classes))
    for i, cls in enumerate(classes):
        xs = [j + i * width for j in range(len(changes))]
        ax.bar(xs, [r["unavailable_s"].get(cls, 0) for r in result["changes"]], width, label=cls)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(changes))], changes, rotation=20,
                  ha="right", fontsize=8)
    ax.set_ylabel("seconds unavailable")
    ax.set_title("Unavailable seconds per endpoint class, per change")
    ax.legend(fontsize=8)
    path = save(fig, outdir, "change_unavailable.png")
    return [path]


def main(argv: list[str]) -> int:
    """Alone: the runner's run of this benchmark (results file, BENCHMARKS.md)."""
    from benchmarks.__main__ import main as runner

    return runner(["--only", NAME, *(["--quick"] if "--quick" in argv else [])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
