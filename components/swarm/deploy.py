"""The Swarm target: the same plan as the Docker target's, deployed as Swarm
services through the manager's engine (the provider's `docker:host`).

Reads top-down: overlay networks; every rendered file as a Swarm config and every
secret file as a Swarm secret, each named by its content (specs.content_name);
then one `SwarmService` component per service in start order (Postgres and Redis,
main, workers, nginx, Prometheus), each waiting until its task runs healthy
(converge_config) before what depends on it is created; then the stack outputs.
Data volumes are not resources: Swarm creates a service's named volume on the node
its task runs on, and removing a service leaves its volumes there.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pulumi
import pulumi_docker as docker

from components.plan.topology import Plan
from components.provider import model as pm
from components.render.containers import Healthcheck
from components.swarm.specs import (
    FRONTEND, ServiceSpec, SwarmDeployment, SwarmFile, content_name,
)

SERVICE_TYPE = "synapse:index:SwarmService"
CONVERGE_TIMEOUT = "5m"  # how long `up` waits for a service's task to run healthy
TMPFS_MODE = 0o1777  # Swarm's tmpfs takes no owner (SwarmService)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _duration(seconds: int) -> str:
    """In the form the provider reads a service's durations back (60 s is "1m")."""
    return pm.short_duration(seconds)


def _healthcheck(h: Healthcheck) -> docker.ServiceTaskSpecContainerSpecHealthcheckArgs:
    return docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
        tests=list(h.test), interval=_duration(h.interval_s), timeout=_duration(h.timeout_s),
        retries=h.retries, start_period=_duration(h.start_period_s))


class Files:
    """Every file of the stack as one Swarm config or secret per content, shared by
    the services that mount the same file: a homeserver.yaml is one config."""

    def __init__(self, prefix: str, secrets: pulumi.Output) -> None:
        self.prefix, self.secrets = prefix, secrets
        self.configs: dict[str, docker.ServiceConfig] = {}
        self.secret_objects: dict[str, docker.Secret] = {}

    def config(self, f: SwarmFile) -> docker.ServiceConfig:
        text = f.render({})
        key = f"{f.slug}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        if key not in self.configs:
            self.configs[key] = docker.ServiceConfig(
                f"config-{key}", name=content_name(self.prefix, f.slug, text), data=_b64(text))
        return self.configs[key]

    def secret(self, f: SwarmFile) -> docker.Secret:
        # One secret per path: its content is the same wherever it is mounted. The
        # name comes from the content, so it is itself a secret Output.
        if f.slug not in self.secret_objects:
            rendered = self.secrets.apply(f.render)
            self.secret_objects[f.slug] = docker.Secret(
                f"secret-{f.slug}",
                name=pulumi.Output.secret(rendered.apply(
                    lambda t, slug=f.slug: content_name(self.prefix, slug, t))),
                data=pulumi.Output.secret(rendered.apply(_b64)))
        return self.secret_objects[f.slug]


class SwarmService(pulumi.ComponentResource):
    """One Swarm service of one replica: a Synapse process, Postgres, Redis, nginx
    or Prometheus."""

    def __init__(self, spec: ServiceSpec, plan: Plan, files: Files,
                 networks: dict[str, docker.Network], after: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SERVICE_TYPE, spec.key, None, opts)
        s = plan.settings
        size = s.sizes[spec.size]
        # Sets in the order the provider's read stores them (provider model).
        by_target = sorted(spec.files, key=lambda f: f.target)
        configs = [docker.ServiceTaskSpecContainerSpecConfigArgs(
            config_id=c.id, config_name=c.name, file_name=f.target, file_uid=str(f.uid),
            file_gid=str(f.gid), file_mode=f.mode)
            for f in by_target if not f.secret for c in [files.config(f)]]
        secrets = [docker.ServiceTaskSpecContainerSpecSecretArgs(
            secret_id=x.id, secret_name=x.name, file_name=f.target, file_uid=str(f.uid),
            file_gid=str(f.gid), file_mode=f.mode)
            for f in by_target if f.secret for x in [files.secret(f)]]
        mounts = [docker.ServiceTaskSpecContainerSpecMountArgs(
            target=t, source=v, type="volume", read_only=False)
            for v, t in spec.volumes.items()]
        mounts += [docker.ServiceTaskSpecContainerSpecMountArgs(
            target=t, type="tmpfs", read_only=False,
            # Swarm's tmpfs has no owner option: world-writable with the sticky bit,
            # in a container whose processes all run as one user.
            tmpfs_options=docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs(
                size_bytes=n, mode=TMPFS_MODE))
            for t, n in spec.tmpfs.items()]
        mounts.sort(key=lambda m: m.target)
        update = dict(order=spec.update.order, parallelism=spec.update.parallelism,
                      monitor=_duration(spec.update.monitor_s), delay=_duration(spec.update.delay_s),
                      max_failure_ratio="0")
        self.service = docker.Service(
            spec.key,
            name=spec.name,
            labels=[docker.ServiceLabelArgs(label=k, value=v) for k, v in spec.labels.items()],
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=spec.image,
                    commands=list(spec.command) if spec.command else None,
                    args=list(spec.args) or None,
                    env=dict(spec.env) or None,
                    user=spec.user,
                    configs=configs or None,
                    secrets=secrets or None,
                    mounts=mounts or None,
                    healthcheck=_healthcheck(spec.healthcheck),
                    cap_drops=["ALL"],
                    cap_adds=sorted(spec.cap_add) or None,
                    stop_grace_period=_duration(spec.stop_grace_s),
                ),
                # By ID: the provider reads back IDs, so a name would differ every time.
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(
                    id=networks[n].id) for n in spec.networks],
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=sorted(spec.constraints) or None),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any",
                                                                      delay="5s"),
                resources=docker.ServiceTaskSpecResourcesArgs(
                    limits=docker.ServiceTaskSpecResourcesLimitsArgs(
                        nano_cpus=int(size.cpus * 1e9), memory_bytes=size.memory_mb << 20)),
            ),
            mode=docker.ServiceModeArgs(
                replicated=docker.ServiceModeReplicatedArgs(replicas=1)),
            update_config=docker.ServiceUpdateConfigArgs(
                failure_action=spec.update.failure_action, **update),
            rollback_config=docker.ServiceRollbackConfigArgs(
                failure_action="pause", **update),
            # dnsrr: the service name resolves to its task (no virtual IP, which
            # needs IPVS); ports in host mode, on the node the task runs on.
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode="dnsrr",
                ports=[docker.ServiceEndpointSpecPortArgs(
                    target_port=p.internal, published_port=p.external, publish_mode="host",
                    protocol="tcp") for p in sorted(spec.ports, key=lambda p: p.internal)] or None),
            converge_config=docker.ServiceConvergeConfigArgs(delay="1s",
                                                             timeout=CONVERGE_TIMEOUT),
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )
        self.register_outputs({"name": self.service.name})


def deploy(plan: Plan, deployment: SwarmDeployment, secrets: pulumi.Output) -> dict[str, Any]:
    """Register every resource; returns the stack outputs (none of them secret)."""
    s = plan.settings
    networks = {
        # The backend is internal (no route out) and not attachable: only the
        # stack's services join it. The frontend carries egress and published
        # ports; attachable, so an operator's container can reach nginx's admin
        # listener and Prometheus, which are not published on a Swarm.
        key: docker.Network(f"{key}-network", name=name, driver="overlay", internal=internal,
                            attachable=not internal,
                            # synapse:swarm.encrypted: IPsec between nodes (docs/swarm.md).
                            options={"encrypted": ""} if deployment.encrypted else None)
        for key, (name, internal) in deployment.networks.items()
    }
    files = Files(s.name_prefix, secrets)
    created: dict[str, SwarmService] = {}
    for spec in deployment.services:
        after = [created[k].service for k in spec.depends_on if k in created]
        created[spec.key] = SwarmService(spec, plan, files, networks, after)
    nginx = deployment.service("nginx")
    return {
        "target": "swarm",
        "serverName": s.server_name,
        "clientUrl": s.public_base_url,
        "nginxUrl": f"{'https' if s.nginx.tls else 'http'}://{s.nginx.bind_address}:"
                    f"{s.nginx.client_port}/",
        "nginxService": nginx.name,
        "processes": [{"name": p.name, "class": p.worker_class,
                       "service": deployment.service(p.name).name,
                       "placement": list(deployment.service(p.name).constraints)}
                      for p in plan.processes],
        "networks": {k: n for k, (n, _internal) in deployment.networks.items()},
        # Named volumes on the node each service is placed on; `down` leaves them.
        "dataVolumes": sorted({v for svc in deployment.services for v in svc.volumes}),
        "namePrefix": s.name_prefix,
        "frontendNetwork": deployment.networks[FRONTEND][0],
    }
