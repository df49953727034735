"""Replay a stack on a real Docker engine, the way Pulumi and pulumi-docker would
apply it, since neither can be installed here:

  inputs.py     what the replay applies; anything else is refused
  provider.py   the provider's create/read/update/delete on the engine
  swarm_provider.py  the same for Swarm services, configs and secrets
  engine.py     up (refresh, plan with components/provider/model.py, print, apply)
                and down (destroy --exclude-protected, or everything)
  state.py      the per-stack state file (what Pulumi's state would hold)
  graph.py      dependency order; isolation.py the no-egress precondition
  stack.py      what the e2e tests get back from `up`

  python -m tests.e2e.replay up   --config config/Pulumi.dev.yaml [--set KEY=YAML ...] [--preview]
  python -m tests.e2e.replay down --config config/Pulumi.dev.yaml [--delete-data]
"""

from tests.e2e.replay.docker_api import LOG_TAIL, api, container_logs
from tests.e2e.replay.engine import CREATE, DELETE, REPLACE, SAME, UPDATE, StepPlan, capture_stack
from tests.e2e.replay.errors import ReplayError, UnsupportedInput
from tests.e2e.replay.graph import dependency_graph
from tests.e2e.replay.inputs import (
    CONTAINER,
    IMAGE,
    NETWORK,
    SECRET,
    SERVICE,
    SERVICE_CONFIG,
    VOLUME,
    check_inputs,
    is_no_op,
)
from tests.e2e.replay.isolation import check_isolation
from tests.e2e.replay.provider import read_container
from tests.e2e.replay.stack import Deployed, describe, down, up


def up_plan(config, overrides=None) -> StepPlan:
    """What an `up` would do now (refresh, then plan), applying nothing: a preview."""
    from tests.e2e.replay import engine

    return engine.up(config, overrides, dry_run=True).plan

__all__ = [
    "LOG_TAIL", "api", "container_logs", "CREATE", "DELETE", "REPLACE", "SAME", "UPDATE", "StepPlan",
    "capture_stack", "ReplayError", "UnsupportedInput", "dependency_graph", "CONTAINER", "IMAGE",
    "NETWORK", "VOLUME", "SERVICE", "SERVICE_CONFIG", "SECRET", "check_inputs", "is_no_op", "check_isolation", "read_container",
    "Deployed", "describe", "down", "up", "up_plan",
]
