"""BENCHMARKS.md and benchmarks/plots/*.png, from benchmarks/results/*.json only
(no measuring): `python -m benchmarks.report` rewrites both from the results files
present. The head names the machine of the newest results file; a section measured
on another revision or date says so. A benchmark without a results file gets a
short "not run yet" section."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from benchmarks import machine, registry

REGENERATE = """\
Regenerate: `make bench` (about 25 minutes here; needs root and Docker, like `make test`)
measures everything and rewrites this file and `benchmarks/plots/`;
`.venv/bin/python -m benchmarks --only planning` (or `deploy`, `change`, `serving`)
measures one section; `.venv/bin/python -m benchmarks.report` rewrites this file and
the plots from the results files in `benchmarks/results/` without measuring."""

TITLES = {"planning": "Planning cost", "deploy": "Deploy time", "change": "Change cost",
          "serving": "Serving", "federation": "Federation", "backup": "Backup and restore",
          "swarm_bed": "Swarm bed"}


def machine_lines(m: dict[str, Any]) -> list[str]:
    return [
        f"- **cores** {m.get('cores')}, **memory** {m.get('memory_gib')} GiB, "
        f"**CPU** {m.get('cpu_model')}, **kernel** {m.get('kernel')}",
        f"- **Docker server** {m.get('docker_server')}, **Python** {m.get('python')}, "
        f"**Synapse** {m.get('synapse_version')} (`{m.get('synapse_image')}`)",
        f"- **git revision** {m.get('git_revision')}, **date** {m.get('date')}",
    ]


def missing_section(name: str) -> str:
    return (f"## {TITLES[name]}\n\nNot run yet: `make bench` "
            f"(or `.venv/bin/python -m benchmarks --only {name}`).\n")


def section(name: str, record: dict[str, Any] | None, module, head: dict[str, Any],
            plots_dir: Path) -> str:
    if record is None:
        return missing_section(name)
    title = record.get("title") or TITLES[name]
    if module is None:
        return (f"## {title}\n\nA results file exists but `benchmarks/bench_{name}.py` "
                "does not, so it cannot be shown.\n")
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [_relative(p) for p in module.plots(record["result"], plots_dir)]
    notes = []
    m = record.get("machine", {})
    if record.get("quick"):
        notes.append("**quick mode** (fewer repeats and sizes; not the full run)")
    if (m.get("git_revision"), m.get("date", "")[:10]) != \
            (head.get("git_revision"), head.get("date", "")[:10]):
        notes.append(f"measured at revision {m.get('git_revision')} on {m.get('date')}")
    if any(m.get(k) != head.get(k) for k in ("cores", "memory_gib", "cpu_model",
                                              "docker_server")):
        notes.append("on another machine: " + "; ".join(machine_lines(m)).replace("- ", ""))
    note = f"_{'; '.join(notes)}; run took {record.get('seconds')} s._\n\n" if notes else \
        f"_Run took {record.get('seconds')} s._\n\n"
    return f"## {title}\n\n{note}{module.markdown(record['result'], plots).rstrip()}\n"


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(registry.ROOT))
    except ValueError:
        return str(path)


def render(results: Path = registry.RESULTS, plots_dir: Path = registry.PLOTS) -> str:
    records = {n: registry.read_results(n, results) for n in registry.ORDER}
    present = [r for r in records.values() if r]
    head = max((r["machine"] for r in present), key=lambda m: m.get("date", ""),
               default=None) or machine.collect()
    parts = ["# Benchmarks\n",
             "Figures from one machine, written by `python -m benchmarks` "
             "(`make bench`); not part of `make test`. The machine "
             + ("of the newest results:" if present else "(nothing measured yet):"),
             "", *machine_lines(head), "", REGENERATE, ""]
    for name in registry.ORDER:
        parts.append(section(name, records[name], registry.load(name), head, plots_dir))
    return "\n".join(parts)


def write(results: Path = registry.RESULTS, plots_dir: Path = registry.PLOTS,
          out: Path = registry.REPORT) -> Path:
    out.write_text(render(results, plots_dir))
    return out


if __name__ == "__main__":
    print(f"wrote {write()}")
    sys.exit(0)
