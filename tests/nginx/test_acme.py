"""nginx.tls: acme on this host, without Docker: the real nginx (the rendered
config, paths moved), the rendered ACME client script run by busybox sh with
only busybox's tools and lego on its PATH (what the official lego image, Alpine,
gives it), and Let's Encrypt's test server Pebble on loopback.

Before the first certificate nginx starts, answers plain HTTP and refuses TLS
handshakes. The client obtains a certificate for the stack's names through the
challenges nginx serves; after the reload that nginx's entrypoint would do, both
listeners present it and a client trusting only Pebble's root verifies it. A
renewal asked for with USR1 is published under a new name. With Pebble down an
attempt fails: the certificate stays, the state and the metrics say so, retries
back off; once Pebble is back (a new root, and no memory of the account) the next
attempt registers anew and succeeds.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from components.render import acme_conf
from tests.nginx.conftest import DEV, make_plan
from tests.nginx.harness import FrontDoor, _free_port
from tests.support import pebble
from tests.support.tls import served_certificate, settled_certificate
from tests.support.waiting import wait_for

NAMES = ("matrix.acme.test", "acme.test")  # publicBaseUrl's host, serverName's host
EMAIL = "ops@acme.test"


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: run tests/e2e/host_setup.sh "
                           "(Debian packages busybox, lego, pebble)")


class HostAcme:
    """Pebble, its DNS server and the client's loop, as processes of this host."""

    def __init__(self, root: Path, door: FrontDoor, ports: dict[str, int]) -> None:
        self.root, self.door, self.ports = root, door, ports
        self.public, self.store = Path(door.root) / "acme-public", root / "store"
        self.files = pebble.write_config(
            root / "pebble", http_port=door.ports[8080],
            listen=f"127.0.0.1:{ports['acme']}", management=f"127.0.0.1:{ports['management']}")
        self.dns = subprocess.Popen(pebble.challtestsrv_args(
            "127.0.0.1", dns=f"127.0.0.1:{ports['dns']}", management=f"127.0.0.1:{ports['dns_m']}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pebble: subprocess.Popen | None = None
        self.client: subprocess.Popen | None = None

    def start_pebble(self) -> None:
        self.pebble = subprocess.Popen(
            ["pebble", "-config", str(self.files.config),
             "-dnsserver", f"127.0.0.1:{self.ports['dns']}"],
            env={**os.environ, **pebble.ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.ports["acme"]), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("pebble did not listen within 10 s")

    def stop_pebble(self) -> None:
        assert self.pebble is not None
        self.pebble.terminate()
        self.pebble.wait(timeout=10)

    def root_ca(self) -> Path:
        pem = pebble.root(f"https://127.0.0.1:{self.ports['management']}", self.files.ca_file)
        path = Path(tempfile.mkstemp(dir=self.root, suffix=".pem")[1])
        path.write_text(pem)
        return path

    def start_client(self, script: str) -> None:
        """The rendered script, its paths moved here, run by busybox with busybox's
        applets and lego as the only commands."""
        script = script.replace(acme_conf.PUBLIC, str(self.public))
        script = re.sub(r"(?<![\w-])/acme(?![\w-])", str(self.store), script)
        (self.root / "run.sh").write_text(script)
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        busybox = shutil.which("busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for applet in applets:
            (bin_dir / applet).symlink_to(busybox)
        (bin_dir / "lego").symlink_to(shutil.which("lego"))
        self.log = open(self.root / "client.log", "ab")
        self.client = subprocess.Popen(
            [busybox, "sh", str(self.root / "run.sh")],
            env={"PATH": str(bin_dir), "HOME": str(self.root),
                 "LEGO_CA_CERTIFICATES": str(self.files.ca_file)},
            stdout=self.log, stderr=subprocess.STDOUT)

    def stop_client(self) -> None:
        assert self.client is not None
        self.client.terminate()
        self.client.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.root / "bin")

    def ask_renewal(self) -> None:
        assert self.client is not None
        self.client.send_signal(signal.SIGUSR1)

    def state(self) -> str:
        path = Path(acme_conf.STATE.replace(acme_conf.PUBLIC, str(self.public)))
        return path.read_text() if path.exists() else ""

    def metrics(self) -> dict[str, float]:
        path = Path(acme_conf.METRICS_FILE.replace(acme_conf.PUBLIC, str(self.public)))
        text = path.read_text() if path.exists() else ""
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line and not line.startswith("#")}

    def certificate_conf(self) -> str:
        path = Path(acme_conf.CERTIFICATE_CONF.replace(acme_conf.PUBLIC, str(self.public)))
        return path.read_text() if path.exists() else ""

    def client_log(self) -> str:
        return (self.root / "client.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in (self.client, self.pebble, self.dns):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
        if self.client is not None:
            self.log.close()


@pytest.fixture(scope="module")
def acme(tmp_path_factory):
    _require("busybox", "lego", "pebble", "pebble-challtestsrv")
    root = tmp_path_factory.mktemp("acme")
    ports = {k: _free_port() for k in ("acme", "management", "dns", "dns_m")}
    # The plan trusts Pebble's CA; Pebble's config needs nginx's port: the CA
    # first, then the plan and nginx, then Pebble's config under the same CA.
    ca = pebble.write_config(root / "pebble", http_port=0).ca_pem
    plan = make_plan(DEV, serverName=f"{NAMES[1]}:8448", publicBaseUrl=f"https://{NAMES[0]}/",
                     nginx={"tls": "acme", "acme": {
                         "email": EMAIL, "directory": f"https://127.0.0.1:{ports['acme']}/dir",
                         "caBundle": ca, "retrySeconds": 1}})
    door = FrontDoor.start(plan)
    host = HostAcme(root, door, ports)
    host.plan = plan
    yield host
    host.stop()
    door.stop()


def test_before_the_first_certificate_tls_is_refused_and_challenges_are_served(acme):
    door = acme.door
    for port in (door.port, door.federation_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME|unrecognized name"):
                ssl.create_default_context().wrap_socket(raw, server_hostname=NAMES[0])
    tokens = acme.public / ".well-known" / "acme-challenge"
    tokens.mkdir(parents=True)
    (tokens / "tok3n").write_text("tok3n.thumbprint")
    (acme.public / "secret.pem").write_text("not for the web")
    http = door.ports[8080]
    r = door.request("GET", "/.well-known/acme-challenge/tok3n", port=http)
    assert (r.status, r.body, r.headers["content-type"]) == (200, b"tok3n.thumbprint", "text/plain")
    # Nothing else of the volume: nginx resolves `..` first, and the rest redirects.
    r = door.request("GET", "/.well-known/acme-challenge/../../secret.pem", port=http)
    assert r.status == 301 and b"not for the web" not in r.body, r.status
    assert door.request("GET", "/.well-known/acme-challenge/nothing", port=http).status == 404
    assert door.request("GET", "/_matrix/client/versions", port=http).status == 301
    shutil.rmtree(tokens)
    (acme.public / "secret.pem").unlink()


def test_the_client_obtains_a_certificate_that_both_listeners_serve(acme):
    acme.start_pebble()
    acme.start_client(acme_conf.render_run_script(acme.plan.settings.nginx.acme))
    wait_for("a certificate published", acme.certificate_conf, 60, acme.client_log)
    acme.door.reload()
    root = acme.root_ca()
    served = settled_certificate(acme.door.port, NAMES[0], root, timeout_s=15)
    assert served_certificate(acme.door.federation_port, NAMES[1], root)[0] == served
    cert = ssl.DER_cert_to_PEM_cert(served)
    assert "BEGIN CERTIFICATE" in cert
    assert acme.state().startswith("ok: serving a certificate for matrix.acme.test, acme.test")
    m = acme.metrics()
    assert m["synapse_acme_failures"] == 0 and m["synapse_acme_certificate_expiry_days"] > 1, m
    assert m["synapse_acme_last_success_timestamp_seconds"] > time.time() - 120, m
    # Readable by nginx's group only: the volume root is 0750 in the product.
    live = sorted(p.name for p in (acme.public / "live").iterdir())
    assert re.fullmatch(r"cert-([0-9a-f]{16})\.pem certificate\.conf key-\1\.pem",
                        " ".join(live)), live
    assert oct((acme.public / "live" / live[-1]).stat().st_mode & 0o777) == "0o444"
    acme.first = served


def test_an_asked_renewal_is_published_and_served_after_a_reload(acme):
    before = acme.certificate_conf()
    acme.ask_renewal()
    wait_for("a new certificate published", lambda: acme.certificate_conf() not in ("", before),
             60, acme.client_log)
    acme.door.reload()
    settled_certificate(acme.door.port, NAMES[0], acme.root_ca(), acme.first, timeout_s=15)
    # The old files are gone; only the new pair is left.
    assert len(list((acme.public / "live").glob("*.pem"))) == 2


def test_a_certificate_within_renew_days_is_renewed_unasked_and_not_before(acme):
    """The loop's own decision at its check: a client restarted with the same
    settings republishes nothing new and orders nothing; one whose renewDays
    exceeds what is left (Pebble's certificates last years, so 2000 days) renews."""
    settings = acme.plan.settings.nginx.acme
    conf = acme.certificate_conf()
    orders = acme.client_log().count("acme: obtaining")
    acme.stop_client()
    acme.start_client(acme_conf.render_run_script(settings))
    wait_for("the state rewritten", lambda: "days left" in acme.state(), 30, acme.client_log)
    time.sleep(2)
    assert acme.client_log().count("acme: obtaining") == orders
    assert acme.certificate_conf() == conf
    acme.stop_client()
    acme.start_client(acme_conf.render_run_script(dataclasses.replace(settings, renew_days=2000)))
    wait_for("a renewal, unasked", lambda: acme.certificate_conf() not in ("", conf), 60,
             acme.client_log)
    assert acme.client_log().count("acme: obtaining") == orders + 1
    acme.stop_client()
    acme.start_client(acme_conf.render_run_script(settings))


def test_with_pebble_down_the_certificate_stays_and_the_failure_shows(acme):
    conf = acme.certificate_conf()
    old_root = acme.root_ca()
    served = served_certificate(acme.door.port, NAMES[0], old_root)[0]
    acme.stop_pebble()
    acme.ask_renewal()
    wait_for("the failure in the state", lambda: acme.state().startswith("failing: still serving"),
             30, acme.client_log)
    wait_for("two failures, backing off",
             lambda: acme.metrics().get("synapse_acme_failures", 0) >= 2, 30, acme.client_log)
    m = acme.metrics()
    assert m["synapse_acme_last_failure_timestamp_seconds"] > time.time() - 60, m
    assert m["synapse_acme_certificate_expiry_days"] > 1, m
    assert "connection refused" in acme.state(), acme.state()
    assert acme.certificate_conf() == conf
    assert served_certificate(acme.door.port, NAMES[0], old_root)[0] == served
    # Backoff: 1, 2, 4 s ... between attempts, not a tight loop.
    attempts = acme.client_log().count("acme: obtaining")
    time.sleep(3)
    assert acme.client_log().count("acme: obtaining") <= attempts + 2

    acme.start_pebble()  # a new root, and no memory of the account
    wait_for("the next attempt succeeding", lambda: acme.state().startswith("ok"), 60,
             acme.client_log)
    assert "registering a new one" in acme.client_log()
    assert acme.certificate_conf() != conf
    assert acme.metrics()["synapse_acme_failures"] == 0
    acme.door.reload()
    settled_certificate(acme.door.port, NAMES[0], acme.root_ca(), timeout_s=15)
    with pytest.raises(ssl.SSLCertVerificationError):  # the old root no longer verifies it
        served_certificate(acme.door.port, NAMES[0], old_root)[0]
