"""Plan -> nginx.conf: the front door, generated from the routing table (no IO).

`render_nginx_conf(plan)` returns one complete nginx.conf (no includes, no
mime.types). The config is built as a tree of directives and serialised with
proper quoting, never by pasting text.

How a request finds its process:
  1. `map "$request_method $uri" $synapse_route` tries routing.ROUTES in order and
     yields the first matching rule's name (nginx checks map regexes in the order
     they are written; the last rule is the map's `default`).
  2. `map $synapse_route $synapse_upstream` names the rule's upstream, resolved
     against the plan here: a class with no processes, or a stream main still
     writes, resolves to main.
  3. `proxy_pass http://$synapse_upstream` (no URI part, so Synapse receives the
     request URI exactly as the client sent it).
Balanced upstreams hash `$room_key`, `$user_key` or `$origin_key` (maps below).

When a process cannot take a request (restarting, gone, or its accept backlog
full), nginx's `proxy_next_upstream error timeout` tries the class's next
process; when none can, `error_page 502 = @fallback` sends a request routed to a
worker class to main (`map $synapse_route $synapse_fallback`), which serves every
class's endpoints (topology.MAIN_RESOURCES). Neither retries a POST, LOCK or
PATCH that reached a process (nginx's rule for non-idempotent requests, and
`$fallback_safe` for the fallback): those could be applied twice. Stream-writer
routes have no fallback: only the writer may serve them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Union
from urllib.parse import urlsplit

from components.plan import routing
from components.render import acme_conf
from components.plan.routing import MAIN, WRITER, Key, Route
from components.plan.topology import Plan, Process
from components.plan.workers import balance_of

HEALTH_SOCKET = "/run/nginx-health.sock"
# On a Swarm, nginx's writable paths are one tmpfs that is not in the image: Swarm's
# tmpfs mounts take no owner, and over a path the image has they keep its root
# owner (copy-up); a new path gets the mount's mode. So the pid file, the health
# socket and the temporary files all live there.
SWARM_RUN_DIR = "/nginx-run"
SWARM_HEALTH_SOCKET = f"{SWARM_RUN_DIR}/health.sock"
SWARM_SERVED_BY = f"{SWARM_RUN_DIR}/served_by.map"  # address -> process, as resolved
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def swarm_servers_file(process: str) -> str:
    """On a Swarm, a process's `server` lines: its service name's addresses, written
    by nginx's entrypoint (swarm/specs.py) and kept current, so that a task that
    moved is reached at its new address and a name that does not resolve (its task
    between stop and start) leaves nginx's config valid (the process is `down`)."""
    return f"{SWARM_RUN_DIR}/servers/{process}.conf"


def health_socket(plan: Plan) -> str:
    return SWARM_HEALTH_SOCKET if plan.settings.target == "swarm" else HEALTH_SOCKET
SERVED_BY_HEADER = "X-Synapse-Worker"
# nginx's listeners inside its container; the stack publishes each on the host.
PORTS = {
    "client": 8008,
    "federation": 8448,
    "admin": 8009,  # the operator's way to /_synapse/admin: published on loopback
    "http": 8080,  # with nginx.tls only: plain HTTP, redirected to HTTPS
}
LISTEN_PORTS = (PORTS["client"], PORTS["federation"])  # the public listeners
# nginx reads its config (and certificate) from a volume the nginx-config
# container fills (components/render/containers.py).
LIVE_DIR = "/etc/nginx/live"
TLS_DIR = f"{LIVE_DIR}/tls"
TLS_CERTIFICATE = f"{TLS_DIR}/fullchain.pem"
TLS_KEY = f"{TLS_DIR}/privkey.pem"
ACCESS_LOG = "/var/log/nginx/access.log"  # the official image links it to stdout
ERROR_LOG = "/var/log/nginx/error.log"  # ... and this one to stderr

UPSTREAM_KEEPALIVE = 16  # idle connections kept per upstream and nginx worker
PROXY_READ_TIMEOUT = "600s"  # long-polling /sync and /events hold requests open

# The hash variable of each balancing key (defined by the maps in _maps()).
_HASH_VARIABLE = {Key.ROOM: "$room_key", Key.USER: "$user_key", Key.ORIGIN: "$origin_key"}


# --- a tiny nginx config tree ------------------------------------------------------

@dataclass(frozen=True)
class D:
    """A directive; with `block` it is a block (`name args { ... }`)."""

    name: str
    args: tuple[str, ...] = ()
    block: tuple["Node", ...] | None = None


@dataclass(frozen=True)
class Comment:
    text: str


Node = Union[D, Comment]

_BARE = re.compile(r"[A-Za-z0-9_@%./:=,$*+!\[\]-]+")


class Raw(str):
    """An argument written as is: an `if` condition, whose parentheses quoting
    would break."""


def _arg(value: str) -> str:
    """One directive argument. Quoting only protects syntax: nginx still expands
    `$variables` inside quotes, and unescapes backslashes (so they are doubled)."""
    if isinstance(value, Raw) or _BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialise(nodes: Iterable[Node], depth: int = 0) -> list[str]:
    pad = "    " * depth
    out: list[str] = []
    for n in nodes:
        if isinstance(n, Comment):
            out.extend(f"{pad}# {line}".rstrip() for line in n.text.splitlines())
            continue
        head = " ".join(_arg(a) for a in (n.name, *n.args))  # names too: map keys
        if n.block is None:
            out.append(f"{pad}{head};")
        else:
            out.append(f"{pad}{head} {{")
            out.extend(_serialise(n.block, depth + 1))
            out.append(f"{pad}}}")
    return out


def _literal(text: str) -> str:
    """Text nginx must send as is (a `return` body): it would expand `$`."""
    if "$" in text:
        raise ValueError(f"cannot serve {text!r} literally from nginx: it contains '$'")
    return text


# --- upstreams -----------------------------------------------------------------------

@dataclass(frozen=True)
class Upstream:
    name: str
    processes: tuple[Process, ...]
    key: Key


def _reachable(plan: Plan, names: Iterable[str], why: str) -> tuple[Process, ...]:
    procs = tuple(plan.process(n) for n in names)
    for p in procs:
        if p.inbound is None:
            raise ValueError(f"{why} goes to {p.name}, which has no inbound socket")
    return procs


class _Resolver:
    """Routes -> upstreams for one plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.upstreams: dict[str, Upstream] = {}  # the ones some rule uses

    def _add(self, name: str, procs: tuple[Process, ...], key: Key) -> str:
        self.upstreams.setdefault(name, Upstream(name, procs, key))
        return name

    def _process(self, p: Process) -> str:
        return self._add(f"proc_{p.name}", (p,), Key.NONE)

    def upstream(self, route: Route) -> str:
        if route.target == MAIN:
            return self._process(self.plan.main)
        if route.target == WRITER:
            assert route.stream, route.name
            writers = self.plan.stream_writers.get(route.stream, (MAIN,))
            procs = _reachable(self.plan, writers, f"rule {route.name!r} (stream {route.stream})")
            if len(procs) == 1:
                return self._process(procs[0])
            return self._add(f"writers_{route.stream}", procs, Key.NONE)
        procs = self.plan.by_class(route.target)
        if not procs:
            return self._process(self.plan.main)  # class scaled to 0: main serves it
        procs = _reachable(self.plan, (p.name for p in procs), f"rule {route.name!r}")
        return self._add(f"class_{route.target}", procs, balance_of(route.target))

    def fallback(self, route: Route) -> str | None:
        """Main's upstream for a rule nginx sends to a worker class that has
        processes: main serves every class's endpoints. None for main's own rules
        and the stream writers' (only the writer serves them)."""
        if route.target in (MAIN, WRITER) or not self.plan.by_class(route.target):
            return None
        return self._process(self.plan.main)


def _upstream_block(u: Upstream) -> D:
    body: list[Node] = []
    if u.key in _HASH_VARIABLE:
        body.append(D("hash", (_HASH_VARIABLE[u.key], "consistent")))
    for p in u.processes:
        # max_fails=0: never take a process out of the hash ring for a while
        # (which would move its rooms or users); a failed connect still tries
        # the next one.
        if p.inbound.path:
            body.append(D("server", (p.inbound.upstream, "max_fails=0")))
        else:  # a Swarm: the addresses its name resolves to, as nginx's entrypoint wrote them
            body.append(D("include", (swarm_servers_file(p.name),)))
    body.append(D("keepalive", (str(UPSTREAM_KEEPALIVE),)))
    return D("upstream", (u.name,), tuple(body))


# --- maps ----------------------------------------------------------------------------

def _route_regex(route: Route) -> str:
    """The rule as a regex on "$request_method $uri"."""
    if not route.pattern.startswith("^/"):
        raise ValueError(f"rule {route.name!r}: pattern must start with ^/")
    methods = "(?:" + "|".join(route.methods) + ")" if route.methods else r"\S+"
    return f"~^{methods} (?:{route.pattern[1:]})"


def _route_maps(resolver: _Resolver) -> list[Node]:
    *rules, last = routing.ROUTES
    if last.pattern != "^/" or last.methods:
        raise ValueError("the last routing rule must catch every request")
    route_map: list[Node] = []
    for r in rules:
        route_map.append(D(_route_regex(r), (r.name,)))
    route_map.append(D("default", (last.name,)))
    upstream_map: list[Node] = [D(r.name, (resolver.upstream(r),)) for r in rules]
    upstream_map.append(D("default", (resolver.upstream(last),)))
    fallback_map: list[Node] = [D(r.name, (fb,)) for r in routing.ROUTES
                                if (fb := resolver.fallback(r))]
    fallback_map.append(D("default", ("",)))
    return [
        # The file names in these two comments predate components/ being split into layer
        # packages; they are kept so the move changed no rendered byte (no replacement).
        Comment("The routing table (components/routing.py), first match wins."),
        D("map", ("$request_method $uri", "$synapse_route"), tuple(route_map)),
        D("map", ("$synapse_route", "$synapse_upstream"), tuple(upstream_map)),
        Comment("Where a rule's request goes when no process of its class can take it."),
        D("map", ("$synapse_route", "$synapse_fallback"), tuple(fallback_map)),
    ]


def _maps(plan: Plan) -> list[Node]:
    served_by: list[Node] = [D("default", ("$upstream_addr",)), D("", ("nginx",))]
    # The last address: after a retry or the fallback, $upstream_addr lists every
    # process tried ("a, b" within an upstream, "a : b" across the fallback).
    # Over TCP (a Swarm) nginx reports the address it resolved the service name
    # to, which is not known here: the header then carries that address.
    served_by += [D(f"~(?:^| )unix:{re.escape(p.inbound.path)}$", (p.name,))
                  for p in plan.processes if p.inbound and p.inbound.path]
    if plan.settings.target == "swarm":  # written by nginx's entrypoint as names resolve
        served_by.append(D("include", (SWARM_SERVED_BY,)))
    return [
        Comment("Rooms: the room ID (see routing.ROOM_ID_IN_PATH), decoded by nginx."),
        D("map", ("$uri", "$room_key"), (
            D("~" + routing.ROOM_ID_IN_PATH, ("$room_id",)),
            D("default", ("",)),
        )),
        Comment("client_sync: the access token, from the header or the query string;\n"
                "for Synapse's syt_<base64 localpart>_... tokens only the user part, so\n"
                "one user's devices share a worker. Other tokens are hashed whole."),
        D("map", ("$http_authorization", "$access_token"), (
            D(r"~^Bearer\s+(?P<bearer_token>\S+)", ("$bearer_token",)),
            D("default", ("$arg_access_token",)),
        )),
        D("map", ("$access_token", "$user_key"), (
            D("~^syt_(?P<token_user>[^_]+)_", ("$token_user",)),
            D("default", ("$access_token",)),
        )),
        Comment("federation_reader: the signed origin server, else the client address."),
        D("map", ("$http_authorization", "$origin_key"), (
            D(r'~^X-Matrix\s+(?:.*[\s,])?origin="?(?P<matrix_origin>[^",\s]+)',
              ("$matrix_origin",)),
            D("default", ("$remote_addr",)),
        )),
        Comment("The process that served the request, by its socket; nginx if none."),
        D("map", ("$upstream_addr", "$served_by"), tuple(served_by)),
        D("map", ("$http_upgrade", "$connection_upgrade"), (
            D("default", ("upgrade",)),
            # No Upgrade: send no Connection header, so upstream keepalive works.
            D("", ("",)),
        )),
        Comment("May a request that failed on its class go to main? Not a POST, LOCK\n"
                "or PATCH that some process received (nginx's own rule for retries):\n"
                "only one of which no byte was sent."),
        D("map", ("$request_method:$upstream_bytes_sent", "$fallback_safe"), (
            D("~^(?:POST|LOCK|PATCH):[0 ,:]*$", ("1",)),
            D("~^(?:POST|LOCK|PATCH):", ("0",)),
            D("default", ("1",)),
        )),
        Comment("Access tokens in query strings stay out of the log."),
        D("map", ("$request_uri", "$loggable_uri"), (
            D(r"~^(?P<uri_head>[^?]*\?(?:[^#]*&)?access_token=)[^&]*(?P<uri_tail>.*)$",
              ("${uri_head}REDACTED${uri_tail}",)),
            D("default", ("$request_uri",)),
        )),
    ]


# --- servers -------------------------------------------------------------------------

def well_known_server(public_base_url: str) -> str:
    """`m.server` for /.well-known/matrix/server: host:port of the public base URL."""
    parts = urlsplit(public_base_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def _json(doc: dict) -> str:
    return _literal(json.dumps(doc, separators=(", ", ": ")))


_ADMIN_DENIED = D("location", ("@admin_denied",), (
    D("default_type", ("application/json",)),
    D("return", ("403", _json({"errcode": "M_FORBIDDEN",
                               "error": "The admin API is not reachable from here"}))),
))


# A request routed to a class none of whose processes could take it (nginx tried
# each: proxy_next_upstream) goes to main, where main serves it and it is safe.
_PROXY = (D("error_page", ("502", "=", "@fallback")),
          D("proxy_pass", ("http://$synapse_upstream",)))
_FALLBACK = D("location", ("@fallback",), (
    D("if", (Raw('($synapse_fallback = "")'),), (D("return", ("502",)),)),
    D("if", (Raw("($fallback_safe = 0)"),), (D("return", ("502",)),)),
    D("proxy_pass", ("http://$synapse_fallback",)),
))


_HSTS = D("add_header", ("Strict-Transport-Security", "max-age=63072000; includeSubDomains",
                         "always"))


def _certificate(plan: Plan) -> list[Node]:
    """The operator's certificate, published next to this file; or with ACME the
    client's latest, named by the file it publishes (acme_conf), if any yet: a
    glob include may match nothing, and then the http block's
    ssl_reject_handshake refuses TLS until the first certificate arrives."""
    if plan.settings.nginx.acme:
        return [Comment("nginx.tls: acme. Before the first certificate: no such file, no TLS."),
                D("include", (_glob(acme_conf.CERTIFICATE_CONF),))]
    return [D("ssl_certificate", (TLS_CERTIFICATE,)), D("ssl_certificate_key", (TLS_KEY,))]


def _glob(path: str) -> str:
    """A path as an include that may match nothing: its last dot in a character
    class makes nginx treat it as a glob pattern, which may match no file (a plain
    path must exist). It still matches that one path only."""
    head, dot, ext = path.rpartition(".")
    return f"{head}[{dot}]{ext}"


def _tls(plan: Plan) -> list[Node]:
    """The guide's TLS settings (its nginx page, "handle HTTPS directly"): modern
    protocols, AEAD ciphers, a shared session cache and no session tickets. Not its
    OCSP stapling: that needs a resolver and egress from nginx, and Let's Encrypt
    has stopped publishing OCSP responders."""
    return [
        *_certificate(plan),
        D("ssl_protocols", ("TLSv1.2", "TLSv1.3")),
        D("ssl_ciphers", ("EECDH+AESGCM:EDH+AESGCM",)),
        D("ssl_prefer_server_ciphers", ("on",)),
        D("ssl_session_cache", ("shared:SSL:10m",)),
        D("ssl_session_timeout", ("1d",)),
        D("ssl_session_tickets", ("off",)),
    ]


def _served_by(plan: Plan) -> list[Node]:
    """nginx.servedByHeader: the response header naming the process that served."""
    if not plan.settings.nginx.served_by_header:
        return []
    return [D("add_header", (SERVED_BY_HEADER, "$served_by", "always"))]


def _listen(port: int, tls: bool) -> D:
    # nginx 1.22 (the default image) spells HTTP/2 as a listen parameter.
    return D("listen", (str(port), "ssl", "http2") if tls else (str(port),))


def _main_server(plan: Plan) -> D:
    s = plan.settings
    body: list[Node] = [_listen(port, s.nginx.tls) for port in LISTEN_PORTS]
    body.append(D("server_name", ("_",)))
    # A location with its own add_header loses the server's (nginx does not merge
    # them), so every such location repeats these.
    headers = [*([_HSTS] if s.nginx.tls else []), *_served_by(plan)]
    if s.nginx.tls:
        body += _tls(plan)
    body += headers
    if s.nginx.admin_allow:
        admin = (Comment("The admin API from nginx.adminAllow only (the operator opted in)."),
                 *(D("allow", (cidr,)) for cidr in s.nginx.admin_allow), D("deny", ("all",)))
    else:
        admin = (Comment("The admin API is not served here: use the admin listener."),
                 D("deny", ("all",)))
    body += [
        D("location", ("=", "/.well-known/matrix/server"), (
            D("set", ("$synapse_route", "well_known")),  # for the log: not routed
            D("default_type", ("application/json",)),
            D("return", ("200", _json({"m.server": well_known_server(s.public_base_url)}))),
        )),
        D("location", ("=", "/.well-known/matrix/client"), (
            D("set", ("$synapse_route", "well_known")),
            D("default_type", ("application/json",)),
            *headers,
            D("add_header", ("Access-Control-Allow-Origin", "*", "always")),
            D("return", ("200", _json({"m.homeserver": {"base_url": s.public_base_url}}))),
        )),
        D("location", ("/_synapse/admin",), (
            *admin,
            D("error_page", ("403", "@admin_denied")),
            *_PROXY,
        )),
        _ADMIN_DENIED,
        D("location", ("/",), _PROXY),
        _FALLBACK,
    ]
    return D("server", (), tuple(body))


def _admin_server(plan: Plan) -> D:
    """The operator's listener: only /_synapse/admin, routed like any request, to
    whoever reaches it. The stack publishes it on nginx.adminBindAddress (loopback
    by default), so only the host itself does."""
    return D("server", (), (
        D("listen", (str(PORTS["admin"]),)),
        D("server_name", ("_",)),
        *_served_by(plan),
        D("location", ("/_synapse/admin",), _PROXY),
        D("location", ("/",), (D("return", ("404",)),)),
        _FALLBACK,
    ))


def _redirect_server(plan: Plan) -> D:
    """With TLS: plain HTTP answers with a redirect to the same path on the public
    base URL (the guide's HTTP redirect server); with ACME it also serves the
    HTTP-01 tokens the client writes (nginx normalises `..` before matching, so
    nothing else of that volume is reachable)."""
    origin = plan.settings.public_base_url.rstrip("/")
    challenges = [D("location", ("^~", acme_conf.CHALLENGE_PREFIX), (
        D("root", (acme_conf.WEBROOT,)),
        D("default_type", ("text/plain",)),
    ))] if plan.settings.nginx.acme else []
    return D("server", (), (
        D("listen", (str(PORTS["http"]),)),
        D("server_name", ("_",)),
        *challenges,
        D("location", ("/",), (D("return", ("301", f"{_literal(origin)}$request_uri")),)),
    ))


def _acme_metrics_server() -> D:
    """The ACME client's metrics file, for the stack's Prometheus: not published,
    so only containers on nginx's networks reach it."""
    return D("server", (), (
        D("listen", (str(acme_conf.METRICS_PORT),)),
        D("access_log", ("off",)),
        D("location", ("=", "/metrics"), (
            D("default_type", ("text/plain; version=0.0.4",)),
            D("alias", (acme_conf.METRICS_FILE,)),
        )),
        D("location", ("/",), (D("return", ("404",)),)),
    ))


def _health_server(plan: Plan) -> D:
    return D("server", (), (
        D("listen", (f"unix:{health_socket(plan)}",)),
        D("access_log", ("off",)),
        D("location", ("=", "/health"), (
            D("default_type", ("text/plain",)),
            D("return", ("200", "OK")),
        )),
        D("location", ("/",), (D("return", ("404",)),)),
    ))


def _worker_processes(plan: Plan) -> int:
    s = plan.settings
    return max(1, int(s.sizes[s.container_sizes["nginx"]].cpus))


def _http(plan: Plan) -> D:
    s = plan.settings
    resolver = _Resolver(plan)
    routes = _route_maps(resolver)  # creates the class and writer upstreams
    scheme = urlsplit(s.public_base_url).scheme
    body: list[Node] = [
        D("server_tokens", ("off",)),
        D("default_type", ("application/octet-stream",)),
        D("sendfile", ("on",)),
        D("tcp_nodelay", ("on",)),
        D("keepalive_timeout", ("65s",)),
        D("client_max_body_size", (f"{s.max_upload_size_mb}m",)),
        D("large_client_header_buffers", ("4", "32k")),
        D("map_hash_bucket_size", ("256",)),
    ]
    if s.target == "swarm":
        body += [D(f"{t}_temp_path", (f"{SWARM_RUN_DIR}/{t}",)) for t in TEMP_PATHS]
    if s.nginx.acme:
        body.append(Comment("No certificate yet (ACME): refuse TLS handshakes rather than "
                            "fail to start.\nThe published certificate.conf turns this off."))
        body.append(D("ssl_reject_handshake", ("on",)))
    if s.nginx.trusted_proxies:
        body.append(Comment("Believe X-Forwarded-For only from these proxies."))
        body += [D("set_real_ip_from", (cidr,)) for cidr in s.nginx.trusted_proxies]
        body += [D("real_ip_header", ("X-Forwarded-For",)), D("real_ip_recursive", ("on",))]
    body += [*_maps(plan), *routes]
    body += [
        D("log_format", ("synapse",
                         '$remote_addr [$time_local] "$request_method $loggable_uri '
                         '$server_protocol" $status $body_bytes_sent $request_time '
                         "route=$synapse_route served_by=$served_by "
                         'upstream="$upstream_addr" upstream_status=$upstream_status '
                         'upstream_time=$upstream_response_time "$http_user_agent"')),
        D("access_log", (ACCESS_LOG, "synapse")),
        Comment("Proxying, for every location (none sets its own proxy_set_header)."),
        D("proxy_http_version", ("1.1",)),
        D("proxy_set_header", ("Host", "$host")),
        # The connecting address (after realip), never a client-supplied list:
        # Synapse believes the left-most X-Forwarded-For entry.
        D("proxy_set_header", ("X-Forwarded-For", "$remote_addr")),
        D("proxy_set_header", ("X-Forwarded-Proto", scheme)),
        D("proxy_set_header", ("Upgrade", "$http_upgrade")),
        D("proxy_set_header", ("Connection", "$connection_upgrade")),
        # On a Swarm a task's old address can linger for a second after it stopped
        # (until the entrypoint's next lookup): a connect there fails only after
        # ARP gives up (~3 s, "No route to host"). A peer on the overlay answers a
        # connect in milliseconds, so give up after one second and try the next.
        D("proxy_connect_timeout", ("1s" if s.target == "swarm" else "5s",)),
        # nginx's default, stated: a process that refuses the connection or fails
        # before answering hands the request to the class's next process, except a
        # POST, LOCK or PATCH it already received.
        D("proxy_next_upstream", ("error", "timeout")),
        D("proxy_read_timeout", (PROXY_READ_TIMEOUT,)),
        D("proxy_send_timeout", (PROXY_READ_TIMEOUT,)),
        D("proxy_buffering", ("off",)),
        D("proxy_redirect", ("off",)),
    ]
    body += [_upstream_block(u) for u in resolver.upstreams.values()]
    body += [_main_server(plan), _admin_server(plan), _health_server(plan)]
    if s.nginx.tls:
        body.append(_redirect_server(plan))
    if s.nginx.acme:
        body.append(_acme_metrics_server())
    return D("http", (), tuple(body))


def render_nginx_conf(plan: Plan) -> str:
    tree: list[Node] = [
        # Pre-move file names, kept (see the routing table comment below).
        Comment("Generated by components/nginx_conf.py from components/routing.py. Do not edit.\n"
                "No `user` (the images differ) and no `daemon` (the command line sets it)."),
        D("worker_processes", (str(_worker_processes(plan)),)),
        # On a Swarm, in its one writable tmpfs; `nginx -t` (before each reload)
        # opens it too, so it belongs in the file rather than on the command line.
        *([D("pid", (f"{SWARM_RUN_DIR}/nginx.pid",))] if plan.settings.target == "swarm" else []),
        D("pcre_jit", ("on",)),
        D("error_log", (ERROR_LOG, "warn")),
        D("events", (), (D("worker_connections", ("4096",)),)),
        _http(plan),
    ]
    return "\n".join(_serialise(tree)) + "\n"
