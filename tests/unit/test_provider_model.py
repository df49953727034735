"""The provider model's conversions and diff, against the behaviour read in the
provider's source (cases from kreuzwerker's helpers and Go's time package)."""

import pytest

from components.provider import model as pm
from components.plan.errors import ConfigError
from components.plan.settings import load_settings


@pytest.mark.parametrize("given, stored", [
    ("1", "1.0"), ("1.0", "1.0"), ("0.5", "0.5"), ("1.25", "1.25"), ("2", "2.0"), ("4", "4.0"),
    ("10", "10."), ("100", "100."), ("10.5", "10.5"), ("0.05", "0.1"), ("0.01", "0.0"),
])
def test_cpus_read_back_as_nanoInt64ToDecimalString(given, stored):
    assert pm.cpus_read_back(pm.nano_cpus(given)) == stored


def test_cpus_inputs_are_fixed_points():
    for count in (0.5, 1, 1.5, 2, 4, 10, 12, 100):
        text = pm.cpus(count)
        assert pm.cpus_read_back(pm.nano_cpus(text)) == text
    assert not pm.cpus_is_fixed_point(0.01)  # reads back "0.0": no CPUs at all
    with pytest.raises(ValueError):
        pm.nano_cpus("0.0000000001")


@pytest.mark.parametrize("seconds, stored", [
    (5, "5s"), (60, "1m0s"), (90, "1m30s"), (3600, "1h0m0s"), (0.5, "500ms"), (0, "0s"),
    (1.5, "1.5s"), (3661, "1h1m1s"),
])
def test_durations_read_back_as_go_duration_strings(seconds, stored):
    assert pm.duration(seconds) == stored
    assert pm.duration_ns(stored) == int(seconds * 10**9)


def test_not_normal_names_every_offending_input():
    problems = pm.not_normal(pm.CONTAINER, {
        "cpus": "1", "memory": 512,
        "healthcheck": {"tests": ["CMD", "true"], "interval": "60s"},
        "privileged": True,
    })
    text = "\n".join(problems)
    assert "cpus: '1' is read back as '1.0'" in text
    assert "memorySwap: unset" in text
    assert "healthcheck" in text and "1m0s" in text
    assert "privileged: not in the provider model" in text


BASE = {"name": "c", "image": "sha256:1", "cpus": "1.0", "memory": 512, "memorySwap": 512,
        "healthcheck": {"tests": ["CMD", "true"], "interval": "5s"},
        "envs": ["A=1", "B=2"], "uploads": [{"file": "/a", "content": "x"}]}


def test_diff_same_update_replace():
    assert pm.diff(pm.CONTAINER, BASE, dict(BASE)).same
    # Sets compare regardless of order; computed inputs left unset are no diff.
    assert pm.diff(pm.CONTAINER, {**BASE, "entrypoints": ["/x"]},
                   {**BASE, "envs": ["B=2", "A=1"]}).same
    d = pm.diff(pm.CONTAINER, BASE, {**BASE, "memory": 1024, "memorySwap": 1024})
    assert (d.action, d.changed) == ("update", ("memory", "memorySwap"))
    d = pm.diff(pm.CONTAINER, BASE, {**BASE, "cpus": "2.0"})
    assert (d.action, d.replace_keys, d.delete_before_replace) == ("replace", ("cpus",), True)
    d = pm.diff(pm.CONTAINER, BASE, {**BASE, "uploads": [{"file": "/a", "content": "y"}]})
    assert d.action == "replace"


def test_healthcheck_changes_replace_only_through_the_resource_options():
    new = {**BASE, "healthcheck": {"tests": ["CMD", "false"], "interval": "5s"}}
    assert pm.diff(pm.CONTAINER, BASE, new).action == "update"  # the provider: state only
    d = pm.diff(pm.CONTAINER, BASE, new, replace_on_changes=["healthcheck"])
    assert d.action == "replace" and not d.delete_before_replace  # engine default: create first
    d = pm.diff(pm.CONTAINER, BASE, new, ["healthcheck"], delete_before_replace=True)
    assert d.delete_before_replace


def test_an_unstable_cpus_size_is_refused():
    with pytest.raises(ConfigError, match=r"sizes\.tiny\.cpus'.*reads it back as '0\.0'"):
        load_settings({"serverName": "example.org", "sizes": {"tiny": {"cpus": 0.01,
                                                                        "memoryMb": 128}}}, "t")


def test_every_row_cites_the_provider_source():
    for row in pm.rows():
        assert row.attr.source.startswith("K/"), (row.type, row.key)
        assert row.attr.read_back, (row.type, row.key)


def test_least_privilege_inputs_as_the_provider_reads_them_back():
    base = {**BASE, "user": "999:999", "groupAdds": ["991"], "readOnly": True,
            "securityOpts": ["no-new-privileges:true"],
            "capabilities": {"adds": ["CAP_SETUID", "CAP_CHOWN"], "drops": ["ALL"]}}
    keys = ("user", "groupAdds", "readOnly", "securityOpts", "capabilities")
    assert pm.not_normal(pm.CONTAINER, {k: base[k] for k in keys}) == []
    # add and drop are sets; an empty add reads back as none at all.
    assert pm.diff(pm.CONTAINER, base, {**base, "capabilities": {
        "adds": ["CAP_CHOWN", "CAP_SETUID"], "drops": ["ALL"]}}).same
    assert pm.diff(pm.CONTAINER, {**base, "capabilities": {"drops": ["ALL"]}},
                   {**base, "capabilities": {"adds": [], "drops": ["ALL"]}}).same
    # Unset user: Docker's "" (the image's), which the schema takes for no change.
    assert pm.diff(pm.CONTAINER, {**BASE, "user": ""}, BASE).same
    for key, value in (("user", "0"), ("groupAdds", []), ("readOnly", False),
                       ("securityOpts", []), ("capabilities", {"drops": []})):
        d = pm.diff(pm.CONTAINER, base, {**base, key: value})
        assert (d.action, d.replace_keys) == ("replace", (key,)), key


def test_a_tmpfs_change_replaces_only_through_the_resource_options():
    old = {**BASE, "tmpfs": {"/run": "size=1m"}}
    new = {**BASE, "tmpfs": {"/run": "size=2m"}}
    assert pm.diff(pm.CONTAINER, old, new).action == "update"  # the provider: state only
    assert pm.diff(pm.CONTAINER, old, {**BASE, "tmpfs": {"/run": "size=1m"}}).same
    d = pm.diff(pm.CONTAINER, old, new, ["healthcheck", "tmpfs"], delete_before_replace=True)
    assert d.action == "replace" and d.delete_before_replace


def test_a_same_count_mounts_change_replaces_only_through_the_resource_options():
    """ForceNew sits on `mounts.#` only: the provider would record a new source in
    state and keep the container's old mount, so the program asks for a replace."""
    from components.docker.container_inputs import DELETE_BEFORE_REPLACE, REPLACE_ON_CHANGES

    def mounts(*sources):
        return [{"target": f"/m{i}", "type": "volume", "source": s} for i, s in enumerate(sources)]

    old, new = {**BASE, "mounts": mounts("a")}, {**BASE, "mounts": mounts("b")}
    assert pm.diff(pm.CONTAINER, old, new).action == "update"  # the provider: state only
    d = pm.diff(pm.CONTAINER, old, new, REPLACE_ON_CHANGES, DELETE_BEFORE_REPLACE)
    assert (d.action, d.replace_keys, d.delete_before_replace) == ("replace", ("mounts",), True)
    read_only = {**BASE, "mounts": [{**mounts("a")[0], "readOnly": True}]}
    assert pm.diff(pm.CONTAINER, old, read_only).action == "update"
    # A mount more or less: the provider's own replace.
    d = pm.diff(pm.CONTAINER, old, {**BASE, "mounts": mounts("a", "c")})
    assert (d.action, d.replace_keys) == ("replace", ("mounts",))


def test_removing_user_is_no_diff_the_container_keeps_its_user():
    with_user = {**BASE, "user": "999:999"}
    assert pm.diff(pm.CONTAINER, with_user, BASE).same
    assert pm.diff(pm.CONTAINER, with_user, {**BASE, "user": ""}).same
    assert pm.diff(pm.CONTAINER, with_user, {**BASE, "user": "101:101"}).action == "replace"


def test_the_model_names_the_provider_release_requirements_pin():
    from pathlib import Path

    pins = dict(line.split("#")[0].strip().split("==") for line in
                (Path(__file__).resolve().parents[2] / "requirements.txt").read_text().splitlines()
                if "==" in line)
    assert pins["pulumi-docker"] == pm.PINNED_PULUMI_DOCKER, \
        "a new pulumi-docker pin needs its upstream read and the model's rows checked"
    # The rows were read in the pinned release's own upstream, and the installed SDK
    # is that release (5.2.0's SDK already has upload owner/group, v4.5.0 does not).
    assert f"pulumi-docker {pm.PINNED_PULUMI_DOCKER}'s upstream" in pm.ROWS_READ_IN
    import importlib.metadata
    import inspect

    import pulumi_docker

    assert importlib.metadata.version("pulumi-docker") == pm.PINNED_PULUMI_DOCKER
    assert "owner" not in inspect.signature(pulumi_docker.ContainerUploadArgs).parameters
