"""The layers hold in fact: stack config -> settings -> plan -> rendered files is
plain Python. Only the resource layer imports Pulumi, and nothing below it imports
the resource layer (so `render` and `impact` run without the Pulumi engine)."""

import ast
from pathlib import Path

import pytest

COMPONENTS = Path(__file__).resolve().parents[2] / "components"
# The modules that turn the plan into Pulumi resources.
RESOURCE_LAYER = {"docker_container", "services", "synapse_process", "secrets", "stack"}
MODULES = sorted(p.stem for p in COMPONENTS.glob("*.py") if p.stem != "__init__")


def imports_of(module: str) -> set[str]:
    tree = ast.parse((COMPONENTS / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "components":
                out |= {f"components.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("module", [m for m in MODULES if m not in RESOURCE_LAYER])
def test_below_the_resource_layer_nothing_imports_pulumi_or_the_resource_layer(module):
    found = imports_of(module)
    pulumi = sorted(i for i in found if i.split(".")[0] in ("pulumi", "pulumi_docker", "pulumi_random"))
    upward = sorted(i for i in found if i.startswith("components.")
                    and i.split(".")[1] in RESOURCE_LAYER)
    assert not pulumi and not upward, (module, pulumi, upward)


def test_the_resource_layer_is_what_imports_pulumi():
    # If a module here stops importing Pulumi it belongs below: keep the set honest.
    for module in RESOURCE_LAYER:
        assert any(i.split(".")[0].startswith("pulumi") for i in imports_of(module)), module


OPS = COMPONENTS.parent / "ops"


@pytest.mark.parametrize("module", sorted(p.stem for p in OPS.glob("*.py") if p.stem != "__init__"))
def test_the_data_tools_import_neither_pulumi_nor_the_resource_layer(module):
    """make backup / make restore run beside the Pulumi CLI, not inside it."""
    tree = ast.parse((OPS / f"{module}.py").read_text())
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not [i for i in found if i.split(".")[0].startswith("pulumi")
                or (i.startswith("components.") and i.split(".")[1] in RESOURCE_LAYER)], found
