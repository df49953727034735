"""What nginx does besides routing, through real nginx: well-known answers, the
health socket, proxy headers, keepalive, the served-by header, the access log,
the admin allow-list with trusted proxies, and the upload limit."""

from __future__ import annotations

import json
import re
import time

from components.render import nginx_conf
from tests.nginx.corpus import CORPUS

SYNC = "/_matrix/client/v3/sync"
ADMIN = "/_synapse/admin/v1/server_version"


def test_well_known_server_names_the_public_host_and_port(dev_door):
    r = dev_door.request("GET", "/.well-known/matrix/server")
    assert (r.status, r.process) == (200, None), (r.status, r.process)
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.body) == {"m.server": "example.org:443"}


def test_well_known_server_keeps_an_explicit_port(locked_door):
    # locked_door: publicBaseUrl http://matrix.example.org:8008
    r = locked_door.request("GET", "/.well-known/matrix/server")
    assert json.loads(r.body) == {"m.server": "matrix.example.org:8008"}


def test_well_known_client_gives_the_base_url_with_cors(dev_door):
    r = dev_door.request("GET", "/.well-known/matrix/client")
    assert (r.status, r.process) == (200, None), (r.status, r.process)
    assert r.headers["content-type"] == "application/json"
    assert r.headers.get("access-control-allow-origin") == "*", r.headers
    assert json.loads(r.body) == {"m.homeserver": {"base_url": "https://example.org/"}}


def test_health_socket_answers_200(dev_door):
    r = dev_door.health()
    assert r.status == 200, (r.status, r.body)


def test_federation_port_routes_like_the_client_port(prod_door):
    r = prod_door.request("GET", "/_matrix/federation/v1/state_ids/!a:example.org?event_id=$e",
                          port=prod_door.federation_port)
    assert r.process in {p.name for p in prod_door.plan.by_class("rooms")}, r.process


def test_request_target_reaches_synapse_unchanged(dev_door):
    target = "/_matrix/client/v3/rooms/%21abc%3Aexample.org/send/m.room.message/t%2F1?x=%24y"
    r = dev_door.request("PUT", target)
    assert r.json()["target"] == target


def test_served_by_header_names_the_process_that_answered(prod_door):
    wrong = {}
    for line in CORPUS:
        r = prod_door.request(line.method, line.target)
        if r.process is not None and r.headers.get(nginx_conf.SERVED_BY_HEADER.lower()) != r.process:
            wrong[str(line)] = (r.process, r.headers.get(nginx_conf.SERVED_BY_HEADER.lower()))
    assert not wrong, f"(stub, {nginx_conf.SERVED_BY_HEADER}) disagree: {wrong}"


def test_served_by_header_is_off_unless_configured(locked_door):
    r = locked_door.request("GET", SYNC)
    assert r.process and nginx_conf.SERVED_BY_HEADER.lower() not in r.headers, r.headers


def test_forwarded_headers_come_from_nginx_not_the_client(dev_door):
    r = dev_door.request("GET", SYNC, headers={
        "Host": "matrix.example.org", "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "gopher"})
    seen = r.json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1", seen
    assert seen["x-forwarded-proto"] == "https", seen  # publicBaseUrl is https
    assert seen["host"] == "matrix.example.org", seen


def test_forwarded_for_is_believed_from_a_trusted_proxy(locked_door):
    # locked_door trusts 127.0.0.1 as a proxy: its X-Forwarded-For names the client.
    r = locked_door.request("GET", SYNC, headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"})
    assert r.json()["headers"]["x-forwarded-for"] == "203.0.113.7"


def test_admin_allowed_for_an_allowed_client_behind_a_trusted_proxy(locked_door):
    # adminAllow is 10.0.0.0/8; the trusted proxy says the client is 10.1.2.3.
    r = locked_door.request("GET", ADMIN, headers={"X-Forwarded-For": "10.1.2.3"})
    assert (r.status, r.process) == (200, "main"), (r.status, r.process)


def test_admin_refused_for_a_public_client_behind_a_trusted_proxy(locked_door):
    r = locked_door.request("GET", ADMIN, headers={"X-Forwarded-For": "10.1.2.3, 203.0.113.7"})
    assert (r.status, r.process) == (403, None), (r.status, r.process)


def test_admin_allow_list_leaves_other_requests_alone(locked_door):
    r = locked_door.request("GET", "/_matrix/client/versions")
    assert (r.status, r.process) == (200, "main"), (r.status, r.process)


def test_no_upgrade_means_no_connection_close_upstream(dev_door):
    seen = dev_door.request("GET", SYNC).json()["headers"]
    assert seen.get("connection", "") != "close", seen


def test_websocket_upgrade_headers_are_passed_on(dev_door):
    r = dev_door.request("GET", SYNC, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    seen = r.json()["headers"]
    assert (seen.get("upgrade"), seen.get("connection")) == ("websocket", "upgrade"), seen


def test_upstream_connections_are_kept_alive(dev_door):
    counts = [dev_door.request("GET", "/_matrix/client/versions").json()["requests_on_connection"]
              for _ in range(5)]
    assert max(counts) > 1, f"every request used a new upstream connection: {counts}"


def test_uploads_up_to_the_limit_pass(locked_door):
    r = locked_door.request("POST", "/_matrix/media/v3/upload", body=b"x" * 1_000_000)
    assert (r.status, r.process) == (200, "media1"), (r.status, r.process)


def test_uploads_over_the_limit_are_refused(locked_door):
    r = locked_door.request("POST", "/_matrix/media/v3/upload", body=b"x" * 1_100_000)
    assert (r.status, r.process) == (413, None), (r.status, r.process)


def _log_entry(door, marker: str) -> str:
    # nginx logs a request after sending the response: allow it a moment.
    deadline = time.monotonic() + 2
    while not (entries := [e for e in door.access_log() if marker in e]):
        assert time.monotonic() < deadline, f"no access log entry contains {marker!r}"
        time.sleep(0.01)
    return entries[-1]


def test_access_log_records_the_serving_process_and_socket(prod_door):
    target = "/_matrix/client/v3/rooms/!logged:example.org/members"
    process = prod_door.request("GET", target).process
    entry = _log_entry(prod_door, target)
    socket = prod_door.plan.process(process).inbound.path.rsplit("/", 1)[1]
    assert f"served_by={process} " in entry and re.search(rf'upstream="unix:\S*/{socket}"', entry), entry
    assert " route=room_read " in entry, entry


def test_access_log_redacts_access_tokens(dev_door):
    dev_door.request("GET", f"{SYNC}?since=s9&access_token=syt_c2VjcmV0_TopSecretToken_abc123&x=1")
    entry = _log_entry(dev_door, "since=s9")
    assert "TopSecretToken" not in entry and "access_token=REDACTED&x=1" in entry, entry


def test_access_log_names_nginx_for_its_own_answers(dev_door):
    dev_door.request("GET", "/.well-known/matrix/client?logtest=1")
    entry = _log_entry(dev_door, "logtest=1")
    assert " route=well_known served_by=nginx " in entry, entry
