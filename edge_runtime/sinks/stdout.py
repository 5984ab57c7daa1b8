"""stdout sink: one JSON line per result, for the demo, pipes and `| jq`.

json.dumps with ensure_ascii=True escapes every control character, so a label carrying
ANSI escapes or newlines can neither rewrite the terminal nor split a line.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import TextIO

DEFAULTS: dict = {}
KEYS: set[str] = set()
REQUIRED: set[str] = set()
TYPES: dict[str, tuple[type, ...]] = {}


class StdoutSink:
    kind = "stdout"

    def __init__(self, name: str, device_id: str, options: dict | None = None, *, stream: TextIO | None = None) -> None:
        self.name = name
        self.device_id = device_id
        self.options = {**DEFAULTS, **(options or {})}
        self._stream = stream
        self._lock = threading.Lock()
        self.delivered = 0
        self.errors = 0

    def start(self) -> None:
        pass

    def emit(self, result: dict) -> None:
        line = json.dumps(result, ensure_ascii=True, separators=(",", ":")) + "\n"
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except Exception:
                self.errors += 1
                raise
            self.delivered += 1

    def state(self) -> dict:
        return {"connected": True, "queued": 0, "delivered": self.delivered, "dropped": 0, "errors": self.errors}

    def close(self, timeout: float = 5.0) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
