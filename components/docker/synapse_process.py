"""Synapse components: the main process, and one component per worker class
holding its N containers. Each process gets its own data volume (its logs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_docker as docker

from components.render.containers import ContainerSpec, VolumeSpec
from components.docker.docker_container import Host, volume


@dataclass
class SynapseArgs:
    specs: Sequence[ContainerSpec]  # one per process, in index order
    data_volumes: Sequence[VolumeSpec]  # same order as specs
    host: Host


class _SynapseProcesses(pulumi.ComponentResource):
    def __init__(self, token: str, name: str, args: SynapseArgs,
                 opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(token, name, None, opts)
        # Process name -> its container.
        self.by_process: dict[str, docker.Container] = {}
        for spec, vol in zip(args.specs, args.data_volumes, strict=True):
            data = volume(f"{spec.key}-data", vol, parent=self)
            self.by_process[spec.key] = args.host.container(
                spec.key,
                spec,
                parent=self,
                own_volumes={vol.key: data},
            )
        self.containers = list(self.by_process.values())
        self.container_names = pulumi.Output.all(*[c.name for c in self.containers])
        self.register_outputs({"containers": self.container_names})


class SynapseMain(_SynapseProcesses):
    """The main Synapse process."""

    def __init__(self, name: str, args: SynapseArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("synapse:index:SynapseMain", name, args, opts)

    @property
    def container(self) -> docker.Container:
        return self.containers[0]


class SynapseWorkers(_SynapseProcesses):
    """All workers of one class (`rooms1`..`roomsN`). Its type token keeps the
    component's first name, WorkerClass: the token is part of every child's URN, so
    renaming it would make Pulumi replace every worker container."""

    def __init__(self, name: str, args: SynapseArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("synapse:index:WorkerClass", name, args, opts)
