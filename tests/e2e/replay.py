"""Replay a stack on a real Docker engine, the way pulumi-docker would apply it.

The Pulumi engine and provider plugins cannot be installed here, so this runs the
program under Pulumi's mocks (tests/support/capture.py) and applies exactly the
inputs it registered to the local Docker engine, in dependency order:

  RemoteImage  the image must already exist locally (never pulled);
  Network      created with its driver and `internal` flag (reused if present);
  Volume       created with its driver and options (reused if present: data persists);
  Container    created as the kreuzwerker provider does it (healthcheck durations
               in ns, memory MB -> bytes, cpus -> NanoCPUs, restart policy, log
               config, port bindings, mounts, networks with aliases), every upload
               written with put_archive before start, started, then, with `wait`,
               polled until healthy. A Container input the replay does not apply
               is refused, never ignored.

What Pulumi keeps in its state and the replay must keep too: the outputs of the
`random:*` resources (the stack's secrets: Postgres password, signing key, ...)
and which Docker objects the stack owns. They live in a small state file per stack
(SYNAPSE_E2E_STATE_DIR, default ~/.local/state/synapse-e2e), so a second `up`
reuses the secrets the data was written with. `down --volumes` forgets them.

Usage:
  python -m tests.e2e.replay up   --config config/Pulumi.dev.yaml [--set key=VALUE ...]   (VALUE is YAML)
  python -m tests.e2e.replay down --config config/Pulumi.dev.yaml [--set ...] [--volumes]

Resource options (replaceOnChanges, deleteBeforeReplace, ...) are the engine's
business and are not applied: every `up` replaces every container.

Before any container starts, the DOCKER-USER chain must drop forwarding to the
uplink (tests/e2e/host_setup.sh adds the rule): no container may reach beyond
this machine. `up` refuses to start anything otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import docker
import yaml

from components.stack_config import override_arg
from tests.support import capture as capture_mod
from tests.support.capture import Capture, Registered, reveal

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"
NO_OP_PREFIXES = ("pulumi:pulumi:Stack", "synapse:index:", "random:")

LABEL_PREFIX = "org.matrix.synapse-workers"
STATE_DIR = Path(os.environ.get("SYNAPSE_E2E_STATE_DIR",
                                Path.home() / ".local" / "state" / "synapse-e2e"))
HEALTH_POLL_S = 0.5  # the provider polls every second; finer costs nothing
LOG_TAIL = 60


class ReplayError(RuntimeError):
    """The stack cannot be applied as registered."""


class UnsupportedInput(ReplayError):
    """A registered input the replay does not apply (so it would be silently lost)."""


def log(msg: str) -> None:
    print(f"replay: {msg}", flush=True)


# --- inputs: validation against what the replay applies -------------------------

# Every key the replay applies, per resource type; nested objects list their keys.
# Anything else is refused: ignoring it would deploy something the program did not ask for.
_LIST_OF = "list"
CONTAINER_SCHEMA: dict[str, Any] = {
    "name": str,
    "image": str,
    "entrypoints": [str],
    "command": [str],
    "envs": [str],
    "labels": [{"label": str, "value": str}],
    "uploads": [{"file": str, "content": str, "executable": bool}],
    "mounts": [{"target": str, "type": str, "source": str}],
    "networksAdvanced": [{"name": str, "aliases": [str]}],
    "ports": [{"internal": float, "external": float, "ip": str, "protocol": str}],
    "healthcheck": {"tests": [str], "interval": str, "timeout": str, "retries": float,
                    "startPeriod": str},
    "restart": str,
    "memory": float,
    "cpus": str,
    "logDriver": str,
    "logOpts": {"*": str},
    "destroyGraceSeconds": float,
    "wait": bool,
    "waitTimeout": float,
}
NETWORK_SCHEMA = {"name": str, "driver": str, "internal": bool}
VOLUME_SCHEMA = {"name": str, "driver": str, "driverOpts": {"*": str}}
IMAGE_SCHEMA = {"name": str, "keepLocally": bool}
SCHEMAS = {CONTAINER: CONTAINER_SCHEMA, NETWORK: NETWORK_SCHEMA, VOLUME: VOLUME_SCHEMA,
           IMAGE: IMAGE_SCHEMA}
MOUNT_TYPES = ("volume",)  # bind/tmpfs mounts are not applied: refuse them
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


def check_inputs(res: Registered) -> dict[str, Any]:
    """The resource's inputs with secrets revealed, after checking that the replay
    applies every one of them."""
    schema = SCHEMAS.get(res.type)
    if schema is None:
        raise UnsupportedInput(f"{res.type} {res.name!r}: resource type not applied by the replay")
    plain = res.plain
    _check(plain, schema, f"{res.type.split(':')[-1]} {res.name!r}")
    return plain


def _check(value: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise UnsupportedInput(f"{where}: expected an object, got {value!r}")
        for key, sub in value.items():
            if key in schema:
                _check(sub, schema[key], f"{where}.{key}")
            elif "*" in schema:
                _check(sub, schema["*"], f"{where}.{key}")
            else:
                raise UnsupportedInput(
                    f"{where}: input {key!r} is not applied by the replay "
                    f"(applied: {', '.join(k for k in schema if k != '*')})")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise UnsupportedInput(f"{where}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    elif schema is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnsupportedInput(f"{where}: expected a number, got {value!r}")
    elif not isinstance(value, schema):
        raise UnsupportedInput(f"{where}: expected {schema.__name__}, got {value!r}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}


def duration_ns(text: str, where: str) -> int:
    """Go's time.ParseDuration, as the provider uses for healthcheck durations."""
    if text in ("0", ""):
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ReplayError(f"{where}: invalid duration {text!r}")
    return int(total)


def nano_cpus(text: str, where: str) -> int:
    """docker's opts.ParseCPUs: a decimal number of CPUs -> NanoCPUs."""
    try:
        value = float(text)
    except ValueError:
        raise ReplayError(f"{where}: invalid cpus {text!r}") from None
    nano = int(round(value * 1e9))
    if nano <= 0:
        raise ReplayError(f"{where}: cpus must be positive, got {text!r}")
    return nano


# --- state: what Pulumi would keep between runs ---------------------------------


def state_path(stack: str) -> Path:
    return STATE_DIR / f"{stack}.json"


def load_state(stack: str) -> dict[str, Any]:
    path = state_path(stack)
    if path.exists():
        return json.loads(path.read_text())
    return {"random": {}, "containers": {}, "networks": [], "volumes": []}


def save_state(stack: str, state: Mapping[str, Any]) -> None:
    path = state_path(stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.chmod(0o600)  # holds the stack's secrets, like an unencrypted Pulumi state
    tmp.replace(path)


def forget_state(stack: str) -> None:
    state_path(stack).unlink(missing_ok=True)


@contextlib.contextmanager
def _stateful_randoms(state: dict[str, Any]):
    """random:* resources keep their outputs while their inputs are unchanged, as
    they do in Pulumi state; new or changed ones get fresh values (a replacement)."""
    base = capture_mod._Mocks

    class Stateful(base):  # type: ignore[misc, valid-type]
        def new_resource(self, args):
            if not args.typ.startswith("random:"):
                return super().new_resource(args)
            key = f"{args.typ}::{args.name}"
            inputs = json.loads(json.dumps(args.inputs, default=str))
            kept = state["random"].get(key)
            if kept and kept["inputs"] == inputs:
                return kept["id"], kept["outputs"]
            rid, outputs = super().new_resource(args)
            state["random"][key] = {"inputs": inputs, "id": rid,
                                    "outputs": json.loads(json.dumps(outputs, default=str))}
            return rid, outputs

    capture_mod._Mocks = Stateful
    try:
        yield
    finally:
        capture_mod._Mocks = base


def capture_stack(config: str | Path, overrides: Mapping[str, Any] | None,
                  state: dict[str, Any]) -> Capture:
    # The capture runs on the current event loop; a caller that ran and closed its
    # own (asyncio.run) leaves none, so give it one and leave it current for others.
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if loop.is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    with _stateful_randoms(state):
        return capture_mod.run_stack_file(config, overrides)


def stack_of(config: str | Path) -> str:
    from components.stack_config import stack_name_of
    return stack_name_of(Path(config))


# --- isolation ------------------------------------------------------------------


def check_isolation() -> str:
    """Refuse unless DOCKER-USER drops everything forwarded to the uplink(s) before
    any rule that could let it through. Returns a description for the log."""
    routes = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True,
                            text=True, check=True).stdout
    uplinks = sorted(set(re.findall(r"\bdev (\S+)", routes)))
    if not uplinks:
        return "no IPv4 default route: nothing can leave this machine"
    try:
        chain = subprocess.run(["iptables", "-S", "DOCKER-USER"], capture_output=True,
                               text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as e:
        raise ReplayError(f"cannot read the DOCKER-USER chain ({e}); run tests/e2e/host_setup.sh") from None
    rules = [r for r in chain if r.startswith("-A DOCKER-USER")]
    for uplink in uplinks:
        drop = f"-A DOCKER-USER -o {uplink} -j DROP"
        if drop not in rules:
            raise ReplayError(f"isolation: DOCKER-USER has no '{drop}' rule; containers could "
                              "reach beyond this machine. Run tests/e2e/host_setup.sh first")
        before = rules[:rules.index(drop)]
        if any(re.search(r"-j (ACCEPT|RETURN)\b", r) for r in before):
            raise ReplayError(f"isolation: a rule before '{drop}' in DOCKER-USER lets traffic "
                              f"through: {before}")
    return f"egress to {', '.join(uplinks)} dropped (DOCKER-USER)"


# --- Docker --------------------------------------------------------------------

_api_version: str | None = None
_local = threading.local()


def api() -> docker.APIClient:
    """One low-level client per thread (requests sessions are not thread-safe)."""
    global _api_version
    client = getattr(_local, "client", None)
    if client is None:
        if _api_version is None:
            probe = docker.APIClient(version="auto", timeout=600)
            _api_version = probe.api_version
            client = probe
        else:
            client = docker.APIClient(version=_api_version, timeout=600)
        _local.client = client
    return client


def _not_found(e: Exception) -> bool:
    return isinstance(e, docker.errors.NotFound)


def container_logs(name: str, tail: int = LOG_TAIL) -> str:
    try:
        out = api().logs(name, tail=tail, stdout=True, stderr=True)
        return out.decode(errors="replace")
    except docker.errors.APIError as e:
        return f"(no logs: {e})"


def remove_container(name: str, grace_s: int) -> bool:
    """The provider's delete: stop with destroy_grace_seconds as the timeout (0 =
    kill), then force-remove with its anonymous volumes. False if it did not exist."""
    client = api()
    try:
        client.stop(name, timeout=grace_s)
    except docker.errors.APIError as e:
        if _not_found(e):
            return False
        raise
    try:
        client.remove_container(name, v=True, force=True)
    except docker.errors.APIError as e:
        if not _not_found(e) and "already in progress" not in str(e):
            raise
    # Wait for the removal to finish (a name cannot be reused before).
    for _ in range(200):
        try:
            client.inspect_container(name)
        except docker.errors.NotFound:
            return True
        time.sleep(0.05)
    raise ReplayError(f"container {name} was not removed")


# --- applying resources ---------------------------------------------------------


@dataclass
class Applied:
    """The result of applying one resource."""
    res: Registered
    seconds: float
    note: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class Context:
    state: dict[str, Any]
    image_ids: dict[str, str] = field(default_factory=dict)  # reference -> image ID
    lock: threading.Lock = field(default_factory=threading.Lock)
    isolation_checked: bool = False


def apply_image(res: Registered, ctx: Context) -> str:
    inputs = check_inputs(res)
    ref = inputs["name"]
    try:
        image = api().inspect_image(ref)
    except docker.errors.ImageNotFound:
        raise ReplayError(f"image {ref!r} is not on this Docker host and the replay never pulls; "
                          "build the stand-ins with `python tests/e2e/images/build.py`") from None
    with ctx.lock:
        # The mock output `imageId` is the reference; the provider's is the ID.
        ctx.image_ids[ref] = image["Id"]
    return image["Id"][:19]


def apply_network(res: Registered, ctx: Context) -> str:
    inputs = check_inputs(res)
    name = inputs["name"]
    driver = inputs.get("driver", "bridge")
    internal = bool(inputs.get("internal", False))
    client = api()
    found = client.networks(names=[name])
    found = [n for n in found if n["Name"] == name]
    with ctx.lock:
        if name not in ctx.state["networks"]:
            ctx.state["networks"].append(name)
    if found:
        net = found[0]
        if net["Driver"] != driver or bool(net.get("Internal")) != internal:
            raise ReplayError(
                f"network {name} exists with driver={net['Driver']} internal={net.get('Internal')}, "
                f"wanted driver={driver} internal={internal}: run `down` first")
        return "exists, reused"
    client.create_network(name, driver=driver, internal=internal, check_duplicate=True)
    return "created"


def apply_volume(res: Registered, ctx: Context) -> str:
    inputs = check_inputs(res)
    name = inputs["name"]
    driver = inputs.get("driver", "local")
    opts = dict(inputs.get("driverOpts") or {})
    client = api()
    with ctx.lock:
        if name not in ctx.state["volumes"]:
            ctx.state["volumes"].append(name)
    try:
        vol = client.inspect_volume(name)
    except docker.errors.NotFound:
        client.create_volume(name, driver=driver, driver_opts=opts or None)
        return "created"
    if vol["Driver"] != driver or (vol.get("Options") or {}) != opts:
        raise ReplayError(f"volume {name} exists with driver={vol['Driver']} "
                          f"options={vol.get('Options')}, wanted driver={driver} options={opts}: "
                          "its replacement would lose data; run `down --volumes` first")
    return "exists, reused"


def upload_archive(uploads: Iterable[Mapping[str, Any]]) -> bytes:
    """One tar of every upload, each as the provider writes it: the path as given,
    mode 0744 if executable else 0644, owned by root."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for up in uploads:
            data = up["content"].encode()
            info = tarfile.TarInfo(up["file"])
            info.size = len(data)
            info.mode = 0o744 if up.get("executable") else 0o644
            info.mtime = now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def container_create_args(inputs: Mapping[str, Any], image_ids: Mapping[str, str]) -> dict[str, Any]:
    """Container inputs -> docker.APIClient.create_container kwargs, as the
    kreuzwerker provider builds its create request."""
    client = api()
    name = inputs["name"]
    where = f"container {name}"

    image = image_ids.get(inputs["image"], inputs["image"])

    healthcheck = None
    if "healthcheck" in inputs:
        hc = inputs["healthcheck"]
        healthcheck = docker.types.Healthcheck(
            test=list(hc["tests"]),
            interval=duration_ns(hc.get("interval", "0s"), where + ".healthcheck.interval"),
            timeout=duration_ns(hc.get("timeout", "0s"), where + ".healthcheck.timeout"),
            retries=int(hc.get("retries", 0)),
            start_period=duration_ns(hc.get("startPeriod", "0s"), where + ".healthcheck.startPeriod"),
        )

    mounts = []
    for m in inputs.get("mounts", []):
        if m.get("type") not in MOUNT_TYPES:
            raise UnsupportedInput(f"{where}: mount type {m.get('type')!r} is not applied by the replay")
        mounts.append(docker.types.Mount(target=m["target"], source=m["source"], type="volume"))

    exposed: list[tuple[int, str]] = []
    bindings: dict[str, list[tuple[str, int] | int]] = {}
    for p in inputs.get("ports", []):
        proto = p.get("protocol", "tcp")
        key = f"{int(p['internal'])}/{proto}"
        exposed.append((int(p["internal"]), proto))
        if "external" in p or "ip" in p:
            binding: Any = (p.get("ip", ""), int(p["external"])) if "external" in p else (p["ip"],)
            bindings.setdefault(key, []).append(binding)

    restart = inputs.get("restart", "no")
    if restart not in RESTART_POLICIES:
        raise ReplayError(f"{where}: unknown restart policy {restart!r}")

    networks = inputs.get("networksAdvanced", [])
    first = networks[0] if networks else None

    host_config = client.create_host_config(
        mounts=mounts or None,
        port_bindings=bindings or None,
        restart_policy={"Name": restart, "MaximumRetryCount": 0},
        mem_limit=int(inputs["memory"]) * 1024 * 1024 if inputs.get("memory") else None,
        nano_cpus=nano_cpus(inputs["cpus"], where) if inputs.get("cpus") else None,
        log_config=docker.types.LogConfig(type=inputs.get("logDriver", "json-file"),
                                          config=dict(inputs.get("logOpts") or {})),
        network_mode=first["name"] if first else None,
        init=False,
    )
    command = inputs.get("command")
    if command and any(c == "" for c in command):
        raise ReplayError(f"{where}: values for command may not be empty")
    return dict(
        image=image,
        name=name,
        command=command or None,
        entrypoint=inputs.get("entrypoints") or None,
        environment=list(inputs.get("envs", [])) or None,
        labels={lab["label"]: lab["value"] for lab in inputs.get("labels", [])} or None,
        ports=[(port, proto) if proto != "tcp" else port for port, proto in exposed] or None,
        healthcheck=healthcheck,
        host_config=host_config,
        networking_config=client.create_networking_config(
            {first["name"]: client.create_endpoint_config(aliases=first.get("aliases") or None)}
        ) if first else None,
        use_config_proxy=False,
    )


def wait_healthy(name: str, timeout_s: float) -> float:
    """Poll until Docker reports the container healthy, as `wait` does; fail after
    the timeout with the container's last logs. Returns the seconds waited."""
    client = api()
    start = time.monotonic()
    while True:
        state = client.inspect_container(name)["State"]
        health = state.get("Health")
        if health is None:
            raise ReplayError(f"container {name}: `wait` is set but it has no healthcheck")
        if health["Status"] == "healthy":
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            probes = "\n".join(f"  {h.get('ExitCode')}: {h.get('Output', '').strip()[:300]}"
                               for h in health.get("Log", [])[-3:])
            raise ReplayError(
                f"container {name} failed to be healthy within {timeout_s:g} s "
                f"(status {health['Status']}, running={state.get('Running')}, "
                f"restarts={client.inspect_container(name).get('RestartCount')}, "
                f"exit code {state.get('ExitCode')})\nlast healthchecks:\n{probes}\n"
                f"last logs:\n{container_logs(name)}")
        time.sleep(HEALTH_POLL_S)


def apply_container(res: Registered, ctx: Context) -> str:
    inputs = check_inputs(res)
    if not ctx.isolation_checked:
        raise ReplayError("isolation was not checked before starting containers")
    name = inputs["name"]
    client = api()
    grace = int(inputs.get("destroyGraceSeconds", 0))
    # Delete-before-replace: whatever holds the name goes first.
    replaced = remove_container(name, grace)
    with ctx.lock:
        ctx.state["containers"][name] = {"grace": grace}
    t0 = time.monotonic()
    created = client.create_container(**container_create_args(inputs, ctx.image_ids))
    cid = created["Id"]
    for extra in inputs.get("networksAdvanced", [])[1:]:
        client.connect_container_to_network(cid, extra["name"], aliases=extra.get("aliases") or None)
    uploads = inputs.get("uploads", [])
    if uploads:
        if not client.put_archive(cid, "/", upload_archive(uploads)):
            raise ReplayError(f"container {name}: uploading files failed")
    client.start(cid)
    note = ("replaced" if replaced else "created") + f", {len(uploads)} files"
    if inputs.get("wait"):
        waited = wait_healthy(name, float(inputs.get("waitTimeout", 60)))
        note += f", healthy {waited:.1f} s after start"
    else:
        note += f", started in {time.monotonic() - t0:.1f} s"
    return note


APPLIERS: dict[str, Callable[[Registered, Context], str]] = {
    IMAGE: apply_image, NETWORK: apply_network, VOLUME: apply_volume, CONTAINER: apply_container,
}


# --- dependency graph -----------------------------------------------------------


def is_no_op(res: Registered) -> bool:
    return res.type.startswith(NO_OP_PREFIXES)


def dependency_graph(cap: Capture) -> dict[str, set[str]]:
    """URN -> URNs that must be applied first: its `dependencies` and its parent.
    Depending on a component means depending on everything under it."""
    by_urn = {r.urn: r for r in cap.resources}
    children: dict[str, list[str]] = {}
    for r in cap.resources:
        if r.parent:
            children.setdefault(r.parent, []).append(r.urn)

    def descendants(urn: str) -> set[str]:
        out: set[str] = set()
        for c in children.get(urn, []):
            out.add(c)
            out |= descendants(c)
        return out

    graph: dict[str, set[str]] = {}
    for r in cap.resources:
        deps: set[str] = set()
        for d in r.dependencies:
            if d not in by_urn:
                raise ReplayError(f"{r.name} depends on an unregistered resource {d}")
            deps.add(d)
            if by_urn[d].type.startswith("synapse:index:"):
                deps |= descendants(d)
        if r.parent and r.parent in by_urn:
            deps.add(r.parent)
        deps.discard(r.urn)
        graph[r.urn] = deps
    # Reject cycles now rather than hang later.
    done: set[str] = set()
    while len(done) < len(graph):
        ready = [u for u, ds in graph.items() if u not in done and ds <= done]
        if not ready:
            raise ReplayError(f"dependency cycle among {sorted(set(graph) - done)}")
        done |= set(ready)
    return graph


def container_stages(cap: Capture, graph: Mapping[str, set[str]]) -> dict[str, int]:
    """Container URN -> stage: 1 + the longest chain of containers before it."""
    by_urn = {r.urn: r for r in cap.resources}
    memo: dict[str, int] = {}

    def depth(urn: str) -> int:
        if urn not in memo:
            own = 1 if by_urn[urn].type == CONTAINER else 0
            memo[urn] = own + max((depth(d) for d in graph[urn]), default=0)
        return memo[urn]

    return {r.urn: depth(r.urn) for r in cap.resources if r.type == CONTAINER}


def run_graph(resources: list[Registered], graph: Mapping[str, set[str]],
              action: Callable[[Registered], str], workers: int = 16,
              label: str = "apply") -> dict[str, Applied]:
    """Run `action` on every resource once all its dependencies are done, in
    parallel as the Pulumi engine does. Stops scheduling at the first failure."""
    pending = {r.urn: r for r in resources}
    results: dict[str, Applied] = {}
    done: set[str] = set()
    running: dict[Future, Registered] = {}
    errors: list[tuple[Registered, BaseException]] = []
    t_start = time.monotonic()

    def timed(res: Registered) -> Applied:
        t0 = time.monotonic()
        note = action(res)
        t1 = time.monotonic()
        return Applied(res, t1 - t0, note or "", t0 - t_start, t1 - t_start)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=label) as pool:
        while pending or running:
            if not errors:
                for urn, res in list(pending.items()):
                    if graph.get(urn, set()) <= done:
                        del pending[urn]
                        running[pool.submit(timed, res)] = res
            if not running:
                if pending and not errors:
                    raise ReplayError(f"unschedulable: {[r.name for r in pending.values()]}")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                res = running.pop(fut)
                try:
                    applied = fut.result()
                except BaseException as e:  # noqa: BLE001 - reported below
                    errors.append((res, e))
                    log(f"[{time.monotonic() - t_start:6.1f}s] FAILED {res.type.split(':')[-1]} "
                        f"{res.name}: {e}")
                    continue
                results[res.urn] = applied
                done.add(res.urn)
                if not is_no_op(res):
                    log(f"[{applied.finished_at:6.1f}s] {res.type.split(':')[-1]} {res.name}: "
                        f"{applied.note} ({applied.seconds:.1f} s)")
    if errors:
        res, e = errors[0]
        raise ReplayError(f"{label} failed at {res.type.split(':')[-1]} {res.name}: {e}") from e
    return results


# --- up / down ------------------------------------------------------------------


@dataclass
class Deployed:
    """A stack running on Docker, as the tests need it."""
    stack: str
    config: str
    overrides: dict[str, Any]
    capture: Capture
    outputs: dict[str, Any]
    containers: dict[str, str]  # process key ("main", "rooms1", "nginx", ...) -> container name
    classes: dict[str, str]  # process key -> class ("main", "rooms", "nginx", "postgres", ...)
    nginx_url: str  # client listener, e.g. http://127.0.0.1:8008
    federation_url: str  # federation listener
    server_name: str
    homeserver: dict[str, Any]  # main's homeserver.yaml, secrets included
    registration_shared_secret: str
    secrets: dict[str, str]  # by stack config key: registrationSharedSecret, signingKey, ...
    seconds_to_healthy: float
    stage_seconds: dict[int, float]

    def container(self, key: str) -> str:
        return self.containers[key]

    def by_class(self, cls: str) -> list[str]:
        return [k for k, c in self.classes.items() if c == cls]


def _labels(inputs: Mapping[str, Any]) -> dict[str, str]:
    return {lab["label"]: lab["value"] for lab in inputs.get("labels", [])}


def describe(cap: Capture, overrides: Mapping[str, Any], config: str, stack: str,
             seconds: float = 0.0, stages: Mapping[int, float] | None = None) -> Deployed:
    from components.synapse_config import HOMESERVER_PATH, HOMESERVER_SECRETS, SIGNING_KEY_PATH

    containers, classes = {}, {}
    homeserver: dict[str, Any] = {}
    found: dict[str, str] = {}
    nginx_ports: dict[int, str] = {}
    for res in cap.containers:
        inputs = res.plain
        labels = _labels(inputs)
        key = labels.get(f"{LABEL_PREFIX}.process", res.name)
        containers[key] = inputs["name"]
        classes[key] = labels.get(f"{LABEL_PREFIX}.class", key)
        if labels.get(f"{LABEL_PREFIX}.role") == "main":
            for up in inputs.get("uploads", []):
                if up["file"] == HOMESERVER_PATH:
                    homeserver = yaml.safe_load(up["content"])
                if up["file"] == SIGNING_KEY_PATH:
                    found["signingKey"] = up["content"].strip()
        if labels.get(f"{LABEL_PREFIX}.role") == "postgres":
            env = dict(e.split("=", 1) for e in inputs.get("envs", []))
            found["postgresPassword"] = env["POSTGRES_PASSWORD"]
        if labels.get(f"{LABEL_PREFIX}.role") == "nginx":
            for p in inputs.get("ports", []):
                ip = p.get("ip") or "127.0.0.1"
                ip = "127.0.0.1" if ip == "0.0.0.0" else ip
                nginx_ports[int(p["internal"])] = f"http://{ip}:{int(p['external'])}"
    from components.containers import NGINX_PORTS
    if not homeserver:
        raise ReplayError("no homeserver.yaml upload found in the main container's inputs")
    found.update({name: homeserver[key] for name, key in HOMESERVER_SECRETS.items()})
    outputs = reveal(cap.outputs)
    return Deployed(
        stack=stack,
        config=str(config),
        overrides=dict(overrides),
        capture=cap,
        outputs=outputs,
        containers=containers,
        classes=classes,
        nginx_url=nginx_ports[NGINX_PORTS["client"]],
        federation_url=nginx_ports[NGINX_PORTS["federation"]],
        server_name=outputs["serverName"],
        homeserver=homeserver,
        registration_shared_secret=homeserver["registration_shared_secret"],
        secrets=found,
        seconds_to_healthy=seconds,
        stage_seconds=dict(stages or {}),
    )


def up(config: str | Path, overrides: Mapping[str, Any] | None = None) -> Deployed:
    """Capture the stack under mocks and apply it; returns once every container
    with `wait` is healthy."""
    overrides = dict(overrides or {})
    stack = stack_of(config)
    state = load_state(stack)
    t0 = time.monotonic()
    cap = capture_stack(config, overrides, state)
    t_capture = time.monotonic() - t0
    log(f"{stack}: captured {len(cap.resources)} resources ({len(cap.containers)} containers) "
        f"under mocks in {t_capture:.1f} s")
    # Refuse anything unapplied before touching Docker at all.
    for res in cap.resources:
        if not is_no_op(res):
            check_inputs(res)
    graph = dependency_graph(cap)
    ctx = Context(state=state)
    log(f"isolation: {check_isolation()}")
    ctx.isolation_checked = True
    save_state(stack, state)  # the secrets, before anything is written with them

    def action(res: Registered) -> str:
        if is_no_op(res):
            return ""
        try:
            return APPLIERS[res.type](res, ctx)
        finally:
            with ctx.lock:
                save_state(stack, state)

    t1 = time.monotonic()
    results = run_graph(cap.resources, graph, action, label="up")
    t_total = time.monotonic() - t1

    # Containers the stack owned before but no longer registers: Pulumi deletes them.
    wanted = {r.plain["name"] for r in cap.containers}
    for name in sorted(set(state["containers"]) - wanted):
        log(f"removing {name}: no longer part of the stack")
        remove_container(name, int(state["containers"][name]["grace"]))
        del state["containers"][name]
    save_state(stack, state)

    stages = container_stages(cap, graph)
    stage_seconds: dict[int, float] = {}
    for stage in sorted(set(stages.values())):
        members = [results[u] for u, s in stages.items() if s == stage]
        span = max(a.finished_at for a in members) - min(a.started_at for a in members)
        stage_seconds[stage] = span
        log(f"stage {stage}: {', '.join(sorted(a.res.name for a in members))}: {span:.1f} s")
    log(f"{stack}: all {len(cap.containers)} containers healthy {t_total:.1f} s after the "
        f"first resource was applied ({t_capture + t_total:.1f} s including the capture)")
    return describe(cap, overrides, str(config), stack, t_total, stage_seconds)


def down(config: str | Path, overrides: Mapping[str, Any] | None = None,
         volumes: bool = False) -> float:
    """Stop and remove the stack's containers in reverse dependency order (each
    with its destroyGraceSeconds as the stop timeout), then its networks, and its
    volumes only if asked. Returns the seconds it took."""
    overrides = dict(overrides or {})
    stack = stack_of(config)
    state = load_state(stack)
    t0 = time.monotonic()
    cap = capture_stack(config, overrides, state)
    graph = dependency_graph(cap)
    # Reverse the graph: a resource goes once everything depending on it is gone.
    reverse: dict[str, set[str]] = {u: set() for u in graph}
    for urn, deps in graph.items():
        for d in deps:
            reverse[d].add(urn)
    known = {r.plain["name"] for r in cap.containers}

    def action(res: Registered) -> str:
        if res.type == CONTAINER:
            inputs = res.plain
            grace = int(inputs.get("destroyGraceSeconds", 0))
            gone = remove_container(inputs["name"], grace)
            return f"stopped (grace {grace} s) and removed" if gone else "absent"
        return ""

    containers_and_parents = [r for r in cap.resources if r.type == CONTAINER or is_no_op(r)]
    sub = {r.urn: {u for u in reverse[r.urn] if u in {x.urn for x in containers_and_parents}}
           for r in containers_and_parents}
    run_graph(containers_and_parents, sub, action, label="down")
    # Leftovers the state knows about (an older, larger configuration).
    for name in sorted(set(state["containers"]) - known):
        if remove_container(name, int(state["containers"][name]["grace"])):
            log(f"container {name}: removed (left from an earlier configuration)")
    state["containers"] = {}

    client = api()
    networks = {r.plain["name"] for r in cap.of_type(NETWORK)} | set(state["networks"])
    for name in sorted(networks):
        try:
            client.remove_network(name)
            log(f"network {name}: removed")
        except docker.errors.NotFound:
            pass
    state["networks"] = []
    if volumes:
        vols = {r.plain["name"] for r in cap.of_type(VOLUME)} | set(state["volumes"])
        for name in sorted(vols):
            try:
                client.remove_volume(name, force=True)
                log(f"volume {name}: removed")
            except docker.errors.NotFound:
                pass
        forget_state(stack)  # the secrets go with the data they protected
    else:
        save_state(stack, state)
        log("volumes kept (use --volumes to remove them)")
    seconds = time.monotonic() - t0
    log(f"{stack}: down in {seconds:.1f} s")
    return seconds


# --- command line ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="stack file, e.g. config/Pulumi.dev.yaml")
        p.add_argument("--set", action="append", type=override_arg, default=[],
                       metavar="KEY=VALUE",
                       help="override a synapse:KEY value (repeatable)")
        if name == "down":
            p.add_argument("--volumes", action="store_true", help="remove the volumes too")
    args = parser.parse_args(argv)
    overrides = dict(args.set)
    try:
        if args.command == "up":
            deployed = up(args.config, overrides)
            print(json.dumps({"nginxUrl": deployed.nginx_url,
                              "federationUrl": deployed.federation_url,
                              "serverName": deployed.server_name,
                              "containers": deployed.containers,
                              "secondsToHealthy": round(deployed.seconds_to_healthy, 1)},
                             indent=1))
        else:
            down(args.config, overrides, volumes=args.volumes)
    except ReplayError as e:
        print(f"replay: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
