"""The operator's TLS certificate and key (`tlsCertificate`, `tlsKey`), checked
before anything is deployed, with `cryptography` (no Pulumi import): the key is a
private key and matches the certificate, the chain is in order (each certificate
issued by the next), the leaf covers the names clients and other servers will
ask for, and it has not expired. Refusals are ConfigErrors naming the key;
`check` returns warnings (a certificate about to expire).
"""

from __future__ import annotations

import datetime
import ipaddress
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from components.plan.errors import ConfigError

EXPIRY_WARNING_DAYS = 14


def _covers(cert: x509.Certificate, host: str) -> bool:
    """Whether a client checking `host` accepts the certificate: its subjectAltName
    (RFC 6125; a wildcard stands for exactly the leftmost label). Common names are
    not read: browsers and Synapse's TLS client ignore them."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return address in san.get_values_for_type(x509.IPAddress)
    host = host.lower().rstrip(".")
    for name in san.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def required_names(public_base_url: str, server_name: str) -> tuple[list[str], str | None]:
    """(names the leaf must cover, a name it should cover). Clients use
    publicBaseUrl's host, and so does federation through the well-known nginx
    serves. A server name with a port is reached directly, without the well-known
    (spec, server discovery): nginx must then present a certificate for it. A
    server name without a port on another host is found through its
    /.well-known/matrix/server; if this nginx answers that, it needs that name too."""
    public = urlsplit(public_base_url).hostname or ""
    host, _, port = server_name.rpartition(":") if server_name.count(":") == 1 else (server_name, "", "")
    need = [public]
    if port and host.lower() != public.lower():
        need.append(host)
    maybe = host if not port and host.lower() != public.lower() else None
    return need, maybe


def acme_names(public_base_url: str, server_name: str) -> list[str]:
    """What an ACME certificate is requested for: the names clients and other
    servers ask this nginx for (`required_names`). A server name delegated
    through a well-known that another web server answers is not ours to prove."""
    return required_names(public_base_url, server_name)[0]


def check_ca_bundle(text: str, path: tuple) -> None:
    """A CA bundle (PEM certificates, nothing else) that cryptography reads."""
    try:
        certs = x509.load_pem_x509_certificates(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise ConfigError(path, f"is not readable PEM certificates ({e})") from None
    if len(certs) != text.count("-----BEGIN"):
        raise ConfigError(path, "must be PEM certificates only, no key or other block")


def check(certificate_pem: str, key_pem: str, public_base_url: str, server_name: str,
          now: datetime.datetime | None = None) -> list[str]:
    """Refuse bad TLS material (ConfigError naming the key); return warnings."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        chain = x509.load_pem_x509_certificates(certificate_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise ConfigError(("tlsCertificate",), f"is not a readable PEM certificate chain ({e})") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise ConfigError(("tlsKey",), "is not a readable unencrypted PEM private key") from None
    leaf = chain[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ConfigError(("tlsKey",), f"does not match the certificate {_subject(leaf)!r}: "
                                       "it is the key of another certificate")
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:])):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise ConfigError(("tlsCertificate",), (
                f"chain out of order: certificate {i + 1} ({_subject(cert)!r}) is not issued "
                f"by certificate {i + 2} ({_subject(issuer)!r}); give the server's certificate "
                "first, then each issuer in turn, as in fullchain.pem")) from None
    for cert in chain:
        if cert.not_valid_after_utc < now:
            raise ConfigError(("tlsCertificate",), f"{_subject(cert)!r} expired on "
                                                   f"{cert.not_valid_after_utc:%Y-%m-%d}")
        if cert.not_valid_before_utc > now:
            raise ConfigError(("tlsCertificate",), f"{_subject(cert)!r} is not valid before "
                                                   f"{cert.not_valid_before_utc:%Y-%m-%d}")
    need, maybe = required_names(public_base_url, server_name)
    for name in need:
        if not _covers(leaf, name):
            raise ConfigError(("tlsCertificate",), f"does not cover {name} (its subjectAltName "
                                                   "lacks it), which clients and other servers "
                                                   "will ask for")
    warnings = []
    if maybe and not _covers(leaf, maybe):
        warnings.append(f"tlsCertificate does not cover the server name {maybe}: fine if "
                        f"another web server answers https://{maybe}/.well-known/matrix/server, "
                        "not if this nginx does")
    left = leaf.not_valid_after_utc - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        warnings.append(f"tlsCertificate expires on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, "
                        f"in {left.days} days: renew it and `pulumi up` (a reload, not a restart)")
    return warnings
