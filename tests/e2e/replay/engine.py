"""`up` and `down` the way the Pulumi engine runs them against pulumi-docker.

up:   run the program under mocks (tests/support/capture.py); refuse any input the
      replay does not apply; refresh: read every object the state holds back from
      Docker (`make up` runs `pulumi up --refresh`); plan each resource with the
      provider model (components/provider/model.py): same, update in place,
      replace (delete-before-replace where the provider or the program says so),
      create, or delete; print the plan like a preview; apply only that, each
      resource once its own dependencies are done; then the deletes (removed
      resources and the old halves of create-before-delete replacements), one
      antichain at a time (graph.py has the engine's rules and their sources).
down: `pulumi destroy --exclude-protected`, as `make down` runs it: every object the
      state holds is deleted, dependents first by the dependencies state keeps,
      except protected ones (the generated secrets);
      retained ones (the data volumes) leave the state but stay on the host, and
      the next `up` takes them over. `delete_data=True` is `make destroy-data`:
      everything goes, volumes and secrets included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from components.provider import model as pm
from components.render.containers import LABEL_PREFIX, backups_volume
from components.plan.stack_config import stack_name_of
from tests.e2e.replay import provider, state as state_mod, swarm_provider
from tests.e2e.replay.docker_api import api
from tests.e2e.replay.errors import ReplayError, log
from tests.e2e.replay.graph import delete_antichains, dependency_graph, depth, run_graph
from tests.e2e.replay.inputs import (
    CONTAINER, IMAGE, NETWORK, SECRET, SERVICE, SERVICE_CONFIG, VOLUME, check_inputs, is_no_op,
)
from tests.e2e.replay.isolation import check_isolation
from tests.support import capture as capture_mod
from tests.support.capture import Capture, Registered, reveal

CREATE, UPDATE, REPLACE, DELETE, SAME = "create", "update", "replace", "delete", "same"
# Deletion order by type, for state written before entries kept their dependencies.
DELETE_ORDER = (SERVICE, CONTAINER, SERVICE_CONFIG, SECRET, NETWORK, VOLUME, IMAGE)


@dataclass
class Step:
    key: str  # state key: "<type>::<name>"
    type: str
    name: str  # resource name
    action: str
    changed: tuple[str, ...] = ()
    replace_keys: tuple[str, ...] = ()
    delete_before_replace: bool = False
    docker_name: str = ""
    # State keys of the containers a delete-before-replace of this volume or network
    # deletes first (dependent_replacements), in deletion order.
    dependents: tuple[str, ...] = ()

    def line(self) -> str:
        kind = self.type.split(":")[-1]
        what = {CREATE: "+ create", UPDATE: "~ update", REPLACE: "+-replace", DELETE: "- delete",
                SAME: "  same"}[self.action]
        extra = ""
        if self.action in (UPDATE, REPLACE):
            extra = f" [diff: {', '.join(self.changed)}]"
            if self.action == REPLACE:
                extra += (" delete-before-replace" if self.delete_before_replace
                          else " create-before-delete")
        return f"{what:10} {kind:12} {self.docker_name or self.name}{extra}"


@dataclass
class StepPlan:
    """What one `up` does: a step per resource, in order (not topology.Plan)."""
    steps: list[Step]

    def by_action(self, action: str) -> list[Step]:
        return [s for s in self.steps if s.action == action]

    def of(self, typ: str, docker_name: str) -> Step:
        return next(s for s in self.steps if s.type == typ and s.docker_name == docker_name)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.action] = out.get(s.action, 0) + 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return ", ".join(f"{c[a]} to {a}" for a in (CREATE, UPDATE, REPLACE, DELETE) if c.get(a)) \
            or "no changes"


# --- the program, with its randoms kept as Pulumi state keeps them ---------------


@contextlib.contextmanager
def _stateful_randoms(st: dict[str, Any]):
    """random:* resources keep their outputs while their inputs are unchanged, as
    they do in Pulumi state; new or changed ones get fresh values (a replacement)."""
    base = capture_mod._Mocks

    class Stateful(base):  # type: ignore[misc, valid-type]
        def new_resource(self, args):
            if not args.typ.startswith("random:"):
                return super().new_resource(args)
            key = state_mod.key_of(args.typ, args.name)
            inputs = json.loads(json.dumps(args.inputs, default=str))
            kept = st["random"].get(key)
            if kept and kept["inputs"] == inputs:
                return kept["id"], kept["outputs"]
            rid, outputs = super().new_resource(args)
            st["random"][key] = {"inputs": inputs, "id": rid,
                                 "outputs": json.loads(json.dumps(outputs, default=str))}
            return rid, outputs

    capture_mod._Mocks = Stateful
    try:
        yield
    finally:
        capture_mod._Mocks = base


def capture_stack(config: str | Path, overrides: Mapping[str, Any] | None,
                  st: dict[str, Any]) -> Capture:
    # The capture runs on the current event loop; a caller that ran and closed its
    # own (asyncio.run) leaves none, so give it one and leave it current for others.
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if loop.is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    with _stateful_randoms(st):
        return capture_mod.run_stack_file(config, overrides)


def stack_of(config: str | Path) -> str:
    return stack_name_of(Path(config))


# --- refresh, desired inputs, plan ---------------------------------------------


def _stored(typ: str, read_back: Mapping[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
    """What state holds: the read-back keys as read, the others as sent."""
    attrs = pm.ATTRS[typ]
    kept = {k: v for k, v in sent.items() if k in attrs and not attrs[k].read}
    return {**read_back, **kept}


_READ = {CONTAINER: provider.read_container, NETWORK: provider.read_network,
         VOLUME: provider.read_volume, IMAGE: provider.read_image,
         SERVICE: swarm_provider.read_service, SERVICE_CONFIG: swarm_provider.read_config,
         SECRET: swarm_provider.read_secret}


def refresh(st: dict[str, Any]) -> list[str]:
    """Read every owned object back, as `pulumi up --refresh` does: what is gone
    leaves the state (and is created again); what is there is stored as read."""
    notes = []
    for key, entry in list(st["resources"].items()):
        typ, name = entry["type"], entry["inputs"]["name"]
        found = _READ[typ](name)
        if found is None:
            notes.append(f"{typ.split(':')[-1]} {name} is gone: it will be created again")
            del st["resources"][key]
            continue
        entry["id"], read_back = found
        if read_back.get("mustRun") is False:
            notes.append(f"container {name} is not running: must_run will start it again")
        entry["inputs"] = _stored(typ, read_back, entry["inputs"])
    return notes


def desired_inputs(res: Registered, image_ids: Mapping[str, str]) -> dict[str, Any]:
    inputs = check_inputs(res)
    if res.type == CONTAINER:
        # Mocks echo the image reference as RemoteImage.image_id; the provider's is the ID.
        inputs["image"] = image_ids.get(inputs["image"], inputs["image"])
    return inputs


def _resolve_ids(inputs: dict[str, Any], st: Mapping[str, Any], cap: Capture) -> dict[str, Any]:
    """A service names its configs, secrets and networks by ID, an output the
    mocks give as "<resource name>-id": swap in the ID the object has on the
    engine, as the engine's own outputs would carry. One not created yet keeps
    its placeholder, so the plan shows the service's change (as a preview shows
    an unknown ID)."""
    ids = {}
    for res in cap.resources:
        entry = st["resources"].get(state_mod.key_of(res.type, res.name))
        if entry is not None:
            ids[f"{res.name}-id"] = entry["id"]

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return ids.get(value, value) if isinstance(value, str) else value

    return swap(inputs)


def make_plan(cap: Capture, st: Mapping[str, Any], desired: Mapping[str, dict[str, Any]]) -> StepPlan:
    steps = []
    for res in cap.resources:
        if is_no_op(res):
            continue
        key = state_mod.key_of(res.type, res.name)
        new = desired[res.urn]
        entry = st["resources"].get(key)
        name = new.get("name", res.name)
        if entry is None:
            steps.append(Step(key, res.type, res.name, CREATE, docker_name=name))
            continue
        if entry.get("tainted"):  # a create that failed part way: replaced
            steps.append(Step(key, res.type, res.name, REPLACE, ("(tainted)",), (),
                              True, name))
            continue
        d = pm.diff(res.type, entry["inputs"], new, res.options.get("replaceOnChanges", ()),
                    bool(res.options.get("deleteBeforeReplace")))
        steps.append(Step(key, res.type, res.name, d.action if not d.same else SAME, d.changed,
                          d.replace_keys, d.delete_before_replace, name))
    registered = {state_mod.key_of(r.type, r.name) for r in cap.resources}
    for key, entry in st["resources"].items():
        if key not in registered:
            steps.append(Step(key, entry["type"], key.split("::", 1)[1], DELETE,
                              docker_name=entry["inputs"]["name"]))
    return StepPlan(dependent_replacements(steps, cap, desired))


# Where a container names a volume or network: inputs that are ForceNew.
_NAMED_BY = {VOLUME: ("mounts", "source"), NETWORK: ("networksAdvanced", "name")}


def dependent_replacements(steps: list[Step], cap: Capture,
                           desired: Mapping[str, dict[str, Any]]) -> list[Step]:
    """The Pulumi engine's answer to a delete-before-replace (pkg/resource/deploy/
    step_generator.go, calculateDependentReplacements): before deleting the
    resource it first deletes every resource whose inputs depend on it and would be
    replaced by that, and replaces them too. A container naming the volume in its
    mounts (or the network in its networks) is such a one (both inputs ForceNew):
    Docker would refuse to remove a volume or network still in use. Deletion runs
    dependents first: nginx, workers, main, then the rest."""
    by_key = {s.key: s for s in steps}
    urn_of = {state_mod.key_of(r.type, r.name): r.urn for r in cap.resources}
    for step in steps:
        if not (step.action == REPLACE and step.delete_before_replace
                and step.type in _NAMED_BY):
            continue
        field_, attr = _NAMED_BY[step.type]
        name = desired[urn_of[step.key]]["name"]
        found = []
        for res in cap.of_type(CONTAINER):
            inputs = desired[res.urn]
            if not any(x.get(attr) == name for x in inputs.get(field_, [])):
                continue
            dep = by_key[state_mod.key_of(CONTAINER, res.name)]
            if dep.action == CREATE:
                continue  # nothing old to delete
            if dep.action != REPLACE or not dep.delete_before_replace:
                dep.action, dep.delete_before_replace = REPLACE, True
                dep.changed = tuple(sorted(set(dep.changed) | {field_}))
                dep.replace_keys = tuple(sorted(set(dep.replace_keys) | {field_}))
            found.append((_container_rank({"inputs": inputs}), dep.key))
        step.dependents = tuple(k for _, k in sorted(found))
    return steps


# --- applying -------------------------------------------------------------------

_CREATE = {CONTAINER: provider.create_container, NETWORK: provider.create_network,
           VOLUME: provider.create_volume, IMAGE: provider.create_image,
           SERVICE: swarm_provider.create_service, SERVICE_CONFIG: swarm_provider.create_config,
           SECRET: swarm_provider.create_secret}


def _read(typ: str, name: str) -> tuple[str, dict[str, Any]]:
    found = _READ[typ](name)
    if found is None:
        raise ReplayError(f"{typ.split(':')[-1]} {name} vanished right after it was applied")
    return found


_DELETE = {CONTAINER: lambda i: provider.delete_container(i["name"], i),
           SERVICE: lambda i: swarm_provider.delete_service(i["name"]),
           SERVICE_CONFIG: lambda i: swarm_provider.delete_config(i["name"]),
           SECRET: lambda i: swarm_provider.delete_secret(i["name"]),
           NETWORK: lambda i: provider.delete_network(i["name"]),
           VOLUME: lambda i: provider.delete_volume(i["name"]),
           IMAGE: lambda i: ("kept locally" if i.get("keepLocally")
                             else "image left in place (the replay never removes images)")}


def _delete(entry: Mapping[str, Any], delete_data: bool = False) -> str:
    """The provider's delete; for a resource retained on delete, nothing unless
    `delete_data`."""
    if entry.get("options", {}).get("retainOnDelete") and not delete_data:
        return "retained on delete: left on the host, dropped from state"
    return _DELETE[entry["type"]](entry["inputs"])


def _options(res: Registered) -> dict[str, Any]:
    """The resource options state keeps (they steer later plans and deletes)."""
    return {k: v for k, v in res.options.items()
            if k in ("protect", "retainOnDelete", "deleteBeforeReplace", "replaceOnChanges") and v}


def _entry(res: Registered, rid: str, stored: dict[str, Any],
           dependencies: list[str]) -> dict[str, Any]:
    """A state entry; like Pulumi's, it keeps the resource's dependencies (state
    keys), which order its delete after the program no longer registers it."""
    return {"type": res.type, "id": rid, "inputs": stored, "options": _options(res),
            "dependencies": dependencies}


def _delete_deps(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, set[str]]:
    """key -> keys it depends on, for ordering deletes. An entry from older state
    without dependencies depends on every entry of a later type in DELETE_ORDER
    (and a container on those of a later start rank)."""
    def rank(e: Mapping[str, Any]) -> tuple[int, int]:
        return (DELETE_ORDER.index(e["type"]),
                _container_rank(e) if e["type"] == CONTAINER else 0)

    out = {}
    for key, e in entries.items():
        if "dependencies" in e:
            out[key] = set(e["dependencies"])
        else:
            out[key] = {k for k, o in entries.items() if rank(o) > rank(e)}
    return out


def _delete_all(stack: str, st: dict[str, Any], doomed: Mapping[str, Mapping[str, Any]],
                delete_data: bool = False, keep: str = "") -> None:
    """Delete `doomed` (key -> state entry) as the engine schedules deletes: one
    antichain at a time, its members in parallel (graph.delete_antichains).
    `keep`: a volume `delete_data` leaves, as make destroy-data does."""
    lock = threading.Lock()

    def delete(key: str) -> str:
        entry = doomed[key]
        note = _delete(entry, delete_data and entry["inputs"]["name"] != keep)
        with lock:
            if st["resources"].get(key) is entry:
                del st["resources"][key]
            state_mod.save(stack, st)
        return note

    for chain in delete_antichains(_delete_deps(doomed)):
        run_graph(chain, {}, delete,
                  lambda k: f"delete {doomed[k]['type'].split(':')[-1]} "
                            f"{doomed[k]['inputs']['name']}", label="delete")


@dataclass
class Outcome:
    plan: StepPlan
    capture: Capture
    ids: dict[str, str]  # Docker container name -> container ID, after the up
    seconds: float
    stage_seconds: dict[int, float] = field(default_factory=dict)
    # Docker container (or Swarm service) name -> (started, finished) of its step,
    # time.monotonic(); a container with `wait` finishes when it is healthy, a
    # service with converge_config when its task runs.
    applied: dict[str, tuple[float, float]] = field(default_factory=dict)


def up(config: str | Path, overrides: Mapping[str, Any] | None = None,
       dry_run: bool = False) -> Outcome:
    """One `pulumi up --refresh`: capture, refresh, plan, print, apply."""
    overrides = dict(overrides or {})
    stack = stack_of(config)
    st = state_mod.load(stack)
    t0 = time.monotonic()
    cap = capture_stack(config, overrides, st)
    log(f"{stack}: captured {len(cap.resources)} resources ({len(cap.containers)} containers) "
        f"under mocks in {time.monotonic() - t0:.1f} s")
    for res in cap.resources:  # refuse anything unapplied before touching Docker at all
        if not is_no_op(res):
            check_inputs(res)
    graph = dependency_graph(cap)
    image_ids = {}
    for res in cap.of_type(IMAGE):
        image_ids[res.plain["name"]] = provider.create_image(res.plain)[0]
    desired = {r.urn: desired_inputs(r, image_ids) for r in cap.resources if not is_no_op(r)}
    for note in refresh(st):
        log(f"refresh: {note}")
    for res in cap.of_type(SERVICE):
        desired[res.urn] = _resolve_ids(desired[res.urn], st, cap)
    plan = make_plan(cap, st, desired)
    log(f"{stack}: plan ({plan.summary()}):")
    for step in plan.steps:
        if step.action != SAME:
            log("  " + step.line())
    if dry_run:
        return Outcome(plan, cap, {}, 0.0)
    log(f"isolation: {check_isolation()}")
    state_mod.save(stack, st)  # the secrets, before anything is written with them

    lock = threading.Lock()
    dbr_lock = threading.Lock()
    steps = {s.key: s for s in plan.steps}
    by_urn = {r.urn: r for r in cap.resources}
    # What state keeps as each resource's dependencies: the objects it waits for.
    deps_of = {u: sorted(state_mod.key_of(by_urn[d].type, by_urn[d].name) for d in ds
                         if not is_no_op(by_urn[d]))
               for u, ds in graph.items()}
    replaced: dict[str, dict[str, Any]] = {}  # create-before-delete: old halves

    def save() -> None:
        with lock:
            state_mod.save(stack, st)

    def apply(urn: str) -> str:
        res = by_urn[urn]
        if is_no_op(res):
            return ""
        step = steps[state_mod.key_of(res.type, res.name)]
        new = desired[urn]
        old = st["resources"].get(step.key)
        if step.action == SAME:
            old["options"] = _options(res)
            old["dependencies"] = deps_of[urn]
            return ""
        if step.action == UPDATE:
            if res.type == CONTAINER:
                note = provider.update_container(new["name"], {k: new.get(k) for k in step.changed})
            elif res.type == SERVICE:
                new = _resolve_ids(new, st, cap)
                note = swarm_provider.update_service(new["name"], new)
            else:
                note = "state only: " + ", ".join(step.changed)
            # Update does not read back: state takes the new values as planned.
            stored = {**old["inputs"], **{k: new[k] for k in step.changed if k in new}}
            for k in step.changed:
                if k not in new:
                    stored.pop(k, None)
            with lock:
                st["resources"][step.key] = _entry(res, old["id"], stored, deps_of[urn])
            save()
            return note
        note = ""
        if step.action == REPLACE and step.delete_before_replace:
            # Volumes and networks one at a time: two may share a dependent, and
            # neither may go before that dependent has.
            with dbr_lock if step.type in _NAMED_BY else contextlib.nullcontext():
                for dep_key in step.dependents:
                    with lock:
                        dep = st["resources"].pop(dep_key, None)
                    if dep is not None:
                        note += (f"{dep['inputs']['name']} deleted first (it depends on this): "
                                 + _delete(dep) + "; ")
                        save()
                with lock:
                    old = st["resources"].pop(step.key, None)
                if old is not None:  # else deleted first by a volume or network it named
                    note += "replaced (deleted first: " + _delete(old) + "); "
                save()
        if res.type == SERVICE:  # what it names is created by now
            new = _resolve_ids(new, st, cap)
        try:
            rid, created = _CREATE[res.type](new)
        except provider.PartialCreate as e:
            with lock:  # saved tainted, as the bridge saves a create that failed with an ID
                st["resources"][step.key] = {**_entry(res, e.cid, dict(new), deps_of[urn]),
                                             "tainted": True}
            save()
            raise
        if step.action == REPLACE and not step.delete_before_replace:
            # The old one goes with the deletes, after every create (GenerateDeletes).
            note += "created beside the old one (deleted at the end); "
            with lock:
                replaced[f"{step.key}#replaced"] = old
        _, read_back = _read(res.type, new["name"])
        with lock:
            st["resources"][step.key] = _entry(res, rid, _stored(res.type, read_back, new),
                                               deps_of[urn])
        save()
        return note + created

    t1 = time.monotonic()
    results = run_graph([r.urn for r in cap.resources], graph, apply,
                        lambda u: f"{by_urn[u].type.split(':')[-1]} {by_urn[u].name}", label="up")
    _delete_all(stack, st, {**{s.key: st["resources"][s.key] for s in plan.by_action(DELETE)},
                            **replaced})
    seconds = time.monotonic() - t1
    stages = depth(graph, lambda u: by_urn[u].type == CONTAINER)
    stage_seconds: dict[int, float] = {}
    for stage in sorted(set(stages.values())):
        members = [results[u] for u, s in stages.items() if s == stage]
        stage_seconds[stage] = max(a.finished_at for a in members) - min(a.started_at for a in members)
    ids = {e["inputs"]["name"]: e["id"] for e in st["resources"].values() if e["type"] == CONTAINER}
    applied = {desired[u]["name"]: (results[u].started_at, results[u].finished_at)
               for u in results if by_urn[u].type in (CONTAINER, SERVICE)
               and steps[state_mod.key_of(by_urn[u].type, by_urn[u].name)].action != SAME}
    st["outputs"] = reveal(cap.outputs)  # stack outputs live in state too
    save()
    log(f"{stack}: {plan.summary()} in {seconds:.1f} s")
    return Outcome(plan, cap, ids, seconds, stage_seconds, applied)


def down(config: str | Path, delete_data: bool = False) -> float:
    """`make down` (pulumi destroy --exclude-protected), or with `delete_data`
    `make destroy-data`. Works from the state alone, as a destroy does."""
    stack = stack_of(config)
    st = state_mod.load(stack)
    t0 = time.monotonic()
    prefix = st.get("outputs", {}).get("namePrefix", f"synapse-{stack}")
    # make destroy-data removes retained volumes by name, all but the backups one.
    kept = backups_volume(prefix)
    _delete_all(stack, st, {k: e for k, e in st["resources"].items()
                            if delete_data or not e.get("options", {}).get("protect")},
                delete_data, keep=kept)
    if delete_data:
        _remove_leftover_volumes(prefix)
        state_mod.forget(stack)  # the secrets go with the data they protected
        log(f"{stack}: data deleted (volumes and the stack's secrets)")
    else:
        log(f"{stack}: kept {len(st['random'])} protected secrets in state; data volumes left "
            "on the host")
    seconds = time.monotonic() - t0
    log(f"{stack}: down in {seconds:.1f} s")
    return seconds


def _container_rank(entry: Mapping[str, Any]) -> int:
    labels = {lab["label"]: lab["value"] for lab in entry["inputs"].get("labels", [])}
    role = labels.get(f"{LABEL_PREFIX}.role", "")
    return {"nginx": 0, "worker": 1, "main": 2}.get(role, 3)


def _remove_leftover_volumes(name_prefix: str) -> None:
    """Volumes retained by an earlier `down` or scale-down are no longer in state:
    remove every `<namePrefix>-*` volume, as `make destroy-data` does."""
    for vol in api().volumes().get("Volumes") or []:
        if vol["Name"].startswith(f"{name_prefix}-") and vol["Name"] != backups_volume(name_prefix):
            log(f"volume {vol['Name']}: {provider.delete_volume(vol['Name'])} (retained earlier)")
