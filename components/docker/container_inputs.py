"""ContainerSpec -> the inputs pulumi-docker's Container receives, as plain data
(no Pulumi import), keyed as the provider's schema names them (camelCase).

docker_container.py builds the real resource from this, and the impact report
(impact.py) diffs two of these with the provider model, so a report and a
`pulumi preview` see the same inputs. Every value is already in the form the
provider reads back into state (provider_model): anything else would show a diff
on every preview, and replace for cpus. Secret files hold placeholders here.
"""

from __future__ import annotations

from typing import Any, Mapping

from components.provider import model as pm
from components.render.containers import ContainerSpec, Deployment, File, Secrets
from components.plan.settings import Size
from components.render.synapse_config import PLACEHOLDERS

# Time pulumi-docker waits for a new container to turn healthy. Main's first start
# creates the whole schema, which takes longer than the provider's 60 s default.
WAIT_TIMEOUT_S = 300

# Resource options of every container. The provider only records a healthcheck,
# tmpfs or same-count mounts change in state (not ForceNew, and Update has no code
# for them: provider_model): replace instead, deleting first since the name is fixed.
REPLACE_ON_CHANGES = ("healthcheck", "tmpfs", "mounts")
# Every container's json-file rotation (doctor.py warns of daemon-wide extras).
LOG_OPTS = {"max-size": "50m", "max-file": "3"}
DELETE_BEFORE_REPLACE = True


def container_inputs(spec: ContainerSpec, deployment: Deployment, sizes: Mapping[str, Size],
                     secrets: Secrets = PLACEHOLDERS) -> dict[str, Any]:
    """The Container inputs of `spec`, with `image` as the reference (Pulumi passes
    the RemoteImage's ID) and secret files rendered with `secrets`."""
    hc = spec.healthcheck
    size = sizes[spec.size]
    volume_names = {v.key: v.name for v in deployment.volumes}
    network_names = {k: name for k, (name, _internal) in deployment.networks.items()}
    inputs: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "command": list(spec.command),
        "envs": [f"{k}={v}" for k, v in spec.env.items()],
        "labels": [{"label": k, "value": v} for k, v in spec.labels.items()],
        "uploads": [_upload(f, secrets) for f in spec.files],
        "mounts": [{"target": m.target, "type": "volume", "source": volume_names[m.volume],
                    "readOnly": m.read_only} for m in spec.mounts],
        "networksAdvanced": [{"name": network_names[n], "aliases": [spec.key]}
                             for n in spec.networks],
        "healthcheck": {
            "tests": list(hc.test),
            "interval": pm.duration(hc.interval_s),
            "timeout": pm.duration(hc.timeout_s),
            "retries": hc.retries,
            "startPeriod": pm.duration(hc.start_period_s),
            # "0s" when unset, as read back. Needs Docker API 1.44: see provider_model.
            "startInterval": pm.duration(
                hc.start_interval_s
                or (deployment.healthcheck_start_interval_s if hc.start_period_s else 0)),
        },
        "restart": spec.restart,
        "memory": size.memory_mb,
        "memorySwap": size.memory_mb,  # no swap; unset, Docker stores 2 x memory
        "cpus": pm.cpus(size.cpus),
        "logDriver": "json-file",
        "logOpts": dict(LOG_OPTS),
        "destroyGraceSeconds": spec.destroy_grace_seconds,
        "wait": spec.wait_healthy,
        "waitTimeout": WAIT_TIMEOUT_S,
    }
    inputs.update(privilege_inputs(spec))
    if spec.entrypoint:
        inputs["entrypoints"] = list(spec.entrypoint)
    if spec.ports:
        inputs["ports"] = [{"internal": p.internal, "external": p.external, "ip": p.ip,
                            "protocol": "tcp"}
                           for p in sorted(spec.ports, key=lambda p: p.internal)]
    return inputs


def _upload(f: File, secrets: Secrets) -> dict[str, Any]:
    # Root's: pulumi-docker 5.1.0 has no upload owner (File.non_root_reader).
    return {"file": f.path, "content": f.render(secrets),
            "executable": f.executable, "permissions": f.mode}


def privilege_inputs(spec: ContainerSpec) -> dict[str, Any]:
    """The user, capabilities and the rest of spec.privileges, as inputs."""
    priv = spec.privileges
    inputs: dict[str, Any] = {
        "capabilities": {"adds": sorted(priv.cap_add), "drops": list(priv.cap_drop)},
        "securityOpts": list(priv.security_opts),
        "readOnly": priv.read_only,
    }
    if priv.user is not None:
        inputs["user"] = priv.user
    if priv.groups:
        inputs["groupAdds"] = list(priv.groups)
    if priv.tmpfs:
        inputs["tmpfs"] = dict(priv.tmpfs)
    return inputs
