"""End-to-end fixtures: a Docker engine, the stand-in images, and a summary of
the measured times at the end of the run.

Nothing here skips: without a Docker engine or the images an e2e test fails,
saying what to run (tests/e2e/host_setup.sh, tests/e2e/images/build.py).
"""

from __future__ import annotations

import time

import docker
import pytest

from components.plan.settings import DEFAULT_IMAGES
from tests.e2e.timings import SESSION_START, TIMINGS, record

@pytest.fixture(scope="session")
def docker_engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means no engine
        pytest.fail(f"no Docker engine ({e}); run `sudo bash tests/e2e/host_setup.sh`",
                    pytrace=False)
    missing = []
    for ref in DEFAULT_IMAGES.values():
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            missing.append(ref)
    if missing:
        pytest.fail(f"images missing: {', '.join(missing)}; run "
                    "`.venv/bin/python tests/e2e/images/build.py`", pytrace=False)
    return client


@pytest.fixture(autouse=True)
def _time_each_test(request):
    if request.node.get_closest_marker("e2e") is None:
        yield
        return
    t0 = time.monotonic()
    yield
    record(f"test {request.node.name}", time.monotonic() - t0)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TIMINGS:
        return
    tr = terminalreporter
    tr.section("e2e timings")
    for what, seconds in TIMINGS:
        tr.write_line(f"{seconds:8.1f} s  {what}")
    tr.write_line(f"{time.monotonic() - SESSION_START:8.1f} s  whole session")
