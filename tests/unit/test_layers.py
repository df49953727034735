"""The layers hold in fact, one way: provider model -> plan (stack config, settings,
topology) -> render (files and container specs) -> targets (docker, swarm) and
tools -> the program. A module imports only its own layer or those below it, the
targets not each other, and only a target's resource modules and the program import
Pulumi (so `render`, `impact` and `doctor` run without the Pulumi engine)."""

import ast
from pathlib import Path

import pytest

COMPONENTS = Path(__file__).resolve().parents[2] / "components"
RANK = {"provider": 0, "plan": 1, "render": 2, "docker": 3, "swarm": 3, "tools": 4, "": 5}
TARGETS = {"docker", "swarm"}
MODULES = sorted(
    ".".join(p.relative_to(COMPONENTS).with_suffix("").parts)
    for p in COMPONENTS.rglob("*.py") if p.stem not in ("__init__", "__main__"))


def package(module: str) -> str:
    return module.split(".")[0] if "." in module else ""


def imports_of(module: str) -> set[str]:
    """Imported module names, components.* given relative to components/."""
    tree = ast.parse((COMPONENTS / f"{module.replace('.', '/')}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "components" or (node.module.startswith("components.")
                                                and node.module[11:] in RANK):
                prefix = node.module[11:]  # from components[.pkg] import module
                out |= {"components." + ".".join(filter(None, (prefix, a.name))) for a in node.names}
            else:
                out.add(node.module)
    return out


def uses_pulumi(module: str) -> bool:
    return any(i.split(".")[0] in ("pulumi", "pulumi_docker", "pulumi_random")
               for i in imports_of(module))


PULUMI_MODULES = {m for m in MODULES if uses_pulumi(m)}


def test_every_module_sits_in_a_known_layer():
    assert {package(m) for m in MODULES} <= set(RANK), MODULES


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down_and_targets_stay_apart(module):
    own = package(module)
    wrong = []
    for i in imports_of(module):
        if not i.startswith("components."):
            continue
        other = package(i[len("components."):])
        if RANK[other] > RANK[own] or (own in TARGETS and other in TARGETS and other != own):
            wrong.append(i)
    assert not wrong, (module, sorted(wrong))


@pytest.mark.parametrize("module", sorted(set(MODULES) - PULUMI_MODULES))
def test_plain_modules_import_no_module_that_imports_pulumi(module):
    found = {i[len("components."):] for i in imports_of(module) if i.startswith("components.")}
    assert not found & PULUMI_MODULES, (module, sorted(found & PULUMI_MODULES))


def test_only_targets_and_the_program_import_pulumi():
    assert {package(m) for m in PULUMI_MODULES} <= TARGETS | {""}, sorted(PULUMI_MODULES)


OPS = COMPONENTS.parent / "ops"


@pytest.mark.parametrize("module", sorted(p.stem for p in OPS.glob("*.py") if p.stem != "__init__"))
def test_the_data_tools_import_neither_pulumi_nor_the_resource_layer(module):
    """make backup / make restore run beside the Pulumi CLI, not inside it."""
    tree = ast.parse((OPS / f"{module}.py").read_text())
    found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    pulumi_modules = {"components." + m for m in PULUMI_MODULES}
    assert not [i for i in found if i.split(".")[0].startswith("pulumi")
                or i in pulumi_modules], found
