"""Checks of single values that Docker or Synapse would refuse later, or worse,
accept and misread: image references, the Synapse version an image tag names, and
the public base URL. Each returns None for a good value, or the reason it is bad
(a phrase that never echoes a secret). Pure; settings.py turns a reason into a
ConfigError naming the key.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# --- image references ---------------------------------------------------------
# The grammar of github.com/distribution/reference (the parser Docker and the
# Docker provider use for image names), transcribed from regexp.go at
# 0965666a6ade2e06035fe352e38344be1e68951a; names as there. Go's \w is ASCII,
# hence re.ASCII.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{32,}"
_IDENTIFIER = r"[a-f0-9]{64}"
_IPV6_ADDRESS = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + r"(?:\." + _DOMAIN_NAME_COMPONENT + r")*"
_HOST = r"(?:" + _DOMAIN_NAME + "|" + _IPV6_ADDRESS + ")"
_DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + "/)?" + _REMOTE_NAME
_REFERENCE = re.compile(r"(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?", re.ASCII)
_ANCHORED_NAME = re.compile(r"(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")", re.ASCII)
_ANCHORED_TAG = re.compile(_TAG, re.ASCII)
_ANCHORED_IDENTIFIER = re.compile(_IDENTIFIER)
# reference.go: RepositoryNameTotalLengthMax, the path without the domain.
_NAME_MAX = 255
# Digest algorithms Docker registers, each lowercase hex of twice its size in bytes
# (github.com/opencontainers/go-digest algorithm.go: SHA256, SHA384, SHA512; Validate).
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def _split_docker_domain(name: str) -> tuple[str, str]:
    """distribution/reference normalize.go splitDockerDomain: which part of a
    familiar name is the registry."""
    maybe_domain, slash, rest = name.partition("/")
    if not slash:
        return "docker.io", "library/" + name
    if (maybe_domain == "localhost" or any(c in maybe_domain for c in ".:")
            or maybe_domain.lower() != maybe_domain):
        return ("docker.io" if maybe_domain == "index.docker.io" else maybe_domain), rest
    return "docker.io", name


def image_reference_problem(ref: str) -> str | None:
    """Why Docker would refuse `ref` (ParseNormalizedNamed, then the digest's
    algorithm and length), or None."""
    if _ANCHORED_IDENTIFIER.fullmatch(ref):
        return "a 64-character hexadecimal string is an image ID, not a repository name"
    domain, remainder = _split_docker_domain(ref)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        return f"the repository name {remote.split('@')[0]!r} must be lowercase"
    m = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if not m:
        return _diagnose(ref)
    path = _ANCHORED_NAME.fullmatch(m.group(1)).group(2)
    if len(path) > _NAME_MAX:
        return f"the repository name is longer than {_NAME_MAX} characters"
    if m.group(3):
        algorithm, _, encoded = m.group(3).partition(":")
        size = _DIGEST_HEX.get(algorithm)
        if size is None:
            return f"digest algorithm {algorithm!r} is not one Docker knows (sha256, sha384, sha512)"
        if len(encoded) != size or not re.fullmatch(r"[a-f0-9]+", encoded):
            return f"a {algorithm} digest is {size} lowercase hexadecimal digits"
    return None


def _diagnose(ref: str) -> str:
    """Which part of a reference the grammar refused, in words."""
    rest, at, digest = ref.partition("@")
    if at and not re.fullmatch(_DIGEST, digest, re.ASCII):
        return "the digest must be <algorithm>:<hex digits>, e.g. sha256: and 64 hex digits"
    _, colon, tag = rest.rpartition(":")
    if colon and "/" not in tag and not _ANCHORED_TAG.fullmatch(tag):
        return ("the tag must be 1 to 128 letters, digits, '_', '.' or '-', "
                "not starting with '.' or '-'")
    return ("the name must be [registry[:port]/]path, each path component lowercase "
            "letters and digits joined by '.', '_', '__' or '-'")


# --- the Synapse version an image tag names -----------------------------------
# Every secret reaches Synapse as a `*_path` option (secret_keys.SECRETS):
# form_secret_path and worker_replication_secret_path are new in Synapse 1.126.0
# (element-hq/synapse v1.126.0 release notes; PR #18191). Replication over UNIX
# sockets (instance_map `path`) needs 1.89. So 1.126 is the floor.
MIN_SYNAPSE = (1, 126)
_VERSION_TAG = re.compile(r"(?:release-)?v?(\d+)\.(\d+)(?:\.\d+)?(?:rc\d+)?(?:[-_.+].*)?", re.ASCII)


def image_tag(ref: str) -> str | None:
    """An image reference's tag (`v1.163.2` of `matrixdotorg/synapse:v1.163.2`);
    None for a reference without one (a registry port is not a tag)."""
    _name, colon, tag = ref.partition("@")[0].rpartition(":")
    return tag if colon and "/" not in tag else None


def synapse_version(ref: str) -> tuple[int, int] | None:
    """The (major, minor) a Synapse image's tag names; None for `latest`,
    `develop`, a digest alone or a tag that names no version."""
    tag = image_tag(ref)
    if tag is None:
        return None
    m = _VERSION_TAG.fullmatch(tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def synapse_version_problem(ref: str) -> str | None:
    """Why the tag of a Synapse image names a version this program cannot run, or
    None: `latest`, `develop`, a digest alone or a tag that names no version pass."""
    version = synapse_version(ref)
    if version is None:
        return None
    tag = image_tag(ref)
    if version >= MIN_SYNAPSE:
        return None
    return (f"tag {tag!r} is Synapse {version[0]}.{version[1]}; this program needs Synapse "
            f">= {MIN_SYNAPSE[0]}.{MIN_SYNAPSE[1]} (secrets are read from *_path options: "
            "form_secret_path and worker_replication_secret_path are new in 1.126; "
            "replication over UNIX sockets needs 1.89)")


# --- URLs ---------------------------------------------------------------------
_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", re.ASCII)
# RFC 3986 path characters: unreserved, sub-delims, ':', '@', '/' and %XX escapes.
_URL_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*", re.ASCII)


def http_url_problem(url: str) -> str | None:
    """Why `url` is not a plain http(s) base URL (scheme, host, optional port and
    path; no user info, query or fragment), or None."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "it contains a space or a control character"
    # Checked on the text: urlsplit drops an empty query or fragment.
    if "?" in url:
        return "a base URL has no query ('?')"
    if "#" in url:
        return "a base URL has no fragment ('#')"
    try:
        parts = urlsplit(url)
    except ValueError:  # a bad or unbalanced [IPv6] host
        return "the host in [ ] is not an IPv6 address"
    if parts.scheme.lower() not in ("http", "https") or url[len(parts.scheme):][:3] != "://":
        return "the scheme must be http:// or https://"
    if "@" in parts.netloc:
        return "a base URL has no user info ('user:password@')"
    host, colon, port = parts.netloc.rpartition(":") if not parts.netloc.endswith("]") \
        else (parts.netloc, "", "")
    if not colon:
        host = port if not host else host
        port = ""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host!r} is not an IPv6 address in brackets"
    elif not host:
        return "it has no host"
    elif not _DNS_NAME.fullmatch(host):
        return f"the host {host!r} is not a DNS name or an IP address"
    if colon and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"the port {port!r} is not a number between 1 and 65535"
    if not _URL_PATH.fullmatch(parts.path):
        return "the path holds characters a URL must escape (or a bad % escape)"
    return None


# --- CA certificates ----------------------------------------------------------


def ca_certificates(pem: str, now=None) -> tuple[list[str], str | None]:
    """The certificates in a PEM bundle, each re-encoded on its own (Synapse's
    federation_custom_ca_list reads one certificate per file: synapse/config/tls.py
    loads each with Certificate.loadPEM), or the reason the bundle is refused.
    Parsed with `cryptography`, never by hand."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    blocks = re.findall(r"-----BEGIN ([A-Z0-9 ]+)-----", pem)
    if not blocks:
        return [], "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    if set(blocks) != {"CERTIFICATE"}:
        return [], f"holds a {sorted(set(blocks) - {'CERTIFICATE'})[0]} block; only certificates belong here"
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        return [], f"is not a readable PEM certificate ({e})"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    out = []
    for cert in certs:
        subject = cert.subject.rfc4514_string() or "(no subject)"
        if cert.not_valid_after_utc < now:
            return [], f"certificate {subject!r} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is not None and not constraints.ca:
            return [], (f"certificate {subject!r} is not a CA certificate (basicConstraints "
                        "CA:FALSE); give the CA that signed the peers' certificates")
        out.append(cert.public_bytes(Encoding.PEM).decode("ascii"))
    return out, None
