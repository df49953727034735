"""The worker-class table: the single place that says what each class of Synapse
process is. Listeners, instance_map membership, stream writers, shared duties and
nginx routes are all derived from it (topology.py, synapse_config.py, nginx_conf.py).

Adding a class is one entry here (plus its routes in routing.py when nginx must
reach it).

Scopes say which processes of a class a stream or duty names:
  FIRST: only `<class>1` (Synapse allows one writer/one instance for it),
  ALL:   every process of the class (Synapse shards the work between them).
A process named by any stream or duty needs replication, so it is put in
`instance_map` and gets a replication socket; no other worker is.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

from components import routing

MAIN = "main"  # Synapse's name for the main process in instance_map

GENERIC_WORKER = "synapse.app.generic_worker"
MEDIA_REPOSITORY = "synapse.app.media_repository"

# Streams Synapse lets only one instance write (synapse/config/workers.py).
SINGLE_WRITER_STREAMS = frozenset(
    {"typing", "to_device", "account_data", "presence", "push_rules"}
)


class Scope(Enum):
    FIRST = "first"
    ALL = "all"


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
    # stream_writers entries taken over from main.
    streams: Mapping[str, Scope] = field(default_factory=_frozen)
    # Shared homeserver.yaml keys naming this class's processes.
    duties: Mapping[str, Scope] = field(default_factory=_frozen)
    # Shared homeserver.yaml keys set whenever the class has a process.
    shared: Mapping[str, Any] = field(default_factory=_frozen)
    # Endpoint rules nginx uses to send requests here (routing.py).
    routes: tuple[routing.Route, ...] = ()
    size: str = "medium"


WORKER_CLASSES: tuple[WorkerClass, ...] = (
    WorkerClass(
        name="client_sync",
        app=GENERIC_WORKER,
        summary="/sync and friends; writes the typing, to-device, account data, "
        "presence and receipts streams; updates the user directory",
        inbound_resources=("client",),
        streams=_frozen(
            {
                "typing": Scope.FIRST,
                "to_device": Scope.FIRST,
                "account_data": Scope.FIRST,
                "presence": Scope.FIRST,
                "receipts": Scope.FIRST,
            }
        ),
        duties=_frozen({"update_user_directory_from_worker": Scope.FIRST}),
        routes=routing.CLIENT_SYNC_ROUTES,
    ),
    WorkerClass(
        name="federation_reader",
        app=GENERIC_WORKER,
        summary="inbound federation without a room ID, and the key server",
        inbound_resources=("federation",),
        routes=routing.FEDERATION_READER_ROUTES,
    ),
    WorkerClass(
        name="media",
        app=MEDIA_REPOSITORY,
        summary="media repository; media1 runs the media background jobs",
        # `media` serves /_matrix/media; `client` and `federation` carry the
        # authenticated /_matrix/client/v1/media and /_matrix/federation/v1/media.
        inbound_resources=("client", "federation", "media"),
        duties=_frozen({"media_instance_running_background_jobs": Scope.FIRST}),
        # Main stops serving media once a media worker exists.
        shared=_frozen({"enable_media_repo": False}),
        routes=routing.MEDIA_ROUTES,
    ),
    WorkerClass(
        name="rooms",
        app=GENERIC_WORKER,
        summary="client and federation requests for a room, hashed by room ID",
        inbound_resources=("client", "federation"),
        routes=routing.ROOMS_ROUTES,
    ),
    WorkerClass(
        name="sender",
        app=GENERIC_WORKER,
        summary="outbound federation, sharded by destination",
        inbound_resources=(),
        duties=_frozen({"federation_sender_instances": Scope.ALL}),
    ),
    WorkerClass(
        name="tasks",
        app=GENERIC_WORKER,
        summary="events writer, pushers, appservice notifications, background tasks",
        inbound_resources=(),
        streams=_frozen({"events": Scope.ALL}),
        duties=_frozen(
            {
                "pusher_instances": Scope.ALL,
                "notify_appservices_from_worker": Scope.FIRST,
                "run_background_tasks_on": Scope.FIRST,
            }
        ),
    ),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in WORKER_CLASSES)
BY_NAME: Mapping[str, WorkerClass] = _frozen({c.name: c for c in WORKER_CLASSES})
