"""The provider's create, read, update and delete of Swarm services, configs and
secrets, on the manager's engine, as kreuzwerker's resource_docker_service*.go,
resource_docker_config.go and resource_docker_secret.go do them (the rows are in
components/provider/model.py). `read_*` returns the inputs as the provider stores
them: what it flattens back from the service's spec, in its normal form.

create and update of a service wait as converge_config makes the provider wait:
until the service's task runs (healthy, where it has a healthcheck: Swarm reports
a task running only then) and an update has completed, or the timeout.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Mapping

import docker

from components.provider import model as pm
from tests.e2e.replay.docker_api import api
from tests.e2e.replay.errors import ReplayError
from tests.e2e.replay.provider import PartialCreate

CONVERGE_POLL_S = 1.0


def _ns(text: str | None) -> int:
    return pm.duration_ns(text) if text else 0


def _dur(ns: int | None) -> str:
    return pm.short_duration_read_back(int(ns or 0))


# --- inputs -> the Engine API's ServiceSpec, and back ------------------------------


def _update_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {"Parallelism": int(cfg.get("parallelism", 1)), "Delay": _ns(cfg.get("delay")),
            "FailureAction": cfg.get("failureAction", "pause"), "Monitor": _ns(cfg.get("monitor")),
            "MaxFailureRatio": float(cfg.get("maxFailureRatio", "0")),
            "Order": cfg.get("order", "stop-first")}


def _file_refs_spec(refs: list[Mapping[str, Any]] | None, kind: str) -> list[dict] | None:
    """A container spec's configs or secrets (`kind`), as the Engine API takes them;
    _file_ref reads one back."""
    key = kind.capitalize()
    return [{"File": {"Name": r["fileName"], "UID": r.get("fileUid", "0"),
                      "GID": r.get("fileGid", "0"), "Mode": int(r.get("fileMode", 0o444))},
             f"{key}ID": r[f"{kind}Id"], f"{key}Name": r[f"{kind}Name"]}
            for r in refs or []] or None


def service_spec(inputs: Mapping[str, Any]) -> dict[str, Any]:
    ts, cs = inputs["taskSpec"], inputs["taskSpec"]["containerSpec"]
    hc = cs.get("healthcheck")
    container = {
        "Image": cs["image"],
        "Command": list(cs.get("commands") or []) or None,
        "Args": list(cs.get("args") or []) or None,
        "Env": [f"{k}={v}" for k, v in sorted((cs.get("env") or {}).items())] or None,
        "User": cs.get("user") or None,
        "Mounts": [{"Target": m["target"], "Source": m.get("source", ""), "Type": m["type"],
                    "ReadOnly": bool(m.get("readOnly", False)),
                    **({"TmpfsOptions": {"SizeBytes": int(m["tmpfsOptions"]["sizeBytes"]),
                                         "Mode": int(m["tmpfsOptions"].get("mode", 0))}}
                       if m.get("tmpfsOptions") else {})}
                   for m in cs.get("mounts") or []] or None,
        "Configs": _file_refs_spec(cs.get("configs"), "config"),
        "Secrets": _file_refs_spec(cs.get("secrets"), "secret"),
        "CapabilityAdd": list(cs.get("capAdds") or []) or None,
        "CapabilityDrop": list(cs.get("capDrops") or []) or None,
        "StopGracePeriod": _ns(cs.get("stopGracePeriod")) or None,
        **({"Healthcheck": {"Test": list(hc["tests"]), "Interval": _ns(hc.get("interval")),
                            "Timeout": _ns(hc.get("timeout")), "Retries": int(hc.get("retries", 0)),
                            "StartPeriod": _ns(hc.get("startPeriod"))}} if hc else {}),
    }
    limits = (ts.get("resources") or {}).get("limits") or {}
    restart = ts.get("restartPolicy") or {}
    endpoint = inputs.get("endpointSpec") or {}
    return {
        "Name": inputs["name"],
        "Labels": {lab["label"]: lab["value"] for lab in inputs.get("labels") or []},
        "TaskTemplate": {
            "ContainerSpec": {k: v for k, v in container.items() if v is not None},
            "Networks": [{"Target": n["id"]} for n in ts.get("networksAdvanceds") or []],
            "Placement": {"Constraints": list((ts.get("placement") or {}).get("constraints") or [])},
            "RestartPolicy": {"Condition": restart.get("condition", "any"),
                              "Delay": _ns(restart.get("delay"))},
            "Resources": {"Limits": {"NanoCPUs": int(limits.get("nanoCpus", 0)),
                                     "MemoryBytes": int(limits.get("memoryBytes", 0))}},
        },
        "Mode": {"Replicated": {"Replicas": int(((inputs.get("mode") or {}).get("replicated")
                                                 or {}).get("replicas", 1))}},
        "UpdateConfig": _update_config(inputs.get("updateConfig") or {}),
        "RollbackConfig": _update_config(inputs.get("rollbackConfig") or {}),
        "EndpointSpec": {"Mode": endpoint.get("mode", "vip"),
                         "Ports": [{"Protocol": p.get("protocol", "tcp"),
                                    "TargetPort": int(p["targetPort"]),
                                    "PublishedPort": int(p["publishedPort"]),
                                    "PublishMode": p.get("publishMode", "ingress")}
                                   for p in endpoint.get("ports") or []]},
    }


def _read_update_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = cfg or {}
    return {"parallelism": cfg.get("Parallelism", 1), "delay": _dur(cfg.get("Delay")),
            "failureAction": cfg.get("FailureAction", "pause"), "monitor": _dur(cfg.get("Monitor")),
            "maxFailureRatio": f"{cfg.get('MaxFailureRatio', 0):g}",
            "order": cfg.get("Order", "stop-first")}


def _file_ref(ref: Mapping[str, Any], kind: str) -> dict[str, Any]:
    f = ref["File"]
    return {"fileName": f["Name"], "fileUid": f["UID"], "fileGid": f["GID"], "fileMode": f["Mode"],
            f"{kind}Id": ref[f"{kind.capitalize()}ID"], f"{kind}Name": ref[f"{kind.capitalize()}Name"]}


def flatten(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A service's spec as the provider's read stores it (flatten*)."""
    tt, cs = spec["TaskTemplate"], spec["TaskTemplate"]["ContainerSpec"]
    container: dict[str, Any] = {"image": cs["Image"]}
    for key, field in (("commands", "Command"), ("args", "Args"), ("capAdds", "CapabilityAdd"),
                       ("capDrops", "CapabilityDrop")):
        if cs.get(field):
            container[key] = list(cs[field])
    if cs.get("Env"):
        container["env"] = dict(e.split("=", 1) for e in cs["Env"])
    if cs.get("User"):
        container["user"] = cs["User"]
    if cs.get("Mounts"):
        container["mounts"] = [{"target": m["Target"], "type": m["Type"],
                                **({"source": m["Source"]} if m.get("Source") else {}),
                                "readOnly": bool(m.get("ReadOnly", False)),
                                **({"tmpfsOptions": {k: v for k, v in (
                                    ("sizeBytes", m["TmpfsOptions"].get("SizeBytes")),
                                    ("mode", m["TmpfsOptions"].get("Mode"))) if v}}
                                   if m.get("TmpfsOptions") else {})}
                               for m in cs["Mounts"]]
    if cs.get("Configs"):
        container["configs"] = [_file_ref(c, "config") for c in cs["Configs"]]
    if cs.get("Secrets"):
        container["secrets"] = [_file_ref(c, "secret") for c in cs["Secrets"]]
    if cs.get("StopGracePeriod"):
        container["stopGracePeriod"] = _dur(cs["StopGracePeriod"])
    hc = cs.get("Healthcheck")
    if hc:
        container["healthcheck"] = {"tests": list(hc.get("Test") or []),
                                    "interval": _dur(hc.get("Interval")),
                                    "timeout": _dur(hc.get("Timeout")),
                                    "retries": hc.get("Retries", 0),
                                    "startPeriod": _dur(hc.get("StartPeriod"))}
    task: dict[str, Any] = {"containerSpec": container}
    if tt.get("Networks"):
        task["networksAdvanceds"] = [{"id": n["Target"]} for n in tt["Networks"]]
    if (tt.get("Placement") or {}).get("Constraints"):
        task["placement"] = {"constraints": list(tt["Placement"]["Constraints"])}
    if tt.get("RestartPolicy"):
        rp = tt["RestartPolicy"]
        task["restartPolicy"] = {"condition": rp.get("Condition", "any"),
                                 "delay": _dur(rp.get("Delay"))}
    limits = (tt.get("Resources") or {}).get("Limits") or {}
    if limits:
        task["resources"] = {"limits": {"nanoCpus": limits.get("NanoCPUs", 0),
                                        "memoryBytes": limits.get("MemoryBytes", 0)}}
    endpoint = spec.get("EndpointSpec") or {}
    out = {
        "name": spec["Name"],
        "labels": [{"label": k, "value": v} for k, v in sorted((spec.get("Labels") or {}).items())],
        "taskSpec": task,
        "mode": {"replicated": {"replicas": spec["Mode"]["Replicated"]["Replicas"]}},
        "updateConfig": _read_update_config(spec.get("UpdateConfig")),
        "rollbackConfig": _read_update_config(spec.get("RollbackConfig")),
        "endpointSpec": {"mode": endpoint.get("Mode", "vip"),
                         **({"ports": [{"targetPort": p["TargetPort"], "publishedPort": p["PublishedPort"],
                                        "publishMode": p.get("PublishMode", "ingress"),
                                        "protocol": p.get("Protocol", "tcp")}
                                       for p in endpoint["Ports"]]} if endpoint.get("Ports") else {})},
    }
    return {k: pm.normal_form(pm.SERVICE, k, v) for k, v in out.items()}


# --- services ---------------------------------------------------------------------


def _inspect_service(name: str) -> dict[str, Any] | None:
    try:
        return api().inspect_service(name)
    except docker.errors.NotFound:
        return None


def _tasks(service_id: str) -> list[dict[str, Any]]:
    return api().tasks(filters={"service": service_id})


def converge(name: str, timeout_s: float) -> float:
    """Wait until the service's one task desired running is running and any update
    is done; returns the seconds it took."""
    started = time.monotonic()
    while True:
        info = _inspect_service(name)
        if info is None:
            raise ReplayError(f"service {name} vanished while converging")
        update = (info.get("UpdateStatus") or {}).get("State")
        tasks = [t for t in _tasks(info["ID"]) if t["DesiredState"] == "running"]
        running = [t for t in tasks if t["Status"]["State"] == "running"]
        if update in ("rollback_completed", "rollback_paused", "paused"):
            raise ReplayError(f"service {name}: update {update}: "
                              f"{(info.get('UpdateStatus') or {}).get('Message', '')}")
        if running and len(running) == len(tasks) and update in (None, "completed"):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            states = [(t["Status"]["State"], t["Status"].get("Err", "")) for t in tasks]
            raise ReplayError(f"service {name} did not converge within {timeout_s:.0f} s: "
                              f"tasks {states}, update {update}")
        time.sleep(CONVERGE_POLL_S)


def create_service(inputs: Mapping[str, Any]) -> tuple[str, str]:
    name = inputs["name"]
    try:
        created = api()._result(api()._post_json(api()._url("/services/create"),
                                                 data=service_spec(inputs)), json=True)
    except docker.errors.APIError as e:
        raise ReplayError(f"service {name}: create failed: {e.explanation or e}") from None
    timeout = pm.duration_ns((inputs.get("convergeConfig") or {}).get("timeout", "0s")) / 1e9
    note = "created"
    if timeout:
        try:
            note += f", converged in {converge(name, timeout):.1f} s"
        except ReplayError as e:  # created with an ID: saved tainted, replaced next time
            raise PartialCreate(f"{e}; last log lines:\n{service_logs(name)}", created["ID"]) from e
    return created["ID"], note


def service_logs(name: str, tail: int = 20) -> str:
    try:
        out = api().service_logs(name, stdout=True, stderr=True, tail=tail)
        return b"".join(out).decode(errors="replace")
    except docker.errors.APIError as e:
        return f"(no logs: {e})"


def read_service(name: str) -> tuple[str, dict[str, Any]] | None:
    info = _inspect_service(name)
    return None if info is None else (info["ID"], flatten(info["Spec"]))


def update_service(name: str, inputs: Mapping[str, Any]) -> str:
    """K/service update: the whole new spec at the service's current version;
    Swarm then rolls its task over by update_config."""
    info = _inspect_service(name)
    if info is None:
        raise ReplayError(f"service {name} is gone; refresh would have created it again")
    client = api()
    url = client._url("/services/{0}/update", info["ID"])
    try:
        client._raise_for_status(client._post_json(
            url, data=service_spec(inputs), params={"version": info["Version"]["Index"]}))
    except docker.errors.APIError as e:
        raise ReplayError(f"service {name}: update failed: {e.explanation or e}") from None
    timeout = pm.duration_ns((inputs.get("convergeConfig") or {}).get("timeout", "0s")) / 1e9
    return f"updated, converged in {converge(name, timeout):.1f} s" if timeout else "updated"


def delete_service(name: str) -> str:
    """ServiceRemove, then wait until its tasks' containers are gone (so a config,
    secret or network it used can be removed next)."""
    info = _inspect_service(name)
    if info is None:
        return "already gone"
    api().remove_service(info["ID"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # Its tasks' containers go after the service does; the manager may forget
        # the tasks first (a filter on a service it no longer knows is a 404).
        try:
            if not _tasks(info["ID"]):
                break
        except docker.errors.NotFound:
            break
        time.sleep(CONVERGE_POLL_S)
    return "removed"


# --- configs and secrets -------------------------------------------------------------


def create_config(inputs: Mapping[str, Any]) -> tuple[str, str]:
    data = base64.b64decode(inputs["data"])
    try:
        created = api().create_config(inputs["name"], data)
    except docker.errors.APIError as e:
        raise ReplayError(f"config {inputs['name']}: {e.explanation or e}") from None
    return created["ID"], f"{len(data)} bytes"


def read_config(name: str) -> tuple[str, dict[str, Any]] | None:
    try:
        info = api().inspect_config(name)
    except docker.errors.NotFound:
        return None
    return info["ID"], {"name": info["Spec"]["Name"], "data": info["Spec"]["Data"]}


def delete_config(name: str) -> str:
    try:
        api().remove_config(name)
    except docker.errors.NotFound:
        return "already gone"
    return "removed"


def create_secret(inputs: Mapping[str, Any]) -> tuple[str, str]:
    data = base64.b64decode(inputs["data"])
    try:
        created = api().create_secret(inputs["name"], data)
    except docker.errors.APIError as e:
        raise ReplayError(f"secret: {e.explanation or e}") from None
    return created["ID"], f"{len(data)} bytes"


def read_secret(name: str) -> tuple[str, dict[str, Any]] | None:
    try:
        info = api().inspect_secret(name)
    except docker.errors.NotFound:
        return None
    return info["ID"], {"name": info["Spec"]["Name"]}


def delete_secret(name: str) -> str:
    try:
        api().remove_secret(name)
    except docker.errors.NotFound:
        return "already gone"
    return "removed"
