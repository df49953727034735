"""Deploy time: empty to all healthy for the one-of-each, specialized and large
presets, through the replay harness (tests/e2e/replay), the way the e2e tests
deploy. The harness starts each container once the containers it depends on are
healthy, as Pulumi's engine does (tests/e2e/replay/graph.py), not in stages; the
tables group containers by dependency depth (how many containers precede them on
their longest chain) only to show where the time goes. Per depth and per
process: when it started, when it was actually ready (benchmarks/startup_watch.py
polls its readiness from the host every 50 ms), when Docker reported it healthy
(Docker's health_status event), the CPU it used until ready (cgroup v1
cpuacct.usage), and the floor: the CPU Synapse's processes need to start, divided
by the cores. Also what one healthcheck probe costs (each is a `docker exec`), and
what a Docker 25+ engine would give with healthcheck start_interval (computed, not
measured: the engine here is 20.10, API 1.41).

Run alone: .venv/bin/python -m benchmarks.bench_deploy [--quick]   (needs Docker;
run it under `flock /tmp/e2e.lock`)
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import stats, startup_watch as sw
from components.render.containers import build_deployment
from components.plan.settings import load_settings
from components.plan.topology import build_plan
from tests.e2e import replay
from tests.e2e.replay import engine
from tests.e2e.replay.graph import dependency_graph, depth

NAME = "deploy"
TITLE = "Deploy time: empty to all healthy"
PRESETS = ("one-of-each", "specialized", "large")
FULL_RUNS = {"one-of-each": 3, "specialized": 3, "large": 2}
QUICK_RUNS = {"one-of-each": 1}
SYNAPSE_ROLES = ("main", "worker")
ROLES = ("postgres", "redis", "main", "worker", "nginx")
NEW_ENGINE_START_INTERVAL_S = 1.0  # what the computed Docker 25+ figure assumes
PROBES = 30  # healthcheck execs timed per container kind for the probe cost
ONLY_PRESETS: tuple[str, ...] = ()  # --preset NAME (alone only), full repeats
PORTS = {"clientPort": 28008, "federationPort": 28448, "adminPort": 28009}


def stack_file(directory: Path, stack: str, preset: str, extra: dict[str, Any] | None = None
               ) -> Path:
    """A bench stack file: loopback only, no egress, no outside key servers."""
    config = {
        "synapse:serverName": f"{stack}.localhost",
        "synapse:publicBaseUrl": f"http://127.0.0.1:{PORTS['clientPort']}/",
        "synapse:preset": preset,
        "synapse:nginx": {"bindAddress": "127.0.0.1", **PORTS, "servedByHeader": True},
        "synapse:egress": False,
        "synapse:trustedKeyServers": [],
        **{f"synapse:{k}": v for k, v in (extra or {}).items()},
    }
    path = directory / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


def name_prefix(path: Path) -> str:
    raw = yaml.safe_load(path.read_text())["config"]
    settings = load_settings({k.split(":", 1)[1]: v for k, v in raw.items()},
                             engine.stack_of(path))
    return settings.name_prefix


def _mmm(values: list[float | None]) -> dict[str, float] | None:
    """stats.summary of the values measured (None: not measured), to 0.01 s."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {k: v if k == "n" else round(v, 2) for k, v in stats.summary(values).items()}


# --- healthcheck timing models ----------------------------------------------------


def first_healthy_tick(ready_s: float, interval_s: float, start_interval_s: float,
                       start_period_s: float, probe_s: float) -> float:
    """Seconds after start at which the first passing probe ends, as moby's
    daemon/health.go monitor() schedules probes: the timer is re-armed after each
    probe with start_interval while the container is `starting` within its start
    period (Docker 25+, API 1.44), else with interval (20.10: always interval)."""
    t = 0.0
    while True:
        step = start_interval_s if (start_interval_s and t < start_period_s) else interval_s
        t += step
        if t >= ready_s:
            return t + probe_s
        t += probe_s


def computed_total(run: dict[str, Any], start_interval_s: float,
                   interval_s: dict[str, float] | None = None) -> dict[str, Any]:
    """The run's deploy time had each container turned healthy at its first
    passing probe under another schedule (same ready times, same provider poll
    latency), along the dependency graph: a container starts as long after its
    last dependency's new end as it did after the old one."""
    procs = run["processes"]
    new_end: dict[str, float] = {}

    def end(name: str) -> float:
        if name not in new_end:
            p = procs[name]
            deps = [d for d in p.get("after", []) if d in procs]
            start = p["applied_start_s"]
            if deps:
                start += max(end(d) for d in deps) - max(procs[d]["applied_end_s"] for d in deps)
            saved = 0.0
            if p["ready_s"] is not None and p["healthy_s"] is not None:
                interval = (interval_s or {}).get(p["role"], p["interval_s"])
                saved = p["healthy_s"] - first_healthy_tick(
                    p["ready_s"], interval, start_interval_s, p["start_period_s"], p["probe_s"])
            new_end[name] = start + p["applied_end_s"] - p["applied_start_s"] - saved
        return new_end[name]

    last_old = max(p["applied_end_s"] for p in procs.values())
    last_new = max(end(n) for n in procs)
    stages = {}
    for stage, members in run["stages"].items():
        ends = [end(n) for n in members["containers"] if n in procs]
        starts = [procs[n]["applied_start_s"] for n in members["containers"] if n in procs]
        if ends:
            stages[stage] = round(max(ends) - min(starts), 2)
    return {"seconds": round(run["seconds"] - (last_old - last_new), 2), "stage_seconds": stages}


# --- one deploy ---------------------------------------------------------------------


def _probe_seconds(name: str) -> float:
    """Median duration of the container's recorded healthchecks (Docker keeps 5)."""
    log = (replay.api().inspect_container(name)["State"].get("Health") or {}).get("Log") or []
    durations = [sw._docker_time(h["End"]) - sw._docker_time(h["Start"]) for h in log
                 if h.get("End") and h.get("Start")]
    return stats.median(durations) if durations else 0.0


def deploy_once(path: Path, preset: str) -> tuple[dict[str, Any], replay.Deployed]:
    """Empty -> all healthy, watched. The caller tears down."""
    replay.down(path, delete_data=True)
    watch = sw.StartWatch(name_prefix(path) + "-")
    watch.start()
    try:
        t0 = time.monotonic()
        deployed = replay.up(path)
        wall = time.monotonic() - t0
    finally:
        watched = watch.stop()
    cap = deployed.capture
    by_urn = {r.urn: r for r in cap.resources}
    graph = dependency_graph(cap)
    stage_of = {by_urn[u].plain["name"]: s for u, s in
                depth(graph, lambda u: by_urn[u].type == replay.CONTAINER).items()}
    # The containers each one waited for (its step began once they were healthy).
    after_of = {by_urn[u].plain["name"]: sorted(by_urn[d].plain["name"] for d in ds
                                                if by_urn[d].type == replay.CONTAINER)
                for u, ds in graph.items() if by_urn[u].type == replay.CONTAINER}
    first = min(a for a, _ in deployed.applied.values())
    # applied times count from the harness's own start: place Docker's start times
    # on that clock by the container started soonest after its step began.
    base = min((watched[n].started - a0 for n, (a0, _) in deployed.applied.items()
                if n in watched), default=0.0)
    processes = {}
    for name, (a0, a1) in deployed.applied.items():
        w = watched.get(name)
        if w is None:
            continue
        ready = (w.ready - w.started) if w.ready else None
        healthy = (w.healthy - w.started) if w.healthy else None
        processes[name] = {
            "key": next((k for k, n in deployed.containers.items() if n == name), name),
            "class": w.cls, "role": w.role, "stage": stage_of.get(name),
            "after": after_of.get(name, []),
            "applied_start_s": round(a0 - first, 3), "applied_end_s": round(a1 - first, 3),
            "started_s": round(w.started - base - first, 3),
            "ready_s": round(ready, 3) if ready is not None else None,
            "healthy_s": round(healthy, 3) if healthy is not None else None,
            "probe_wait_s": round(healthy - ready, 3) if None not in (ready, healthy) else None,
            "cpu_to_ready_s": _r(w.cpu_at(w.ready)),
            "cpu_to_healthy_s": _r(w.cpu_at(w.healthy)),
            "interval_s": w.health_interval_s, "start_period_s": w.start_period_s,
            "probe_s": round(_probe_seconds(name), 3),
        }
    stages: dict[str, dict[str, Any]] = {}
    for name, p in processes.items():
        s = stages.setdefault(str(p["stage"]), {"containers": [], "start_s": math.inf})
        s["containers"].append(name)
        s["start_s"] = min(s["start_s"], p["applied_start_s"])
    for s_key, s in stages.items():
        s["seconds"] = round(deployed.stage_seconds.get(int(s_key), 0.0), 2)
        s["probe_wait_s"] = max((processes[n]["probe_wait_s"] or 0) for n in s["containers"])
    synapse_cpu = sum(p["cpu_to_ready_s"] or 0 for p in processes.values()
                      if p["role"] in SYNAPSE_ROLES)
    all_cpu = sum(p["cpu_to_ready_s"] or 0 for p in processes.values())
    cores = os.cpu_count() or 1
    run = {
        "preset": preset, "containers": len(processes),
        "seconds": round(deployed.seconds_to_healthy, 2), "wall_with_capture_s": round(wall, 2),
        "stages": dict(sorted(stages.items(), key=lambda kv: int(kv[0]))),
        "processes": processes,
        "synapse_start_cpu_s": round(synapse_cpu, 2), "all_start_cpu_s": round(all_cpu, 2),
        "cores": cores, "floor_s": round(synapse_cpu / cores, 2),
        "ratio_to_floor": round(deployed.seconds_to_healthy / (synapse_cpu / cores), 2)
        if synapse_cpu else None,
    }
    run["computed_docker25"] = computed_total(run, NEW_ENGINE_START_INTERVAL_S)
    # This engine with every container probed every 5 s (the intervals before
    # healthchecks.py's singletons went to 2 s), from the same ready times.
    run["computed_all_5s"] = computed_total(run, 0.0, {r: 5.0 for r in ROLES})
    return run, deployed


def _r(v: float | None) -> float | None:
    return round(v, 3) if v is not None else None


# --- what a probe costs ----------------------------------------------------------


def probe_cost(deployed: replay.Deployed, n: int = PROBES) -> dict[str, Any]:
    """Run each kind of healthcheck n times as Docker runs it (an exec in the
    container) and read the CPU it cost: the container's cgroup, dockerd,
    containerd and the shims (runc runs under the shim), and the whole host
    (/proc/stat busy time, less the idle stack's own rate measured just before)."""
    api = replay.api()
    daemons = sw.pids_named("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
    out = {}
    for key in ("postgres", "redis", "main", "nginx"):
        name = deployed.containers[key]
        info = api.inspect_container(name)
        test = info["Config"]["Healthcheck"]["Test"]
        cmd = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        # Baseline: the host's and the daemons' busy rates with the stack idle (its own
        # healthchecks included), over about as long.
        b0, bd0, t0 = sw.host_busy_s(), sw.process_cpu_s(daemons), time.monotonic()
        time.sleep(3)
        idle_rate = (sw.host_busy_s() - b0) / (time.monotonic() - t0)
        daemon_idle_rate = (sw.process_cpu_s(daemons) - bd0) / (time.monotonic() - t0)
        c0, d0, h0, t0 = sw.cpu_ns(info["Id"]), sw.process_cpu_s(daemons), sw.host_busy_s(), \
            time.monotonic()
        for _ in range(n):
            ex = api.exec_create(name, cmd, user=info["Config"].get("User") or "")
            api.exec_start(ex["Id"])
        secs = time.monotonic() - t0
        c1, d1, h1 = sw.cpu_ns(info["Id"]), sw.process_cpu_s(daemons), sw.host_busy_s()
        host = (h1 - h0) - idle_rate * secs
        out[key] = {
            "test": " ".join(test[1:])[:80], "probes": n,
            "wall_ms": round(secs / n * 1e3, 1),
            "container_cpu_ms": round((c1 - c0) / 1e6 / n, 1),
            "daemons_cpu_ms": round(((d1 - d0) - daemon_idle_rate * secs) / n * 1e3, 1),
            "host_cpu_ms": round(host / n * 1e3, 1),
        }
    return out


def idle_cost(deployed: replay.Deployed, seconds: float = 15.0) -> dict[str, Any]:
    """The stack at rest, measured: CPU (in cores) of the daemons (dockerd,
    containerd, the shims: at rest their work is the healthchecks), of all the
    stack's containers, and of the host, beside the healthcheck probes per second
    the intervals ask for."""
    api = replay.api()
    daemons = sw.pids_named("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")
    ids = list(deployed.ids.values())
    probes = 0.0
    for name in deployed.ids:
        hc = api.inspect_container(name)["Config"].get("Healthcheck") or {}
        probes += 1e9 / hc["Interval"] if hc.get("Interval") else 0.0
    time.sleep(5)  # past the last start's afterglow
    d0, h0, t0 = sw.process_cpu_s(daemons), sw.host_busy_s(), time.monotonic()
    c0 = sum(sw.cpu_ns(i) or 0 for i in ids)
    time.sleep(seconds)
    secs = time.monotonic() - t0
    c1 = sum(sw.cpu_ns(i) or 0 for i in ids)
    d1, h1 = sw.process_cpu_s(daemons), sw.host_busy_s()
    return {"seconds": round(secs, 1), "probes_per_s": round(probes, 2),
            "daemons_cores": round((d1 - d0) / secs, 3),
            "containers_cores": round((c1 - c0) / 1e9 / secs, 3),
            "host_cores": round((h1 - h0) / secs, 3),
            "daemons_ms_per_probe": round((d1 - d0) / secs / probes * 1e3, 1) if probes else None}


def steady_cost(probe: dict[str, Any], probes_per_s: float, cores: int) -> float:
    """Share of the machine the healthchecks take at rest: probes per second x CPU each."""
    # The container's share plus the daemons' (the host-wide figure is noisier: it
    # subtracts an idle rate that Synapse's background work makes uneven).
    per = stats.median(v["container_cpu_ms"] + v["daemons_cpu_ms"]
                            for v in probe.values()) / 1e3
    return probes_per_s * per / cores


# --- run, markdown, plots ------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    plan = QUICK_RUNS if quick else FULL_RUNS
    if ONLY_PRESETS:
        plan = {k: v for k, v in FULL_RUNS.items() if k in ONLY_PRESETS}
    result: dict[str, Any] = {"quick": quick, "presets": {}, "probe_cost": None,
                              "new_engine_start_interval_s": NEW_ENGINE_START_INTERVAL_S}
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    for preset, repeats in plan.items():
        path = stack_file(tmp, f"bench-{preset}", preset)
        runs = []
        try:
            for i in range(repeats):
                run_, deployed = deploy_once(path, preset)
                print(f"{preset} run {i + 1}/{repeats}: {run_['seconds']:.1f} s to all healthy "
                      f"(stages " + ", ".join(f"{k}: {v['seconds']:.1f}"
                                              for k, v in run_["stages"].items())
                      + f"); floor {run_['floor_s']:.1f} s; ratio {run_['ratio_to_floor']}; "
                      f"computed Docker 25+: {run_['computed_docker25']['seconds']:.1f} s",
                      flush=True)
                if result["probe_cost"] is None and preset == "one-of-each":
                    result["probe_cost"] = probe_cost(deployed)
                    print("probe cost:", json.dumps(result["probe_cost"]), flush=True)
                if i == 0:
                    run_["idle"] = idle_cost(deployed)
                    print("at rest:", json.dumps(run_["idle"]), flush=True)
                runs.append(run_)
                replay.down(path, delete_data=True)
        finally:
            replay.down(path, delete_data=True)
        result["presets"][preset] = {"runs": runs, "summary": summarize(runs)}
    if result["probe_cost"]:
        cores = os.cpu_count() or 1
        result["steady_probe_share"] = {}
        for preset, p in result["presets"].items():
            procs = p["runs"][0]["processes"].values()
            share = {str(i): steady_cost(result["probe_cost"], len(procs) / i, cores)
                     for i in (1, 2, 5)}
            share["deployed"] = steady_cost(result["probe_cost"],
                                            sum(1 / x["interval_s"] for x in procs), cores)
            result["steady_probe_share"][preset] = {k: round(v, 4) for k, v in share.items()}
    return result


def recompute(result: dict[str, Any]) -> dict[str, Any]:
    """The computed figures and summaries again from the stored runs (after a
    change to the models above; the measurements are untouched)."""
    for p in result["presets"].values():
        for r in p["runs"]:
            r["computed_docker25"] = computed_total(r, result["new_engine_start_interval_s"])
            r["computed_all_5s"] = computed_total(r, 0.0, {x: 5.0 for x in ROLES})
        p["summary"] = summarize(p["runs"])
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = sorted({s for r in runs for s in r["stages"]}, key=int)
    procs = sorted({p["key"] for r in runs for p in r["processes"].values()})

    def per_proc(key: str, field: str) -> dict[str, float] | None:
        return _mmm([p[field] for r in runs for p in r["processes"].values() if p["key"] == key])

    return {
        "seconds": _mmm([r["seconds"] for r in runs]),
        "computed_docker25_s": _mmm([r["computed_docker25"]["seconds"] for r in runs]),
        "computed_all_5s_s": _mmm([r["computed_all_5s"]["seconds"] for r in runs]),
        "floor_s": _mmm([r["floor_s"] for r in runs]),
        "ratio_to_floor": _mmm([r["ratio_to_floor"] for r in runs]),
        "synapse_start_cpu_s": _mmm([r["synapse_start_cpu_s"] for r in runs]),
        "stages": {s: {"seconds": _mmm([r["stages"][s]["seconds"] for r in runs if s in r["stages"]]),
                       "probe_wait_s": _mmm([r["stages"][s]["probe_wait_s"] for r in runs
                                             if s in r["stages"]]),
                       "containers": sorted({runs[0]["processes"][n]["key"]
                                             for n in runs[0]["stages"].get(s, {}).get(
                                                 "containers", [])})}
                   for s in stages},
        "processes": {k: {f: per_proc(k, f) for f in ("ready_s", "healthy_s", "probe_wait_s",
                                                      "cpu_to_ready_s")} for k in procs},
    }


def _fmt(m: dict[str, float] | None) -> str:
    if not m:
        return "–"
    if m["n"] == 1 or m["min"] == m["max"]:
        return f"{m['median']:.1f}"
    return f"{m['median']:.1f} ({m['min']:.1f}–{m['max']:.1f})"


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    lines = [f"Each preset deployed from empty (volumes and secrets deleted first) through the "
             f"replay harness{' (quick mode: one run)' if result['quick'] else ''}; figures are "
             "median (min–max) over the runs. *Ready*: the process answers its readiness check "
             "(polled from the host every 50 ms); *healthy*: Docker's health_status event. "
             "CPU: the container's cgroup (cpuacct.usage) from start to ready. Floor: Synapse "
             "processes' start-up CPU divided by the cores.", "",
             "| preset | containers | to all healthy (s) | floor (s) | wall / floor | "
             "computed: every probe at 5 s, as before (s) | "
             f"computed: Docker 25+, start_interval {result['new_engine_start_interval_s']:g} s (s) |",
             "|---|---|---|---|---|---|---|"]
    for preset, p in result["presets"].items():
        s = p["summary"]
        lines.append(f"| {preset} | {p['runs'][0]['containers']} | {_fmt(s['seconds'])} | "
                     f"{_fmt(s['floor_s'])} | {_fmt(s['ratio_to_floor'])} | "
                     f"{_fmt(s['computed_all_5s_s'])} | {_fmt(s['computed_docker25_s'])} |")
    for preset, p in result["presets"].items():
        s = p["summary"]
        lines += ["", f"**{preset}, by dependency depth** (containers start as soon as their own "
                  "dependencies are healthy, so depths overlap; seconds: first start to last "
                  "healthy in the depth; probe wait: its longest ready→healthy)",
                  "", "| depth | containers | seconds | probe wait (s) |", "|---|---|---|---|"]
        for st, v in s["stages"].items():
            names = ", ".join(v["containers"][:6]) + (" …" if len(v["containers"]) > 6 else "")
            lines.append(f"| {st} | {names} | {_fmt(v['seconds'])} | {_fmt(v['probe_wait_s'])} |")
        lines += ["", f"**{preset}, per process** (seconds after its start)", "",
                  "| process | ready | healthy | waiting for a probe | start CPU (s) |",
                  "|---|---|---|---|---|"]
        for k, v in s["processes"].items():
            lines.append(f"| {k} | {_fmt(v['ready_s'])} | {_fmt(v['healthy_s'])} | "
                         f"{_fmt(v['probe_wait_s'])} | {_fmt(v['cpu_to_ready_s'])} |")
    pc = result.get("probe_cost")
    if pc:
        lines += ["", "**What one healthcheck probe costs** (each is a `docker exec`; "
                  f"{next(iter(pc.values()))['probes']} in a row per kind; host CPU less the "
                  "idle stack's rate)", "",
                  "| container | wall (ms) | in the container (ms CPU) | dockerd+containerd+shims "
                  "(ms CPU) | whole host (ms CPU) |", "|---|---|---|---|---|"]
        for k, v in pc.items():
            lines.append(f"| {k} | {v['wall_ms']} | {v['container_cpu_ms']} | "
                         f"{v['daemons_cpu_ms']} | {v['host_cpu_ms']} |")
        share = result.get("steady_probe_share", {})
        if share:
            lines += ["", "Share of the machine the healthchecks take at rest, every container "
                      "probed at the given interval:", "",
                      "| preset | all at 1 s | all at 2 s | all at 5 s | as deployed |",
                      "|---|---|---|---|---|"]
            for preset, v in share.items():
                lines.append(f"| {preset} | " + " | ".join(f"{v[i] * 100:.1f} %" for i in
                                                          ("1", "2", "5", "deployed")) + " |")
    idle = {k: p["runs"][0].get("idle") for k, p in result["presets"].items()}
    if any(idle.values()):
        lines += ["", "**The deployed stack at rest** (15 s, measured after each preset's first "
                  "deploy; cores busy): at rest the daemons' work is the healthchecks", "",
                  "| preset | probes/s asked | dockerd+containerd+shims | all containers | "
                  "whole host | daemons per probe (ms CPU) |", "|---|---|---|---|---|---|"]
        for k, v in idle.items():
            if v:
                lines.append(f"| {k} | {v['probes_per_s']} | {v['daemons_cores']} | "
                             f"{v['containers_cores']} | {v['host_cores']} | "
                             f"{v['daemons_ms_per_probe']} |")
    first = next(iter(result["presets"].values()))
    at_rest = [v["daemons_ms_per_probe"] for v in idle.values() if v and v["daemons_ms_per_probe"]]
    if pc and at_rest:
        per_ms = stats.median(at_rest) + stats.median(
            v["container_cpu_ms"] for v in pc.values())
        extra = 4 * (1 / 2 - 1 / 5)  # postgres, redis, main, nginx: 5 s -> 2 s
        s = first["summary"]
        lines += ["", f"Trade-off on this engine (no start_interval): probing postgres, redis, "
                  f"main and nginx every 2 s instead of 5 s asks {extra:.1f} more probes/s; at "
                  f"~{per_ms:.0f} ms CPU each (the daemons' CPU per probe at rest, median over "
                  f"the presets, + the exec in the "
                  f"container) that is {extra * per_ms / 1e3:.2f} cores "
                  f"({extra * per_ms / 1e3 / (os.cpu_count() or 1) * 100:.1f} % of this machine) "
                  f"for as long as the stack runs, against {_fmt(s['seconds'])} s measured "
                  f"instead of {_fmt(s['computed_all_5s_s'])} s computed with every probe at 5 s "
                  f"({next(iter(result['presets']))})."]
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines)


def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    from benchmarks.plotting import pyplot, save

    plt = pyplot()

    outdir.mkdir(parents=True, exist_ok=True)
    out = []
    presets = list(result["presets"])
    fig, ax = plt.subplots(figsize=(7, 4))
    all_stages = sorted({s for p in result["presets"].values() for s in p["summary"]["stages"]},
                        key=int)
    bottoms = [0.0] * len(presets)
    for st in all_stages:
        vals = [((result["presets"][p]["summary"]["stages"].get(st) or {}).get("seconds") or
                 {}).get("median", 0.0) for p in presets]
        ax.bar(presets, vals, bottom=bottoms, label=f"depth {st}")
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    comp = [(result["presets"][p]["summary"]["computed_docker25_s"] or {}).get("median", 0)
            for p in presets]
    ax.scatter(presets, comp, marker="_", s=800, color="k", zorder=3,
               label="computed Docker 25+ total")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Empty to all healthy, by dependency depth (depths overlap)")
    ax.legend(fontsize=8)
    path = save(fig, outdir, "deploy_stages.png")
    out.append(path)

    preset = "specialized" if "specialized" in result["presets"] else presets[0]
    procs = result["presets"][preset]["summary"]["processes"]
    keys = sorted(procs, key=lambda k: (procs[k]["ready_s"] or {}).get("median", 0))
    fig, ax = plt.subplots(figsize=(8, max(3, 0.3 * len(keys) + 1)))
    cpu = [(procs[k]["cpu_to_ready_s"] or {}).get("median", 0) for k in keys]
    ready = [(procs[k]["ready_s"] or {}).get("median", 0) for k in keys]
    wait = [(procs[k]["probe_wait_s"] or {}).get("median", 0) for k in keys]
    y = range(len(keys))
    ax.barh([i + 0.2 for i in y], cpu, height=0.4, label="start CPU (s)")
    ax.barh([i - 0.2 for i in y], ready, height=0.4, label="start to ready (s)")
    ax.barh([i - 0.2 for i in y], wait, left=ready, height=0.4, label="ready to healthy (probe wait)")
    ax.set_yticks(list(y), keys, fontsize=7)
    ax.set_xlabel("seconds (median)")
    ax.set_title(f"{preset}: per process start CPU, time to ready and probe wait")
    ax.legend(fontsize=8)
    path = save(fig, outdir, "deploy_processes.png")
    out.append(path)
    return out


def main(argv: list[str]) -> int:
    """Alone: the runner's run of this benchmark (results file, BENCHMARKS.md), or
    with --preset NAME a partial run written beside it, not over it."""
    global ONLY_PRESETS
    quick = "--quick" in argv
    ONLY_PRESETS = tuple(argv[i + 1] for i, a in enumerate(argv) if a == "--preset")
    if not ONLY_PRESETS:
        from benchmarks.__main__ import main as runner

        return runner(["--only", NAME, *(["--quick"] if quick else [])])
    result = run(quick)
    root = Path(__file__).resolve().parent
    path = root / "results" / f"{NAME}-partial.json"
    path.write_text(json.dumps({"name": NAME, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime()),
                                "result": result}, indent=1))
    print(markdown(result, []))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
