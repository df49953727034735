"""Polling until something holds, for the tests that wait on running processes."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout_s: float,
             why: Callable[[], str] = lambda: "", step_s: float = 0.5) -> T:
    """check()'s first truthy result, polling every `step_s`; after `timeout_s` an
    AssertionError naming `what`, with why() (a log tail, say) to explain."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(step_s)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}\n{why()}".rstrip())
