"""Resource ordering, as the Pulumi engine does it.

Creates and updates: a resource is applied once everything it depends on (its
`dependencies` and its parent) is done, with no other limit. The Python SDK sends
a resource's RegisterResource only after awaiting the URN of every resource it
depends on, a local component standing for its children (pulumi
`runtime/rpc.py`, `_add_dependency`; `runtime/resource.py`, where a URN resolves
when RegisterResource returns); the engine answers a registration once its step
has run (pkg/resource/deploy/source_eval.go, step_executor.go), and runs steps
with `--parallel` unbounded by default ("Defaults to unbounded (2147483647)",
pulumi `automation/_stack.py`). So each resource starts when its own
dependencies are done, never in stages.

Deletes (resources gone from the program, the old halves of create-before-delete
replacements, and a destroy) come after the program has registered everything:
the step generator groups them into antichains, each resource in one after
everything depending on it, and the executor runs one antichain at a time, its
members in parallel (step_generator.go `ScheduleDeletes`,
deployment_executor.go). The SDK-side files were read in the installed SDK
(requirements.txt's pulumi); the engine's Go files could not be fetched here and
are cited from their known layout."""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Mapping

from tests.e2e.replay.errors import ReplayError, log
from tests.support.capture import Capture

COMPONENT_PREFIX = "synapse:index:"


def dependency_graph(cap: Capture) -> dict[str, set[str]]:
    """URN -> URNs that must be applied first: its `dependencies` and its parent.
    Depending on a component means depending on everything under it."""
    by_urn = {r.urn: r for r in cap.resources}
    children: dict[str, list[str]] = {}
    for r in cap.resources:
        if r.parent:
            children.setdefault(r.parent, []).append(r.urn)

    def descendants(urn: str) -> set[str]:
        out: set[str] = set()
        for c in children.get(urn, []):
            out.add(c)
            out |= descendants(c)
        return out

    graph: dict[str, set[str]] = {}
    for r in cap.resources:
        deps: set[str] = set()
        for d in r.dependencies:
            if d not in by_urn:
                raise ReplayError(f"{r.name} depends on an unregistered resource {d}")
            deps.add(d)
            if by_urn[d].type.startswith(COMPONENT_PREFIX):
                deps |= descendants(d)
        if r.parent and r.parent in by_urn:
            deps.add(r.parent)
        deps.discard(r.urn)
        graph[r.urn] = deps
    # Reject cycles now rather than hang later.
    done: set[str] = set()
    while len(done) < len(graph):
        ready = [u for u, ds in graph.items() if u not in done and ds <= done]
        if not ready:
            raise ReplayError(f"dependency cycle among {sorted(set(graph) - done)}")
        done |= set(ready)
    return graph


def reverse(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Deletion order: a resource goes once everything depending on it is gone."""
    out: dict[str, set[str]] = {u: set() for u in graph}
    for urn, deps in graph.items():
        for d in deps:
            out.setdefault(d, set()).add(urn)
    return out


def depth(graph: Mapping[str, set[str]], counts: Callable[[str], bool]) -> dict[str, int]:
    """Key -> 1 + the longest chain of counted keys before it (a start stage)."""
    memo: dict[str, int] = {}

    def d(key: str) -> int:
        if key not in memo:
            memo[key] = (1 if counts(key) else 0) + max((d(x) for x in graph.get(key, ())),
                                                         default=0)
        return memo[key]

    return {k: d(k) for k in graph if counts(k)}


def delete_antichains(deps: Mapping[str, set[str]]) -> list[list[str]]:
    """Keys to delete -> antichains in order: a key comes once nothing left in the
    set depends on it (`deps`: key -> keys it depends on; others are ignored)."""
    left = set(deps)
    chains: list[list[str]] = []
    while left:
        needed = {d for k in left for d in deps[k] if d in left and d != k}
        chain = sorted(left - needed)
        if not chain:
            raise ReplayError(f"dependency cycle among {sorted(left)}")
        chains.append(chain)
        left -= set(chain)
    return chains


@dataclass
class Done:
    """One step's result and when it ran (seconds since the run started)."""
    key: str
    note: str
    started_at: float
    finished_at: float

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


def run_graph(keys: list[str], graph: Mapping[str, set[str]], action: Callable[[str], str],
              describe: Callable[[str], str], workers: int | None = None,
              label: str = "apply") -> dict[str, Done]:
    """Run `action` on every key once its dependencies (within `keys`) are done, in
    parallel as the engine does (unbounded unless `workers` is given). Stops
    scheduling at the first failure."""
    pending = list(keys)
    wanted = set(keys)
    results: dict[str, Done] = {}
    done: set[str] = set()
    running: dict[Future, str] = {}
    errors: list[tuple[str, BaseException]] = []
    t_start = time.monotonic()

    def timed(key: str) -> Done:
        t0 = time.monotonic() - t_start
        note = action(key)
        return Done(key, note or "", t0, time.monotonic() - t_start)

    with ThreadPoolExecutor(max_workers=workers or max(1, len(keys)),
                            thread_name_prefix=label) as pool:
        while pending or running:
            if not errors:
                for key in list(pending):
                    if (graph.get(key, set()) & wanted) <= done:
                        pending.remove(key)
                        running[pool.submit(timed, key)] = key
            if not running:
                if pending and not errors:
                    raise ReplayError(f"unschedulable: {[describe(k) for k in pending]}")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                key = running.pop(fut)
                try:
                    result = fut.result()
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append((key, e))
                    log(f"[{time.monotonic() - t_start:6.1f}s] FAILED {describe(key)}: {e}")
                    continue
                results[key] = result
                done.add(key)
                if result.note:
                    log(f"[{result.finished_at:6.1f}s] {describe(key)}: {result.note} "
                        f"({result.seconds:.1f} s)")
    if errors:
        key, e = errors[0]
        raise ReplayError(f"{label} failed at {describe(key)}: {e}") from e
    return results
