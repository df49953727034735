"""live-config's scripts, run by sh in a scratch directory (their absolute paths
moved there, nothing else changed): publishing copies every staged file and
forgets the markers of processes gone; the healthcheck passes once every file is
published and every running process has loaded what it must, and ignores a
stopped process's stale marker."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from components.render.containers import build_deployment
from components.render.live_config import CHECK as LIVE_CHECK
from components.render.live_config import PUBLISH as LIVE_PUBLISH
from components.render.live_config import STAGE as LIVE_STAGE
from components.plan.settings import load_settings
from components.render.synapse_config import LIVE_CONFIG_DIR, RELOADABLE_PATH, log_config_path
from components.plan.topology import build_plan


@pytest.fixture
def box(tmp_path):
    """(run a live-config script, stage dir, live dir) for a one-of-each stack."""
    d = build_deployment(build_plan(load_settings({"serverName": "example.org"}, "t")))
    files = d.container("live-config").rendered_files()
    stage, live = tmp_path / "stage", tmp_path / "live"

    def moved(text: str) -> str:
        return text.replace(LIVE_STAGE, str(stage)).replace(LIVE_CONFIG_DIR, str(live))

    for path, text in files.items():
        target = stage / path.removeprefix(LIVE_STAGE + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(moved(text))

    def run(script: str) -> int:
        text = (stage / script.removeprefix(LIVE_STAGE + "/")).read_text()
        if script == LIVE_PUBLISH:  # everything before it stays up
            text = text.split("trap ", 1)[0]
        return subprocess.run(["sh", "-c", text], capture_output=True, timeout=30).returncode

    return run, stage, live


def cksum(*paths: Path) -> str:
    return subprocess.run(["sh", "-c", 'cat "$@" | cksum', "sh", *map(str, paths)],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_publish_copies_every_file_and_the_check_then_passes(box):
    run, stage, live = box
    assert run(LIVE_CHECK) == 1  # nothing published yet
    (live / "loaded").mkdir(parents=True)
    (live / "loaded" / "rooms9").write_text("a process scaled away\n")
    assert run(LIVE_PUBLISH) == 0
    assert (live / "log" / "rooms.log.config").read_text() == \
        (stage / "log" / "rooms.log.config").read_text()
    assert (live / "reloadable.yaml").exists()
    assert not (live / "loaded" / "rooms9").exists()
    assert run(LIVE_CHECK) == 0  # no process has a marker yet: none is running


def test_the_check_waits_for_every_running_process_to_load_but_not_a_stopped_one(box):
    run, _, live = box
    assert run(LIVE_PUBLISH) == 0
    rel = lambda p: live / p.removeprefix(LIVE_CONFIG_DIR + "/")  # noqa: E731
    loaded = cksum(rel(log_config_path("rooms")), rel(RELOADABLE_PATH))
    marker = live / "loaded" / "rooms1"
    marker.write_text("4242 17\n")  # still the old config
    assert run(LIVE_CHECK) == 1
    marker.write_text(loaded + "\n")
    assert run(LIVE_CHECK) == 0
    marker.write_text("4242 17\n")
    old = time.time() - 60  # not rewritten for a minute: the process stopped
    os.utime(marker, (old, old))
    assert run(LIVE_CHECK) == 0


def test_a_file_not_yet_published_fails_the_check(box):
    run, _, live = box
    assert run(LIVE_PUBLISH) == 0
    (live / "reloadable.yaml").write_text("caches: {}\n")
    assert run(LIVE_CHECK) == 1
