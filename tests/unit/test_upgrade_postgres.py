"""make upgrade-postgres without Docker (ops/upgrade_postgres.py): which image a
major version means, and the command line's errors. The upgrade itself, on a real
stack from Postgres 15 to 17: tests/e2e/test_upgrade_postgres.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ops.archive import BackupError
from ops.upgrade_postgres import default_image


@pytest.mark.parametrize("current, new", [
    ("postgres:15-bookworm", "postgres:17-bookworm"),
    ("postgres:15", "postgres:17"),
    ("postgres:15.10-bookworm", "postgres:17.10-bookworm"),
    ("registry.example.org:5000/postgres:15-alpine", "registry.example.org:5000/postgres:17-alpine"),
])
def test_the_new_image_is_the_current_one_with_the_major_version_replaced(current, new):
    assert default_image(current, 15, 17) == new


@pytest.mark.parametrize("current", ["postgres:latest", "postgres:150", "postgres",
                                     "postgres@sha256:" + "a" * 64])
def test_a_tag_without_the_old_major_version_needs_an_image(current):
    with pytest.raises(BackupError, match=r"give it \(IMAGE=postgres:17-bookworm\)"):
        default_image(current, 15, 17)


def test_a_bad_stack_file_exits_2_without_a_traceback(tmp_path):
    bad = tmp_path / "Pulumi.x.yaml"
    bad.write_text("config:\n  synapse:workers:\n    rooms: -1\n")
    proc = subprocess.run([sys.executable, "-m", "ops.upgrade_postgres", "--config", str(bad),
                           "--to", "17"], capture_output=True, text=True)
    assert proc.returncode == 2, proc
    assert "synapse:" in proc.stderr and "Traceback" not in proc.stderr
