"""Metrics: every Synapse process has a metrics listener that Synapse's own parser
accepts, Prometheus scrapes each of them once, with the labels Synapse's Grafana
dashboard (contrib/grafana/synapse.json) groups by, and synapse:metrics.enabled
false leaves no trace of either."""

from __future__ import annotations

import yaml
import pytest

from components.render.containers import build_deployment
from components.render.live_config import STAGE as LIVE_STAGE
from components.render.prometheus_conf import (
    CONFIG_PATH, JOB, LIVE_DIR, METRICS_PATH, TARGET_FILES, TARGETS_SUBDIR,
)
from components.plan.settings import load_settings
from components.plan.topology import METRICS_PORT, build_plan
from tests.support.capture import run_program
from tests.support.synapse_parser import live_files, parse

CONTAINER = "docker:index/container:Container"


def deployment(**overrides):
    raw = {"serverName": "example.org", "preset": "large", **overrides}
    return build_deployment(build_plan(load_settings(raw, "metrics")))


def prometheus_yml(d) -> dict:
    return yaml.safe_load(d.container("prometheus").rendered_files()[CONFIG_PATH])


def target_groups(d, job: str = JOB) -> list[dict]:
    """What live-config publishes for the job (file_sd), as staged in its uploads."""
    staged = f"{LIVE_STAGE}/{TARGETS_SUBDIR}/{TARGET_FILES[job]}"
    return yaml.safe_load(d.container("live-config").rendered_files()[staged])


def synapse_job(d) -> dict:
    return next(j for j in prometheus_yml(d)["scrape_configs"] if j["job_name"] == JOB)


def test_targets_are_files_prometheus_watches_so_scaling_leaves_it_alone():
    small, big = deployment(), deployment(workers={"rooms": 12})
    assert prometheus_yml(small) == prometheus_yml(big)
    assert (small.container("prometheus").config_hash
            == big.container("prometheus").config_hash)
    assert target_groups(small) != target_groups(big)
    (sd,) = synapse_job(small)["file_sd_configs"]
    assert sd["files"] == [f"{LIVE_DIR}/{TARGETS_SUBDIR}/{TARGET_FILES[JOB]}"]
    mounts = {m.target: (m.volume, m.read_only) for m in small.container("prometheus").mounts}
    assert mounts[LIVE_DIR] == ("live-config", True)


def test_every_process_is_one_target_by_its_container_name_with_its_labels():
    d = deployment()
    job = synapse_job(d)
    assert job["job_name"] == JOB == "synapse" and job["metrics_path"] == METRICS_PATH
    synapse = [c for c in d.containers if c.role in ("main", "worker")]
    groups = target_groups(d)
    targets = {sc["targets"][0]: sc["labels"] for sc in groups}
    assert all(len(sc["targets"]) == 1 for sc in groups)
    assert targets == {
        f"{c.name}:{METRICS_PORT}": {"instance": c.key, "index": c.key,
                                     "worker_class": c.worker_class or "main"}
        for c in synapse}
    assert len(targets) == 31  # large: main + 30 workers
    # Prometheus reaches them by name on the network they share.
    prom = d.container("prometheus")
    assert all("backend" in c.networks for c in synapse) and "backend" in prom.networks


def test_labels_tell_processes_apart_the_way_the_grafana_dashboard_asks():
    """The dashboard selects job=~"$job", index=~"$index" and names series
    "{{job}}-{{index}}"; its restart and version panels want job="synapse";
    server_name is Synapse's own label, which a target label would rename to
    exported_server_name (honor_labels is false)."""
    d = deployment()
    job = synapse_job(d)
    legends = [f"{job['job_name']}-{sc['labels']['index']}" for sc in target_groups(d)]
    assert len(set(legends)) == len(legends)
    assert all("server_name" not in sc["labels"] and "job" not in sc["labels"]
               for sc in target_groups(d))
    assert "honor_labels" not in job


@pytest.mark.parametrize("interval, timeout", [(1, "1s"), (5, "5s"), (15, "10s"), (60, "10s")])
def test_scrape_timeout_never_exceeds_the_interval(interval, timeout):
    """Prometheus refuses a config whose scrape_timeout is above its interval."""
    conf = prometheus_yml(deployment(metrics={"scrapeIntervalSeconds": interval}))["global"]
    assert conf["scrape_interval"] == f"{interval}s" and conf["scrape_timeout"] == timeout


def test_prometheus_runs_as_its_image_user_published_on_loopback_with_kept_history():
    d = deployment(metrics={"port": 19090, "retentionDays": 30})
    prom = d.container("prometheus")
    assert prom.privileges.user == "65534:65534" and prom.privileges.cap_add == ()
    assert [(p.internal, p.external, p.ip) for p in prom.ports] == [(9090, 19090, "127.0.0.1")]
    assert "--storage.tsdb.retention.time=30d" in prom.command
    (vol,) = [v for v in d.volumes if v.key == "prometheus-data"]
    assert vol.retain and [m.target for m in prom.mounts] == ["/prometheus", LIVE_DIR]
    # busybox in the official image: wget, not curl.
    assert prom.healthcheck.test[:2] == ("CMD", "wget")


@pytest.mark.parametrize("enabled", [True, False])
def test_synapse_accepts_the_metrics_listener_and_drops_it_when_disabled(enabled, tmp_path):
    d = deployment(preset="one-of-each", metrics={"enabled": enabled})
    for spec in (d.container("main"), d.container("rooms1"), d.container("sender1")):
        config = parse(spec, tmp_path / spec.key, live=live_files(d))
        assert config.metrics.enable_metrics is enabled
        listeners = (config.server.listeners if spec.key == "main"
                     else config.worker.worker_listeners)
        metrics = [(l.port, l.bind_addresses) for l in listeners if l.type == "metrics"]
        assert metrics == ([(METRICS_PORT, ["0.0.0.0"])] if enabled else []), spec.key
    assert ("prometheus" in [c.key for c in d.containers]) is enabled
    assert ("prometheus-data" in [v.key for v in d.volumes]) is enabled


@pytest.mark.parametrize("enabled", [True, False])
def test_the_program_registers_prometheus_and_its_url_only_when_enabled(enabled):
    cap = run_program({"serverName": "example.org", "metrics": {"enabled": enabled}})
    names = [c.plain["name"] for c in cap.containers]
    assert ("synapse-test-prometheus" in names) is enabled
    images = [r.plain["name"] for r in cap.of_type("docker:index/remoteImage:RemoteImage")]
    assert ("prom/prometheus:v2.42.0" in images) is enabled
    assert cap.outputs.get("prometheusUrl") == ("http://127.0.0.1:9090/" if enabled else None)
    if enabled:
        prom = cap.named("prometheus-container", CONTAINER)
        assert prom.parent.endswith("synapse:index:Prometheus::prometheus")
