"""A model bundle: one MQTT message that carries a model version, signed.

    b"ERMODEL1" | u32 big-endian header length | header (JSON, UTF-8) | the files, back to back | signature (64 bytes)

The header names the version, the channel it was published for, the model's manifest, and each
file's name, size and sha256 in blob order. The Ed25519 signature covers every byte before it, so
the channel is signed too: a bundle signed for canary that someone re-publishes on the stable
topic is refused there (promotion re-signs, see plant.py).

What a device checks, in this order, each failure one reason (`Refused`):
  size <= MAX_BYTES; the magic; the signature with the configured public key; the header;
  the channel; the version (a folder name); each file's size and sha256; the manifest's own
  files section naming the same sha256 (the device later checks the files against the manifest,
  as for any model version on disk).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge_runtime.rollout import keys

MAGIC = b"ERMODEL1"
SIG_BYTES = 64
# Manifest + files (the shipped detector is ~1.5 MB): an MQTT broker's default message size
# limits are far above this, and a board holds two copies while it installs one.
MAX_BYTES = 2 * 1024 * 1024
MAX_HEADER = 64 * 1024
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
MANIFEST = "manifest.json"


class Refused(ValueError):
    """A bundle that must not be installed; the message is the reason, one line."""


@dataclass
class Bundle:
    version: str
    channel: str
    published: str
    manifest: dict
    files: dict[str, bytes]  # name -> content, sha256 checked


def topic(prefix: str, channel: str) -> str:
    return f"{prefix}/fleet/model/{channel}"


def version_problem(version: str) -> str | None:
    return None if _VERSION.fullmatch(version) else "must be 1-64 of A-Z a-z 0-9 . _ + - (it names a folder)"


def channel_problem(channel: str) -> str | None:
    return None if CHANNEL.fullmatch(channel) else "must be 1-32 of A-Z a-z 0-9 _ - (it is an MQTT topic level)"


def read_model_dir(path: str | Path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, files) of a model version folder, after the same checks a device makes; raises
    Refused naming the file. Publishing a folder that fails them would only be refused later, on
    every device."""
    from edge_runtime.detect.versions import _check

    root = Path(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise Refused(f"{root / MANIFEST}: cannot read the model manifest ({e})") from None
    version = str(manifest.get("version") or "") if isinstance(manifest, dict) else ""
    if problem := version_problem(version):
        raise Refused(f"{root / MANIFEST}: version {version!r} {problem}")
    info = _check(version, root)
    if not info.ok:
        raise Refused(info.error or f"{root}: fails its checks")
    files = {}
    for name in manifest["files"]:
        if not _FILE.fullmatch(name) or name == MANIFEST:
            raise Refused(f"{root / MANIFEST}: file name {name!r} cannot be sent (plain names only)")
        files[name] = (root / name).read_bytes()
    return manifest, files


def pack(manifest: dict, files: dict[str, bytes], channel: str, key, published: str | None = None) -> bytes:
    """The signed message for `channel`. Raises Refused when it would exceed MAX_BYTES."""
    if problem := channel_problem(channel):
        raise Refused(f"channel {channel!r} {problem}")
    header = {
        "format": 1,
        "version": str(manifest["version"]),
        "channel": channel,
        "published": published or datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "key_id": keys.key_id(key.public_key()),
        "manifest": manifest,
        "files": [{"name": n, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()],
    }
    body = _body(header, b"".join(files.values()))
    if len(body) + SIG_BYTES > MAX_BYTES:
        raise Refused(f"model {header['version']}: the bundle would be {len(body) + SIG_BYTES} bytes, "
                      f"more than {MAX_BYTES} (send fewer formats)")
    return sign(body, key)


def _body(header: dict, blob: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(h)) + h + blob


def sign(body: bytes, key) -> bytes:
    return body + key.sign(body)


def split(message: bytes) -> tuple[dict, bytes, bytes]:
    """(header, blob, body) of a message, without any check but its framing (for re-signing)."""
    if len(message) < len(MAGIC) + 4 + SIG_BYTES or not message.startswith(MAGIC):
        raise Refused("not a model bundle (no ERMODEL1 header)")
    (n,) = struct.unpack(">I", message[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if n > MAX_HEADER or start + n > len(message) - SIG_BYTES:
        raise Refused("not a model bundle (header length out of range)")
    try:
        header = json.loads(message[start:start + n])
    except (ValueError, UnicodeDecodeError):
        raise Refused("not a model bundle (header is not JSON)") from None
    if not isinstance(header, dict):
        raise Refused("not a model bundle (header is not an object)")
    body = message[:-SIG_BYTES]
    return header, body[start + n:], body


def resign(message: bytes, channel: str, key) -> bytes:
    """The same model, signed for another channel (promotion)."""
    header, blob, _ = split(message)
    header = {**header, "channel": channel, "key_id": keys.key_id(key.public_key())}
    return sign(_body(header, blob), key)


def verify(message: bytes, public_key, channel: str) -> Bundle:
    """The bundle, after every check; raises Refused with the reason."""
    if len(message) > MAX_BYTES:
        raise Refused(f"bundle of {len(message)} bytes is larger than {MAX_BYTES}")
    header, blob, body = split(message)
    if not keys.verify(public_key, message[-SIG_BYTES:], body):
        raise Refused(f"bad signature: not signed by the configured public_key (key {keys.key_id(public_key)}, "
                      f"bundle says {str(header.get('key_id'))[:16]!r})")
    try:
        version, got_channel, manifest = str(header["version"]), str(header["channel"]), header["manifest"]
        entries = [(str(f["name"]), int(f["bytes"]), str(f["sha256"])) for f in header["files"]]
    except (KeyError, TypeError, ValueError):
        raise Refused("signed header lacks version, channel, manifest or files") from None
    if got_channel != channel:
        raise Refused(f"signed for channel {got_channel!r}, this device follows {channel!r}")
    if problem := version_problem(version):
        raise Refused(f"version {version!r} {problem}")
    if not isinstance(manifest, dict) or str(manifest.get("version")) != version:
        raise Refused(f"model {version}: its manifest names another version")
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    if sum(n for _, n, _ in entries) != len(blob):
        raise Refused(f"model {version}: the files are {len(blob)} bytes, the header says "
                      f"{sum(n for _, n, _ in entries)}")
    files, at = {}, 0
    for name, size, sha in entries:
        if not _FILE.fullmatch(name) or name == MANIFEST or name in files:
            raise Refused(f"model {version}: file name {name!r} refused")
        data = blob[at:at + size]
        at += size
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise Refused(f"model {version}: sha256 mismatch for {name} (header {sha[:12]}..., data {got[:12]}...)")
        if not isinstance(listed.get(name), dict) or listed[name].get("sha256") != got:
            raise Refused(f"model {version}: {name} is not in its manifest with this sha256")
        files[name] = data
    if set(listed) - set(files):
        raise Refused(f"model {version}: manifest lists files the bundle lacks: {', '.join(sorted(set(listed) - set(files)))}")
    return Bundle(version, channel, str(header.get("published", "")), manifest, files)
