"""Every resource's URN and parent, for each stack file, against the list committed
in tests/mocks/urns/. A URN is a resource's identity in the stack's state: when a
change moves a resource (another type, name or parent) without an `alias`, Pulumi
deletes the old one and creates a new one, which for a container means an outage
and for a volume its data. So a change here is deliberate: give the moved resource
`aliases=[...]` (the old URN), then write the list anew with
`python -m tests.mocks.test_urns`.
"""

import sys
from pathlib import Path

import pytest

from tests.support.capture import run_stack_file

ROOT = Path(__file__).resolve().parents[2]
LISTS = Path(__file__).resolve().parent / "urns"
STACKS = sorted(p.name for p in (ROOT / "config").glob("Pulumi.*.yaml"))


def urns(stack_file: str) -> list[str]:
    cap = run_stack_file(ROOT / "config" / stack_file)
    # Left out: the root Stack resource, which the mocks register once per process
    # (so a parent that is the root is written "(stack)": in a run that deployed
    # another stack first it is that stack's), and the Swarm configs, which are
    # named by their content on purpose (a new content is a new config:
    # components/swarm/deploy.py).
    def parent(r):
        return "(stack)" if "::pulumi:pulumi:Stack::" in r.parent else r.parent

    return sorted(f"{r.urn}  <-  {parent(r)}" for r in cap.resources
                  if r.type not in ("pulumi:pulumi:Stack", "docker:index/serviceConfig:ServiceConfig"))


@pytest.mark.parametrize("stack_file", STACKS)
def test_no_resource_moved_without_an_alias(stack_file):
    committed = (LISTS / f"{stack_file}.txt").read_text().splitlines()
    now = urns(stack_file)
    gone, new = sorted(set(committed) - set(now)), sorted(set(now) - set(committed))
    assert not gone and not new, f"gone: {gone}\nnew: {new}"


if __name__ == "__main__":
    LISTS.mkdir(exist_ok=True)
    for name in STACKS:
        (LISTS / f"{name}.txt").write_text("\n".join(urns(name)) + "\n")
        print(f"wrote {LISTS / name}.txt", file=sys.stderr)
