"""Postgres' settings: tuned from its container's size the way the guide's
Postgres page does, overridable per stack (`synapse:postgres.settings`), and
checked against Postgres 15's own rules before anything is deployed (no IO, no
Pulumi import).

The guide gives two configurations: a large one (16+ cores, 64 GB) and one "to
start" on 4 cores and 8 GB. `tuned()` scales the second with the container's
memory and CPUs: shared_buffers 1/8 of memory, effective_cache_size 1/4,
maintenance_work_mem 1/16, work_mem 28 MB per 8 GB, parallel workers per core.
Its other values (planner costs for SSDs, checkpoints, autovacuum) are taken as
they are. One is left out on purpose: `synchronous_commit = off` lets Postgres
acknowledge a commit before it is on disk, so a crash would lose messages
Synapse already acknowledged to clients.

PARAMETERS states, for each setting an operator may give, what Postgres 15
accepts (pg_settings: vartype, unit, min_val, max_val, enumvals); the e2e suite
holds the table against the live server's pg_settings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

# Per Synapse process: its connection pool (homeserver.yaml database.args.cp_max).
DB_POOL_MIN = 1
DB_POOL_MAX = 10
DEFAULT_MAX_CONNECTIONS = 500  # the guide's; fixed, so scaling never restarts Postgres
# Connections besides the Synapse pools: Postgres' superuser_reserved_connections
# (3) and the healthcheck, an operator's psql, and Synapse's schema migrations.
RESERVED_CONNECTIONS = 20

INT_MAX = 2147483647


@dataclass(frozen=True)
class Param:
    vartype: str  # bool | integer | real | enum | string (as pg_settings says)
    unit: str | None = None  # pg_settings.unit for integers: 8kB, kB, MB, ms, s, min
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()  # enum


# Postgres 15's definitions (src/backend/utils/misc/guc.c), as pg_settings shows them.
PARAMETERS: Mapping[str, Param] = {
    "max_connections": Param("integer", None, 1, 262143),
    "superuser_reserved_connections": Param("integer", None, 0, 262143),
    "shared_buffers": Param("integer", "8kB", 16, 1073741823),
    "effective_cache_size": Param("integer", "8kB", 1, INT_MAX),
    "work_mem": Param("integer", "kB", 64, INT_MAX),
    "maintenance_work_mem": Param("integer", "kB", 1024, INT_MAX),
    "wal_buffers": Param("integer", "8kB", -1, 262143),
    "temp_buffers": Param("integer", "8kB", 100, 1073741823),
    "effective_io_concurrency": Param("integer", None, 0, 1000),
    "max_worker_processes": Param("integer", None, 0, 262143),
    "max_parallel_workers": Param("integer", None, 0, 1024),
    "max_parallel_workers_per_gather": Param("integer", None, 0, 1024),
    "max_parallel_maintenance_workers": Param("integer", None, 0, 1024),
    "random_page_cost": Param("real", None, 0, 1.79769e308),
    "seq_page_cost": Param("real", None, 0, 1.79769e308),
    "parallel_setup_cost": Param("real", None, 0, 1.79769e308),
    "enable_partitionwise_join": Param("bool"),
    "enable_partitionwise_aggregate": Param("bool"),
    "commit_delay": Param("integer", None, 0, 100000),
    "commit_siblings": Param("integer", None, 0, 1000),
    "synchronous_commit": Param("enum", values=("local", "remote_write", "remote_apply", "on",
                                                "off")),
    "wal_writer_delay": Param("integer", "ms", 1, 10000),
    "checkpoint_completion_target": Param("real", None, 0, 1),
    "checkpoint_timeout": Param("integer", "s", 30, 86400),
    "max_wal_size": Param("integer", "MB", 2, INT_MAX),
    "min_wal_size": Param("integer", "MB", 2, INT_MAX),
    "autovacuum_vacuum_cost_limit": Param("integer", None, -1, 10000),
    "autovacuum_analyze_scale_factor": Param("real", None, 0, 100),
    "autovacuum_vacuum_scale_factor": Param("real", None, 0, 100),
    "vacuum_cost_limit": Param("integer", None, 1, 10000),
    "log_min_duration_statement": Param("integer", "ms", -1, INT_MAX),
    "log_min_messages": Param("enum", values=("debug5", "debug4", "debug3", "debug2", "debug1",
                                              "info", "notice", "warning", "error", "log",
                                              "fatal", "panic")),
    "statement_timeout": Param("integer", "ms", 0, INT_MAX),
    "idle_in_transaction_session_timeout": Param("integer", "ms", 0, INT_MAX),
    "jit": Param("bool"),
}

# Set by the program (sockets only, the data directory the image owns): an
# override would cut Synapse off or fight the image's entrypoint.
MANAGED = frozenset({
    "listen_addresses", "unix_socket_directories", "port", "data_directory", "hba_file",
    "ident_file", "config_file", "unix_socket_permissions", "unix_socket_group",
})

# Unit conversions, as Postgres parses a value with a unit (guc.c memory_unit_conversion_table
# and time_unit_conversion_table): to kB, and to ms.
_MEMORY_KB = {"B": 1 / 1024, "kB": 1, "MB": 1024, "GB": 1024**2, "TB": 1024**3}
_TIME_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_UNIT_KB = {"8kB": 8, "kB": 1, "MB": 1024}
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")
_BOOL = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False,
         "1": True, "0": False}


_KIND = {"bool": "on or off", "integer": "an integer", "real": "a number", "enum": "a word",
         "string": "a string"}


def _in_units(number: float, suffix: str, unit: str | None) -> float:
    """The value in the parameter's own unit (Postgres rounds to an integer)."""
    if not suffix:
        return number
    if unit in _UNIT_KB and suffix in _MEMORY_KB:
        return number * _MEMORY_KB[suffix] / _UNIT_KB[unit]
    if unit in _UNIT_MS and suffix in _TIME_MS:
        return number * _TIME_MS[suffix] / _UNIT_MS[unit]
    valid = ", ".join(_MEMORY_KB if unit in _UNIT_KB else _TIME_MS if unit in _UNIT_MS else ())
    raise ValueError(f"unit {suffix!r} is not valid here" + (f"; use one of {valid}" if valid
                                                              else "; it takes a bare number"))


def check(name: str, value: Any) -> str:
    """The value as a `postgres -c name=value` argument, or ValueError saying why
    Postgres would refuse it."""
    text, _ = _parse(name, value)
    return text


def value_of(name: str, value: Any) -> float | str:
    """What a value means, comparable across spellings: a number in the
    parameter's own unit ("1GB" and "131072" shared_buffers are equal), on/off,
    or the enum's word. SHOW's answers compare with the settings given this way."""
    return _parse(name, value)[1]


def _parse(name: str, value: Any) -> tuple[str, float | str]:
    if name in MANAGED:
        raise ValueError("is set by this program (Postgres listens on its socket only)")
    param = PARAMETERS.get(name)
    if param is None:
        raise ValueError("is not a Postgres 15 setting this program accepts; accepted: "
                         + ", ".join(sorted(PARAMETERS)))
    if isinstance(value, bool):
        if param.vartype != "bool":
            raise ValueError(f"must be {_KIND[param.vartype]}, got {value!r}")
        return ("on", "on") if value else ("off", "off")
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"must be {_KIND[param.vartype]}, got {type(value).__name__}")
    text = str(value).strip()
    if param.vartype == "bool":
        if text.lower() not in _BOOL:
            raise ValueError(f"must be on or off, got {value!r}")
        word = "on" if _BOOL[text.lower()] else "off"
        return word, word
    if param.vartype == "enum":
        if text.lower() not in param.values:
            raise ValueError(f"must be one of {', '.join(param.values)}, got {value!r}")
        return text.lower(), text.lower()
    m = _NUMBER.match(text)
    if not m:
        raise ValueError(f"must be a number{' with an optional unit' if param.unit else ''}, "
                         f"got {value!r}")
    number = _in_units(float(m.group(1)), m.group(2), param.unit)
    if param.vartype == "integer":
        if not m.group(2) and not float(m.group(1)).is_integer():
            raise ValueError(f"must be an integer, got {value!r}")
        number = round(number)
    if not param.min <= number <= param.max:
        unit = f" {param.unit}" if param.unit else ""
        raise ValueError(f"must be between {_fmt(param.min)} and {_fmt(param.max)}{unit}, got "
                         f"{value!r}")
    return text, number


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _mb(mb: float) -> str:
    mb = max(1, int(mb))
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def tuned(cpus: float, memory_mb: int) -> dict[str, str]:
    """The guide's Postgres settings for a container of this size."""
    cores = max(1, math.ceil(cpus))
    return {
        "max_connections": str(DEFAULT_MAX_CONNECTIONS),
        # Workers
        "max_worker_processes": str(max(2, cores)),
        "max_parallel_workers": str(max(2, cores)),
        "max_parallel_workers_per_gather": str(min(4, max(1, cores // 2))),
        "max_parallel_maintenance_workers": str(min(4, max(1, cores // 4))),
        # Memory
        "shared_buffers": _mb(memory_mb / 8),
        "effective_cache_size": _mb(memory_mb / 4),
        "maintenance_work_mem": _mb(max(64, memory_mb / 16)),
        "work_mem": _mb(max(4, memory_mb * 28 / 8192)),
        "wal_buffers": _mb(min(32, max(1, memory_mb / 64))),
        "effective_io_concurrency": "200",
        # Query planning (SSD storage)
        "enable_partitionwise_join": "on",
        "enable_partitionwise_aggregate": "on",
        "parallel_setup_cost": "1000",
        "random_page_cost": "1.1",
        # Commits grouped under load; durable (no synchronous_commit = off).
        "commit_delay": "500",
        "commit_siblings": "3",
        # Checkpoints: the guide's, WAL sized to the container.
        "checkpoint_completion_target": "0.9",
        "checkpoint_timeout": "15min",
        "max_wal_size": _mb(min(4096, max(256, memory_mb / 2))),
        "min_wal_size": _mb(min(1024, max(80, memory_mb / 8))),
        # Maintenance
        "autovacuum_vacuum_cost_limit": "400",
        "autovacuum_analyze_scale_factor": "0.05",
        "autovacuum_vacuum_scale_factor": "0.02",
        "vacuum_cost_limit": "300",
    }


def effective(cpus: float, memory_mb: int, overrides: Mapping[str, str]) -> dict[str, str]:
    """Tuned settings with the stack's overrides (already checked) on top."""
    return {**tuned(cpus, memory_mb), **overrides}


def max_connections(settings: Mapping[str, str]) -> int:
    return int(float(settings.get("max_connections", DEFAULT_MAX_CONNECTIONS)))
