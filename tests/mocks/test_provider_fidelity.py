"""Every input the program registers is one the provider model knows, already in
the form the provider reads back: an unchanged stack previews empty."""

import pytest

from components.provider import model as pm
from tests.support.capture import run_program, run_stack_file

STACKS = {
    "dev": lambda: run_stack_file("config/Pulumi.dev.yaml"),
    "prod": lambda: run_stack_file("config/Pulumi.prod.yaml"),
    # Odd sizes and many workers: the forms that trip the provider (10 CPUs -> "10.").
    "big": lambda: run_program({
        "serverName": "example.org", "workers": {"rooms": 8, "sender": 3},
        "sizes": {"huge": {"cpus": 10, "memoryMb": 2048}, "half": {"cpus": 0.5, "memoryMb": 256}},
        "containerSizes": {"main": "huge", "rooms": "half"}}),
}


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_registered_input_is_in_the_providers_normal_form(stack):
    cap = STACKS[stack]()
    checked = 0
    for res in cap.resources:
        if res.type.startswith("docker:"):
            assert pm.not_normal(res.type, res.plain) == [], f"{res.type} {res.name}"
            checked += 1
    assert checked > 10
    # And so a second plan against what the provider would store is empty.
    for res in cap.of_type(pm.CONTAINER):
        stored = {k: pm.normal_form(pm.CONTAINER, k, v) for k, v in res.plain.items()}
        assert pm.diff(pm.CONTAINER, stored, res.plain,
                       res.options["replaceOnChanges"]).same, res.name


def _secret_contents_dropped(inputs, secret_files):
    return {**inputs, "uploads": [{**u, "content": None} if u["file"] in secret_files else u
                                  for u in inputs["uploads"]]}


@pytest.mark.parametrize("stack, path", [("dev", "config/Pulumi.dev.yaml"),
                                         ("prod", "config/Pulumi.prod.yaml")])
def test_registered_containers_are_exactly_container_inputs(stack, path):
    """The impact report diffs container_inputs(); Pulumi gets the same values."""
    from pathlib import Path

    from components.docker.container_inputs import container_inputs
    from components.tools.render import deployment_for
    from components.plan.stack_config import read_stack_file

    cap = STACKS[stack]()
    deployment = deployment_for(Path(path))
    sizes = read_stack_file(Path(path)).settings.sizes
    registered = {r.plain["name"]: r for r in cap.of_type(pm.CONTAINER)}
    assert set(registered) == {c.name for c in deployment.containers}
    for spec in deployment.containers:
        secret_files = {f.path for f in spec.files if f.secret}
        expected = _secret_contents_dropped(container_inputs(spec, deployment, sizes), secret_files)
        got = _secret_contents_dropped(pm.numbers_as_sent(registered[spec.name].plain), secret_files)
        assert got == expected, spec.name
        assert registered[spec.name].options["replaceOnChanges"] == ["healthcheck", "tmpfs", "mounts"]
