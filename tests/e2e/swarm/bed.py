"""The swarm bed: a three-node Docker Swarm on this one machine, for the Swarm
target's end-to-end tests.

- The manager is the host's own engine (Debian 12's docker.io, 20.10): the
  program, like an operator's `pulumi up`, talks to it.
- Two workers are engines in containers (`synapse-e2e/swarm-node:trixie`, Debian
  13's docker.io, 26.x), each with its /var/lib/docker in a volume, its API on TCP
  on the bed's network only.
- A registry (`synapse-e2e/registry:trixie`, Debian's docker-registry) on the same
  network is the nodes' Docker Hub mirror: the stand-in images are pushed to it
  under their Docker Hub names, so a service's `matrixdotorg/synapse:v1.163.2` is
  pulled from there on every node.

What this machine allows (measured when the bed was built, 2026-12-06):
- `--privileged` is refused ("unable to apply caps: operation not permitted"):
  the sandbox's bounding set lacks CAP_SYS_RESOURCE. A node gets every other
  capability, no seccomp or AppArmor profile, unmasked /proc and the host's
  cgroup hierarchy read-write, which is what dockerd in a container needs.
- The kernel has no IPVS (CONFIG_IP_VS unset): a service's virtual IP and the
  ingress routing mesh do not route. Services use `endpoint_mode: dnsrr` (the
  service name resolves to its tasks) and publish ports in `host` mode.
- The kernel has no ESP (CONFIG_INET_ESP unset): an overlay network created with
  `encrypted` is accepted and its tasks start, but no packet crosses nodes on it.
- VXLAN works: overlay traffic between the host and the nodes crosses the bed's
  bridge network, which the egress rule (host_setup.sh) does not touch; traffic
  from a node's containers to the outside is dropped there as for any container.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

from tests.e2e.images.build import SWARM_NODE, SWARM_REGISTRY

NETWORK = "synapse-swarmbed"
SUBNET = ipaddress.ip_network("10.213.0.0/24")  # outside Docker's default local pools
GATEWAY = str(SUBNET[1])  # the host, as the manager advertises itself
REGISTRY_IP = str(SUBNET[5])
REGISTRY_PORT = 5000
REGISTRY_LOCAL = "127.0.0.1:5055"  # the host pushes here: loopback registries need no TLS
NODE_IPS = {"swarm-node1": str(SUBNET[11]), "swarm-node2": str(SUBNET[12])}
# Overlay subnets, away from the bed's network and the e2e stacks' bridges.
ADDRESS_POOL = "10.200.0.0/16"
NODE_API_PORT = 2375
LABEL = "synapse-e2e.swarm-bed"
# Node labels the Swarm stacks' placement constraints name.
MANAGER_LABELS = {"synapse.data": "true"}
WORKER_LABELS = {"synapse.workers": "true"}
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


@dataclass
class Bed:
    manager: docker.DockerClient
    nodes: dict[str, docker.DockerClient]  # hostname -> that engine's API
    seconds_to_ready: float
    pushed: set[str] = field(default_factory=set)

    @property
    def mirror(self) -> str:
        return f"http://{REGISTRY_IP}:{REGISTRY_PORT}"

    def node_ids(self) -> dict[str, str]:
        """hostname -> swarm node ID, for every node of the swarm."""
        return {n.attrs["Description"]["Hostname"]: n.id for n in self.manager.nodes.list()}

    def ready(self) -> dict[str, str]:
        return {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"]
                for n in self.manager.nodes.list()}

    def push(self, refs) -> float:
        """Put these local images into the registry under their Docker Hub names
        (a library image under library/); returns the seconds it took."""
        started = time.monotonic()
        for ref in refs:
            if ref in self.pushed:
                continue
            remote = f"{REGISTRY_LOCAL}/{hub_path(ref)}"
            self.manager.images.get(ref).tag(remote)
            for line in self.manager.images.push(remote, stream=True, decode=True):
                if "error" in line:
                    raise RuntimeError(f"push {remote}: {line['error']}")
            self.manager.images.remove(remote)  # the tag only; the image stays
            self.pushed.add(ref)
        return time.monotonic() - started

    def memory_mb(self) -> dict[str, float]:
        """What the bed holds in memory, by part (cgroup v1 usage, page cache
        included): each node engine with its containers, and the registry."""
        out = {}
        for name in NODE_IPS:
            container = self.manager.containers.get(name)
            own = _usage(CGROUP_ROOT / "docker" / container.id)
            tasks = _usage(CGROUP_ROOT / f"swarmbed-{name}")
            out[name] = (own + tasks) / 2**20
        out["registry"] = _usage(CGROUP_ROOT / "docker"
                                 / self.manager.containers.get("swarm-registry").id) / 2**20
        return out


def hub_path(ref: str) -> str:
    """A Docker Hub reference's repository path: redis:7 -> library/redis:7."""
    name = ref.split("@")[0]
    return ref if "/" in name.split(":")[0] else f"library/{ref}"


def _usage(cgroup: Path) -> int:
    try:
        return int((cgroup / "memory.usage_in_bytes").read_text())
    except FileNotFoundError:
        return 0


def node_client(name: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=f"tcp://{NODE_IPS[name]}:{NODE_API_PORT}", timeout=300)


def _wait(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (docker.errors.DockerException, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"swarm bed: {what} not within {timeout:.0f} s")
        time.sleep(0.5)


def start(manager: docker.DockerClient | None = None) -> Bed:
    """Bring up the bed from whatever is left of an earlier one (tear down first)."""
    manager = manager or docker.from_env(timeout=600)
    stop(manager)
    started = time.monotonic()
    network = manager.networks.create(
        NETWORK, driver="bridge", labels={LABEL: "1"},
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=str(SUBNET), gateway=GATEWAY)]))
    registry = manager.containers.create(
        SWARM_REGISTRY, name="swarm-registry", detach=True, labels={LABEL: "1"},
        ports={f"{REGISTRY_PORT}/tcp": ("127.0.0.1", int(REGISTRY_LOCAL.split(":")[1]))},
        network=NETWORK)
    network.disconnect(registry)  # reconnect with its fixed address
    network.connect(registry, ipv4_address=REGISTRY_IP)
    registry.start()
    manager.swarm.init(advertise_addr=GATEWAY, listen_addr=f"{GATEWAY}:2377",
                       default_addr_pool=[ADDRESS_POOL], subnet_size=24)
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    for name, ip in NODE_IPS.items():
        # A node's volume keeps its pulled images, and the last bed's swarm, which
        # its engine would spend ~20 s trying to reach before it can leave it.
        manager.containers.run(SWARM_NODE, entrypoint=["rm", "-rf", "/v/swarm"], remove=True,
                               volumes={f"{name}-lib": {"bind": "/v", "mode": "rw"}},
                               network_mode="none")
        node = _create_node(manager, name)
        network.disconnect(node)
        network.connect(node, ipv4_address=ip)
        node.start()
    nodes = {}
    for name, ip in NODE_IPS.items():
        # The client asks the engine its API version as it is made: once it answers.
        client = _wait(f"{name}'s engine", lambda: node_client(name))
        if client.info()["Swarm"]["LocalNodeState"] != "inactive":
            client.swarm.leave(force=True)  # its volume remembers the last bed's swarm
        client.swarm.join(remote_addrs=[f"{GATEWAY}:2377"], join_token=token,
                          advertise_addr=ip, listen_addr=f"{ip}:2377")
        nodes[name] = client
    bed = Bed(manager=manager, nodes=nodes, seconds_to_ready=0.0)
    _wait("three ready nodes", lambda: list(bed.ready().values()).count("ready") == 3)
    for node in manager.nodes.list():
        hostname = node.attrs["Description"]["Hostname"]
        spec = dict(node.attrs["Spec"])
        spec["Labels"] = {**spec.get("Labels", {}),
                          **(WORKER_LABELS if hostname in NODE_IPS else MANAGER_LABELS)}
        node.update(spec)
    bed.seconds_to_ready = time.monotonic() - started
    return bed


def _create_node(manager: docker.DockerClient, name: str):
    """A node's container: every capability but the one this sandbox lacks, no
    seccomp or AppArmor profile, /proc unmasked and writable (the CLI's
    `--security-opt systempaths=unconfined`, which the SDK has no argument for),
    and the host's cgroup hierarchy, where its engine puts its containers under
    /swarmbed-<name>."""
    host_config = manager.api.create_host_config(
        cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        tmpfs={"/run": "", "/tmp": ""},
        binds={f"{name}-lib": {"bind": "/var/lib/docker", "mode": "rw"},
               "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        network_mode=NETWORK)
    host_config.update(MaskedPaths=[], ReadonlyPaths=[])
    created = manager.api.create_container(
        SWARM_NODE, name=name, hostname=name, detach=True, labels={LABEL: "1"},
        environment={"REGISTRY_MIRROR": f"http://{REGISTRY_IP}:{REGISTRY_PORT}",
                     "NODE_CGROUP_PARENT": f"/swarmbed-{name}"},
        host_config=host_config)
    return manager.containers.get(created["Id"])


def stop(manager: docker.DockerClient) -> None:
    """Remove the bed: every service, the swarm, the nodes, the registry, the
    network. The nodes' volumes stay (their pulled images), like a host's."""
    if manager.info()["Swarm"]["LocalNodeState"] != "inactive":
        for service in manager.services.list():
            service.remove()
        manager.swarm.leave(force=True)
    for container in manager.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True, v=True)  # the registry's storage; named volumes stay
    for network in manager.networks.list(names=[NETWORK]):
        network.remove()
