"""Run the benchmarks and refresh BENCHMARKS.md and the plots:

    python -m benchmarks [--quick] [--only NAME ...]

Benchmarks run in the order planning, deploy, change, serving, federation, backup
(registry.ORDER).
Each writes benchmarks/results/<name>.json (machine, timestamps, figures) as soon
as it finishes, so a later failure keeps the earlier figures. Then the report is
written from every results file present. --quick: fewer repeats and sizes, for
development; `make bench` runs the full set. Exit status 1 if a benchmark failed
or is not written yet; 2 for a bad argument."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks import machine, registry, report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and sizes (development; not for BENCHMARKS.md)")
    parser.add_argument("--only", nargs="+", choices=registry.ORDER, metavar="NAME",
                        help=f"run only these ({', '.join(registry.ORDER)})")
    return parser.parse_args(argv)


def selected(only: list[str] | None) -> list[str]:
    """The benchmarks to run, in registry order whatever order --only gave."""
    return [n for n in registry.ORDER if not only or n in only]


def run_one(name: str, quick: bool, results: Path) -> bool:
    module = registry.load(name)
    if module is None:
        print(f"[{name}] benchmarks/bench_{name}.py is not written yet: skipped", file=sys.stderr)
        return False
    print(f"[{name}] {module.TITLE}{' (quick)' if quick else ''}", flush=True)
    started = machine.collect()
    t0 = time.monotonic()
    try:
        result = module.run(quick)
    except Exception:  # one failure must not lose the other benchmarks' figures
        traceback.print_exc()
        print(f"[{name}] failed after {time.monotonic() - t0:.0f} s; its previous results "
              "file, if any, is kept", file=sys.stderr)
        return False
    record = {"name": name, "title": module.TITLE, "quick": quick, "machine": started,
              "seconds": round(time.monotonic() - t0, 1), "result": result}
    results.mkdir(parents=True, exist_ok=True)
    path = registry.results_path(name, results)
    path.write_text(json.dumps(record, indent=1) + "\n")  # key order is the modules'
    print(f"[{name}] done in {record['seconds']} s: {path.relative_to(registry.ROOT)}", flush=True)
    if hasattr(module, "refresh_docs"):  # e.g. docs/sizing.md's figures (serving)
        module.refresh_docs(result)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ok = [run_one(name, args.quick, registry.RESULTS) for name in selected(args.only)]
    written = report.write()
    print(f"wrote {written.relative_to(registry.ROOT)} and benchmarks/plots/")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
