"""The worker-class table: the single place that says what each class of Synapse
process is. Listeners, instance_map membership, stream writers, shared duties, the
work a class takes from main, its volumes and nginx's balancing are all derived
from it (topology.py, synapse_config.py, containers.py, nginx_conf.py). The
presets (named worker counts) live here too.

Adding a class is one entry here (plus its endpoint rules in routing.py when nginx
must reach it: rules are ordered across classes, first match wins, so they stay in
one list there).

Slots say which processes of a class a stream or duty names:
  ALL:   every process of the class (Synapse shards the work between them);
  n:     the class's n-th process, wrapping round when the class has fewer than n
         (so with one process, it takes every slot). Spreading single-writer
         streams over slots 1..k lets a large class split them; processes beyond
         the highest slot write nothing, so adding them changes no shared config.
A process named by any stream or duty needs replication, so it is put in
`instance_map` and gets a replication socket; no other worker is.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

# MAIN: Synapse's name for the main process in instance_map, and the routing
# target for what only main serves: one name, defined with the routes.
from components.plan import routing
from components.plan.routing import MAIN, Key

GENERIC_WORKER = "synapse.app.generic_worker"
MEDIA_REPOSITORY = "synapse.app.media_repository"

# Every stream Synapse 1.163 hands to workers: the attributes of WriterLocations in
# synapse/config/workers.py, which WorkerConfig.read_config checks one by one (each
# writer in instance_map, "master" excepted; at least one writer each).
STREAMS: tuple[str, ...] = (
    "events",  # also backfill, sticky_events, profile_updates (WriterLocations doc)
    "typing",
    "to_device",
    "account_data",
    "receipts",
    "presence",
    "push_rules",
    "device_lists",
    "thread_subscriptions",
    "quarantined_media_changes",
)

# Streams newer than the oldest Synapse this program runs (validators.MIN_SYNAPSE):
# the release whose WriterLocations (synapse/config/workers.py) first has the
# attribute, read in the PyPI wheels (1.134: neither of the first two; 1.135 both;
# 1.151 no quarantined_media_changes, 1.152 has it). An older Synapse refuses a
# stream_writers key it does not know (TypeError in WorkerConfig.read_config), so
# such a stream is left out for it (stream_exists) and its writers are main's.
STREAM_SINCE: Mapping[str, tuple[int, int]] = {
    "device_lists": (1, 135),
    "thread_subscriptions": (1, 135),
    "quarantined_media_changes": (1, 152),
}


def stream_exists(stream: str, synapse: tuple[int, int] | None) -> bool:
    """Whether Synapse `synapse` (None: a tag naming no version, taken as current)
    has the stream."""
    return synapse is None or synapse >= STREAM_SINCE.get(stream, (0, 0))


# Streams Synapse lets only one instance write: WorkerConfig.read_config raises
# "Must only specify one instance to handle ..." unless len(writers.<stream>) == 1.
# The others (events, receipts, device_lists, thread_subscriptions,
# quarantined_media_changes) only need at least one writer there, and each is a
# MultiWriterIdGenerator over writers=<that list> in synapse/storage/databases/main/
# (events_worker.py, receipts.py, devices.py, thread_subscriptions.py, room.py).
SINGLE_WRITER_STREAMS = frozenset(
    {"typing", "to_device", "account_data", "presence", "push_rules"}
)

# Streams main keeps writing while workers write them too.
# quarantined_media_changes: the only rows come from RoomWorkerStore.
# _insert_quarantine_changes_txn (synapse/storage/databases/main/room.py), which
# asserts the process is a writer; its callers are the quarantine admin APIs
# (served where the media admin APIs are: main, or the media workers) and the
# background update RoomWorkerStore registers to flag already-quarantined media,
# which runs on main only (background updates start in synapse/app/homeserver.py).
MAIN_KEEPS_WRITING = frozenset({"quarantined_media_changes"})

ALL = "all"
Slot = Union[int, str]  # a 1-based process slot, or ALL


def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class WorkerClass:
    name: str
    app: str
    summary: str
    # Listener resources on the inbound socket nginx proxies to; empty means
    # nginx never routes to this class and it gets no inbound socket.
    inbound_resources: tuple[str, ...]
    # How nginx picks one of the class's processes for a request routed to the
    # class (routing.Key); one upstream per class, so one key.
    balance: Key = Key.NONE
    # stream_writers entries taken over from main, by slot.
    streams: Mapping[str, Slot] = field(default_factory=_frozen)
    # Shared homeserver.yaml keys naming this class's processes, by slot.
    duties: Mapping[str, Slot] = field(default_factory=_frozen)
    # Shared volumes (besides the sockets) every process of the class mounts.
    volumes: tuple[str, ...] = ()
    size: str = "medium"


WORKER_CLASSES: tuple[WorkerClass, ...] = (
    WorkerClass(
        name="client_sync",
        app=GENERIC_WORKER,
        summary="/sync and friends; writes the typing, to-device, account data, "
        "presence and receipts streams; updates the user directory",
        inbound_resources=("client",),
        # docs/workers.md "Load balancing": "For /sync and /initialSync requests it
        # will be more efficient if all requests from a particular user are routed
        # to a single instance."
        balance=Key.USER,
        # One slot each: a large class spreads them, one process takes them all.
        streams=_frozen({"typing": 1, "to_device": 2, "account_data": 3, "presence": 4,
                         "receipts": 5}),
        duties=_frozen({"update_user_directory_from_worker": 1}),
    ),
    WorkerClass(
        name="federation_reader",
        app=GENERIC_WORKER,
        summary="inbound federation without a room ID, and the key server",
        inbound_resources=("federation",),
        # docs: "The inbound federation transaction request ^/_matrix/federation/v1/send/
        # should be balanced by source IP so that transactions from the same remote
        # server go to the same process." The signed origin names the server better.
        balance=Key.ORIGIN,
    ),
    WorkerClass(
        name="media",
        app=MEDIA_REPOSITORY,
        summary="media repository; media1 runs the media background jobs",
        # `media` serves /_matrix/media; `client` and `federation` carry the
        # authenticated /_matrix/client/v1/media and /_matrix/federation/v1/media.
        inbound_resources=("client", "federation", "media"),
        # The processes share one media store: any of them serves any request.
        balance=Key.NONE,
        # Every media process serves the quarantine admin APIs (routing: media_admin),
        # which write quarantined_media_changes (see MAIN_KEEPS_WRITING).
        streams=_frozen({"quarantined_media_changes": ALL}),
        duties=_frozen({"media_instance_running_background_jobs": 1}),
        # Main keeps the media repository too (not docs/workers.md's
        # `enable_media_repo: False`): nginx falls back to main while the class has no
        # healthy process, e.g. during a restart or when going 0 -> 1. In Synapse
        # 1.163 that flag only decides whether a process loads the repository
        # (synapse/config/repository.py, can_load_media_repo); the one background
        # job left to pin, URL preview expiry, follows
        # media_instance_running_background_jobs (synapse/media/url_previewer.py),
        # which is media1. Every loader already shares the one store.
        volumes=("media",),
    ),
    WorkerClass(
        name="rooms",
        app=GENERIC_WORKER,
        summary="client and federation requests for a room, hashed by room ID",
        inbound_resources=("client", "federation"),
        # The guide's room workers: each owns a share of the rooms and caches only
        # those. docs: pagination "requests for a given room must be routed to the
        # same instance".
        balance=Key.ROOM,
    ),
    WorkerClass(
        name="sender",
        app=GENERIC_WORKER,
        summary="outbound federation, sharded by destination",
        inbound_resources=(),
        duties=_frozen({"federation_sender_instances": ALL}),
    ),
    WorkerClass(
        name="tasks",
        app=GENERIC_WORKER,
        summary="events writers, pushers, appservice notifications, background tasks",
        inbound_resources=(),
        streams=_frozen({"events": ALL}),
        duties=_frozen(
            {
                "pusher_instances": ALL,
                "notify_appservices_from_worker": 1,
                "run_background_tasks_on": 1,
            }
        ),
    ),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in WORKER_CLASSES)
BY_NAME: Mapping[str, WorkerClass] = _frozen({c.name: c for c in WORKER_CLASSES})


def balance_of(target: str) -> Key:
    """The balancing key of a routing target: a class's own, a stream's writers'
    (from the plan), or none for main."""
    if target == routing.WRITER:
        return Key.WRITER
    return BY_NAME[target].balance if target in BY_NAME else Key.NONE


def slot_processes(names: list[str], slot: Slot) -> list[str]:
    """The processes (of one class, in order) a slot names."""
    if not names:
        return []
    return list(names) if slot == ALL else [names[(int(slot) - 1) % len(names)]]


def process_names(counts: Mapping[str, int]) -> dict[str, list[str]]:
    """Each class's process names ("rooms1", "rooms2", ...) for the given counts."""
    return {c.name: [f"{c.name}{i}" for i in range(1, counts.get(c.name, 0) + 1)]
            for c in WORKER_CLASSES}


# Streams with client endpoints nginx sends to the stream's writers (routing.py rules
# with target WRITER): their writers must serve the client API.
ROUTED_STREAMS = frozenset(r.stream for r in routing.ROUTES if r.target == routing.WRITER)


def serves_client(worker_class: str) -> bool:
    """Main, or a class whose inbound listener carries the client API."""
    return worker_class == MAIN or "client" in BY_NAME[worker_class].inbound_resources


def must_write_with_main(stream: str, names: Mapping[str, list[str]]) -> list[str]:
    """Who must write a MAIN_KEEPS_WRITING stream: main, and every process of each
    class the table gives that stream to ALL (media: the quarantine admin APIs)."""
    return [MAIN, *(n for c in WORKER_CLASSES if c.streams.get(stream) == ALL
                    for n in names.get(c.name, []))]


def writer_problems(stream: str, writers: list[str], class_of: Mapping[str, str],
                    names: Mapping[str, list[str]]) -> list[tuple[int | None, str]]:
    """Synapse's rules for one stream's writers (synapse/config/workers.py
    WorkerConfig.read_config, and the stores that assert they write:
    RoomWorkerStore._insert_quarantine_changes_txn), plus nginx's: (index of the
    writer at fault or None for the list, the reason). `class_of`: process -> class;
    `names`: class -> its processes. Stated once, for settings (an error naming
    the key) and the plan check."""
    if not writers:
        return [(None, "needs at least one writer")]  # "Must specify at least one instance"
    if stream in SINGLE_WRITER_STREAMS and len(writers) != 1:
        # "Must only specify one instance to handle ..."
        return [(None, f"Synapse allows exactly one writer of {stream}, got {len(writers)}")]
    out: list[tuple[int | None, str]] = []
    for i, name in enumerate(writers):
        if name not in class_of:
            out.append((i, f"no process {name!r} in this stack; processes: " + ", ".join(class_of)))
        elif name in writers[:i]:
            out.append((i, f"{name} is listed twice"))
        elif stream in ROUTED_STREAMS and not serves_client(class_of[name]):
            # nginx sends the stream's client endpoints (routing.py) to its writers.
            client = [c.name for c in WORKER_CLASSES if serves_client(c.name)]
            out.append((i, f"{name} does not serve the client API, which nginx sends "
                           f"{stream}'s endpoints to; pick main or a "
                           f"{', '.join(client[:-1])} or {client[-1]} process"))
    if stream in MAIN_KEEPS_WRITING:
        missing = [n for n in must_write_with_main(stream, names) if n not in writers]
        if missing:
            out.append((None, f"must include {', '.join(missing)}: main's background update "
                              "and the quarantine admin APIs (main or the media workers) write it"))
    return out


# Stream writers a preset places on top of the table's, as (class, slots): slots wrap
# round like the table's; ALL is every process. Ignored while the class is empty.
# `synapse:streamWriters` overrides both, stream by stream.
PRESET_STREAMS: Mapping[str, Mapping[str, tuple[str, Union[tuple[int, ...], str]]]] = _frozen({
    "large": _frozen({
        # Per-user settings, light traffic: beside account_data and typing.
        "push_rules": ("client_sync", (3,)),
        "thread_subscriptions": ("client_sync", (1,)),
        # Several writers where Synapse allows. device_lists[0] alone runs the
        # DeviceListUpdater and signing-key EDUs (handlers/device.py, e2e_keys.py):
        # slot 2, beside to_device.
        "receipts": ("client_sync", (5, 6)),
        "device_lists": ("client_sync", (2, 6)),
    }),
})


# Named worker counts (`synapse:preset`); `synapse:workers` overrides any of them.
PRESETS: Mapping[str, Mapping[str, int]] = _frozen({
    # Main does everything: Synapse's defaults with no worker at all.
    "monolith": _frozen({c: 0 for c in CLASS_NAMES}),
    "one-of-each": _frozen({c: 1 for c in CLASS_NAMES}),
    # The guide's layout.
    "specialized": _frozen({"client_sync": 1, "federation_reader": 1, "media": 1,
                            "rooms": 4, "sender": 4, "tasks": 1}),
    # Thousands of users: the client_sync streams spread over six processes (the
    # sixth a second receipts and device_lists writer, PRESET_STREAMS); four event
    # persisters (which also run the pushers); rooms
    # and senders doubled. 31 processes x DB_POOL_MAX fits Postgres' limit.
    "large": _frozen({"client_sync": 6, "federation_reader": 2, "media": 2,
                      "rooms": 8, "sender": 8, "tasks": 4}),
})
DEFAULT_PRESET = "one-of-each"
