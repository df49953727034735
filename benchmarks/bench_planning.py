"""Planning cost: what it costs to turn a stack config into resources and files,
for 10, 50, 200 and the largest number of Synapse processes the settings accept,
beside the Pulumi SDK's own cost of registering as many bare resources.

Measures, each in a fresh child process (so peak memory is that measure's alone):
- `program`: the Pulumi program under the unit tests' mocks
  (tests/support/capture.py run_stack_file), timed inside the child from config
  read to the last registration settled; imports excluded.
- `bare`: the same number of resources as `program` registered, pulumi_docker
  Containers (as many as the program's, each with only a name and an image) and
  Volumes (the rest, each with only a name), in a loop under the same mocks and
  monitor; imports excluded. `program` / `bare` is our own overhead.
- `render_cli`: `python -m components.tools.render --config FILE --out DIR` as an
  operator runs it, timed from the parent: interpreter start, imports, planning,
  rendering and writing every file.
- `render_inproc`: planning and rendering only (stack file -> plan -> container
  specs -> every file's text in memory, as render.py does before writing), timed
  inside the child; imports excluded.
Peak memory is the child's maximum resident set size (ru_maxrss of the rusage
wait4(2) returns for that child: the whole process, interpreter and imports
included). The child also reports its VmHWM (/proc/self/status) after the imports,
before the measured work, so the work's own share shows.

A "process" is a Synapse process (main + workers), as topology.check_capacity
counts them; containers add Postgres, Redis, nginx and nginx-config. The largest
count is main + every class at MAX_WORKERS_PER_CLASS. Each count needs Postgres
connections for every pool at cp_max: above the default max_connections the stack
file raises synapse:postgres.settings.max_connections to what check_capacity asks.

Run: python -m benchmarks --only planning [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import stats
from components.plan import postgres_conf
from components.plan.settings import MAX_WORKERS_PER_CLASS
from components.plan.workers import CLASS_NAMES

NAME = "planning"
TITLE = "Planning cost"

ROOT = Path(__file__).resolve().parent.parent
LARGEST = 1 + len(CLASS_NAMES) * MAX_WORKERS_PER_CLASS
COUNTS = (10, 50, 200, LARGEST)
QUICK_COUNTS = (10, 50)
REPEATS = 5
# One repeat at the largest count (all four measures) took about 35 s on 2 cores
# while rendering was quadratic, about 12 s since: 3 of them are enough to show
# the spread.
LARGEST_REPEATS = 3
QUICK_REPEATS = 2
MEASURES = ("program", "bare", "render_inproc", "render_cli")
LABELS = {
    "program": "Pulumi program under mocks",
    "bare": "bare SDK resources (Containers + Volumes), same count, same mocks",
    "render_inproc": "planning + rendering, in process",
    "render_cli": "render command (subprocess, with interpreter start and writes)",
}
IN_CHILD = ("program", "bare", "render_inproc")  # timed inside the child


# --- stack files -----------------------------------------------------------------

def distribute(processes: int) -> dict[str, int]:
    """Worker counts for `processes` Synapse processes: main plus the rest spread
    evenly over the classes, in the order components/plan/workers.py lists them."""
    workers = processes - 1
    if not 0 <= workers <= len(CLASS_NAMES) * MAX_WORKERS_PER_CLASS:
        raise ValueError(f"{processes} processes is outside 1..{LARGEST}")
    base, extra = divmod(workers, len(CLASS_NAMES))
    return {c: base + (i < extra) for i, c in enumerate(CLASS_NAMES)}


def connections_needed(processes: int) -> int:
    """What topology.check_capacity asks of max_connections."""
    return processes * postgres_conf.DB_POOL_MAX + postgres_conf.RESERVED_CONNECTIONS


def stack_config(processes: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "synapse:serverName": "bench.localhost",
        "synapse:publicBaseUrl": "http://127.0.0.1:8008/",
        "synapse:egress": False,
        "synapse:trustedKeyServers": [],
        "synapse:workers": distribute(processes),
    }
    needed = connections_needed(processes)
    if needed > postgres_conf.DEFAULT_MAX_CONNECTIONS:
        # Within Postgres' own range for the setting (postgres_conf.PARAMETERS).
        assert needed <= postgres_conf.PARAMETERS["max_connections"].max
        config["synapse:postgres"] = {"settings": {"max_connections": needed}}
    return {"config": config}


def write_stack(directory: Path, processes: int) -> Path:
    path = directory / f"Pulumi.bench-planning-{processes}.yaml"
    path.write_text(yaml.safe_dump(stack_config(processes), sort_keys=False))
    return path


# --- the child: one measurement ---------------------------------------------------

def _hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _settle() -> None:
    import asyncio

    from pulumi.runtime import stack as pulumi_stack

    asyncio.get_event_loop().run_until_complete(pulumi_stack.wait_for_rpcs())


def probe(measure: str, config: Path, resources: int, containers: int) -> dict[str, Any]:
    """Run one measurement in this process; imports happen before the clock starts."""
    if measure == "program":
        import components.program  # noqa: F401  (the program's imports, untimed)
        from tests.support.capture import run_stack_file

        hwm = _hwm_kib()
        t0 = time.perf_counter()
        capture = run_stack_file(config)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "resources": len(capture.resources),
                "containers": len(capture.containers), "hwm_after_imports_kib": hwm}
    if measure == "bare":
        import pulumi_docker as docker

        from tests.support.capture import install_pairs

        hwm = _hwm_kib()
        t0 = time.perf_counter()
        monitor = install_pairs({}, stack=config.stem.partition(".")[2])
        # As many Containers as the program registers, the rest Volumes (most of the
        # program's other resources), so the mix of resource types is alike. Mocks
        # register the root Stack resource as in the program's run; it counts in
        # both totals.
        for i in range(containers):
            docker.Container(f"bare{i}", name=f"bare{i}", image="bench:bare")
        for i in range(resources - 1 - containers):
            docker.Volume(f"bare-volume{i}", name=f"bare-volume{i}")
        _settle()
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "resources": len(monitor.registered),
                "hwm_after_imports_kib": hwm}
    if measure == "render_inproc":
        from components.render.containers import build_deployment
        from components.tools.render import plan_for
        from components.render.synapse_config import PLACEHOLDERS

        hwm = _hwm_kib()
        t0 = time.perf_counter()
        deployment = build_deployment(plan_for(config))
        files = sum(len(c.rendered_files(PLACEHOLDERS)) for c in deployment.containers)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "files": files, "containers": len(deployment.containers),
                "hwm_after_imports_kib": hwm}
    raise ValueError(f"unknown measure {measure!r}")


# --- the parent: spawn, time, read max RSS ----------------------------------------

def _spawn(argv: list[str]) -> tuple[float, int, str]:
    """Run argv; (wall seconds, the child's max RSS in KiB from wait4, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n"
                               + err.read().decode(errors="replace")[-3000:])
        return wall, usage.ru_maxrss, out.read().decode()


def measure_once(measure: str, config: Path, program: dict[str, Any] | None,
                 scratch: Path) -> dict[str, Any]:
    if measure == "render_cli":
        out = scratch / f"render-{config.stem}"
        wall, rss, text = _spawn([sys.executable, "-m", "components.tools.render",
                                  "--config", str(config), "--out", str(out)])
        subprocess.run(["rm", "-rf", str(out)], check=True)
        return {"seconds": wall, "wall": wall, "max_rss_kib": rss, "output": text.strip()}
    wall, rss, text = _spawn([sys.executable, "-m", "benchmarks.bench_planning", "--probe",
                              measure, "--config", str(config),
                              "--resources", str(program["resources"] if program else 0),
                              "--containers", str(program["containers"] if program else 0)])
    figures = json.loads(text.strip().splitlines()[-1])
    return {**figures, "wall": wall, "max_rss_kib": rss}


def run(quick: bool) -> dict[str, Any]:
    counts = QUICK_COUNTS if quick else COUNTS
    sizes = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-planning-") as tmp:
        scratch = Path(tmp)
        for processes in counts:
            config = write_stack(scratch, processes)
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MEASURES}
            program = None
            repeats = QUICK_REPEATS if quick else \
                LARGEST_REPEATS if processes == LARGEST else REPEATS
            for r in range(repeats):
                # The measures take turns, so drift in the machine's load spreads
                # over all of them rather than landing on one.
                for measure in MEASURES:
                    figures = measure_once(measure, config, program, scratch)
                    if measure == "program":
                        program = figures
                    if measure == "bare" and figures["resources"] != program["resources"]:
                        raise RuntimeError(f"bare registered {figures['resources']} resources, "
                                           f"the program {program['resources']}")
                    runs[measure].append(figures)
                    print(f"  {processes:>4} processes, run {r + 1}/{repeats}: {measure:<13} "
                          f"{figures['seconds']:7.3f} s  {figures['max_rss_kib'] / 1024:6.1f} MiB",
                          flush=True)
            sizes.append(summarise(processes, runs))
    return {"largest": LARGEST,
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "largest_reason": largest_reason(),
            # A list, so the order survives the results file's sorted keys.
            "measures": [[m, LABELS[m]] for m in MEASURES], "sizes": sizes}


def summarise(processes: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    program = runs["program"][0]
    out: dict[str, Any] = {
        "processes": processes,
        "repeats": len(runs["program"]),
        "workers": distribute(processes),
        "max_connections": max(connections_needed(processes),
                               postgres_conf.DEFAULT_MAX_CONNECTIONS),
        "resources": program["resources"],
        "containers": program["containers"],
        "files": runs["render_inproc"][0]["files"],
    }
    for measure, figures in runs.items():
        entry = {"seconds": stats.summary([f["seconds"] for f in figures]),
                 "max_rss_mib": stats.summary([f["max_rss_kib"] / 1024 for f in figures]),
                 "raw_seconds": [round(f["seconds"], 4) for f in figures]}
        hwm = [f["hwm_after_imports_kib"] / 1024 for f in figures
               if f.get("hwm_after_imports_kib") is not None]
        if hwm:
            entry["rss_after_imports_mib"] = stats.summary(hwm)
        out[measure] = entry
    return out


def largest_reason() -> str:
    pg = postgres_conf
    default_fits = (pg.DEFAULT_MAX_CONNECTIONS - pg.RESERVED_CONNECTIONS) // pg.DB_POOL_MAX
    return (f"main + {len(CLASS_NAMES)} classes x {MAX_WORKERS_PER_CLASS} workers "
            f"(settings.MAX_WORKERS_PER_CLASS) = {LARGEST} Synapse processes; "
            f"topology.check_capacity needs max_connections >= {LARGEST} x cp_max "
            f"{postgres_conf.DB_POOL_MAX} + {postgres_conf.RESERVED_CONNECTIONS} reserved = "
            f"{connections_needed(LARGEST)} (default {postgres_conf.DEFAULT_MAX_CONNECTIONS}, "
            f"so the default admits at most {default_fits} processes), within Postgres' "
            f"1..{int(pg.PARAMETERS['max_connections'].max)}")


# --- report -------------------------------------------------------------------------

def _median(size: dict[str, Any], measure: str, key: str = "seconds") -> float:
    return size[measure][key]["median"]


def growth_exponent(x0: float, y0: float, x1: float, y1: float) -> float:
    """k in y ~ x^k between two points: 1 is linear, 2 quadratic."""
    return math.log(y1 / y0) / math.log(x1 / x0)


def _shape(k: float) -> str:
    if k < 0.8:
        return "sublinear (a fixed cost dominates)"
    if k <= 1.2:
        return "about linear"
    if k <= 1.7:
        return "superlinear"
    return "about quadratic" if k <= 2.3 else "worse than quadratic"


def markdown(result: dict[str, Any], plots: list[str]) -> str:
    sizes = result["sizes"]
    lines = [
        f"Synapse processes = main + workers, spread evenly over the worker classes; the "
        f"largest count the settings accept is **{result['largest']}**: "
        f"{result['largest_reason']}. Each measure ran "
        f"{_repeats(sizes)} per count, each time in a fresh process, the measures taking "
        "turns; times are seconds (min / median / max). Peak memory "
        "is the child's max RSS from wait4(2) (the whole process, interpreter and imports "
        "included); \"after imports\" is its VmHWM before the measured work started.",
        "",
    ]
    for measure, label in result["measures"]:
        lines += [f"### {label[0].upper()}{label[1:]}", "",
                  "| processes | containers | resources | min s | median s | max s | "
                  "median ÷ bare SDK | ms per process | peak RSS MiB (median) | "
                  "after imports MiB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in sizes:
            t = s[measure]["seconds"]
            after = s[measure].get("rss_after_imports_mib", {}).get("median")
            lines.append(
                f"| {s['processes']} | {s['containers']} | {s['resources']} | {t['min']:.3f} | "
                f"{t['median']:.3f} | {t['max']:.3f} | "
                f"{t['median'] / _median(s, 'bare'):.1f} | "
                f"{1000 * t['median'] / s['processes']:.1f} | "
                f"{s[measure]['max_rss_mib']['median']:.0f} | "
                + (f"{after:.0f} |" if after is not None else "– |"))
        lines.append("")
    lines += ["### What the figures say", "", *commentary(result), ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _repeats(sizes: list[dict[str, Any]]) -> str:
    counts = sorted({s["repeats"] for s in sizes}, reverse=True)
    if len(counts) == 1:
        return f"{counts[0]} times"
    at = {n: ", ".join(str(s["processes"]) for s in sizes if s["repeats"] == n) for n in counts}
    return ", ".join(f"{n} times at {at[n]} processes" for n in counts)


def commentary(result: dict[str, Any]) -> list[str]:
    """Sentences computed from the figures (nothing here is written in advance)."""
    sizes = result["sizes"]
    first, last = sizes[0], sizes[-1]
    out = []
    ratios = [_median(s, "program") / _median(s, "bare") for s in sizes]
    out.append(
        f"- Our program under mocks costs {min(ratios):.1f}x to {max(ratios):.1f}x what the "
        f"SDK needs to register as many bare resources ({ratios[0]:.1f}x at "
        f"{first['processes']} processes, {ratios[-1]:.1f}x at {last['processes']}): the rest "
        "is our planning, file rendering, and the component resources' apply callbacks.")
    if len(sizes) > 1:
        before = sizes[-2]
        for measure in ("program", "render_inproc", "bare"):
            k = growth_exponent(first["processes"], _median(first, measure),
                                last["processes"], _median(last, measure))
            # The two largest counts: how it grows where it is expensive.
            k_top = growth_exponent(before["processes"], _median(before, measure),
                                    last["processes"], _median(last, measure))
            out.append(
                f"- {result_label(measure)}: {_median(first, measure):.2f} s at "
                f"{first['processes']} processes, {_median(last, measure):.2f} s at "
                f"{last['processes']} ({_median(last, measure) / _median(first, measure):.0f}x "
                f"for {last['processes'] / first['processes']:.0f}x the processes): growth "
                f"exponent {k:.2f}, {_shape(k)}"
                + (f"; between {before['processes']} and {last['processes']} processes "
                   f"{k_top:.2f}, {_shape(k_top)}." if before is not first else "."))
    # Fastest against fastest: the least disturbed runs of each.
    start = first["render_cli"]["seconds"]["min"] - first["render_inproc"]["seconds"]["min"]
    out.append(
        f"- The render command takes {_median(first, 'render_cli'):.2f} s at "
        f"{first['processes']} processes (median); its fastest run is {start:.2f} s slower "
        f"than the fastest in-process planning + rendering: interpreter start, imports and "
        f"writing the {first['files']} files. At {last['processes']} processes it takes "
        f"{_median(last, 'render_cli'):.2f} s for {last['files']} files, "
        f"{_median(last, 'render_cli') / _median(last, 'render_inproc'):.1f}x planning and "
        "rendering in process: besides writing, it renders every file a second time for "
        "the config-hash label in manifest.json (components/tools/render.py `manifest` reads "
        "`ContainerSpec.labels`, whose `config_hash` renders the container's files).")
    spread = [(s["processes"], m, s[m]["seconds"]["max"] / s[m]["seconds"]["min"])
              for s in sizes for m in MEASURES if s[m]["seconds"]["min"] > 0]
    noisy = [x for x in spread if x[2] > 1.5]
    if noisy:
        worst = max(noisy, key=lambda x: x[2])
        out.append(
            f"- Noise: in {len(noisy)} of {len(spread)} series the slowest run took over 1.5x "
            f"the fastest (worst: `{worst[1]}` at {worst[0]} processes, "
            f"{worst[2]:.1f}x); the minima are the figures least disturbed by other work.")
    else:
        out.append("- Noise: in every series the slowest run is within 1.5x of the fastest.")
    if "load_before" in result:
        out.append(f"- The machine's 1-minute load average was {result['load_before']:.1f} before "
                   f"the run and {result['load_after']:.1f} after it.")
    grow = last["program"]["max_rss_mib"]["median"] - first["program"]["max_rss_mib"]["median"]
    base = first["program"].get("rss_after_imports_mib", {}).get("median")
    out.append(
        f"- Peak memory of the program under mocks: "
        f"{first['program']['max_rss_mib']['median']:.0f} MiB at {first['processes']} processes"
        + (f" ({base:.0f} MiB of it is the interpreter and imports)" if base else "")
        + f", {last['program']['max_rss_mib']['median']:.0f} MiB at {last['processes']} "
        f"(+{grow:.0f} MiB, {1024 * grow / max(1, last['processes'] - first['processes']):.0f} "
        f"KiB per added process); bare SDK resources peak at "
        f"{last['bare']['max_rss_mib']['median']:.0f} MiB for the same count.")
    return out


def result_label(measure: str) -> str:
    return LABELS[measure][0].upper() + LABELS[measure][1:]


def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    from benchmarks.plotting import pyplot, save

    plt = pyplot()

    sizes = result["sizes"]
    x = [s["processes"] for s in sizes]
    written = []
    for key, ylabel, fname, title in (
            ("seconds", "seconds (log scale)", "planning_time.png",
             "Planning cost: time (median, bars min-max)"),
            ("max_rss_mib", "peak RSS, MiB", "planning_memory.png",
             "Planning cost: peak memory (median, bars min-max)")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for measure, label in result["measures"]:
            med = [s[measure][key]["median"] for s in sizes]
            low = [m - s[measure][key]["min"] for m, s in zip(med, sizes)]
            high = [s[measure][key]["max"] - m for m, s in zip(med, sizes)]
            ax.errorbar(x, med, yerr=[low, high], marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        if key == "seconds":
            ax.set_yscale("log")
        ax.set_xticks(x, [str(v) for v in x])
        ax.set_xlabel("Synapse processes (log scale)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = save(fig, outdir, fname)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_planning")
    parser.add_argument("--probe", choices=IN_CHILD, help="(internal) one measurement")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--resources", type=int, default=0)
    parser.add_argument("--containers", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.config, args.resources, args.containers)))
        return 0
    from benchmarks.__main__ import main as runner

    return runner(["--only", NAME, *(["--quick"] if args.quick else [])])


if __name__ == "__main__":
    sys.exit(main())
