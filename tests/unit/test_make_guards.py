"""The Makefile's guards: no stack but dev runs on a public default passphrase,
and deleting data needs an explicit confirmation. `make -n` prints the commands
without running them (no pulumi CLI needed)."""

import os
import subprocess

import pytest

ENV = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}


def make(*args, **env):
    return subprocess.run(["make", "--no-print-directory", *args], capture_output=True,
                          text=True, env={**ENV, **env})


@pytest.mark.parametrize("target", ["up", "preview", "down", "destroy-data"])
def test_other_stacks_refuse_without_a_passphrase(target):
    run = make(target, "STACK=prod")
    assert run.returncode != 0
    assert "refusing: stack prod needs PULUMI_CONFIG_PASSPHRASE" in run.stderr
    assert "pulumi" not in run.stdout  # nothing ran


def test_dev_keeps_its_default_and_others_use_the_given_passphrase():
    dev = make("-n", "up", "STACK=dev")
    assert dev.returncode == 0, dev.stderr
    assert 'PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-dev}"' in dev.stdout
    assert "up --refresh --stack dev" in dev.stdout
    prod = make("-n", "preview", "STACK=prod", PULUMI_CONFIG_PASSPHRASE="s3cret")
    assert prod.returncode == 0, prod.stderr
    assert "preview --refresh --diff --stack prod" in prod.stdout
    assert "PULUMI_CONFIG_PASSPHRASE=" not in prod.stdout  # the operator's, from the env


def test_down_keeps_protected_secrets_and_destroy_data_needs_confirmation():
    down = make("-n", "down", "STACK=dev")
    assert "destroy --exclude-protected --stack dev" in down.stdout
    refused = make("destroy-data", "STACK=dev")
    assert refused.returncode != 0 and "CONFIRM=dev" in refused.stderr
    ok = make("-n", "destroy-data", "STACK=dev", "CONFIRM=dev")
    assert "state unprotect --all --yes --stack dev" in ok.stdout
    assert "docker volume rm" in ok.stdout
    # ...but never the scheduled backups' volume, the way back after it.
    assert 'grep -vx "$(cat ' in ok.stdout and '-backups"' in ok.stdout


def test_upgrade_postgres_needs_a_version_and_ends_with_an_up():
    refused = make("upgrade-postgres", "STACK=dev")
    assert refused.returncode == 2 and "TO=17" in refused.stderr
    ok = make("-n", "upgrade-postgres", "STACK=dev", "TO=17", "IMAGE=postgres:17-trixie")
    assert ok.returncode == 0, ok.stderr
    assert "ops.upgrade_postgres" in ok.stdout and "--to 17 --image postgres:17-trixie" in ok.stdout
    assert "--set-config" in ok.stdout
    # make -n runs the recursive `make up`: its pulumi up comes after the tool.
    assert ok.stdout.index("ops.upgrade_postgres") < ok.stdout.index("up --refresh --stack dev")


def test_make_impact_reports_the_committed_stack_with_each_set():
    run = make("impact", "STACK=prod", "SET=workers.rooms=6 log.level=DEBUG")
    assert run.returncode == 0, run.stderr
    assert "--set workers.rooms=6 --set log.level=DEBUG" in run.stdout
    assert "+ create    synapse-prod-rooms6" in run.stdout and "synapse-prod-rooms7" not in run.stdout
