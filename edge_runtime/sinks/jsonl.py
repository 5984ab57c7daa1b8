"""jsonl sink: one JSON object per line in a local file, rotated by size.

For audit trails and offline analysis on the device. Rotation renames
`results.jsonl` -> `.1` -> `.2` ... keeping `keep` backups, like logrotate's
`rotate N`, so a full disk never stops the line. `fsync = true` makes every line
durable before emit returns (costs a disk flush per result; off by default because the
durable path for results is the MQTT/serial outbox).
"""

from __future__ import annotations

import json
import os
import threading

DEFAULTS: dict = {"max_mb": 64.0, "keep": 5, "fsync": False}
KEYS: set[str] = {"path", "max_mb", "keep", "fsync"}
REQUIRED: set[str] = {"path"}
TYPES: dict[str, tuple[type, ...]] = {"path": (str,), "max_mb": (int, float), "keep": (int,), "fsync": (bool,)}
# max_mb = -1 rotated at every line and keep = -3 deleted each file as it was written:
# both are refused (by the config layer for the file, by __init__ for a sink built in code).
RANGES: dict[str, tuple[float, float]] = {"max_mb": (0.001, 1_000_000), "keep": (1, 1000)}


class JsonlSink:
    kind = "jsonl"

    def __init__(self, name: str, device_id: str, options: dict) -> None:
        opts = {**DEFAULTS, **options}
        if not opts.get("path"):
            raise ValueError("jsonl sink needs a path")
        for key, (lo, hi) in RANGES.items():
            if not lo <= opts[key] <= hi:  # NaN fails the comparison too
                raise ValueError(f"jsonl sink {name!r}: {key} must be {lo:g}..{hi:g}, got {opts[key]!r}")
        self.name = name
        self.device_id = device_id
        self.path = os.path.expanduser(str(opts["path"]))
        self.max_bytes = int(float(opts["max_mb"]) * 1024 * 1024)
        self.keep = int(opts["keep"])
        self.fsync = bool(opts["fsync"])
        self._lock = threading.Lock()
        self._f = None
        self.delivered = 0
        self.rotations = 0

    def start(self) -> None:
        """Fails at start (not at the first result) when the file cannot be written."""
        try:
            try:
                self._open()
            except FileNotFoundError:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                self._open()
        except OSError as exc:
            raise OSError(f"cannot write {self.path}: {exc.strerror}") from None

    def _open(self) -> None:
        self._f = open(self.path, "ab")

    def emit(self, result: dict) -> None:
        data = (json.dumps(result, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            if self._f is None:
                self.start()
            if self.max_bytes and self._f.tell() > 0 and self._f.tell() + len(data) > self.max_bytes:
                self._rotate()
            self._f.write(data)
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
            self.delivered += 1

    def _rotate(self) -> None:
        self._f.close()
        self._f = None
        for i in range(self.keep - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        self.rotations += 1
        self._open()

    def state(self) -> dict:
        return {
            "connected": self._f is not None,
            "queued": 0,
            "delivered": self.delivered,
            "dropped": 0,
            "rotations": self.rotations,
            "path": self.path,
        }

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            if self._f is not None:
                self._f.flush()
                if self.fsync:
                    os.fsync(self._f.fileno())
                self._f.close()
                self._f = None
