"""nginx.tls through real nginx: the client and federation listeners speak TLS
with the operator's certificate chain, a client that does not trust the CA is
refused, plain HTTP is redirected to the public base URL, the guide's protocol
and session settings are in force, and routing is unchanged."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from components.render import nginx_conf
from tests.nginx.conftest import DEV, make_plan
from tests.nginx.harness import FrontDoor
from tests.support.tls import issue

BASE = "https://localhost:8443/"


@pytest.fixture(scope="module")
def tls_door(tmp_path_factory):
    issued = issue(tmp_path_factory.mktemp("ca"), ["localhost", "127.0.0.1"])
    door = FrontDoor.start(make_plan(DEV, publicBaseUrl=BASE, nginx={"tls": True}),
                           tls=(issued.fullchain, issued.key, issued.ca_cert))
    yield door
    door.stop()


def test_client_and_federation_listeners_serve_https(tls_door):
    sync = tls_door.request("GET", "/_matrix/client/v3/sync")
    assert (sync.status, sync.process) == (200, "client_sync1"), (sync.status, sync.process)
    fed = tls_door.request("GET", "/_matrix/federation/v1/version", port=tls_door.federation_port)
    assert (fed.status, fed.process) == (200, "federation_reader1"), (fed.status, fed.process)
    # Synapse is told the client came over https.
    assert sync.json()["headers"]["x-forwarded-proto"] == "https"


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_door):
    for port in (tls_door.port, tls_door.federation_port):
        conn = tls_door.connection(port, context=ssl.create_default_context())
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("GET", "/_matrix/client/versions")
        conn.close()


def test_the_certificate_names_are_checked(tls_door):
    with socket.create_connection(("127.0.0.1", tls_door.port), timeout=5) as sock:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            tls_door.tls_context.wrap_socket(sock, server_hostname="other.example.org")


def test_plain_http_is_redirected_to_the_public_base_url(tls_door):
    port = tls_door.ports[nginx_conf.PORTS["http"]]
    r = tls_door.request("GET", "/_matrix/client/versions?x=1", port=port)
    assert (r.status, r.process) == (301, None), (r.status, r.process)
    assert r.headers["location"] == "https://localhost:8443/_matrix/client/versions?x=1"


def test_plain_http_on_the_tls_ports_gets_no_answer_from_synapse(tls_door):
    conn = http.client.HTTPConnection("127.0.0.1", tls_door.port, timeout=5)
    conn.request("GET", "/_matrix/client/v3/sync")
    r = conn.getresponse()
    assert r.status == 400 and r.getheader("X-Stub-Process") is None, r.status
    conn.close()


def test_old_protocols_are_refused_and_tls13_is_offered(tls_door):
    old = ssl.create_default_context(cafile=tls_door.ca_file)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    conn = tls_door.connection(tls_door.port, context=old)
    with pytest.raises(ssl.SSLError):
        conn.request("GET", "/_matrix/client/versions")
    conn.close()
    conn = tls_door.connection(tls_door.port)
    conn.request("GET", "/_matrix/client/versions")
    conn.getresponse().read()
    assert conn.sock.version() == "TLSv1.3"
    conn.close()


def test_hsts_header_on_every_answer(tls_door):
    for target in ("/_matrix/client/versions", "/.well-known/matrix/client", "/nowhere"):
        r = tls_door.request("GET", target)
        assert r.headers.get("strict-transport-security") == "max-age=63072000; includeSubDomains", (
            target, r.headers)


def test_admin_api_still_only_on_the_admin_listener(tls_door):
    r = tls_door.request("GET", "/_synapse/admin/v1/server_version")
    assert (r.status, r.process) == (403, None), (r.status, r.process)
    r = tls_door.request("GET", "/_synapse/admin/v1/server_version",
                         port=tls_door.ports[nginx_conf.PORTS["admin"]])
    assert (r.status, r.process) == (200, "main"), (r.status, r.process)

