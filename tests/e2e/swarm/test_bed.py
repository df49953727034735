"""The bed itself: three engines in one swarm, the nodes on Debian 13's engine,
images reaching the nodes only through the bed's registry, and service names
resolving across nodes on an internal overlay network."""

import time

import docker
import pytest

from tests.e2e.swarm.bed import MANAGER_LABELS, NODE_IPS, WORKER_LABELS
from tests.e2e.timings import record

pytestmark = pytest.mark.e2e
PROBE_IMAGE = "redis:7.0-bookworm"  # any stand-in: they share one rootfs layer


def test_three_engines_in_one_swarm(bed):
    states = bed.ready()
    assert len(states) == 3 and set(states.values()) == {"ready"}, states
    versions = {n.attrs["Description"]["Hostname"]: n.attrs["Description"]["Engine"]["EngineVersion"]
                for n in bed.manager.nodes.list()}
    for name in NODE_IPS:
        assert int(versions[name].split(".")[0]) >= 26, versions  # trixie's engine
    labels = {n.attrs["Description"]["Hostname"]: n.attrs["Spec"].get("Labels", {})
              for n in bed.manager.nodes.list()}
    for hostname, node_labels in labels.items():
        want = WORKER_LABELS if hostname in NODE_IPS else MANAGER_LABELS
        assert want.items() <= node_labels.items(), (hostname, node_labels)


def test_a_node_pulls_a_stand_in_by_its_docker_hub_name_from_the_registry(bed):
    record("swarm bed: push the shared rootfs", bed.push([PROBE_IMAGE]))
    node = bed.nodes["swarm-node1"]
    started = time.monotonic()
    pulled = node.images.pull(PROBE_IMAGE)
    record("swarm bed: a node pulls it", time.monotonic() - started)
    assert pulled.id == bed.manager.images.get(PROBE_IMAGE).id


def test_a_service_name_resolves_across_nodes_on_an_internal_overlay(bed):
    bed.push([PROBE_IMAGE])
    bed.manager.networks.create("bed-probe", driver="overlay", internal=True)
    services = []
    try:
        services.append(bed.manager.services.create(
            PROBE_IMAGE, name="bed-probe-web", networks=["bed-probe"],
            command=["python3", "-m", "http.server", "8080"],
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            constraints=["node.hostname==swarm-node1"]))
        services.append(bed.manager.services.create(
            PROBE_IMAGE, name="bed-probe-client", networks=["bed-probe"],
            command=["sleep", "600"], endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            constraints=["node.hostname==swarm-node2"]))
        client = _running_task(bed.nodes["swarm-node2"], "bed-probe-client")
        deadline = time.monotonic() + 60
        while True:
            result = client.exec_run(["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w",
                                      "%{http_code}", "http://bed-probe-web:8080/"])
            if result.output == b"200" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert result.output == b"200", result
    finally:
        for service in services:
            service.remove()
        _wait_gone(bed, "bed-probe")


def _running_task(node: docker.DockerClient, service: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = node.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError(f"no running task of {service} within {timeout} s")


def _wait_gone(bed, network: str):
    for _ in range(30):  # the overlay is removable once no task is attached
        try:
            bed.manager.networks.get(network).remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            time.sleep(1)
