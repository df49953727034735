"""One backup on disk, without Docker: its layout, manifest, checksums, the
encrypted secrets and retention. No Pulumi import.

A backup is a directory `<dest>/<stack>/<UTC time>` holding
  database.dump   pg_dump's custom format (pg_restore reads it)
  media.tar       the media store, numeric owners kept
  secrets.enc     the generated secrets (signing key included), encrypted with a
                  key derived from the passphrase (scrypt, then Fernet: AES-128-CBC
                  with an HMAC-SHA256, from `cryptography`); never plain at rest.
                  The scheduled backup container copies in the program's sealed
                  file instead (components/render/backup_secrets.py); both open here
  manifest.json   versions, sizes and SHA-256 of the three files above
It is written under a `.partial` name and renamed when complete, so a directory
without that suffix and with a manifest is a whole backup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.fernet import Fernet, InvalidToken

from components.render import backup_secrets
from components.render.backup_conf import DATABASE, MANIFEST, MEDIA, PARTIAL, PAYLOAD, SECRETS  # noqa: F401
from components.render.backup_secrets import SCRYPT_N, SCRYPT_P, SCRYPT_R

FORMAT = 1
PASSPHRASE_VARS = ("BACKUP_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE")


class BackupError(Exception):
    """A backup that cannot be made, read or restored; the message says why."""


def passphrase(env: Mapping[str, str] = os.environ) -> str:
    """BACKUP_PASSPHRASE, else the stack's PULUMI_CONFIG_PASSPHRASE."""
    for var in PASSPHRASE_VARS:
        if env.get(var):
            return env[var]
    raise BackupError(f"no passphrase: set {' or '.join(PASSPHRASE_VARS)} (the secrets "
                      "in a backup are encrypted with it, and a restore needs it)")


def _fernet(secret: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
            p: int = SCRYPT_P) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(backup_secrets.derive_key(secret, salt, n, r, p)))


def encrypt_secrets(values: Mapping[str, str], secret: str) -> bytes:
    salt = os.urandom(16)
    token = _fernet(secret, salt).encrypt(json.dumps(dict(values), sort_keys=True).encode())
    return json.dumps({"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                       "salt": base64.b64encode(salt).decode(), "fernet": token.decode()},
                      indent=1).encode()


def decrypt_secrets(blob: bytes, secret: str) -> dict[str, str]:
    doc = json.loads(blob)
    if doc.get("cipher") == backup_secrets.CIPHER:  # a scheduled backup's
        try:
            return backup_secrets.open_sealed(doc, secret)
        except backup_secrets.WrongPassphrase:
            raise BackupError("the passphrase does not open this backup's secrets") from None
    f = _fernet(secret, base64.b64decode(doc["salt"]), doc["n"], doc["r"], doc["p"])
    try:
        return json.loads(f.decrypt(doc["fernet"].encode()))
    except InvalidToken:
        raise BackupError("the passphrase does not open this backup's secrets") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, facts: Mapping[str, Any]) -> dict[str, Any]:
    manifest = {"format": FORMAT, **facts,
                "files": {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_of(folder / n)}
                          for n in PAYLOAD}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_verified(folder: Path) -> dict[str, Any]:
    """The manifest of a whole backup whose files match their checksums."""
    if folder.name.endswith(PARTIAL):
        raise BackupError(f"{folder} is an unfinished backup")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder} has no {MANIFEST}: not a backup") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: backup format {manifest.get('format')!r}, this tool "
                          f"reads {FORMAT}")
    for name in PAYLOAD:
        want = manifest["files"][name]
        path = folder / name
        if not path.exists():
            raise BackupError(f"{folder}: {name} is missing")
        if path.stat().st_size != want["bytes"] or sha256_of(path) != want["sha256"]:
            raise BackupError(f"{folder}: {name} does not match its checksum (damaged)")
    return manifest


@dataclass(frozen=True)
class Kept:
    kept: list[Path]
    removed: list[Path]


def complete_backups(dest: Path, stack: str) -> list[Path]:
    """The stack's whole backups under `dest`, oldest first (names sort by time)."""
    return sorted(p for p in (dest / stack).glob("*")
                  if p.is_dir() and not p.name.endswith(PARTIAL) and (p / MANIFEST).exists())


def apply_retention(dest: Path, stack: str, keep: int) -> Kept:
    """Keep the newest `keep` whole backups; leave unfinished ones for inspection."""
    if keep < 1:
        raise BackupError(f"keep must be at least 1, got {keep}")
    whole = complete_backups(dest, stack)
    doomed = whole[:-keep]
    for p in doomed:
        shutil.rmtree(p)
    return Kept(whole[-keep:], doomed)
