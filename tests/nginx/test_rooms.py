"""Rooms workers through real nginx (prod stack: 4 rooms workers): one room, one
worker, whatever the endpoint, the encoding or the room version; rooms spread."""

from __future__ import annotations

import base64
import hashlib
import random
import tempfile
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.nginx.conftest import PROD, make_plan
from tests.nginx.harness import FrontDoor

# 20 room-scoped endpoints that rooms workers serve, client and federation. {r} is
# the room ID; what follows it often contains ':' (the guide's greedy regex cut there).
ENDPOINTS = (
    ("PUT", "/_matrix/client/v3/rooms/{r}/send/m.room.message/txn1"),
    ("GET", "/_matrix/client/v3/rooms/{r}/state"),
    ("GET", "/_matrix/client/v3/rooms/{r}/state/m.room.member/@bob:example.org"),
    ("PUT", "/_matrix/client/r0/rooms/{r}/state/m.room.topic/"),
    ("GET", "/_matrix/client/v3/rooms/{r}/members?membership=join"),
    ("GET", "/_matrix/client/v3/rooms/{r}/joined_members"),
    ("GET", "/_matrix/client/v3/rooms/{r}/messages?dir=b&limit=10"),
    ("GET", "/_matrix/client/v3/rooms/{r}/context/$Ev1:example.org"),
    ("GET", "/_matrix/client/v3/rooms/{r}/event/$Ev1:example.org"),
    ("PUT", "/_matrix/client/v3/rooms/{r}/redact/$Ev1:example.org/txn2"),
    ("POST", "/_matrix/client/v3/rooms/{r}/invite"),
    ("POST", "/_matrix/client/v3/rooms/{r}/leave"),
    ("GET", "/_matrix/client/v3/rooms/{r}/aliases"),
    ("GET", "/_matrix/client/v1/rooms/{r}/relations/$Ev1:example.org/m.thread"),
    ("GET", "/_matrix/client/v1/rooms/{r}/threads"),
    ("POST", "/_matrix/client/v3/join/{r}?server_name=example.org"),
    ("GET", "/_matrix/federation/v1/state_ids/{r}?event_id=$Ev1:example.org"),
    ("PUT", "/_matrix/federation/v2/send_join/{r}/$Ev2:remote.example"),
    ("GET", "/_matrix/federation/v1/make_join/{r}/@carol:remote.example?ver=12"),
    ("GET", "/_matrix/federation/v1/backfill/{r}?v=$Ev1:example.org&limit=5"),
)


def v12_room(seed: str) -> str:
    """A room version 12 ID: '!' + 43 characters, no server part."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "!" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def classic_room(rng: random.Random) -> str:
    local = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(18))
    server = rng.choice(("example.org", "matrix.org", "remote.example:8448", "chat.example.net"))
    return f"!{local}:{server}"


def encodings(room: str) -> tuple[str, ...]:
    """The forms a client may send: raw, '!' escaped, fully escaped."""
    return (room, "%21" + room[1:], quote(room, safe=""))


def _rooms(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [v12_room(f"{seed}-{i}") if i % 2 else classic_room(rng) for i in range(n)]


ROOMS_20 = _rooms(20, seed=20)
ROOMS_200 = _rooms(200, seed=200)


def _rooms_worker(door, method: str, target: str) -> str:
    r = door.request(method, target)
    rooms = {p.name for p in door.plan.by_class("rooms")}
    assert r.process in rooms, (
        f"{method} {target}: expected a rooms worker {sorted(rooms)}, got "
        f"{r.process or f'nginx itself (status {r.status})'} "
        f"(rule {door.route_of(method, target)})")
    return r.process


def test_the_prod_stack_has_four_rooms_workers(prod_door):
    assert len(prod_door.plan.by_class("rooms")) == 4


@pytest.mark.parametrize("room", ROOMS_20)
def test_one_room_lands_on_one_worker_for_every_endpoint(prod_door, room):
    forms = encodings(room)
    landed = {}
    for i, (method, template) in enumerate(ENDPOINTS):
        target = template.format(r=forms[i % len(forms)])
        landed[f"{method} {target}"] = _rooms_worker(prod_door, method, target)
    assert len(set(landed.values())) == 1, (
        f"room {room} is split across rooms workers:\n"
        + "\n".join(f"  {w}  {req}" for req, w in landed.items()))


def test_random_rooms_spread_over_every_rooms_worker(prod_door):
    counts = Counter(
        _rooms_worker(prod_door, "PUT",
                      f"/_matrix/client/v3/rooms/{encodings(room)[i % 3]}/send/m.room.message/t{i}")
        for i, room in enumerate(ROOMS_200))
    workers = {p.name for p in prod_door.plan.by_class("rooms")}
    assert set(counts) == workers and min(counts.values()) >= len(ROOMS_200) // 10, (
        f"200 rooms spread as {dict(counts)}; every rooms worker should get at least 10%")


def test_encoding_never_moves_a_room(prod_door):
    moved = {}
    for room in ROOMS_200:
        seen = {form: _rooms_worker(prod_door, "GET", f"/_matrix/client/v3/rooms/{form}/members")
                for form in encodings(room)}
        if len(set(seen.values())) != 1:
            moved[room] = seen
    assert not moved, f"rooms whose worker depends on the encoding: {moved}"


def test_adding_a_rooms_worker_moves_rooms_only_to_the_new_worker():
    # nginx builds the hash ring from the socket paths: keep them across both runs.
    # (4 -> 5, not 4 -> 8: doubling would look fine even with modulo hashing.)
    root = Path(tempfile.mkdtemp(prefix="ngx"))
    root.rmdir()
    landing = {}
    for count in (4, 5):
        door = FrontDoor.start(make_plan({**PROD, "rooms": count}), root=root)
        try:
            landing[count] = {room: _rooms_worker(door, "GET", f"/_matrix/client/v3/rooms/{room}/state")
                              for room in ROOMS_200}
        finally:
            door.stop()
    reshuffled = {r: (landing[4][r], landing[5][r]) for r in ROOMS_200
                  if landing[5][r] != "rooms5" and landing[5][r] != landing[4][r]}
    moved = sum(landing[5][r] == "rooms5" for r in ROOMS_200)
    assert not reshuffled, f"rooms moved between existing workers: {reshuffled}"
    assert moved >= len(ROOMS_200) // 10, f"only {moved} of 200 rooms moved to rooms5"
