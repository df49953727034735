"""Prints how long planning, rendering and a full mocked Pulumi run take, and the
peak memory, for growing worker counts. Run: .venv/bin/python -m benchmarks.bench_program"""

from __future__ import annotations

import time
import tracemalloc

from components.containers import build_deployment
from components.settings import load_settings
from components.topology import build_plan
from tests.support.capture import run_program


def config(rooms: int, senders: int) -> dict:
    return {"serverName": "example.org",
            "workers": {"rooms": rooms, "sender": senders, "client_sync": 1,
                        "federation_reader": 1, "media": 1, "tasks": 1}}


def timed(fn, repeat: int = 5) -> tuple[float, int]:
    best, peak = float("inf"), 0
    for _ in range(repeat):
        tracemalloc.start()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak


def main() -> None:
    print(f"{'rooms+senders':>14} {'containers':>10} {'render ms':>10} {'render MiB':>10} "
          f"{'mocks ms':>9} {'resources':>9}")
    for rooms, senders in [(1, 1), (4, 4), (16, 8), (24, 12)]:
        raw = config(rooms, senders)

        def render() -> None:
            d = build_deployment(build_plan(load_settings(raw, "bench")))
            for c in d.containers:
                c.rendered_files()

        render_s, render_peak = timed(render)
        t = time.perf_counter()
        cap = run_program(raw, stack="bench")
        mocks_s = time.perf_counter() - t
        print(f"{rooms:>7}+{senders:<6} {len(cap.containers):>10} {render_s * 1e3:>10.1f} "
              f"{render_peak / 2**20:>10.1f} {mocks_s * 1e3:>9.0f} {len(cap.resources):>9}")


if __name__ == "__main__":
    main()
