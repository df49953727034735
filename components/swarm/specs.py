"""Plan -> Swarm service specs (no Pulumi import): what the Swarm target deploys,
as plain data, from the same plan and rendered files as the Docker target.

What differs from one host, and why:
- Every process listens on TCP at its service name (topology.Endpoint): UNIX
  sockets do not cross hosts. Postgres and Redis too, on the internal overlay
  network; Postgres asks for the password the official image sets up.
- Every file is a Swarm config, every secret a Swarm secret (both immutable: the
  target names each by its content, so a change rolls a new one in). Swarm sets
  a file's owner and mode itself, so no start script hands secrets over.
- No live-config: a file a process would re-read is a config like any other, so
  a log level change rolls the Synapse services (by the update rules below).
- Each process is a service of one replica, named as its container would be; its
  data volume is created on the node it runs on, so the services holding data are
  placed on one node (settings.PINNED).
- Update order: a process that Synapse names nowhere (no stream, duty, or
  instance_map entry: rollout.rolls) may start its new task before the old one
  stops; one that writes a stream, sends federation or runs a duty must stop
  first, since two copies at once break Synapse's single-writer rules. So must
  anything holding a lock on its data or a published host port.
- Services resolve each other by name with `endpoint_mode: dnsrr`: Swarm's
  virtual IPs need IPVS in the kernel, which not every host has (the e2e bed's
  has none); nginx re-resolves its upstreams when a task moves (nginx_run_script).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Mapping

from components.plan import rollout, secret_keys
from components.plan.topology import (
    POSTGRES_PORT, REDIS_PORT, Plan, Process, service_host,
)
from components.render import live_config, nginx_conf, prometheus_conf
from components.render.containers import (
    DATA_DIR, LABEL_PREFIX, LIVE_TLS, NGINX_BODY_BUFFERS, NGINX_PORTS, NGINX_UID, POSTGRES_DATA,
    POSTGRES_ENV, POSTGRES_PASSWORD_FILE, POSTGRES_UID, PROBE_INTERVAL_S, PROMETHEUS_UID,
    SHARED_MOUNTS, SINGLETON_PROBE_INTERVAL_S, START_SCRIPT, SYNAPSE_CAPS, SYNAPSE_UID,
    Healthcheck, Port, postgres_ready, postgres_tuning_args, prometheus_args, shared_files,
    synapse_command, synapse_env, synapse_files,
)
from components.render.synapse_config import render_secret

Secrets = Mapping[str, object]

BACKEND, FRONTEND = "backend", "frontend"
NGINX_CONF = f"{nginx_conf.LIVE_DIR}/nginx.conf"
NGINX_RUN = "/etc/nginx/run.sh"
START_FIRST, STOP_FIRST = "start-first", "stop-first"


@dataclass(frozen=True)
class SwarmFile:
    """A file in a service's tasks: a Swarm config, or a Swarm secret."""
    target: str  # absolute path in the container
    render: Callable[[Secrets], str]
    secret: bool = False
    uid: int = 0
    gid: int = 0
    mode: int = 0o444

    @property
    def slug(self) -> str:
        """A name for the file, from its path: /conf/secrets/signing.key -> secrets-signing.key."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.target.removeprefix("/conf/").strip("/"))


SWARM_NAME_MAX = 64  # Swarm refuses a longer config or secret name


def content_name(prefix: str, slug: str, text: str) -> str:
    """A config's or secret's Swarm name: both are immutable, so a new content is a
    new object under a new name, and the services referring to it roll onto it.
    Too long a name loses letters of its slug, never of its hash."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    head = f"{prefix}-{slug}"[:SWARM_NAME_MAX - len(digest) - 1]
    return f"{head}-{digest}"


@dataclass(frozen=True)
class UpdatePolicy:
    """Swarm's update_config (and rollback_config) for one service."""
    order: str  # start-first | stop-first
    parallelism: int = 1
    failure_action: str = "rollback"
    monitor_s: int = 15  # a new task failing within this counts as a failed update
    delay_s: int = 0


@dataclass(frozen=True)
class ServiceSpec:
    key: str  # process or service name: "main", "rooms2", "postgres"
    name: str  # the Swarm service name, also its DNS name on the overlay networks
    role: str
    image: str
    healthcheck: Healthcheck
    size: str
    update: UpdatePolicy
    worker_class: str | None = None
    command: tuple[str, ...] | None = None  # entrypoint; None: the image's
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[SwarmFile, ...] = ()
    volumes: Mapping[str, str] = field(default_factory=dict)  # volume name -> target
    tmpfs: Mapping[str, int] = field(default_factory=dict)  # target -> size in bytes
    networks: tuple[str, ...] = (BACKEND,)
    ports: tuple[Port, ...] = ()  # published in host mode on the node it runs on
    constraints: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    user: str | None = None
    cap_add: tuple[str, ...] = ()
    stop_grace_s: int = 10

    @property
    def labels(self) -> dict[str, str]:
        return {f"{LABEL_PREFIX}.process": self.key,
                f"{LABEL_PREFIX}.class": self.worker_class or self.role}


@dataclass(frozen=True)
class SwarmDeployment:
    networks: Mapping[str, tuple[str, bool]]  # key -> (Swarm name, internal)
    services: tuple[ServiceSpec, ...]  # in creation order
    encrypted: bool = False  # the overlays' traffic between nodes (IPsec)

    def service(self, key: str) -> ServiceSpec:
        return next(s for s in self.services if s.key == key)


def _service(plan: Plan, key: str, *, role: str | None = None, size_of: str | None = None,
             placement: str | None = None, **fields) -> ServiceSpec:
    s = plan.settings
    role = role or key
    return ServiceSpec(key=key, name=service_host(s, key), role=role,
                       size=s.container_sizes[size_of or role],
                       constraints=s.swarm.constraints(placement or key), **fields)


def update_policy(plan: Plan, p: Process) -> UpdatePolicy:
    """start-first only where two tasks of the process at once are harmless."""
    return UpdatePolicy(START_FIRST if rollout.rolls(plan, p.name) else STOP_FIRST)


# A service's durations are never whole minutes. The provider model stores them in
# kreuzwerker's shortDur form ("1m" for 60 s), read from memory of its source rather
# than re-read when the Swarm rows were written; for any other duration that form
# and Go's Duration.String() ("1m0s") agree, so even if the model were wrong there,
# no preview would show every service changing (tests/mocks/test_swarm_graph.py).
START_PERIOD_S = 90  # the single-host 60 s, made longer rather than shorter
POSTGRES_STOP_GRACE_S = 90


def _healthcheck(test: tuple[str, ...], interval_s: int = PROBE_INTERVAL_S) -> Healthcheck:
    return Healthcheck(test, interval_s=interval_s, start_period_s=START_PERIOD_S)


def _curl(url: str, as_user: str | None = None, interval_s: int = PROBE_INTERVAL_S) -> Healthcheck:
    drop = ("gosu", as_user) if as_user else ()
    return _healthcheck(("CMD", *drop, "curl", "-fsS", "-o", "/dev/null", url), interval_s)


def _start_script(p: Process) -> str:
    """Fresh volumes are root's: hand /data (and /media) to the Synapse user, then
    run the image's own /start.py, which drops to that user."""
    owned = " ".join([DATA_DIR] + [SHARED_MOUNTS[v] for v in p.volumes])
    return "\n".join([
        "#!/bin/sh",
        "set -eu",
        f'user="${{UID:-{SYNAPSE_UID}}}:${{GID:-{SYNAPSE_UID}}}"',
        f'chown "$user" {owned}',
        f'gosu "$user" mkdir -p {DATA_DIR}/log',
        'exec /start.py "$@"',
        "",
    ])


def _synapse_service(plan: Plan, p: Process, shared: Mapping[str, str]) -> ServiceSpec:
    s = plan.settings
    files, config = synapse_files(plan, p, shared)
    out = []
    for f in files:
        if f.path == START_SCRIPT:
            out.append(SwarmFile(f.path, lambda _sec, p=p: _start_script(p), mode=0o555))
        elif f.secret:  # the Synapse user's own, as start.sh leaves them on one host
            out.append(SwarmFile(f.path, f.render, secret=True, uid=SYNAPSE_UID,
                                 gid=SYNAPSE_UID, mode=0o400))
        else:
            out.append(SwarmFile(f.path, f.render))
    # What live-config publishes on one host (its log config, reloadable.yaml).
    out += [SwarmFile(path, lambda _sec, t=shared[path]: t)
            for path in live_config.reloaded_files(p.worker_class)]
    volumes = {f"{s.name_prefix}-{p.name}-data": DATA_DIR,
               **{f"{s.name_prefix}-{v}": SHARED_MOUNTS[v] for v in p.volumes}}
    return _service(
        plan, p.name,
        role="main" if p.is_main else "worker",
        size_of="main" if p.is_main else p.worker_class,
        placement=p.worker_class,
        worker_class=None if p.is_main else p.worker_class,
        image=s.images.synapse,
        command=("/bin/sh", START_SCRIPT),
        args=synapse_command(config),
        env=synapse_env(p),
        healthcheck=_curl(p.health.curl("/health")[-1], as_user=f"{SYNAPSE_UID}:{SYNAPSE_UID}",
                          interval_s=SINGLETON_PROBE_INTERVAL_S if p.is_main else PROBE_INTERVAL_S),
        update=update_policy(plan, p),
        files=tuple(out),
        volumes=volumes,
        networks=(BACKEND, FRONTEND) if s.egress else (BACKEND,),
        depends_on=("postgres", "redis") if p.is_main else ("main",),
        cap_add=SYNAPSE_CAPS,
        stop_grace_s=30,
    )


def _postgres_service(plan: Plan) -> ServiceSpec:
    s = plan.settings
    return _service(
        plan, "postgres",
        image=s.images.postgres,
        args=("postgres", *postgres_tuning_args(s)),
        env=POSTGRES_ENV,
        healthcheck=_healthcheck(("CMD-SHELL", postgres_ready(f"-h 127.0.0.1 -p {POSTGRES_PORT}")),
                                 interval_s=SINGLETON_PROBE_INTERVAL_S),
        update=UpdatePolicy(STOP_FIRST),  # one server per data directory
        files=(SwarmFile(POSTGRES_PASSWORD_FILE,
                         lambda sec: render_secret("postgresPassword", sec), secret=True,
                         uid=POSTGRES_UID, gid=POSTGRES_UID, mode=0o400),),
        volumes={f"{s.name_prefix}-postgres-data": POSTGRES_DATA},
        user=f"{POSTGRES_UID}:{POSTGRES_UID}",
        stop_grace_s=POSTGRES_STOP_GRACE_S,
    )


def _redis_service(plan: Plan) -> ServiceSpec:
    s = plan.settings
    return _service(
        plan, "redis",
        image=s.images.redis,
        # Pub/sub between the processes and caches; nothing to persist. On the
        # internal overlay network only, which no container outside the stack joins.
        args=("redis-server", "--port", str(REDIS_PORT), "--protected-mode", "no", "--save",
              "--appendonly", "no"),
        healthcheck=_healthcheck(("CMD-SHELL", f"redis-cli -p {REDIS_PORT} ping | grep -q PONG"),
                                interval_s=SINGLETON_PROBE_INTERVAL_S),
        update=UpdatePolicy(STOP_FIRST),  # one broker: two would split pub/sub
        user="redis",
    )


def nginx_run_script(plan: Plan) -> str:
    """nginx's entrypoint on a Swarm. Every second it looks up the service name of
    each process nginx routes to (all its tasks' addresses: dnsrr), and writes that
    process's `server` lines (nginx_conf.swarm_servers_file; a name that resolves to
    nothing, its task between stop and start, is one `down` server, so nginx falls
    back as for a refused connection) and the served-by map (address -> process,
    behind the X-Synapse-Worker header). When anything changed, nginx reloads
    (graceful: old workers finish their requests). The config never names a host,
    so a reload never fails on a name that does not resolve."""
    run = nginx_conf.SWARM_RUN_DIR
    routed = [(p.inbound.host, p.inbound.port, p.name) for p in plan.processes if p.inbound]
    entries = " ".join(f"{h}:{port}:{name}" for h, port, name in routed)
    conf = shlex.quote(NGINX_CONF)
    return "\n".join([
        "#!/bin/sh",
        "set -u",
        f"run={run}",
        'rm -rf "$run/health.sock" "$run/next" && mkdir -p "$run/servers" "$run/next"',
        "resolve() {  # -> $run/next: each process's server lines, and the served-by map",
        '  : > "$run/next/served_by.map"',
        f"  for entry in {entries}; do",
        '    host=${entry%%:*} rest=${entry#*:} port=${rest%%:*} name=${rest#*:}',
        "    ips=$(getent ahostsv4 \"$host\" | cut -d' ' -f1 | sort -u)",
        '    for ip in $ips; do echo "server $ip:$port max_fails=0;"; done > "$run/next/$name.conf"',
        '    [ -n "$ips" ] || echo "server 127.0.0.1:9 down;" > "$run/next/$name.conf"',
        "    for ip in $ips; do",
        '      printf \'"~(?:^| )%s:%s$" %s;\\n\' "$(echo "$ip" | sed \'s/[.]/\\\\./g\')" "$port" "$name"',
        '    done >> "$run/next/served_by.map"',
        "  done",
        '  cat "$run"/next/* | cksum',
        "}",
        "publish() {",
        '  for f in "$run"/next/*.conf; do cp "$f" "$run/servers/$(basename "$f")"; done',
        f'  cp "$run/next/served_by.map" {shlex.quote(nginx_conf.SWARM_SERVED_BY)}',
        "}",
        "loaded=$(resolve)",
        "publish",
        f'"$@" -c {conf} &',
        "pid=$!",
        'trap \'kill -QUIT "$pid"; wait "$pid"; exit 0\' TERM QUIT INT',
        'while kill -0 "$pid" 2>/dev/null; do',
        "  sleep 1 & wait $!",
        "  now=$(resolve)",
        '  [ "$now" = "$loaded" ] && continue',
        "  publish",
        f'  if nginx -t -q -c {conf}; then',
        '    kill -HUP "$pid"',
        "    loaded=$now",
        '    echo "run.sh: a task moved; reloaded"',
        "  fi",
        "done",
        'wait "$pid"',
        "",
    ])


def _nginx_service(plan: Plan) -> ServiceSpec:
    s = plan.settings
    # Where nginx reads them; on one host nginx-config copies them there.
    tls = [SwarmFile(LIVE_TLS[t.key], lambda sec, k=t.key: render_secret(k, sec), secret=True,
                     uid=NGINX_UID, gid=NGINX_UID, mode=0o400)
           for t in secret_keys.for_readers(secret_keys.NGINX)] if s.nginx.tls else []
    body = NGINX_BODY_BUFFERS * s.max_upload_size_mb << 20
    return _service(
        plan, "nginx",
        image=s.images.nginx,
        command=("/bin/sh", NGINX_RUN),
        args=("nginx", "-g", "daemon off;"),
        healthcheck=_healthcheck(("CMD", "curl", "-fsS", "--unix-socket",
                                 nginx_conf.health_socket(plan), "http://localhost/health"),
                                interval_s=SINGLETON_PROBE_INTERVAL_S),
        # Its ports are the node's (host mode): a second task there could not bind them.
        update=UpdatePolicy(STOP_FIRST),
        files=(SwarmFile(NGINX_CONF, lambda _sec: nginx_conf.render_nginx_conf(plan)),
               SwarmFile(NGINX_RUN, lambda _sec: nginx_run_script(plan), mode=0o555),
               *tls),
        tmpfs={nginx_conf.SWARM_RUN_DIR: body},
        networks=(BACKEND, FRONTEND),
        ports=(
            Port(NGINX_PORTS["client"], s.nginx.client_port, s.nginx.bind_address),
            Port(NGINX_PORTS["federation"], s.nginx.federation_port, s.nginx.bind_address),
            # The admin listener only where the operator opened it to every
            # address; otherwise it is reached on the frontend network.
            *([Port(NGINX_PORTS["admin"], s.nginx.admin_port, s.nginx.admin_bind_address)]
              if s.nginx.admin_bind_address == "0.0.0.0" else []),
            *([Port(NGINX_PORTS["http"], s.nginx.http_port, s.nginx.bind_address)]
              if s.nginx.tls else []),
        ),
        depends_on=tuple(p.name for p in plan.processes if p.inbound),
        user=f"{NGINX_UID}:{NGINX_UID}",
        stop_grace_s=5,
    )


def _prometheus_service(plan: Plan) -> ServiceSpec:
    s = plan.settings
    hosts = {p.name: service_host(s, p.name) for p in plan.processes}
    targets = [SwarmFile(f"{prometheus_conf.LIVE_DIR}/{prometheus_conf.TARGETS_SUBDIR}/"
                         f"{prometheus_conf.TARGET_FILES[job]}",
                         lambda _sec, g=groups: prometheus_conf.render_targets(g))
               for job, groups in prometheus_conf.targets(plan, hosts).items()]
    ready = f"http://127.0.0.1:{prometheus_conf.PORT}/-/ready"
    return _service(
        plan, "prometheus",
        image=s.images.prometheus,
        args=prometheus_args(s),
        healthcheck=_healthcheck(("CMD", "wget", "-q", "-O", "/dev/null", ready)),
        update=UpdatePolicy(STOP_FIRST),  # its TSDB takes a lock
        files=(SwarmFile(prometheus_conf.CONFIG_PATH,
                         lambda _sec: prometheus_conf.render_prometheus_conf(plan)), *targets),
        volumes={f"{s.name_prefix}-prometheus-data": prometheus_conf.DATA_DIR},
        # Not published: it has no authentication, and host mode cannot keep a
        # port on loopback. Reached on the (attachable) frontend network.
        networks=(BACKEND, FRONTEND),
        user=f"{PROMETHEUS_UID}:{PROMETHEUS_UID}",
    )


def build_swarm(plan: Plan) -> SwarmDeployment:
    s = plan.settings
    shared = shared_files(plan)
    services = [_postgres_service(plan), _redis_service(plan),
                *(_synapse_service(plan, p, shared) for p in plan.processes),
                _nginx_service(plan)]
    if s.metrics.enabled:
        services.append(_prometheus_service(plan))
    return SwarmDeployment(
        networks={BACKEND: (f"{s.name_prefix}-{BACKEND}", True),
                  FRONTEND: (f"{s.name_prefix}-{FRONTEND}", False)},
        services=tuple(services),
        encrypted=s.swarm.encrypted,
    )

