"""The services around Synapse: Postgres, Redis, nginx, Prometheus, the
scheduled backup, the ACME client and the live-config publisher, one container
each (nginx with its config publisher)."""

from __future__ import annotations

from dataclasses import dataclass
import pulumi

from components.render.containers import ContainerSpec, VolumeSpec
from components.docker.docker_container import Host, volume


@dataclass
class ServiceArgs:
    spec: ContainerSpec
    host: Host
    data_volume: VolumeSpec | None = None


class _Service(pulumi.ComponentResource):
    def __init__(self, token: str, name: str, args: ServiceArgs,
                 opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(token, name, None, opts)
        own = {}
        if args.data_volume:
            own[args.data_volume.key] = volume(f"{name}-data", args.data_volume, parent=self)
        self.container = args.host.container(
            f"{name}-container", args.spec, parent=self, own_volumes=own)
        self.register_outputs({"container": self.container.name})


class Postgres(_Service):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Postgres", name, args, opts)


class Redis(_Service):
    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Redis", name, args, opts)


class LiveConfig(_Service):
    """Publishes what running processes re-read (Synapse's log configs,
    Prometheus's targets) into their shared volume."""

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:LiveConfig", name, args, opts)


class Prometheus(_Service):
    """Scrapes every Synapse process (synapse:metrics.enabled)."""

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Prometheus", name, args, opts)


class Backup(_Service):
    """Backups on a schedule into its retained volume (synapse:backup)."""

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Backup", name, args, opts)


class Acme(_Service):
    """Obtains and renews nginx's certificate from an ACME server (nginx.tls: acme),
    keeping its account and certificates in its retained volume."""

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Acme", name, args, opts)


@dataclass
class NginxArgs:
    spec: ContainerSpec
    publisher: ContainerSpec  # nginx-config: carries the config (containers._nginx_specs)
    config_volume: VolumeSpec
    host: Host


class Nginx(pulumi.ComponentResource):
    """nginx and the small container that publishes its config to a volume: a
    routing change replaces the publisher and nginx reloads, keeping its ID."""

    def __init__(self, name: str, args: NginxArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("synapse:index:Nginx", name, None, opts)
        conf = {args.config_volume.key: volume(f"{name}-config-volume", args.config_volume,
                                               parent=self)}
        self.publisher = args.host.container(f"{name}-config", args.publisher, parent=self,
                                             own_volumes=conf)
        self.container = args.host.container(f"{name}-container", args.spec, parent=self,
                                             own_volumes=conf)
        self.register_outputs({"container": self.container.name,
                               "configPublisher": self.publisher.name})
