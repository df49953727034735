"""The routing table as data: well-formed, ordered on purpose, consistent with the
worker-class table. (Where requests really go is proven with nginx: tests/nginx.)"""

from __future__ import annotations

import re

import pytest

from components.plan import routing
from components.plan import workers
from components.plan.routing import MAIN, ROUTES, WRITER, Key

# Streams Synapse lets a worker write (synapse/config/workers.py, WriterLocations).
SYNAPSE_STREAMS = {"events", "typing", "to_device", "account_data", "receipts", "presence",
                   "push_rules", "device_lists", "thread_subscriptions",
                   "quarantined_media_changes"}


def _matches(route, method: str, path: str) -> bool:
    if route.methods and method not in route.methods:
        return False
    return re.search(route.pattern, path.split("?", 1)[0]) is not None


def _first(method: str, path: str):
    return next(r for r in ROUTES if _matches(r, method, path))


EXAMPLES = [(r, ex) for r in ROUTES for ex in r.examples]


def test_rule_names_are_unique_words():
    names = [r.name for r in ROUTES]
    assert len(names) == len(set(names)), names
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in names), names


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_pattern_is_anchored_and_compiles(route):
    assert route.pattern.startswith("^/"), route.pattern
    re.compile(route.pattern)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_every_rule_says_why_and_shows_an_example(route):
    assert route.why.strip() and route.examples, route.name


@pytest.mark.parametrize("route,example", EXAMPLES, ids=lambda x: getattr(x, "name", x))
def test_each_example_is_decided_by_its_own_rule(route, example):
    # The order of ROUTES is what nginx uses; an earlier rule catching an example
    # of a later one means the order is wrong.
    method, path = example.split(" ", 1)
    assert method.isupper(), example
    first = _first(method, path)
    assert first is route, f"{example}: decided by {first.name!r}, meant for {route.name!r}"


def test_the_last_rule_catches_everything_for_main():
    last = ROUTES[-1]
    assert (last.pattern, last.target, last.methods) == ("^/", MAIN, ())
    assert all(r.pattern != "^/" for r in ROUTES[:-1])


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_target_is_main_a_routable_class_or_a_stream_writer(route):
    if route.target == WRITER:
        assert route.stream in SYNAPSE_STREAMS, route
    else:
        assert route.stream is None, route
        assert route.target == MAIN or workers.BY_NAME[route.target].inbound_resources, route


@pytest.mark.parametrize("cls", workers.WORKER_CLASSES, ids=lambda c: c.name)
def test_classes_nginx_reaches_have_rules_and_the_others_none(cls):
    has_rules = any(r.target == cls.name for r in ROUTES)
    assert has_rules == bool(cls.inbound_resources), cls.name


@pytest.mark.parametrize("route,example", [(r, ex) for r, ex in EXAMPLES
                                           if workers.balance_of(r.target) is Key.ROOM],
                         ids=lambda x: getattr(x, "name", x))
def test_room_rules_hash_on_the_room_id_of_their_examples(route, example):
    m = re.search(routing.ROOM_ID_IN_PATH, example.split(" ", 1)[1])
    assert m and m.group("room_id") == "!a:example.org", example


@pytest.mark.parametrize("path,room", [
    ("/_matrix/client/v3/rooms/!abc:example.org/state/m.room.member/@bob:example.org", "!abc:example.org"),
    ("/_matrix/client/v3/rooms/!abc:example.org:8448/send/m.room.message/t:1", "!abc:example.org:8448"),
    ("/_matrix/client/v3/rooms/!PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0/typing/@u:x",
     "!PiPoFgA5WUoziU9lZOGxNIu9egCI1CxKy3PurtWcAJ0"),
    ("/_matrix/federation/v2/send_join/!r:example.org/$e:example.org", "!r:example.org"),
    ("/_matrix/client/v3/user/@u:example.org/rooms/!r:example.org/tags", "!r:example.org"),
    ("/_matrix/client/v3/join/#alias:example.org", None),
])
def test_room_id_is_the_first_segment_starting_with_a_bang(path, room):
    m = re.search(routing.ROOM_ID_IN_PATH, path)
    assert (m.group("room_id") if m else None) == room


@pytest.mark.parametrize("method,path", [
    ("POST", "/_matrix/client/v3/rooms/!a:example.org/forget"),
    ("POST", "/_matrix/client/v3/rooms/!a:example.org/upgrade"),
    ("POST", "/_matrix/client/v3/rooms/!a:example.org/report/$e"),
    ("PUT", "/_matrix/client/v3/rooms/!a:example.org/typing/@u:example.org"),
    ("POST", "/_matrix/client/v3/rooms/!a:example.org/receipt/m.read/$e"),
    ("GET", "/_matrix/client/v3/rooms/!a:example.org/initialSync"),
])
def test_room_scoped_requests_workers_must_not_take_are_decided_before_the_rooms_rules(method, path):
    first_rooms = next(i for i, r in enumerate(ROUTES) if r.target == "rooms")
    decided = _first(method, path)
    assert ROUTES.index(decided) < first_rooms and decided.target != "rooms", (path, decided.name)
