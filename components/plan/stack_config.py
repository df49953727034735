"""Where the `synapse:*` keys come from, and the one reader of them.

The Pulumi program gets its config from the Pulumi CLI; the render command and the
impact report read a stack file. Both end in `read_stack(pairs, secret_keys, stack)`,
which takes config as Pulumi hands it to a program (every value a string) and
returns the settings, the plan, the secrets and `secretConfig`, or raises one
ConfigError naming the key. The file readers first do what the Pulumi CLI does with
a stack file (`load_stack_file`, `pulumi_pairs`), so one file gives one result,
accepted or refused with the same message, either way. Sources of each rule
(pulumi/pulumi read at 1b5949891b3c, go-yaml at v3.0.1):

- the stack file is YAML read by gopkg.in/yaml.v3 v3.0.1 (pulumi/pulumi
  sdk/go/common/encoding/marshal.go; sdk/go.mod pins v3.0.1): YAML 1.2 booleans
  (`true`, not `yes`), `0x`/`0o`/`0b`/leading-0 octal integers, `1e3` a float,
  unquoted dates are timestamps, repeated keys refuse the file (go-yaml resolve.go,
  decode.go). `_plain` transcribes resolve.go;
- a key without a namespace is the project's (`maxUploadSizeMb` is
  `synapse:maxUploadSizeMb`); `ns:config:name` is `ns:name`; any other key with
  more than one ':' refuses the file (sdk/go/common/workspace/loaders.go
  stackConfigNamespacedWithProject, sdk/go/common/resource/config/key.go ParseKey);
- a top-level value reaches the program as text: a string as is, a number or bool
  as its JSON (`100` and `"100"` both arrive as "100"), an empty value as ""; an
  object or list as JSON with sorted keys; `{secure: <string>}` anywhere is a
  secret, decrypted to its plaintext, and its top-level key is listed as secret
  (sdk/go/common/resource/config/object.go MarshalString, unmarshalObject,
  isSecureValue, Secure; value.go Value; go-yaml decode.go prepare: a null never
  reaches Value.UnmarshalYAML, so it stays the empty string, as loaders.go
  checkForEmptyConfig warns);
- `pulumi config set` writes a top-level value as a string, `--path` values as
  bools or integers where they look so (`true`, digits not starting with 0), and
  `--type string|int|bool|float` as that type (config/map.go Set, object.go
  coerce; pkg/cmd/pulumi/config/config.go; pulumi/pulumi #18285, #18287): each
  arrives as above;
- the Python SDK hands the program that text (pulumi/runtime/config.py; Config.
  get_object is json.loads of it), so the reader decodes a value as JSON unless its
  key holds text (STRING_KEYS): "100" is 100, "false" is False, '{"rooms": 8}' an
  object, "yes" stays "yes".

This program's own rules, the same for every caller: a namespace within two edits
of `synapse` (or empty) is a typo, refused rather than ignored; other namespaces
(`docker:host`) are left alone. A dotted top-level name (`synapse:workers.rooms`,
set without --path) is refused. Only the secret keys and secretConfig may hold a
`secure:` value, since the render command cannot decrypt one; a secret must be
one string. Without a decrypter (render, impact) a `secure:` secret goes
unchecked: only the program sees its plaintext.
"""

from __future__ import annotations

import argparse
import copy
import decimal
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import yaml

from components.plan import tls_material
from components.plan.errors import ConfigError
from components.plan.secret_keys import KEYS as ALL_SECRET_KEYS
from components.plan.settings import (
    Settings,
    check_required_secrets,
    check_secret_overrides,
    load_settings,
)
from components.plan.topology import Plan, build_plan

PROJECT = "synapse"  # Pulumi.yaml `name`: the namespace Pulumi gives keys without one
NAMESPACE = f"{PROJECT}:"
SECRET_CONFIG = "secretConfig"
# Keys whose values are plain strings even when they look like JSON (`"1234"`).
STRING_KEYS = frozenset({"serverName", "publicBaseUrl", "namePrefix", *ALL_SECRET_KEYS})
# The only keys that may hold a `secure:` value.
SECRET_VALUED = frozenset({*ALL_SECRET_KEYS, SECRET_CONFIG})
# Stands for a secret nested in an object when the render command, which cannot
# decrypt, builds the JSON Pulumi would pass.
ENCRYPTED_TEXT = "[secure]"


@dataclass(frozen=True)
class Encrypted:
    """A `secure:` value of a stack file: only the Pulumi CLI can decrypt it."""

    ciphertext: str


@dataclass(frozen=True)
class StackConfig:
    settings: Settings
    plan: Plan
    # Each secret key: the operator's value, Encrypted (a stack file read without
    # decrypting), or None (the program generates it).
    secrets: Mapping[str, str | Encrypted | None]
    secret_config: Mapping[str, Any] | Encrypted
    # Said before deploying, not refused (a certificate about to expire, ...).
    warnings: tuple[str, ...] = ()


# --- the one reader -------------------------------------------------------------


def read_stack(pairs: Mapping[str, Any], secret_keys: Collection[str], stack: str) -> StackConfig:
    """A stack's config as Pulumi hands it to the program (`namespace:key` -> text;
    `secret_keys` the keys Pulumi marks secret) -> its settings, plan and secrets,
    or a ConfigError naming the first bad key (keys in sorted order)."""
    raw = from_pulumi(pairs)
    for name, value in raw.items():
        secret = NAMESPACE + name in secret_keys or isinstance(value, Encrypted)
        if secret and name not in SECRET_VALUED:
            raise ConfigError((name,), "is a secret (`secure:`, pulumi config set --secret), but "
                                       "only the secret keys and secretConfig may be: set it in "
                                       "plain text")
    secrets = {k: raw.pop(k, None) for k in ALL_SECRET_KEYS}
    secret_config = raw.get(SECRET_CONFIG)
    if isinstance(secret_config, Encrypted):  # only the program can read it
        del raw[SECRET_CONFIG]
    settings = load_settings(raw, stack)
    _check_secrets(secrets)
    check_required_secrets(settings, {k for k, v in secrets.items() if v is not None})
    warnings = _check_tls(settings, secrets)
    plan = build_plan(settings)
    return StackConfig(settings, plan, secrets,
                       secret_config if secret_config not in (None, "") else {},
                       tuple(warnings))


def _check_tls(settings: Settings, secrets: Mapping[str, Any]) -> list[str]:
    """With ACME, warnings: the CA's port 80 is not nginx's, or a delegated server
    name is left out. Otherwise the TLS
    certificate and key together (tls_material), where they are readable
    (the render command and the impact report cannot decrypt `secure:` values;
    the program can)."""
    nginx = settings.nginx
    if nginx.acme:
        warnings = []
        if nginx.http_port != 80:
            warnings.append(f"nginx.httpPort is {nginx.http_port}: an ACME server checks HTTP-01 "
                            "challenges on port 80 of each name, so forward port 80 there (or "
                            "use 80)")
        _, maybe = tls_material.required_names(settings.public_base_url, settings.server_name)
        if maybe and maybe.lower() not in (n.lower() for n in nginx.acme.names):
            warnings.append(f"the ACME certificate will not cover the server name {maybe}: fine "
                            f"if another web server answers https://{maybe}/.well-known/matrix/"
                            "server; if this nginx does, add it to nginx.acme.extraNames")
        return warnings
    cert, key = secrets.get("tlsCertificate"), secrets.get("tlsKey")
    if not nginx.certificate_given or not isinstance(cert, str) or not isinstance(key, str):
        return []
    return tls_material.check(cert, key, settings.public_base_url, settings.server_name)


def from_pulumi(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """The `synapse:*` values of Pulumi's config pairs, prefix stripped, in key
    order, decoded from JSON unless the key holds text (STRING_KEYS). Other
    namespaces are left to their providers (`docker:host`), unless the namespace
    looks like a misspelt `synapse` or is empty: that key would be ignored."""
    raw: dict[str, Any] = {}
    for full_key in sorted(pairs):
        namespace, _, name = full_key.partition(":")
        value = pairs[full_key]
        if namespace != PROJECT:
            if _looks_like_ours(namespace):
                raise ConfigError((name,), f"namespace {namespace!r} is not this project's, "
                                           "so nothing would read this key; "
                                           f"did you mean synapse:{name}?",
                                  prefix=f"{namespace}:")
            continue
        if "." in name or "[" in name:
            raise ConfigError((name,), "is one key whose name holds a path; set a nested value "
                                       f"with pulumi config set --path 'synapse:{name}' ...")
        if name not in STRING_KEYS and isinstance(value, str):
            value = _json_or_text(value)
        raw[name] = value
    return raw


def _json_or_text(text: str) -> Any:
    """`text` decoded as JSON (as Config.get_object does), else the text itself.
    NaN and Infinity, which no JSON Pulumi writes holds, stay text."""
    def no_constants(name: str) -> Any:
        raise ValueError(name)
    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError:
        return text


def _looks_like_ours(namespace: str) -> bool:
    n = namespace.strip().lower()
    return n == "" or _distance(n, PROJECT) <= 2


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of neighbours as one edit (`synpase`)."""
    d = [[i + j if not i * j else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _check_secrets(secrets: Mapping[str, Any]) -> None:
    """An operator's secret is one string: an object (`{secure: 5}`, not the string
    ciphertext Pulumi writes) or list is refused; then check_secret_overrides."""
    given = {}
    for key, value in secrets.items():
        if value is None or isinstance(value, Encrypted):
            continue  # generated, or only the program can read it
        decoded = _json_or_text(value)
        if isinstance(decoded, dict) and not isinstance(decoded.get("secure", ""), str):
            raise ConfigError((key, "secure"), "must be the ciphertext string that pulumi config "
                                               "set --secret writes")
        if isinstance(decoded, (dict, list)):
            raise ConfigError((key,), f"must be a string, got {'an object' if isinstance(decoded, dict) else 'a list'}")
        given[key] = value
    check_secret_overrides(given)


# --- a stack file, as the Pulumi CLI reads it -------------------------------------


def read_stack_file(path: Path, overrides: Mapping[str, Any] | None = None,
                    stack: str | None = None,
                    decrypt: Callable[[str], str] | None = None) -> StackConfig:
    """read_stack of a stack file with `--set` overrides (config paths, as `pulumi
    config set --path`). `stack` names the stack when the file is a copy; without
    `decrypt`, `secure:` values stay Encrypted and go unchecked."""
    file_stack, config = load_stack_file(path)
    pairs, secret_keys = pulumi_pairs(with_overrides(config, overrides), decrypt)
    return read_stack(pairs, secret_keys, stack or file_stack)


def stack_name_of(path: Path) -> str:
    m = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
    if not m:
        raise ConfigError((), f"{path.name}: a stack file is named Pulumi.<stack>.yaml",
                          prefix="<stack file>")
    return m.group(1)


def load_stack_file(path: Path) -> tuple[str, dict[str, Any]]:
    """(stack name, `namespace:key` -> value) of a Pulumi.<stack>.yaml, values typed
    as yaml.v3 types them, `secure:` values Encrypted. Refuses what Pulumi refuses:
    a file or `config:` that is not a mapping, a repeated key, an unparsable key."""
    stack = stack_name_of(path)
    root = yaml.compose(path.read_text(), Loader=_Loader)
    if root is None or _is_null(root):
        return stack, {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError((), f"must be a YAML mapping with a config: section, got {_kind(root)}",
                          prefix="<stack file>")
    section = dict((k, v) for k, _, v in _entries(root, "", ()))
    node = section.get("config")
    if node is None or _is_null(node):
        return stack, {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(("config",), "must be a mapping of <namespace>:<key> settings, got "
                          + _kind(node), prefix="")
    config: dict[str, Any] = {}
    written: dict[str, str] = {}
    for text, _, value_node in _entries(node, "", ()):
        namespace, name = _pulumi_key(text)
        full = f"{namespace}:{name}"
        if full in config:
            raise ConfigError((name,), f"is given twice, as {written[full]!r} and {text!r}",
                              prefix=f"{namespace}:")
        written[full] = text
        config[full] = _value(value_node, f"{namespace}:", (name,))
    return stack, config


def _pulumi_key(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) == 1:
        return PROJECT, text
    if len(parts) == 2:
        return parts[0], parts[1]
    if len(parts) == 3 and parts[1] == "config":
        return parts[0], parts[2]
    raise ConfigError((text,), "is not a config key: Pulumi reads keys as <namespace>:<name> "
                               "(a nested value is written as an object, or set with "
                               "pulumi config set --path)", prefix="")


def with_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """`config` with `--set` overrides (synapse: paths) applied."""
    if not overrides:
        return dict(config)
    ours = apply_overrides({k[len(NAMESPACE):]: v for k, v in config.items()
                            if k.startswith(NAMESPACE)}, overrides)
    return {**{k: v for k, v in config.items() if not k.startswith(NAMESPACE)},
            **{NAMESPACE + k: v for k, v in ours.items()}}


def pulumi_pairs(config: Mapping[str, Any], decrypt: Callable[[str], str] | None = None
                 ) -> tuple[dict[str, Any], frozenset[str]]:
    """What the Pulumi CLI hands the program for a loaded stack file: each key's
    text, and the keys holding a secret. Without `decrypt`, a top-level secret
    stays Encrypted and a nested one reads ENCRYPTED_TEXT."""
    pairs: dict[str, Any] = {}
    secret = set()
    for key, value in config.items():
        if _holds_secret(value):
            secret.add(key)
        where = key.partition(":")
        if isinstance(value, Encrypted):
            pairs[key] = decrypt(value.ciphertext) if decrypt else value
        elif isinstance(value, (dict, list)):
            pairs[key] = _go_json(value, decrypt, where)
        else:
            pairs[key] = _go_text(value, where)
    return pairs, frozenset(secret)


def _holds_secret(value: Any) -> bool:
    if isinstance(value, Encrypted):
        return True
    if isinstance(value, dict):
        return any(_holds_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_secret(v) for v in value)
    return False


def _go_text(value: Any, where: tuple[str, str, str]) -> str:
    """object.go MarshalString of a top-level scalar."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value, where)
    return str(value)


def _go_float(value: float, where: tuple[str, str, str]) -> str:
    """encoding/json's text of a float64: integral ones below 1e21 without a
    fraction; NaN and infinities are an error."""
    if math.isnan(value) or math.isinf(value):
        raise ConfigError((where[2],), "holds NaN or an infinity, which Pulumi cannot pass "
                                       "as JSON", prefix=where[0] + ":")
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if 1e-6 <= abs(value) < 1e21:
        return format(decimal.Decimal(repr(value)), "f")
    return re.sub(r"e([+-])0(\d)$", r"e\1\2", repr(value))


def _go_json(value: Any, decrypt: Callable[[str], str] | None, where: tuple[str, str, str]) -> str:
    """encoding/json's Marshal of a config object: sorted keys, no spaces, <>&
    escaped, an integral float written as an integer (so it decodes as one). Other
    floats may be spelt differently from Go's, never with a different value."""
    def plain(v: Any) -> Any:
        if isinstance(v, Encrypted):
            return decrypt(v.ciphertext) if decrypt else ENCRYPTED_TEXT
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, float):
            return _json_or_text(_go_float(v, where))
        return v

    text = json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for c in "<>&\u2028\u2029":
        text = text.replace(c, f"\\u{ord(c):04x}")
    return text


# --- YAML as yaml.v3 reads it ------------------------------------------------------

_PLAIN = "!plain"  # a plain (unquoted, untagged) scalar: typed by _plain
_TAG = "tag:yaml.org,2002:"


class _Loader(yaml.SafeLoader):
    """Composes nodes only, leaving plain scalars for _plain to type as yaml.v3
    does (PyYAML types them as YAML 1.1: `yes` a bool, `1e3` a string)."""

    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)


# go-yaml v3.0.1 resolve.go: resolveMapList, yamlStyleFloat, allowedTimestampFormats.
_WORDS: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# strconv.ParseInt(s, 0, 64): sign, then 0x / 0o / 0b / leading-0 octal / decimal.
_GO_INT = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_TIMESTAMP = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:([Tt ])(\d{1,2}):(\d{1,2}):(\d{1,2})"
                        r"(\.\d+)?(Z|[+-]\d{2}:\d{2})?)?")


def _plain(text: str) -> Any:
    """A plain scalar as yaml.v3 resolves it into an interface{}."""
    if text in _WORDS:
        return _WORDS[text]
    if text[0] == ".":
        if re.fullmatch(r"\.[0-9]+([eE][-+]?[0-9]+)?", text):
            return float(text)
    elif text[0] in "+-0123456789":
        stamp = _timestamp(text)
        if stamp is not None:
            return stamp
        plain = text.replace("_", "")
        m = _GO_INT.fullmatch(plain)
        if m:
            digits = m.group(2)
            base = {"x": 16, "o": 8, "b": 2}.get(digits[1:2].lower(), 8 if digits[0] == "0" else 10)
            n = int(digits[2:] if base != 10 and digits[1:2].isalpha() else digits, base)
            n = -n if m.group(1) == "-" else n
            if -(1 << 63) <= n < (1 << 64) and not (n >= 1 << 63 and m.group(1)):
                return n
        if _YAML_FLOAT.fullmatch(plain):
            f = float(plain)
            if not math.isinf(f):
                return f
    return text


def _timestamp(text: str) -> str | None:
    """A yaml.v3 timestamp as Pulumi passes it on: Go's time.Time.String()
    (object.go unmarshalObject). A numeric offset is shown as Go shows a zone
    without a name, which assumes it is not the machine's local zone."""
    m = _TIMESTAMP.fullmatch(text)
    if not m or (m.group(4) is not None and m.group(4) == " " and m.group(9)) or (
            m.group(4) in ("T", "t") and not m.group(9)):
        return None
    y, mo, d, sep, h, mi, s, frac, zone = m.groups()
    try:
        t = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return None
    out = t.strftime("%Y-%m-%d %H:%M:%S")
    if frac and frac.rstrip("0") != ".":
        out += frac[:10].rstrip("0")
    if not zone or zone == "Z":
        return out + " +0000 UTC"
    offset = zone.replace(":", "")
    return f"{out} {offset} {offset}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and (
        (node.tag == _PLAIN and _WORDS.get(node.value, 0) is None) or node.tag == _TAG + "null")


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return f"the scalar {node.value[:40]!r}"


def _entries(node: yaml.MappingNode, prefix: str, path: tuple) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """(key text, key node, value node) of a mapping; a key given twice refuses
    the file, as yaml.v3 does (decode.go: "mapping key already defined")."""
    seen: dict[str, int] = {}
    out = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise ConfigError(path or ("config",), "has a key that is not a scalar",
                              prefix=prefix)
        key = _go_key(_value(key_node, prefix, path))
        line = key_node.start_mark.line + 1
        raw = key_node.value
        if raw in seen:
            raise ConfigError(path + (key,), f"is given twice (lines {seen[raw]} and {line}); "
                                             "Pulumi refuses a stack file with a repeated key",
                              prefix=prefix)
        seen[raw] = line
        out.append((key, key_node, value_node))
    return out


def _go_key(key: Any) -> str:
    """A map key as Pulumi keeps it (fmt %v of the decoded key)."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "<nil>"
    if isinstance(key, float) and key.is_integer() and abs(key) < 1e21:
        return str(int(key))
    return str(key)


def _value(node: yaml.Node, prefix: str, path: tuple, depth: int = 0) -> Any:
    """A node's value as yaml.v3 decodes it into interface{} and Pulumi keeps it:
    `{secure: <string>}` is Encrypted; `<<` merges mappings, explicit keys win."""
    if depth > 64:
        raise ConfigError(path, "is nested too deeply (a YAML alias of itself?)", prefix=prefix)
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _PLAIN:
            return _plain(node.value)
        if node.tag == _TAG + "str":
            return node.value
        typed = {_TAG + "int": int, _TAG + "float": (int, float), _TAG + "bool": bool,
                 _TAG + "null": type(None)}.get(node.tag)
        value = _plain(node.value)
        if typed is None or not isinstance(value, typed) or (
                typed is int and isinstance(value, bool)):
            raise ConfigError(path, f"cannot be read as YAML {node.tag.replace(_TAG, '!!')}: "
                                    f"{node.value[:40]!r}", prefix=prefix)
        return float(value) if node.tag == _TAG + "float" else value
    if isinstance(node, yaml.SequenceNode):
        return [_value(n, prefix, path + (i,), depth + 1) for i, n in enumerate(node.value)]
    out: dict[str, Any] = {}
    merged: dict[str, Any] = {}
    for key, key_node, value_node in _entries(node, prefix, path):
        if key == "<<" and key_node.tag == _PLAIN:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                value = _value(source, prefix, path, depth + 1)
                if not isinstance(value, dict):
                    raise ConfigError(path, "merges (<<) something that is not a mapping",
                                      prefix=prefix)
                for k, v in value.items():
                    merged.setdefault(k, v)
            continue
        out[key] = _value(value_node, prefix, path + (key,), depth + 1)
    for k, v in merged.items():
        out.setdefault(k, v)
    if list(out) == ["secure"] and isinstance(out["secure"], str):
        return Encrypted(out["secure"])
    return out


def yaml_value(text: str) -> Any:
    """A YAML value typed as in a stack file (a `--set` value)."""
    node = yaml.compose(text, Loader=_Loader)
    return None if node is None else _value(node, NAMESPACE, ())


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
        return key.removeprefix(NAMESPACE), yaml_value(value)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(e.reason) from None
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{key}: value is not YAML: {e}".splitlines()[0]) from None
