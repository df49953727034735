"""Feed rendered files to Synapse's own config parser (matrix-synapse installed in
the test venv). The files name in-container paths (/conf, /data, /media); they
are written under a temporary root and those prefixes point there, nothing else
is changed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from synapse.config.homeserver import HomeServerConfig

from components.render.containers import ContainerSpec, Deployment
from components.render.live_config import STAGE as LIVE_STAGE
from components.render.synapse_config import CONFIG_DIR, DATA_DIR, LIVE_CONFIG_DIR, MEDIA_DIR

TEST_SECRETS = {
    "macaroonSecretKey": "m" * 32,
    "registrationSharedSecret": "r" * 32,
    "formSecret": "f" * 32,
    "workerReplicationSecret": "w" * 32,
    "postgresPassword": "p" * 32,
    "signingKey": "ed25519 a_test " + "A" * 43,
    "secretConfig": {},
}
_PREFIXES = re.compile(rf"(?<![\w/])({CONFIG_DIR}|{DATA_DIR}|{MEDIA_DIR})(?=/|\s|$)", re.M)


def live_files(d: Deployment) -> dict[str, str]:
    """What live-config publishes, by the path a Synapse process reads it at."""
    staged = d.container("live-config").rendered_files()
    return {f"{LIVE_CONFIG_DIR}/{path.removeprefix(LIVE_STAGE + '/')}": text
            for path, text in staged.items() if not path.endswith(".sh")}


def parse(spec: ContainerSpec, root: Path, secrets: Mapping[str, Any] = TEST_SECRETS,
          strict: bool = True, live: Mapping[str, str] | None = None) -> HomeServerConfig:
    """Synapse's view of one container's files, and of those live-config publishes
    for it (`live`: live_files of its deployment). `strict` adds Synapse's own
    --no-secrets-in-config, which refuses any secret written inline."""
    files = {**(live or {}), **spec.rendered_files(secrets)}
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_PREFIXES.sub(lambda m: f"{root}{m.group(1)}", text))
    argv = ["--no-secrets-in-config"] if strict else []
    for arg in spec.command:
        if arg.startswith("--config-path="):
            argv += ["--config-path", f"{root}{arg.split('=', 1)[1]}"]
    return HomeServerConfig.load_config("synapse", argv)
