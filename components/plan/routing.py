"""The routing table: which Synapse process nginx sends each request to.

`ROUTES` is the single place that says where an endpoint goes. nginx_conf.py turns
it into nginx config, and the tests read it too. Rules are tried top to bottom
against the request's method and path; the first match wins (nginx evaluates the
generated `map` in this order). The last rule catches everything else for main.

Paths are matched after nginx has normalised them: percent-escapes are decoded,
so a room ID sent as `%21abc%3Aexample.org` is matched (and hashed) as
`!abc:example.org`. Requests are proxied with their original, undecoded URI.

Authorities, in order: Synapse's source (which servlets a generic worker registers:
`synapse/rest/__init__.py`, `synapse/rest/client/*.py`,
`synapse/federation/transport/server/`) and docs/workers.md (quoted as "docs:
<section>"). Where they differ, the source wins; the docs' lists are a subset.

Targets:
  - `main`: the main process. It can serve every endpoint (it keeps the media
    repository beside the media workers: workers.py).
  - a worker class: balanced over the class's processes by the class's `balance`
    key in the worker-class table (workers.py). A class with no processes goes to
    main; so does a request none of the class's processes can take (nginx_conf:
    the fallback).
  - `writer` + `stream`: the process(es) that write that stream according to the
    plan's `stream_writers` (main when the stream is not moved). Synapse rejects
    some of these endpoints on any other process (e.g. /typing raises "Got /typing
    request on instance that is not typing writer").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAIN = "main"
WRITER = "writer"


class Key(Enum):
    """How a request picks one process among a target's processes."""

    ROOM = "room"  # consistent hash of the room ID in the path
    USER = "user"  # consistent hash of the access token (its user part for syt_ tokens)
    ORIGIN = "origin"  # consistent hash of the X-Matrix origin of a federation request
    NONE = "none"  # round robin
    WRITER = "writer"  # the stream's writer(s), from the plan


# The room ID in a client or federation path: the first path segment that starts
# with `!` (after nginx decoded `%21`), up to the next `/`. It stops there, so
# whatever follows (`/state/m.room.member/@bob:example.org`) does not change it, and
# it needs no `:server` part (room version 12 IDs have none). No segment before the
# room ID can start with `!`: they are fixed words, versions and user IDs (`@`).
ROOM_ID_IN_PATH = r"^/_matrix/(?:client|federation)/(?:[^/]+/)*?(?P<room_id>![^/]+)"

# Method sets.
READ = ("GET", "HEAD")

# Client API version prefixes, as Synapse's `client_patterns()` builds them.
_V1 = "(?:api/v1|r0|v3|unstable)"  # client_patterns(..., v1=True)
_V = "(?:r0|v3|unstable)"  # client_patterns(...) defaults
_ROOM = "![^/]+"  # a room ID segment (rules that need a room ID, not an alias)
_ANY = "[^/]+"  # any one segment (room ID or not: the rule applies either way)


@dataclass(frozen=True)
class Route:
    name: str  # rule id; nginx logs it for each request (`route=`)
    pattern: str  # regex on the decoded path, anchored with ^ (PCRE and Python alike)
    target: str  # MAIN, a worker class, or WRITER
    why: str
    examples: tuple[str, ...]  # "METHOD /path" requests this rule must be the first to match
    methods: tuple[str, ...] = ()  # empty: any method
    stream: str | None = None  # the stream whose writer serves it (target WRITER)


def _main(name, pattern, why, *examples, methods=()):
    return Route(name, pattern, MAIN, why, examples, methods)


def _to(cls, name, pattern, why, *examples, methods=()):
    return Route(name, pattern, cls, why, examples, methods)


def _writer(stream, name, pattern, why, *examples, methods=()):
    return Route(name, pattern, WRITER, why, examples, methods, stream)


ROUTES: tuple[Route, ...] = (
    # --- 1. Room-scoped endpoints only main serves --------------------------------
    # They carry a room ID, but a generic worker does not register them, so they
    # must never reach a rooms worker. First, so no later rule can catch them.
    _main("room_forget", rf"^/_matrix/client/{_V1}/rooms/{_ANY}/forget(?:/|$)",
          "RoomForgetRestServlet is registered on main only (rest/client/room.py)",
          "POST /_matrix/client/v3/rooms/!a:example.org/forget"),
    _main("room_upgrade", rf"^/_matrix/client/{_V}/rooms/{_ANY}/upgrade$",
          "room_upgrade_rest_servlet is in the main-only list of rest/__init__.py",
          "POST /_matrix/client/v3/rooms/!a:example.org/upgrade"),
    _main("room_report", rf"^/_matrix/client/{_V}/rooms/{_ANY}/report(?:/|$)",
          "reporting servlets are in the main-only list of rest/__init__.py",
          "POST /_matrix/client/v3/rooms/!a:example.org/report/$e",
          "POST /_matrix/client/v3/rooms/!a:example.org/report"),
    # Delayed events (MSC4140): the update, cancel and send actions are main-only
    # (rest/client/delayed_events.py register_servlets: Update-, Cancel- and
    # SendDelayedEventServlet only when worker_app is None; DelayedEventsHandler
    # .cancel/.send assert _is_master, handlers/delayed_events.py).
    _main("delayed_events_main",
          r"^/_matrix/client/unstable/org\.matrix\.msc4140/delayed_events/[^/]+"
          r"(?:/(?:cancel|send))?$",
          "rest/client/delayed_events.py register_servlets: Update/Cancel/"
          "SendDelayedEventServlet are registered on main only",
          "POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1/send",
          "POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1",
          methods=("POST",)),
    # Registration's 3PID steps: rest/client/register.py register_servlets registers
    # Email-/MsisdnRegisterRequestTokenRestServlet and RegistrationSubmitTokenServlet
    # only when worker_app is None.
    _main("register_3pid",
          rf"^/_matrix/client/(?:{_V}/register/(?:email|msisdn)/requestToken"
          rf"|unstable/registration/[^/]+/submit_token)$",
          "rest/client/register.py register_servlets: the requestToken and "
          "submit_token servlets are main-only",
          "POST /_matrix/client/v3/register/email/requestToken",
          "GET /_matrix/client/unstable/registration/email/submit_token"),
    _main("directory_list", rf"^/_matrix/client/{_V1}/directory/list/",
          "room directory visibility (list/room, list/appservice) is main-only "
          "(rest/client/directory.py)",
          "PUT /_matrix/client/v3/directory/list/room/!a:example.org",
          "PUT /_matrix/client/v3/directory/list/appservice/irc/!a:example.org"),

    # --- 2. Media ----------------------------------------------------------------
    # Before federation and room rules: /_matrix/federation/v1/media would otherwise
    # go to federation_reader.
    _to("media", "media_repo", r"^/_matrix/media/",
        "docs: media_repository handles all endpoints starting with /_matrix/media/ "
        "(download, thumbnail, config, preview_url, upload, create; r0, v1 and v3)",
        "GET /_matrix/media/v3/download/example.org/abc",
        "POST /_matrix/media/v1/create"),
    _to("media", "media_client", r"^/_matrix/client/v1/media/",
        "docs: media_repository handles /_matrix/client/v1/media/ (authenticated media)",
        "GET /_matrix/client/v1/media/thumbnail/example.org/abc"),
    _to("media", "media_federation", r"^/_matrix/federation/v1/media/",
        "docs: media_repository handles /_matrix/federation/v1/media/",
        "GET /_matrix/federation/v1/media/download/abc"),
    # The quarantine admin APIs that change a quarantine record the change in the
    # quarantined_media_changes stream: storage/databases/main/room.py
    # _insert_quarantine_changes_txn asserts _can_write_quarantined_media_changes
    # (the process is in stream_writers.quarantined_media_changes). They are only
    # registered where the media repository loads (rest/admin/media.py
    # register_servlets_for_media_repo: main without a media worker, else the media
    # workers), so they go to the media class, every process of which writes that
    # stream (workers.py; main writes it too, for a background update of its own).
    _to("media", "media_quarantine",
            r"^/_synapse/admin/v1/(?:room/[^/]+/media/quarantine|quarantine_media/[^/]+"
            r"|user/[^/]+/media/quarantine|media/(?:un)?quarantine/[^/]+/[^/]+)$",
            "rest/admin/media.py QuarantineMediaInRoom/-ByUser/-ByID, "
            "UnquarantineMediaByID: writes to the quarantined_media_changes stream",
            "POST /_synapse/admin/v1/media/quarantine/example.org/abc",
            "POST /_synapse/admin/v1/room/!a:example.org/media/quarantine",
            methods=("POST",)),
    _to("media", "media_admin",
        r"^/_synapse/admin/v1/(?:purge_media_cache$|room/[^/]+/media(?:/|$)"
        r"|user/[^/]+/media(?:/|$)|media/|quarantine_media/|users/[^/]+/media$)",
        "docs: media_repository, the media-specific administration APIs (main, "
        "which keeps the media repository, registers them too: rest/admin/"
        "__init__.py register_servlets_for_client_rest_resource); reads such as "
        "GET media/quarantine_changes (ListQuarantineChanges) too",
        "POST /_synapse/admin/v1/purge_media_cache",
        "GET /_synapse/admin/v1/users/@u:example.org/media",
        "GET /_synapse/admin/v1/media/quarantine_changes"),

    # --- 3. Stream writers -------------------------------------------------------
    # docs: "Stream writers": these endpoints go to the process writing the stream,
    # room-scoped forms included (so before the rooms rules).
    _writer("typing", "typing", rf"^/_matrix/client/{_V1}/rooms/{_ANY}/typing/",
            "docs: the typing stream; other processes raise on /typing",
            "PUT /_matrix/client/v3/rooms/!a:example.org/typing/@u:example.org"),
    _writer("to_device", "to_device", rf"^/_matrix/client/{_V}/sendToDevice/",
            "docs: the to_device stream",
            "PUT /_matrix/client/v3/sendToDevice/m.room.encrypted/t1"),
    _writer("account_data", "account_data",
            rf"^/_matrix/client/{_V}/(?:org\.matrix\.msc3391/)?user/{_ANY}/"
            rf"(?:rooms/{_ANY}/)?(?:account_data|tags)(?:/|$)",
            "docs: the account_data stream (global and per-room account data, tags)",
            "PUT /_matrix/client/v3/user/@u:example.org/account_data/m.direct",
            "PUT /_matrix/client/v3/user/@u:example.org/rooms/!a:example.org/tags/u.work"),
    _writer("receipts", "receipts",
            rf"^/_matrix/client/{_V}/rooms/{_ANY}/(?:receipt/|read_markers$)",
            "docs: the receipts stream (receipt and read_markers)",
            "POST /_matrix/client/v3/rooms/!a:example.org/receipt/m.read/$e",
            "POST /_matrix/client/v3/rooms/!a:example.org/read_markers"),
    _writer("presence", "presence", rf"^/_matrix/client/{_V1}/presence/",
            "docs: the presence stream",
            "PUT /_matrix/client/v3/presence/@u:example.org/status"),
    _to("client_sync", "push_rules_read", rf"^/_matrix/client/{_V1}/pushrules/",
        "docs: pushrules 'can be handled for GET requests' by any generic worker",
        "GET /_matrix/client/v3/pushrules/", methods=READ),
    _writer("push_rules", "push_rules", rf"^/_matrix/client/{_V1}/pushrules/",
            "docs: the push_rules stream; other processes refuse PUT and DELETE "
            "(WORKERS_DENIED_METHODS in rest/client/push_rule.py)",
            "PUT /_matrix/client/v3/pushrules/global/override/r1"),
    _writer("device_lists", "device_lists",
            rf"^/_matrix/client/(?:{_V}/(?:delete_devices$|keys/upload|"
            rf"keys/device_signing/upload$|keys/signatures/upload$)|{_V1}/devices(?:/|$))",
            "docs: the device_lists stream",
            "POST /_matrix/client/v3/keys/upload",
            "DELETE /_matrix/client/v3/devices/ABCDEF"),
    _writer("thread_subscriptions", "thread_subscriptions",
            r"^/_matrix/client/unstable/io\.element\.msc4306/",
            "the thread_subscriptions stream: storage/databases/main/"
            "thread_subscriptions.py subscribe_/unsubscribe_user_from_thread assert "
            "_can_write_to_thread_subscriptions (PUT, DELETE); GET follows so a read "
            "sees the write; room-scoped, so before the rooms rules",
            "PUT /_matrix/client/unstable/io.element.msc4306/rooms/!a:example.org/thread/$t/subscription"),

    # --- 4. client_sync: sync and user directory ---------------------------------
    _to("client_sync", "sync", rf"^/_matrix/client/{_V}/sync$",
        "docs: sync requests", "GET /_matrix/client/v3/sync"),
    _to("client_sync", "sliding_sync",
        r"^/_matrix/client/unstable/org\.matrix\.simplified_msc3575/sync$",
        "sliding sync: rest/client/sync.py register_servlets registers "
        "SlidingSyncRestServlet on every process; user-hashed like /sync",
        "POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync"),
    _to("client_sync", "thread_subscriptions_list",
        r"^/_matrix/client/unstable/io\.element\.msc4308/thread_subscriptions$",
        "rest/client/thread_subscriptions.py ThreadSubscriptionsPaginationRestServlet "
        "(MSC4308), registered on every process; a read that takes sliding sync "
        "`pos` tokens, so it goes with sliding sync",
        "GET /_matrix/client/unstable/io.element.msc4308/thread_subscriptions"),
    _to("client_sync", "delayed_events_read",
        r"^/_matrix/client/unstable/org\.matrix\.msc4140/delayed_events(?:/[^/]+)?$",
        "rest/client/delayed_events.py register_servlets: DelayedEventsServlet and "
        "DelayedEventServlet (GET) are registered on every process",
        "GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events",
        "GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1",
        methods=READ),
    _to("client_sync", "delayed_events_restart",
        r"^/_matrix/client/unstable/org\.matrix\.msc4140/delayed_events/[^/]+/restart$",
        "rest/client/delayed_events.py register_servlets: RestartDelayedEventServlet "
        "is registered on every process (DelayedEventsHandler.restart updates the "
        "database; only main schedules sending); Element Call's heartbeat",
        "POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/d1/restart",
        methods=("POST",)),
    _to("client_sync", "register",
        rf"^/_matrix/client/(?:{_V}/register(?:/available)?"
        rf"|(?:v1|unstable)/register/m\.login\.registration_token/validity)$",
        "rest/client/register.py register_servlets: RegisterRestServlet (or, with "
        "MAS, RegisterAppServiceOnlyRestServlet), UsernameAvailabilityRestServlet and "
        "RegistrationTokenValidityRestServlet on every process (a worker registers "
        "through replication: handlers/register.py); docs: generic_worker "
        "registration requests. Usually no token: one process",
        "POST /_matrix/client/v3/register",
        "GET /_matrix/client/v3/register/available",
        "GET /_matrix/client/v1/register/m.login.registration_token/validity"),
    _to("client_sync", "auth_metadata",
        r"^/_matrix/client/(?:(?:v1|unstable)/auth_metadata"
        r"|unstable/org\.matrix\.msc2965/auth_metadata)$",
        "rest/client/auth_metadata.py AuthMetadataServlet: registered on every "
        "process when MAS is enabled (not in rest/__init__.py's main-only list); "
        "unauthenticated: one process",
        "GET /_matrix/client/v1/auth_metadata"),
    _to("client_sync", "rtc_transports",
        r"^/_matrix/client/unstable/org\.matrix\.msc4143/rtc/transports$",
        "rest/client/matrixrtc.py MatrixRTCRestServlet (MSC4143, Element Call's "
        "MatrixRTC transports): registered on every process when msc4143 is enabled",
        "GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports"),
    _to("client_sync", "events", rf"^/_matrix/client/{_V1}/events$",
        "docs: sync requests (the legacy event stream)", "GET /_matrix/client/v3/events"),
    _to("client_sync", "initial_sync",
        rf"^/_matrix/client/{_V1}/(?:rooms/{_ANY}/)?initialSync$",
        "docs: sync requests; the room form too, although it carries a room ID",
        "GET /_matrix/client/v3/initialSync",
        "GET /_matrix/client/v3/rooms/!a:example.org/initialSync"),
    _to("client_sync", "user_directory", rf"^/_matrix/client/{_V}/user_directory/search$",
        "docs: 'Updating the User Directory': any worker can search; client_sync1 "
        "updates the directory", "POST /_matrix/client/v3/user_directory/search"),

    # --- 5. rooms: client endpoints for one room ---------------------------------
    # Only the room-scoped endpoints a generic worker registers (docs: generic_worker;
    # source: rest/client/room.py, relations.py, knock.py). Each needs a room ID
    # where the room goes; anything else falls through to main.
    _to("rooms", "room_send",
        rf"^/_matrix/client/{_V1}/rooms/{_ROOM}/(?:send|redact)/",
        "docs: event sending requests (rooms/.*/send, rooms/.*/redact). Delayed sends "
        "(?org.matrix.msc4140.delay=, MSC4140) too: RoomSendEventRestServlet is "
        "registered on every process and DelayedEventsHandler.add works on a worker, "
        "telling main through ReplicationAddedDelayedEventRestServlet "
        "(handlers/delayed_events.py), so the query string changes nothing",
        "PUT /_matrix/client/v3/rooms/!a:example.org/send/m.room.message/t1"),
    _to("rooms", "room_state", rf"^/_matrix/client/{_V1}/rooms/{_ROOM}/state(?:/|$)",
        "docs: client API (rooms/.*/state$) and event sending (rooms/.*/state/); "
        "delayed state PUTs (?org.matrix.msc4140.delay=, Element Call's call "
        "membership) as well: RoomStateEventRestServlet.on_PUT hands them to "
        "DelayedEventsHandler.add, which works on a worker",
        "GET /_matrix/client/v3/rooms/!a:example.org/state/m.room.member/@u:example.org"),
    _to("rooms", "room_membership",
        rf"^/_matrix/client/{_V1}/rooms/{_ROOM}/(?:join|invite|leave|ban|unban|kick)(?:/{_ANY})?$",
        "docs: event sending requests (rooms/.*/(join|invite|leave|ban|unban|kick)$), "
        "with the optional transaction ID of register_txn_path",
        "POST /_matrix/client/v3/rooms/!a:example.org/invite"),
    _to("rooms", "room_read",
        rf"^/_matrix/client/{_V1}/rooms/{_ROOM}/(?:members|joined_members|messages"
        rf"|context/{_ANY}|event/{_ANY})$",
        "docs: client API requests, and pagination (rooms/.*/messages), which must "
        "reach one instance per room: the room hash does that",
        "GET /_matrix/client/v3/rooms/!a:example.org/messages"),
    _to("rooms", "room_aliases",
        rf"^/_matrix/client/(?:r0|v3|unstable/org\.matrix\.msc2432)/rooms/{_ROOM}/aliases$",
        "docs: client API requests (rooms/.*/aliases)",
        "GET /_matrix/client/v3/rooms/!a:example.org/aliases"),
    _to("rooms", "room_v1",
        rf"^/_matrix/client/(?:v1/rooms/{_ROOM}/(?:hierarchy|threads|timestamp_to_event)$"
        rf"|(?:v1|unstable)/rooms/{_ROOM}/relations/)",
        "docs: client API requests (v1 hierarchy, threads, timestamp_to_event, relations)",
        "GET /_matrix/client/v1/rooms/!a:example.org/relations/$e/m.thread"),
    _to("rooms", "room_join",
        rf"^/_matrix/client/{_V1}/(?:join|knock)/{_ROOM}(?:/{_ANY})?$",
        "docs: event sending requests (join/, knock/) when given a room ID; by alias "
        "there is no room to hash, so main takes it",
        "POST /_matrix/client/v3/join/!a:example.org"),
    _to("rooms", "room_summary",
        rf"^/_matrix/client/(?:v1/room_summary/{_ROOM}$|unstable/im\.nheko\.summary/"
        rf"(?:summary/{_ROOM}$|rooms/{_ROOM}/summary$))",
        "docs: client API requests (room_summary, im.nheko.summary)",
        "GET /_matrix/client/v1/room_summary/!a:example.org"),
    _to("rooms", "room_keys", rf"^/_matrix/client/{_V}/room_keys/keys/{_ROOM}(?:/{_ANY})?$",
        "docs: encryption requests (room_keys/): a key backup entry for one room",
        "GET /_matrix/client/v3/room_keys/keys/!a:example.org/s1"),

    # --- 6. rooms: federation endpoints for one room -----------------------------
    # Every federation servlet is registered on generic workers (federation/transport/
    # server: no main-only servlets), so any federation path with a room ID can go
    # to its room's worker.
    _to("rooms", "federation_room", r"^/_matrix/federation/(?:[^/]+/)+![^/]+",
        "docs: federation requests (state, state_ids, backfill, get_missing_events, "
        "make_/send_join, _leave, _knock, invite, event_auth, timestamp_to_event, "
        "exchange_third_party_invite, hierarchy), all keyed by the room",
        "PUT /_matrix/federation/v2/send_join/!a:example.org/$e"),

    # --- 7. federation_reader: the rest of federation, and the key server --------
    _to("federation_reader", "federation", r"^/_matrix/federation/",
        "docs: federation requests without a room (send, event, query, publicRooms, "
        "user/devices, version, ...). /v1/version: FederationVersionServlet is in "
        "federation/transport/server/federation.py FEDERATION_SERVLET_CLASSES, which "
        "every federation listener registers (__init__.py register_servlets)",
        "PUT /_matrix/federation/v1/send/1234", "GET /_matrix/federation/v1/version"),
    _to("federation_reader", "key_server", r"^/_matrix/key/v2/",
        "the key resource comes with a worker's federation listener (generic_worker.py)",
        "POST /_matrix/key/v2/query"),

    # --- 8. Everything else ------------------------------------------------------
    _main("fallback", r"^/",
          "main serves everything; login, registration's 3PID steps, keys, profile, "
          "createRoom, admin, SSO and /_synapse/client stay there",
          "POST /_matrix/client/v3/login", "GET /_synapse/admin/v1/server_version"),
)
