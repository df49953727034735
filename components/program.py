"""The Pulumi program: stack config -> settings -> plan -> specs -> resources.

Reads the stack config (a RunError naming the bad key, before anything is
registered), makes the stack's generated secrets, then hands the plan to the
target that turns it into resources, and exports what it returns.
"""

from __future__ import annotations

from typing import Any, Mapping

import pulumi
from pulumi.runtime import config as runtime_config

from components.docker import deploy as docker_target
from components.plan.errors import ConfigError
from components.plan.stack_config import StackConfig, read_stack
from components.render.containers import build_deployment
from components.secrets import stack_secrets
from components.swarm import deploy as swarm_target
from components.swarm.specs import build_swarm


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


def main() -> Mapping[str, Any]:
    config = read_config()
    for warning in config.warnings:
        pulumi.log.warn(warning)
    plan = config.plan
    secrets = stack_secrets(config.secrets, config.secret_config)
    if plan.settings.target == "swarm":
        outputs = swarm_target.deploy(plan, build_swarm(plan), secrets)
    else:
        outputs = docker_target.deploy(plan, build_deployment(plan), secrets)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
