"""Where the `synapse:*` keys come from: Pulumi's runtime config or a stack file
(for the render command). Pure; hands a plain dict to settings.load_settings."""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
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


def _config_of(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text()) or {}
    return doc.get("config") or {}


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def from_stack_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(stack name, synapse:* keys) of a Pulumi.<stack>.yaml; encrypted values
    (`secure:`) are left out: the render command shows placeholders for secrets."""
    config = _config_of(path)
    raw = {
        k[len(NAMESPACE):]: v
        for k, v in config.items()
        if k.startswith(NAMESPACE) and not _is_secure(v)
    }
    return stack_name_of(path), raw


def secure_values(path: Path) -> dict[str, str]:
    """The encrypted (`secure:`) synapse:* values of a stack file, by key: two
    files hold the same secret where these are equal."""
    return {k[len(NAMESPACE):]: v["secure"] for k, v in _config_of(path).items()
            if k.startswith(NAMESPACE) and _is_secure(v)}


def cli_error(path: Path, error: Exception) -> int:
    """One line on stderr for bad config or an unreadable stack file (no
    traceback); the exit status the commands use for it."""
    if isinstance(error, ConfigError):
        print(f"{path}: {error}", file=sys.stderr)
    else:
        print(f"{path}: cannot read stack file: {error}".splitlines()[0], file=sys.stderr)
    return 2


_SEGMENT = re.compile(r'\.?([^.\[\]"]+)|\[(\d+)\]|\["([^"]+)"\]')


def parse_path(text: str) -> tuple[str | int, ...]:
    """A config path as `pulumi config set --path` reads it: `workers.rooms`,
    `nginx.adminAllow[0]`, `extraConfig["a.b"]`; an optional `synapse:` prefix."""
    text = text.removeprefix(NAMESPACE)
    path: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        dotted = text[pos] == "."
        if not m or (m.group(1) is not None and dotted != (pos > 0)):
            raise ConfigError((), f"{text!r} is not a config path (like workers.rooms or "
                                  f'nginx.adminAllow[0] or extraConfig["a.b"])')
        name, index, quoted = m.groups()
        path.append(int(index) if index is not None else quoted if quoted is not None else name)
        pos = m.end()
    if not path or not isinstance(path[0], str):
        raise ConfigError((), f"{text!r} is not a config path: it must start with a key")
    return tuple(path)


def set_path(raw: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set one value deep in `raw`, creating objects on the way (as `pulumi config
    set --path` does); a list index may be one past the end (append)."""
    node: Any = raw
    for i, (key, nxt) in enumerate(zip(path, path[1:] + (None,))):
        where = path[: i + 1]
        last = nxt is None
        if isinstance(key, int):
            if not isinstance(node, list):
                raise ConfigError(path[:i], "is not a list, so it has no index")
            if key > len(node):
                raise ConfigError(where, f"index past the end of a list of {len(node)}")
            if key == len(node):
                node.append(None)
        elif not isinstance(node, dict):
            raise ConfigError(path[:i], "is not an object, so it has no key " + repr(key))
        if last:
            node[key] = value
            return
        child = node[key] if (isinstance(key, int) or key in node) else None
        if child is None:
            child = [] if isinstance(nxt, int) else {}
            node[key] = child
        node = child


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of `raw` with each `path: value` of `overrides` set in it."""
    out = copy.deepcopy(dict(raw))
    for text, value in (overrides or {}).items():
        set_path(out, parse_path(text), copy.deepcopy(value))
    return out


def override_arg(text: str) -> tuple[str, Any]:
    """A command line `--set PATH=VALUE` (an argparse type): PATH is a config path
    (parse_path, as `pulumi config set --path`), the value is YAML, as in a stack
    file."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set wants PATH=VALUE, got {text!r}")
    try:
        parse_path(key)
        return key.removeprefix(NAMESPACE), yaml.safe_load(value)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(e.reason) from None
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{key}: value is not YAML: {e}".splitlines()[0]) from None
