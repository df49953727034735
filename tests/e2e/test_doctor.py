"""`make doctor` on this machine's engine: it reads the engine (a throwaway
network for the IPv6 default included) and, on the host the e2e suite runs on
(swap accounting on, no IPv6, no daemon-wide log-opts), expects no drift."""

import subprocess
import sys

import docker
import pytest

pytestmark = pytest.mark.e2e


def test_doctor_reads_this_engine_and_leaves_nothing_behind(docker_engine: docker.DockerClient):
    before = {n.name for n in docker_engine.networks.list()}
    run = subprocess.run([sys.executable, "-m", "components.tools.doctor", "--config",
                          "config/Pulumi.dev.yaml"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    api = docker_engine.version()["ApiVersion"]
    assert f"Docker API {api}" in run.stdout
    swap = docker_engine.info()["SwapLimit"]
    assert ("swap accounting on" if swap else "swap accounting off") in run.stdout
    assert ("nothing on this engine would drift" in run.stdout) == swap, run.stdout
    assert {n.name for n in docker_engine.networks.list()} == before
