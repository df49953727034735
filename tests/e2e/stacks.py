"""The stacks the e2e tests deploy: each stack file with the overrides that make
it a test stack. Shared by test_stack.py and test_faults.py."""

from __future__ import annotations

from typing import Any

# Synapse lets nobody publish a room to the directory unless
# room_list_publication_rules allows it (an empty list denies everyone, admins
# included); the directory scenario needs one rule, set the way an operator would.
PUBLISH_RULES = {"room_list_publication_rules": [
    {"user_id": "*", "alias": "*", "room_id": "*", "action": "allow"}]}

# Test stacks: no outbound traffic and no outside key servers (dev has both in its
# stack file); prod binds loopback on its own ports so both can never clash, and
# names the serving process in a header like dev.
STACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("config/Pulumi.dev.yaml", {"extraConfig": PUBLISH_RULES}),
    "prod": ("config/Pulumi.prod.yaml", {
        "egress": False,
        "trustedKeyServers": [],
        "nginx": {"bindAddress": "127.0.0.1", "clientPort": 18008, "federationPort": 18448,
                  "servedByHeader": True},
        "extraConfig": PUBLISH_RULES,
    }),
}
