"""Plans and running front doors shared by the nginx tests (one nginx per plan)."""

from __future__ import annotations

import pytest

from components.plan.settings import load_settings
from components.plan.topology import build_plan
from tests.nginx.harness import FrontDoor

CLASSES = ("client_sync", "federation_reader", "media", "rooms", "sender", "tasks")
DEV = {c: 1 for c in CLASSES}
PROD = {"client_sync": 1, "federation_reader": 1, "media": 1, "rooms": 4, "sender": 4, "tasks": 1}
NONE = {c: 0 for c in CLASSES}  # every class scaled to 0: main serves everything
SCALED = {**PROD, "client_sync": 2, "federation_reader": 2, "media": 2}


def pytest_configure(config):
    config.addinivalue_line("markers", "nginx: runs the host's nginx binary (Debian package nginx)")


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0] + "/"
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.nginx)


def make_plan(workers: dict[str, int], **extra):
    raw = {"serverName": "example.org", "workers": workers, "nginx": {"servedByHeader": True}}
    for k, v in extra.items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and k in raw else v
    return build_plan(load_settings(raw, "test"))


def _door(plan):
    door = FrontDoor.start(plan)
    yield door
    door.stop()


@pytest.fixture(scope="session")
def dev_door():
    yield from _door(make_plan(DEV))


@pytest.fixture(scope="session")
def prod_door():
    yield from _door(make_plan(PROD))


@pytest.fixture(scope="session")
def none_door():
    yield from _door(make_plan(NONE))


@pytest.fixture(scope="session")
def scaled_door():
    """Two client_sync, federation_reader and media workers: balancing is visible."""
    yield from _door(make_plan(SCALED))


@pytest.fixture(scope="session")
def locked_door():
    """The admin allow-list excludes the test client (127.0.0.1); no served-by
    header; a 1 MB upload limit; one trusted proxy (127.0.0.1) for X-Forwarded-For."""
    yield from _door(make_plan(
        DEV,
        nginx={"adminAllow": ["10.0.0.0/8"], "servedByHeader": False,
               "trustedProxies": ["127.0.0.1/32"]},
        maxUploadSizeMb=1,
        publicBaseUrl="http://matrix.example.org:8008",
    ))
