"""The few Docker CLI calls the data tools make (the operator's `docker`, as the
Makefile's other targets use it). Streams go straight between files and
containers, never through memory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, IO, Sequence

from ops.archive import BackupError


def docker(*args: str, stdin: IO[bytes] | bytes | None = None, stdout: IO[bytes] | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run `docker args...`; output captured unless `stdout` is a file."""
    feed = stdin if isinstance(stdin, bytes) else None
    proc = subprocess.run(["docker", *args], input=feed,
                          stdin=None if feed is not None else stdin,
                          stdout=stdout if stdout is not None else subprocess.PIPE,
                          stderr=subprocess.PIPE, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(f"docker {' '.join(_shown(args))} failed: "
                          f"{err[-1] if err else f'exit {proc.returncode}'}")
    return proc


def _shown(args: Sequence[str]) -> list[str]:
    return [a if len(a) < 80 else a[:77] + "..." for a in args[:6]]


def text(*args: str) -> str:
    return docker(*args).stdout.decode().strip()


def inspect(kind: str, name: str) -> dict[str, Any] | None:
    proc = docker(kind, "inspect", name, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def running(name: str) -> bool:
    info = inspect("container", name)
    return bool(info and info["State"]["Running"])


def to_file(path: Path, *args: str) -> None:
    with path.open("wb") as out:
        docker(*args, stdout=out)


def from_file(path: Path, *args: str) -> None:
    with path.open("rb") as f:
        docker(*args, stdin=f)
