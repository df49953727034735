"""How an `up` replaces Synapse processes without taking a class away: the order
(each container waits for what its spec's `depends_on` names) and what keeps
serving meanwhile. Plain data, no Pulumi import.

Pulumi registers a resource only once the resources it depends on are done (the
SDK awaits their URNs, which resolve when their RegisterResource returns, after
the step ran), and a container replaced with delete-before-replace is deleted
when it is registered, then created; with `wait` the create returns once it is
healthy. A plain `depends_on` (no input taken from the other resource) never
makes the engine replace a dependent along with it: calculateDependentReplacements
(pkg/resource/deploy/step_generator.go) looks at property dependencies only. So
a worker that depends on another of its class is replaced only after that one is
back and healthy: the class rolls. tests/e2e/replay runs the steps the same way.

Which processes roll: the ones Synapse names nowhere (no stream, no duty, so not
in instance_map): rooms and federation readers, and client_sync processes beyond
the stream slots. Each of those in the second half of its class waits for its
partner in the first half, so at every moment one of each pair serves. The
others are replaced together, right after main, as Synapse's docs ask of them:
federation senders ("all federation sender workers must be stopped at the same
time"), event persisters ("you must restart all worker instances"), pushers, and
every stream writer: two processes writing one stream under one instance name,
or old and new processes disagreeing on who writes it, breaks the stream's
positions. Their routed endpoints fall back to main (nginx_conf) meanwhile,
except a stream writer's own, which nobody else may serve.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from components.plan.routing import MAIN
from components.plan.topology import Plan


def rolls(plan: Plan, name: str) -> bool:
    """A worker Synapse names nowhere: it may be replaced while its peers serve."""
    p = plan.process(name)
    return not p.is_main and p.replication is None


def partners(plan: Plan) -> dict[str, str]:
    """Process -> the process of its class it waits for: the second half of each
    class's rolling processes waits for the first, pair by pair."""
    out: dict[str, str] = {}
    classes = dict.fromkeys(p.worker_class for p in plan.processes if not p.is_main)
    for cls in classes:
        rolling = [p.name for p in plan.by_class(cls) if rolls(plan, p.name)]
        half = (len(rolling) + 1) // 2
        out.update(zip(rolling[half:], rolling[:half]))
    return out


def order(depends_on: Mapping[str, Sequence[str]], changed: set[str]) -> list[tuple[str, ...]]:
    """Changed container keys by when the engine gets to them: 1 + the most changed
    containers on any chain of `depends_on` before it (unchanged ones are done at
    once, but only after what they depend on)."""
    memo: dict[str, int] = {}

    def depth(key: str) -> int:
        if key not in memo:
            memo[key] = (key in changed) + max((depth(d) for d in depends_on.get(key, ())),
                                               default=0)
        return memo[key]

    levels: dict[int, list[str]] = {}
    for key in depends_on:
        if key in changed:
            levels.setdefault(depth(key), []).append(key)
    return [tuple(levels[d]) for d in sorted(levels)]


def _waits(depends_on: Mapping[str, Sequence[str]], a: str, b: str) -> bool:
    """Whether `a` waits (directly or not) for `b`."""
    seen, todo = set(), list(depends_on.get(a, ()))
    while todo:
        k = todo.pop()
        if k == b:
            return True
        if k not in seen:
            seen.add(k)
            todo += depends_on.get(k, ())
    return False


def serving(plan: Plan, depends_on: Mapping[str, Sequence[str]], restarted: set[str]
            ) -> dict[str, str]:
    """Each routed class (and main) -> who serves its endpoints while `restarted`
    processes are replaced: a class keeps serving when one of its processes is not
    restarted, or two of them are replaced one after the other (never down
    together); else main serves them (nginx's fallback) while the class is down,
    main itself being back by then (workers wait for it)."""
    out = {MAIN: "down while it restarts" if MAIN in restarted else "serves"}
    for cls in dict.fromkeys(p.worker_class for p in plan.processes if p.inbound):
        if cls == MAIN:
            continue
        names = [p.name for p in plan.by_class(cls)]
        down = [n for n in names if n in restarted]
        if len(down) < len(names):
            out[cls] = "serves (not all its processes restart)" if down else "serves"
        elif any(_waits(depends_on, a, b) for a in down for b in down if a != b):
            out[cls] = "serves: its processes are replaced one after another"
        else:
            out[cls] = "main serves its endpoints while all its processes restart"
    return out


def writers_down(plan: Plan, restarted: set[str]) -> list[str]:
    """Streams whose every writer restarts: their endpoints (typing, to-device,
    ...) fail until one is back, as nobody else may serve them."""
    return sorted(s for s, ws in plan.stream_writers.items()
                  if MAIN not in ws and all(w in restarted for w in ws))
