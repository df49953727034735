"""The Docker target: one host's engine. Turns the plan's container specs into
networks, volumes, images and components, in start order (Postgres and Redis,
main, workers, nginx), and returns the stack outputs.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_docker as docker

from components.docker.docker_container import Host, volume
from components.docker.services import (
    Acme, Backup, LiveConfig, Nginx, NginxArgs, Postgres, Prometheus, Redis, ServiceArgs,
)
from components.docker.synapse_process import SynapseArgs, SynapseMain, SynapseWorkers
from components.plan.topology import Plan
from components.plan.workers import WORKER_CLASSES
from components.render import prometheus_conf
from components.render.containers import Deployment, backups_volume


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
    if s.nginx.acme:
        service(Acme, "acme")
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
        # nginx.tls: acme: its health says whether a valid certificate is served.
        **({"acmeContainer": f"{s.name_prefix}-acme"} if s.nginx.acme else {}),
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
