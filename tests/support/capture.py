"""Run the Pulumi program under Pulumi's unit-test mocks and record every resource
it registers: type, name, inputs, parent, dependencies and resource options.

Used by the mocks tests and by the replay harness (tests/e2e/replay/), which
applies exactly these inputs to a real Docker engine. `preview=False`, so apply
callbacks run and secret files are really rendered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import stack as pulumi_stack

from components.plan.stack_config import (
    NAMESPACE,
    Encrypted,
    load_stack_file,
    pulumi_pairs,
    with_overrides,
)

# How the engine marks a secret value on the wire.
SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_MARK = "1b47061264138c4ac30d75fd1eb44270"


@dataclass(frozen=True)
class Secret:
    """A value that reached the engine marked secret."""

    value: Any


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_MARK:
            return Secret(_decode(value.get("value")))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def plain_strings(value):
    """Every string in a registered value that is not marked secret."""
    if isinstance(value, Secret):
        return
    if isinstance(value, dict):
        for v in value.values():
            yield from plain_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from plain_strings(v)
    elif isinstance(value, str):
        yield value


def reveal(value: Any) -> Any:
    """The value with every Secret wrapper removed."""
    if isinstance(value, Secret):
        return reveal(value.value)
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


@dataclass
class Registered:
    type: str
    name: str
    urn: str
    inputs: dict[str, Any]  # camelCase, as the provider receives them; secrets wrapped
    parent: str
    dependencies: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    # input -> the URNs its value came from (what the engine's replacement of
    # dependents reads; `dependencies` adds the plain depends_on ones).
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def plain(self) -> dict[str, Any]:
        return reveal(self.inputs)


class _Mocks(pulumi_mocks.Mocks):
    """Outputs echo inputs; a few computed outputs get plausible values."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            # The real provider resolves the reference to a local image ID; the
            # replay resolves the same reference, so keep it readable here.
            outputs["imageId"] = args.inputs["name"]
        # Real randomness, as pulumi-random would give: the replay deploys these.
        length = int(args.inputs.get("length", 16))
        if args.typ in ("random:index/randomPassword:RandomPassword",
                        "random:index/randomString:RandomString"):
            alphabet = string.ascii_lowercase + string.digits
            if args.inputs.get("upper", True):
                alphabet += string.ascii_uppercase
            outputs["result"] = "".join(secrets.choice(alphabet) for _ in range(length))
        if args.typ == "random:index/randomBytes:RandomBytes":
            outputs["base64"] = base64.b64encode(secrets.token_bytes(length)).decode()
        return f"{args.name}-id", outputs

    def call(self, args: pulumi_mocks.MockCallArgs):
        return {}


class _Monitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi_mocks.Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        props = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
        self.registered.append(
            Registered(
                type=request.type,
                name=request.name,
                urn=response.urn,
                inputs=_decode(props),
                parent=request.parent,
                dependencies=list(request.dependencies),
                options={
                    "replaceOnChanges": list(request.replaceOnChanges),
                    "deleteBeforeReplace": request.deleteBeforeReplace,
                    "ignoreChanges": list(request.ignoreChanges),
                    "aliases": [str(a) for a in request.aliases],
                    "protect": request.protect,
                    "retainOnDelete": request.retainOnDelete,
                },
                property_dependencies={k: list(v.urns)
                                       for k, v in request.propertyDependencies.items()},
            )
        )
        return response


@dataclass
class Capture:
    stack: str
    resources: list[Registered]
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str, typ: str | None = None) -> Registered:
        found = [r for r in self.resources if r.name == name and (typ is None or r.type == typ)]
        assert len(found) == 1, f"expected one resource named {name!r}, found {len(found)}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    @property
    def containers(self) -> list[Registered]:
        return self.of_type("docker:index/container:Container")


def _encode_config(raw: Mapping[str, Any]) -> dict[str, str]:
    """The program receives config as Pulumi hands it over: all strings,
    structured values JSON-encoded."""
    return {
        f"{NAMESPACE}{k}": v if isinstance(v, str) else json.dumps(v)
        for k, v in raw.items()
    }


def install_mocks(raw: Mapping[str, Any], stack: str = "test",
                  secret_keys: tuple[str, ...] = ()) -> _Monitor:
    return install_pairs(_encode_config(raw), stack,
                         secret_keys=[f"{NAMESPACE}{k}" for k in secret_keys])


def install_pairs(pairs: Mapping[str, str], stack: str = "test",
                  secret_keys: Collection[str] = ()) -> _Monitor:
    """Mocks, with the runtime config exactly `pairs` (`namespace:key` -> text, as
    the Pulumi CLI hands it over) and `secret_keys` (full keys) marked secret."""
    # Pulumi schedules registrations on the current loop; another test (asyncio.run)
    # may have closed it.
    try:
        if asyncio.get_event_loop().is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = _Mocks()
    monitor = _Monitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="synapse", stack=stack, preview=False,
                             monitor=monitor)
    pulumi.runtime.set_all_config(dict(pairs), secret_keys=list(secret_keys))
    return monitor


def run_program(raw: Mapping[str, Any], stack: str = "test",
                secret_keys: tuple[str, ...] = ()) -> Capture:
    """Run components.program.main() under mocks with these `synapse:*` values."""
    return _run(install_mocks(raw, stack, secret_keys), stack)


def _run(monitor: _Monitor, stack: str) -> Capture:
    from components import program

    outputs = program.main()
    loop = asyncio.get_event_loop()

    async def settle() -> dict[str, Any]:
        resolved = {}
        for key, value in outputs.items():
            out = pulumi.Output.from_input(value)
            resolved[key] = await out.future()
        await pulumi_stack.wait_for_rpcs()
        return resolved

    resolved = loop.run_until_complete(settle())
    return Capture(stack=stack, resources=monitor.registered, outputs=resolved)


def stack_file_pairs(path: str | Path, overrides: Mapping[str, Any] | None = None,
                     decrypt: Callable[[str], str] | None = None
                     ) -> tuple[str, dict[str, str], frozenset[str]]:
    """(stack, config pairs, secret keys) the Pulumi CLI would hand the program for
    a stack file, with `--set` overrides applied as `pulumi config set --path`."""
    stack, config = load_stack_file(Path(path))
    pairs, secret_keys = pulumi_pairs(with_overrides(config, overrides), decrypt)
    # Without a decrypter, a `secure:` secret is left out: the program generates it.
    pairs = {k: v for k, v in pairs.items() if not isinstance(v, Encrypted)}
    return stack, pairs, secret_keys & set(pairs)


def run_stack_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Capture:
    stack, pairs, secret_keys = stack_file_pairs(path, overrides)
    return _run(install_pairs(pairs, stack, secret_keys), stack)
