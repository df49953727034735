"""A backup on disk without Docker (ops/archive.py): the secrets are encrypted
and open only with the passphrase, a damaged or unfinished backup is refused,
retention keeps the newest N whole backups; the tools' command lines fail
cleanly (no traceback) on a bad stack file or a missing passphrase."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops import archive
from ops.archive import BackupError
from ops.stack_data import stack_data

SECRETS = {"signingKey": "ed25519 a_bcde c2VjcmV0c2VlZA", "postgresPassword": "p" * 48}


def _backup(root: Path, stack: str, name: str, payload: bytes = b"x") -> Path:
    folder = root / stack / name
    folder.mkdir(parents=True)
    (folder / archive.DATABASE).write_bytes(b"PGDMP" + payload)
    (folder / archive.MEDIA).write_bytes(b"tar" + payload)
    (folder / archive.SECRETS).write_bytes(archive.encrypt_secrets(SECRETS, "pass phrase"))
    archive.write_manifest(folder, {"stack": stack, "schema_version": 92})
    return folder


def test_secrets_are_encrypted_and_open_only_with_the_passphrase():
    blob = archive.encrypt_secrets(SECRETS, "pass phrase")
    for value in SECRETS.values():
        assert value.encode() not in blob
    assert archive.decrypt_secrets(blob, "pass phrase") == SECRETS
    with pytest.raises(BackupError, match="passphrase does not open"):
        archive.decrypt_secrets(blob, "another")
    # A fresh salt each time: two backups of the same secrets differ.
    assert archive.encrypt_secrets(SECRETS, "pass phrase") != blob


def test_passphrase_comes_from_the_environment():
    assert archive.passphrase({"BACKUP_PASSPHRASE": "a", "PULUMI_CONFIG_PASSPHRASE": "b"}) == "a"
    assert archive.passphrase({"PULUMI_CONFIG_PASSPHRASE": "b"}) == "b"
    with pytest.raises(BackupError, match="BACKUP_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE"):
        archive.passphrase({})


def test_manifest_checksums_catch_a_damaged_file(tmp_path):
    folder = _backup(tmp_path, "dev", "20261206T000000Z")
    manifest = archive.read_verified(folder)
    assert manifest["files"][archive.DATABASE]["bytes"] == 6
    assert manifest["schema_version"] == 92
    (folder / archive.MEDIA).write_bytes(b"tay")  # same size, other bytes
    with pytest.raises(BackupError, match="media.tar does not match its checksum"):
        archive.read_verified(folder)
    (folder / archive.MEDIA).unlink()
    with pytest.raises(BackupError, match="media.tar is missing"):
        archive.read_verified(folder)


def test_unfinished_or_foreign_folders_are_not_backups(tmp_path):
    partial = tmp_path / "dev" / ("20261206T000000Z" + archive.PARTIAL)
    partial.mkdir(parents=True)
    with pytest.raises(BackupError, match="unfinished"):
        archive.read_verified(partial)
    with pytest.raises(BackupError, match="not a backup"):
        archive.read_verified(tmp_path)
    folder = _backup(tmp_path, "dev", "20261206T000001Z")
    doc = json.loads((folder / archive.MANIFEST).read_text())
    (folder / archive.MANIFEST).write_text(json.dumps({**doc, "format": 99}))
    with pytest.raises(BackupError, match="format 99"):
        archive.read_verified(folder)


def test_retention_keeps_the_newest_whole_backups_of_the_stack(tmp_path):
    names = [f"20261206T00000{i}Z" for i in range(5)]
    for n in names:
        _backup(tmp_path, "dev", n)
    _backup(tmp_path, "dev-2", names[0])  # another stack's: not counted, not touched
    partial = tmp_path / "dev" / ("20261206T000009Z" + archive.PARTIAL)
    partial.mkdir()
    kept = archive.apply_retention(tmp_path, "dev", 2)
    assert [p.name for p in kept.kept] == names[-2:]
    assert [p.name for p in kept.removed] == names[:3]
    assert sorted(p.name for p in (tmp_path / "dev").iterdir()) == sorted(
        [*names[-2:], partial.name])
    assert (tmp_path / "dev-2" / names[0]).exists()
    with pytest.raises(BackupError, match="at least 1"):
        archive.apply_retention(tmp_path, "dev", 0)


def test_stack_data_names_the_stacks_containers_volumes_and_secrets():
    d = stack_data(Path("config/Pulumi.prod.yaml"))
    assert (d.stack, d.postgres, d.main) == ("prod", f"{d.prefix}-postgres", f"{d.prefix}-main")
    assert (d.postgres_volume, d.media_volume) == (f"{d.prefix}-postgres-data", f"{d.prefix}-media")
    # Every generated secret, each read where its file is; the operator's TLS not.
    assert set(d.secrets) == {"macaroonSecretKey", "formSecret", "workerReplicationSecret",
                              "signingKey", "registrationSharedSecret", "postgresPassword"}
    assert d.secrets["postgresPassword"][0] == d.postgres
    assert d.secrets["signingKey"][:2] == (d.main, "/conf/secrets/signing.key")


@pytest.mark.parametrize("tool", ["ops.backup", "ops.restore"])
def test_the_tools_refuse_a_bad_stack_file_without_a_traceback(tool, tmp_path):
    extra = ["--from", str(tmp_path)] if tool == "ops.restore" else []
    proc = subprocess.run([sys.executable, "-m", tool, "--config", "config/Pulumi.nope.yaml",
                           *extra], capture_output=True, text=True)
    assert proc.returncode == 2, proc
    assert "config/Pulumi.nope.yaml: cannot read stack file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_backup_without_a_passphrase_is_refused_before_touching_docker(tmp_path):
    env = {"PATH": "/nonexistent"}  # no docker on PATH: a call would fail differently
    proc = subprocess.run([sys.executable, "-m", "ops.backup", "--config",
                           "config/Pulumi.dev.yaml", "--dest", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "no passphrase" in proc.stderr, proc
    assert not any(tmp_path.iterdir())
