"""The services around Synapse: Postgres, Redis and nginx, one container each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi

from components.containers import ContainerSpec, VolumeSpec
from components.docker_container import Host, volume


@dataclass
class ServiceArgs:
    spec: ContainerSpec
    host: Host
    data_volume: VolumeSpec | None = None
    depends_on: Sequence[pulumi.Resource] = ()


class _Service(pulumi.ComponentResource):
    def __init__(self, token: str, name: str, args: ServiceArgs,
                 opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(token, name, None, opts)
        own = {}
        if args.data_volume:
            own[args.data_volume.key] = volume(f"{name}-data", args.data_volume, parent=self)
        self.container = args.host.container(
            f"{name}-container", args.spec, parent=self, own_volumes=own,
            depends_on=args.depends_on,
        )
        self.register_outputs({"container": self.container.name})


class Postgres(_Service):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Postgres", name, args, opts)


class Redis(_Service):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Redis", name, args, opts)


class Nginx(_Service):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Nginx", name, args, opts)
