"""The Pulumi program: stack config -> settings -> plan -> specs -> resources.

Reads top-down: config, shared resources (networks, volumes, images, secrets),
then components in start order (Postgres and Redis, main, workers, nginx), then
stack outputs.
"""

from __future__ import annotations

from typing import Any, Mapping

import pulumi
import pulumi_docker as docker
from pulumi.runtime import config as runtime_config

from components import prometheus_conf
from components.containers import Deployment, backups_volume, build_deployment
from components.docker_container import Host, volume
from components.errors import ConfigError
from components.secrets import stack_secrets
from components.services import (
    Backup, LiveConfig, Nginx, NginxArgs, Postgres, Prometheus, Redis, ServiceArgs,
)
from components.stack_config import StackConfig, read_stack
from components.synapse_process import SynapseArgs, SynapseMain, SynapseWorkers
from components.topology import Plan
from components.workers import WORKER_CLASSES


def read_config() -> StackConfig:
    """Settings, plan, the secret overrides and `secretConfig` (read_stack, the
    reader the render command shares), or a RunError naming the bad key: Pulumi
    prints it without a traceback, and nothing has been registered yet. Secret
    values never reach Settings."""
    pairs = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = {*runtime_config.get_config_secret_keys_env(),
                   *(k for k in pairs if runtime_config.is_config_secret(k))}
    try:
        return read_stack(pairs, secret_keys, stack=pulumi.get_stack())
    except ConfigError as e:
        raise pulumi.RunError(str(e)) from None


def deploy(plan: Plan, deployment: Deployment, secrets: pulumi.Output) -> dict[str, Any]:
    """Register every resource; returns the stack outputs (none of them secret)."""
    s = plan.settings
    networks = {
        key: docker.Network(f"{key}-network", name=name, driver="bridge", internal=internal)
        for key, (name, internal) in deployment.networks.items()
    }
    volume_specs = {v.key: v for v in deployment.volumes}
    shared_volumes = {v.key: volume(f"{v.key}-volume", v) for v in deployment.volumes if v.shared}
    # The images some container uses (Prometheus's only with metrics enabled).
    used = {c.image for c in deployment.containers}
    images = {
        ref: docker.RemoteImage(f"{role}-image", name=ref, keep_locally=True)
        for role, ref in vars(s.images).items() if ref in used
    }
    host = Host(networks=networks, volumes=shared_volumes, images=images,
                sizes=s.sizes, secrets=secrets, deployment=deployment)

    def service(cls, key: str):
        return cls(key, ServiceArgs(spec=deployment.container(key), host=host,
                                    data_volume=volume_specs[f"{key}-data"]))

    service(Postgres, "postgres")
    service(Redis, "redis")
    LiveConfig("live-config", ServiceArgs(spec=deployment.container("live-config"), host=host))

    def synapse_args(keys) -> SynapseArgs:
        return SynapseArgs(
            specs=[deployment.container(k) for k in keys],
            data_volumes=[volume_specs[f"{k}-data"] for k in keys],
            host=host,
        )

    # Each container waits for what its spec's depends_on names (Host.container):
    # main for Postgres and Redis, workers for main (and a rolling partner),
    # nginx's config for every process it routes to.
    SynapseMain("main", synapse_args(["main"]))
    for c in WORKER_CLASSES:
        if plan.by_class(c.name):
            SynapseWorkers(c.name, synapse_args([p.name for p in plan.by_class(c.name)]))
    nginx = Nginx("nginx", NginxArgs(spec=deployment.container("nginx"),
                                     publisher=deployment.container("nginx-config"),
                                     config_volume=volume_specs["nginx-config"], host=host))
    if s.backup.enabled:
        Backup("backup", ServiceArgs(spec=deployment.container("backup"), host=host,
                                     data_volume=volume_specs["backups"]))
    if s.metrics.enabled:
        Prometheus("prometheus", ServiceArgs(spec=deployment.container("prometheus"), host=host,
                                             data_volume=volume_specs["prometheus-data"]))

    return {
        "serverName": s.server_name,
        "clientUrl": s.public_base_url,
        "nginxUrl": f"{'https' if s.nginx.tls else 'http'}://{s.nginx.bind_address}:{s.nginx.client_port}/",
        # The operator's way to /_synapse/admin (refused on the public listeners).
        "adminUrl": f"http://{s.nginx.admin_bind_address}:{s.nginx.admin_port}/_synapse/admin/",
        "nginxContainer": nginx.container.name,
        # Prometheus's UI and HTTP API (loopback only): every process's metrics.
        **({"prometheusUrl": f"http://{prometheus_conf.BIND_ADDRESS}:{s.metrics.port}/"}
           if s.metrics.enabled else {}),
        "processes": [
            {"name": p.name, "class": p.worker_class, "sockets": list(p.sockets)}
            for p in plan.processes
        ],
        # Retained on delete; `make destroy-data` removes every volume named
        # <namePrefix>-*, including those of workers scaled away earlier, but
        # the backups volume.
        "dataVolumes": [v.name for v in deployment.volumes if v.retain],
        **({"backupsVolume": backups_volume(s.name_prefix)} if s.backup.enabled else {}),
        "namePrefix": s.name_prefix,
    }


def main() -> Mapping[str, Any]:
    config = read_config()
    for warning in config.warnings:
        pulumi.log.warn(warning)
    plan = config.plan
    outputs = deploy(plan, build_deployment(plan),
                     stack_secrets(config.secrets, config.secret_config))
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
