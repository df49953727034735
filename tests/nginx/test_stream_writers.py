"""Writer endpoints through real nginx follow the plan's stream writers: the large
preset's, and those chosen with synapse:streamWriters."""

from __future__ import annotations

import pytest

from components.plan.settings import load_settings
from components.plan.topology import build_plan
from tests.nginx.harness import FrontDoor

TOKEN = {"Authorization": "Bearer syt_dXNlcg_abcdefghijklmnopqrst_123456"}


def _door(raw):
    plan = build_plan(load_settings({"serverName": "example.org",
                                     "nginx": {"servedByHeader": True}, **raw}, "test"))
    door = FrontDoor.start(plan)
    return door


@pytest.fixture(scope="module")
def large():
    door = _door({"preset": "large"})
    yield door
    door.stop()


@pytest.fixture(scope="module")
def chosen():
    door = _door({"workers": {"rooms": 2},
                  "streamWriters": {"typing": "rooms2", "push_rules": "main",
                                    "thread_subscriptions": ["rooms1", "client_sync1"]}})
    yield door
    door.stop()


@pytest.mark.parametrize("method, target, writers", [
    ("PUT", "/_matrix/client/v3/pushrules/global/override/r1", {"client_sync3"}),
    ("PUT", "/_matrix/client/v3/rooms/!a:example.org/typing/@u:example.org", {"client_sync1"}),
    ("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", {"client_sync2"}),
    ("POST", "/_matrix/client/v3/rooms/!a:example.org/receipt/m.read/$e",
     {"client_sync5", "client_sync6"}),
    ("POST", "/_matrix/client/v3/keys/upload", {"client_sync2", "client_sync6"}),
    ("PUT", "/_matrix/client/unstable/io.element.msc4306/rooms/!a:example.org/thread/$t/subscription",
     {"client_sync1"}),
])
def test_large_preset_sends_writer_endpoints_to_its_writers(large, method, target, writers):
    for _ in range(6):
        r = large.request(method, target, headers=TOKEN)
        assert r.process in writers, (r.process, large.route_of(method, target))


@pytest.mark.parametrize("method, target, writers", [
    ("PUT", "/_matrix/client/v3/rooms/!a:example.org/typing/@u:example.org", {"rooms2"}),
    ("DELETE", "/_matrix/client/v3/pushrules/global/override/r1", {"main"}),
    ("PUT", "/_matrix/client/unstable/io.element.msc4306/rooms/!a:example.org/thread/$t/subscription",
     {"rooms1", "client_sync1"}),
])
def test_stream_writers_setting_moves_the_endpoints(chosen, method, target, writers):
    for _ in range(6):
        r = chosen.request(method, target, headers=TOKEN)
        assert r.process in writers, (r.process, chosen.route_of(method, target))
