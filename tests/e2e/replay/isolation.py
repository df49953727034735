"""No container may reach beyond this machine: the replay starts nothing unless
the DOCKER-USER chain drops forwarding to every uplink (tests/e2e/host_setup.sh)."""

from __future__ import annotations

import re
import subprocess

from tests.e2e.replay.errors import ReplayError


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
