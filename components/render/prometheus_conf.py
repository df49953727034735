"""Prometheus's config: one scrape target per Synapse process, labelled so that
Synapse's Grafana dashboard (element-hq/synapse contrib/grafana/synapse.json)
tells the processes apart (no Pulumi import).

The dashboard's queries select `job=~"$job"` and `index=~"$index"` and name each
series `{{job}}-{{index}}`; its process-restart and version panels ask for
`job="synapse"` (the job name of docs/metrics-howto.md). `server_name` is a
label Synapse puts on its metrics itself. So every process is in job `synapse`,
its `index` and `instance` are the process name ("rooms2": unique, and readable
where the default `instance` would be a container address), and `worker_class`
groups a class for our own queries (`sum by (worker_class) (...)`).

The targets are not in prometheus.yml but in files Prometheus watches
(file_sd_configs), published by the live-config container into a volume
(containers.py): scaling changes the target list, and Prometheus picks it up
without a restart.
"""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from components.render import acme_conf
from components.render import backup_conf
from components.plan.topology import Plan

JOB = "synapse"
BACKUP_JOB = "synapse_backup"  # the backup container (synapse:backup), when enabled
ACME_JOB = "synapse_acme"  # the ACME client's status, served by nginx (nginx.tls: acme)
METRICS_PATH = "/_synapse/metrics"  # where Synapse's metrics listener serves
PORT = 9090  # Prometheus's web UI and HTTP API, inside its container
BIND_ADDRESS = "127.0.0.1"  # where the host publishes it: it has no authentication
CONFIG_PATH = "/etc/prometheus/prometheus.yml"  # the official image's --config.file
DATA_DIR = "/prometheus"  # the official image's --storage.tsdb.path and VOLUME
DEFAULT_SCRAPE_TIMEOUT_S = 10  # Prometheus's; it refuses one above the interval
LIVE_DIR = "/etc/prometheus/live"  # where Prometheus mounts the live-config volume
TARGETS_SUBDIR = "prometheus"  # the target files' directory in that volume
# A target file per job, re-read on change (fsnotify) and every refresh interval.
TARGET_FILES = {JOB: "synapse.yml", BACKUP_JOB: "backup.yml"}
SD_REFRESH = "1m"


def labels(process_name: str, worker_class: str) -> dict[str, str]:
    """A target's labels (besides `job`, which is the scrape job's name)."""
    return {"instance": process_name, "index": process_name, "worker_class": worker_class}


def scrape_config(plan: Plan) -> dict[str, Any]:
    """prometheus.yml: the jobs and their target files; nothing that scaling
    changes."""
    m = plan.settings.metrics
    interval = m.scrape_interval_s
    return {
        "global": {
            "scrape_interval": f"{interval}s",
            "scrape_timeout": f"{min(interval, DEFAULT_SCRAPE_TIMEOUT_S)}s",
            "evaluation_interval": f"{interval}s",
        },
        "scrape_configs": [
            {"job_name": JOB, "metrics_path": METRICS_PATH,
             "file_sd_configs": [{"files": [target_file(JOB)], "refresh_interval": SD_REFRESH}]},
            {"job_name": BACKUP_JOB,
             "file_sd_configs": [{"files": [target_file(BACKUP_JOB)],
                                  "refresh_interval": SD_REFRESH}]},
            # nginx's name is fixed, so a static target: no job, no change, without ACME.
            *([{"job_name": ACME_JOB, "static_configs": [{"targets": [
                f"{plan.settings.name_prefix}-nginx:{acme_conf.METRICS_PORT}"]}]}]
              if plan.settings.nginx.acme else []),
        ],
    }


def target_file(job: str) -> str:
    """A job's target file, as Prometheus sees it."""
    return f"{LIVE_DIR}/{TARGETS_SUBDIR}/{TARGET_FILES[job]}"


def targets(plan: Plan, hosts: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Job -> its file_sd target groups. `hosts`: process name (and "backup") ->
    the container name Prometheus resolves on the backend network."""
    return {
        JOB: [{"targets": [f"{hosts[p.name]}:{p.metrics_port}"],
               "labels": labels(p.name, p.worker_class)}
              for p in plan.processes if p.metrics_port],
        BACKUP_JOB: ([{"targets": [f"{hosts['backup']}:{backup_conf.METRICS_PORT}"]}]
                     if plan.settings.backup.enabled else []),
    }


def render_prometheus_conf(plan: Plan) -> str:
    return yaml.safe_dump(scrape_config(plan), sort_keys=False, default_flow_style=False)


def render_targets(groups: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(groups, sort_keys=False, default_flow_style=False)
