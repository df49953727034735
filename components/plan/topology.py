"""Settings -> topology plan: which Synapse processes exist, where they listen,
instance_map, stream writers and shared duties (no Pulumi import).

Where a process listens depends on the target: on one host, UNIX sockets in a
shared volume; on a Swarm (sockets do not cross hosts), TCP ports reached by the
process's service name on the overlay network.

Everything here is derived from the worker-class table (workers.py) and the worker
counts; `check_plan` then re-states Synapse's own rules from
synapse/config/workers.py so a table edit that breaks them fails loudly.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Any, Mapping

from components.plan import postgres_conf
from components.plan.errors import ConfigError
from components.plan.postgres_conf import DB_POOL_MAX, RESERVED_CONNECTIONS
from components.plan.settings import Settings
from components.plan.validators import synapse_version
from components.plan.workers import (
    ALL, MAIN, MAIN_KEEPS_WRITING, PRESET_STREAMS, STREAMS, WORKER_CLASSES, process_names,
    slot_processes, stream_exists, writer_problems,
)

SOCKET_DIR = "/sockets"
POSTGRES_SOCKET_DIR = SOCKET_DIR  # libpq wants the directory, not the socket file
REDIS_SOCKET = f"{SOCKET_DIR}/synapse_redis.sock"
MAIN_APP = "synapse.app.homeserver"
# Every process's metrics listener (TCP: Synapse has no metrics listener on a UNIX
# socket), on the internal backend network; Prometheus scrapes it there.
METRICS_PORT = 9000
# Main serves every endpoint whatever the workers take, media included (workers.py,
# the media class): nginx falls back to it while a class has no healthy process.
MAIN_RESOURCES = ("client", "federation", "media")
MAIN_VOLUMES = ("media",)


def postgres_settings(settings: Settings) -> dict[str, str]:
    """Postgres' settings for this stack: tuned from its container's size, with
    synapse:postgres.settings on top. max_connections does not follow the worker
    counts, so scaling workers never restarts Postgres."""
    size = settings.sizes[settings.container_sizes["postgres"]]
    return postgres_conf.effective(size.cpus, size.memory_mb, settings.postgres.overrides)


# On a Swarm: the ports a Synapse process listens on (the official image's 8008
# for HTTP; 9093 as Synapse's workers.md uses for replication), and the services'.
INBOUND_PORT = 8008
REPLICATION_PORT = 9093
REDIS_PORT = 6379
POSTGRES_PORT = 5432


def replication_socket(name: str) -> str:
    return f"{SOCKET_DIR}/synapse_replication_{name}.sock"


def inbound_socket(name: str) -> str:
    return f"{SOCKET_DIR}/synapse_inbound_{name}.sock"


@dataclass(frozen=True)
class Endpoint:
    """Where a process listens: a UNIX socket (`path`), or a TCP `port` that others
    reach at `host` (its service name)."""
    path: str | None = None
    host: str | None = None
    port: int | None = None

    @property
    def listener(self) -> dict[str, Any]:
        """The address part of a Synapse listener."""
        if self.path:
            return {"path": self.path}
        return {"port": self.port, "bind_addresses": ["0.0.0.0"]}

    @property
    def instance(self) -> dict[str, Any]:
        """The address part of an instance_map entry (or Synapse's redis/database)."""
        return {"path": self.path} if self.path else {"host": self.host, "port": self.port}

    @property
    def upstream(self) -> str:
        """nginx's `server` address."""
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"

    def curl(self, url_path: str) -> tuple[str, ...]:
        """curl's arguments to GET url_path from inside the process's container."""
        if self.path:
            return ("--unix-socket", self.path, f"http://localhost{url_path}")
        return (f"http://127.0.0.1:{self.port}{url_path}",)


@dataclass(frozen=True)
class Process:
    name: str  # instance name: "main", "rooms3"
    worker_class: str  # "main" for the main process
    app: str
    replication: Endpoint | None  # set iff the process is in instance_map
    inbound: Endpoint | None  # set iff nginx routes requests to it
    inbound_resources: tuple[str, ...]
    volumes: tuple[str, ...] = ()  # shared volumes it mounts besides the sockets
    metrics_port: int | None = None  # its metrics listener (TCP), with synapse:metrics.enabled

    @property
    def is_main(self) -> bool:
        return self.worker_class == MAIN

    @property
    def health(self) -> Endpoint:
        """Where the container healthcheck curls /health."""
        endpoint = self.inbound or self.replication
        assert endpoint, f"{self.name} has no listener"
        return endpoint

    @property
    def sockets(self) -> tuple[str, ...]:
        """Its UNIX sockets (none on a Swarm)."""
        return tuple(e.path for e in (self.replication, self.inbound) if e and e.path)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in (self.replication, self.inbound) if e)


def service_host(settings: Settings, name: str) -> str:
    """A process's or service's name on a Swarm's overlay network (its service's):
    a DNS label, since Synapse's HTTP client refuses a host name with '_' ("invalid
    hostname: synapse-swarm-client_sync1", measured) and Swarm a service name with '.'."""
    return re.sub(r"[_.]", "-", f"{settings.name_prefix}-{name}")


def _endpoints(settings: Settings, name: str) -> tuple[Endpoint, Endpoint]:
    """(replication, inbound) for a process, by target."""
    if settings.target == "swarm":
        host = service_host(settings, name)
        return Endpoint(host=host, port=REPLICATION_PORT), Endpoint(host=host, port=INBOUND_PORT)
    return Endpoint(path=replication_socket(name)), Endpoint(path=inbound_socket(name))


def redis_endpoint(settings: Settings) -> Endpoint:
    if settings.target == "swarm":
        return Endpoint(host=service_host(settings, "redis"), port=REDIS_PORT)
    return Endpoint(path=REDIS_SOCKET)


def postgres_host(settings: Settings) -> str:
    """libpq's host: the socket directory, or Postgres' service name."""
    return service_host(settings, "postgres") if settings.target == "swarm" else POSTGRES_SOCKET_DIR


@dataclass(frozen=True)
class Plan:
    settings: Settings
    processes: tuple[Process, ...]  # main first, then classes in table order
    instance_map: Mapping[str, Endpoint]  # instance name -> its replication listener
    stream_writers: Mapping[str, tuple[str, ...]]
    duties: Mapping[str, Any]  # shared keys naming processes (str or list)

    @property
    def main(self) -> Process:
        return self.processes[0]

    def process(self, name: str) -> Process:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    def by_class(self, worker_class: str) -> tuple[Process, ...]:
        return tuple(p for p in self.processes if p.worker_class == worker_class)


class PlanError(Exception):
    """The plan breaks one of Synapse's worker rules (a table bug, not bad config)."""


def build_plan(settings: Settings) -> Plan:
    names = process_names(settings.workers)
    metrics_port = METRICS_PORT if settings.metrics.enabled else None

    writers: dict[str, list[str]] = {}
    duties: dict[str, Any] = {}
    for c in WORKER_CLASSES:
        if not names[c.name]:
            continue  # main keeps Synapse's defaults for this class's work
        for stream, slot in c.streams.items():
            for n in slot_processes(names[c.name], slot):
                if n not in writers.setdefault(stream, []):
                    writers[stream].append(n)
        for key, slot in c.duties.items():
            named = slot_processes(names[c.name], slot)
            duties[key] = named if slot == ALL else named[0]
    # The preset's writers replace the table's, stream by stream.
    for stream, (cls, slots) in PRESET_STREAMS.get(settings.preset, {}).items():
        procs = names[cls]
        if procs:
            picked = procs if slots == ALL else [
                n for slot in slots for n in slot_processes(procs, slot)]
            writers[stream] = list(dict.fromkeys(picked))
    for stream in MAIN_KEEPS_WRITING:
        if stream in writers and MAIN not in writers[stream]:
            writers[stream].insert(0, MAIN)
    # synapse:streamWriters replaces both (settings.py checked it).
    for stream, named in settings.stream_writers.items():
        writers[stream] = list(named)
    # A stream the configured Synapse does not have yet: no key for it at all.
    version = synapse_version(settings.images.synapse)
    writers = {s: w for s, w in writers.items() if stream_exists(s, version)}

    needs_replication = {n for ws in writers.values() for n in ws}
    needs_replication |= {
        n for v in duties.values() for n in ([v] if isinstance(v, str) else v)
    }

    main_replication, main_inbound = _endpoints(settings, MAIN)
    processes = [
        Process(
            name=MAIN,
            worker_class=MAIN,
            app=MAIN_APP,
            replication=main_replication,
            inbound=main_inbound,
            inbound_resources=MAIN_RESOURCES,
            volumes=MAIN_VOLUMES,
            metrics_port=metrics_port,
        )
    ]
    for c in WORKER_CLASSES:
        for name in names[c.name]:
            replication, inbound = _endpoints(settings, name)
            processes.append(
                Process(
                    name=name,
                    worker_class=c.name,
                    app=c.app,
                    replication=replication if name in needs_replication else None,
                    inbound=inbound if c.inbound_resources else None,
                    inbound_resources=c.inbound_resources,
                    volumes=c.volumes,
                    metrics_port=metrics_port,
                )
            )

    instance_map = {p.name: p.replication for p in processes if p.replication}
    plan = Plan(
        settings=settings,
        processes=tuple(processes),
        instance_map=types.MappingProxyType(instance_map),
        stream_writers=types.MappingProxyType({k: tuple(v) for k, v in writers.items()}),
        duties=types.MappingProxyType(duties),
    )
    check_plan(plan)
    return plan


def check_plan(plan: Plan) -> None:
    """Synapse's worker rules (synapse/config/workers.py), stated once more."""
    if MAIN not in plan.instance_map:
        raise PlanError("main must be in instance_map")
    class_of = {p.name: p.worker_class for p in plan.processes}
    names: dict[str, list[str]] = {}
    for p in plan.processes:
        names.setdefault(p.worker_class, []).append(p.name)
    for stream, writers in plan.stream_writers.items():
        if stream not in STREAMS:
            raise PlanError(f"Synapse has no stream_writers.{stream}")
        for at, reason in writer_problems(stream, list(writers), class_of, names):
            who = "" if at is None else f" ({writers[at]})"
            raise PlanError(f"stream_writers.{stream}{who}: {reason}")
        for n in writers:
            if n != MAIN and n not in plan.instance_map:
                raise PlanError(f"{n} writes {stream!r} but is not in instance_map")
    for p in plan.processes:
        if not p.endpoints:
            raise PlanError(f"{p.name} has no listener to health-check")
    check_capacity(plan)


def check_capacity(plan: Plan) -> None:
    """Every pool at cp_max at once, plus headroom, must fit Postgres' max_connections."""
    pools = len(plan.processes) * DB_POOL_MAX
    limit = postgres_conf.max_connections(postgres_settings(plan.settings))
    if pools + RESERVED_CONNECTIONS > limit:
        given = "max_connections" in plan.settings.postgres.overrides
        raise ConfigError(
            ("postgres", "settings", "max_connections") if given else ("workers",),
            f"{len(plan.processes)} Synapse processes x cp_max {DB_POOL_MAX} = {pools} "
            f"database connections, plus {RESERVED_CONNECTIONS} reserved, need "
            f"max_connections >= {pools + RESERVED_CONNECTIONS}; Postgres allows {limit}: "
            + ("raise it or use fewer workers" if given else
               "use fewer workers, or raise synapse:postgres.settings.max_connections"),
        )
