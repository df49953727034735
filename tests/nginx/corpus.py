"""The request corpus (corpus.txt) and where each line must land for a plan."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from components.plan.topology import Plan

CORPUS_FILE = Path(__file__).with_name("corpus.txt")
CLASS_TARGETS = ("main", "client_sync", "federation_reader", "media", "rooms")

# The guide's nginx defects listed in ../shared/reference/SOURCES.md.
DEFECTS = {
    "D1": "a comment without '#'",
    "D2": "an undefined $accesstoken_from_urlparam",
    "D3": "no proxy_pass at all (every route 404s)",
    "D4": "a greedy room-ID regex that splits one room across workers",
    "D5": "room-scoped stream endpoints sent to room workers",
    "D6": "sliding sync misrouted",
    "D7": "federation media misrouted",
    "D8": "legacy media paths misrouted",
    "D9": "room IDs without a server part (room version 12) unmatched",
}


@dataclass(frozen=True)
class Line:
    lineno: int
    method: str
    target: str
    expected: str
    comment: str

    @property
    def defects(self) -> frozenset[str]:
        return frozenset(re.findall(r"\[(D\d+)\]", self.comment))

    @property
    def is_admin(self) -> bool:
        return self.target.startswith("/_synapse/admin")

    def __str__(self) -> str:
        return f"{self.method} {self.target}"


def load() -> tuple[Line, ...]:
    lines = []
    for n, raw in enumerate(CORPUS_FILE.read_text().splitlines(), start=1):
        text, _, comment = raw.partition(" #")
        if not text.strip() or raw.lstrip().startswith("#"):
            continue
        fields = text.split()
        assert len(fields) == 3, f"corpus.txt:{n}: want METHOD TARGET EXPECTED, got {raw!r}"
        method, target, expected = fields
        ok = expected in CLASS_TARGETS or expected == "nginx" or expected.startswith("writer:")
        assert ok, f"corpus.txt:{n}: unknown expectation {expected!r}"
        lines.append(Line(n, method, target, expected, comment.strip()))
    return tuple(lines)


def expected_processes(plan: Plan, expected: str) -> frozenset[str]:
    """The processes allowed to answer a line under this plan."""
    if expected.startswith("writer:"):
        return frozenset(plan.stream_writers.get(expected.split(":", 1)[1], ("main",)))
    procs = plan.by_class(expected)
    return frozenset(p.name for p in procs) if procs else frozenset({"main"})


CORPUS = load()
