"""The swarm bed, once for every test in this package (bed.py): it is up from the
first swarm test to the last, then removed, so the single-host tests before and
after run on an engine that is in no swarm."""

import pytest

from tests.e2e.swarm import bed as swarm_bed
from tests.e2e.timings import record


@pytest.fixture(scope="package")
def bed(docker_engine):
    started = swarm_bed.start(docker_engine)
    record("swarm bed: three nodes ready", started.seconds_to_ready)
    yield started
    swarm_bed.stop(docker_engine)
