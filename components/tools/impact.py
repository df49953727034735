"""Impact report: what a config change does to a running stack, before `up`.

    python -m components.tools.impact --config NEW --against OLD [--set PATH=VALUE ...] [--json]

NEW and OLD are stack files (OLD: the config the stack was last deployed with);
`--set` applies to NEW, with config paths as `pulumi config set --path` takes
them. For every container it says create, replace, update in place or delete,
and the cause: the file that changed (with a unified diff; a secret file only
says that it changed) or the input that changed. The actions come from the
provider model (provider_model.py) applied to the inputs the program registers
(container_inputs.py), so they are what `pulumi preview` and the replay's `up`
plan. It also warns where Synapse's rules make processes restart together.

Limits: a secret counts as changed when its `secure:` value in the stack file
differs (or, given with --set, a digest of its value); an image counts as changed
when its reference does (the report does not resolve references to image IDs, as
the provider does). No Pulumi import.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.provider import model as pm
from components.plan import rollout
from components.plan import secret_keys
from components.docker.container_inputs import (
    DELETE_BEFORE_REPLACE,
    REPLACE_ON_CHANGES,
    container_inputs,
)
from components.render.containers import ContainerSpec, Deployment, build_deployment
from components.plan.errors import ConfigError
from components.plan.stack_config import (
    SECRET_CONFIG,
    SECRET_VALUED,
    Encrypted,
    cli_error,
    override_arg,
    read_stack_file,
)
from components.render.synapse_config import PLACEHOLDERS
from components.plan.topology import Plan
from components.plan.workers import BY_NAME, MAIN, STREAMS

CREATE, REPLACE, UPDATE, DELETE, SAME = "create", "replace", "update", "delete", "same"

# Synapse's rules, quoted from its docs (element-hq/synapse).
DOCS_SENDERS = ("docs/usage/configuration/config_documentation.md, federation_sender_instances: "
                "\"if changed all federation sender workers must be stopped at the same time and "
                "then started, to ensure that all instances are running with the same config "
                "(otherwise events may be dropped)\"")
DOCS_EVENTS = ("docs/workers.md, \"The events stream\": \"you *must* restart all worker "
               "instances when adding or removing event persisters\"")
DOCS_PUSHERS = ("docs/usage/configuration/config_documentation.md, pusher_instances: \"Ensure "
                "the main process and all pusher workers are restarted after changing this "
                "option.\"")
DOCS_MAIN_RESTART = ("docs/workers.md, \"Updating the User Directory\" and \"Notifying "
                     "Application Services\": \"please ensure the main process is restarted "
                     "after setting this option in the shared configuration!\"")
DOCS_UPGRADE = ("docs/synctl_workers.md: \"one should always restart all workers when "
                "restarting or upgrading synapse\"; workers refuse an old schema "
                "(synapse/storage/prepare_database.py: \"run the main synapse process to "
                "upgrade the database schema before starting worker processes\")")


@dataclass(frozen=True)
class Side:
    """One config of the stack: its plan, deployment and secret ciphertexts."""

    path: Path
    plan: Plan
    deployment: Deployment
    secure: Mapping[str, Any]  # secret config key -> its `secure:` value (or None)
    warnings: tuple[str, ...] = ()  # the config's own (stack_config.StackConfig.warnings)


@dataclass
class Change:
    container: str  # Docker container name
    action: str
    causes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"container": self.container, "action": self.action, "causes": self.causes}


@dataclass
class Report:
    changes: list[Change]  # every container, "same" included
    warnings: list[str]
    volumes_created: list[str]
    volumes_left: list[str]  # retained on delete: they stay on the host
    # Changed containers (Docker names) in the order the up gets to them: each
    # inner list starts once the one before it is done (rollout.order).
    order: list[list[str]] = field(default_factory=list)
    # Routed class (and main) -> who serves its endpoints meanwhile (rollout.serving).
    serving: dict[str, str] = field(default_factory=dict)
    # Streams whose every writer restarts: their endpoints fail meanwhile.
    writers_down: list[str] = field(default_factory=list)
    unit: str = "container"  # what a change is to: a container, or a Swarm service

    def changed(self) -> list[Change]:
        return [c for c in self.changes if c.action != SAME]

    def actions(self) -> dict[str, str]:
        return {c.container: c.action for c in self.changed()}

    def to_json(self) -> dict[str, Any]:
        return {"changes": [c.to_json() for c in self.changed()], "warnings": self.warnings,
                "order": self.order, "serving": self.serving, "writersDown": self.writers_down,
                "unit": self.unit}


def load_side(path: Path, overrides: Mapping[str, Any] | None = None,
              stack: str | None = None) -> Side:
    """A stack file (with `--set` overrides) as the program would deploy it.
    `stack` names the stack (Docker names derive from it) when the file's own
    name is a copy's."""
    config = read_stack_file(path, overrides, stack)  # the file is read once per side
    values = {**config.secrets, SECRET_CONFIG: config.secret_config}
    secure = {k: v.ciphertext for k, v in values.items() if isinstance(v, Encrypted)}
    # A secret given with --set is compared by a digest of its value, never the value.
    given = {k: "sha256:" + hashlib.sha256(str(v).encode()).hexdigest()
             for k, v in (overrides or {}).items() if k in SECRET_VALUED}
    return Side(path, config.plan, build_deployment(config.plan),
                {k: given.get(k, secure.get(k)) for k in SECRET_VALUED}, config.warnings)


def _secrets_marking(changed: set[str]) -> dict[str, str]:
    """Placeholders, with a changed secret's differing: its files then differ too."""
    return {k: v + (" (changed)" if k in changed else "") for k, v in PLACEHOLDERS.items()}


def _diff_lines(old: str, new: str, label: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        fromfile=f"{label} (against)", tofile=f"{label} (new)"))


def _file_causes(old: ContainerSpec, new: ContainerSpec, changed_secrets: set[str]
                 ) -> list[dict[str, Any]]:
    before, after = old.rendered_files(), new.rendered_files()
    secret = {f.path for f in (*old.files, *new.files) if f.secret}
    causes = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        uses = {k for k, ph in PLACEHOLDERS.items() if ph in (b or a or "")}
        if a is None or b is None:
            what = "added" if a is None else "removed"
            causes.append({"kind": "secret_file" if path in secret else "file", "path": path,
                           "summary": f"file {path} {what}"})
        elif path in secret:
            if a != b or uses & changed_secrets:
                causes.append({"kind": "secret_file", "path": path,
                               "summary": f"secret file {path} changed"})
        elif a != b:
            causes.append({"kind": "file", "path": path, "summary": f"file {path} changed",
                           "diff": _diff_lines(a, b, path)})
    return causes


def _input_causes(keys: tuple[str, ...], old: Mapping[str, Any], new: Mapping[str, Any]
                  ) -> list[dict[str, Any]]:
    causes = []
    for key in keys:
        if key in ("uploads", "labels"):
            continue  # files are named above; the config-hash label follows them
        a, b = old.get(key), new.get(key)
        causes.append({"kind": "input", "input": key, "old": a, "new": b,
                       "summary": f"input {key}: {json.dumps(a)} -> {json.dumps(b)}"})
    return causes


def _created(name: str, new: Side) -> Change:
    spec = new.deployment.container_named(name)
    return Change(name, CREATE, [{"kind": "new", "summary": f"new container ({spec.key})"}])


def _deleted(name: str, old: Side) -> Change:
    spec = old.deployment.container_named(name)
    kept = [v.name for v in old.deployment.volumes if v.key == f"{spec.key}-data" and v.retain]
    return Change(name, DELETE, [{"kind": "removed", "summary": "no longer in the stack" + (
        f"; its volume {kept[0]} is retained" if kept else "")}])


def _diff(name: str, old: Side, new: Side, changed_secrets: set[str]) -> Change:
    a, b = old.deployment.container_named(name), new.deployment.container_named(name)
    inputs_a = container_inputs(a, old.deployment, old.plan.settings.sizes)
    inputs_b = container_inputs(b, new.deployment, new.plan.settings.sizes,
                                _secrets_marking(changed_secrets))
    d = pm.diff(pm.CONTAINER, inputs_a, inputs_b, REPLACE_ON_CHANGES, DELETE_BEFORE_REPLACE)
    if d.same:
        return Change(name, SAME)
    causes = _file_causes(a, b, changed_secrets) + _input_causes(d.changed, inputs_a, inputs_b)
    if not causes:  # only the labels differ
        causes = [{"kind": "input", "input": k, "summary": f"input {k} changed"}
                  for k in d.changed]
    return Change(name, d.action, causes)


def _writers(plan: Plan) -> dict[str, tuple[str, ...]]:
    # Every stream Synapse knows; one not in stream_writers is main's.
    return {s: plan.stream_writers.get(s, (MAIN,)) for s in STREAMS}


def _duty(plan: Plan, key: str, default: Any) -> Any:
    value = plan.duties.get(key, default)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def warnings_for(old: Plan, new: Plan, restarted: list[str]) -> list[str]:
    """Where Synapse's rules want processes restarted together. Every Synapse
    process shares homeserver.yaml, so such a change replaces them all; Pulumi
    replaces them one dependency level at a time (main, then the workers, the
    rolling ones in two halves: rollout.py), so old and new processes overlap for
    a moment."""
    out = []
    together = (f"{len(restarted)} Synapse containers are replaced; Pulumi replaces main "
                "first, then the workers (every writer, sender and pusher at once; rooms "
                "and federation readers in two halves), so old and new processes overlap "
                "briefly")
    senders = (_duty(old, "federation_sender_instances", (MAIN,)),
               _duty(new, "federation_sender_instances", (MAIN,)))
    if senders[0] != senders[1]:
        out.append(f"federation senders change {list(senders[0])} -> {list(senders[1])}: "
                   f"every sender must stop together and start with the new list; {together}. "
                   f"[{DOCS_SENDERS}]")
    wa, wb = _writers(old), _writers(new)
    if wa["events"] != wb["events"]:
        out.append(f"event persisters change {list(wa['events'])} -> {list(wb['events'])}: "
                   f"all processes must restart; {together}. [{DOCS_EVENTS}]")
    for stream in sorted(set(wa) - {"events"}):
        if wa[stream] != wb[stream]:
            out.append(f"stream {stream} moves {list(wa[stream])} -> {list(wb[stream])}: every "
                       "process must agree on its writer (shared stream_writers); " + together)
    pushers = (_duty(old, "pusher_instances", (MAIN,)), _duty(new, "pusher_instances", (MAIN,)))
    if pushers[0] != pushers[1]:
        out.append(f"pushers change {list(pushers[0])} -> {list(pushers[1])}: main and every "
                   f"pusher must restart. [{DOCS_PUSHERS}]")
    for cls, c in BY_NAME.items():
        n_old, n_new = old.settings.workers[cls], new.settings.workers[cls]
        if (n_old == 0) != (n_new == 0):
            moved = [*c.streams, *c.duties]
            direction = f"from main to {cls}" if n_old == 0 else f"from {cls} back to main"
            out.append(f"{cls} goes {n_old} -> {n_new}: its work ({', '.join(moved) or 'requests'}) "
                       f"moves {direction}; main must restart with the new shared config. "
                       f"[{DOCS_MAIN_RESTART}]")
    if old.settings.images.synapse != new.settings.images.synapse:
        out.append(f"Synapse image {old.settings.images.synapse} -> {new.settings.images.synapse}: "
                   "main starts first and migrates the schema; workers are replaced after it is "
                   f"healthy, the old ones run until then. [{DOCS_UPGRADE}]")
    return out


def impact(old: Side, new: Side) -> Report:
    changed_secrets = {k for k in old.secure if old.secure[k] != new.secure[k]}
    old_names = [c.name for c in old.deployment.containers]
    new_names = [c.name for c in new.deployment.containers]
    changes = []
    for name in new_names:
        changes.append(_diff(name, old, new, changed_secrets) if name in old_names
                       else _created(name, new))
    changes += [_deleted(name, old) for name in old_names if name not in new_names]
    by_name = {c.container: c for c in changes}
    publisher = new.deployment.container("nginx-config").name
    nginx = new.deployment.container("nginx").name
    if by_name[publisher].action != SAME and by_name.get(nginx, Change(nginx, SAME)).action == SAME:
        by_name[publisher].causes.append({
            "kind": "note", "summary": "nginx tests the new config and reloads it (SIGHUP): "
                                       "nginx keeps running, no request is dropped"})
    live = new.deployment.container("live-config").name
    if by_name[live].action != SAME:
        by_name[live].causes.append({
            "kind": "note", "summary": "each running Synapse process re-reads a changed log "
                                       "config on SIGHUP and Prometheus its target files: "
                                       "nothing restarts"})
    prometheus = next((c.name for c in new.deployment.containers if c.role == "prometheus"), None)
    if prometheus in by_name and by_name[prometheus].action == REPLACE:
        by_name[prometheus].causes.append({
            "kind": "note", "summary": "Prometheus restarts: a few seconds without scrapes; its "
                                       "data volume (history) is kept"})
    synapse = {c.name for c in new.deployment.containers if c.role in ("main", "worker")}
    restarted = [c.container for c in changes
                 if c.container in synapse and c.action in (REPLACE, DELETE)]
    old_vols = {v.name for v in old.deployment.volumes}
    new_vols = {v.name for v in new.deployment.volumes}
    # Deleted containers go last (after every create), so only new specs order here.
    name_of = {c.key: c.name for c in new.deployment.containers}
    depends_on = {c.key: c.depends_on for c in new.deployment.containers}
    moved = {c.key for c in new.deployment.containers
             if by_name[c.name].action in (CREATE, REPLACE)}
    # `restarted` names only containers of the new deployment (`synapse` is its).
    gone = set(restarted)
    restarted_keys = {k for k, n in name_of.items() if n in gone}
    return Report(
        changes=changes,
        warnings=[*new.warnings, *warnings_for(old.plan, new.plan, restarted)],
        volumes_created=sorted(new_vols - old_vols),
        volumes_left=sorted(v.name for v in old.deployment.volumes
                            if v.name not in new_vols and v.retain),
        order=[[name_of[k] for k in step] for step in rollout.order(depends_on, moved)],
        serving=rollout.serving(new.plan, depends_on, restarted_keys) if restarted_keys else {},
        writers_down=rollout.writers_down(new.plan, restarted_keys),
    )


# What fails while every writer of a stream restarts (only a writer serves its
# endpoints; other processes ask it over replication).
_WRITER_DOWN = {
    "events": "sending events fails until a persister of its rooms is back (a client "
              "retries with the same transaction ID)",
    "presence": "its endpoints fail until its writer is back, and so may a /sync on any "
                "process (it bumps the user's presence through the writer)",
    "": "its endpoints fail until its writer is back (only the writer may serve them)",
}

_SIGN = {CREATE: "+ create", REPLACE: "+- replace", UPDATE: "~ update", DELETE: "- delete"}


def format_text(report: Report, title: str) -> str:
    lines = [title, ""]
    shown_diffs: dict[str, str] = {}  # diff text -> the container it was shown for
    for c in report.changed():
        lines.append(f"{_SIGN[c.action]:11} {c.container}")
        for cause in c.causes:
            lines.append(f"      {cause['summary']}")
            diff = cause.get("diff")
            if diff and diff in shown_diffs:
                lines.append(f"        (same diff as for {shown_diffs[diff]})")
            elif diff:
                shown_diffs[diff] = c.container
                lines += [f"        {line}" for line in diff.rstrip("\n").split("\n")]
    same = [c.container for c in report.changes if c.action == SAME]
    unit = report.unit
    if not report.changed():
        lines.append(f"no {unit} changes")
    lines.append(f"{'= same':11} {len(same)} {unit}s keep running: {', '.join(same) or '-'}")
    if report.order:
        lines += ["", "order (each line once the one before it is done; " + (
            "a replaced container is deleted, then created and waited for until healthy):"
            if unit == "container" else "an updated service is waited for until its task "
            "runs healthy):")]
        lines += [f"  {i}. {', '.join(step)}" for i, step in enumerate(report.order, 1)]
    if report.serving:
        lines += ["", "meanwhile:"]
        lines += [f"  {cls}: {how}" for cls, how in report.serving.items()]
        lines += [f"  stream {s}: {_WRITER_DOWN.get(s, _WRITER_DOWN[''])}"
                  for s in report.writers_down]
        lines.append("")
    if report.volumes_created:
        lines.append(f"volumes created: {', '.join(report.volumes_created)}")
    if report.volumes_left:
        lines.append(f"volumes left on the host (retained, data kept): "
                     f"{', '.join(report.volumes_left)}")
    if report.warnings:
        lines += ["", "warnings:"] + [f"  ! {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.tools.impact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="the new Pulumi.<stack>.yaml")
    parser.add_argument("--against", required=True, type=Path,
                        help="the Pulumi.<stack>.yaml the stack was deployed with")
    parser.add_argument("--set", action="append", type=override_arg, default=[],
                        metavar="PATH=VALUE", help="set a synapse:* value in NEW (YAML), at a "
                                                   "config path: workers.rooms=8")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    path = args.against
    try:
        old = load_side(args.against)
        path = args.config
        # One stack: Docker names follow the deployed stack's name, whatever NEW's file is called.
        new = load_side(args.config, dict(args.set), stack=old.plan.settings.stack)
    except (ConfigError, OSError, yaml.YAMLError) as e:
        return cli_error(path, e)
    if new.plan.settings.target == "swarm" or old.plan.settings.target == "swarm":
        if new.plan.settings.target != old.plan.settings.target:
            print(f"{args.config}: target {old.plan.settings.target} -> "
                  f"{new.plan.settings.target}: a new stack on another target, not a change "
                  "(move the data with a backup and restore: docs/swarm.md)", file=sys.stderr)
            return 2
        from components.tools.swarm_impact import swarm_impact  # noqa: PLC0415 - its own module
        report = swarm_impact(old, new)
    else:
        report = impact(old, new)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        sets = " ".join(f"{k}={_shown(k, v)}" for k, v in args.set)
        print(format_text(report, f"impact of {args.config}{' with ' + sets if sets else ''} "
                                  f"against {args.against}:"), end="")
    return 0


def _shown(key: str, value: Any) -> str:
    """A --set value as the report's header shows it: never a secret's."""
    top = key.split(".", 1)[0]
    return "[secret]" if top in (*secret_keys.KEYS, "secretConfig") else json.dumps(value)


if __name__ == "__main__":
    sys.exit(main())
