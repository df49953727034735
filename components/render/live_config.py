"""live-config: what running processes re-read, published into a volume they
mount, so a change of it is a signal rather than a new container (no Pulumi
import). containers.py builds the container from these pieces:

- the files (`published`): each class's log config and the reloadable sections
  (synapse_config.RELOADABLE_PATH), and Prometheus's target files;
- `publish.sh`: copies them from the container's uploads into the volume;
- `check.sh`, its healthcheck: every file published, and every running Synapse
  process has loaded what it must (the marker its watcher writes);
- the watcher each Synapse container runs beside Synapse (reload_watch_script),
  which sends it SIGHUP when its files change.
"""

from __future__ import annotations

import shlex
from typing import Mapping

from components.render import prometheus_conf
from components.render.synapse_config import (
    LIVE_CONFIG_DIR, RELOADABLE_PATH, loaded_marker, log_config_path,
)
from components.plan.topology import Plan

STAGE = "/stage"  # live-config's uploads, copied from here into the volume
PUBLISH = f"{STAGE}/publish.sh"
CHECK = f"{STAGE}/check.sh"

RELOAD_WATCH_NAME = "reload.sh"  # $0 of the watcher, in its log lines
RELOAD_POLL_S = 2
# A marker not rewritten for this long is a stopped process's: live-config's check
# ignores it, so a stopped worker does not hold up the next reload.
MARKER_STALE_S = 5 * RELOAD_POLL_S


def reloaded_files(worker_class: str) -> tuple[str, ...]:
    """What a process of the class re-reads on SIGHUP: the files its watcher
    watches and its marker records (live-config's check compares the same)."""
    return (log_config_path(worker_class), RELOADABLE_PATH)


def reload_watch_script() -> str:
    """Runs beside Synapse: when a published file it re-reads changes (its log
    config: synapse/config/logger.py _reload_logging_config; the reloadable
    sections: synapse/app/_base.py reload_cache_config), SIGHUP Synapse and record
    what it loaded in its marker (live-config's healthcheck compares), rewritten
    every poll as a heartbeat. The first record waits until Synapse answers
    /health: by then it has its SIGHUP handler (synapse/app/_base.py start:
    setup_sighup_handling before listening); before it, PID 1 ignores a SIGHUP.
    Args: marker, health socket, the files."""
    return "\n".join([
        'marker=$1 health=$2',
        "shift 2",
        'state() { cat "$@" | cksum; }',
        'served=$(state "$@")',
        'until curl -fsS -o /dev/null --unix-socket "$health" http://localhost/health 2>/dev/null;'
        f" do sleep {RELOAD_POLL_S}; done",
        "while :; do",
        '  echo "$served" > "$marker"',
        f"  sleep {RELOAD_POLL_S}",
        '  now=$(state "$@") || continue',
        '  [ "$now" = "$served" ] && continue',
        "  kill -HUP 1 || continue",
        "  served=$now",
        '  echo "$0: $* changed: SIGHUP sent to Synapse, which reloads them"',
        "done",
    ])


def published(plan: Plan, shared: Mapping[str, str], hosts: Mapping[str, str]
              ) -> dict[str, str]:
    """Volume-relative path -> content: what live-config publishes."""
    out = {path.removeprefix(LIVE_CONFIG_DIR + "/"): text for path, text in shared.items()
           if path.startswith(LIVE_CONFIG_DIR + "/")}
    if plan.settings.metrics.enabled:
        for job, groups in prometheus_conf.targets(plan, hosts).items():
            rel = f"{prometheus_conf.TARGETS_SUBDIR}/{prometheus_conf.TARGET_FILES[job]}"
            out[rel] = prometheus_conf.render_targets(groups)
    return out


def render_publish_script(files: Mapping[str, str], processes: list[str]) -> str:
    """Copy each staged file into the volume (write, then rename: a reader never
    sees half a file), forget the markers of processes no longer in the stack,
    then stay up as nginx-config does."""
    live = LIVE_CONFIG_DIR
    dirs = sorted({f"{live}/{rel.rsplit('/', 1)[0]}" for rel in files if "/" in rel}
                  | {f"{live}/loaded"})
    keep = "|".join(processes)
    return "\n".join([
        "#!/bin/sh",
        "set -eu",
        f"mkdir -p {' '.join(shlex.quote(d) for d in dirs)}",
        *(f"cp {shlex.quote(f'{STAGE}/{rel}')} {shlex.quote(f'{live}/{rel}')}.new"
          f" && mv {shlex.quote(f'{live}/{rel}')}.new {shlex.quote(f'{live}/{rel}')}"
          for rel in sorted(files)),
        f"for m in {shlex.quote(live)}/loaded/*; do",
        f'  case "${{m##*/}}" in {keep}|"*") ;; *) rm -f "$m" ;; esac',
        "done",
        "trap 'exit 0' TERM INT QUIT",
        "while :; do sleep 3600 & wait $! || true; done",
        "",
    ])


def render_check_script(files: Mapping[str, str], plan: Plan) -> str:
    """Healthy once every file is published as staged, and every running process
    has loaded its class's log config and the reloadable sections (its watcher's
    marker; none yet while it starts, a stale one once it stopped): so an `up`
    that changes them ends when every process has reloaded them."""
    live = LIVE_CONFIG_DIR
    same = [f'[ "$(cksum < {shlex.quote(f"{STAGE}/{rel}")})" = '
            f'"$(cksum < {shlex.quote(f"{live}/{rel}")} 2>/dev/null)" ] || exit 1'
            for rel in sorted(files)]
    return "\n".join([
        "#!/bin/sh",
        *same,
        # loaded MARKER FILE...: the process has loaded FILE... (or is not running)
        "loaded() {",
        '  m=$1; shift',
        '  [ -e "$m" ] || return 0',
        f'  [ $(( $(date +%s) - $(stat -c %Y "$m") )) -gt {MARKER_STALE_S} ] && return 0',
        '  [ "$(cat "$m")" = "$(cat "$@" | cksum)" ]',
        "}",
        *(" ".join(["loaded", shlex.quote(loaded_marker(p.name)),
                    *map(shlex.quote, reloaded_files(p.worker_class)), "|| exit 1"])
          for p in plan.processes),
        "",
    ])
