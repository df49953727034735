"""A Swarm stack as the end-to-end tests use it: the replay's `up` on the bed's
manager, described in the same shape as a single-host stack (replay.Deployed), so
the client scenarios of test_stack.py run on it unchanged."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any, Mapping

import docker
import yaml

from components.plan import secret_keys
from components.render.containers import LABEL_PREFIX
from components.render.synapse_config import HOMESERVER_PATH
from components.swarm.specs import SwarmFile
from tests.e2e.replay import engine
from tests.e2e.replay.errors import ReplayError
from tests.e2e.replay.stack import Deployed
from tests.support.capture import Capture, reveal

SERVICE = "docker:index/service:Service"
CONFIG = "docker:index/serviceConfig:ServiceConfig"
SECRET = "docker:index/secret:Secret"


def _container(svc) -> dict[str, Any]:
    return svc.plain["taskSpec"]["containerSpec"]


def describe(cap: Capture, outcome: engine.Outcome | None, overrides: Mapping[str, Any],
             config: str, stack: str) -> Deployed:
    outputs = reveal(cap.outputs)
    services, classes = {}, {}
    for svc in cap.of_type(SERVICE):
        labels = {lab["label"]: lab["value"] for lab in svc.plain.get("labels", [])}
        key = labels[f"{LABEL_PREFIX}.process"]
        services[key] = svc.plain["name"]
        classes[key] = labels[f"{LABEL_PREFIX}.class"]
    configs = {r.plain["name"]: base64.b64decode(r.plain["data"]).decode()
               for r in cap.of_type(CONFIG)}
    # By stack config key (signingKey, registrationSharedSecret, ...), as on one host.
    key_of = {f"secret-{SwarmFile(s.path, str).slug}": s.key for s in secret_keys.SECRETS}
    secrets = {key_of[r.name]: base64.b64decode(reveal(r.inputs["data"])).decode().strip()
               for r in cap.of_type(SECRET) if r.name in key_of}
    main = next(s for s in cap.of_type(SERVICE) if s.plain["name"] == services["main"])
    ref = next(c for c in _container(main)["configs"] if c["fileName"] == HOMESERVER_PATH)
    nginx = next(s for s in cap.of_type(SERVICE) if s.plain["name"] == services["nginx"])
    ports = {int(p["targetPort"]): int(p["publishedPort"])
             for p in nginx.plain["endpointSpec"]["ports"]}
    url = lambda internal: f"http://127.0.0.1:{ports[internal]}"  # noqa: E731 - the manager
    return Deployed(
        stack=stack, config=str(config), overrides=dict(overrides), capture=cap,
        plan=outcome.plan if outcome else engine.StepPlan([]), ids={}, outputs=outputs,
        containers=services, classes=classes,
        nginx_url=url(8008), federation_url=url(8448), admin_url=url(8009),
        server_name=outputs["serverName"], homeserver=yaml.safe_load(configs[ref["configName"]]),
        registration_shared_secret=secrets["registrationSharedSecret"],
        secrets=secrets, seconds_to_healthy=outcome.seconds if outcome else 0.0,
        stage_seconds={}, applied=dict(outcome.applied) if outcome else {},
    )


def up(config: str | Path, overrides: Mapping[str, Any] | None = None) -> Deployed:
    overrides = dict(overrides or {})
    outcome = engine.up(config, overrides)
    return describe(outcome.capture, outcome, overrides, str(config), engine.stack_of(config))


def tasks_by_node(manager: docker.DockerClient, prefix: str) -> dict[str, str]:
    """Process or service key -> hostname of the node its running task is on."""
    nodes = {n.id: n.attrs["Description"]["Hostname"] for n in manager.nodes.list()}
    out = {}
    for svc in manager.services.list():
        if not svc.name.startswith(f"{prefix}-"):
            continue
        running = [t for t in svc.tasks(filters={"desired-state": "running"})
                   if t["Status"]["State"] == "running"]
        if running:
            out[process_of(svc)] = nodes.get(running[0].get("NodeID"), "?")
    return out


def process_of(svc) -> str:
    """The process or service key a Swarm service runs (its label)."""
    return (svc.attrs["Spec"].get("Labels") or {}).get(f"{LABEL_PREFIX}.process", svc.name)


def wait_settled(manager: docker.DockerClient, prefix: str, timeout_s: float = 300) -> float:
    """Until every service of the stack has its one task running; seconds it took."""
    t0 = time.monotonic()
    while True:
        pending = []
        for svc in manager.services.list():
            if not svc.name.startswith(f"{prefix}-"):
                continue
            tasks = svc.tasks(filters={"desired-state": "running"})
            if not tasks or any(t["Status"]["State"] != "running" for t in tasks):
                pending.append(svc.name)
        if not pending:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise ReplayError(f"not running after {timeout_s:.0f} s: {pending}")
        time.sleep(1)


def destroy_data(config: str, engines: Mapping[str, docker.DockerClient], prefix: str) -> None:
    """`make destroy-data` for a Swarm stack: the services go, then every node's
    volumes of the stack (each node keeps those of the tasks it ran), then the
    stack's secrets."""
    engine.down(config)
    remove_node_volumes(engines, prefix)
    engine.down(config, delete_data=True)


def remove_node_volumes(nodes: Mapping[str, docker.DockerClient], prefix: str) -> None:
    """Every node's volumes of the stack, with what is left of the containers of its
    tasks (a removed service's task containers go after it, or with a swarm left)."""
    for client in nodes.values():
        for vol in client.volumes.list():
            if vol.name.startswith(f"{prefix}-"):
                # Tasks of an earlier swarm this node left are still containers here.
                for c in client.containers.list(all=True, filters={"volume": vol.name}):
                    c.remove(force=True)
                vol.remove(force=True)
