"""Measured e2e times, printed in pytest's terminal summary (conftest.py).

A plain module, not conftest.py: pytest may import conftest.py under another name
than `tests.e2e.conftest`, and a test importing it would then fill a second list."""

from __future__ import annotations

import time

TIMINGS: list[tuple[str, float]] = []
SESSION_START = time.monotonic()


def record(what: str, seconds: float) -> None:
    TIMINGS.append((what, seconds))
    print(f"\n[e2e timing] {what}: {seconds:.1f} s", flush=True)
