"""Plan -> container specs: for every container, its image, command, env, files,
mounts, networks and healthcheck, as plain data (no Pulumi import).

The Pulumi components turn these specs into docker.Container resources one to
one, and the render command writes them out, so both always agree. A file that
holds a secret is rendered by a function of the secrets; everything else is text.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping

from components.render import acme_conf
from components.render import backup_conf
from components.render import live_config
from components.render import nginx_conf
from components.render import prometheus_conf
from components.plan import rollout
from components.plan import secret_keys
from components.render.synapse_config import (
    CONFIG_DIR,
    DATA_DIR,
    HOMESERVER_PATH,
    MAIN_CONFIG_PATH,
    MEDIA_DIR,
    PGPASS_PATH,
    LIVE_CONFIG_DIR,
    PLACEHOLDERS,
    POSTGRES_DB,
    RELOADABLE_PATH,
    POSTGRES_USER,
    SECRET_CONFIG_PATH,
    SECRETS_DIR,
    SYNAPSE_SECRETS,
    federation_ca_files,
    loaded_marker,
    log_config_path,
    render_homeserver,
    render_log_config,
    render_main_config,
    render_pgpass,
    render_reloadable,
    render_secret,
    render_secret_config,
    render_worker,
    worker_config_path,
)
from components.plan.topology import (
    POSTGRES_SOCKET_DIR,
    REDIS_SOCKET,
    SOCKET_DIR,
    Endpoint,
    Plan,
    Process,
    postgres_settings,
)

Secrets = Mapping[str, str]

SYNAPSE_UID = 991  # the official image's default user (and group)
POSTGRES_UID = 999  # `postgres` in the official image (and the stand-in)
NGINX_UID = 101  # `nginx` in the official image (and the stand-in)
REDIS_USER = "redis"  # by name: 999 in the official image, 998 in the stand-in
PROMETHEUS_UID = 65534  # `nobody` in the official image (and the stand-in)
# The sockets volume belongs to Synapse's group: who may create sockets there and
# connect to Postgres's and Redis's (docs/least-privilege.md).
SOCKETS_GID = SYNAPSE_UID
START_SCRIPT = f"{CONFIG_DIR}/start.sh"
POSTGRES_DATA = "/var/lib/postgresql/data"
# nginx reads its config from a volume that the nginx-config container fills
# (_nginx_specs): a routing change replaces that small container, not nginx.
NGINX_LIVE_DIR = nginx_conf.LIVE_DIR
NGINX_CONF = f"{NGINX_LIVE_DIR}/nginx.conf"
NGINX_LOADED = f"{NGINX_LIVE_DIR}/loaded"  # cksum of the config nginx serves
NGINX_STAGED = "/stage/nginx.conf"
NGINX_PUBLISH = "/stage/publish.sh"
NGINX_PORTS = nginx_conf.PORTS  # inside the nginx container
# nginx.tls: the certificate chain and key, staged in nginx-config like its config
# and published next to it, so nginx (read-only, no uploads) reads them from the
# volume and a renewed certificate is a reload, not a new nginx.
# nginx.tls: where nginx-config stages each secret (secret_keys) -> where nginx reads it.
LIVE_TLS = {"tlsCertificate": nginx_conf.TLS_CERTIFICATE, "tlsKey": nginx_conf.TLS_KEY}
NGINX_STAGED_TLS = {s.path: LIVE_TLS[s.key] for s in secret_keys.for_readers(secret_keys.NGINX)}
NGINX_RUN_NAME = "run.sh"  # $0 of nginx's entrypoint script, in its log lines
NGINX_USER = f"{NGINX_UID}:{NGINX_UID}"
NGINX_TEMP_DIRS = ("/var/cache/nginx", "/var/lib/nginx")  # official image; Debian's
NGINX_BODY_BUFFERS = 4  # uploads of the largest size nginx's tmpfs holds at once

LABEL_PREFIX = "org.matrix.synapse-workers"


def backups_volume(name_prefix: str) -> str:
    """The scheduled backups' volume: `make destroy-data` leaves it (the way back
    after it is a restore from there); remove it by name when no longer wanted."""
    return f"{name_prefix}-backups"


# Docker probes first one `interval` after start, then every `interval`, each probe
# an exec costing ~60 ms of CPU (benchmarks/bench_deploy.py): one each of postgres,
# redis, main, nginx-config and nginx, whatever the preset, each alone on the up's
# critical path, is probed every 2 s (a first probe 3 s sooner); the workers, which
# scale with the preset, every 5 s. A Docker 25+ engine can probe faster only while starting:
# synapse:healthcheckStartInterval (moby daemon/health.go, start_interval).
PROBE_INTERVAL_S = 5
SINGLETON_PROBE_INTERVAL_S = 2


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_s: int = PROBE_INTERVAL_S
    timeout_s: int = 5
    retries: int = 5
    start_period_s: int = 60
    start_interval_s: int = 0  # 0: none (Docker probes at interval while starting)


SECRET_FILE_MODE = "0400"  # readable by its owner only
SHARED_SECRET_FILE_MODE = "0444"  # root's upload, read by a non-root process (File)
POSTGRES_PASSWORD_FILE = secret_keys.BY_KEY["postgresPassword"].path


@dataclass(frozen=True)
class File:
    path: str  # in-container path
    render: Callable[[Secrets], str]
    secret: bool = False  # content holds a secret: a secret Output in Pulumi
    executable: bool = False
    # A secret read by a process that is not root from the start. Uploads are
    # root's (pulumi-docker 5.1.0 has no upload owner; provider_model), so such a
    # file is world-readable: only in a container that runs that one user. Synapse's
    # start.sh instead hands its root-owned 0400 secrets to the Synapse user.
    non_root_reader: bool = False

    @property
    def mode(self) -> str:
        """The upload's permissions, as the provider applies them (tar header mode)."""
        if self.secret:
            return SHARED_SECRET_FILE_MODE if self.non_root_reader else SECRET_FILE_MODE
        return "0744" if self.executable else "0644"


@dataclass(frozen=True)
class VolumeSpec:
    key: str  # logical name: "sockets", "media", "main-data"
    name: str  # Docker volume name
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    # Holds data: survives `pulumi destroy` and scaling down (retain_on_delete).
    retain: bool = True
    # Mounted by several containers (created at the top of the stack), rather than
    # owned by one (created by that container's component).
    shared: bool = False


@dataclass(frozen=True)
class Mount:
    volume: str  # VolumeSpec.key
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Port:
    internal: int
    external: int
    ip: str


NO_NEW_PRIVILEGES = "no-new-privileges:true"


@dataclass(frozen=True)
class Privileges:
    """What a container's processes may do; every container drops all capabilities
    but `cap_add` and gains none through exec (no-new-privileges). What each one
    needs, and what did not work, is measured in docs/least-privilege.md."""

    # The first process's "uid:gid" (or user name); None: the image's own (root).
    user: str | None = None
    groups: tuple[str, ...] = ()  # supplementary GIDs of the first process (group_add)
    cap_add: tuple[str, ...] = ()  # in Docker's CAP_ form, as it reads them back
    # Read-only root filesystem. Docker refuses the provider's uploads into such a
    # container ("container rootfs is marked read-only": it extracts them at "/"),
    # so only containers without files can have it.
    read_only: bool = False
    tmpfs: Mapping[str, str] = field(default_factory=dict)  # path -> mount options

    @property
    def cap_drop(self) -> tuple[str, ...]:
        return ("ALL",)

    @property
    def security_opts(self) -> tuple[str, ...]:
        return (NO_NEW_PRIVILEGES,)


@dataclass(frozen=True)
class ContainerSpec:
    """One container. The defaults are a service's: no files, no ports, the
    internal network only, no capabilities; `_spec` names it after the stack."""
    key: str  # logical name: process name, or nginx, nginx-config, postgres, redis, prometheus
    name: str  # Docker container name
    role: str  # main | worker | nginx | nginx-config | postgres | redis | prometheus
    image: str
    healthcheck: Healthcheck
    size: str
    worker_class: str | None = None
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None  # None: the image's
    env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[File, ...] = ()
    mounts: tuple[Mount, ...] = ()
    networks: tuple[str, ...] = ("backend",)
    ports: tuple[Port, ...] = ()
    sockets: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()  # container keys that must be healthy first
    destroy_grace_seconds: int = 10
    privileges: Privileges = Privileges()
    restart: str = "unless-stopped"
    # The provider's `wait`: an up holds until the container is healthy.
    wait_healthy: bool = True

    def rendered_files(self, secrets: Secrets = PLACEHOLDERS) -> dict[str, str]:
        return {f.path: f.render(secrets) for f in self.files}

    @cached_property  # the spec is frozen: rendering every file once is enough
    def config_hash(self) -> str:
        """Hash of everything that defines the container, secrets as placeholders:
        it changes exactly when a non-secret input does."""
        blob = json.dumps(
            {
                "image": self.image,
                "command": self.command,
                "entrypoint": self.entrypoint,
                "env": dict(self.env),
                "files": self.rendered_files(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def labels(self) -> dict[str, str]:
        return {
            f"{LABEL_PREFIX}.process": self.key,
            f"{LABEL_PREFIX}.role": self.role,
            f"{LABEL_PREFIX}.class": self.worker_class or self.role,
            f"{LABEL_PREFIX}.config-hash": self.config_hash,
        }


@dataclass(frozen=True)
class Deployment:
    """Everything a stack creates on the Docker host."""

    networks: Mapping[str, tuple[str, bool]]  # key -> (Docker name, internal)
    volumes: tuple[VolumeSpec, ...]
    containers: tuple[ContainerSpec, ...]  # in creation order
    # synapse:healthcheckStartInterval, for every healthcheck with a start period
    # (container_inputs): outside it Docker 25+ probes at `interval` anyway.
    healthcheck_start_interval_s: int = 0

    def container(self, key: str) -> ContainerSpec:
        return next(c for c in self.containers if c.key == key)

    def container_named(self, name: str) -> ContainerSpec:
        """By Docker name."""
        return next(c for c in self.containers if c.name == name)


def _spec(plan: Plan, key: str, *, role: str | None = None, size_of: str | None = None,
          **fields) -> ContainerSpec:
    """A container of the stack: named `<namePrefix>-<key>`, sized by its role's (or
    class's) entry in containerSizes; `role` defaults to the key."""
    s = plan.settings
    role = role or key
    return ContainerSpec(key=key, name=f"{s.name_prefix}-{key}", role=role,
                         size=s.container_sizes[size_of or role], **fields)


# What start.sh needs as root: chown fresh volumes and the uploaded secrets, and
# gosu's setgroups/setgid/setuid. Synapse itself runs with none (its CapEff is 0).
SYNAPSE_CAPS = ("CAP_CHOWN", "CAP_SETGID", "CAP_SETUID")


def _curl_health(endpoint: Endpoint, as_user: str | None = None,
                 interval_s: int = PROBE_INTERVAL_S) -> Healthcheck:
    """curl the health endpoint at `endpoint`. Docker runs a healthcheck as the
    container's user with its capabilities: where that is root (Synapse, for
    start.sh), gosu drops to `as_user` first, so no root process ever reads what
    the (possibly compromised) service answers."""
    drop = ("gosu", as_user) if as_user else ()
    return Healthcheck(("CMD", *drop, "curl", "-fsS", *endpoint.curl("/health")),
                       interval_s=interval_s)


# Where a Synapse process mounts each shared volume a class names (workers.py).
SHARED_MOUNTS = {"media": MEDIA_DIR}


def _start_script(p: Process) -> str:
    """Entrypoint wrapper: clean up what a killed process left, then run the image's
    own /start.py, which drops to the Synapse user with gosu. Twisted refuses to
    bind a socket whose `.lock` names a live PID (after a kill -9 it is PID 1
    again), so stale sockets and locks must go first (root owns the sockets
    directory, so it may). Fresh volumes and uploaded secrets are root-owned: hand
    /data (and /media) and the secrets to the Synapse user, who alone may read them.
    Root here has only CAP_CHOWN, CAP_SETUID and CAP_SETGID (SYNAPSE_CAPS): what it
    does not own it cannot read or chmod, so the secrets are chowned only while
    still root's (uploads happen once, at create: a restart finds them handed over)
    and everything else is done as the Synapse user."""
    stale = " ".join(shlex.quote(x) for s in p.sockets for x in (s, s + ".lock"))
    owned = " ".join([DATA_DIR] + [SHARED_MOUNTS[v] for v in p.volumes])
    secrets = shlex.quote(SECRETS_DIR)
    reloaded = live_config.reloaded_files(p.worker_class)
    watch = " ".join(shlex.quote(a) for a in (
        live_config.reload_watch_script(), live_config.RELOAD_WATCH_NAME,
        loaded_marker(p.name), p.health.path,
        *reloaded))
    return "\n".join([
        "#!/bin/sh",
        "set -eu",
        f"rm -f {stale}",
        f'user="${{UID:-{SYNAPSE_UID}}}:${{GID:-{SYNAPSE_UID}}}"',
        f'chown "$user" {owned}',
        f'[ "$(stat -c %u:%g {secrets})" = "$user" ] || chown -R "$user" {secrets}',
        f'gosu "$user" sh -c \'mkdir -p {DATA_DIR}/log && chmod 0500 {secrets}\'',
        # Published by live-config, which this container waits for; after a
        # daemon restart it may come up second.
        *(f"until [ -s {shlex.quote(f)} ]; do sleep 0.2; done" for f in reloaded),
        # As the Synapse user, which may signal Synapse (PID 1 after the exec).
        f'gosu "$user" sh -c {watch} &',
        'exec /start.py "$@"',
        "",
    ])


def shared_files(plan: Plan) -> dict[str, str]:
    """Files many processes get alike, by path, rendered once per plan: every
    process's homeserver.yaml (which grows with the process count, so rendering
    it per process made planning quadratic) and each class's log config (which
    live-config publishes)."""
    classes = dict.fromkeys(p.worker_class for p in plan.processes)
    return {HOMESERVER_PATH: render_homeserver(plan),
            RELOADABLE_PATH: render_reloadable(plan),
            **{log_config_path(c): render_log_config(plan, c) for c in classes},
            **federation_ca_files(plan)}


def synapse_files(plan: Plan, p: Process, shared: Mapping[str, str]) -> tuple[list[File], list[str]]:
    """(files, config paths in the order Synapse reads them). Secrets each have
    their own file; every config file is plain. `shared`: shared_files."""
    text = lambda path: (lambda _sec: shared[path])  # noqa: E731 - a File's render
    config = [HOMESERVER_PATH]
    files = [File(HOMESERVER_PATH, text(HOMESERVER_PATH))]
    if p.is_main:
        config.append(MAIN_CONFIG_PATH)
        files.append(File(MAIN_CONFIG_PATH, lambda _sec: render_main_config()))
    else:
        config.append(worker_config_path(p.name))
        files.append(File(worker_config_path(p.name), lambda _sec: render_worker(p)))
    files += [
        File(START_SCRIPT, lambda _sec: _start_script(p), executable=True),
        # Any process may make outbound federation requests (senders, joins,
        # backfill, keys, remote media): each gets the extra CAs.
        *(File(path, text(path)) for path in federation_ca_files(plan)),
    ]
    for secret in SYNAPSE_SECRETS:
        if p.is_main or secret.readers == secret_keys.SYNAPSE:
            files.append(File(secret.path, lambda sec, k=secret.key: render_secret(k, sec),
                              secret=True))
    files.append(File(PGPASS_PATH, render_pgpass, secret=True))
    # Published by live-config, re-read on SIGHUP (synapse_config.RELOADABLE_SECTIONS).
    config.append(RELOADABLE_PATH)
    if plan.settings.secret_config_keys:
        config.append(SECRET_CONFIG_PATH)
        files.append(File(SECRET_CONFIG_PATH, render_secret_config, secret=True))
    return files, config


def synapse_command(config: list[str]) -> tuple[str, ...]:
    """The image's start.py arguments: run, with the config files in reading order."""
    return ("run", *(f"--config-path={c}" for c in config))


def synapse_env(p: Process) -> dict[str, str]:
    """The image's start.py environment. PGAPPNAME: libpq's default
    application_name, so pg_stat_activity names the process behind each connection."""
    return {"SYNAPSE_WORKER": p.app, "UID": str(SYNAPSE_UID), "GID": str(SYNAPSE_UID),
            "PGAPPNAME": p.name}


def _synapse_spec(plan: Plan, p: Process, shared: Mapping[str, str],
                  partner: str | None = None) -> ContainerSpec:
    """`partner`: the process of its class this one is replaced after (rollout)."""
    s = plan.settings
    files, config = synapse_files(plan, p, shared)
    mounts = [Mount("sockets", SOCKET_DIR), Mount(f"{p.name}-data", DATA_DIR),
              Mount("live-config", LIVE_CONFIG_DIR),
              *(Mount(v, SHARED_MOUNTS[v]) for v in p.volumes)]
    return _spec(
        plan, p.name,
        role="main" if p.is_main else "worker",
        size_of="main" if p.is_main else p.worker_class,
        worker_class=None if p.is_main else p.worker_class,
        image=s.images.synapse,
        command=synapse_command(config),
        entrypoint=("/bin/sh", START_SCRIPT),
        env=synapse_env(p),
        healthcheck=_curl_health(p.health, as_user=f"{SYNAPSE_UID}:{SYNAPSE_UID}",
                                 interval_s=SINGLETON_PROBE_INTERVAL_S if p.is_main
                                 else PROBE_INTERVAL_S),
        files=tuple(files),
        mounts=tuple(mounts),
        networks=("backend", "frontend") if s.egress else ("backend",),
        sockets=p.sockets,
        # Workers refuse to start before main has created the schema; a rolling
        # worker also waits for its partner (rollout.py).
        # Every process waits for its published log config (live-config).
        depends_on=("live-config", *(("postgres", "redis") if p.is_main
                                     else ("main", *filter(None, [partner])))),
        destroy_grace_seconds=30,
        # Root only for start.sh; /start.py then drops to SYNAPSE_UID (gosu, which
        # resets supplementary groups: Synapse's own group is the sockets group).
        # Not read-only: its files are uploads.
        privileges=Privileges(cap_add=SYNAPSE_CAPS),
    )


def _served(s, staged: bool) -> tuple[str, ...]:
    """The files whose content nginx serves: its config, then the operator's
    certificate and key (nginx.tls) or, with ACME, the include naming the client's
    latest (acme_conf). `staged`: the config and the operator's files where
    nginx-config holds them; else where nginx reads them."""
    config = NGINX_STAGED if staged else NGINX_CONF
    if s.nginx.acme:
        return (config, acme_conf.CERTIFICATE_CONF)
    return (config, *(NGINX_STAGED_TLS if staged else NGINX_STAGED_TLS.values()))


def _run_nginx_script(s) -> str:
    """nginx's entrypoint: start the image's command on the published config, then
    watch it. A new config that passes `nginx -t` is loaded with SIGHUP: nginx
    keeps its listening sockets, old workers finish their requests, so nothing is
    dropped. A config that fails the test is refused and the old one kept serving.
    NGINX_LOADED records what is being served (a checksum over the config and,
    with TLS, the certificate and key, or with ACME the include naming them, so a
    renewed certificate is reloaded too); it goes when nginx stops."""
    conf, loaded = shlex.quote(NGINX_CONF), shlex.quote(NGINX_LOADED)
    served_files = " ".join(shlex.quote(f) for f in _served(s, staged=False))
    return "\n".join([
        "#!/bin/sh",
        "set -u",
        f"until [ -s {conf} ]; do sleep 0.2; done",
        f"rm -f {shlex.quote(nginx_conf.HEALTH_SOCKET)}",  # left by a killed nginx
        f'"$@" -c {conf} &',
        "pid=$!",
        # What is served: the config, and with TLS the certificate and key (or ACME's include).
        f"state() {{ cat {served_files} 2>/dev/null | cksum; }}",
        "served=$(state)",
        f'echo "$served" > {loaded}',
        # docker stop sends SIGQUIT (the image's STOPSIGNAL): nginx's graceful stop.
        f'trap \'rm -f {loaded}; kill -QUIT "$pid"; wait "$pid"; exit 0\' TERM QUIT INT',
        'while kill -0 "$pid" 2>/dev/null; do',
        "  sleep 1 & wait $!",
        "  now=$(state)",
        '  [ "$now" = "$served" ] && continue',
        '  served=$now',
        f"  if nginx -t -q -c {conf}; then",
        '    kill -HUP "$pid"',
        "    sleep 1  # the master has re-read it and started new workers",
        f'    echo "$now" > {loaded}',
        '    echo "run.sh: new config loaded ($now)"',
        "  else",
        '    echo "run.sh: new config refused by nginx -t; still serving the previous one" >&2',
        "  fi",
        "done",
        f"rm -f {loaded}",
        'wait "$pid"',
        "",
    ])


def _publish_script() -> str:
    """The nginx-config container: copy its config (and with TLS the certificate
    and key, before it) into the shared volume (an atomic rename, so nginx never
    reads half a file), then stay up: the provider starts a stopped container
    again on every up. The certificate and key are staged as root's 0444 uploads
    (File.non_root_reader); what nginx reads is nginx's own 0400 copy."""
    copies = [*((src, dst, SECRET_FILE_MODE) for src, dst in NGINX_STAGED_TLS.items()),
              (NGINX_STAGED, NGINX_CONF, "0644")]  # the config last
    return "\n".join([
        "#!/bin/sh",
        "set -eu",
        f"mkdir -p {shlex.quote(nginx_conf.TLS_DIR)}",
        *(f"if [ -e {shlex.quote(src)} ]; then cp {shlex.quote(src)} {shlex.quote(dst)}.new"
          f" && chmod {mode} {shlex.quote(dst)}.new"
          f" && mv {shlex.quote(dst)}.new {shlex.quote(dst)}; fi" for src, dst, mode in copies),
        "trap 'exit 0' TERM INT QUIT",  # QUIT: the nginx image's STOPSIGNAL
        "while :; do sleep 3600 & wait $! || true; done",
        "",
    ])


def _staged_tls_files(s) -> list[File]:
    """nginx.tls: the operator's certificate chain and key, secret files of the
    nginx user (who publishes them and whose nginx reads them)."""
    if not s.nginx.certificate_given:
        return []
    return [File(t.path, lambda sec, k=t.key: render_secret(k, sec), secret=True,
                 non_root_reader=True)
            for t in secret_keys.for_readers(secret_keys.NGINX)]


def _nginx_privileges(plan: Plan) -> Privileges:
    """nginx runs as its image's user from the start: no root master, so no
    capabilities (it listens above 1024), on a read-only root filesystem. It writes
    its pid file and health socket to /run and the request bodies it buffers
    (uploads) to its temp path: /var/cache/nginx in the official image,
    /var/lib/nginx in Debian's (the stand-in). Those are tmpfs, so bodies are held
    in memory, counted against nginx's limit: room for NGINX_BODY_BUFFERS uploads
    of the largest size at once, beyond which uploads get errors rather than nginx
    being killed for memory. Sized by the upload limit, not by nginx's memory: a
    tmpfs change replaces nginx, a memory change is made in place."""
    body_mb = NGINX_BODY_BUFFERS * plan.settings.max_upload_size_mb
    owned = f"uid={NGINX_UID},gid={NGINX_UID}"
    return Privileges(
        user=NGINX_USER,
        read_only=True,
        tmpfs={
            "/run": f"{owned},mode=0755,size=1m",
            **{path: f"{owned},mode=0700,size={body_mb}m" for path in NGINX_TEMP_DIRS},
        },
    )


def _nginx_specs(plan: Plan) -> tuple[ContainerSpec, ContainerSpec]:
    """(nginx-config, nginx). The config lives in the nginx-config container's
    upload: the provider can only change an upload by replacing the container
    (uploads are ForceNew), so a routing change replaces that small container,
    and nginx itself, reading the volume, reloads gracefully instead. nginx-config
    turns healthy once nginx serves its config, so the provider's `wait` holds the
    up (and the deletion of workers scaled away, which comes last) until then."""
    s = plan.settings
    loaded = shlex.quote(NGINX_LOADED)
    # What nginx serves when it serves these files: same order as its run.sh.
    staged = " ".join(shlex.quote(f) for f in _served(s, staged=True))
    acme = (Mount("acme-public", acme_conf.PUBLIC, read_only=True),) if s.nginx.acme else ()
    publisher = _spec(
        plan, "nginx-config", size_of="nginx",
        image=s.images.nginx,
        command=(NGINX_PUBLISH,),
        entrypoint=("/bin/sh",),
        # Served by nginx, or no nginx yet (the first up starts nginx after this).
        # Every 2 s like the other singletons, not 1 s: its probes run as long as
        # the stack does, ~70 ms of CPU each (benchmarks/bench_serving.py), for at
        # most a second more per routing change.
        healthcheck=Healthcheck(("CMD-SHELL",
                                 f"test ! -e {loaded} || "
                                 f'test "$(cat {loaded})" = "$(cat {staged} 2>/dev/null | cksum)"'),
                                interval_s=SINGLETON_PROBE_INTERVAL_S, start_period_s=0),
        files=(File(NGINX_STAGED, lambda _sec: nginx_conf.render_nginx_conf(plan)),
               File(NGINX_PUBLISH, lambda _sec: _publish_script(), executable=True),
               *_staged_tls_files(s)),
        mounts=(Mount("nginx-config", NGINX_LIVE_DIR), *acme),
        # Publish routes only once every process they name is healthy.
        depends_on=tuple(p.name for p in plan.processes if p.inbound),
        destroy_grace_seconds=5,
        # nginx's user, which owns the nginx-config volume. Not read-only: its
        # config is an upload.
        privileges=Privileges(user=NGINX_USER),
    )
    nginx = _spec(
        plan, "nginx",
        image=s.images.nginx,
        command=("nginx", "-g", "daemon off;"),
        # The script is an argument, not an upload: Docker refuses uploads into a
        # read-only container.
        entrypoint=("/bin/sh", "-c", _run_nginx_script(s), NGINX_RUN_NAME),
        healthcheck=_curl_health(Endpoint(path=nginx_conf.HEALTH_SOCKET),
                                 interval_s=SINGLETON_PROBE_INTERVAL_S),
        mounts=(Mount("sockets", SOCKET_DIR), Mount("nginx-config", NGINX_LIVE_DIR), *acme),
        networks=("frontend",),
        ports=(
            Port(NGINX_PORTS["client"], s.nginx.client_port, s.nginx.bind_address),
            Port(NGINX_PORTS["federation"], s.nginx.federation_port, s.nginx.bind_address),
            Port(NGINX_PORTS["admin"], s.nginx.admin_port, s.nginx.admin_bind_address),
            *([Port(NGINX_PORTS["http"], s.nginx.http_port, s.nginx.bind_address)]
              if s.nginx.tls else []),
        ),
        depends_on=("nginx-config",),
        privileges=_nginx_privileges(plan),
    )
    return publisher, nginx


def prometheus_args(s) -> tuple[str, ...]:
    """The image's entrypoint is /bin/prometheus: its CMD, plus retention."""
    return (f"--config.file={prometheus_conf.CONFIG_PATH}",
            f"--storage.tsdb.path={prometheus_conf.DATA_DIR}",
            f"--storage.tsdb.retention.time={s.metrics.retention_days}d")


def _prometheus_spec(plan: Plan) -> ContainerSpec:
    """Prometheus scraping every Synapse process's metrics listener on the backend
    network; its UI and API published on loopback only (it has no authentication),
    which takes the frontend network: Docker publishes no port of a container on
    internal networks alone. Its targets are files live-config publishes
    (prometheus_conf: file_sd_configs), so scaling changes them, not Prometheus."""
    s = plan.settings
    ready = f"http://127.0.0.1:{prometheus_conf.PORT}/-/ready"
    return _spec(
        plan, "prometheus",
        image=s.images.prometheus,
        command=prometheus_args(s),
        # The official image is busybox: wget, no curl (the stand-in has both).
        healthcheck=Healthcheck(("CMD", "wget", "-q", "-O", "/dev/null", ready)),
        files=(File(prometheus_conf.CONFIG_PATH,
                    lambda _sec: prometheus_conf.render_prometheus_conf(plan)),),
        mounts=(Mount("prometheus-data", prometheus_conf.DATA_DIR),
                Mount("live-config", prometheus_conf.LIVE_DIR, read_only=True)),
        depends_on=("live-config",),
        networks=("backend", "frontend"),
        ports=(Port(prometheus_conf.PORT, s.metrics.port, prometheus_conf.BIND_ADDRESS),),
        # The image's user from the start, no capabilities. Not read-only: its
        # config is an upload.
        privileges=Privileges(user=f"{PROMETHEUS_UID}:{PROMETHEUS_UID}"),
    )


def _acme_spec(plan: Plan) -> ContainerSpec:
    """nginx.tls: acme: the ACME client (acme_conf), lego's image run as that image
    runs (root; it owns both its volumes), with no capabilities: it writes only
    to its retained store and to the tmpfs it shares with nginx (0750, root and
    nginx's group). On the frontend network: it reaches the ACME server, and
    nginx's plain-HTTP listener serves its challenge tokens. The provider does not
    wait for it to be healthy: an ACME server that is down must not fail `up`;
    the health (and the metric) tells whether a certificate is served."""
    s = plan.settings
    acme = s.nginx.acme
    bundle = (File(acme_conf.CA_BUNDLE, lambda _sec: acme.ca_bundle),) if acme.ca_bundle else ()
    return _spec(
        plan, "acme", size_of="nginx",
        image=s.images.acme,
        command=(acme_conf.RUN_SCRIPT,),
        entrypoint=("/bin/sh",),
        env=acme_conf.env(acme),
        healthcheck=Healthcheck(acme_conf.healthcheck_test(), start_period_s=120),
        files=(File(acme_conf.RUN_SCRIPT, lambda _sec: acme_conf.render_run_script(acme),
                    executable=True), *bundle),
        mounts=(Mount("acme-data", acme_conf.STORE), Mount("acme-public", acme_conf.PUBLIC)),
        networks=("frontend",),
        depends_on=("nginx",),
        wait_healthy=False,
    )


def _live_config_spec(plan: Plan, shared: Mapping[str, str], hosts: Mapping[str, str]
                      ) -> ContainerSpec:
    """live-config: what running processes re-read, delivered as nginx's config is
    (a small container whose uploads change, a volume, a signal): Synapse's log
    configs (each process's watcher sends SIGHUP: _start_script) and Prometheus's
    target files (it watches them). A log level or a worker count changes this
    container only. It runs nginx's image (a shell and coreutils; not Synapse's, so
    a Synapse upgrade leaves it alone) as the Synapse user, who owns the volume."""
    s = plan.settings
    files = live_config.published(plan, shared, hosts)
    staged = tuple(File(f"{live_config.STAGE}/{rel}", lambda _sec, t=text: t)
                   for rel, text in sorted(files.items()))
    return _spec(
        plan, "live-config", size_of="nginx",
        image=s.images.nginx,
        command=(live_config.PUBLISH,),
        entrypoint=("/bin/sh",),
        healthcheck=Healthcheck(("CMD", "/bin/sh", live_config.CHECK),
                                interval_s=SINGLETON_PROBE_INTERVAL_S, start_period_s=0),
        files=(*staged,
               File(live_config.PUBLISH, lambda _sec: live_config.render_publish_script(
                   files, [p.name for p in plan.processes]), executable=True),
               File(live_config.CHECK, lambda _sec: live_config.render_check_script(files, plan))),
        mounts=(Mount("live-config", LIVE_CONFIG_DIR),),
        privileges=Privileges(user=f"{SYNAPSE_UID}:{SYNAPSE_UID}"),
    )


def _backup_spec(plan: Plan) -> ContainerSpec:
    """synapse:backup: backups on a schedule (backup_conf.py), from the stack's
    Postgres image. It starts as root only to hand its volume to the Synapse user
    (gosu), who reads the media it owns and, in the sockets group, reaches
    Postgres; so the same capabilities as Synapse's start.sh, and no others."""
    s = plan.settings
    return _spec(
        plan, "backup",
        image=s.images.postgres,
        command=(backup_conf.RUN_SCRIPT,),
        entrypoint=("/bin/bash",),
        env=backup_conf.env(s),
        healthcheck=Healthcheck(backup_conf.healthcheck_test(s), start_period_s=0),
        files=(File(backup_conf.RUN_SCRIPT,
                    lambda _sec: backup_conf.render_run_script(s, SYNAPSE_UID), executable=True),
               File(backup_conf.METRICS_SCRIPT, lambda _sec: backup_conf.render_metrics_script()),
               # Sealed (only the passphrase opens it), read by the Synapse user.
               File(backup_conf.SEALED_SECRETS,
                    lambda sec: backup_conf.render_sealed_secrets(s, sec),
                    secret=True, non_root_reader=True)),
        mounts=(Mount("sockets", SOCKET_DIR), Mount("media", MEDIA_DIR, read_only=True),
                Mount("backups", backup_conf.BACKUP_DIR)),
        depends_on=("main",),  # main has made (or migrated) the schema it dumps
        privileges=Privileges(cap_add=SYNAPSE_CAPS),
    )


# Postgres's sockets: 0770, so only the sockets group (their group, as the
# directory is setgid) connects. Local connections are trusted (the image's
# pg_hba.conf): whoever reaches the socket is the database's superuser.
POSTGRES_SOCKET_ARGS = ("-c", "unix_socket_permissions=0770")
SOCKETS_VOLUME_OPTIONS = f"mode=3771,uid=0,gid={SOCKETS_GID}"


POSTGRES_ENV = {
    "POSTGRES_USER": POSTGRES_USER,
    "POSTGRES_DB": POSTGRES_DB,
    # The image's entrypoint reads it on first start (as postgres: its own file).
    "POSTGRES_PASSWORD_FILE": POSTGRES_PASSWORD_FILE,
    # Synapse refuses databases whose collation is not C.
    "POSTGRES_INITDB_ARGS": "--encoding=UTF8 --locale=C",
}


def postgres_tuning_args(s) -> tuple[str, ...]:
    """Tuned from the container's size, then synapse:postgres.settings, as `-c`s."""
    return tuple(a for k, v in sorted(postgres_settings(s).items()) for a in ("-c", f"{k}={v}"))


def postgres_ready(where: str) -> str:
    """Postgres' healthcheck: the final server (PID 1, not the image's init-time
    temporary one) accepts connections at `where` (pg_isready's -h/-p arguments)."""
    return (f'test "$(head -n1 {POSTGRES_DATA}/postmaster.pid 2>/dev/null)" = 1'
            f" && pg_isready -q {where} -U {POSTGRES_USER} -d {POSTGRES_DB}")


def build_deployment(plan: Plan) -> Deployment:
    s = plan.settings
    pg_socket_dirs = f"/var/run/postgresql,{POSTGRES_SOCKET_DIR}"

    postgres = _spec(
        plan, "postgres",
        image=s.images.postgres,
        command=(
            "postgres",
            "-c", f"unix_socket_directories={pg_socket_dirs}",
            "-c", "listen_addresses=",  # sockets only
            *POSTGRES_SOCKET_ARGS,
            *postgres_tuning_args(s),
        ),
        env=POSTGRES_ENV,
        # The image's init-time temporary server also listens on /sockets (it gets
        # the same -c arguments), so pg_isready alone can pass before the database
        # exists.
        healthcheck=Healthcheck(("CMD-SHELL", postgres_ready(f"-h {POSTGRES_SOCKET_DIR}")),
                                interval_s=SINGLETON_PROBE_INTERVAL_S),
        files=(File(POSTGRES_PASSWORD_FILE, lambda sec: render_secret("postgresPassword", sec),
                    secret=True, non_root_reader=True),),
        mounts=(Mount("sockets", SOCKET_DIR), Mount("postgres-data", POSTGRES_DATA)),
        sockets=(f"{POSTGRES_SOCKET_DIR}/.s.PGSQL.5432",),
        destroy_grace_seconds=60,  # a clean shutdown avoids crash recovery
        # As postgres from the start (the entrypoint then neither chowns nor gosu's),
        # so it keeps the sockets group that gosu would drop. Not read-only: its
        # password file is an upload.
        privileges=Privileges(user=f"{POSTGRES_UID}:{POSTGRES_UID}", groups=(str(SOCKETS_GID),)),
    )
    redis = _spec(
        plan, "redis",
        image=s.images.redis,
        # Sockets only; Synapse uses Redis for pub/sub and caches, nothing to persist.
        # A bare `--save` means `save ""` (no snapshots): pulumi-docker refuses an
        # empty command element ("values for command may not be empty").
        # Its socket is for the sockets group (Synapse) only: 660.
        command=("redis-server", "--port", "0", "--unixsocket", REDIS_SOCKET,
                 "--unixsocketperm", "660", "--save", "--appendonly", "no"),
        healthcheck=Healthcheck(("CMD-SHELL", f"redis-cli -s {REDIS_SOCKET} ping | grep -q PONG"),
                                interval_s=SINGLETON_PROBE_INTERVAL_S),
        mounts=(Mount("sockets", SOCKET_DIR), Mount("redis-data", "/data")),
        sockets=(REDIS_SOCKET,),
        # As redis from the start, in the sockets group; it writes nothing but its
        # socket, so read-only with no tmpfs at all.
        privileges=Privileges(user=REDIS_USER, groups=(str(SOCKETS_GID),), read_only=True),
    )
    shared = shared_files(plan)
    partners = rollout.partners(plan)
    synapse = [_synapse_spec(plan, p, shared, partners.get(p.name)) for p in plan.processes]
    publisher, nginx = _nginx_specs(plan)
    backup = [_backup_spec(plan)] if s.backup.enabled else []
    metrics = [_prometheus_spec(plan)] if s.metrics.enabled else []
    acme = [_acme_spec(plan)] if s.nginx.acme else []
    live = _live_config_spec(plan, shared, {c.key: c.name for c in (*synapse, *backup)})

    volumes = [
        # Sockets live in RAM, in a directory of root and the sockets group: only
        # its members (Synapse, and Postgres and Redis through group_add) create
        # sockets; setgid gives every socket that group, so Postgres's (0770) and
        # Redis's (0660) are theirs alone; sticky keeps each from removing another's;
        # nginx, outside the group, may only pass through (o+x) to Synapse's 0666
        # inbound sockets. Root (Synapse's start.sh) owns it, so removes stale ones.
        VolumeSpec("sockets", f"{s.name_prefix}-sockets",
                   {"type": "tmpfs", "device": "tmpfs", "o": SOCKETS_VOLUME_OPTIONS},
                   retain=False, shared=True),
        *(VolumeSpec(v, f"{s.name_prefix}-{v}", shared=True) for v in SHARED_MOUNTS),
        # What live-config publishes: derived from the stack, republished by every
        # start of live-config, so not kept. In RAM, the Synapse user's; others
        # (Prometheus) may read it.
        VolumeSpec("live-config", f"{s.name_prefix}-live-config",
                   {"type": "tmpfs", "device": "tmpfs",
                    "o": f"uid={SYNAPSE_UID},gid={SYNAPSE_UID},mode=0755"},
                   retain=False, shared=True),
        VolumeSpec("postgres-data", f"{s.name_prefix}-postgres-data"),
        VolumeSpec("redis-data", f"{s.name_prefix}-redis-data"),
        *(VolumeSpec(f"{p.name}-data", f"{s.name_prefix}-{p.name}-data") for p in plan.processes),
        # Derived from the stack: rebuilt by the next up, so not kept. In RAM and
        # nginx's own (nginx-config and nginx both run as NGINX_UID): nginx-config
        # copies its upload in on every start, so losing it with the last container
        # that mounts it loses nothing.
        VolumeSpec("nginx-config", f"{s.name_prefix}-nginx-config",
                   {"type": "tmpfs", "device": "tmpfs",
                    "o": f"uid={NGINX_UID},gid={NGINX_UID},mode=0700"}, retain=False),
        # Metrics history: kept like the other data volumes.
        *(VolumeSpec("prometheus-data", f"{s.name_prefix}-prometheus-data") for _ in metrics),
        # Backups: kept even by `make destroy-data` (BACKUPS_VOLUME).
        *(VolumeSpec("backups", backups_volume(s.name_prefix)) for _ in backup),
        # ACME: the account key and certificates, kept like data (a new account
        # and certificate each time would run into the CA's rate limits) ...
        *(VolumeSpec("acme-data", f"{s.name_prefix}-acme-data") for _ in acme),
        # ... and what the client shares with nginx (tokens, the published
        # certificate, its status): republished from the store, so in RAM; root's
        # (the client) and readable by nginx's group only.
        *(VolumeSpec("acme-public", f"{s.name_prefix}-acme-public",
                     {"type": "tmpfs", "device": "tmpfs",
                      "o": f"uid=0,gid={NGINX_UID},mode=0750"}, retain=False, shared=True)
          for _ in acme),
    ]
    return Deployment(
        healthcheck_start_interval_s=s.healthcheck_start_interval_s,
        networks={
            # Postgres and Redis only speak over sockets: no way out at all.
            "backend": (f"{s.name_prefix}-backend", True),
            # nginx's and Prometheus's published ports, and Synapse's outbound
            # federation if egress.
            "frontend": (f"{s.name_prefix}-frontend", False),
        },
        volumes=tuple(volumes),
        containers=(postgres, redis, live, *synapse, publisher, nginx, *acme, *backup, *metrics),
    )
