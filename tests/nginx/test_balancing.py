"""Balancing through real nginx with two client_sync, federation_reader and media
workers: client_sync sticks to the user's token, federation_reader to the origin
server, stream-writer endpoints stay on their writer."""

from __future__ import annotations

import base64
import dataclasses
import random
import string
from collections import Counter

import pytest

from tests.nginx.harness import FrontDoor

_RNG = random.Random(3)  # reproducible tokens: a failure can be replayed


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits + "-_") -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))

# Requests that client_sync serves (hashed by token).
SYNC_REQUESTS = (
    ("GET", "/_matrix/client/v3/sync?timeout=0"),
    ("GET", "/_matrix/client/v3/sync?since=s1_2_3&timeout=30000"),
    ("POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"),
    ("GET", "/_matrix/client/v3/events?from=s1"),
    ("GET", "/_matrix/client/v3/initialSync"),
    ("POST", "/_matrix/client/v3/user_directory/search"),
    ("GET", "/_matrix/client/v3/pushrules/"),
)


def syt_token(localpart: str) -> str:
    """Synapse's format: syt_<base64 localpart>_<random>_<crc>."""
    b64 = base64.b64encode(localpart.encode()).decode().rstrip("=")
    return f"syt_{b64}_{_rand(20, string.ascii_letters)}_{_rand(6, string.ascii_letters + string.digits)}"


def opaque_tokens(n: int) -> list[str]:
    """Tokens that are not Synapse's: MAS-style, JWT-like, random."""
    kinds = (lambda: f"mat_{_rand(32)}",
             lambda: f"eyJ{_rand(20)}.{_rand(40)}.{_rand(22)}",
             lambda: _rand(40, string.hexdigits.lower()))
    return [kinds[i % len(kinds)]() for i in range(n)]


def _sync_worker(door, method: str, target: str, token: str, in_query: bool = False) -> str:
    if in_query:
        sep = "&" if "?" in target else "?"
        r = door.request(method, f"{target}{sep}access_token={token}")
    else:
        r = door.request(method, target, headers={"Authorization": f"Bearer {token}"})
    names = {p.name for p in door.plan.by_class("client_sync")}
    assert r.process in names, (
        f"{method} {target} (token {token[:12]}...): expected client_sync {sorted(names)}, "
        f"got {r.process or f'nginx itself (status {r.status})'}")
    return r.process


def test_the_scaled_stack_has_two_client_sync_workers(scaled_door):
    assert len(scaled_door.plan.by_class("client_sync")) == 2


@pytest.mark.parametrize("token", opaque_tokens(6) + [syt_token("alice"), syt_token("bob")],
                         ids=lambda t: t[:8])
def test_one_token_always_lands_on_one_worker(scaled_door, token):
    landed = {f"{m} {t}": _sync_worker(scaled_door, m, t, token) for m, t in SYNC_REQUESTS * 3}
    assert len(set(landed.values())) == 1, f"token {token} is split: {landed}"


@pytest.mark.parametrize("token", opaque_tokens(3) + [syt_token("carol")], ids=lambda t: t[:8])
def test_query_string_token_lands_where_the_header_does(scaled_door, token):
    header = _sync_worker(scaled_door, "GET", "/_matrix/client/v3/sync", token)
    query = _sync_worker(scaled_door, "GET", "/_matrix/client/v3/sync", token, in_query=True)
    assert header == query, f"token {token}: header -> {header}, ?access_token= -> {query}"


def test_different_opaque_tokens_spread_over_both_workers(scaled_door):
    counts = Counter(_sync_worker(scaled_door, "GET", "/_matrix/client/v3/sync", t)
                     for t in opaque_tokens(60))
    assert len(counts) == 2 and min(counts.values()) >= 10, (
        f"60 opaque tokens spread as {dict(counts)}")


def test_different_users_spread_over_both_workers(scaled_door):
    counts = Counter(_sync_worker(scaled_door, "GET", "/_matrix/client/v3/sync", syt_token(f"user{i}"))
                     for i in range(60))
    assert len(counts) == 2 and min(counts.values()) >= 10, f"60 users spread as {dict(counts)}"


def test_one_users_devices_share_a_worker(scaled_door):
    landed = {t: _sync_worker(scaled_door, "GET", "/_matrix/client/v3/sync", t)
              for t in (syt_token("dave") for _ in range(12))}
    assert len(set(landed.values())) == 1, f"@dave's tokens are split: {landed}"


@pytest.mark.parametrize("method,target,stream", [
    ("PUT", "/_matrix/client/v3/rooms/!r:example.org/typing/@u:example.org", "typing"),
    ("POST", "/_matrix/client/v3/rooms/!r:example.org/receipt/m.read/$e", "receipts"),
    ("PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/t1", "to_device"),
    ("PUT", "/_matrix/client/v3/user/@u:example.org/account_data/m.direct", "account_data"),
    ("PUT", "/_matrix/client/v3/presence/@u:example.org/status", "presence"),
])
def test_stream_endpoints_stay_on_the_writer_for_every_token(scaled_door, method, target, stream):
    writer = scaled_door.plan.stream_writers[stream]
    landed = Counter(scaled_door.request(method, target, headers={"Authorization": f"Bearer {t}"}).process
                     for t in opaque_tokens(20))
    assert set(landed) == set(writer), f"{method} {target}: writer {writer}, landed {dict(landed)}"


def _x_matrix(origin: str) -> dict[str, str]:
    return {"Authorization": f'X-Matrix origin="{origin}",destination="example.org",'
                             f'key="ed25519:a1",sig="{_rand(43)}"'}


def test_one_origin_server_lands_on_one_federation_reader(scaled_door):
    landed = {
        f"{n} {path}": scaled_door.request("PUT", path, headers=_x_matrix("remote.example")).process
        for n, path in enumerate(["/_matrix/federation/v1/send/1", "/_matrix/federation/v1/send/2",
                                  "/_matrix/federation/v1/version",
                                  "/_matrix/federation/v1/user/devices/@u:example.org"] * 5)
    }
    readers = {p.name for p in scaled_door.plan.by_class("federation_reader")}
    assert len(set(landed.values())) == 1 and set(landed.values()) <= readers, (
        f"remote.example's requests landed on {landed}")


def test_origin_servers_spread_over_both_federation_readers(scaled_door):
    counts = Counter(
        scaled_door.request("PUT", f"/_matrix/federation/v1/send/{i}",
                            headers=_x_matrix(f"server{i}.example")).process
        for i in range(60))
    readers = {p.name for p in scaled_door.plan.by_class("federation_reader")}
    assert set(counts) == readers and min(counts.values()) >= 10, f"60 origins spread as {dict(counts)}"


def test_media_requests_use_both_media_workers(scaled_door):
    counts = Counter(scaled_door.request("GET", f"/_matrix/client/v1/media/download/example.org/m{i}").process
                     for i in range(20))
    assert set(counts) == {p.name for p in scaled_door.plan.by_class("media")}, dict(counts)


def test_a_stream_with_two_writers_uses_both(scaled_door):
    # Synapse allows several receipts writers; the table's FIRST scope uses one, but
    # the config must follow the plan if that changes.
    plan = scaled_door.plan
    plan = dataclasses.replace(plan, stream_writers={**plan.stream_writers,
                                                     "receipts": ("client_sync1", "client_sync2")})
    door = FrontDoor.start(plan)
    try:
        landed = Counter(door.request("POST", f"/_matrix/client/v3/rooms/!r{i}:example.org/read_markers").process
                         for i in range(10))
    finally:
        door.stop()
    assert set(landed) == {"client_sync1", "client_sync2"}, dict(landed)
