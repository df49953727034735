"""ContainerSpec -> docker.Container: the one place where a spec becomes
pulumi-docker inputs, so every component builds containers the same way."""

from __future__ import annotations

from typing import Mapping, Sequence

import pulumi
import pulumi_docker as docker

from components import provider_model as pm
from components.containers import ContainerSpec, VolumeSpec
from components.settings import Size

# Time pulumi-docker waits for a new container to turn healthy. Main's first start
# creates the whole schema, which takes longer than the provider's 60 s default.
WAIT_TIMEOUT_S = 300


def _files(spec: ContainerSpec, secrets: pulumi.Output) -> list[docker.ContainerUploadArgs]:
    uploads = []
    for f in spec.files:
        if f.secret:
            # Only the secret's own file is a secret Output: Pulumi encrypts it in state.
            content = pulumi.Output.secret(secrets.apply(f.render))
        else:
            content = f.render({})  # needs no secret: a preview shows its line diff
        uploads.append(docker.ContainerUploadArgs(file=f.path, content=content,
                                                  executable=f.executable,
                                                  permissions=f.mode))
    return uploads


def container(
    resource_name: str,
    spec: ContainerSpec,
    *,
    image: pulumi.Input[str],
    size: Size,
    networks: Mapping[str, docker.Network],
    volumes: Mapping[str, docker.Volume],
    secrets: pulumi.Output,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> docker.Container:
    hc = spec.healthcheck
    return docker.Container(
        resource_name,
        name=spec.name,
        image=image,
        entrypoints=list(spec.entrypoint) if spec.entrypoint else None,
        command=list(spec.command),
        envs=[f"{k}={v}" for k, v in spec.env.items()],
        labels=[docker.ContainerLabelArgs(label=k, value=v) for k, v in spec.labels.items()],
        uploads=_files(spec, secrets),
        mounts=[
            docker.ContainerMountArgs(target=m.target, type="volume", source=volumes[m.volume].name,
                                      read_only=False)
            for m in spec.mounts
        ],
        networks_advanced=[
            docker.ContainerNetworksAdvancedArgs(name=networks[n].name, aliases=[spec.key])
            for n in spec.networks
        ],
        # Every value below is in the form the provider reads back (provider_model):
        # anything else would show a diff on every preview, and replace for cpus.
        ports=[docker.ContainerPortArgs(internal=p.internal, external=p.external, ip=p.ip,
                                        protocol="tcp")
               for p in sorted(spec.ports, key=lambda p: p.internal)] or None,
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=list(hc.test),
            interval=pm.duration(hc.interval_s),
            timeout=pm.duration(hc.timeout_s),
            retries=hc.retries,
            start_period=pm.duration(hc.start_period_s),
            start_interval=pm.duration(0),  # read back as "0s" when unset
        ),
        restart=spec.restart,
        memory=size.memory_mb,
        memory_swap=size.memory_mb,  # no swap; unset, Docker stores 2 x memory
        cpus=pm.cpus(size.cpus),
        log_driver="json-file",
        log_opts={"max-size": "50m", "max-file": "3"},
        destroy_grace_seconds=spec.destroy_grace_seconds,
        wait=True,
        wait_timeout=WAIT_TIMEOUT_S,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            # The provider only records a healthcheck change in state (no update
            # code): replace instead, deleting first since the name is fixed.
            replace_on_changes=["healthcheck"],
            delete_before_replace=True,
        ),
    )


class Host:
    """What every component's containers share: networks, shared volumes, images,
    size classes and the secrets Output."""

    def __init__(
        self,
        *,
        networks: Mapping[str, docker.Network],
        volumes: Mapping[str, docker.Volume],
        images: Mapping[str, docker.RemoteImage],
        sizes: Mapping[str, Size],
        secrets: pulumi.Output,
    ) -> None:
        self.networks = networks
        self.volumes = volumes
        self.images = images
        self.sizes = sizes
        self.secrets = secrets

    def container(
        self,
        resource_name: str,
        spec: ContainerSpec,
        *,
        parent: pulumi.Resource,
        own_volumes: Mapping[str, docker.Volume] | None = None,
        depends_on: Sequence[pulumi.Resource] = (),
    ) -> docker.Container:
        return container(
            resource_name,
            spec,
            image=self.images[spec.image].image_id,
            size=self.sizes[spec.size],
            networks=self.networks,
            volumes={**self.volumes, **(own_volumes or {})},
            secrets=self.secrets,
            parent=parent,
            depends_on=depends_on,
        )


def volume(resource_name: str, spec: VolumeSpec, parent: pulumi.Resource | None = None) -> docker.Volume:
    """A data volume is retained on delete: `pulumi destroy` and scaling down leave
    it on the host (out of state), and the next create of that name takes it back
    (Docker's VolumeCreate returns an existing volume)."""
    return docker.Volume(
        resource_name,
        name=spec.name,
        driver="local",
        driver_opts=dict(spec.driver_opts) or None,
        opts=pulumi.ResourceOptions(parent=parent, retain_on_delete=spec.retain),
    )
