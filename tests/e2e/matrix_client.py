"""A real Matrix client (matrix-nio) against a replayed stack, with every HTTP
request recorded together with the Synapse process nginx says served it.

nginx adds a response header naming the process (nginx_conf.SERVED_BY_HEADER,
when `synapse:nginx.servedByHeader` is on); an aiohttp trace config on the
client's session records it for each request, so tests can check that each
endpoint reached the worker class it should.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import aiohttp
import nio
from nio.client.async_client import on_request_chunk_sent

from components.render.nginx_conf import SERVED_BY_HEADER


@dataclass(frozen=True)
class Served:
    who: str  # which client made the request ("alice", "admin", "federation", ...)
    method: str
    path: str  # decoded URL path (room IDs as `!...`)
    status: int | None  # None: no response (connection error)
    served_by: str | None  # the header's value: a process name, or nginx's upstream address
    at: float


class Recorder:
    """Every request made through traced sessions, in order."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.entries: list[Served] = []
        # With nginx.tls: trusts the stack's CA (and nothing else), for every session.
        self.ssl = ssl_context
        self.hosts = hosts  # names the stack's certificate is for -> where nginx listens

    def mark(self) -> int:
        return len(self.entries)

    def since(self, mark: int) -> list[Served]:
        return self.entries[mark:]

    def trace_config(self, who: str) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_end(_session, _ctx, params: aiohttp.TraceRequestEndParams) -> None:
            self.entries.append(Served(who, params.method, params.url.path, params.response.status,
                                       params.response.headers.get(SERVED_BY_HEADER), time.time()))

        async def on_exception(_session, _ctx, params: aiohttp.TraceRequestExceptionParams) -> None:
            self.entries.append(Served(who, params.method, params.url.path, None, None, time.time()))

        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_exception)
        return trace

    def session(self, who: str, timeout_s: float = 60) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                     trace_configs=[self.trace_config(who)],
                                     connector=self.connector())

    def connector(self) -> aiohttp.TCPConnector:
        return connector(self.ssl, self.hosts)


class _Hosts(aiohttp.ThreadedResolver):
    """Names resolved from a table (a test's /etc/hosts), others as usual."""

    def __init__(self, hosts: dict[str, str]) -> None:
        super().__init__()
        self.hosts = hosts

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET):
        if host not in self.hosts:
            return await super().resolve(host, port, family)
        return [{"hostname": host, "host": self.hosts[host], "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]


def connector(ssl_context: ssl.SSLContext | None,
              hosts: dict[str, str] | None = None) -> aiohttp.TCPConnector:
    """A new session's connector: verifying with `ssl_context` when given (a stack
    with nginx.tls: trusts its CA), else with the system's CAs; `hosts` resolves a
    certificate's names to where nginx listens (the ACME stack's)."""
    return aiohttp.TCPConnector(ssl=ssl_context or True,
                                **({"resolver": _Hosts(hosts)} if hosts else {}))


def process_of(served_by: str | None, processes: Iterable[str]) -> str | None:
    """The process name in a served-by header value: the name itself, or (when
    nginx fell back to the raw upstream address, possibly after retries) the name
    in the last inbound socket path."""
    if not served_by:
        return None
    names = set(processes)
    if served_by in names:
        return served_by
    last = served_by.split(",")[-1].strip()
    m = re.search(r"synapse_inbound_([A-Za-z0-9_]+)\.sock", last)
    if m and m.group(1) in names:
        return m.group(1)
    return None


def new_client(base_url: str, recorder: Recorder, who: str, user: str = "",
               device_id: str | None = None) -> nio.AsyncClient:
    """An AsyncClient whose session is traced. No E2E encryption (no store); a
    connection error surfaces after two quick retries instead of being retried
    for minutes (so a test sees a worker being down)."""
    config = nio.AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False,
                                   max_timeouts=2, max_timeout_retry_wait_time=1,
                                   request_timeout=60, max_limit_exceeded=0)
    client = nio.AsyncClient(base_url, user=user, device_id=device_id, config=config)
    trace = recorder.trace_config(who)
    trace.on_request_chunk_sent.append(on_request_chunk_sent)  # nio's upload monitor
    client.client_session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=config.request_timeout), trace_configs=[trace],
        connector=recorder.connector())
    return client


# --- shared-secret registration (Synapse admin API) -----------------------------


def registration_mac(secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce, user, password):
        mac.update(part.encode())
        mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    return mac.hexdigest()


async def register(session: aiohttp.ClientSession, base_url: str, secret: str, user: str,
                   password: str, admin: bool = False, mac: str | None = None) -> tuple[int, dict]:
    """GET a nonce, then POST the registration with its HMAC-SHA1. Returns
    (status, body). `mac` overrides the computed MAC (to check a wrong one fails)."""
    url = base_url.rstrip("/") + "/_synapse/admin/v1/register"
    async with session.get(url) as resp:
        body = await resp.json()
        if resp.status != 200:
            return resp.status, body
        nonce = body["nonce"]
    payload = {"nonce": nonce, "username": user, "password": password, "admin": admin,
               "mac": mac or registration_mac(secret, nonce, user, password, admin)}
    async with session.post(url, json=payload) as resp:
        return resp.status, await resp.json()


async def lift_message_rate_limit(session: aiohttp.ClientSession, admin_url: str,
                                  admin_token: str, user_id: str) -> None:
    """Synapse's rc_message allows a user 0.2 messages/s; an admin lifts it for one
    user (admin API override_ratelimit, 0 meaning no limit), so a test sending
    several a second sees failures only from the stack, not from the limit."""
    url = (f"{admin_url.rstrip('/')}/_synapse/admin/v1/users/{quote(user_id, safe='')}"
           "/override_ratelimit")
    async with session.post(url, json={"messages_per_second": 0, "burst_count": 0},
                            headers={"Authorization": f"Bearer {admin_token}"}) as r:
        assert r.status == 200, await r.text()


# --- media ----------------------------------------------------------------------


def make_png(width: int = 200, height: int = 150) -> bytes:
    """A small PNG with a pattern (so thumbnails differ from the original)."""
    from PIL import Image

    img = Image.new("RGB", (width, height))
    img.putdata([((x * 255) // width, (y * 255) // height, ((x ^ y) * 7) % 256)
                 for y in range(height) for x in range(width)])
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def image_size(data: bytes) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    return img.format, img.size


# --- sync helpers ---------------------------------------------------------------


@dataclass
class SyncLog:
    """What one user's sync loop has seen."""
    timeline: dict[str, list[Any]] = field(default_factory=dict)  # room -> events, in order
    ephemeral: dict[str, list[Any]] = field(default_factory=dict)  # room -> typing/receipts
    to_device: list[Any] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # rooms whose timeline was limited
    errors: list[str] = field(default_factory=list)
    next_batch: str | None = None


# One filter for every sync: the largest timeline Synapse allows by default
# (filter_timeline_limit 100), so incremental syncs never skip events.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}


async def sync_once(client: nio.AsyncClient, log: SyncLog, timeout_ms: int = 0) -> None:
    since = log.next_batch or client.next_batch
    first = since is None  # an initial sync: its timelines are limited by design
    resp = await client.sync(timeout=timeout_ms, since=since, sync_filter=SYNC_FILTER)
    if not isinstance(resp, nio.SyncResponse):
        log.errors.append(f"sync failed: {resp}")
        return
    for room_id, room in resp.rooms.join.items():
        if room.timeline.limited and not first:
            log.gaps.append(room_id)
        log.timeline.setdefault(room_id, []).extend(room.timeline.events)
        log.ephemeral.setdefault(room_id, []).extend(room.ephemeral)
    log.to_device.extend(resp.to_device_events)
    log.next_batch = resp.next_batch


async def sync_until(client: nio.AsyncClient, log: SyncLog, done, timeout_s: float = 60,
                     poll_ms: int = 2000) -> bool:
    """Long-poll sync until `done(log)` holds or the time is up."""
    deadline = time.monotonic() + timeout_s
    while not done(log):
        if time.monotonic() > deadline:
            return False
        await sync_once(client, log, poll_ms)
    return True


async def messages_backwards(client: nio.AsyncClient, room_id: str, page: int = 50,
                             max_pages: int = 50) -> list[Any]:
    """The whole room history through /messages, oldest first."""
    events: list[Any] = []
    token: str | None = None
    for _ in range(max_pages):
        resp = await client.room_messages(room_id, start=token, limit=page)
        if not isinstance(resp, nio.RoomMessagesResponse):
            raise AssertionError(f"/messages failed: {resp}")
        events.extend(resp.chunk)
        if not resp.end or not resp.chunk:
            break
        token = resp.end
    events.reverse()
    return events


def bodies(events: Iterable[Any], prefix: str) -> list[str]:
    return [e.body for e in events
            if isinstance(e, nio.RoomMessageText) and e.body.startswith(prefix)]


async def raw(client: nio.AsyncClient, method: str, path: str,
              json_body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
    """A request nio has no method for, through the client's own (traced) session."""
    import json as _json

    headers = {"Authorization": f"Bearer {client.access_token}",
               "Content-Type": "application/json"}
    resp = await client.send(method, path, _json.dumps(json_body) if json_body is not None else None,
                             headers)
    try:
        body = await resp.json()
    except (aiohttp.ContentTypeError, ValueError):
        body = await resp.text()
    return resp.status, body


async def close_all(*clients: nio.AsyncClient) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
