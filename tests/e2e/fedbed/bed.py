"""The federation test bed: four homeservers on one Docker engine.

  A  a.test        our `specialized` stack (prod's stack file), TLS from the bed's CA
  B  b.test        our `one-of-each` stack (dev's), delegated: b.test's
                   /.well-known/matrix/server names matrix.b.test:443
  C  c.test        Synapse monoliths of an older release (build.py PEER_SYNAPSE_VERSION),
  D  d.test        configured by hand here (peer.py), not by our renderer

Names resolve only through Docker network aliases. A and B each stand behind a
relay (relay.py) that plays the host's published port 443, forwarding to their
nginx's federation listener: the well-known lookup of a server name without a port
goes to port 443 (spec: server discovery), and every name here has a well-known
answer with an explicit port, so no server ever asks DNS for SRV records (Docker's
embedded DNS would forward those off this machine, where DOCKER-USER drops them:
a 60 s timeout per lookup, measured).

The peers and relays live on the bed's own internal network and join A's and B's
frontend networks (where those stacks' Synapse processes make outbound requests)
with the same aliases. Nothing here can leave the machine: the bed network is
internal, and the stacks' frontends are behind the DOCKER-USER drop rule.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from components.plan.settings import DEFAULT_IMAGES
from tests.e2e import replay
from tests.e2e.fedbed import peer as peers
from tests.e2e.stacks import PUBLISH_RULES
from tests.support.tls import issue, renew

BED_NETWORK = "synapse-fedbed"
LABEL = "synapse-e2e.fedbed"
# Docker's default address pools (172.17-31.x, 192.168.x): every bed address is
# private, which Synapse's default ip_range_blacklist refuses to federate with.
BED_RANGES = ["172.16.0.0/12", "192.168.0.0/16"]
# Peers back off from a dead destination for a minute at first (the guide's
# 1m, x5, 365d); the bed retries after seconds so the outage tests end in time.
FAST_RETRY = {"federation": {"destination_min_retry_interval": "5s",
                             "destination_retry_multiplier": 2,
                             "destination_max_retry_interval": "30s"}}
RELAY_SCRIPT = Path(__file__).with_name("relay.py")
ROGUE_SCRIPT = Path(__file__).with_name("rogue.py")
ROGUE_NAME = "e.test"


@dataclass
class Server:
    """One homeserver of the bed, as a client on the host reaches it."""
    name: str  # server name
    url: str  # client API base URL from the host (loopback)
    admin_url: str  # where the admin API answers
    registration_secret: str
    deployed: replay.Deployed | None = None  # A and B: our stacks
    container: str = ""  # C and D: the peer container
    version: str = ""

    @property
    def ours(self) -> bool:
        return self.deployed is not None


@dataclass
class Bed:
    servers: dict[str, Server]
    ca_file: Path  # the bed's CA: every server's certificate comes from it
    workdir: Path
    rogue_ca_dir: Path  # another CA, trusted by nobody in the bed
    configs: dict[str, Path] = field(default_factory=dict)  # A, B: stack file
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # A, B: as deployed
    aliases: dict[str, list[str]] = field(default_factory=dict)  # container -> its names


def _stack_file(workdir: Path, name: str, source: str) -> Path:
    """Our stack files under a bed stack name (its own name prefix and replay state)."""
    path = workdir / f"Pulumi.{name}.yaml"
    shutil.copyfile(source, path)
    return path


def stack_overrides(server_name: str, base_url: str, port_base: int, ca_pem: str,
                    fullchain: str, key: str) -> dict[str, Any]:
    return {
        "serverName": server_name,
        "publicBaseUrl": base_url,
        "egress": True,
        "trustedKeyServers": [],
        "nginx": {"bindAddress": "127.0.0.1", "clientPort": port_base + 8,
                  "federationPort": port_base + 448, "adminPort": port_base + 9,
                  "httpPort": port_base + 80, "servedByHeader": True, "tls": True},
        "metrics": {"port": port_base + 90, "scrapeIntervalSeconds": 2},
        "federation": {"customCaCertificates": [ca_pem], "ipRangeWhitelist": BED_RANGES,
                       "allowPublicRooms": True},
        "extraConfig": {**PUBLISH_RULES, **FAST_RETRY},
        "tlsCertificate": fullchain,
        "tlsKey": key,
    }


# server -> (stack source, name prefix, server name, public base URL, port base,
# relay aliases). A's public host is its server name: no delegation, the
# well-known just names port 443. B's differs: delegation.
OURS = {
    "A": ("config/Pulumi.prod.yaml", "fed-a", "a.test", "https://a.test/", 21000,
          ["a.test"]),
    "B": ("config/Pulumi.dev.yaml", "fed-b", "b.test", "https://matrix.b.test/", 22000,
          ["b.test", "matrix.b.test"]),
}
PEERS = {"C": ("c.test", 23443), "D": ("d.test", 24443)}


def _client() -> docker.DockerClient:
    return docker.from_env(timeout=300)


def _relay(client: docker.DockerClient, key: str, deployed: replay.Deployed,
           aliases: list[str]) -> str:
    name = f"synapse-fedbed-relay-{key.lower()}"
    nginx = deployed.containers["nginx"]
    container = client.containers.create(
        DEFAULT_IMAGES["synapse"], ["/usr/bin/python3", "/relay.py", f"443={nginx}:8448"],
        entrypoint=[], name=name, user="65534:65534", network=BED_NETWORK,
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        volumes={str(RELAY_SCRIPT): {"bind": "/relay.py", "mode": "ro"}},
        labels={LABEL: "relay"}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        healthcheck={"test": ["NONE"]})  # not the image's Synapse probe
    _alias(client, container, BED_NETWORK, aliases)
    container.start()
    return name


def _alias(client: docker.DockerClient, container, network: str, aliases: list[str]) -> None:
    """(Re)attach a created container to `network` under `aliases`."""
    net = client.networks.get(network)
    container.reload()
    if network in container.attrs["NetworkSettings"]["Networks"]:
        net.disconnect(container)
    net.connect(container, aliases=aliases)


def remove_bed(client: docker.DockerClient | None = None) -> None:
    """Every container and the network of a bed (a previous run's too)."""
    client = client or _client()
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        c.remove(force=True, v=True)
    for n in client.networks.list(names=[BED_NETWORK]):
        n.remove()


def start_rogue(bed: Bed, deployed: replay.Deployed) -> str:
    """e.test on port 443 with a certificate from the rogue CA, reachable from the
    stack `deployed`'s Synapse processes. Returns the container name."""
    client = _client()
    issued = renew(bed.rogue_ca_dir, [ROGUE_NAME])
    folder = bed.workdir / "rogue"
    folder.mkdir(exist_ok=True)
    (folder / "cert.pem").write_text(issued.fullchain)
    (folder / "key.pem").write_text(issued.key)
    for path in folder.iterdir():
        path.chmod(0o644)
    name = "synapse-fedbed-rogue"
    container = client.containers.create(
        DEFAULT_IMAGES["synapse"], ["/usr/bin/python3", "/rogue.py", "/rogue/cert.pem",
                                    "/rogue/key.pem", "443"],
        entrypoint=[], name=name, user="65534:65534", network=BED_NETWORK,
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        volumes={str(ROGUE_SCRIPT): {"bind": "/rogue.py", "mode": "ro"},
                 str(folder): {"bind": "/rogue", "mode": "ro"}},
        labels={LABEL: "rogue"}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        healthcheck={"test": ["NONE"]})
    _alias(client, container, BED_NETWORK, [ROGUE_NAME])
    client.networks.get(frontend_network(deployed)).connect(container, aliases=[ROGUE_NAME])
    container.start()
    deadline = time.monotonic() + 30
    while "serving" not in container_logs(name):
        assert time.monotonic() < deadline, container_logs(name)
        time.sleep(0.2)
    return name


def frontend_network(deployed: replay.Deployed) -> str:
    return f"{deployed.outputs['namePrefix']}-frontend"


def up(a_preset: str | None = None) -> Bed:
    """Build the bed from nothing: CAs, network, A and B (replayed), C and D, relays.
    `a_preset`: A's preset instead of its stack file's (`specialized`)."""
    client = _client()
    remove_bed(client)
    workdir = Path(tempfile.mkdtemp(prefix="fedbed-"))
    ca_dir = workdir / "ca"
    # One CA for the bed; each server gets its own certificate from it.
    first = issue(ca_dir, ["a.test", "127.0.0.1", "localhost"])
    certs = {"A": first,
             "B": renew(ca_dir, ["b.test", "matrix.b.test", "127.0.0.1", "localhost"]),
             "C": renew(ca_dir, ["c.test", "127.0.0.1", "localhost"]),
             "D": renew(ca_dir, ["d.test", "127.0.0.1", "localhost"])}
    ca_pem = first.ca_cert.read_text()
    rogue = workdir / "rogue-ca"
    issue(rogue, ["e.test"])
    client.networks.create(BED_NETWORK, driver="bridge", internal=True, labels={LABEL: "network"})

    bed = Bed(servers={}, ca_file=first.ca_cert, workdir=workdir, rogue_ca_dir=rogue)
    for key, (source, stack, name, base_url, port_base, _) in OURS.items():
        config = _stack_file(workdir, stack, source)
        replay.down(config, delete_data=True)
        overrides = stack_overrides(name, base_url, port_base, ca_pem,
                                    certs[key].fullchain, certs[key].key)
        if key == "A" and a_preset:
            overrides["preset"] = a_preset
        deployed = replay.up(config, overrides)
        bed.configs[key] = config
        bed.overrides[key] = overrides
        bed.servers[key] = Server(name, deployed.nginx_url, deployed.admin_url,
                                  deployed.registration_shared_secret, deployed=deployed)
    relays = {key: _relay(client, key, bed.servers[key].deployed, OURS[key][5]) for key in OURS}
    for key, (name, port) in PEERS.items():
        container = peers.start(client, workdir / key.lower(), name, port, certs[key],
                                ca_pem, BED_NETWORK, LABEL, FAST_RETRY)
        bed.servers[key] = Server(name, f"https://127.0.0.1:{port}", f"https://127.0.0.1:{port}",
                                  peers.registration_secret(name), container=container)
    # Our stacks' Synapse processes reach the others over their frontend network.
    bed.aliases = {**{relays[k]: OURS[k][5] for k in OURS},
                   **{bed.servers[k].container: [PEERS[k][0]] for k in PEERS}}
    for key in OURS:
        connect_frontend(bed, key)
    for key in PEERS:
        bed.servers[key].version = peers.wait_healthy(bed.servers[key].url, bed.ca_file)
    return bed


def connect_frontend(bed: Bed, key: str) -> None:
    """Our stack `key`'s Synapse processes reach the other servers (relays and
    peers) over its frontend network; again after the stack was re-created."""
    client = _client()
    network = frontend_network(bed.servers[key].deployed)
    for container, names in bed.aliases.items():
        _alias(client, client.containers.get(container), network, names)


def disconnect_frontend(bed: Bed, key: str) -> None:
    """Before our stack `key`'s networks go: Docker removes no network with
    endpoints on it."""
    client = _client()
    network = client.networks.get(frontend_network(bed.servers[key].deployed))
    for container in bed.aliases:
        network.disconnect(container, force=True)


def down(bed: Bed) -> None:
    client = _client()
    remove_bed(client)  # first: they hold endpoints on the stacks' networks
    for config in bed.configs.values():
        replay.down(config, delete_data=True)
    shutil.rmtree(bed.workdir, ignore_errors=True)


def container_logs(name: str, since: float | None = None) -> str:
    """A container's whole log (stdout and stderr), or since a UNIX time."""
    kwargs = {"since": int(since)} if since else {}
    return _client().api.logs(name, stdout=True, stderr=True, **kwargs).decode(errors="replace")
