"""synapse:backup without Docker: the schedule and its errors, the passphrase it
needs, the sealed secrets (repeatable, opened only by the passphrase), the
container's script and what Prometheus scrapes. The container's behaviour on a
real stack: tests/e2e/test_backup.py."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml

from components.render import backup_conf
from components.render import backup_secrets
from components.render.containers import build_deployment
from components.plan.errors import ConfigError
from components.render.prometheus_conf import BACKUP_JOB
from components.plan.secret_keys import PLACEHOLDERS
from components.plan.settings import load_settings
from components.plan.stack_config import read_stack_file
from ops import archive
from ops.archive import BackupError

DEV = Path("config/Pulumi.dev.yaml")
PASSPHRASE = "a backup passphrase"
SECRETS = {"macaroonSecretKey": "m" * 48, "formSecret": "f" * 48,
           "workerReplicationSecret": "w" * 48, "signingKey": "ed25519 a_abc " + "A" * 43,
           "registrationSharedSecret": "r" * 48, "postgresPassword": "p" * 48,
           "backupPassphrase": PASSPHRASE, "tlsCertificate": None, "tlsKey": None}


def _backup(value):
    return load_settings({"serverName": "example.org", "backup": value}, "t").backup


@pytest.mark.parametrize("schedule, period, offset", [
    ("daily 03:30", 86400, 3 * 3600 + 30 * 60),
    ("daily 00:00", 86400, 0),
    ("every 6h", 6 * 3600, 0),
    ("every 15m", 900, 0),
    ("every 10s", 10, 0),
    ("every 2d", 2 * 86400, 0),
])
def test_schedules(schedule, period, offset):
    b = _backup({"enabled": True, "schedule": schedule})
    assert (b.period_s, b.offset_s, b.schedule) == (period, offset, schedule)


def test_defaults_are_off_daily_and_seven_kept():
    b = _backup({})
    assert (b.enabled, b.schedule, b.period_s, b.offset_s, b.keep) == (
        False, "daily 03:00", 86400, 3 * 3600, 7)


@pytest.mark.parametrize("value, path, message", [
    ({"schedule": "daily 24:00"}, ("backup", "schedule"), "'daily HH:MM'"),
    ({"schedule": "0 3 * * *"}, ("backup", "schedule"), "every 6h"),
    ({"schedule": "every 5s"}, ("backup", "schedule"), "at most every 10 s"),
    ({"schedule": 6}, ("backup", "schedule"), "a string"),
    ({"keep": 0}, ("backup", "keep"), ""),
    ({"enabled": "yes"}, ("backup", "enabled"), "true or false"),
    ({"hostPath": "/srv"}, ("backup", "hostPath"), ""),
])
def test_bad_backup_settings_name_the_key(value, path, message):
    with pytest.raises(ConfigError) as e:
        _backup(value)
    assert e.value.path == path and message in str(e.value)


def test_enabled_needs_the_passphrase_and_a_long_one():
    with pytest.raises(ConfigError, match="backupPassphrase.*required when backup.enabled"):
        read_stack_file(DEV, {"backup.enabled": True})
    with pytest.raises(ConfigError, match="backupPassphrase.*at least 16"):
        read_stack_file(DEV, {"backup.enabled": True, "backupPassphrase": "short"})
    read_stack_file(DEV, {"backup.enabled": True, "backupPassphrase": PASSPHRASE})


def test_sealing_is_repeatable_and_opens_only_with_the_passphrase():
    settings = load_settings({"serverName": "example.org"}, "t")
    sealed = backup_conf.render_sealed_secrets(settings, SECRETS)
    # Same secrets, same bytes: the upload does not change, the container stays.
    assert backup_conf.render_sealed_secrets(settings, SECRETS) == sealed
    changed = backup_conf.render_sealed_secrets(settings, {**SECRETS, "formSecret": "g" * 48})
    assert changed != sealed
    opened = archive.decrypt_secrets(sealed.encode(), PASSPHRASE)
    assert opened == {k: v for k, v in SECRETS.items()
                      if k not in ("backupPassphrase", "tlsCertificate", "tlsKey")}
    for value in opened.values():
        assert value not in sealed and value.split()[-1] not in sealed
    with pytest.raises(BackupError, match="passphrase does not open"):
        archive.decrypt_secrets(sealed.encode(), PASSPHRASE + "!")
    # Another stack (name prefix), another salt: other bytes for the same secrets.
    other = load_settings({"serverName": "example.org", "namePrefix": "other"}, "t")
    assert backup_conf.render_sealed_secrets(other, SECRETS) != sealed
    # The render command shows a placeholder: it has no secrets to seal.
    assert backup_conf.render_sealed_secrets(settings, PLACEHOLDERS).strip() == \
        PLACEHOLDERS["backupPassphrase"]


def test_a_sealed_document_that_was_tampered_with_does_not_open():
    doc = yaml.safe_load(backup_secrets.seal({"a": "b"}, PASSPHRASE, b"s" * 16))
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[0] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(backup_secrets.WrongPassphrase):
        backup_secrets.open_sealed(doc, PASSPHRASE)


def _deployment(**backup):
    config = read_stack_file(DEV, {"backup": {"enabled": True, **backup},
                                   "backupPassphrase": PASSPHRASE})
    return config.plan.settings, build_deployment(config.plan)


def test_the_container_runs_its_script_with_the_schedule_in_its_environment():
    settings, d = _deployment(schedule="daily 02:15", keep=3)
    c = d.container("backup")
    assert c.image == settings.images.postgres  # pg_dump of the server's major version
    assert (c.entrypoint, c.command) == (("/bin/bash",), (backup_conf.RUN_SCRIPT,))
    assert {k: c.env[k] for k in ("STACK", "PERIOD", "OFFSET", "KEEP", "RETRY")} == {
        "STACK": "dev", "PERIOD": "86400", "OFFSET": str(2 * 3600 + 15 * 60), "KEEP": "3",
        "RETRY": "600"}
    assert c.env["SYNAPSE_VERSION"] == settings.images.synapse.rpartition(":v")[2]
    assert c.depends_on == ("main",)
    script = c.rendered_files()[backup_conf.RUN_SCRIPT]
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)  # parses
    perl = c.rendered_files()[backup_conf.METRICS_SCRIPT]
    subprocess.run(["perl", "-c"], input=perl.encode(), check=True, capture_output=True)
    assert c.healthcheck.test == ("CMD-SHELL", "test ! -e /backups/dev/.failed")
    # Retry sooner than the schedule, but never more often than it.
    _, fast = _deployment(schedule="every 30s")
    assert fast.container("backup").env["RETRY"] == "30"


def test_prometheus_scrapes_the_backup_container_only_when_enabled():
    def targets(d):  # the backup job's file_sd targets, as live-config stages them
        return yaml.safe_load(d.container("live-config").rendered_files()[
            "/stage/prometheus/backup.yml"])

    _, on = _deployment()
    assert targets(on) == [{"targets": [f"synapse-dev-backup:{backup_conf.METRICS_PORT}"]}]
    off = build_deployment(read_stack_file(DEV).plan)
    assert targets(off) == []
    assert "backup" not in {c.key for c in off.containers}
    assert "backups" not in {v.key for v in off.volumes}


def test_the_script_names_every_metric_it_writes():
    _, d = _deployment()
    script = d.container("backup").rendered_files()[backup_conf.RUN_SCRIPT]
    for name in backup_conf.METRICS:
        assert f"# TYPE {name} gauge" in script and f'echo "{name} $' in script
