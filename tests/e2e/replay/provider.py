"""The provider's create, read, update and delete on a real Docker engine, one set
per resource type, as kreuzwerker/terraform-provider-docker does them (files are
named in components/provider/model.py). `read_*` returns the inputs as the
provider stores them in state: only the keys it reads back, in its normal form.
"""

from __future__ import annotations

from typing import Any, Mapping

import docker

from components.provider import model as pm
from tests.e2e.replay.docker_api import api, inspect, remove_container, upload_archive, wait_healthy
from tests.e2e.replay.errors import ReplayError, UnsupportedInput
from tests.e2e.replay.inputs import MOUNT_TYPES, RESTART_POLICIES

MIB = 1024 * 1024


def _swap_bytes(swap_mb: float) -> int:
    """memory_swap in MB -> Docker's MemorySwap: MiB when positive, -1/0 as they are."""
    swap = int(swap_mb)
    return swap * MIB if swap > 0 else swap


# --- containers -----------------------------------------------------------------


def _create_args(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Container inputs -> docker.APIClient.create_container kwargs, as the
    provider builds its create request (K/read resourceDockerContainerCreate)."""
    client = api()
    name = inputs["name"]
    where = f"container {name}"

    healthcheck = None
    if "healthcheck" in inputs:
        hc = inputs["healthcheck"]
        healthcheck = docker.types.Healthcheck(
            test=list(hc["tests"]),
            interval=pm.duration_ns(hc.get("interval", "0s")),
            timeout=pm.duration_ns(hc.get("timeout", "0s")),
            retries=int(hc.get("retries", 0)),
            start_period=pm.duration_ns(hc.get("startPeriod", "0s")),
        )
        start_interval = pm.duration_ns(hc.get("startInterval", "0s"))
        if start_interval:
            check_start_interval(where, client.api_version)
            healthcheck["StartInterval"] = start_interval

    mounts = []
    for m in inputs.get("mounts", []):
        if m.get("type") not in MOUNT_TYPES:
            raise UnsupportedInput(f"{where}: mount type {m.get('type')!r} is not applied by the replay")
        mounts.append(docker.types.Mount(target=m["target"], source=m["source"], type="volume",
                                         read_only=bool(m.get("readOnly", False))))

    exposed: list[tuple[int, str]] = []
    bindings: dict[str, list[tuple[str, int]]] = {}
    for p in inputs.get("ports", []):
        proto = p.get("protocol", "tcp")
        exposed.append((int(p["internal"]), proto))
        bindings.setdefault(f"{int(p['internal'])}/{proto}", []).append(
            (p.get("ip", "0.0.0.0"), int(p["external"])))

    restart = inputs.get("restart", "no")
    if restart not in RESTART_POLICIES:
        raise ReplayError(f"{where}: unknown restart policy {restart!r}")

    memory = int(inputs["memory"]) * MIB if inputs.get("memory") else None
    swap = inputs.get("memorySwap")
    # K/read create: capabilities' add and drop, security_opts, group_add and tmpfs
    # are sent when set, read_only always (false by default), as given.
    caps = inputs.get("capabilities") or {}
    host_config = client.create_host_config(
        mounts=mounts or None,
        port_bindings=bindings or None,
        restart_policy={"Name": restart, "MaximumRetryCount": 0},
        mem_limit=memory,
        memswap_limit=_swap_bytes(swap) if swap is not None else None,
        nano_cpus=pm.nano_cpus(inputs["cpus"]) if inputs.get("cpus") else None,
        log_config=docker.types.LogConfig(type=inputs.get("logDriver", "json-file"),
                                          config=dict(inputs.get("logOpts") or {})),
        network_mode="bridge",  # the schema default; networks_advanced are joined after create
        init=False,  # K/read create: always sent, false when unset
        cap_add=list(caps.get("adds") or []) or None,
        cap_drop=list(caps.get("drops") or []) or None,
        security_opt=list(inputs.get("securityOpts") or []) or None,
        group_add=list(inputs.get("groupAdds") or []) or None,
        read_only=bool(inputs.get("readOnly", False)),
        tmpfs=dict(inputs.get("tmpfs") or {}) or None,
    )
    command = inputs.get("command")
    if command and any(c == "" for c in command):
        raise ReplayError(f"{where}: values for command may not be empty")
    return dict(
        image=inputs["image"],
        name=name,
        command=command or None,
        entrypoint=inputs.get("entrypoints") or None,
        user=inputs.get("user") or None,
        environment=list(inputs.get("envs", [])) or None,
        labels={lab["label"]: lab["value"] for lab in inputs.get("labels", [])} or None,
        ports=[(port, proto) if proto != "tcp" else port for port, proto in exposed] or None,
        healthcheck=healthcheck,
        host_config=host_config,
        use_config_proxy=False,
    )


def check_start_interval(where: str, api_version: str) -> None:
    """The provider's client refuses a start_interval below API 1.44 (provider_model
    START_INTERVAL_API): so does the replay, with the same words."""
    if tuple(int(x) for x in api_version.split(".")) < pm.START_INTERVAL_API:
        need = ".".join(map(str, pm.START_INTERVAL_API))
        raise ReplayError(f'{where}: create failed: "specify health-check start interval" '
                          f"requires API version {need}, but the Docker daemon API version is "
                          f"{api_version} (synapse:healthcheckStartInterval needs Docker 25+)")


class PartialCreate(ReplayError):
    """Created, then failed (files, start or `wait`): the provider has set the ID
    already (K/read create: d.SetId right after ContainerCreate), so the resource
    is saved in state as tainted, and the next up replaces it, a destroy deletes it."""

    def __init__(self, message: str, cid: str) -> None:
        super().__init__(message)
        self.cid = cid


def create_container(inputs: Mapping[str, Any]) -> tuple[str, str]:
    """Create, join the other networks, upload the files, start, and with `wait`
    poll until healthy. Returns (ID, a note for the log)."""
    client = api()
    name = inputs["name"]
    try:
        created = client.create_container(**_create_args(inputs))
    except docker.errors.APIError as e:
        raise ReplayError(f"container {name}: create failed: {e.explanation or e}") from None
    cid = created["Id"]
    try:
        return cid, _finish_create(client, cid, name, inputs)
    except Exception as e:  # noqa: BLE001 - re-raised with the ID
        raise PartialCreate(str(e), cid) from e


def _finish_create(client, cid: str, name: str, inputs: Mapping[str, Any]) -> str:
    networks = inputs.get("networksAdvanced", [])
    if networks:  # K/read create: leave the default bridge, join each network with its aliases
        client.disconnect_container_from_network(cid, "bridge")
        for net in networks:
            client.connect_container_to_network(cid, net["name"], aliases=net.get("aliases") or None)
    uploads = inputs.get("uploads", [])
    if uploads and not client.put_archive(cid, "/", upload_archive(uploads)):
        raise ReplayError(f"container {name}: uploading files failed")
    client.start(cid)
    note = f"{len(uploads)} files"
    if inputs.get("wait"):
        note += f", healthy {wait_healthy(name, float(inputs.get('waitTimeout', 60))):.1f} s after start"
    return note


def read_container(name: str) -> tuple[str, dict[str, Any]] | None:
    """(ID, the inputs the provider reads back), or None when gone; a stopped
    container reads back with mustRun false. envs, labels, networksAdvanced and
    uploads are not read back (K/read)."""
    info = inspect("container", name)
    if info is None:
        return None
    cfg, host = info["Config"], info["HostConfig"]
    out: dict[str, Any] = {
        "name": info["Name"].lstrip("/"),
        "image": info["Image"],  # the program gives RemoteImage.image_id, a sha256: ID
        "entrypoints": list(cfg.get("Entrypoint") or []),
        "command": list(cfg.get("Cmd") or []),
        "mounts": [{"target": m["Target"], "type": m["Type"], "source": m.get("Source", ""),
                    "readOnly": bool(m.get("ReadOnly", False))}
                   for m in host.get("Mounts") or []],
        "ports": [
            {"internal": int(port.split("/")[0]), "external": int(b["HostPort"]),
             "ip": b["HostIp"], "protocol": port.split("/")[1]}
            for port, binds in sorted((info["NetworkSettings"].get("Ports") or {}).items(),
                                      key=lambda kv: int(kv[0].split("/")[0]))
            for b in (binds or [])],
        "restart": host["RestartPolicy"]["Name"] or "no",
        "memory": host["Memory"] // MIB,
        "memorySwap": host["MemorySwap"] // MIB if host["MemorySwap"] > 0 else host["MemorySwap"],
        "logDriver": host["LogConfig"]["Type"],
        "logOpts": dict(host["LogConfig"].get("Config") or {}),
    }
    out.update(_read_privileges(cfg, host))
    if host.get("NanoCpus"):
        out["cpus"] = pm.cpus_read_back(host["NanoCpus"])
    hc = cfg.get("Healthcheck")
    if hc:
        out["healthcheck"] = {
            "tests": list(hc.get("Test") or []),
            **{key: pm.duration_read_back(hc.get(field, 0))
               for key, field in (("interval", "Interval"), ("timeout", "Timeout"),
                                  ("startPeriod", "StartPeriod"),
                                  ("startInterval", "StartInterval"))},
            "retries": hc.get("Retries", 0),
        }
    if not info["State"]["Running"]:
        out["mustRun"] = False  # K/read: a stopped container is stored with must_run false
    return info["Id"], out


def _read_privileges(cfg: Mapping[str, Any], host: Mapping[str, Any]) -> dict[str, Any]:
    """K/read: user, read_only, security_opts, tmpfs and group_add as Docker reports
    them; capabilities only when CapAdd or CapDrop is non-empty."""
    out: dict[str, Any] = {
        "user": cfg.get("User") or "",
        "readOnly": bool(host.get("ReadonlyRootfs")),
        "securityOpts": list(host.get("SecurityOpt") or []),
        "tmpfs": dict(host.get("Tmpfs") or {}),
        "groupAdds": list(host.get("GroupAdd") or []),
    }
    if host.get("CapAdd") or host.get("CapDrop"):
        out["capabilities"] = {"adds": list(host.get("CapAdd") or []),
                               "drops": list(host.get("CapDrop") or [])}
    return out


def update_container(name: str, changed: Mapping[str, Any]) -> str:
    """K/read resourceDockerContainerUpdate: must_run back to true starts the
    container; ContainerUpdate sets the resources and restart policy; the other
    in-place attributes (healthcheck, wait, destroy_grace_seconds) only change state."""
    notes = []
    if "mustRun" in changed and changed["mustRun"] in (None, True):
        api().start(name)
        notes.append("started again")
    kwargs: dict[str, Any] = {}
    if "restart" in changed:
        kwargs["restart_policy"] = {"Name": changed["restart"], "MaximumRetryCount": 0}
    if "memory" in changed:
        kwargs["mem_limit"] = int(changed["memory"]) * MIB
    if "memorySwap" in changed:
        kwargs["memswap_limit"] = _swap_bytes(changed["memorySwap"])
    if kwargs:
        api().update_container(name, **kwargs)
        notes.append("updated in place: " + ", ".join(sorted(kwargs)))
    rest = sorted(set(changed) - {"mustRun", "restart", "memory", "memorySwap"})
    if rest:
        notes.append("state only: " + ", ".join(rest))
    return "; ".join(notes)


def delete_container(name: str, inputs: Mapping[str, Any]) -> str:
    grace = int(inputs.get("destroyGraceSeconds", 0))
    gone = remove_container(name, grace)
    return f"stopped (grace {grace} s) and removed" if gone else "already gone"


# --- networks -------------------------------------------------------------------


def create_network(inputs: Mapping[str, Any]) -> tuple[str, str]:
    name = inputs["name"]
    try:
        # K/network: CheckDuplicate, so a network of that name the stack does not own
        # is an error, not adopted.
        net = api().create_network(name, driver=inputs.get("driver", "bridge"),
                                   internal=bool(inputs.get("internal", False)),
                                   attachable=bool(inputs.get("attachable", False)) or None,
                                   options=dict(inputs.get("options") or {}) or None,
                                   check_duplicate=True)
    except docker.errors.APIError as e:
        raise ReplayError(f"network {name}: {e.explanation or e}") from None
    return net["Id"], "created"


def read_network(name: str) -> tuple[str, dict[str, Any]] | None:
    info = inspect("network", name)
    if info is None:
        return None
    out = {"name": info["Name"], "driver": info["Driver"], "internal": bool(info.get("Internal"))}
    if info.get("Attachable"):
        out["attachable"] = True

    return info["Id"], out


def delete_network(name: str) -> str:
    try:
        api().remove_network(name)
    except docker.errors.NotFound:
        return "already gone"
    return "removed"


# --- volumes --------------------------------------------------------------------


def create_volume(inputs: Mapping[str, Any]) -> tuple[str, str]:
    """Docker's VolumeCreate returns an existing volume of that name as it is
    (options untouched): how a retained volume is taken back after a destroy."""
    name = inputs["name"]
    existed = inspect("volume", name) is not None
    vol = api().create_volume(name, driver=inputs.get("driver", "local"),
                              driver_opts=dict(inputs.get("driverOpts") or {}) or None)
    return vol["Name"], "existing volume taken over" if existed else "created"


def read_volume(name: str) -> tuple[str, dict[str, Any]] | None:
    info = inspect("volume", name)
    if info is None:
        return None
    out: dict[str, Any] = {"name": info["Name"], "driver": info["Driver"]}
    if info.get("Options"):
        out["driverOpts"] = dict(info["Options"])
    return info["Name"], out


def delete_volume(name: str) -> str:
    try:
        api().remove_volume(name, force=True)
    except docker.errors.NotFound:
        return "already gone"
    return "removed"


# --- images ---------------------------------------------------------------------


def create_image(inputs: Mapping[str, Any]) -> tuple[str, str]:
    """The image must already be on this host: the replay never pulls."""
    ref = inputs["name"]
    info = inspect("image", ref)
    if info is None:
        raise ReplayError(f"image {ref!r} is not on this Docker host and the replay never pulls; "
                          "build the stand-ins with `python tests/e2e/images/build.py`")
    return info["Id"], info["Id"][:19]


def read_image(ref: str) -> tuple[str, dict[str, Any]] | None:
    info = inspect("image", ref)
    return None if info is None else (info["Id"], {"name": ref})
