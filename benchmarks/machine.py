"""The machine a benchmark ran on: cores, memory, CPU model, kernel, Docker server
version, Python, the Synapse version of the default image, the git revision and the
date. Stored inside every results file, and shown at the head of BENCHMARKS.md.
Nothing here fails: a fact that cannot be read is given as "unavailable"."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from components.plan.settings import DEFAULT_IMAGES

ROOT = Path(__file__).resolve().parent.parent
UNAVAILABLE = "unavailable"


def _run(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return UNAVAILABLE
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else UNAVAILABLE


def memory_gib(meminfo: str) -> float | None:
    """MemTotal of /proc/meminfo (kB) in GiB."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return UNAVAILABLE


def synapse_version(image: str) -> str:
    """The version the default image's tag names: matrixdotorg/synapse:v1.163.2 -> 1.163.2."""
    tag = image.partition("@")[0].rpartition(":")[2]
    return tag[1:] if tag[:1] == "v" else tag


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def collect() -> dict[str, object]:
    revision = _run("git", "rev-parse", "--short=12", "HEAD")
    if revision != UNAVAILABLE and _run("git", "status", "--porcelain", "--untracked-files=no") \
            not in (UNAVAILABLE, ""):
        revision += " (with uncommitted changes)"
    image = DEFAULT_IMAGES["synapse"]
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(_read("/proc/meminfo")),
        "cpu_model": cpu_model(_read("/proc/cpuinfo")),
        "kernel": platform.release(),
        "docker_server": _run("docker", "version", "--format", "{{.Server.Version}}"),
        "python": platform.python_version(),
        "synapse_image": image,
        "synapse_version": synapse_version(image),
        "git_revision": revision,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
