"""Traffic while a stack changes: a client that keeps sending and reading messages
through nginx, and one probe per endpoint class, so a test can say which
acknowledged messages were lost (none may be) and how long each class of
endpoint was unavailable.

Probes use their own aiohttp session (not the clients' traced ones), one request
per class every PROBE_INTERVAL_S (sent again once if a kept-alive connection was
closed under it, as HTTP clients do); a class is unavailable from a failed probe to
the next successful one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
import secrets
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import nio

from tests.e2e import replay
from tests.e2e.matrix_client import bodies, connector, messages_backwards

PROBE_INTERVAL_S = 0.25
SEND_DEADLINE_S = 240  # a message is retried (same txn id) until acknowledged
# Bob's sync: the largest timeline Synapse allows by default, so a backlog after
# an outage arrives whole rather than as a limited (gapped) timeline.
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}


@dataclass
class Traffic:
    alice: nio.AsyncClient
    bob: nio.AsyncClient
    room_id: str
    client_url: str
    federation_url: str
    ssl_context: ssl.SSLContext | None = None  # with nginx.tls: trusts the stack's CA
    hosts: dict[str, str] | None = None  # certificate names -> nginx's address (ACME)
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # txn -> (body, event id)
    acked_at: dict[str, float] = field(default_factory=dict)  # txn -> time.monotonic()
    failed_sends: int = 0
    read: int = 0  # messages bob saw through /sync
    seen: dict[str, float] = field(default_factory=dict)  # body -> when bob's /sync had it
    gaps: int = 0  # limited timelines in bob's incremental syncs (events skipped)
    samples: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    reused_closed: int = 0  # probes sent again after a closed keep-alive connection
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"live {self.tag} "

    def probes(self) -> dict[str, tuple[str, str, str]]:
        """Endpoint class -> (base URL, path, token owner)."""
        room = quote(self.room_id)
        return {
            "main": (self.client_url, f"/_matrix/client/v3/profile/{quote(self.alice.user_id)}", ""),
            "client_sync": (self.client_url, "/_matrix/client/v3/sync?timeout=0&filter="
                            + quote('{"room":{"timeline":{"limit":1}}}'), "bob"),
            "rooms": (self.client_url, f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1",
                      "bob"),
            "media": (self.client_url, "/_matrix/client/v1/media/config", "bob"),
            "federation_reader": (self.federation_url, "/_matrix/key/v2/server", ""),
        }

    async def _send(self) -> None:
        i = 0
        while not self._stop.is_set():
            txn, body = f"l{self.tag}{i}", f"{self.prefix}{i:04d}"
            deadline = time.monotonic() + SEND_DEADLINE_S
            while True:
                try:
                    resp = await self.alice.room_send(self.room_id, "m.room.message",
                                                      {"msgtype": "m.text", "body": body},
                                                      tx_id=txn)
                except Exception as e:  # noqa: BLE001 - connection errors while a process is down
                    resp = e
                if isinstance(resp, nio.RoomSendResponse):
                    self.acked[txn] = (body, resp.event_id)
                    self.acked_at[txn] = time.monotonic()
                    break
                self.failed_sends += 1
                if time.monotonic() > deadline:
                    raise AssertionError(f"{txn} never acknowledged: {resp}")
                await asyncio.sleep(0.2)
            i += 1
            await asyncio.sleep(0.1)

    async def _read(self) -> None:
        since = None
        while not self._stop.is_set():
            try:
                resp = await self.bob.sync(timeout=1000, since=since, sync_filter=SYNC_FILTER)
            except Exception:  # noqa: BLE001
                resp = None
            if isinstance(resp, nio.SyncResponse):
                room = resp.rooms.join.get(self.room_id)
                if room:
                    if room.timeline.limited and since is not None:
                        self.gaps += 1
                    now = time.monotonic()
                    for e in room.timeline.events:
                        if isinstance(e, nio.RoomMessageText) and e.body.startswith(self.prefix):
                            self.read += 1
                            self.seen.setdefault(e.body, now)
                since = resp.next_batch
            else:
                await asyncio.sleep(0.2)

    async def _probe(self, session: aiohttp.ClientSession, cls: str, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        samples = self.samples.setdefault(cls, [])
        while not self._stop.is_set():
            t = time.monotonic()
            for attempt in (1, 2):
                try:
                    async with session.get(url, headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ServerDisconnectedError:
                    # An idle keep-alive connection the server closed as the request
                    # went out (nginx's old workers close theirs on a reload): what
                    # HTTP clients do, and RFC 9112 section 9.3.1 allows for a GET,
                    # is to send it again once on a new connection.
                    ok = False
                    if attempt == 1:
                        self.reused_closed += 1
                        continue
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                break
            samples.append((t, ok))
            await asyncio.sleep(max(0.0, PROBE_INTERVAL_S - (time.monotonic() - t)))

    async def start(self) -> None:
        session = aiohttp.ClientSession(connector=connector(self.ssl_context, self.hosts))
        self._session = session
        tokens = {"": "", "bob": self.bob.access_token}
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._read())]
        for cls, (base, path, who) in self.probes().items():
            self._tasks.append(asyncio.create_task(self._probe(session, cls, base + path,
                                                               tokens[who])))

    async def assert_stored(self, client: nio.AsyncClient, title: str) -> None:
        """Every send was retried with its transaction ID until acknowledged: none
        is lost, none stored twice, nothing of ours stored unacknowledged."""
        events = await messages_backwards(client, self.room_id, max_pages=200)
        ids = {e.event_id for e in events}
        lost = {t: v for t, v in self.acked.items() if v[1] not in ids}
        assert not lost, f"{title}: acknowledged messages lost: {lost}"
        got = Counter(bodies(events, self.prefix))
        assert set(got) == {b for b, _ in self.acked.values()} and max(got.values()) == 1, \
            f"{title}: messages missing, unexpected or stored twice"

    async def wait_acked(self, n: int, timeout_s: float = 120) -> None:
        end = time.monotonic() + timeout_s
        while len(self.acked) < n:
            for t in self._tasks:
                if t.done() and t.exception():
                    raise t.exception()
            assert time.monotonic() < end, f"only {len(self.acked)} messages acknowledged"
            await asyncio.sleep(0.05)

    async def stop(self, abandon: bool = False) -> None:
        """Stop sending, reading and probing. A message still being retried is
        waited for (until acknowledged, or its deadline fails the send task), unless
        `abandon` (the caller has failed already): then every task is cancelled, so
        the caller's own error is what gets reported."""
        self._stop.set()
        if abandon:
            for t in self._tasks:
                t.cancel()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=abandon)
        finally:
            await self._session.close()

    def unavailable_seconds(self) -> dict[str, float]:
        """Per endpoint class: the time from each failed probe to the next success."""
        out = {}
        for cls, samples in self.samples.items():
            total, down_since = 0.0, None
            for t, ok in samples:
                if not ok and down_since is None:
                    down_since = t
                elif ok and down_since is not None:
                    total += t - down_since
                    down_since = None
            if down_since is not None:
                total += samples[-1][0] - down_since
            out[cls] = round(total, 2)
        return out


def wait_restarted_healthy(container: str, pid: int, restarts: int, timeout_s: float) -> float:
    """Seconds until a container whose PID 1 (`pid`) was killed is running again under
    its restart policy (a new PID, more restarts than `restarts`) and healthy."""
    api = replay.api()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        info = api.inspect_container(container)
        state = info["State"]
        if (info["RestartCount"] > restarts and state["Running"] and state["Pid"] != pid
                and state["Health"]["Status"] == "healthy"):
            return time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(f"{container} did not come back healthy within {timeout_s} s: "
                         f"restarts={info['RestartCount']} state={state}\n"
                         f"{replay.container_logs(container)}")
