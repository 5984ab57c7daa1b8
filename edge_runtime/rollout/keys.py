"""Ed25519 keys for signed model bundles.

The private key stays with whoever publishes models (a PEM file, PKCS#8, unencrypted: it is a
file on the build machine, protected by its permissions). A device's config holds only the
public key, as 44 characters of base64 (its 32 raw bytes): short enough to paste into a TOML
file or a provisioning script, and nothing to keep secret on a board in a plant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyProblem(ValueError):
    """A key that cannot be used; the message is one line naming the file or the key."""


def generate(path: str | Path) -> str:
    """Write a new private key to `path` (mode 0600, never over an existing file); return the
    public key for the devices' configs."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyProblem(f"{path}: already exists (a signing key is never overwritten)") from None
    except OSError as e:
        raise KeyProblem(f"{path}: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return public_text(key.public_key())


def load_private(path: str | Path) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyProblem(f"{path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyProblem(f"{path}: not an unencrypted PEM private key ({str(e).splitlines()[0]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProblem(f"{path}: not an Ed25519 key (edge-runtime models keygen makes one)")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def public_problem(text: str) -> str | None:
    """Why `text` is not a public key as the config holds it; None when it is."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "must be base64 (the line 'edge-runtime models keygen' prints)"
    if len(raw) != 32:
        return f"must be an Ed25519 public key: 32 bytes in base64, got {len(raw)} bytes"
    return None


def load_public(text: str) -> Ed25519PublicKey:
    if problem := public_problem(text):
        raise KeyProblem(f"model.public_key {problem}")
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip()))


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key, shown in refusals so a wrong key is easy to spot."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
