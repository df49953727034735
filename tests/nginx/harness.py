"""Real nginx in front of stub Synapse processes, for the routing tests.

`FrontDoor.start(plan)` renders the plan's nginx.conf, rewrites only what cannot
work on a test host (listen ports, socket/log/pid/temp paths), starts one stub HTTP
server per upstream UNIX socket and the host's nginx binary, and sends requests
through it. Each stub answers with its process name (header `X-Stub-Process` and a
JSON body echoing what it received), so a test sees which process nginx chose.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import socketserver
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from components.render import acme_conf
from components.render import nginx_conf
from components.plan.topology import SOCKET_DIR, Plan

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
)
STUB_HEADER = "X-Stub-Process"
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


def require_nginx() -> str:
    if NGINX is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx (Debian package 'nginx')")
    return NGINX


# --- stub Synapse processes -----------------------------------------------------------

class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Synapse
    process_name = "?"
    dies = False  # Stub.dying: reads each request and closes without answering

    def setup(self) -> None:
        super().setup()
        self.requests_on_connection = 0

    def log_message(self, *args) -> None:  # quiet; UNIX peers have no address anyway
        pass

    def _answer(self) -> None:
        self.requests_on_connection += 1
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length) if length else b""
        if self.dies:  # killed mid-request: the request arrived, no answer leaves
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = json.dumps({
            "process": self.process_name,
            "method": self.command,
            "target": self.path,  # the request target exactly as nginx sent it
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "requests_on_connection": self.requests_on_connection,
            "body_sha256": hashlib.sha256(received).hexdigest(),
        }).encode()
        self.send_response(200)
        self.send_header(STUB_HEADER, self.process_name)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


for _m in _METHODS:
    setattr(_StubHandler, f"do_{_m}", _StubHandler._answer)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, *args) -> None:
        self.open_connections: set[socket.socket] = set()
        super().__init__(*args)

    def get_request(self):
        conn, addr = super().get_request()
        self.open_connections.add(conn)
        return conn, addr

    def shutdown_request(self, request) -> None:
        self.open_connections.discard(request)
        super().shutdown_request(request)


class Stub:
    """One stub process listening on a UNIX socket."""

    def __init__(self, name: str, path: str, dies: bool = False) -> None:
        handler = type(f"Stub_{name}", (_StubHandler,), {"process_name": name, "dies": dies})
        self.name, self.path = name, path
        self.server = _UnixServer(path, handler)
        os.chmod(path, 0o666)  # nginx workers may run as another user (nobody)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Gone, as a stopped process is: no listener, no socket file, and its open
        (kept-alive) connections closed."""
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self.server.open_connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if os.path.exists(self.path):
            os.unlink(self.path)


# --- nginx ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ports() -> tuple[int, ...]:
    """Every port a rendered config may listen on, inside its container."""
    return (*nginx_conf.PORTS.values(), acme_conf.METRICS_PORT)


def listened_ports(conf: str) -> list[int]:
    """The TCP ports a rendered config listens on, in order."""
    return [int(p) for p in re.findall(r"(?m)^\s*listen (\d+)[ ;]", conf)]


def for_host(conf: str, root: Path, ports: dict[int, int]) -> str:
    """The product config with only ports and paths moved for a test host
    (`ports`: inside -> host port, for every port it listens on)."""
    conf = conf.replace(f"{SOCKET_DIR}/", f"{root}/sockets/")
    conf = conf.replace(nginx_conf.HEALTH_SOCKET, f"{root}/health.sock")
    conf = conf.replace("/var/log/nginx/", f"{root}/log/")
    conf = conf.replace(f"{nginx_conf.TLS_DIR}/", f"{root}/tls/")
    conf = conf.replace(acme_conf.PUBLIC, f"{root}/acme-public")
    assert set(listened_ports(conf)) <= set(ports), (listened_ports(conf), ports)
    for inside, outside in ports.items():
        conf, n = re.subn(rf"(?m)^(\s*)listen {inside}([ ;])", rf"\1listen 127.0.0.1:{outside}\2",
                          conf)
        assert n <= 1, f"expected one 'listen {inside}' in the rendered config, found {n}"
    temp = "".join(f"    {d}_temp_path {root}/tmp/{d};\n"
                   for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf, n = re.subn(r"(?m)^http \{\n", "http {\n" + temp, conf)
    assert n == 1, "expected one http block"
    return conf


def nginx_t(conf: str) -> subprocess.CompletedProcess:
    """`nginx -t` on a rendered product config (paths moved to a temp dir)."""
    root = Path(tempfile.mkdtemp(prefix="ngxt"))
    try:
        for d in ("log", "tmp", "sockets"):
            (root / d).mkdir()
        path = root / "nginx.conf"
        path.write_text(for_host(conf, root, {p: _free_port() for p in _ports()}))
        return subprocess.run(
            [require_nginx(), "-t", "-q", "-c", str(path), "-p", str(root),
             "-g", f"pid {root}/nginx.pid;"],
            capture_output=True, text=True, timeout=30,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def process(self) -> str | None:
        """The stub that answered, or None when nginx answered itself."""
        return self.headers.get(STUB_HEADER.lower())

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class FrontDoor:
    plan: Plan
    root: Path
    port: int  # nginx's 8008
    federation_port: int  # nginx's 8448
    ports: dict[int, int]  # every listener: inside port -> host port
    proc: subprocess.Popen
    stubs: dict[str, Stub]  # socket path (moved) -> stub
    # nginx.tls: the context requests to the public listeners use (trusting the CA).
    tls_context: ssl.SSLContext | None = None
    ca_file: str | None = None
    _conns: dict[int, http.client.HTTPConnection] = field(default_factory=dict)

    @classmethod
    def start(cls, plan: Plan, root: Path | None = None,
              tls: tuple[str, str, Path] | None = None) -> "FrontDoor":
        """`root`: a directory to create and use (same root, same socket paths, same
        hash ring); by default a new temp dir. Either way stop() removes it.
        `tls`: (fullchain PEM, key PEM, CA file) for a plan with nginx.tls."""
        binary = require_nginx()
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="ngx"))  # short: UNIX socket paths are limited
        else:
            root.mkdir()
        os.chmod(root, 0o755)  # nginx workers (maybe `nobody`) must reach the sockets
        for d in ("log", "tmp", "sockets", "tls", "acme-public"):
            (root / d).mkdir()
            os.chmod(root / d, 0o755)
        if tls:
            (root / "tls" / Path(nginx_conf.TLS_CERTIFICATE).name).write_text(tls[0])
            (root / "tls" / Path(nginx_conf.TLS_KEY).name).write_text(tls[1])
        ports = {p: _free_port() for p in _ports()}
        port, fed_port = ports[nginx_conf.PORTS["client"]], ports[nginx_conf.PORTS["federation"]]
        conf = for_host(nginx_conf.render_nginx_conf(plan), root, ports)
        (root / "nginx.conf").write_text(conf)

        # A stub on every socket the config proxies to; each must be a process's.
        names = {p.inbound.path.replace(f"{SOCKET_DIR}/", f"{root}/sockets/"): p.name
                 for p in plan.processes if p.inbound}
        stubs: dict[str, Stub] = {}
        for path in sorted(set(re.findall(r"server unix:(\S+?)[\s;]", conf))):
            assert path in names, f"the config proxies to {path}, which is no process's socket"
            stubs[path] = Stub(names[path], path)

        proc = subprocess.Popen(
            [binary, "-c", str(root / "nginx.conf"), "-p", str(root),
             "-g", f"daemon off; pid {root}/nginx.pid;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        door = cls(plan, root, port, fed_port, ports, proc, stubs)
        if tls:
            door.ca_file = str(tls[2])
            door.tls_context = ssl.create_default_context(cafile=door.ca_file)
        door._wait_ready()
        return door

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2), \
                        socket.create_connection(("127.0.0.1", self.federation_port), timeout=0.2):
                    if (self.root / "health.sock").exists():
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("nginx did not start listening within 10 s")

    def stop(self) -> None:
        for c in self._conns.values():
            c.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        for s in self.stubs.values():
            s.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- processes going away ---

    def stub_of(self, process: str) -> str:
        """The (moved) socket path of a process's stub."""
        return next(path for path, stub in self.stubs.items() if stub.name == process)

    def take_down(self, *processes: str) -> None:
        """Those processes stop: their sockets are gone (a restarting container).
        Their kept-alive connections close with them."""
        for name in processes:
            self.stubs[self.stub_of(name)].stop()
        time.sleep(0.1)  # nginx notices its idle connections to them closing

    def make_dying(self, process: str) -> None:
        """The process accepts each request and dies before answering it."""
        path = self.stub_of(process)
        self.stubs[path].stop()
        self.stubs[path] = Stub(process, path, dies=True)
        time.sleep(0.1)

    def make_busy(self, process: str) -> list[socket.socket]:
        """The process's accept backlog is full: connecting to it fails at once
        with EAGAIN, as to a Synapse whose reactor is behind (backlog 50). Keep the
        returned sockets open while it should stay busy."""
        path = self.stub_of(process)
        self.stubs[path].stop()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o666)
        listener.listen(0)
        time.sleep(0.1)
        held = [listener]
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except BlockingIOError:
                c.close()
                return held
            held.append(c)

    # --- requests ---

    def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, port: int | None = None,
                host: str = "127.0.0.1") -> Response:
        """One request over a kept-alive connection (target sent byte for byte);
        over TLS to the public listeners of a door started with `tls`."""
        port = port or self.port
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b"{}"
        for attempt in (1, 2):
            conn = self._conns.get(port)
            if conn is None:
                conn = self._conns[port] = self.connection(port, host)
            try:
                conn.request(method, target, body=body, headers=headers or {})
                r = conn.getresponse()
                data = r.read()
                return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                del self._conns[port]
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def connection(self, port: int, host: str = "127.0.0.1",
                   context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
        public = port in (self.port, self.federation_port)
        if self.tls_context and public:
            return http.client.HTTPSConnection(host, port, timeout=10,
                                               context=context or self.tls_context)
        return http.client.HTTPConnection(host, port, timeout=10)

    def health(self) -> Response:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(self.root / "health.sock"))
        conn = http.client.HTTPConnection("localhost")
        conn.sock = sock
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def reload(self) -> None:
        """What nginx's entrypoint does on a new config: SIGHUP (it passed nginx -t)."""
        self.proc.send_signal(signal.SIGHUP)

    def access_log(self) -> list[str]:
        path = self.root / "log" / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def route_of(self, method: str, target: str) -> str:
        """The routing rule nginx logged for the last such request (diagnostics)."""
        for line in reversed(self.access_log()):
            if f'"{method} {target} ' in line:
                m = re.search(r"route=(\S+)", line)
                return m.group(1) if m else "?"
        return "?"
