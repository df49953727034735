"""A throwaway certificate authority for the TLS tests, made with the host's
openssl: a CA, and a server certificate it signs for the names and addresses the
tests connect to."""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path


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
