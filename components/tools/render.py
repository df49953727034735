"""Render a stack without Pulumi, like `helm template`:

    python -m components.tools.render --config config/Pulumi.prod.yaml --out DIR

writes every file each container would get under DIR/<container>/..., and
DIR/manifest.json describing every container; for `target: swarm`, each service's
files (its configs and secrets) and a manifest of the services. Secrets appear as
placeholders (`${secret:<key>}`). Bad config: exit status 2 and one line naming
the key.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.render.containers import Deployment, build_deployment
from components.plan.errors import ConfigError
from components.plan.stack_config import cli_error, override_arg, read_stack_file
from components.render.synapse_config import PLACEHOLDERS
from components.plan.topology import Plan
from components.swarm.specs import SwarmDeployment, build_swarm


def plan_for(path: Path, overrides: Mapping[str, Any] | None = None,
             stack: str | None = None) -> Plan:
    """The plan of a stack file with `--set` overrides; `stack` names the stack
    when it is not the file's own (a copy of it). Read as the program reads its
    config (stack_config.read_stack), so it refuses what the program refuses."""
    return read_stack_file(path, overrides, stack).plan


def deployment_for(path: Path, overrides: Mapping[str, Any] | None = None) -> Deployment:
    return build_deployment(plan_for(path, overrides))


def manifest(deployment: Deployment) -> dict[str, Any]:
    containers = []
    for c in deployment.containers:
        containers.append({
            "name": c.name,
            "process": c.key,
            "role": c.role,
            "worker_class": c.worker_class,
            "image": c.image,
            "entrypoint": list(c.entrypoint) if c.entrypoint else None,
            "command": list(c.command),
            "env": dict(c.env),
            "healthcheck": asdict(c.healthcheck),
            "sockets": list(c.sockets),
            "mounts": {m.target: m.volume for m in c.mounts},
            "networks": list(c.networks),
            "ports": [asdict(p) for p in c.ports],
            "labels": c.labels,
            "depends_on": list(c.depends_on),
            "files": {f.path: f"{c.key}{f.path}" for f in c.files},
        })
    return {
        "networks": {k: {"name": n, "internal": i} for k, (n, i) in deployment.networks.items()},
        "volumes": {v.key: {"name": v.name, "driver_opts": dict(v.driver_opts)}
                    for v in deployment.volumes},
        "containers": containers,
    }


def swarm_manifest(deployment: SwarmDeployment) -> dict[str, Any]:
    return {
        "networks": {k: {"name": n, "internal": i} for k, (n, i) in deployment.networks.items()},
        "services": [{
            "name": svc.name, "process": svc.key, "role": svc.role,
            "worker_class": svc.worker_class, "image": svc.image,
            "command": list(svc.command) if svc.command else None, "args": list(svc.args),
            "env": dict(svc.env), "healthcheck": asdict(svc.healthcheck),
            "volumes": dict(svc.volumes), "networks": list(svc.networks),
            "ports": [asdict(p) for p in svc.ports], "placement": list(svc.constraints),
            "update": asdict(svc.update), "depends_on": list(svc.depends_on),
            "files": {f.target: {"path": f"{svc.key}{f.target}", "secret": f.secret,
                                 "uid": f.uid, "gid": f.gid, "mode": oct(f.mode)}
                      for f in svc.files},
        } for svc in deployment.services],
    }


def write_swarm(deployment: SwarmDeployment, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for svc in deployment.services:
        for f in svc.files:
            target = out / svc.key / f.target.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.render(PLACEHOLDERS))
    (out / "manifest.json").write_text(json.dumps(swarm_manifest(deployment), indent=2) + "\n")


def write(deployment: Deployment, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for c in deployment.containers:
        for f in c.files:
            target = out / c.key / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.render(PLACEHOLDERS))
            target.chmod(0o755 if f.executable else 0o644)
    (out / "manifest.json").write_text(json.dumps(manifest(deployment), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.tools.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="a Pulumi.<stack>.yaml")
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    parser.add_argument("--set", action="append", type=override_arg, default=[],
                        metavar="PATH=VALUE",
                        help="set a synapse:* value (YAML) at a config path, as "
                             "`pulumi config set --path` does: workers.rooms=8")
    args = parser.parse_args(argv)
    try:
        config = read_stack_file(args.config, dict(args.set))
    except (ConfigError, OSError, yaml.YAMLError) as e:
        return cli_error(args.config, e)
    for warning in config.warnings:
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    if config.plan.settings.target == "swarm":
        swarm = build_swarm(config.plan)
        write_swarm(swarm, args.out)
        print(f"wrote {sum(len(s.files) for s in swarm.services)} files for "
              f"{len(swarm.services)} Swarm services to {args.out}")
        return 0
    deployment = build_deployment(config.plan)
    write(deployment, args.out)
    print(f"wrote {sum(len(c.files) for c in deployment.containers)} files for "
          f"{len(deployment.containers)} containers to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
