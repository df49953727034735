"""The request corpus through real nginx: each line must reach the expected process."""

from __future__ import annotations

import re
import time

import pytest

from components.render import nginx_conf
from components.plan import routing
from tests.nginx.corpus import CORPUS, DEFECTS, expected_processes

ADMIN = [line for line in CORPUS if line.is_admin]


def _check(door, line) -> None:
    # The admin API is served on the admin listener only (by default).
    port = door.ports[nginx_conf.PORTS["admin"]] if line.is_admin else None
    r = door.request(line.method, line.target, port=port)
    where = f"{line} (corpus.txt:{line.lineno})"
    if line.expected == "nginx":
        assert r.process is None and r.status == 200, (
            f"{where}: expected an answer from nginx itself, got status {r.status} "
            f"from {r.process or 'nginx'}")
        return
    allowed = expected_processes(door.plan, line.expected)
    got = r.process or f"nginx itself (status {r.status})"
    assert r.process in allowed, (
        f"{where}: expected {line.expected} {sorted(allowed)}, got {got} "
        f"(rule {door.route_of(line.method, line.target)})")


def test_corpus_has_at_least_150_requests():
    assert len(CORPUS) >= 150, f"corpus.txt has {len(CORPUS)} requests"


def test_corpus_covers_every_guide_defect():
    covered = set().union(*(line.defects for line in CORPUS))
    missing = {d: text for d, text in DEFECTS.items() if d not in covered}
    assert not missing, f"no corpus line proves: {missing}"


@pytest.mark.parametrize("line", CORPUS, ids=str)
def test_dev_stack_routes(dev_door, line):
    _check(dev_door, line)


@pytest.mark.parametrize("line", CORPUS, ids=str)
def test_prod_stack_routes(prod_door, line):
    _check(prod_door, line)


@pytest.mark.parametrize("line", CORPUS, ids=str)
def test_without_workers_main_serves_everything(none_door, line):
    _check(none_door, line)


@pytest.mark.parametrize("line", ADMIN, ids=str)
def test_admin_refused_outside_the_allow_list(locked_door, line):
    r = locked_door.request(line.method, line.target)
    assert (r.status, r.process) == (403, None), (
        f"{line}: expected a 403 from nginx for a client outside adminAllow, got "
        f"{r.status} from {r.process or 'nginx'}")
    assert r.json()["errcode"] == "M_FORBIDDEN", f"{line}: {r.body!r}"


@pytest.mark.parametrize("line", ADMIN, ids=str)
def test_admin_refused_on_the_public_listeners_by_default(prod_door, line):
    for name in ("client", "federation"):
        r = prod_door.request(line.method, line.target, port=prod_door.ports[nginx_conf.PORTS[name]])
        assert (r.status, r.process) == (403, None), (
            f"{line}: expected a 403 from nginx on the {name} listener, got "
            f"{r.status} from {r.process or 'nginx'}")
        assert r.json()["errcode"] == "M_FORBIDDEN", f"{line}: {r.body!r}"


def test_admin_listener_serves_nothing_but_the_admin_api(prod_door):
    served = {}
    for line in CORPUS:
        if line.is_admin:
            continue
        r = prod_door.request(line.method, line.target, port=prod_door.ports[nginx_conf.PORTS["admin"]])
        if (r.status, r.process) != (404, None):
            served[str(line)] = (r.status, r.process)
    assert not served, f"the admin listener answered non-admin requests: {served}"


def test_corpus_exercises_every_routing_rule(dev_door):
    before = len(dev_door.access_log())
    for line in CORPUS:
        dev_door.request(line.method, line.target)
    deadline = time.monotonic() + 2  # nginx logs a request just after answering it
    while len(dev_door.access_log()) < before + len(CORPUS) and time.monotonic() < deadline:
        time.sleep(0.01)
    used = {m.group(1) for entry in dev_door.access_log()[before:]
            if (m := re.search(r" route=(\S+)", entry))}
    unused = [r.name for r in routing.ROUTES if r.name not in used]
    assert not unused, f"no corpus line reaches these rules: {unused}"
