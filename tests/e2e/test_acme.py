"""nginx.tls: acme, end to end: dev's stack file as stack `acme` (its own ports),
its certificate from Let's Encrypt's test server Pebble, run in containers on
the stack's frontend network with Pebble's DNS test server pointing every name at
nginx.

nginx comes up before any certificate exists: it refuses TLS handshakes and
answers plain HTTP, and the client's health says it has none. Once Pebble is
there, the client gets a certificate for the stack's names through the HTTP-01
challenges nginx serves, and a client that trusts only Pebble's root verifies it
on both listeners; Prometheus scrapes its expiry; a second `up` changes nothing.
A renewal asked for (USR1) is served after nginx reloads, with Matrix clients
sending and reading throughout: no request fails, no container is replaced.
With Pebble stopped, a renewal fails: the certificate stays, the health and the
metric say so, and the next attempt after Pebble returns (a new root, and no
memory of the account) succeeds.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import http.client
import secrets
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import nio
import pytest

from components.render import acme_conf
from components.render.containers import NGINX_PORTS
from tests.e2e import prometheus, replay
from tests.e2e.live import Traffic
from tests.e2e.matrix_client import Recorder, lift_message_rate_limit, new_client, register
from tests.e2e.images.build import PEBBLE
from tests.e2e.timings import record
from tests.support import pebble
from tests.support.tls import served_certificate, settled_certificate, try_certificate
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

PUBLIC_NAME, SERVER_NAME = "matrix.acme.test", "acme.test"
HOSTS = {PUBLIC_NAME: "127.0.0.1", SERVER_NAME: "127.0.0.1"}
CLIENT_PORT, FEDERATION_PORT = 28008, 28448
RETRY_S = 2
PREFIX = "synapse-acme"
PEBBLE_NAME, DNS_NAME = f"{PREFIX}-test-pebble", f"{PREFIX}-test-pebble-dns"


def overrides(ca_pem: str) -> dict[str, Any]:
    return {
        "egress": False,
        "trustedKeyServers": [],
        "serverName": f"{SERVER_NAME}:{FEDERATION_PORT}",  # federation without delegation
        "publicBaseUrl": f"https://{PUBLIC_NAME}:{CLIENT_PORT}/",
        "nginx": {"bindAddress": "127.0.0.1", "clientPort": CLIENT_PORT,
                  "federationPort": FEDERATION_PORT, "adminPort": 28009, "httpPort": 28080,
                  "tls": "acme",
                  "acme": {"email": "ops@acme.test", "directory": "https://pebble:14000/dir",
                           "caBundle": ca_pem, "retrySeconds": RETRY_S}},
        "metrics": {"port": 28090, "scrapeIntervalSeconds": 2},
    }


def _remove_pebble() -> None:
    api = replay.api()
    for name in (PEBBLE_NAME, DNS_NAME):
        try:
            api.remove_container(name, force=True)
        except Exception:  # noqa: BLE001 - not there
            pass


@pytest.fixture(scope="module")
def acme(tmp_path_factory, docker_engine):
    work = tmp_path_factory.mktemp("acme")
    config = work / "Pulumi.acme.yaml"
    shutil.copyfile("config/Pulumi.dev.yaml", config)
    _remove_pebble()
    replay.down(config, delete_data=True)  # a clean slate, whatever a failed run left
    # Pebble checks challenges on nginx's plain-HTTP port inside its container.
    files = pebble.write_config(work / "pebble", http_port=NGINX_PORTS["http"],
                                inside=Path("/pebble"))
    loop = asyncio.new_event_loop()
    state: dict[str, Any] = {"config": config, "files": files, "loop": loop,
                             "overrides": overrides(files.ca_pem), "clients": []}
    try:
        yield state
    finally:
        async def close() -> None:
            await asyncio.gather(*(c.close() for c in state["clients"]), return_exceptions=True)

        loop.run_until_complete(close())
        loop.close()
        _remove_pebble()  # attached to the stack's network, which down removes
        replay.down(config, delete_data=True)


# --- helpers -------------------------------------------------------------------------


def _health(container: str) -> tuple[str, str]:
    """(status, the last probe's output)."""
    health = replay.api().inspect_container(container)["State"]["Health"]
    log = health.get("Log") or [{"Output": ""}]
    return health["Status"], log[-1]["Output"].strip()


def _root(acme: dict[str, Any]) -> Path:
    """Pebble's root CA since it last started, as a file: all a client trusts."""
    port = replay.api().inspect_container(PEBBLE_NAME)["NetworkSettings"]["Ports"]["15000/tcp"]
    pem = pebble.root(f"https://127.0.0.1:{port[0]['HostPort']}", acme["files"].ca_file)
    path = acme["files"].config.parent / f"root-{secrets.token_hex(4)}.pem"
    path.write_text(pem)
    return path


def _start_pebble(acme: dict[str, Any]) -> None:
    """Pebble's DNS server (every name -> nginx) and Pebble, on the stack's
    frontend network, Pebble as `pebble`; its management port on loopback."""
    api, d = replay.api(), acme["deployed"]
    network = f"{PREFIX}-frontend"
    nginx_ip = api.inspect_container(d.containers["nginx"])["NetworkSettings"]["Networks"][
        network]["IPAddress"]
    dns = api.create_container(
        PEBBLE, name=DNS_NAME, entrypoint=pebble.challtestsrv_args(nginx_ip),
        networking_config=api.create_networking_config({network: api.create_endpoint_config()}))
    api.start(dns)
    dns_ip = api.inspect_container(DNS_NAME)["NetworkSettings"]["Networks"][network]["IPAddress"]
    box = api.create_container(
        PEBBLE, name=PEBBLE_NAME, environment=pebble.ENV, ports=[15000],
        command=["-config", "/pebble/pebble.json", "-dnsserver", f"{dns_ip}:8053"],
        host_config=api.create_host_config(
            binds={str(acme["files"].config.parent): {"bind": "/pebble", "mode": "ro"}},
            port_bindings={15000: ("127.0.0.1",)}),
        networking_config=api.create_networking_config(
            {network: api.create_endpoint_config(aliases=["pebble"])}))
    api.start(box)
    _wait_pebble(acme)


def _wait_pebble(acme: dict[str, Any]) -> None:
    def answers():
        try:
            return _root(acme)
        except OSError:
            return None
    wait_for("Pebble answering", answers, 30)


def _ask_renewal(d: replay.Deployed) -> None:
    """What docs/tls.md tells an operator: `docker kill -s USR1 <prefix>-acme`."""
    replay.api().kill(d.outputs["acmeContainer"], signal="SIGUSR1")


def _started(d: replay.Deployed) -> dict[str, tuple[str, str, int]]:
    """Every container of the stack: (ID, start time, restarts)."""
    api = replay.api()
    out = {}
    for name in d.containers.values():
        c = api.inspect_container(name)
        out[name] = (c["Id"], c["State"]["StartedAt"], c["RestartCount"])
    return out


# --- the tests -----------------------------------------------------------------------


def test_nginx_starts_before_the_first_certificate(acme):
    t0 = time.monotonic()
    d = replay.up(acme["config"], acme["overrides"])
    record("acme stack up", time.monotonic() - t0)
    acme["deployed"] = d
    # Not waited for by `up`; no Pebble yet, so no certificate, and it says so.
    client = d.outputs["acmeContainer"]
    wait_for("the client's first attempt reported",
             lambda: _health(client)[1].startswith("failing: no certificate"), 60,
             lambda: replay.container_logs(client, tail=20))
    assert "pebble" in _health(client)[1], _health(client)
    # nginx is up and healthy: TLS is refused on both listeners, plain HTTP works.
    assert _health(d.containers["nginx"])[0] == "healthy"
    for port, name in ((CLIENT_PORT, PUBLIC_NAME), (FEDERATION_PORT, SERVER_NAME)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
                ssl.create_default_context().wrap_socket(raw, server_hostname=name)
    for path, status in (("/.well-known/acme-challenge/none", 404),
                         ("/_matrix/client/versions", 301)):
        conn = http.client.HTTPConnection("127.0.0.1", 28080, timeout=10)
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == status, (path, r.status)
        if status == 301:
            assert r.getheader("Location") == f"https://{PUBLIC_NAME}:{CLIENT_PORT}{path}"
        conn.close()


def test_a_certificate_from_pebble_is_served_on_both_listeners(acme):
    d = acme["deployed"]
    metric = functools.partial(prometheus.value, d.outputs)
    t0 = time.monotonic()
    _start_pebble(acme)
    _ask_renewal(d)  # rather than wait for the next retry
    client = d.outputs["acmeContainer"]
    wait_for("the client healthy", lambda: _health(client)[0] == "healthy", 120,
             lambda: replay.container_logs(client, tail=30))
    record("acme: first certificate", time.monotonic() - t0)
    assert _health(client)[1].startswith(f"ok: serving a certificate for {PUBLIC_NAME}, "
                                         f"{SERVER_NAME}"), _health(client)
    root = _root(acme)
    acme["root"] = root
    served = settled_certificate(CLIENT_PORT, PUBLIC_NAME, root)
    der, version = served_certificate(FEDERATION_PORT, SERVER_NAME, root)
    assert der == served and version == "TLSv1.3"
    # Pebble's root only: the system's CAs refuse it.
    with socket.create_connection(("127.0.0.1", CLIENT_PORT), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname=PUBLIC_NAME)
    acme["served"] = served
    wait_for("Prometheus scraping the expiry",
             lambda: (metric("synapse_acme_certificate_expiry_days") or 0) > 1
             and metric("synapse_acme_failures") == 0, 30)
    # Issuance went through no Pulumi state: a second up changes nothing.
    again = replay.up(acme["config"], acme["overrides"])
    assert again.plan.summary() == "no changes", [s.line() for s in again.plan.steps
                                                  if s.action != replay.SAME]


def _matrix_clients(acme: dict[str, Any]) -> tuple[nio.AsyncClient, nio.AsyncClient, str]:
    """alice and bob (verifying Pebble's chain, by name), in a room they share."""
    d, loop = acme["deployed"], acme["loop"]
    context = ssl.create_default_context(cafile=str(acme["root"]))
    recorder = Recorder(context, HOSTS)
    password = secrets.token_urlsafe(16)
    base = f"https://{PUBLIC_NAME}:{CLIENT_PORT}"

    async def go():
        async with recorder.session("admin") as s:
            users = {}
            for name, admin in (("acmeadmin", True), ("alice", False), ("bob", False)):
                status, body = await register(s, d.admin_url, d.registration_shared_secret,
                                              name, password, admin)
                assert status == 200, (name, status, body)
                users[name] = body
            for name in ("alice", "bob"):
                await lift_message_rate_limit(s, d.admin_url, users["acmeadmin"]["access_token"],
                                              users[name]["user_id"])
        clients = []
        for name in ("alice", "bob"):
            c = new_client(base, recorder, name, users[name]["user_id"])
            acme["clients"].append(c)
            assert isinstance(await c.login(password, device_name=f"acme {name}"),
                              nio.LoginResponse)
            clients.append(c)
        alice, bob = clients
        room = await alice.room_create(name="acme", invite=[bob.user_id])
        assert isinstance(room, nio.RoomCreateResponse), room
        assert isinstance(await bob.join(room.room_id), nio.JoinResponse)
        return alice, bob, room.room_id

    return loop.run_until_complete(go())


def test_a_renewal_is_served_with_no_failed_request_and_no_container_replaced(acme):
    d = acme["deployed"]
    alice, bob, room = _matrix_clients(acme)
    context = ssl.create_default_context(cafile=str(acme["root"]))
    traffic = Traffic(alice, bob, room, f"https://{PUBLIC_NAME}:{CLIENT_PORT}",
                      f"https://{SERVER_NAME}:{FEDERATION_PORT}", ssl_context=context,
                      hosts=HOSTS)
    before = _started(d)
    api = replay.api()
    conf_before = api.exec_start(api.exec_create(d.containers["nginx"],
                                                 ["cat", acme_conf.CERTIFICATE_CONF]))

    async def go() -> bytes:
        await traffic.start()
        try:
            await traffic.wait_acked(5)
            t0 = time.monotonic()
            _ask_renewal(d)
            renewed = await asyncio.to_thread(settled_certificate, CLIENT_PORT, PUBLIC_NAME,
                                              acme["root"], acme["served"])
            record("acme: renewal asked until served", time.monotonic() - t0)
            await traffic.wait_acked(len(traffic.acked) + 10)
        finally:
            await traffic.stop()
        await traffic.assert_stored(alice, "ACME renewal")
        return renewed

    renewed = acme["loop"].run_until_complete(go())
    down = traffic.unavailable_seconds()
    print(f"\nacme: renewal under traffic: {len(traffic.acked)} messages, "
          f"{traffic.failed_sends} retried sends, unavailable {down}", flush=True)
    assert traffic.failed_sends == 0 and set(down.values()) == {0.0}, (traffic.failed_sends, down)
    assert served_certificate(FEDERATION_PORT, SERVER_NAME, acme["root"])[0] == renewed
    # Reloaded by nginx's entrypoint onto the new include; nothing restarted.
    assert _started(d) == before
    conf_after = api.exec_start(api.exec_create(d.containers["nginx"],
                                                ["cat", acme_conf.CERTIFICATE_CONF]))
    assert conf_after != conf_before
    assert "run.sh: new config loaded" in replay.container_logs(d.containers["nginx"], tail=50)
    assert _health(d.containers["nginx-config"])[0] == "healthy"
    acme["served"] = renewed


def test_with_pebble_stopped_the_certificate_stays_and_the_next_attempt_succeeds(acme):
    d, api = acme["deployed"], replay.api()
    metric = functools.partial(prometheus.value, d.outputs)
    client = d.outputs["acmeContainer"]
    api.stop(PEBBLE_NAME, timeout=5)
    failed_at = time.time()
    _ask_renewal(d)
    wait_for("the failure in the client's health",
             lambda: _health(client)[1].startswith("failing: still serving"), 30,
             lambda: replay.container_logs(client, tail=20))
    wait_for("the failure scraped", lambda: (metric("synapse_acme_failures") or 0) >= 1
             and (metric("synapse_acme_last_failure_timestamp_seconds") or 0) >= int(failed_at),
             30)
    assert (metric("synapse_acme_certificate_expiry_days") or 0) > 1
    # The old certificate is still what both listeners serve.
    for port, name in ((CLIENT_PORT, PUBLIC_NAME), (FEDERATION_PORT, SERVER_NAME)):
        assert served_certificate(port, name, acme["root"])[0] == acme["served"]

    api.start(PEBBLE_NAME)  # a new root CA, and no account: Pebble keeps nothing
    _wait_pebble(acme)
    t0 = time.monotonic()
    wait_for("the next attempt succeeding", lambda: _health(client)[1].startswith("ok"), 120,
             lambda: replay.container_logs(client, tail=30))
    record("acme: recovery after Pebble returned", time.monotonic() - t0)
    assert "registering a new one" in replay.container_logs(client, tail=200)
    root = _root(acme)
    renewed = settled_certificate(CLIENT_PORT, PUBLIC_NAME, root, acme["served"])
    assert served_certificate(FEDERATION_PORT, SERVER_NAME, root)[0] == renewed
    with pytest.raises(ssl.SSLCertVerificationError):  # the old root does not sign it
        served_certificate(CLIENT_PORT, PUBLIC_NAME, acme["root"])
    wait_for("the recovery scraped", lambda: metric("synapse_acme_failures") == 0, 30)
    wait_for("the client healthy again", lambda: _health(client)[0] == "healthy", 30)
    acme["served"], acme["root"] = renewed, root


def test_down_and_up_serve_the_stored_certificate_without_asking_again(acme):
    """`make down` keeps the store (account and certificate); the next `up` starts
    nginx on an empty shared volume, and the client republishes what it stored,
    with no new order: TLS is back within seconds, Pebble not needed."""
    _remove_pebble()  # on the stack's network, which down removes
    replay.down(acme["config"])
    d = replay.up(acme["config"], acme["overrides"])
    wait_for("TLS back", lambda: try_certificate(CLIENT_PORT, PUBLIC_NAME, acme["root"]), 60)
    back = time.time()
    started = replay.api().inspect_container(d.containers["nginx"])["State"]["StartedAt"]
    since = datetime.datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00").timestamp()
    record("acme: nginx without a certificate after down and up (from its start)", back - since)
    served = settled_certificate(CLIENT_PORT, PUBLIC_NAME, acme["root"])
    assert served == acme["served"]
    logs = replay.container_logs(d.outputs["acmeContainer"], tail=100)
    assert "acme: published the certificate" in logs and "acme: obtaining" not in logs, logs
