"""Where the `synapse:*` keys come from: Pulumi's runtime config or a stack file
(for the render command). Pure; hands a plain dict to settings.load_settings."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from components.errors import ConfigError
from components.settings import SECRET_KEYS

NAMESPACE = "synapse:"
# Keys whose values are plain strings even when they look like JSON (`"1234"`).
STRING_KEYS = frozenset({"serverName", "publicBaseUrl", "namePrefix", *SECRET_KEYS})


def from_pulumi(pairs: Mapping[str, str]) -> dict[str, Any]:
    """Pulumi hands the program every value as a string; structured values and
    numbers arrive JSON-encoded."""
    raw: dict[str, Any] = {}
    for full_key, value in pairs.items():
        if not full_key.startswith(NAMESPACE):
            continue
        key = full_key[len(NAMESPACE):]
        if key not in STRING_KEYS and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # a bare string
        raw[key] = value
    return raw


def stack_name_of(path: Path) -> str:
    m = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
    if not m:
        raise ConfigError((), f"{path.name}: a stack file is named Pulumi.<stack>.yaml")
    return m.group(1)


def from_stack_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(stack name, synapse:* keys) of a Pulumi.<stack>.yaml; encrypted values
    (`secure:`) are left out: the render command shows placeholders for secrets."""
    doc = yaml.safe_load(path.read_text()) or {}
    config = doc.get("config") or {}
    raw = {
        k[len(NAMESPACE):]: v
        for k, v in config.items()
        if k.startswith(NAMESPACE) and not (isinstance(v, dict) and set(v) == {"secure"})
    }
    return stack_name_of(path), raw


def override_arg(text: str) -> tuple[str, Any]:
    """A command line `--set KEY=VALUE` (an argparse type): the value is YAML, as in
    a stack file, and KEY may carry the `synapse:` prefix."""
    key, sep, value = text.partition("=")
    key = key.removeprefix(NAMESPACE)
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)
