"""Contract tests of the stand-in images built by tests/e2e/images/build.py.

They check what the program relies on from each official image, on a real
engine (run tests/e2e/host_setup.sh first). Containers run without a network
(loopback only) and talk through a shared sockets volume, as in the stack.
"""
import base64
import hashlib
import hmac
import io
import json
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.e2e

PREFIX = "imgtest-"
BUILD = Path(__file__).parent / "images" / "build.py"
SYNAPSE = "matrixdotorg/synapse:v1.163.2"
POSTGRES = "postgres:15-bookworm"
REDIS = "redis:7.0-bookworm"
NGINX = "nginx:1.22.1"
PROMETHEUS = "prom/prometheus:v2.42.0"
LEGO = "goacme/lego:v4.9.1"
PG_ENV = {
    "POSTGRES_USER": "synapse",
    "POSTGRES_PASSWORD": "imgtest-password",
    "POSTGRES_DB": "synapse",
    "POSTGRES_INITDB_ARGS": "--encoding=UTF8 --locale=C",
}
PG_ARGS = ["-c", "unix_socket_directories=/var/run/postgresql,/sockets", "-c", "listen_addresses="]
PG_READY = '[ "$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null)" = 1 ] && pg_isready -q -h /sockets'
REDIS_SOCKET = "/sockets/synapse_redis.sock"
REDIS_ARGS = ["--unixsocket", REDIS_SOCKET, "--unixsocketperm", "666", "--port", "0"]


def remove_leftovers(client):
    for container in client.containers.list(all=True, filters={"name": PREFIX}):
        if container.name.startswith(PREFIX):
            container.remove(force=True, v=True)  # and its anonymous volumes
    for volume in client.volumes.list(filters={"name": PREFIX}):
        if volume.name.startswith(PREFIX):
            volume.remove(force=True)


@pytest.fixture(scope="session")
def client():
    # No engine is a failure, not a skip: these tests are the proof the images work.
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker engine ({error}); run `bash tests/e2e/host_setup.sh` as root",
                    pytrace=False)
    remove_leftovers(client)
    yield client
    remove_leftovers(client)


@pytest.fixture(scope="session")
def images(client):
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BUILD)], capture_output=True, text=True)
    assert result.returncode == 0, f"build.py failed:\n{result.stdout}\n{result.stderr}"
    print(f"\nbuild.py ({time.monotonic() - started:.1f} s): {result.stdout.strip()}")


@pytest.fixture
def volume(client):
    """Factory of named volumes, removed (with their containers) after the test."""
    def make(role, prepare=None):
        name = f"{PREFIX}{role}-{secrets.token_hex(3)}"
        client.volumes.create(name)
        if prepare:  # what the program must do itself before services start
            run_once(client, REDIS, entrypoint=["sh", "-c", prepare],
                     network_mode="none", volumes={name: {"bind": "/v"}})
        return name

    yield make
    remove_leftovers(client)


@pytest.fixture
def sockets(volume):
    """Shared socket dir: 1777, as the services run under different UIDs."""
    return volume("sockets", prepare="chmod 1777 /v")


def run_once(client, image, **options):
    """Run a one-off container to completion and remove it with its anonymous
    volumes (the SDK's run(remove=True) leaves the images' VOLUME dirs behind)."""
    container = client.containers.run(image, detach=True, **options)
    try:
        status = container.wait(timeout=60)["StatusCode"]
        assert status == 0, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)


def start(client, image, role, files=None, **options):
    """Create, upload files (like the program's uploads), start."""
    options.setdefault("network_mode", "none")
    container = client.containers.create(image, name=f"{PREFIX}{role}-{secrets.token_hex(3)}",
                                         **options)
    if files:
        container.put_archive("/", tar(files))
    container.start()
    return container


def tar(files):
    """{path: (bytes, mode, uid)} -> tar archive, root-relative."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, (content, mode, uid) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(content), mode, uid, uid
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def run_ok(container, command, **options):
    code, output = container.exec_run(command, **options)
    assert code == 0, f"{command} exited {code}: {output.decode(errors='replace')}"
    return output.decode().strip()


def wait_until(what, check, container, timeout=60):
    """Poll check() until it returns true; fail early if the container died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        container.reload()
        assert container.status == "running", f"{what}: container exited\n{logs(container)}"
        time.sleep(0.2)
    pytest.fail(f"{what}: not ready after {timeout} s\n{logs(container)}")


def logs(container):
    return container.logs().decode(errors="replace")


def proc_ids(container):
    """Real uid and gid of the container's PID 1."""
    status = run_ok(container, ["cat", "/proc/1/status"])
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def start_postgres(client, pgdata, sockets):
    started = time.monotonic()
    container = start(client, POSTGRES, "postgres", command=["postgres", *PG_ARGS],
                      environment=PG_ENV, volumes={pgdata: {"bind": "/var/lib/postgresql/data"},
                                                   sockets: {"bind": "/sockets"}})
    # pg_isready alone also passes for the temporary server that runs during
    # init (it gets the same socket dirs); the real server is PID 1.
    ready = wait_until("postgres", lambda: container.exec_run(["sh", "-c", PG_READY]).exit_code
                       == 0, container)
    print(f"\npostgres ready in {ready - started:.1f} s")
    return container


def start_redis(client, sockets):
    container = start(client, REDIS, "redis", command=["redis-server", *REDIS_ARGS],
                      volumes={sockets: {"bind": "/sockets"}})
    wait_until("redis", lambda: container.exec_run(
        ["redis-cli", "-s", REDIS_SOCKET, "ping"]).output.strip() == b"PONG", container)
    return container


def test_postgres_initialises_once_and_listens_on_shared_socket(client, images, volume, sockets):
    pgdata = volume("pgdata")
    first = start_postgres(client, pgdata, sockets)
    psql = ["psql", "-h", "/sockets", "-U", "synapse", "-d", "synapse", "-tAc"]
    assert run_ok(first, psql + [
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = 'synapse'"]) == "UTF8|C|C"
    assert run_ok(first, psql + [
        "SELECT rolsuper, rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
        "WHERE rolname = 'synapse'"]) == "t|t"
    run_ok(first, psql + ["CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)"])
    assert proc_ids(first) == (999, 999)  # dropped to postgres, not root
    assert run_ok(first, ["stat", "-c", "%a", "/sockets/.s.PGSQL.5432"]) == "777"
    # ... and reachable from another container through the shared volume.
    run_once(client, POSTGRES, entrypoint=["pg_isready", "-h", "/sockets"],
             network_mode="none", volumes={sockets: {"bind": "/sockets"}})
    first.stop(timeout=10)  # SIGINT: fast shutdown, clean exit
    assert first.wait()["StatusCode"] == 0
    assert logs(first).count("PostgreSQL init process complete") == 1

    second = start_postgres(client, pgdata, sockets)
    assert "Skipping initialization" in logs(second)
    assert "init process complete" not in logs(second)
    assert run_ok(second, psql + ["SELECT n FROM kept"]) == "42"


def test_redis_answers_on_shared_socket_as_redis_user(client, images, sockets):
    redis = start_redis(client, sockets)
    assert proc_ids(redis) == (998, 998)
    assert run_ok(redis, ["stat", "-c", "%U %a", "/data"]).startswith("redis ")
    assert run_ok(redis, ["stat", "-c", "%a", REDIS_SOCKET]) == "666"
    assert run_ok(redis, ["redis-cli", "-s", REDIS_SOCKET, "set", "k", "v"]) == "OK"


NGINX_CONF = b"""
# No `user` directive: the master stays root, workers run as the default user.
events {}
http {
    server {
        listen 8080;
        location / { return 200 "stand-in ok\\n"; }
    }
}
"""


def test_nginx_serves_uploaded_config_and_logs_to_stdout(client, images):
    nginx = start(client, NGINX, "nginx", files={"/etc/nginx/nginx.conf": (NGINX_CONF, 0o644, 0)})
    wait_until("nginx", lambda: nginx.exec_run(["curl", "-fsS", "http://localhost:8080/"])
               .output == b"stand-in ok\n", nginx)
    assert '"GET / HTTP/1.1" 200' in nginx.logs(stdout=True, stderr=False).decode()
    nginx.stop(timeout=10)  # SIGQUIT: graceful shutdown
    assert nginx.wait()["StatusCode"] == 0


def test_prometheus_runs_as_nobody_on_its_volume_and_accepts_the_rendered_config(
        client, images, volume):
    """prom/prometheus's contract: /bin/prometheus as nobody (65534), its data in
    the /prometheus volume (a fresh volume takes the image's owner), the config at
    /etc/prometheus/prometheus.yml; promtool accepts what the program renders, and
    /-/ready answers to the healthcheck's wget."""
    from components.render.containers import PROMETHEUS_UID, build_deployment
    from components.render.prometheus_conf import CONFIG_PATH
    from components.plan.settings import load_settings
    from components.plan.topology import build_plan

    spec = build_deployment(build_plan(load_settings({"serverName": "example.org"}, "img"))
                            ).container("prometheus")
    conf = spec.rendered_files()[CONFIG_PATH].encode()
    data = volume("prometheus")
    prom = start(client, PROMETHEUS, "prometheus", volumes={data: {"bind": "/prometheus"}},
                 files={CONFIG_PATH: (conf, 0o644, PROMETHEUS_UID)})
    assert prom.attrs["Config"]["Entrypoint"] == ["/bin/prometheus"]
    wait_until("prometheus", lambda: prom.exec_run(list(spec.healthcheck.test[1:])).exit_code == 0,
               prom)
    assert proc_ids(prom) == (PROMETHEUS_UID, PROMETHEUS_UID)
    assert "SUCCESS" in run_ok(prom, ["promtool", "check", "config", CONFIG_PATH])
    assert run_ok(prom, ["stat", "-c", "%u", "/prometheus/wal"]) == str(PROMETHEUS_UID)
    prom.stop(timeout=10)
    assert prom.wait()["StatusCode"] == 0


def test_lego_is_the_entrypoint_as_root_and_runs_the_rendered_script(client, images):
    """goacme/lego's contract: /usr/bin/lego as the entrypoint, run as root; a
    shell and the tools the rendered loop uses (busybox's in the official image,
    proven in tests/nginx/test_acme.py). The loop, with no ACME server reachable
    (no network), reports the failure in its state and keeps running."""
    from components.plan.settings import load_settings
    from components.plan.topology import build_plan
    from components.render import acme_conf
    from components.render.containers import build_deployment

    raw = {"serverName": "example.org", "publicBaseUrl": "https://m.example.org/",
           "nginx": {"tls": "acme", "acme": {"email": "ops@example.org", "retrySeconds": 1}}}
    spec = build_deployment(build_plan(load_settings(raw, "img"))).container("acme")
    image = client.images.get(LEGO)
    assert image.attrs["Config"]["Entrypoint"] == ["/usr/bin/lego"]
    assert image.attrs["Config"]["User"] in ("", "root")
    files = {path: (text.encode(), 0o755, 0) for path, text in spec.rendered_files().items()}
    lego = start(client, LEGO, "lego", files=files, entrypoint=list(spec.entrypoint),
                 command=list(spec.command))
    wait_until("the loop's first state", lambda: lego.exec_run(
        ["cat", acme_conf.STATE]).output.startswith(b"failing: no certificate"), lego)
    assert lego.exec_run(["sh", "-c", spec.healthcheck.test[1]]).exit_code == 1  # CMD-SHELL
    assert "lego version" in run_ok(lego, ["lego", "--version"])
    assert proc_ids(lego) == (0, 0)
    lego.stop(timeout=10)  # TERM: the loop's trap exits 0
    assert lego.wait()["StatusCode"] == 0


# A module that reports how start.py launched it, in place of a Synapse app.
WHOAMI = b"""
import json, os, sys
print("WHOAMI " + json.dumps({"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(),
                              "python": sys.executable, "argv": sys.argv[1:]}))
"""


@pytest.mark.parametrize("command, environment, user, expected", [
    ([], {"SYNAPSE_WORKER": "whoami"}, None,
     {"uid": 991, "gid": 991, "argv": ["--config-path", "/data/homeserver.yaml"]}),
    (["run", "-c", "/elsewhere.yaml"], {"SYNAPSE_WORKER": "whoami", "UID": "1234"}, None,
     {"uid": 1234, "gid": 991, "argv": ["-c", "/elsewhere.yaml"]}),
    (["run", "-m", "whoami", "--config-path=/x.yaml"], {"UID": "1234", "GID": "5678"}, None,
     {"uid": 1234, "gid": 5678, "argv": ["--config-path=/x.yaml"]}),
    (["run", "-m", "whoami"], {"SYNAPSE_CONFIG_DIR": "/cfg"}, "4321:4321",
     {"uid": 4321, "gid": 4321, "argv": ["--config-path", "/cfg/homeserver.yaml"]}),
    (["run", "-m", "whoami"], {"SYNAPSE_CONFIG_PATH": "/cfg/homeserver.yaml"}, None,
     {"uid": 991, "gid": 991, "argv": ["--config-path", "/cfg/homeserver.yaml"]}),
], ids=["defaults", "worker-env-and-uid", "explicit-m-uid-gid", "non-root-config-dir",
        "config-path-env"])
def test_start_py_builds_the_synapse_command(client, images, command, environment, user,
                                             expected):
    files = {"/opt/whoami/whoami.py": (WHOAMI, 0o644, 0),
             "/data/homeserver.yaml": (b"{}\n", 0o644, 0),
             "/cfg/homeserver.yaml": (b"{}\n", 0o644, 0)}
    container = start(client, SYNAPSE, "startpy", files=files, command=command, user=user,
                      environment={"PYTHONPATH": "/opt/whoami", **environment})
    assert container.wait(timeout=30)["StatusCode"] == 0, logs(container)
    line = next(l for l in logs(container).splitlines() if l.startswith("WHOAMI "))
    seen = json.loads(line.removeprefix("WHOAMI "))
    assert seen["pid"] == 1, "exec, so Synapse gets the signals"
    assert seen["python"] == "/opt/synapse/bin/python"
    assert {key: seen[key] for key in expected} == expected


def test_start_py_refuses_missing_config(client, images):
    container = start(client, SYNAPSE, "startpy", environment={"SYNAPSE_CONFIG_DIR": "/nowhere"})
    assert container.wait(timeout=30)["StatusCode"] == 2
    assert "Config file '/nowhere/homeserver.yaml' does not exist" in logs(container)


def synapse_config(registration_secret):
    return {
        "server_name": "imgtest.localhost",
        "report_stats": False,
        "signing_key_path": "/data/signing.key",
        "trusted_key_servers": [],
        "media_store_path": "/data/media_store",
        "registration_shared_secret": registration_secret,
        "database": {"name": "psycopg2", "args": {
            "user": "synapse", "password": PG_ENV["POSTGRES_PASSWORD"], "dbname": "synapse",
            "host": "/sockets", "cp_min": 1, "cp_max": 3}},
        "redis": {"enabled": True, "path": REDIS_SOCKET},
        "listeners": [
            # Requests on a UNIX socket carry no client address: nginx adds one.
            {"path": "/sockets/synapse-main.sock", "type": "http", "x_forwarded": True,
             "resources": [{"names": ["client", "federation"]}]},
            # What the image's default HEALTHCHECK (curl localhost:8008) expects.
            {"port": 8008, "bind_addresses": ["127.0.0.1"], "type": "http",
             "resources": [{"names": ["client"]}]},
        ],
    }


PROXY_CONF = b"""
events {}
http {
    server {
        listen 8080;
        location / {
            proxy_pass http://unix:/sockets/synapse-main.sock;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Host $host;
        }
    }
}
"""


def test_synapse_serves_through_nginx_with_postgres_and_redis(client, images, volume, sockets):
    # The official run mode chowns nothing: Synapse (991) must own its data volume.
    data = volume("synapse-data", prepare="chown 991:991 /v")
    postgres = start_postgres(client, volume("pgdata"), sockets)
    start_redis(client, sockets)
    key = secrets.token_bytes(32)
    signing_key = f"ed25519 a_imgt {base64.b64encode(key).decode().rstrip('=')}\n"
    registration_secret = secrets.token_hex(16)
    files = {"/data/homeserver.yaml": (json.dumps(synapse_config(registration_secret)).encode(),
                                       0o644, 0),
             "/data/signing.key": (signing_key.encode(), 0o600, 991)}
    started = time.monotonic()
    synapse = start(client, SYNAPSE, "synapse", files=files,
                    volumes={data: {"bind": "/data"}, sockets: {"bind": "/sockets"}})
    nginx = start(client, NGINX, "nginx", files={"/etc/nginx/nginx.conf": (PROXY_CONF, 0o644, 0)},
                  volumes={sockets: {"bind": "/sockets", "mode": "ro"}})
    # Straight onto the UNIX socket listener, from another container.
    ready = wait_until("synapse /health on its socket", lambda: nginx.exec_run(
        ["curl", "-fsS", "--unix-socket", "/sockets/synapse-main.sock", "http://localhost/health"]
    ).output == b"OK", synapse)
    print(f"\nsynapse /health over its UNIX socket {ready - started:.1f} s after start")
    assert run_ok(synapse, ["curl", "-fsS", "http://localhost:8008/health"]) == "OK"
    assert proc_ids(synapse) == (991, 991)

    def call(path, body=None, token=None):
        command = ["curl", "-fsS", f"http://localhost:8080{path}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        if token:
            command += ["-H", f"Authorization: Bearer {token}"]
        return json.loads(run_ok(nginx, command))

    assert "versions" in call("/_matrix/client/versions")
    # Shared-secret registration writes to Postgres; whoami reads it back.
    nonce = call("/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(registration_secret.encode(), b"\0".join(
        [nonce.encode(), b"alice", b"imgtest-alice-pw", b"notadmin"]), hashlib.sha1).hexdigest()
    token = call("/_synapse/admin/v1/register", {
        "nonce": nonce, "username": "alice", "password": "imgtest-alice-pw", "mac": mac,
        "admin": False})["access_token"]
    assert call("/_matrix/client/v3/account/whoami", token=token)["user_id"] == \
        "@alice:imgtest.localhost"
    assert "Connected to redis" in logs(synapse)
    psql = ["psql", "-h", "/sockets", "-U", "synapse", "-d", "synapse", "-tAc"]
    assert run_ok(postgres, psql + ["SELECT name FROM users"]) == "@alice:imgtest.localhost"

    synapse.stop(timeout=10)
    assert synapse.wait()["StatusCode"] == 0
