"""Plan -> Synapse's files: homeserver.yaml, one file per worker, one log config per
class (no Pulumi import; YAML is built as data and dumped with PyYAML).

homeserver.yaml is merged from three layers, like ess-helm's numbered files:
  1. DEFAULTS: sane values an operator may override with `synapse:extraConfig`;
  2. `synapse:extraConfig`, deep-merged over the defaults;
  3. enforced: what the topology, sockets and secrets dictate (extraConfig may not
     set these keys: settings.ENFORCED_HOMESERVER_KEYS).
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from components.plan.postgres_conf import DB_POOL_MIN
from components.plan import secret_keys
from components.plan.topology import (
    DB_POOL_MAX,
    postgres_host,
    redis_endpoint,
    Plan,
    Process,
)
from components.plan.workers import MAIN

CONFIG_DIR = secret_keys.CONFIG_DIR  # rendered files, uploaded into each container
SECRETS_DIR = secret_keys.SECRETS_DIR  # one file per secret, 0400, the Synapse user's (start.sh)
DATA_DIR = "/data"  # per-process volume: logs
MEDIA_DIR = "/media"  # shared media store volume
HOMESERVER_PATH = f"{CONFIG_DIR}/homeserver.yaml"
SYNAPSE_MAIN_INSTANCE = "master"  # main's instance name inside Synapse
MAIN_CONFIG_PATH = f"{CONFIG_DIR}/main.yaml"  # what only main reads
SECRET_CONFIG_PATH = f"{SECRETS_DIR}/config.yaml"  # the operator's synapse:secretConfig
FEDERATION_CA_DIR = f"{CONFIG_DIR}/federation-ca"  # synapse:federation.customCaCertificates
PGPASS_PATH = f"{SECRETS_DIR}/pgpass"
# What a running process re-reads: the live-config container publishes it into a
# volume every process mounts here, and a change is a SIGHUP, not a new container
# (containers.py). Synapse re-reads its log config on SIGHUP
# (synapse/config/logger.py: setup_logging registers _reload_logging_config).
LIVE_CONFIG_DIR = f"{CONFIG_DIR}/live"
# The homeserver.yaml sections Synapse re-reads on SIGHUP, in a config file of their
# own that every process reads after homeserver.yaml: `caches`, which
# synapse/app/_base.py reload_cache_config reads again from the config files
# (RootConfig.reload_config_section) and applies by resizing every cache.
# event_cache_size, which it does not apply, stays in homeserver.yaml.
RELOADABLE_SECTIONS = ("caches",)
RELOADABLE_PATH = f"{LIVE_CONFIG_DIR}/reloadable.yaml"

POSTGRES_DB = "synapse"
POSTGRES_USER = "synapse"


# Synapse's secret files, from the one table (secret_keys.SECRETS): every process's,
# and main's alone.
SYNAPSE_SECRETS = secret_keys.for_readers(secret_keys.SYNAPSE, secret_keys.MAIN)
PLACEHOLDERS = secret_keys.PLACEHOLDERS


DEFAULTS: Mapping[str, Any] = {
    "enable_registration": False,
    "allow_guest_access": False,
    "suppress_key_server_warning": True,
    "url_preview_enabled": False,
    "presence": {"enabled": True},
    "user_directory": {"enabled": True, "search_all_users": False},
    # The guide's back-off for dead federation peers.
    "federation": {
        "destination_min_retry_interval": "1m",
        "destination_retry_multiplier": 5,
        "destination_max_retry_interval": "365d",
    },
    "event_cache_size": "30K",
    "caches": {"global_factor": 1.0, "expire_caches": True, "cache_entry_ttl": "1080m"},
}


def log_config_path(worker_class: str) -> str:
    return f"{LIVE_CONFIG_DIR}/log/{worker_class}.log.config"


def loaded_marker(process: str) -> str:
    """Where a process's reload watcher records the log config it has loaded."""
    return f"{LIVE_CONFIG_DIR}/loaded/{process}"


def worker_config_path(name: str) -> str:
    return f"{CONFIG_DIR}/workers/{name}.yaml"


def log_file_path(worker_class: str) -> str:
    return f"{DATA_DIR}/log/{worker_class}.log"


def federation_ca_files(plan: Plan) -> dict[str, str]:
    """One file per extra federation CA: Synapse loads one certificate per file
    (synapse/config/tls.py, Certificate.loadPEM)."""
    return {f"{FEDERATION_CA_DIR}/ca-{i}.pem": pem
            for i, pem in enumerate(plan.settings.federation.custom_ca_certificates)}


def _federation(plan: Plan) -> dict[str, Any]:
    """synapse:federation as Synapse's options (synapse/config/federation.py,
    tls.py, server.py)."""
    f = plan.settings.federation
    out: dict[str, Any] = {
        "federation_client_minimum_tls_version": f.minimum_tls_version,
        "allow_public_rooms_over_federation": f.allow_public_rooms,
        "allow_profile_lookup_over_federation": f.allow_profile_lookup,
    }
    if f.custom_ca_certificates:
        # Replaces the system's trust store for outbound federation (tls.py).
        out["federation_custom_ca_list"] = list(federation_ca_files(plan))
    if f.ip_range_whitelist:
        out["ip_range_whitelist"] = list(f.ip_range_whitelist)
    if f.domain_whitelist is not None:
        out["federation_domain_whitelist"] = list(f.domain_whitelist)
    return out


def dump(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _listeners(p: Process) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if p.replication:
        out.append({
            **p.replication.listener,
            "type": "http",
            "resources": [{"names": ["replication"], "compress": False}],
        })
    if p.inbound:
        out.append({
            **p.inbound.listener,
            "type": "http",
            "x_forwarded": True,  # nginx sets X-Forwarded-For
            "resources": [{"names": list(p.inbound_resources), "compress": False}],
        })
    if p.metrics_port:
        # TCP: Synapse refuses a metrics listener on a UNIX socket ("Can not use a
        # unix socket for metrics at this time": synapse/app/homeserver.py,
        # generic_worker.py). On the backend network, internal and never
        # published: Prometheus scrapes it there by container name.
        out.append({"type": "metrics", "port": p.metrics_port, "bind_addresses": ["0.0.0.0"]})
    return out


def homeserver_dict(plan: Plan) -> dict[str, Any]:
    """homeserver.yaml, shared by every process. It holds no secret: each is a
    `*_path` option naming its file, so a preview can show this file's diff."""
    s = plan.settings
    enforced: dict[str, Any] = {
        "server_name": s.server_name,
        "public_baseurl": s.public_base_url,
        "report_stats": s.report_stats,
        "log_config": log_config_path(MAIN),
        "media_store_path": MEDIA_DIR,
        "max_upload_size": f"{s.max_upload_size_mb}M",
        "enable_metrics": s.metrics.enabled,
        "trusted_key_servers": [{"server_name": k} for k in s.trusted_key_servers],
        "database": {
            "name": "psycopg2",
            "args": {
                "user": POSTGRES_USER,
                # libpq's password file (psycopg2 passes args through to libpq).
                "passfile": PGPASS_PATH,
                "dbname": POSTGRES_DB,
                "host": postgres_host(s),
                "cp_min": DB_POOL_MIN,
                "cp_max": DB_POOL_MAX,
            },
        },
        "redis": {"enabled": True, **redis_endpoint(s).instance},
        "listeners": _listeners(plan.main),
        "instance_map": {name: e.instance for name, e in plan.instance_map.items()},
        # Main is "main" in instance_map but its instance name is "master"
        # (MAIN_PROCESS_INSTANCE_NAME, synapse/config/workers.py), which is what
        # stream_writers compares with hs.get_instance_name().
        "stream_writers": {k: [SYNAPSE_MAIN_INSTANCE if n == MAIN else n for n in v]
                           for k, v in plan.stream_writers.items()},
        **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in plan.duties.items()},
        **_federation(plan),
        **{f.option: f.path for f in SYNAPSE_SECRETS if f.readers == secret_keys.SYNAPSE},
    }
    # Server identity first for readers, then defaults and extraConfig, then topology;
    # the reloadable sections go to their own file (reloadable_dict).
    head = {k: enforced.pop(k) for k in ("server_name", "public_baseurl", "report_stats")}
    operator = {k: v for k, v in _operator_layers(plan).items() if k not in RELOADABLE_SECTIONS}
    return {**head, **operator, **enforced}


def _operator_layers(plan: Plan) -> dict[str, Any]:
    """The defaults with extraConfig merged in. A default section the operator
    moved into secretConfig is theirs wholesale."""
    s = plan.settings
    defaults = {k: v for k, v in DEFAULTS.items() if k not in s.secret_config_keys}
    return deep_merge(defaults, s.extra_config)


def reloadable_dict(plan: Plan) -> dict[str, Any]:
    """RELOADABLE_PATH: the sections a running process re-reads on SIGHUP."""
    layers = _operator_layers(plan)
    return {k: layers[k] for k in RELOADABLE_SECTIONS if k in layers}


def render_reloadable(plan: Plan) -> str:
    return dump(reloadable_dict(plan))


def render_homeserver(plan: Plan) -> str:
    return dump(homeserver_dict(plan))


def main_config_dict() -> dict[str, Any]:
    """Read by main after homeserver.yaml: the secrets only main needs."""
    return {f.option: f.path for f in SYNAPSE_SECRETS if f.readers == secret_keys.MAIN}


def render_main_config() -> str:
    return dump(main_config_dict())


def render_secret(key: str, secrets: Mapping[str, Any]) -> str:
    return str(secrets[key]).strip() + "\n"


def render_pgpass(secrets: Mapping[str, Any]) -> str:
    """libpq's password file: host:port:database:user:password (':' and '\\'
    escaped); any host and port, since Synapse connects over the socket."""
    password = str(secrets["postgresPassword"]).replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:{POSTGRES_DB}:{POSTGRES_USER}:{password}\n"


def render_secret_config(secrets: Mapping[str, Any]) -> str:
    """The operator's `synapse:secretConfig`: Synapse reads it last; it merges
    config files key by key at the top level (settings refuse overlaps)."""
    value = secrets["secretConfig"]
    return value if isinstance(value, str) else dump(value)


def worker_dict(p: Process) -> dict[str, Any]:
    return {
        "worker_app": p.app,
        "worker_name": p.name,
        "worker_log_config": log_config_path(p.worker_class),
        "worker_listeners": _listeners(p),
    }


def render_worker(p: Process) -> str:
    return dump(worker_dict(p))


def log_config_dict(plan: Plan, worker_class: str) -> dict[str, Any]:
    """The guide's log config: buffered writes to a daily-rotated file, N days kept,
    plus the console so `docker logs` shows the same lines."""
    level = plan.settings.log.level
    handlers = ["buffer", "console"]
    quiet = ("synapse.metrics", "synapse.replication.tcp", "synapse.util.caches.lrucache", "twisted")
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - "
                "%(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.TimedRotatingFileHandler",
                "formatter": "precise",
                "filename": log_file_path(worker_class),
                "when": "midnight",
                "backupCount": plan.settings.log.days_kept,
                "encoding": "utf8",
            },
            # Flush every 5 s or on WARNING (30) and above, to spare disk I/O.
            "buffer": {
                "class": "synapse.logging.handlers.PeriodicallyFlushingMemoryHandler",
                "target": "file",
                "capacity": 10,
                "flushLevel": 30,
                "period": 5,
            },
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "precise",
            },
        },
        "loggers": {
            **{name: {"level": "WARNING"} for name in quiet},
            "synapse": {"level": level},
        },
        "root": {"level": level, "handlers": handlers},
        "disable_existing_loggers": False,
    }


def render_log_config(plan: Plan, worker_class: str) -> str:
    return dump(log_config_dict(plan, worker_class))
