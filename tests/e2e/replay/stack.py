"""A stack as the end-to-end tests use it: `up` returns what they need (URLs,
container names by process, secrets, the plan that was applied)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.render.containers import LABEL_PREFIX, NGINX_PORTS, POSTGRES_PASSWORD_FILE
from components.render.synapse_config import HOMESERVER_PATH, SYNAPSE_SECRETS
from tests.e2e.replay import engine
from tests.e2e.replay.errors import ReplayError
from tests.support.capture import Capture, reveal


@dataclass
class Deployed:
    """A stack running on Docker, as the tests need it."""
    stack: str
    config: str
    overrides: dict[str, Any]
    capture: Capture
    plan: engine.StepPlan  # what this `up` did
    ids: dict[str, str]  # Docker container name -> container ID
    outputs: dict[str, Any]
    containers: dict[str, str]  # process key ("main", "rooms1", "nginx", ...) -> container name
    classes: dict[str, str]  # process key -> class ("main", "rooms", "nginx", "postgres", ...)
    nginx_url: str  # client listener, e.g. http://127.0.0.1:8008 (https with nginx.tls)
    federation_url: str  # federation listener
    admin_url: str  # the admin listener (loopback), e.g. http://127.0.0.1:8009
    server_name: str
    homeserver: dict[str, Any]  # homeserver.yaml (plain: it holds no secret)
    registration_shared_secret: str
    secrets: dict[str, str]  # by stack config key: registrationSharedSecret, signingKey, ...
    seconds_to_healthy: float
    stage_seconds: dict[int, float]
    applied: dict[str, tuple[float, float]]  # engine.Outcome.applied

    def container(self, key: str) -> str:
        return self.containers[key]

    def by_class(self, cls: str) -> list[str]:
        return [k for k, c in self.classes.items() if c == cls]

    @property
    def synapse(self) -> list[str]:
        """Process keys of the Synapse containers (main and workers), from the
        stack's `processes` output: every other container is a service."""
        return [p["name"] for p in self.outputs["processes"]]


def _labels(inputs: Mapping[str, Any]) -> dict[str, str]:
    return {lab["label"]: lab["value"] for lab in inputs.get("labels", [])}


def describe(cap: Capture, outcome: engine.Outcome | None, overrides: Mapping[str, Any],
             config: str, stack: str) -> Deployed:
    containers, classes, secrets = {}, {}, {}
    homeserver: dict[str, Any] = {}
    nginx_ports: dict[int, str] = {}
    outputs = reveal(cap.outputs)
    tls = outputs["nginxUrl"].startswith("https:")
    public = (NGINX_PORTS["client"], NGINX_PORTS["federation"])
    by_path = {f.path: f.key for f in SYNAPSE_SECRETS}
    for res in cap.containers:
        inputs = res.plain
        labels = _labels(inputs)
        key = labels.get(f"{LABEL_PREFIX}.process", res.name)
        role = labels.get(f"{LABEL_PREFIX}.role")
        containers[key] = inputs["name"]
        classes[key] = labels.get(f"{LABEL_PREFIX}.class", key)
        files = {up["file"]: up["content"] for up in inputs.get("uploads", [])}
        if role == "main":
            homeserver = yaml.safe_load(files[HOMESERVER_PATH])
            secrets.update({by_path[p]: c.strip() for p, c in files.items() if p in by_path})
        if role == "postgres":
            secrets["postgresPassword"] = files[POSTGRES_PASSWORD_FILE].strip()
        if role == "nginx":
            for p in inputs.get("ports", []):
                ip = p.get("ip") or "127.0.0.1"
                ip = "127.0.0.1" if ip == "0.0.0.0" else ip
                scheme = "https" if tls and int(p["internal"]) in public else "http"
                nginx_ports[int(p["internal"])] = f"{scheme}://{ip}:{int(p['external'])}"
    if not homeserver:
        raise ReplayError("no homeserver.yaml upload found in the main container's inputs")
    return Deployed(
        stack=stack,
        config=str(config),
        overrides=dict(overrides),
        capture=cap,
        plan=outcome.plan if outcome else engine.StepPlan([]),
        ids=dict(outcome.ids) if outcome else {},
        outputs=outputs,
        containers=containers,
        classes=classes,
        nginx_url=nginx_ports[NGINX_PORTS["client"]],
        federation_url=nginx_ports[NGINX_PORTS["federation"]],
        admin_url=nginx_ports[NGINX_PORTS["admin"]],
        server_name=outputs["serverName"],
        homeserver=homeserver,
        registration_shared_secret=secrets["registrationSharedSecret"],
        secrets=secrets,
        seconds_to_healthy=outcome.seconds if outcome else 0.0,
        stage_seconds=dict(outcome.stage_seconds) if outcome else {},
        applied=dict(outcome.applied) if outcome else {},
    )


def up(config: str | Path, overrides: Mapping[str, Any] | None = None) -> Deployed:
    """`pulumi up --refresh` on the local engine; returns once every container
    with `wait` is healthy."""
    overrides = dict(overrides or {})
    outcome = engine.up(config, overrides)
    return describe(outcome.capture, outcome, overrides, str(config), engine.stack_of(config))


def down(config: str | Path, delete_data: bool = False) -> float:
    """`make down` (data and secrets kept), or `make destroy-data`."""
    return engine.down(config, delete_data=delete_data)
