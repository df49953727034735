"""A process that cannot take a request, through real nginx: the class's next
process takes it, and when none can, main does, for the classes whose endpoints
main serves (all of them: topology.MAIN_RESOURCES); never a stream writer's
endpoint, and never a POST that reached a process (it could be applied twice)."""

from __future__ import annotations

import hashlib

import pytest

from components.render import nginx_conf
from tests.nginx.conftest import DEV, PROD, make_plan
from tests.nginx.corpus import CORPUS, expected_processes
from tests.nginx.harness import FrontDoor

WORKER_CLASSES_ROUTED = ("client_sync", "federation_reader", "media", "rooms")


def _where_down(plan, expected: str) -> str | frozenset[str]:
    """Where a corpus line lands when every worker is down: main for a class's
    endpoints, nginx's 502 for a stream a worker writes."""
    if expected == "nginx":
        return "nginx"
    allowed = expected_processes(plan, expected)
    if expected.startswith("writer:") and "main" not in allowed:
        return "502"
    return frozenset({"main"})


@pytest.fixture(scope="module")
def workers_down_door():
    """The dev plan (one process per class) with every worker gone, before any
    request reached them: a restart of each class's only process."""
    door = FrontDoor.start(make_plan(DEV))
    door.take_down(*(p.name for p in door.plan.processes if not p.is_main and p.inbound))
    yield door
    door.stop()


@pytest.mark.parametrize("line", CORPUS, ids=str)
def test_every_corpus_line_falls_back_to_main_unless_a_worker_writes_its_stream(
        workers_down_door, line):
    door = workers_down_door
    port = door.ports[nginx_conf.PORTS["admin"]] if line.is_admin else None
    r = door.request(line.method, line.target, port=port)
    want = _where_down(door.plan, line.expected)
    where = f"{line} (corpus.txt:{line.lineno}, rule {door.route_of(line.method, line.target)})"
    if want == "502":
        assert r.status == 502 and r.process is None, (
            f"{where}: only the stream's writer may serve it, so nginx answers 502; got "
            f"{r.status} from {r.process or 'nginx'}")
    elif want == "nginx":
        assert r.process is None and r.status == 200, where
    else:
        assert r.process in want, f"{where}: expected main, got {r.process or r.status}"


def test_every_routed_class_has_its_fallback_and_no_writer_route_has_one():
    conf = nginx_conf.render_nginx_conf(make_plan(PROD))
    fallback = conf.split("map $synapse_route $synapse_fallback {", 1)[1].split("}", 1)[0]
    from components.plan import routing
    for r in routing.ROUTES:
        has = f" {r.name} proc_main;" in fallback
        assert has == (r.target in WORKER_CLASSES_ROUTED), r.name


def test_a_class_of_one_falls_back_to_main_with_the_request_body_intact():
    door = FrontDoor.start(make_plan(DEV))
    try:
        door.take_down("rooms1")
        body = b'{"user_id": "@bob:example.org", "reason": "fallback"}'
        r = door.request("POST", "/_matrix/client/v3/rooms/!a:example.org/invite", body=body)
        assert r.status == 200 and r.process == "main"
        assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        # served_by names the process that answered, after the failed try.
        assert r.headers[nginx_conf.SERVED_BY_HEADER.lower()] == "main"
    finally:
        door.stop()


def test_a_busy_process_hands_its_rooms_to_a_peer_then_to_main():
    """Connecting to a process whose accept backlog is full fails at once (EAGAIN),
    and nginx tries the next process of the hash ring; with one process, main."""
    room = "/_matrix/client/v3/rooms/!busy:example.org/send/m.room.message/t1"
    for workers, want in ((PROD, "a peer"), (DEV, "main")):
        door = FrontDoor.start(make_plan(workers))
        try:
            owner = door.request("PUT", room).process
            peers = {p.name for p in door.plan.by_class("rooms")} - {owner}
            held = door.make_busy(owner)
            try:
                # A POST too: nothing reached the busy process.
                for method, target in (("PUT", room), ("GET", room.rsplit("/send", 1)[0] + "/messages"),
                                       ("POST", room.rsplit("/send", 1)[0] + "/invite")):
                    fresh = door.connection(door.port)
                    fresh.request(method, target, body=b"{}" if method != "GET" else None)
                    resp = fresh.getresponse()
                    resp.read()
                    served = resp.getheader("X-Stub-Process")
                    assert resp.status == 200, (workers, method, resp.status)
                    assert served in (peers if want == "a peer" else {"main"}), (method, served)
            finally:
                for s in held:
                    s.close()
        finally:
            door.stop()


def test_a_post_that_reached_a_dying_process_is_not_sent_again():
    """The process received the POST and died: it may have acted on it, so nginx
    answers 502 rather than sending it to main; a PUT (idempotent, and Synapse
    dedupes transaction IDs) goes on to main."""
    door = FrontDoor.start(make_plan(DEV))
    try:
        door.make_dying("rooms1")
        post = door.request("POST", "/_matrix/client/v3/rooms/!a:example.org/invite")
        assert post.status == 502 and post.process is None
        put = door.request("PUT", "/_matrix/client/v3/rooms/!a:example.org/send/m.room.message/t9")
        assert put.status == 200 and put.process == "main"
        get = door.request("GET", "/_matrix/client/v3/rooms/!a:example.org/messages")
        assert get.status == 200 and get.process == "main"
    finally:
        door.stop()


def test_a_writer_route_is_never_sent_elsewhere():
    door = FrontDoor.start(make_plan(DEV))
    try:
        writer = door.plan.stream_writers["typing"][0]
        door.take_down(writer)
        r = door.request("PUT", "/_matrix/client/v3/rooms/!a:example.org/typing/@u:example.org")
        assert r.status == 502 and r.process is None
    finally:
        door.stop()
