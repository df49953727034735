"""Let's Encrypt's ACME test server, Pebble, and its DNS test server
(pebble-challtestsrv), both from Debian's pebble package, for the ACME tests: as
processes on this host (tests/nginx/test_acme.py) or as containers on a stack's
network (tests/e2e/test_acme.py).

Pebble serves its directory over HTTPS with a certificate from a CA made for the
run (the stack's nginx.acme.caBundle). It checks each HTTP-01 challenge by
fetching http://<name>:<httpPort>/.well-known/acme-challenge/<token>, resolving
<name> with the DNS test server, which answers every A query with one address
(nginx's). It keeps everything in memory: a restart brings a new root CA and
forgets every account, as a CA that lost its state would.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.tls import issue

# Deterministic: no random sleep before validating, no nonce refused at random.
ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
HOSTNAME = "pebble"  # what its HTTPS certificate is for, besides loopback


@dataclass(frozen=True)
class PebbleFiles:
    config: Path  # pebble's -config
    ca_file: Path  # the CA of Pebble's own HTTPS: what the ACME client must trust

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()


def write_config(where: Path, http_port: int, listen: str = "0.0.0.0:14000",
                 management: str = "0.0.0.0:15000", inside: Path | None = None) -> PebbleFiles:
    """Pebble's config in `where`, and its HTTPS certificate the first time (so the
    config can be written again, once nginx's port is known, under the same CA).
    `inside`: where `where` is mounted in Pebble's container (the config's paths
    are Pebble's)."""
    where.mkdir(parents=True, exist_ok=True)
    if not (where / "pebble.pem").exists():
        issued = issue(where / "ca", [HOSTNAME, "localhost", "127.0.0.1"])
        (where / "pebble.pem").write_text(issued.fullchain)
        (where / "pebble.key").write_text(issued.key)
        (where / "pebble.key").chmod(0o644)  # Pebble's container user reads it
    seen = inside or where
    (where / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": listen,
        "managementListenAddress": management,
        "certificate": str(seen / "pebble.pem"),
        "privateKey": str(seen / "pebble.key"),
        "httpPort": http_port,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}))
    return PebbleFiles(config=where / "pebble.json", ca_file=where / "ca" / "ca.pem")


def root(management_url: str, ca_file: Path) -> str:
    """The root CA (PEM) Pebble issues under since it started: what a client that
    trusts only Pebble trusts."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False  # reached by address; the chain is still verified
    with urllib.request.urlopen(f"{management_url}/roots/0", context=context, timeout=10) as r:
        return r.read().decode()


def challtestsrv_args(address: str, dns: str = ":8053", management: str = ":8055") -> list[str]:
    """DNS only, every A query answered with `address`, no AAAA."""
    return ["pebble-challtestsrv", "-defaultIPv4", address, "-defaultIPv6", "",
            "-dns01", dns, "-management", management,
            "-http01", "", "-https01", "", "-tlsalpn01", ""]
