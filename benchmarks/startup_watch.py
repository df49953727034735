"""Watches containers start during an `up`, from the host, without Docker's help
for the fast parts: when each one was started and reported healthy (Docker's event
stream: `start` and `health_status: healthy`, with the daemon's nanosecond times),
when it was actually ready (its own readiness check, polled from the host every
READY_POLL_S through /proc/<pid>/root, which reaches a container's sockets and
files whatever volume or tmpfs they live on), and its CPU time (cgroup v1
cpuacct.usage, which counts every process in the container, healthcheck execs
included, since Docker runs them in the container's cgroup).

Readiness, per role, the same thing the container's healthcheck tests
(components/render/containers.py):
  Synapse, nginx  GET /health over the UNIX socket the healthcheck curls -> 200
  postgres        postmaster.pid names PID 1 (the final server, not initdb's) and
                  its socket accepts a connection
  redis           PING over its socket -> +PONG
  nginx-config    ready when started (its check is a file comparison that passes
                  until nginx has loaded a config)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker

from components.render.containers import LABEL_PREFIX, REDIS_SOCKET
from components.render.prometheus_conf import PORT as PROMETHEUS_PORT
from components.plan.topology import POSTGRES_SOCKET_DIR

READY_POLL_S = 0.05
CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker")  # cgroup v1, cgroupfs driver (this host)
POSTGRES_PID_FILE = "/var/lib/postgresql/data/postmaster.pid"


def cpu_ns(container_id: str) -> int | None:
    """The container's cgroup CPU usage so far (ns), or None when gone."""
    for base in (CPUACCT / container_id / "cpuacct.usage",
                 Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat")):
        try:
            text = base.read_text()
        except OSError:
            continue
        if base.name == "cpu.stat":  # cgroup v2: usage_usec
            return int(text.split("usage_usec", 1)[1].split()[0]) * 1000
        return int(text)
    return None


def _docker_time(text: str) -> float:
    """Docker's RFC 3339 nanosecond time -> epoch seconds."""
    text = text.rstrip("Z")
    main, _, frac = text.partition(".")
    base = datetime.fromisoformat(main + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def _http_health(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        s.connect(path)
        s.sendall(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        return s.recv(64).split(b" ", 2)[1:2] == [b"200"]


def _prometheus_ready(port: int) -> bool:
    """Prometheus's /-/ready (what its wget probe asks), on its port published on loopback."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        return s.recv(64).split(b" ", 2)[1:2] == [b"200"]


def _redis_ping(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        s.connect(path)
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def _postgres_ready(root: str) -> bool:
    with open(root + POSTGRES_PID_FILE) as f:
        if f.readline().strip() != "1":
            return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        s.connect(root + f"{POSTGRES_SOCKET_DIR}/.s.PGSQL.5432")
    return True


def _unix_socket_of(test: list[str]) -> str | None:
    return test[test.index("--unix-socket") + 1] if "--unix-socket" in test else None


@dataclass
class Watched:
    name: str
    id: str
    role: str
    cls: str
    pid: int
    started: float  # epoch s (Docker's StartedAt)
    check: Any
    ready: float | None = None
    healthy: float | None = None
    cpu: list[tuple[float, int]] = field(default_factory=list)  # (epoch s, ns)
    health_interval_s: float = 0.0
    start_period_s: float = 0.0

    def cpu_at(self, t: float | None) -> float | None:
        """CPU seconds used by time t (the last sample at or before it)."""
        if t is None or not self.cpu:
            return None
        before = [ns for at, ns in self.cpu if at <= t + READY_POLL_S]
        return (before[-1] if before else self.cpu[0][1]) / 1e9


class StartWatch:
    """Run around an `up`: start() before, stop() after; `containers` then holds,
    per Docker container name with `prefix`, when it started, was ready, was
    reported healthy, and its CPU over time."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.containers: dict[str, Watched] = {}
        self._client = docker.APIClient(version="auto", timeout=60)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._events = None

    def start(self) -> None:
        self._events = self._client.events(decode=True, since=int(time.time()) - 1,
                                           filters={"type": "container"})
        for fn in (self._follow_events, self._poll):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, settle_s: float = 0.3) -> dict[str, Watched]:
        time.sleep(settle_s)  # a last CPU sample after the last healthy event
        self._stop.set()
        if self._events is not None:
            self._events.close()
        for t in self._threads:
            t.join(timeout=5)
        return self.containers

    def _follow_events(self) -> None:
        try:
            for ev in self._events:
                name = ev.get("Actor", {}).get("Attributes", {}).get("name", "")
                if not name.startswith(self.prefix):
                    continue
                status = ev.get("status") or ev.get("Action", "")
                at = ev.get("timeNano", 0) / 1e9
                if status == "start":
                    self._add(name)
                elif status.startswith("health_status") and status.endswith("healthy") \
                        and "unhealthy" not in status:
                    with self._lock:
                        w = self.containers.get(name)
                    if w and w.healthy is None:
                        w.healthy = at
        except Exception:  # noqa: BLE001 - the stream is closed by stop()
            if not self._stop.is_set():
                raise

    def _add(self, name: str) -> None:
        info = self._client.inspect_container(name)
        labels = info["Config"].get("Labels") or {}
        role = labels.get(f"{LABEL_PREFIX}.role", "")
        pid = info["State"]["Pid"]
        root = f"/proc/{pid}/root"
        hc = info["Config"].get("Healthcheck") or {}
        test = list(hc.get("Test") or [])
        sock = _unix_socket_of(test)
        if role == "postgres":
            check = lambda: _postgres_ready(root)  # noqa: E731
        elif role == "redis":
            check = lambda: _redis_ping(root + REDIS_SOCKET)  # noqa: E731
        elif sock:
            check = lambda: _http_health(root + sock)  # noqa: E731
        elif role == "prometheus":
            port = int(info["HostConfig"]["PortBindings"][f"{PROMETHEUS_PORT}/tcp"][0]["HostPort"])
            check = lambda: _prometheus_ready(port)  # noqa: E731
        else:
            check = lambda: True  # noqa: E731
        w = Watched(name, info["Id"], role, labels.get(f"{LABEL_PREFIX}.class", role), pid,
                    _docker_time(info["State"]["StartedAt"]), check,
                    health_interval_s=hc.get("Interval", 0) / 1e9,
                    start_period_s=hc.get("StartPeriod", 0) / 1e9)
        with self._lock:
            self.containers[name] = w

    def _poll(self) -> None:
        while not self._stop.is_set():
            t0 = time.time()
            with self._lock:
                watched = list(self.containers.values())
            for w in watched:
                ns = cpu_ns(w.id)
                now = time.time()
                if ns is not None:
                    w.cpu.append((now, ns))
                if w.ready is None:
                    try:
                        if w.check():
                            w.ready = now
                    except OSError:
                        pass
            time.sleep(max(0.0, READY_POLL_S - (time.time() - t0)))


def process_cpu_s(pids: list[int]) -> float:
    """utime+stime (+ reaped children's) of host processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def pids_named(*names: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                out.append(int(d.name))
    return out


def host_busy_s() -> float:
    """All CPUs' non-idle time so far (/proc/stat), in seconds."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / os.sysconf("SC_CLK_TCK")
