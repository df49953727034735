"""The Docker engine, used the way the kreuzwerker provider uses it: one
low-level client per thread, containers stopped with their grace period and
removed with their anonymous volumes, uploads written as one tar before start."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from typing import Any, Iterable, Mapping

import docker

from tests.e2e.replay.errors import ReplayError

HEALTH_POLL_S = 0.5  # the provider polls every second; finer costs nothing
LOG_TAIL = 60

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


def inspect(kind: str, name: str) -> dict[str, Any] | None:
    """A container, network, volume or image as Docker reports it, or None."""
    client = api()
    fn = {"container": client.inspect_container, "network": client.inspect_network,
          "volume": client.inspect_volume, "image": client.inspect_image}[kind]
    try:
        return fn(name)
    except docker.errors.NotFound:
        return None


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
        if isinstance(e, docker.errors.NotFound):
            return False
        raise
    try:
        client.remove_container(name, v=True, force=True)
    except docker.errors.APIError as e:
        if not isinstance(e, docker.errors.NotFound) and "already in progress" not in str(e):
            raise
    # Wait for the removal to finish (a name cannot be reused before).
    for _ in range(200):
        if inspect("container", name) is None:
            return True
        time.sleep(0.05)
    raise ReplayError(f"container {name} was not removed")


def upload_archive(uploads: Iterable[Mapping[str, Any]]) -> bytes:
    """One tar of every upload, each as the provider writes it: the path as given,
    mode `permissions` if given, else 0744 if executable, else 0644; owned by root
    (the tar header's uid/gid 0: pulumi-docker 5.1.0 has no upload owner)."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for up in uploads:
            data = up["content"].encode()
            info = tarfile.TarInfo(up["file"])
            info.size = len(data)
            if up.get("permissions"):
                info.mode = int(up["permissions"], 8)
            else:
                info.mode = 0o744 if up.get("executable") else 0o644
            info.mtime = now
            info.uid = info.gid = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def wait_healthy(name: str, timeout_s: float) -> float:
    """Poll until Docker reports the container healthy, as `wait` does; fail after
    the timeout with the container's last logs. Returns the seconds waited."""
    client = api()
    start = time.monotonic()
    while True:
        info = client.inspect_container(name)
        state = info["State"]
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
                f"restarts={info.get('RestartCount')}, exit code {state.get('ExitCode')})\n"
                f"last healthchecks:\n{probes}\nlast logs:\n{container_logs(name)}")
        time.sleep(HEALTH_POLL_S)
