"""Stack config -> typed, validated settings (no Pulumi import).

`load_settings(raw, stack=...)` takes the `synapse:*` keys of a stack (prefix
stripped, values already parsed from YAML/JSON) and returns frozen dataclasses, or
raises one ConfigError naming the offending key. Secrets are not read here: they
become Pulumi Outputs in secrets.py, so this module only checks their keys exist.
"""

from __future__ import annotations

import ipaddress
import re
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from components.plan import postgres_conf
from components.provider import model as provider_model
from components.plan import secret_keys
from components.plan import secret_options
from components.plan import tls_material
from components.plan import validators
from components.plan.errors import ConfigError
from components.plan.workers import (
    CLASS_NAMES, DEFAULT_PRESET, MAIN, PRESETS, STREAM_SINCE, STREAMS, WORKER_CLASSES,
    process_names, stream_exists, writer_problems,
)

# Default images: pinned official tags. Synapse >= 1.89 is needed for
# replication over UNIX sockets.
DEFAULT_IMAGES = {
    "synapse": "matrixdotorg/synapse:v1.163.2",
    "postgres": "postgres:15-bookworm",
    "redis": "redis:7.0-bookworm",
    "nginx": "nginx:1.22.1",
    # Debian bookworm's Prometheus (2.42), the one the stand-in image is built from.
    "prometheus": "prom/prometheus:v2.42.0",
    # nginx.tls: acme. The ACME client (render/acme_conf.py); Debian bookworm's
    # lego (4.9.1), the one the stand-in image is built from.
    "acme": "goacme/lego:v4.9.1",
}

# The guide's container size classes.
DEFAULT_SIZES = {
    "small": {"cpus": 1, "memoryMb": 512},
    "medium": {"cpus": 2, "memoryMb": 4096},
    "large": {"cpus": 4, "memoryMb": 8192},
}

DEFAULT_CONTAINER_SIZES = {
    "main": "medium",
    "postgres": "medium",
    "redis": "small",
    "nginx": "small",
    "prometheus": "small",
    "backup": "small",
    **{c.name: c.size for c in WORKER_CLASSES},
}

# Networks allowed to reach /_synapse/admin through the public listeners: none.
# Behind another proxy on the same host every client arrives from Docker's bridge
# gateway, a private address, so an allow-list of private ranges would open the
# admin API to the internet. The operator's way in is the admin listener,
# published on loopback only (nginx.adminPort, nginx.adminBindAddress).
DEFAULT_ADMIN_ALLOW: tuple[str, ...] = ()

# homeserver.yaml keys the topology owns; extraConfig may not set them, because a
# silent override would desynchronise workers, nginx and the containers.
ENFORCED_HOMESERVER_KEYS = frozenset(
    {
        "server_name", "public_baseurl", "listeners", "instance_map", "stream_writers",
        "database", "redis", "media_store_path", "log_config",
        "pid_file", "report_stats", "enable_metrics", "max_upload_size",
        "trusted_key_servers", "enable_media_repo",
        # Our secrets' files (secret_keys.SECRETS), and the in-line forms they replace.
        *secret_keys.synapse_options(),
        # synapse:federation
        "federation_custom_ca_list", "ip_range_whitelist", "federation_domain_whitelist",
        "federation_client_minimum_tls_version", "allow_public_rooms_over_federation",
        "allow_profile_lookup_over_federation",
        "worker_app", "worker_name", "worker_listeners", "worker_log_config",
        *{k for c in WORKER_CLASSES for k in c.duties},
    }
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_WORKERS_PER_CLASS = 64

_HOST = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}$")


def _freeze(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(d))


@dataclass(frozen=True)
class Images:
    synapse: str
    postgres: str
    redis: str
    nginx: str
    prometheus: str
    acme: str


@dataclass(frozen=True)
class Size:
    cpus: float
    memory_mb: int


@dataclass(frozen=True)
class NginxSettings:
    bind_address: str
    client_port: int  # host port published for nginx's listener on 8008
    federation_port: int  # host port published for nginx's listener on 8448
    admin_allow: tuple[str, ...]
    served_by_header: bool  # add a response header naming the process (nginx_conf.SERVED_BY_HEADER)
    # Proxies in front of nginx whose X-Forwarded-For is believed (nginx realip);
    # empty: the connecting address is the client.
    trusted_proxies: tuple[str, ...] = ()
    admin_port: int = 8009  # host port of the admin listener
    admin_bind_address: str = "127.0.0.1"
    tls: bool = False  # TLS on the client and federation listeners
    http_port: int = 80  # with tls: plain HTTP, redirected to HTTPS
    # `nginx.tls: acme`: certificates from an ACME server, obtained and renewed at
    # run time (render/acme_conf.py); None: the operator's tlsCertificate/tlsKey.
    acme: AcmeSettings | None = None

    @property
    def certificate_given(self) -> bool:
        """TLS with the operator's certificate (the tlsCertificate/tlsKey secrets)."""
        return self.tls and self.acme is None


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class AcmeSettings:
    """`synapse:nginx.acme`, with `nginx.tls: acme`."""
    email: str  # the ACME account's contact (expiry notices, policy changes)
    # What the certificate covers: tls_material.acme_names, then `extraNames`
    # (say, a delegated server name whose well-known this nginx answers).
    names: tuple[str, ...]
    directory: str = LETS_ENCRYPT
    # PEM certificates the client trusts for the directory's HTTPS (a private ACME
    # server); None: the image's system CAs.
    ca_bundle: str | None = None
    renew_days: int = 30  # renew when fewer days than this are left
    retry_seconds: int = 300  # after a failure; doubled on each failure, up to 6 h


@dataclass(frozen=True)
class MetricsSettings:
    """`synapse:metrics`: Prometheus scraping every Synapse process."""
    enabled: bool = True
    port: int = 9090  # host port of Prometheus's web UI and API, on loopback only
    scrape_interval_s: int = 15  # Synapse's Grafana dashboard's own (metrics-howto.md)
    retention_days: int = 15  # Prometheus's default


@dataclass(frozen=True)
class BackupSettings:
    """`synapse:backup`: the scheduled backup container (backup_conf.py). A run is
    due at every time t with (t - offset_s) % period_s == 0, in Unix seconds (UTC)."""
    enabled: bool = False
    schedule: str = "daily 03:00"  # as given: "daily HH:MM" or "every N{s,m,h,d}"
    period_s: int = 86400
    offset_s: int = 3 * 3600
    keep: int = 7  # the newest complete backups kept


BACKUP_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_BACKUP_PERIOD_S = 10
_DAILY = re.compile(r"daily ([01][0-9]|2[0-3]):([0-5][0-9])")
_EVERY = re.compile(r"every ([1-9][0-9]{0,5})([smhd])")


# Outbound federation TLS versions Synapse accepts
# (federation_client_minimum_tls_version, synapse/config/tls.py).
TLS_VERSIONS = ("1", "1.1", "1.2", "1.3")


@dataclass(frozen=True)
class FederationSettings:
    """`synapse:federation`: whom this server federates with, and how it trusts them."""
    # PEM of each extra CA trusted for outbound federation TLS, one certificate each
    # (federation_custom_ca_list); the system CAs are then no longer trusted.
    custom_ca_certificates: tuple[str, ...] = ()
    # Networks outbound requests may reach although ip_range_blacklist covers them.
    ip_range_whitelist: tuple[str, ...] = ()
    # Server names to federate with, and no others; None: any server.
    domain_whitelist: tuple[str, ...] | None = None
    # TLS 1.0 and 1.1 are deprecated (RFC 8996); Synapse's own default is "1".
    minimum_tls_version: str = "1.2"
    allow_public_rooms: bool = False  # other servers may read our room directory
    allow_profile_lookup: bool = True  # other servers may read our users' profiles


@dataclass(frozen=True)
class LogSettings:
    level: str
    days_kept: int


@dataclass(frozen=True)
class PostgresSettings:
    # `synapse:postgres.settings`, checked and in `postgres -c` form; on top of
    # the values tuned from the container's size (postgres_conf.tuned).
    overrides: Mapping[str, str]


TARGETS = ("docker", "swarm")
# Swarm placement: a constraint as `docker service create --constraint` takes it
# (docs: "Specify service constraints"), one attribute, == or !=, one value.
_CONSTRAINT = re.compile(
    r"^(node\.(id|hostname|role|platform\.os|platform\.arch)|(node|engine)\.labels\.[A-Za-z0-9_.-]+)"
    r"\s*(==|!=)\s*[^\s=!]+$")
# What holds data in a node-local volume, so must stay on one node: main and the
# media workers share the media store, Postgres its database, Prometheus its TSDB.
PINNED = ("main", "media", "postgres", "prometheus")
DATA_NODE = "node.labels.synapse.data == true"
# The Swarm services besides the Synapse processes, placed by the same table.
SWARM_SERVICES = ("postgres", "redis", "nginx", "prometheus")


@dataclass(frozen=True)
class SwarmSettings:
    """`synapse:swarm`, read when `synapse:target` is swarm: where each class of
    service may run (constraints, all of which a node must meet)."""
    placement: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: types.MappingProxyType({}))
    # Overlay traffic between nodes encrypted (IPsec): needs ESP in every node's kernel.
    encrypted: bool = False

    def constraints(self, service: str) -> tuple[str, ...]:
        return self.placement.get(service, ())


@dataclass(frozen=True)
class Settings:
    stack: str
    server_name: str
    public_base_url: str
    name_prefix: str  # prefix of every Docker object name
    preset: str  # the named worker layout `workers` started from (workers.PRESETS)
    workers: Mapping[str, int]  # the preset's counts, with synapse:workers applied
    images: Images
    nginx: NginxSettings
    log: LogSettings
    sizes: Mapping[str, Size]
    container_sizes: Mapping[str, str]
    max_upload_size_mb: int
    trusted_key_servers: tuple[str, ...]
    egress: bool  # Synapse containers may open outbound connections (federation)
    report_stats: bool
    extra_config: Mapping[str, Any]
    postgres: PostgresSettings = PostgresSettings(types.MappingProxyType({}))
    metrics: MetricsSettings = MetricsSettings()
    # Top-level keys of `synapse:secretConfig` (a Pulumi secret): only the names are
    # settings; the values stay secret Outputs (stack.py) and go to a secret file.
    secret_config_keys: tuple[str, ...] = ()
    # `synapse:streamWriters`: stream -> the processes that write it, in order,
    # replacing the table's and the preset's writers for that stream.
    stream_writers: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: types.MappingProxyType({}))
    # Healthcheck start_interval (s) for every container; 0: none. Docker 25+ only
    # (API 1.44): pulumi-docker's client refuses it on an older engine.
    healthcheck_start_interval_s: int = 0
    federation: FederationSettings = FederationSettings()
    backup: BackupSettings = BackupSettings()
    # `synapse:target`: one host's Docker engine, or a Docker Swarm cluster.
    target: str = "docker"
    swarm: SwarmSettings = SwarmSettings()


# --- small typed readers; each names the key path on error ---------------------


def _expect(value: Any, kind: type | tuple[type, ...], path: tuple, what: str) -> Any:
    # bool is an int in Python; a count of `true` is still a mistake.
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(path, f"must be {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(path, f"must be {what}, got {type(value).__name__} {value!r}")
    return value


def _mapping(raw: Mapping, key: str, path: tuple = ()) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if value is None:
        return {}
    return _expect(value, dict, path + (key,), "an object")


def _no_unknown(value: Mapping, allowed, path: tuple) -> None:
    for k in value:
        if k not in allowed:
            raise ConfigError(
                path + (k,), f"unknown key; expected one of: {', '.join(allowed)}"
            )


def _int(value: Any, path: tuple, lo: int, hi: int) -> int:
    _expect(value, int, path, "an integer")
    if not lo <= value <= hi:
        raise ConfigError(path, f"must be between {lo} and {hi}, got {value}")
    return value


def _port(value: Any, path: tuple) -> int:
    return _int(value, path, 1, 65535)


def _str(value: Any, path: tuple, check: Callable[[str], bool] | None = None,
         what: str = "a non-empty string") -> str:
    _expect(value, str, path, what)
    if not value.strip() or (check and not check(value)):
        raise ConfigError(path, f"must be {what}, got {value!r}")
    return value


def _is_server_name(v: str) -> bool:
    host, colon, port = v.rpartition(":") if v.count(":") == 1 else (v, "", "")
    if colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return False
    return bool(_HOST.match(host))


def _server_name(value: Any, path: tuple = ("serverName",)) -> str:
    return _str(value, path, _is_server_name, "a DNS name, optionally with :port")


def _base_url(value: Any) -> str:
    url = _str(value, ("publicBaseUrl",), what="an http(s) URL")
    problem = validators.http_url_problem(url)
    if problem:
        raise ConfigError(("publicBaseUrl",), f"must be an http(s) URL: {problem}, got {url!r}")
    return url if url.endswith("/") else url + "/"


# --- sections -----------------------------------------------------------------


def _preset(raw: Mapping) -> str:
    preset = raw.get("preset", DEFAULT_PRESET)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(("preset",), f"must be one of {', '.join(PRESETS)}, got {preset!r}")
    return preset


def _workers(raw: Mapping, preset: str) -> Mapping[str, int]:
    value = _mapping(raw, "workers")
    _no_unknown(value, CLASS_NAMES, ("workers",))
    # A class the preset does not name has no processes: adding a class to the
    # table leaves every preset complete.
    counts = {**dict.fromkeys(CLASS_NAMES, 0), **PRESETS[preset]}
    for name, count in value.items():
        counts[name] = _int(count, ("workers", name), 0, MAX_WORKERS_PER_CLASS)
    return _freeze(counts)


def _images(raw: Mapping) -> Images:
    value = _mapping(raw, "images")
    _no_unknown(value, tuple(DEFAULT_IMAGES), ("images",))
    merged = {**DEFAULT_IMAGES, **value}
    for k, v in merged.items():
        _str(v, ("images", k), what="an image reference")
        problem = validators.image_reference_problem(v)
        if problem:
            raise ConfigError(("images", k), f"{v!r} is not an image reference Docker accepts: "
                                             f"{problem}")
        problem = validators.synapse_version_problem(v) if k == "synapse" else None
        if problem:
            raise ConfigError(("images", k), problem)
    return Images(**merged)


def _cidr(value: Any, path: tuple) -> str:
    _str(value, path, what="a network in CIDR form")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError(path, f"must be a network in CIDR form, got {value!r}") from None


def _ip(value: Any, path: tuple) -> str:
    try:
        ipaddress.ip_address(_str(value, path, what="an IP address"))
    except ValueError:
        raise ConfigError(path, f"must be an IP address, got {value!r}") from None
    return value


def _nginx(raw: Mapping, base_url: str, server_name: str) -> NginxSettings:
    value = _mapping(raw, "nginx")
    path = ("nginx",)
    _no_unknown(value, ("bindAddress", "clientPort", "federationPort", "adminAllow",
                        "servedByHeader", "trustedProxies", "adminPort", "adminBindAddress",
                        "tls", "httpPort", "acme"), path)
    bind = _ip(value.get("bindAddress", "127.0.0.1"), path + ("bindAddress",))
    admin_bind = _ip(value.get("adminBindAddress", "127.0.0.1"), path + ("adminBindAddress",))
    mode = value.get("tls", False)
    if mode != "acme":
        _expect(mode, bool, path + ("tls",), "true, false or acme")
    tls = bool(mode)
    if "acme" in value and mode != "acme":
        raise ConfigError(path + ("acme",), "is read only with nginx.tls: acme")
    if tls and urlsplit(base_url).scheme != "https":
        raise ConfigError(path + ("tls",), f"needs an https publicBaseUrl (got {base_url}): "
                          "plain HTTP is redirected there")
    port = {key: _port(value.get(key, default), path + (key,))
            for key, default in (("clientPort", 8008), ("federationPort", 8448),
                                 ("adminPort", 8009), ("httpPort", 80))}
    # Every published port once: Docker refuses a host port bound twice. The
    # plain-HTTP redirect is published only with TLS.
    published: dict[int, str] = {}
    for key in ("clientPort", "federationPort", "adminPort", *(("httpPort",) if tls else ())):
        if port[key] in published:
            raise ConfigError(path + (key,), f"{port[key]} is already nginx.{published[port[key]]}")
        published[port[key]] = key
    allow = value.get("adminAllow", list(DEFAULT_ADMIN_ALLOW))
    _expect(allow, list, path + ("adminAllow",), "a list of networks")
    served_by = _expect(value.get("servedByHeader", False), bool,
                        path + ("servedByHeader",), "true or false")
    proxies = value.get("trustedProxies", [])
    _expect(proxies, list, path + ("trustedProxies",), "a list of networks")
    return NginxSettings(
        bind_address=bind,
        client_port=port["clientPort"],
        federation_port=port["federationPort"],
        admin_allow=tuple(_cidr(n, path + ("adminAllow", i)) for i, n in enumerate(allow)),
        served_by_header=served_by,
        trusted_proxies=tuple(_cidr(n, path + ("trustedProxies", i)) for i, n in enumerate(proxies)),
        admin_port=port["adminPort"],
        admin_bind_address=admin_bind,
        tls=tls,
        http_port=port["httpPort"],
        acme=_acme(value, base_url, server_name) if mode == "acme" else None,
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _acme(nginx: Mapping, base_url: str, server_name: str) -> AcmeSettings:
    value = _mapping(nginx, "acme", ("nginx",))
    path = ("nginx", "acme")
    _no_unknown(value, ("email", "directory", "caBundle", "renewDays", "retrySeconds",
                        "extraNames"), path)
    if "email" not in value:
        raise ConfigError(path + ("email",), "is required with nginx.tls: acme (the ACME "
                          "account's contact, for expiry notices)")
    email = _str(value["email"], path + ("email",), lambda v: bool(_EMAIL.match(v)),
                 "an e-mail address")
    directory = _str(value.get("directory", LETS_ENCRYPT), path + ("directory",),
                     lambda v: urlsplit(v).scheme == "https" and bool(urlsplit(v).hostname),
                     "an https URL (RFC 8555 serves ACME over HTTPS only)")
    bundle = value.get("caBundle")
    if bundle is not None:
        tls_material.check_ca_bundle(_str(bundle, path + ("caBundle",), what="PEM certificates"),
                                     path + ("caBundle",))
    extra = value.get("extraNames", [])
    _expect(extra, list, path + ("extraNames",), "a list of DNS names")
    names = tls_material.acme_names(base_url, server_name)
    for i, name in enumerate(extra):
        _str(name, path + ("extraNames", i), lambda v: bool(_HOST.match(v)) and not _is_ip(v),
             "a DNS name (not an IP address or a wildcard: HTTP-01 proves neither)")
        if name.lower() not in (n.lower() for n in names):
            names.append(name)
    for name in names:
        if _is_ip(name):
            raise ConfigError(("nginx", "tls"), f"acme needs DNS names, and {name} (from "
                              "publicBaseUrl or serverName) is an IP address: HTTP-01 "
                              "proves control of a name")
    return AcmeSettings(
        email=email,
        names=tuple(names),
        directory=directory,
        ca_bundle=bundle,
        renew_days=_int(value.get("renewDays", AcmeSettings.renew_days), path + ("renewDays",),
                        1, 365),
        retry_seconds=_int(value.get("retrySeconds", AcmeSettings.retry_seconds),
                           path + ("retrySeconds",), 1, 6 * 3600),
    )


def _metrics(raw: Mapping, nginx: NginxSettings) -> MetricsSettings:
    value = _mapping(raw, "metrics")
    path = ("metrics",)
    _no_unknown(value, ("enabled", "port", "scrapeIntervalSeconds", "retentionDays"), path)
    enabled = _expect(value.get("enabled", True), bool, path + ("enabled",), "true or false")
    port = _port(value.get("port", MetricsSettings.port), path + ("port",))
    # Prometheus publishes on loopback; nginx's ports on 0.0.0.0 (or loopback) would
    # take the same host port, which Docker refuses at start.
    nginx_ports = {"clientPort": nginx.client_port, "federationPort": nginx.federation_port,
                   "adminPort": nginx.admin_port, **({"httpPort": nginx.http_port} if nginx.tls else {})}
    for key, taken in nginx_ports.items():
        if enabled and port == taken:
            raise ConfigError(path + ("port",), f"{port} is already nginx.{key}")
    return MetricsSettings(
        enabled=enabled,
        port=port,
        scrape_interval_s=_int(value.get("scrapeIntervalSeconds", MetricsSettings.scrape_interval_s),
                               path + ("scrapeIntervalSeconds",), 1, 3600),
        retention_days=_int(value.get("retentionDays", MetricsSettings.retention_days),
                            path + ("retentionDays",), 1, 3650),
    )


def _backup(raw: Mapping) -> BackupSettings:
    value = _mapping(raw, "backup")
    path = ("backup",)
    _no_unknown(value, ("enabled", "schedule", "keep"), path)
    enabled = _expect(value.get("enabled", False), bool, path + ("enabled",), "true or false")
    schedule = _expect(value.get("schedule", BackupSettings.schedule), str, path + ("schedule",),
                       "a string")
    if m := _DAILY.fullmatch(schedule):
        period, offset = 86400, int(m.group(1)) * 3600 + int(m.group(2)) * 60
    elif m := _EVERY.fullmatch(schedule):
        period, offset = int(m.group(1)) * BACKUP_UNITS[m.group(2)], 0
    else:
        raise ConfigError(path + ("schedule",), f"must be 'daily HH:MM' (UTC) or 'every N' with "
                          f"a unit s, m, h or d (e.g. 'every 6h'), got {schedule!r}")
    if period < MIN_BACKUP_PERIOD_S:
        raise ConfigError(path + ("schedule",), f"runs at most every {MIN_BACKUP_PERIOD_S} s")
    return BackupSettings(enabled=enabled, schedule=schedule, period_s=period, offset_s=offset,
                          keep=_int(value.get("keep", BackupSettings.keep), path + ("keep",),
                                    1, 10000))


def _federation(raw: Mapping) -> FederationSettings:
    value = _mapping(raw, "federation")
    path = ("federation",)
    _no_unknown(value, ("customCaCertificates", "ipRangeWhitelist", "domainWhitelist",
                        "minimumTlsVersion", "allowPublicRooms", "allowProfileLookup"), path)
    cas = value.get("customCaCertificates", [])
    _expect(cas, list, path + ("customCaCertificates",), "a list of PEM CA certificates")
    certificates: list[str] = []
    for i, pem in enumerate(cas):
        at = path + ("customCaCertificates", i)
        found, problem = validators.ca_certificates(_str(pem, at, what="PEM text"))
        if problem:
            raise ConfigError(at, problem)
        certificates += [c for c in found if c not in certificates]
    ranges = value.get("ipRangeWhitelist", [])
    _expect(ranges, list, path + ("ipRangeWhitelist",), "a list of networks")
    domains = value.get("domainWhitelist")
    if domains is not None:
        _expect(domains, list, path + ("domainWhitelist",), "a list of server names")
        domains = tuple(_server_name(d, path + ("domainWhitelist", i)) for i, d in enumerate(domains))
    version = value.get("minimumTlsVersion", FederationSettings.minimum_tls_version)
    if not isinstance(version, str) or version not in TLS_VERSIONS:
        # A YAML 1.2 is a float: say to quote it.
        raise ConfigError(path + ("minimumTlsVersion",),
                          f"must be one of {', '.join(repr(v) for v in TLS_VERSIONS)} "
                          f"(quoted), got {version!r}")
    flag = lambda key, default: _expect(value.get(key, default), bool, path + (key,),  # noqa: E731
                                        "true or false")
    return FederationSettings(
        custom_ca_certificates=tuple(certificates),
        ip_range_whitelist=tuple(_cidr(n, path + ("ipRangeWhitelist", i))
                                 for i, n in enumerate(ranges)),
        domain_whitelist=domains,
        minimum_tls_version=version,
        allow_public_rooms=flag("allowPublicRooms", FederationSettings.allow_public_rooms),
        allow_profile_lookup=flag("allowProfileLookup", FederationSettings.allow_profile_lookup),
    )


def _log(raw: Mapping) -> LogSettings:
    value = _mapping(raw, "log")
    _no_unknown(value, ("level", "daysKept"), ("log",))
    level = value.get("level", "INFO")
    if level not in LOG_LEVELS:
        raise ConfigError(("log", "level"), f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return LogSettings(level=level, days_kept=_int(value.get("daysKept", 3), ("log", "daysKept"), 1, 3650))


def _sizes(raw: Mapping) -> Mapping[str, Size]:
    value = _mapping(raw, "sizes")
    out = {}
    for name, spec in {**DEFAULT_SIZES, **value}.items():
        path = ("sizes", name)
        _expect(spec, dict, path, "an object with cpus and memoryMb")
        # A built-in size given in part keeps its other default (`--set sizes.small.memoryMb=768`).
        spec = {**DEFAULT_SIZES.get(name, {}), **spec}
        _no_unknown(spec, ("cpus", "memoryMb"), path)
        cpus = _expect(spec.get("cpus"), (int, float), path + ("cpus",), "a number of CPUs")
        if not 0 < cpus <= 256:
            raise ConfigError(path + ("cpus",), f"must be between 0 and 256, got {cpus}")
        if not provider_model.cpus_is_fixed_point(cpus):
            raise ConfigError(path + ("cpus",),
                              f"{cpus} cannot be kept stable: the provider reads it back as "
                              f"{provider_model.cpus(cpus)!r} "
                              "and would replace the container on every update; use a value "
                              "such as 0.5, 1, 1.5 or 2")
        memory = _int(spec.get("memoryMb"), path + ("memoryMb",), 64, 1 << 20)
        out[name] = Size(cpus=float(cpus), memory_mb=memory)
    return _freeze(out)


def _container_sizes(raw: Mapping, sizes: Mapping[str, Size]) -> Mapping[str, str]:
    value = _mapping(raw, "containerSizes")
    _no_unknown(value, tuple(DEFAULT_CONTAINER_SIZES), ("containerSizes",))
    merged = {**DEFAULT_CONTAINER_SIZES, **value}
    for role, size in merged.items():
        if size not in sizes:
            raise ConfigError(("containerSizes", role),
                              f"unknown size {size!r}; defined sizes: {', '.join(sizes)}")
    return _freeze(merged)


def _postgres(raw: Mapping) -> PostgresSettings:
    value = _mapping(raw, "postgres")
    _no_unknown(value, ("settings",), ("postgres",))
    given = _mapping(value, "settings", ("postgres",))
    out = {}
    for name, v in given.items():
        try:
            out[name] = postgres_conf.check(name, v)
        except ValueError as e:
            raise ConfigError(("postgres", "settings", name), str(e)) from None
    return PostgresSettings(_freeze(out))


def _extra_config(raw: Mapping) -> Mapping[str, Any]:
    value = _mapping(raw, "extraConfig")
    for key in value:
        if key in ENFORCED_HOMESERVER_KEYS:
            raise ConfigError(("extraConfig", key),
                              "is managed by this program (topology, secrets or sockets); "
                              "use the dedicated stack setting instead")
    found = secret_options.find(value)
    if found:
        # extraConfig lands in the plain homeserver.yaml, which previews print.
        path, why = found
        raise ConfigError(("extraConfig", *path),
                          f"holds a secret ({why}); put the whole {path[0]!r} section in "
                          "synapse:secretConfig (pulumi config set --secret --path "
                          f"'synapse:secretConfig.{path[0]}...'), which goes to its own "
                          "0400 file, not the plain homeserver.yaml")
    return _freeze(value)


def _secret_config(raw: Mapping, extra: Mapping[str, Any]) -> tuple[str, ...]:
    """Synapse reads the secret config file after homeserver.yaml and merges config
    files key by key at the top level (synapse/config/_base.py read_config_files):
    a key in both would silently drop the plain one, so a section lives in one."""
    value = _mapping(raw, "secretConfig")
    for key in value:
        if key in ENFORCED_HOMESERVER_KEYS:
            raise ConfigError(("secretConfig", key),
                              "is managed by this program (topology, secrets or sockets)")
        if key in extra:
            raise ConfigError(("secretConfig", key),
                              "is also set in synapse:extraConfig; Synapse merges config files "
                              "key by key at the top level, so put the whole section in one")
    return tuple(value)


def _stream_writers(raw: Mapping, workers: Mapping[str, int],
                    synapse_image: str) -> Mapping[str, tuple[str, ...]]:
    """`synapse:streamWriters.<stream>`: a process name or a list of them ("main",
    "client_sync2", ...), checked against Synapse 1.163's rules, and only for a
    stream the configured Synapse has (workers.STREAM_SINCE)."""
    value = _mapping(raw, "streamWriters")
    _no_unknown(value, STREAMS, ("streamWriters",))
    version = validators.synapse_version(synapse_image)
    for stream in value:
        if not stream_exists(stream, version):
            since = STREAM_SINCE[stream]
            raise ConfigError(("streamWriters", stream),
                              f"images.synapse is Synapse {version[0]}.{version[1]}, which has no "
                              f"{stream} stream (new in {since[0]}.{since[1]}): leave it out, or "
                              "use a newer image")
    names = process_names(workers)
    class_of = {MAIN: MAIN, **{n: c for c, ns in names.items() for n in ns}}
    out: dict[str, tuple[str, ...]] = {}
    for stream, given in value.items():
        path = ("streamWriters", stream)
        listed = [given] if isinstance(given, str) else given
        _expect(listed, list, path, "a process name or a list of them")
        for i, name in enumerate(listed):
            _str(name, path + (i,))
        problems = writer_problems(stream, listed, class_of, names)
        if problems:
            at, reason = problems[0]
            raise ConfigError(path if at is None else path + (at,), reason)
        seen = list(listed)
        out[stream] = tuple(seen)
    return _freeze(out)


def _target(raw: Mapping) -> str:
    target = raw.get("target", "docker")
    if target not in TARGETS:
        raise ConfigError(("target",), f"must be one of {', '.join(TARGETS)}, got {target!r}")
    return target


def _swarm(raw: Mapping, target: str, backup: BackupSettings, nginx: NginxSettings
           ) -> SwarmSettings:
    value = _mapping(raw, "swarm")
    path = ("swarm",)
    if value and target != "swarm":
        raise ConfigError(path, "is read only with target: swarm (this stack's target is "
                                f"{target})")
    if target != "swarm":
        return SwarmSettings()
    if backup.enabled:
        raise ConfigError(("backup", "enabled"), "the scheduled backup container is not "
                          "available on target swarm yet (it reads Postgres' socket and the "
                          "media volume on one host); take backups on the data node")
    if nginx.acme:
        raise ConfigError(("nginx", "tls"), "acme is not available on target swarm yet (its "
                          "client shares volumes with nginx on one host): give tlsCertificate "
                          "and tlsKey with nginx.tls: true")
    if nginx.bind_address != "0.0.0.0":
        raise ConfigError(("nginx", "bindAddress"), "must be 0.0.0.0 on target swarm: a Swarm "
                          "publishes a port on every address of the node its task runs on (host "
                          "mode); let that node's firewall choose who reaches it")
    _no_unknown(value, ("placement", "encrypted"), path)
    encrypted = _expect(value.get("encrypted", False), bool, path + ("encrypted",), "true or false")
    given = _mapping(value, "placement", path)
    services = (MAIN, *CLASS_NAMES, *SWARM_SERVICES)
    _no_unknown(given, services, path + ("placement",))
    placement = {name: (DATA_NODE,) for name in (*PINNED, "redis", "nginx")}
    for name, constraints in given.items():
        at = path + ("placement", name)
        listed = [constraints] if isinstance(constraints, str) else constraints
        _expect(listed, list, at, "a constraint or a list of them")
        for i, c in enumerate(listed):
            _str(c, at + (i,), lambda v: bool(_CONSTRAINT.match(v.strip())),
                 "a Swarm constraint such as 'node.labels.synapse.data == true' or "
                 "'node.hostname == host1'")
        placement[name] = tuple(c.strip() for c in listed)
    for name in PINNED:
        if not placement[name]:
            raise ConfigError(path + ("placement", name),
                              f"{name} keeps its data in a volume on one node: give a constraint "
                              "that names that node (a label or node.hostname)")
    if placement["media"] != placement["main"]:
        raise ConfigError(path + ("placement", "media"),
                          "must equal swarm.placement.main: the media workers and main share "
                          "the media store, a volume on one node")
    return SwarmSettings(placement=_freeze(placement), encrypted=encrypted)


KNOWN_KEYS = (
    "serverName", "publicBaseUrl", "namePrefix", "preset", "workers", "images", "nginx", "log",
    "sizes", "containerSizes", "maxUploadSizeMb", "trustedKeyServers", "egress",
    "reportStats", "extraConfig", "secretConfig", "postgres", "streamWriters",
    "metrics", "healthcheckStartInterval", "federation", "backup", "target", "swarm",
    *secret_keys.KEYS,
)


def load_settings(raw: Mapping[str, Any], stack: str) -> Settings:
    """Validate the stack's `synapse:*` config (keys without the prefix)."""
    _no_unknown(raw, KNOWN_KEYS, ())
    if raw.get("serverName") in (None, ""):
        raise ConfigError(("serverName",), "is required (the Matrix server name, e.g. example.org)")
    server_name = _server_name(raw["serverName"])
    base_url = _base_url(raw.get("publicBaseUrl", f"https://{server_name}/"))
    prefix = _str(raw.get("namePrefix", f"synapse-{stack}"), ("namePrefix",),
                  lambda s: bool(_PREFIX.match(s)),
                  "lowercase letters, digits, '.', '_' or '-' (at most 41)")
    sizes = _sizes(raw)
    preset = _preset(raw)
    keys = raw.get("trustedKeyServers", ["matrix.org"])
    _expect(keys, list, ("trustedKeyServers",), "a list of server names")
    workers = _workers(raw, preset)
    nginx = _nginx(raw, base_url, server_name)
    images = _images(raw)
    backup = _backup(raw)
    target = _target(raw)
    return Settings(
        stack=stack,
        server_name=server_name,
        public_base_url=base_url,
        name_prefix=prefix,
        preset=preset,
        workers=workers,
        images=images,
        nginx=nginx,
        log=_log(raw),
        sizes=sizes,
        container_sizes=_container_sizes(raw, sizes),
        max_upload_size_mb=_int(raw.get("maxUploadSizeMb", 50), ("maxUploadSizeMb",), 1, 1 << 16),
        trusted_key_servers=tuple(
            _str(k, ("trustedKeyServers", i), lambda s: bool(_HOST.match(s)), "a server name")
            for i, k in enumerate(keys)
        ),
        egress=_expect(raw.get("egress", True), bool, ("egress",), "true or false"),
        report_stats=_expect(raw.get("reportStats", False), bool, ("reportStats",), "true or false"),
        extra_config=_extra_config(raw),
        postgres=_postgres(raw),
        metrics=_metrics(raw, nginx),
        secret_config_keys=_secret_config(raw, raw.get("extraConfig") or {}),
        stream_writers=_stream_writers(raw, workers, images.synapse),
        healthcheck_start_interval_s=_int(raw.get("healthcheckStartInterval", 0),
                                          ("healthcheckStartInterval",), 0, 60),
        federation=_federation(raw),
        backup=backup,
        target=target,
        swarm=_swarm(raw, target, backup, nginx),
    )


_SIGNING_KEY = re.compile(r"^ed25519 a_[A-Za-z0-9_]{1,32} [A-Za-z0-9+/]{43}=?$")
MIN_SECRET_LENGTH = 16
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*[A-Za-z0-9+/=\s]+?-----END \1-----")
_PRIVATE_KEY_KINDS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


def _pem_kinds(text: str) -> list[str] | None:
    """The kinds of the PEM blocks `text` consists of, or None if anything else is
    in it."""
    blocks = list(_PEM_BLOCK.finditer(text))
    if _PEM_BLOCK.sub("", text).strip():
        return None
    return [b.group(1) for b in blocks]


def check_secret_overrides(values: Mapping[str, Any]) -> None:
    """Check secrets the operator set with `pulumi config set --secret`; the error
    never echoes the value."""
    for key, value in values.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError((key,), "must be a string")
        check = secret_keys.BY_KEY[key].check
        if check == secret_keys.KEY_FILE:
            if not _SIGNING_KEY.match(value.strip()):
                raise ConfigError((key,), "must be one line 'ed25519 a_<id> <unpadded base64 "
                                  "of 32 bytes>', as in a Synapse .signing.key file")
        elif check == secret_keys.CERTIFICATES:
            kinds = _pem_kinds(value)
            if not kinds or set(kinds) != {"CERTIFICATE"}:
                raise ConfigError((key,), "must be PEM certificates only (the server's "
                                  "certificate first, then its chain), as in fullchain.pem")
        elif check == secret_keys.PRIVATE_KEY:
            if _pem_kinds(value) not in ([k] for k in _PRIVATE_KEY_KINDS):
                raise ConfigError((key,), "must be one unencrypted PEM private key, as in "
                                  "privkey.pem")
        elif len(value) < MIN_SECRET_LENGTH:
            raise ConfigError((key,), f"must be at least {MIN_SECRET_LENGTH} characters")


def check_required_secrets(settings: Settings, given: set[str]) -> None:
    """Secrets that cannot be generated must be set when a setting needs them."""
    if settings.backup.enabled and "backupPassphrase" not in given:
        raise ConfigError(("backupPassphrase",), "is required when backup.enabled is true (the "
                          "backups' secrets are encrypted with it; a restore asks for it): "
                          "pulumi config set --secret synapse:backupPassphrase")
    for key in (s.key for s in secret_keys.for_readers(secret_keys.NGINX)):
        if settings.nginx.acme and key in given:
            raise ConfigError((key,), "is not used with nginx.tls: acme (the ACME server "
                              f"issues the certificate): pulumi config rm synapse:{key}")
        if settings.nginx.certificate_given:
            if key not in given:
                raise ConfigError((key,), "is required when nginx.tls is true: "
                                  f"pulumi config set --secret synapse:{key} < FILE.pem")
