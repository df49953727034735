"""The benchmarks, in the order they run and appear in BENCHMARKS.md, and where
their results and plots live. Each is a module `benchmarks.bench_<name>` with NAME,
TITLE, run(quick), markdown(result, plots) and plots(result, outdir)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

ORDER = ("planning", "deploy", "change", "serving", "federation", "backup", "swarm_bed")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PLOTS = ROOT / "benchmarks" / "plots"
REPORT = ROOT / "BENCHMARKS.md"


def load(name: str) -> ModuleType | None:
    """The module of a benchmark, or None when it is not written (yet)."""
    if name not in ORDER:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(ORDER)}")
    module_name = f"benchmarks.bench_{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        raise
    if getattr(module, "NAME", None) != name:
        raise ValueError(f"{module_name}.NAME is {getattr(module, 'NAME', None)!r}, not {name!r}")
    return module


def results_path(name: str, results: Path = RESULTS) -> Path:
    return results / f"{name}.json"


def read_results(name: str, results: Path = RESULTS) -> dict[str, Any] | None:
    path = results_path(name, results)
    if not path.exists():
        return None
    return json.loads(path.read_text())
