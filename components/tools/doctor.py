"""Pre-flight for a Docker host: what this host's engine would make drift, or
refuse, before anything is deployed, and how to fix it (no Pulumi import).

    python -m components.tools.doctor --config config/Pulumi.<stack>.yaml   (make doctor)

The provider model (provider_model.py) describes what pulumi-docker reads back;
some of that depends on the engine's own settings, which the program cannot see:
  - a daemon that gives new bridge networks IPv6 (daemon.json `ipv6` or
    `default-network-opts`): the network's `ipv6` input is not computed, so the
    read-back true differs from the unset input and every up replaces the networks;
  - daemon-wide `log-opts` beyond max-size and max-file: merged into every
    container's log config for the same driver, a diff of `logOpts` (ForceNew);
  - no swap accounting: `memory_swap` reads back -1, an update on every up;
  - an engine below API 1.44 with synapse:healthcheckStartInterval: the create fails.
Exit status 0 with or without warnings (drift is not an outage); 1 when the
stack cannot be created on this engine; 2 for a bad stack file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.provider import model as provider_model
from components.docker.container_inputs import LOG_OPTS
from components.plan.errors import ConfigError
from components.plan.stack_config import cli_error, read_stack_file

DAEMON_JSON = Path("/etc/docker/daemon.json")


@dataclass(frozen=True)
class Finding:
    fatal: bool  # the stack cannot be created here
    what: str
    fix: str


@dataclass(frozen=True)
class Engine:
    """What the checks need to know about an engine."""
    api_version: str
    swap_limit: bool  # swap accounting (docker info SwapLimit)
    new_networks_ipv6: bool  # a new bridge network, given no ipv6, got IPv6
    daemon_log_opts: Mapping[str, str]  # daemon.json log-opts (for the default driver)
    log_driver: str  # the daemon's default driver


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def findings(engine: Engine, start_interval_s: int) -> list[Finding]:
    out = []
    if engine.new_networks_ipv6:
        out.append(Finding(False, "new bridge networks get IPv6 on this engine: the provider "
                                  "reads EnableIPv6 back and the program sets no ipv6, so every "
                                  "up would replace the stack's networks (and so its containers)",
                           "set \"ipv6\": false (and no IPv6 default-network-opts) in "
                           f"{DAEMON_JSON}, then restart dockerd"))
    extra = {k: v for k, v in engine.daemon_log_opts.items() if k not in LOG_OPTS}
    if extra and engine.log_driver == "json-file":
        out.append(Finding(False, f"daemon-wide log-opts {sorted(extra)} join every container's "
                                  "json-file options, which the provider reads back: logOpts "
                                  "differs on every up and replaces every container",
                           f"remove {', '.join(sorted(extra))} from log-opts in {DAEMON_JSON} "
                           "(the program sets max-size and max-file itself)"))
    if not engine.swap_limit:
        out.append(Finding(False, "no swap accounting: memory_swap reads back as -1, so every "
                                  "up updates every container's memory_swap in place",
                           "boot the kernel with swapaccount=1 (cgroup v1) or use cgroup v2"))
    need = provider_model.START_INTERVAL_API
    if start_interval_s and _version(engine.api_version) < need:
        out.append(Finding(True, "synapse:healthcheckStartInterval needs Docker API "
                                 f"{'.'.join(map(str, need))} "
                                 f"(Docker 25), this engine speaks {engine.api_version}: "
                                 "pulumi-docker's client refuses to create the containers",
                           "upgrade the engine, or set synapse:healthcheckStartInterval to 0"))
    return out


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def probe_engine() -> Engine:
    """Read the engine: `docker info`/`version`, daemon.json when on this host, and
    whether a new bridge network (created and removed here) gets IPv6."""
    info = json.loads(_docker("info", "--format", "{{json .}}"))
    api = _docker("version", "--format", "{{.Server.APIVersion}}").strip()
    name = f"synapse-doctor-{uuid.uuid4().hex[:8]}"
    _docker("network", "create", "--driver", "bridge", "--internal", name)
    try:
        ipv6 = _docker("network", "inspect", name, "--format", "{{.EnableIPv6}}").strip() == "true"
    finally:
        _docker("network", "rm", name)
    daemon: dict[str, Any] = {}
    if DAEMON_JSON.exists():
        daemon = json.loads(DAEMON_JSON.read_text() or "{}")
    return Engine(api_version=api, swap_limit=bool(info.get("SwapLimit")), new_networks_ipv6=ipv6,
                  daemon_log_opts=daemon.get("log-opts", {}),
                  log_driver=info.get("LoggingDriver", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.tools.doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="a Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    try:
        settings = read_stack_file(args.config).settings
    except (ConfigError, OSError, yaml.YAMLError) as e:
        return cli_error(args.config, e)
    try:
        engine = probe_engine()
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError) as e:
        print(f"doctor: cannot read the Docker engine ({e}); is dockerd running?", file=sys.stderr)
        return 1
    found = findings(engine, settings.healthcheck_start_interval_s)
    print(f"Docker API {engine.api_version}, default log driver {engine.log_driver}, "
          f"swap accounting {'on' if engine.swap_limit else 'off'}, "
          f"IPv6 on new networks {'yes' if engine.new_networks_ipv6 else 'no'}")
    for f in found:
        print(f"{'error' if f.fatal else 'drift'}: {f.what}\n  fix: {f.fix}")
    if not found:
        print(f"{args.config}: nothing on this engine would drift or be refused")
    return 1 if any(f.fatal for f in found) else 0


if __name__ == "__main__":
    sys.exit(main())
