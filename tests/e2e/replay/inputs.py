"""What the replay applies: every input the program may register, per type.

Every registered input must be one the replay applies; anything else is refused
(UnsupportedInput), never ignored: ignoring it would deploy something other than
what the program asked for. Resource options are checked the same way.
"""

from __future__ import annotations

from typing import Any

from components.provider.model import (
    CONTAINER, IMAGE, NETWORK, SECRET, SERVICE, SERVICE_CONFIG, VOLUME,
)
from tests.e2e.replay.errors import UnsupportedInput
from tests.support.capture import Registered

NO_OP_PREFIXES = ("pulumi:pulumi:Stack", "synapse:index:", "random:")

# Every key the replay applies, per resource type; nested objects list their keys.
CONTAINER_SCHEMA: dict[str, Any] = {
    "name": str,
    "image": str,
    "entrypoints": [str],
    "command": [str],
    "envs": [str],
    "labels": [{"label": str, "value": str}],
    "uploads": [{"file": str, "content": str, "executable": bool, "permissions": str}],
    "mounts": [{"target": str, "type": str, "source": str, "readOnly": bool}],
    "networksAdvanced": [{"name": str, "aliases": [str]}],
    "ports": [{"internal": float, "external": float, "ip": str, "protocol": str}],
    "healthcheck": {"tests": [str], "interval": str, "timeout": str, "retries": float,
                    "startPeriod": str, "startInterval": str},
    "user": str,
    "groupAdds": [str],
    "capabilities": {"adds": [str], "drops": [str]},
    "securityOpts": [str],
    "readOnly": bool,
    "tmpfs": {"*": str},
    "restart": str,
    "memory": float,
    "memorySwap": float,
    "cpus": str,
    "logDriver": str,
    "logOpts": {"*": str},
    "destroyGraceSeconds": float,
    "wait": bool,
    "waitTimeout": float,
}
NETWORK_SCHEMA = {"name": str, "driver": str, "internal": bool, "attachable": bool,
                  "options": {"*": str}}
_FILE_REF = {"fileName": str, "fileUid": str, "fileGid": str, "fileMode": float}
_UPDATE = {"order": str, "parallelism": float, "failureAction": str, "monitor": str,
           "delay": str, "maxFailureRatio": str}
SERVICE_SCHEMA: dict[str, Any] = {
    "name": str,
    "labels": [{"label": str, "value": str}],
    "taskSpec": {
        "containerSpec": {
            "image": str, "commands": [str], "args": [str], "env": {"*": str}, "user": str,
            "configs": [{**_FILE_REF, "configId": str, "configName": str}],
            "secrets": [{**_FILE_REF, "secretId": str, "secretName": str}],
            "mounts": [{"target": str, "type": str, "source": str, "readOnly": bool,
                        "tmpfsOptions": {"sizeBytes": float, "mode": float}}],
            "healthcheck": {"tests": [str], "interval": str, "timeout": str, "retries": float,
                            "startPeriod": str},
            "capAdds": [str], "capDrops": [str], "stopGracePeriod": str,
        },
        "networksAdvanceds": [{"id": str}],
        "placement": {"constraints": [str]},
        "restartPolicy": {"condition": str, "delay": str},
        "resources": {"limits": {"nanoCpus": float, "memoryBytes": float}},
    },
    "mode": {"replicated": {"replicas": float}},
    "updateConfig": _UPDATE,
    "rollbackConfig": _UPDATE,
    "endpointSpec": {"mode": str, "ports": [{"targetPort": float, "publishedPort": float,
                                             "publishMode": str, "protocol": str}]},
    "convergeConfig": {"delay": str, "timeout": str},
}
SERVICE_CONFIG_SCHEMA = {"name": str, "data": str}
SECRET_SCHEMA = {"name": str, "data": str}
VOLUME_SCHEMA = {"name": str, "driver": str, "driverOpts": {"*": str}}
IMAGE_SCHEMA = {"name": str, "keepLocally": bool}
SCHEMAS = {CONTAINER: CONTAINER_SCHEMA, NETWORK: NETWORK_SCHEMA, VOLUME: VOLUME_SCHEMA,
           IMAGE: IMAGE_SCHEMA, SERVICE: SERVICE_SCHEMA, SERVICE_CONFIG: SERVICE_CONFIG_SCHEMA,
           SECRET: SECRET_SCHEMA}
MOUNT_TYPES = ("volume",)  # bind/tmpfs mounts are not applied: refuse them
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
# Resource options the replay models; aliases only rename, so they need nothing.
MODELLED_OPTIONS = ("replaceOnChanges", "deleteBeforeReplace", "protect", "retainOnDelete",
                    "aliases")


def is_no_op(res: Registered) -> bool:
    """Resources with nothing on the Docker host: the stack, components, randoms."""
    return res.type.startswith(NO_OP_PREFIXES)


def check_inputs(res: Registered) -> dict[str, Any]:
    """The resource's inputs with secrets revealed, after checking that the replay
    applies every one of them and models every resource option set."""
    schema = SCHEMAS.get(res.type)
    where = f"{res.type.split(':')[-1]} {res.name!r}"
    if schema is None:
        raise UnsupportedInput(f"{res.type} {res.name!r}: resource type not applied by the replay")
    for option, value in res.options.items():
        if value and option not in MODELLED_OPTIONS:
            raise UnsupportedInput(f"{where}: resource option {option}={value!r} is not "
                                   "modelled by the replay")
    plain = res.plain
    _check(plain, schema, where)
    return plain


def _check(value: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise UnsupportedInput(f"{where}: expected an object, got {value!r}")
        for key, sub in value.items():
            if key in schema:
                _check(sub, schema[key], f"{where}.{key}")
            elif "*" in schema:
                _check(sub, schema["*"], f"{where}.{key}")
            else:
                raise UnsupportedInput(
                    f"{where}: input {key!r} is not applied by the replay "
                    f"(applied: {', '.join(k for k in schema if k != '*')})")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise UnsupportedInput(f"{where}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    elif schema is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnsupportedInput(f"{where}: expected a number, got {value!r}")
    elif not isinstance(value, schema):
        raise UnsupportedInput(f"{where}: expected {schema.__name__}, got {value!r}")
