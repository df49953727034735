"""A throwaway certificate authority for the TLS tests, made with the host's
openssl: a CA, and a server certificate it signs for the names and addresses the
tests connect to; and what a client verifying against a CA sees a listener serve."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.waiting import wait_for


@dataclass(frozen=True)
class Issued:
    ca_cert: Path  # what a client must trust
    fullchain: str  # PEM: server certificate, then the CA (as in fullchain.pem)
    key: str  # PEM: the server's private key (as in privkey.pem)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def issue(where: Path, names: list[str], days: int = 2) -> Issued:
    """A new CA in `where` and a server certificate for `names` (DNS names or IP
    addresses) signed by it."""
    where.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = where / "ca.key", where / "ca.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-days", str(days),
             "-subj", "/CN=synapse-workers test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return renew(where, names, days)


def renew(where: Path, names: list[str], days: int = 2) -> Issued:
    """A new key and server certificate from the CA `issue` made in `where` (as a
    renewal would give): clients that trust the CA trust it too."""
    ca_key, ca_cert = where / "ca.key", where / "ca.pem"
    key, csr, cert = where / "server.key", where / "server.csr", where / "server.pem"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={names[0]}")

    def san(name: str) -> str:
        try:
            ipaddress.ip_address(name)
            return f"IP:{name}"
        except ValueError:
            return f"DNS:{name}"

    ext = where / "server.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\n"
                   f"subjectAltName={','.join(san(n) for n in names)}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext))
    return Issued(ca_cert=ca_cert, fullchain=cert.read_text() + ca_cert.read_text(),
                  key=key.read_text())


def served_certificate(port: int, name: str, cafile: Path | str,
                       host: str = "127.0.0.1") -> tuple[bytes, str]:
    """(the certificate a TLS listener at host:port presents for `name`, the TLS
    version), verified against `cafile` alone."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True), tls.version()


def try_certificate(port: int, name: str, cafile: Path | str) -> bytes | None:
    """served_certificate's certificate, or None if the handshake fails."""
    try:
        return served_certificate(port, name, cafile)[0]
    except (OSError, ssl.SSLError):
        return None


def settled_certificate(port: int, name: str, cafile: Path | str,
                        other_than: bytes | None = None, timeout_s: float = 60) -> bytes:
    """The certificate every new connection gets (five in a row alike, and not
    `other_than`): after nginx reloads, its old workers, finishing their
    connections, may still take a new one for a moment."""
    def alike() -> bytes | None:
        got = {try_certificate(port, name, cafile) for _ in range(5)}
        return got.pop() if len(got) == 1 and None not in got and other_than not in got else None
    return wait_for(f"one certificate served on {port}", alike, timeout_s)
