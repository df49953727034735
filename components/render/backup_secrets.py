"""The stack's generated secrets sealed with the operator's backup passphrase,
for the scheduled backup container (backup_conf.py). No Pulumi import.

The program seals them when it renders the container's files, so the container
never holds the passphrase or a plain secret: it copies the sealed file into each
backup. An upload can only change by replacing its container, so the sealing is
deterministic (same secrets and passphrase, same bytes; a second `up` is a no-op):
the key comes from scrypt over the passphrase with a salt fixed per stack, and the
cipher is AES-256-GCM-SIV (RFC 8452), which stays safe with a nonce derived from
the plaintext (it reveals only whether two sealed plaintexts are equal). Manual
backups (ops/archive.py) use a random salt and Fernet; `open_sealed` reads both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

# scrypt's cost: 2^15 x 8 x 128 bytes = 32 MiB and ~0.1 s per derivation, the
# interactive-login figure of the scrypt paper; a backup or a render derives it once.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
CIPHER = "AES-256-GCM-SIV"


class WrongPassphrase(Exception):
    pass


def derive_key(passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
               p: int = SCRYPT_P) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def stack_salt(name_prefix: str) -> bytes:
    """Fixed per stack (its Docker name prefix), so sealing is repeatable."""
    return hashlib.sha256(b"synapse-backup-secrets\0" + name_prefix.encode()).digest()[:16]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def seal(values: Mapping[str, str], passphrase: str, salt: bytes) -> str:
    """A JSON document holding `values` encrypted; the same inputs give the same text."""
    key = derive_key(passphrase, salt)
    plain = json.dumps(dict(values), sort_keys=True).encode()
    nonce = hmac.new(key, plain, hashlib.sha256).digest()[:12]
    return json.dumps({"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                       "salt": _b64(salt), "cipher": CIPHER, "nonce": _b64(nonce),
                       "ciphertext": _b64(AESGCMSIV(key).encrypt(nonce, plain, None))},
                      indent=1, sort_keys=True) + "\n"


def open_sealed(doc: Mapping[str, Any], passphrase: str) -> dict[str, str]:
    """The values of a document `seal` wrote; WrongPassphrase if it does not open."""
    key = derive_key(passphrase, base64.b64decode(doc["salt"]), doc["n"], doc["r"], doc["p"])
    try:
        plain = AESGCMSIV(key).decrypt(base64.b64decode(doc["nonce"]),
                                       base64.b64decode(doc["ciphertext"]), None)
    except InvalidTag:
        raise WrongPassphrase() from None
    return json.loads(plain)
