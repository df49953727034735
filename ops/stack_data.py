"""Where a deployed stack keeps its data, from its stack file: the containers and
volumes the data tools read and write (components' plan, no Pulumi import)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.plan import secret_keys
from components.render.containers import SYNAPSE_UID, build_deployment
from components.plan.stack_config import read_stack_file, stack_name_of
from components.render.synapse_config import POSTGRES_DB, POSTGRES_USER
from components.plan.topology import build_plan

WRITER_ROLES = ("main", "worker", "backup")
DB_ARGS = ("--username", POSTGRES_USER, "--dbname", POSTGRES_DB)
SYNAPSE_USER = f"{SYNAPSE_UID}:{SYNAPSE_UID}"


@dataclass(frozen=True)
class StackData:
    stack: str
    prefix: str
    postgres: str  # container names
    main: str
    postgres_image: str
    synapse_image: str
    postgres_volume: str
    media_volume: str
    initdb_args: str  # POSTGRES_INITDB_ARGS, as the stack's postgres has it
    # The generated secrets: config key -> (container, file, user to read it as).
    secrets: dict[str, tuple[str, str, str]]
    # What writes to the database: every Synapse container and the backup container.
    writers: tuple[str, ...] = ()


def stack_data(config: Path) -> StackData:
    settings = read_stack_file(config).settings
    deployment = build_deployment(build_plan(settings))
    postgres, main = deployment.container("postgres"), deployment.container("main")
    volumes = {v.key: v.name for v in deployment.volumes}
    secrets = {}
    for s in secret_keys.SECRETS:
        if not s.generated:
            continue  # the operator's own (TLS): in their stack config already
        in_postgres = s.readers == secret_keys.POSTGRES
        secrets[s.key] = ((postgres.name, s.path, "") if in_postgres
                          else (main.name, s.path, SYNAPSE_USER))
    return StackData(
        stack=stack_name_of(config), prefix=settings.name_prefix,
        postgres=postgres.name, main=main.name,
        postgres_image=settings.images.postgres, synapse_image=settings.images.synapse,
        postgres_volume=volumes["postgres-data"], media_volume=volumes["media"],
        initdb_args=postgres.env["POSTGRES_INITDB_ARGS"], secrets=secrets,
        writers=tuple(c.name for c in deployment.containers if c.role in WRITER_ROLES))
