"""ContainerSpec -> docker.Container: the one place where a spec becomes
pulumi-docker inputs, so every component builds containers the same way."""

from __future__ import annotations

from typing import Mapping, Sequence

import pulumi
import pulumi_docker as docker

from components.docker.container_inputs import (
    DELETE_BEFORE_REPLACE,
    REPLACE_ON_CHANGES,
    container_inputs,
)
from components.render.containers import ContainerSpec, Deployment, VolumeSpec
from components.plan.settings import Size


def _files(spec: ContainerSpec, plain: list[dict], secrets: pulumi.Output
           ) -> list[docker.ContainerUploadArgs]:
    uploads = []
    for f, u in zip(spec.files, plain):
        # Only a secret's own file is a secret Output: Pulumi encrypts it in state;
        # the others need no secret, and a preview shows their line diff.
        content = pulumi.Output.secret(secrets.apply(f.render)) if f.secret else u["content"]
        uploads.append(docker.ContainerUploadArgs(file=u["file"], content=content,
                                                  executable=u["executable"],
                                                  permissions=u["permissions"]))
    return uploads


def container(
    resource_name: str,
    spec: ContainerSpec,
    *,
    image: pulumi.Input[str],
    deployment: Deployment,
    sizes: Mapping[str, Size],
    networks: Mapping[str, docker.Network],
    volumes: Mapping[str, docker.Volume],
    secrets: pulumi.Output,
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource] = (),
) -> docker.Container:
    """The Container for `spec`: container_inputs' values, with the image, volume
    and network names taken from their resources (so Pulumi orders them)."""
    i = container_inputs(spec, deployment, sizes)
    hc = i["healthcheck"]
    return docker.Container(
        resource_name,
        name=i["name"],
        image=image,
        entrypoints=i.get("entrypoints"),
        command=i["command"],
        envs=i["envs"],
        labels=[docker.ContainerLabelArgs(label=x["label"], value=x["value"]) for x in i["labels"]],
        uploads=_files(spec, i["uploads"], secrets),
        mounts=[
            docker.ContainerMountArgs(target=x["target"], type=x["type"],
                                      source=volumes[m.volume].name, read_only=x["readOnly"])
            for m, x in zip(spec.mounts, i["mounts"])
        ],
        networks_advanced=[
            docker.ContainerNetworksAdvancedArgs(name=networks[n].name, aliases=x["aliases"])
            for n, x in zip(spec.networks, i["networksAdvanced"])
        ],
        ports=[docker.ContainerPortArgs(internal=x["internal"], external=x["external"],
                                        ip=x["ip"], protocol=x["protocol"])
               for x in i.get("ports", [])] or None,
        healthcheck=docker.ContainerHealthcheckArgs(
            tests=hc["tests"], interval=hc["interval"], timeout=hc["timeout"],
            retries=hc["retries"], start_period=hc["startPeriod"],
            start_interval=hc["startInterval"],
        ),
        user=i.get("user"),
        group_adds=i.get("groupAdds"),
        capabilities=docker.ContainerCapabilitiesArgs(adds=i["capabilities"]["adds"],
                                                      drops=i["capabilities"]["drops"]),
        security_opts=i["securityOpts"],
        read_only=i["readOnly"],
        tmpfs=i.get("tmpfs"),
        restart=i["restart"],
        memory=i["memory"],
        memory_swap=i["memorySwap"],
        cpus=i["cpus"],
        log_driver=i["logDriver"],
        log_opts=i["logOpts"],
        destroy_grace_seconds=i["destroyGraceSeconds"],
        wait=i["wait"],
        wait_timeout=i["waitTimeout"],
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            replace_on_changes=list(REPLACE_ON_CHANGES),
            delete_before_replace=DELETE_BEFORE_REPLACE,
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
        deployment: Deployment,
    ) -> None:
        self.deployment = deployment
        self.containers: dict[str, docker.Container] = {}  # by spec key, as registered
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
    ) -> docker.Container:
        """The spec's container, waiting for the containers its `depends_on` names
        (registered before it: Deployment.containers is in creation order)."""
        missing = [k for k in spec.depends_on if k not in self.containers]
        if missing:
            raise ValueError(f"{spec.key} depends on {missing}, not registered before it")
        self.containers[spec.key] = container(
            resource_name,
            spec,
            image=self.images[spec.image].image_id,
            deployment=self.deployment,
            sizes=self.sizes,
            networks=self.networks,
            volumes={**self.volumes, **(own_volumes or {})},
            secrets=self.secrets,
            parent=parent,
            depends_on=[self.containers[k] for k in spec.depends_on],
        )
        return self.containers[spec.key]


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
