"""Change cost: from a deployed bench stack with client traffic running
(tests/e2e/live.py Traffic: Alice sends, retrying each message with its
transaction ID until acknowledged, Bob syncs, one probe per endpoint class every
0.25 s), each kind of change applied with the replay harness in sequence, each
relative to the previous state, on the `one-of-each`, `specialized` and `large`
presets: the containers the up replaced, updated, created and deleted (the
harness's plan) beside what the impact report (components/tools/impact.py) predicted,
the seconds each endpoint class was unavailable, the failed probes, the send
attempts that failed and were retried, and how long the up took.

Before/after: `--raw FILE` runs the same changes without the runner and writes
the bare result; run from a checkout of an earlier revision (with this file copied
in), its result goes to benchmarks/results/change-before.json, which the report
compares with.

Run alone: .venv/bin/python -m benchmarks.bench_change [--quick]   (needs Docker;
run it under `flock /tmp/e2e.lock`)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import aiohttp
import nio

from benchmarks.bench_deploy import stack_file
from components.tools import impact
from components.plan.workers import PRESETS as WORKER_PRESETS
from tests.e2e import replay
from tests.e2e.images.build import SYNAPSE_NEXT
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import (Recorder, close_all, lift_message_rate_limit, new_client,
                                     register)

NAME = "change"
TITLE = "Change cost: what each kind of change replaces and interrupts"
STACK = "bench-change"
PRESETS = ("one-of-each", "specialized", "large")
Counts = Mapping[str, int]
# (title, override given the preset's worker counts), applied in order, each on top
# of the previous ones.
CHANGES: list[tuple[str, Callable[[Counts], dict[str, Any]]]] = [
    ("rooms +1", lambda n: {"workers.rooms": n["rooms"] + 1}),
    ("sender +1", lambda n: {"workers.sender": n["sender"] + 1}),
    ("log level INFO -> WARNING", lambda n: {"log.level": "WARNING"}),
    ("Synapse image -> a second tag", lambda n: {"images.synapse": SYNAPSE_NEXT}),
    # A homeserver.yaml key the topology does not own (synapse_config).
    ("extraConfig enable_search: false", lambda n: {"extraConfig": {"enable_search": False}}),
    ("media -> 0", lambda n: {"workers.media": 0}),
    ("media 0 -> 1", lambda n: {"workers.media": 1}),
]
QUICK = ("rooms +1", "log level INFO -> WARNING")
QUICK_PRESETS = ("one-of-each",)
SETTLE_MESSAGES = 3  # acknowledged before the up, and again after it
BEFORE = "change-before"  # results of an earlier revision, for the comparison


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


def _preset_run(preset: str, quick: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-change-"))
    path = stack_file(tmp, STACK, preset)
    prefix = f"synapse-{STACK}-"
    counts = WORKER_PRESETS[preset]
    changes = [(t, f(counts)) for t, f in CHANGES if not quick or t in QUICK]
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
            main = deployed.containers["main"]
            step = deployed.applied.get(main)
            entry = {
                "change": title, "override": change, "up_s": round(up_s, 1),
                "apply_s": round(deployed.seconds_to_healthy, 1),
                "impact_report_s": round(report_s, 2),
                "happened": _short(happened, prefix), "predicted": _short(predicted, prefix),
                "prediction_matches": happened == predicted,
                "unavailable_s": traffic.unavailable_seconds(),
                "failed_probes": {c: sum(not ok for _, ok in v)
                                  for c, v in traffic.samples.items()},
                "main_replaced_s": round(step[1] - step[0], 1) if step else 0.0,
                # Every send is retried with its transaction ID until acknowledged
                # (the run fails otherwise): these are the failed attempts.
                "messages_acked": len(traffic.acked), "failed_sends": traffic.failed_sends,
            }
            results.append(entry)
            print(json.dumps(entry), flush=True)
    finally:
        if clients:
            loop.run_until_complete(close_all(*clients))
        loop.close()
        try:
            replay.down(path, delete_data=True)
        except replay.ReplayError as e:
            # Docker 20.10 sometimes keeps a stale endpoint on a network (restart
            # dockerd to clear it): the figures measured are kept all the same.
            print(f"bench-change: could not take the {preset} stack down: {e}", flush=True)
    return {"preset": preset, "first_up_s": round(first_up, 1), "changes": results}


def run(quick: bool, presets: tuple[str, ...] | None = None) -> dict[str, Any]:
    chosen = presets or (QUICK_PRESETS if quick else PRESETS)
    return {"quick": quick, "presets": [_preset_run(p, quick) for p in chosen]}


def _by_preset(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Results of this version (one entry per preset) or of the first, one-preset one."""
    if "presets" in result:
        return result["presets"]
    return [{"preset": result["preset"], "first_up_s": result["first_up_s"],
             "changes": result["changes"]}]


def _before() -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    """(where and when, preset -> change -> entry), from the earlier revision's
    results (if any)."""
    from benchmarks import registry

    record = registry.read_results(BEFORE)
    if not record:
        return "", {}
    m = record.get("machine", {})
    return (f"revision {m.get('git_revision')}, {m.get('date')}, this machine",
            {p["preset"]: {c["change"]: c for c in p["changes"]}
             for p in _by_preset(record["result"])})


def _worst(entry: dict[str, Any], skip: tuple[str, ...] = ()) -> float:
    return max((v for c, v in entry["unavailable_s"].items() if c not in skip), default=0.0)


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    presets = _by_preset(result)
    lines = ["Bench stacks of each preset (first up as given), then each change applied with "
             "the replay harness on top of the previous ones, while Alice sends (each message "
             "retried with its transaction ID until acknowledged, as the spec asks of "
             "clients) and Bob syncs through nginx, and one request per endpoint class goes "
             "out every 0.25 s (tests/e2e/live.py). *Down*: from a failed probe to the next "
             "successful one. *Main replaced*: main's own step (stop, create, healthy). "
             "*Retried sends*: failed attempts, each retried until acknowledged (no message "
             "was lost or stored twice). *Report = plan*: the impact report "
             "(components/tools/impact.py) run before the change predicted the replay's plan."]
    for p in presets:
        changes = p["changes"]
        classes = sorted({c for r in changes for c in r["unavailable_s"]})
        lines += ["", f"**{p['preset']}** (first up {p['first_up_s']} s)", "",
                  "| change | up (s) | replaced | created | deleted | report = plan | main "
                  "replaced (s) | " + " | ".join(f"{c} down (s)" for c in classes)
                  + " | failed probes | retried sends |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(classes) + "---|---|"]
        for r in changes:
            h = r["happened"]

            def names(action: str) -> str:
                got = h.get(action, [])
                return (", ".join(got) if len(got) <= 4 else f"{len(got)}: " + ", ".join(got[:3])
                        + " …") or "–"

            lines.append(f"| {r['change']} | {r['up_s']} | {names('replace')} | "
                         f"{names('create')} | {names('delete')} | "
                         f"{'yes' if r['prediction_matches'] else 'NO'} | "
                         f"{r.get('main_replaced_s', '–')} | "
                         + " | ".join(f"{r['unavailable_s'].get(c, 0):.2f}" for c in classes)
                         + f" | {sum(r.get('failed_probes', {}).values()) if 'failed_probes' in r else '–'}"
                         + f" | {r['failed_sends']} |")
    where, before = _before()
    if before:
        lines += ["", f"**Before and after.** Before ({where}; "
                  "`benchmarks/results/change-before.json`): every process of a class replaced "
                  "at once, no fallback to main, log configs and Prometheus's targets as "
                  "uploads. Worst class: the longest any endpoint class other than main was "
                  "down.", "",
                  "| preset | change | worst class down before (s) | after (s) | main down "
                  "before (s) | after (s) | retried sends before | after |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in presets:
            for r in p["changes"]:
                b = before.get(p["preset"], {}).get(r["change"])
                if not b:
                    continue
                lines.append(f"| {p['preset']} | {r['change']} | "
                             f"{_worst(b, ('main',)):.2f} | {_worst(r, ('main',)):.2f} | "
                             f"{b['unavailable_s'].get('main', 0):.2f} | "
                             f"{r['unavailable_s'].get('main', 0):.2f} | "
                             f"{b['failed_sends']} | {r['failed_sends']} |")
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines)


def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    from benchmarks.plotting import pyplot, save

    plt = pyplot()

    outdir.mkdir(parents=True, exist_ok=True)
    presets = _by_preset(result)
    fig, axes = plt.subplots(len(presets), 1, figsize=(8, 3.2 * len(presets)), squeeze=False)
    for ax, p in zip(axes[:, 0], presets):
        changes = [r["change"] for r in p["changes"]]
        classes = sorted({c for r in p["changes"] for c in r["unavailable_s"]})
        width = 0.8 / max(1, len(classes))
        for i, cls in enumerate(classes):
            xs = [j + i * width for j in range(len(changes))]
            ax.bar(xs, [r["unavailable_s"].get(cls, 0) for r in p["changes"]], width, label=cls)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(changes))], changes, rotation=20,
                      ha="right", fontsize=7)
        ax.set_ylabel("seconds unavailable")
        ax.set_title(f"{p['preset']}: unavailable seconds per endpoint class, per change",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = save(fig, outdir, "change_unavailable.png")
    return [path]


def main(argv: list[str]) -> int:
    """Alone: the runner's run of this benchmark (results file, BENCHMARKS.md); with
    `--raw FILE`, the bare result written to FILE (for a before/after comparison)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_change")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--raw", type=Path, help="write the bare result here, no runner")
    parser.add_argument("--preset", action="append", choices=PRESETS)
    args = parser.parse_args(argv)
    if args.raw:
        from benchmarks import machine

        t0 = time.monotonic()
        result = run(args.quick, tuple(args.preset) if args.preset else None)
        args.raw.write_text(json.dumps({"name": BEFORE, "title": TITLE, "quick": args.quick,
                                        "machine": machine.collect(), "result": result,
                                        "seconds": round(time.monotonic() - t0, 1)}, indent=1))
        return 0
    from benchmarks.__main__ import main as runner

    return runner(["--only", NAME, *(["--quick"] if args.quick else [])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
