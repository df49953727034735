"""What Pulumi keeps in a stack's state, kept by the replay in one file per stack
(SYNAPSE_E2E_STATE_DIR, default ~/.local/state/synapse-e2e/<stack>.json, mode
0600 since, like an unencrypted state, it holds the secrets):

  random     outputs of the random:* resources (the generated secrets), by
             "<type>::<name>"; protected, so only `down --delete-data` forgets them
  resources  every Docker object the stack owns, by "<type>::<name>": its ID, the
             inputs as the provider stores them (read back from Docker where the
             provider reads them, else as sent) and the resource options
  outputs    the stack outputs of the last up (namePrefix for destroy-data)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

STATE_DIR = Path(os.environ.get("SYNAPSE_E2E_STATE_DIR",
                                Path.home() / ".local" / "state" / "synapse-e2e"))
VERSION = 2


def key_of(typ: str, name: str) -> str:
    return f"{typ}::{name}"


def empty() -> dict[str, Any]:
    return {"version": VERSION, "random": {}, "resources": {}, "outputs": {}}


def path(stack: str) -> Path:
    return STATE_DIR / f"{stack}.json"


def load(stack: str) -> dict[str, Any]:
    p = path(stack)
    if not p.exists():
        return empty()
    state = json.loads(p.read_text())
    if state.get("version") != VERSION:  # an older replay's file: only its secrets carry over
        return {**empty(), "random": state.get("random", {})}
    return state


def save(stack: str, state: Mapping[str, Any]) -> None:
    p = path(stack)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.chmod(0o600)
    tmp.replace(p)


def forget(stack: str) -> None:
    path(stack).unlink(missing_ok=True)
