"""The impact report for a Swarm stack (impact.py calls it for `target: swarm`): per
service create, update or delete and the cause (a file's diff, a secret that
changed, an input), how Swarm rolls each update (start-first or stop-first,
swarm/specs.py) and who serves meanwhile. On a Swarm every service change is an
update in place (provider model: only a new name replaces a service), which Swarm
carries out by stopping or starting its task by the service's update_config.
No Pulumi import.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Mapping

from components.plan import rollout
from components.plan.topology import Plan
from components.render.synapse_config import PLACEHOLDERS
from components.swarm.specs import START_FIRST, ServiceSpec, SwarmDeployment, build_swarm
from components.tools.impact import (
    CREATE, DELETE, SAME, UPDATE, Change, Report, Side, _diff_lines, _secrets_marking,
    warnings_for,
)

# The inputs of a service spec that a change shows, besides its files.
_INPUTS = ("image", "command", "args", "env", "volumes", "tmpfs", "networks", "ports",
           "constraints", "update", "user", "cap_add", "stop_grace_s", "healthcheck", "size")


def _inputs(spec: ServiceSpec) -> dict[str, Any]:
    raw = asdict(spec)
    return {k: json.loads(json.dumps(raw[k], default=str)) for k in _INPUTS}


def _files(spec: ServiceSpec, marking: Mapping[str, str]) -> dict[str, tuple[bool, str]]:
    return {f.target: (f.secret, f.render(marking)) for f in spec.files}


def _diff(old: ServiceSpec, new: ServiceSpec, changed_secrets: set[str]) -> Change:
    causes = []
    before, after = _files(old, PLACEHOLDERS), _files(new, _secrets_marking(changed_secrets))
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        secret = (a or b)[0]
        kind, what = ("secret_file", "secret") if secret else ("file", "config")
        if a is None or b is None:
            causes.append({"kind": kind, "path": path,
                           "summary": f"{what} {path} {'added' if a is None else 'removed'}"})
        elif a[1] != b[1]:
            causes.append({"kind": kind, "path": path,
                           "summary": f"{what} {path} changed: a new {what} is created",
                           **({} if secret else {"diff": _diff_lines(a[1], b[1], path)})})
    ia, ib = _inputs(old), _inputs(new)
    for key in _INPUTS:
        if ia[key] != ib[key]:
            causes.append({"kind": "input", "input": key, "old": ia[key], "new": ib[key],
                           "summary": f"{key}: {json.dumps(ia[key])} -> {json.dumps(ib[key])}"})
    if not causes:
        return Change(new.name, SAME)
    how = ("start-first: its new task runs healthy before the old one stops"
           if new.update.order == START_FIRST else
           "stop-first: its task stops, then the new one starts")
    causes.append({"kind": "note", "summary": f"Swarm rolls it ({how})"})
    return Change(new.name, UPDATE, causes)


def swarm_impact(old: Side, new: Side) -> Report:
    changed_secrets = {k for k in old.secure if old.secure[k] != new.secure[k]}
    a, b = build_swarm(old.plan), build_swarm(new.plan)
    old_by = {s.key: s for s in a.services}
    changes = []
    for spec in b.services:
        if spec.key in old_by:
            changes.append(_diff(old_by[spec.key], spec, changed_secrets))
        else:
            changes.append(Change(spec.name, CREATE, [{"kind": "new",
                                                       "summary": f"new service ({spec.key})"}]))
    new_keys = {s.key for s in b.services}
    for spec in a.services:
        if spec.key not in new_keys:
            changes.append(Change(spec.name, DELETE, [{"kind": "removed", "summary": (
                "no longer in the stack; its volumes stay on the node it ran on")}]))
    action = {c.container: c.action for c in changes}
    # A stop-first Synapse process restarts: the same meanwhile as a replaced container.
    restarted = {s.key for s in b.services if s.role in ("main", "worker")
                 and action.get(s.name) == UPDATE and s.update.order != START_FIRST}
    restarted |= {s.key for s in a.services if s.key not in new_keys and s.role == "worker"}
    depends_on = {s.key: s.depends_on for s in b.services}
    moved = {s.key for s in b.services if action[s.name] in (CREATE, UPDATE)}
    name_of = {s.key: s.name for s in b.services}
    old_vols = {v for s in a.services for v in s.volumes}
    new_vols = {v for s in b.services for v in s.volumes}
    return Report(
        changes=changes,
        warnings=[*new.warnings, *warnings_for(old.plan, new.plan,
                                               [name_of[k] for k in restarted if k in name_of])],
        volumes_created=sorted(new_vols - old_vols),
        volumes_left=sorted(old_vols - new_vols),
        order=[[name_of[k] for k in step] for step in rollout.order(depends_on, moved)],
        serving=_serving(new.plan, b, restarted),
        writers_down=rollout.writers_down(new.plan, restarted),
        unit="service",
    )


def _serving(plan: Plan, deployment: SwarmDeployment, restarted: set[str]) -> dict[str, str]:
    """Who serves each routed class while its stop-first processes restart."""
    if not restarted:
        return {}
    depends_on = {s.key: s.depends_on for s in deployment.services}
    return rollout.serving(plan, depends_on, restarted)
