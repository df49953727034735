"""The replay applies a healthcheck start_interval as pulumi-docker's Docker client
would against the engine it talks to (provider_model.START_INTERVAL_API)."""

import pytest

from tests.e2e.replay.errors import ReplayError
from tests.e2e.replay.provider import check_start_interval


@pytest.mark.parametrize("version", ["1.41", "1.43", "1.9"])
def test_refused_below_api_1_44_with_the_clients_words(version):
    with pytest.raises(ReplayError) as e:
        check_start_interval("container x", version)
    assert '"specify health-check start interval" requires API version 1.44' in str(e.value)
    assert f"daemon API version is {version}" in str(e.value)


@pytest.mark.parametrize("version", ["1.44", "1.47", "1.100"])
def test_taken_from_api_1_44(version):
    check_start_interval("container x", version)
