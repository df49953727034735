"""The stacks the e2e tests deploy: each stack file with the overrides that make
it a test stack. Shared by test_stack.py and test_faults.py."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tests.support.tls import issue

# Synapse lets nobody publish a room to the directory unless
# room_list_publication_rules allows it (an empty list denies everyone, admins
# included); the directory scenario needs one rule, set the way an operator would.
PUBLISH_RULES = {"room_list_publication_rules": [
    {"user_id": "*", "alias": "*", "room_id": "*", "action": "allow"}]}

# Test stacks: no outbound traffic and no outside key servers (dev has both in its
# stack file); prod binds loopback on its own ports so both can never clash, and
# names the serving process in a header like dev. dev faces its clients with TLS
# (nginx.tls), a certificate from a CA made for the run (prepare): every dev
# scenario runs over HTTPS, verifying the chain. Both scrape metrics every 2 s,
# so the metrics tests wait seconds, not the default 15, for a scrape.
STACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("config/Pulumi.dev.yaml", {
        "extraConfig": PUBLISH_RULES,
        "publicBaseUrl": "https://127.0.0.1:8008/",
        "nginx.tls": True,
        "nginx.httpPort": 8080,
        "metrics": {"scrapeIntervalSeconds": 2},  # the metrics tests wait for scrapes
    }),
    "prod": ("config/Pulumi.prod.yaml", {
        "egress": False,
        "trustedKeyServers": [],
        "nginx": {"bindAddress": "127.0.0.1", "clientPort": 18008, "federationPort": 18448,
                  "adminPort": 18009, "servedByHeader": True},
        "metrics": {"port": 19090, "scrapeIntervalSeconds": 2},
        "extraConfig": PUBLISH_RULES,
    }),
}
TLS_NAMES = ["127.0.0.1", "localhost"]  # what the dev certificate is for


def prepare(name: str) -> tuple[str, dict[str, Any], Path | None]:
    """(stack file, overrides, CA file): with nginx.tls, a new CA and a
    certificate from it, given as the stack's TLS secrets; clients trust the CA."""
    config, overrides = STACKS[name]
    if not overrides.get("nginx.tls"):
        return config, dict(overrides), None
    issued = issue(Path(tempfile.mkdtemp(prefix=f"e2e-ca-{name}-")), TLS_NAMES)
    return config, {**overrides, "tlsCertificate": issued.fullchain, "tlsKey": issued.key}, \
        issued.ca_cert
