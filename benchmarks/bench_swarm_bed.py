"""What the swarm bed (tests/e2e/swarm/bed.py) costs: seconds until three nodes
are ready, memory of the idle bed (each node engine with its containers, and the
registry), and the seconds to put the stand-in images on the nodes (push of the
shared rootfs to the registry, a node's pull from it).

Run alone: .venv/bin/python -m benchmarks.bench_swarm_bed [--quick]   (needs Docker
and the images; run it under `flock /tmp/e2e.lock`)
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from tests.e2e.swarm import bed as swarm_bed

NAME = "swarm_bed"
TITLE = "Swarm bed: start-up and memory of a three-node swarm on one machine"
IMAGE = "redis:7.0-bookworm"  # the stand-ins share one rootfs layer: one is all of it


def run(quick: bool) -> dict[str, Any]:
    starts, memory = [], []
    push = pulls = None
    for i in range(1 if quick else 3):
        bed = swarm_bed.start()
        try:
            starts.append(bed.seconds_to_ready)
            time.sleep(5)  # settled: the engines' start-up work done
            memory.append(bed.memory_mb())
            if i == 0:
                push = bed.push([IMAGE])
                pulls = {}
                for name, node in bed.nodes.items():
                    for image in node.images.list():
                        node.images.remove(image.id, force=True)
                    t0 = time.monotonic()
                    node.images.pull(IMAGE)
                    pulls[name] = time.monotonic() - t0
        finally:
            swarm_bed.stop(bed.manager)
    return {"start_s": starts, "memory_mb": memory, "push_s": push, "pull_s": pulls}


def markdown(result: dict, plots: list[str]) -> str:
    parts = sorted(result["memory_mb"][0])
    mem = {p: statistics.median(m[p] for m in result["memory_mb"]) for p in parts}
    lines = [
        "The host's engine (manager) and two engines in containers on Debian 13's docker.io, "
        "joined into one swarm, and a registry; `swarm_bed.start()` from nothing but the "
        "nodes' kept volumes. Memory is each part's cgroup usage (page cache included) once "
        "idle, the host engine's own growth not counted.",
        "",
        f"- **start-up** (to three ready nodes): median {statistics.median(result['start_s']):.1f} s "
        f"over {len(result['start_s'])} runs ({', '.join(f'{s:.1f}' for s in result['start_s'])})",
        "- **memory, idle**: " + ", ".join(f"{p} {mem[p]:.0f} MiB" for p in parts)
        + f"; {sum(mem.values()):.0f} MiB in all",
        f"- **images onto the nodes**: push of the shared rootfs (1 GB) to the registry "
        f"{result['push_s']:.1f} s; a node's pull from it "
        + ", ".join(f"{n} {s:.1f} s" for n, s in sorted(result["pull_s"].items())),
    ]
    return "\n".join(lines) + "\n"


def plots(result: dict, outdir) -> list:
    return []


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import main as runner

    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    return runner(["--only", NAME, *(["--quick"] if quick else [])])


if __name__ == "__main__":
    sys.exit(main())
