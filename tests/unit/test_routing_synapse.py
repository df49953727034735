"""The routing table against the installed Synapse: which processes register the
servlet behind each rule's examples and each corpus line.

Synapse decides per process which servlets exist (each module's register_servlets
tests `hs.config.worker.worker_app`, and rest/__init__.py ClientRestResource skips a
main-only list on workers). Here those functions run against a stand-in homeserver
(a mock: constructors only store handles) and an HTTP server that records the
patterns, once as main and once as a generic worker, with and without MAS. A rule that
sends an endpoint to a worker class needs a worker servlet for it; a main-only rule
needs one on main and none on a worker. (What a servlet does once registered, such as
a stream writer's assertion, is not visible here: tests/nginx and the docstrings.)
"""

from __future__ import annotations

from unittest import mock

import pytest

from components.plan import routing
from components.plan.routing import MAIN, ROUTES
from tests.nginx.corpus import CORPUS

synapse_rest = pytest.importorskip("synapse.rest")
from synapse.federation.transport.server import register_servlets as register_federation  # noqa: E402
from synapse.rest import ClientRestResource, admin  # noqa: E402
from synapse.rest.admin.media import register_servlets_for_media_repo  # noqa: E402

GENERIC_WORKER = "synapse.app.generic_worker"
# Worker classes whose processes are generic workers with client and federation
# resources (components/plan/workers.py).
GENERIC_CLASSES = ("client_sync", "rooms", "federation_reader")


class _Recorder:
    def __init__(self) -> None:
        self.paths: list[tuple[str, object, str]] = []

    def register_paths(self, method, patterns, callback, servlet_classname):
        self.paths.extend((method, p, servlet_classname) for p in patterns)


def _hs(worker_app: str | None, *, mas: bool, media: bool):
    hs = mock.MagicMock()
    hs.config.worker.worker_app = worker_app
    hs.config.mas.enabled = mas
    hs.config.media.can_load_media_repo = media
    # Experimental servlets the deployment may enable: count them as served.
    hs.config.experimental.msc4306_enabled = True
    hs.config.experimental.msc3720_enabled = True
    return hs


def _client(worker_app):
    r = _Recorder()
    for mas in (False, True):
        ClientRestResource.register_servlets(r, _hs(worker_app, mas=mas, media=False), ["client"])
    return r.paths


def _federation(worker_app):
    r = _Recorder()
    register_federation(_hs(worker_app, mas=False, media=False), r, mock.MagicMock(),
                        mock.MagicMock())
    return r.paths


def _admin(worker_app, *, media: bool):
    r = _Recorder()
    admin.register_servlets(_hs(worker_app, mas=False, media=media), r)
    return r.paths


def _media_admin():
    r = _Recorder()
    register_servlets_for_media_repo(_hs("synapse.app.media_repository", mas=False, media=True), r)
    return r.paths


WORKER = _client(GENERIC_WORKER) + _federation(GENERIC_WORKER)
MAIN_PROCESS = _client(None) + _federation(None)


def _servlets(paths, method: str, path: str) -> set[str]:
    path = path.split("?", 1)[0]
    return {name for m, pattern, name in paths if m == method and pattern.match(path)}


def _is_media(path: str) -> bool:
    return path.startswith(("/_matrix/media/", "/_matrix/client/v1/media/",
                            "/_matrix/federation/v1/media/"))


def _under_synapse_resources(path: str) -> bool:
    return path.startswith(("/_matrix/client/", "/_matrix/federation/")) and not _is_media(path)


WORKER_EXAMPLES = [(r, ex) for r in ROUTES if r.target in GENERIC_CLASSES for ex in r.examples
                   if _under_synapse_resources(ex.split(" ", 1)[1])]
MAIN_ONLY_EXAMPLES = [(r, ex) for r in ROUTES[:-1] if r.target == MAIN for ex in r.examples]


@pytest.mark.parametrize("route,example", WORKER_EXAMPLES, ids=lambda x: getattr(x, "name", x))
def test_rules_for_worker_classes_name_endpoints_a_generic_worker_registers(route, example):
    method, path = example.split(" ", 1)
    assert _servlets(WORKER, method, path), (
        f"{route.name}: {example} goes to {route.target}, but no servlet a generic worker "
        f"registers serves it (main: {sorted(_servlets(MAIN_PROCESS, method, path))})")


@pytest.mark.parametrize("route,example", MAIN_ONLY_EXAMPLES, ids=lambda x: getattr(x, "name", x))
def test_main_only_rules_name_endpoints_only_main_registers(route, example):
    method, path = example.split(" ", 1)
    assert _servlets(MAIN_PROCESS, method, path), f"{route.name}: main does not serve {example}"
    on_worker = _servlets(WORKER, method, path)
    assert not on_worker, f"{route.name}: a generic worker serves {example} too ({on_worker})"


CORPUS_ON_WORKERS = [line for line in CORPUS if line.expected in GENERIC_CLASSES
                     and _under_synapse_resources(line.target)]
CORPUS_MAIN_ONLY = [line for line in CORPUS if line.expected == "main"
                    and "main only" in line.comment]


@pytest.mark.parametrize("line", CORPUS_ON_WORKERS, ids=str)
def test_corpus_lines_for_worker_classes_are_served_by_a_generic_worker(line):
    assert _servlets(WORKER, line.method, line.target), (
        f"corpus.txt:{line.lineno}: {line} expects {line.expected}, but no servlet a "
        "generic worker registers serves it")


@pytest.mark.parametrize("line", CORPUS_MAIN_ONLY, ids=str)
def test_corpus_lines_marked_main_only_are_not_served_by_a_worker(line):
    assert _servlets(MAIN_PROCESS, line.method, line.target), f"corpus.txt:{line.lineno}"
    assert not _servlets(WORKER, line.method, line.target), f"corpus.txt:{line.lineno}: {line}"


def test_the_corpus_has_main_only_lines_to_check():
    assert len(CORPUS_MAIN_ONLY) >= 5


QUARANTINE_WRITES = [line for line in CORPUS
                     if line.method == "POST" and "quarantine" in line.target
                     and "quarantine_changes" not in line.target]


def test_the_corpus_has_quarantine_writes():
    assert len(QUARANTINE_WRITES) >= 5 and {l.expected for l in QUARANTINE_WRITES} == {"media"}


@pytest.mark.parametrize("line", QUARANTINE_WRITES, ids=str)
def test_quarantine_writes_are_media_repo_servlets_main_drops_without_the_repo(line):
    # rest/admin/media.py register_servlets_for_media_repo: only where the media
    # repository loads; main with enable_media_repo: false does not register them.
    assert _servlets(_media_admin(), line.method, line.target), str(line)
    assert not _servlets(_admin(None, media=False), line.method, line.target), str(line)
    assert _servlets(_admin(None, media=True), line.method, line.target), str(line)


def _plan(media: int):
    from components.plan.settings import load_settings
    from components.plan.topology import build_plan
    workers = {"client_sync": 1, "federation_reader": 1, "media": media, "rooms": 1,
               "sender": 1, "tasks": 1}
    return build_plan(load_settings({"serverName": "example.org", "workers": workers}, "test"))


def _quarantine_writer_check(media: int):
    """Where nginx sends quarantine writes, the process both registers the
    quarantine admin APIs and may write the quarantined_media_changes stream."""
    plan = _plan(media)
    route = next(r for r in routing.ROUTES if r.name == "media_quarantine")
    served_by = ({p.name for p in plan.by_class(route.target)} or {"main"}
                 if route.target != routing.WRITER else
                 set(plan.stream_writers.get(route.stream, ("main",))))
    writers = set(plan.stream_writers.get("quarantined_media_changes", ("main",)))
    loads_media_repo = {p.name for p in plan.by_class("media")} or {"main"}
    assert served_by <= loads_media_repo, (
        f"quarantine writes go to {sorted(served_by)}, but only {sorted(loads_media_repo)} "
        "register the quarantine admin APIs")
    assert served_by <= writers, (
        f"quarantine writes go to {sorted(served_by)}, but only {sorted(writers)} may write "
        "the quarantined_media_changes stream")


def test_without_media_workers_main_writes_and_serves_quarantine_changes():
    _quarantine_writer_check(0)


@pytest.mark.parametrize("media", [1, 2])
def test_with_media_workers_the_quarantine_writer_is_a_media_worker(media):
    _quarantine_writer_check(media)
