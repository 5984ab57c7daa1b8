"""Logging for a service nobody watches: one JSON object per line, journald-friendly.

A JSON line survives multi-line payloads and hostile code contents (a QR code can carry
newlines or ANSI escapes that would forge log lines in plain text); `json.dumps` with
ensure_ascii escapes all of them. Extra fields passed as `extra={"fields": {...}}` end up
as top-level keys, so `jq 'select(.sink == "mqtt0")'` works.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

# C0/C1 controls and DEL shown as \xNN so a log line stays one safe line on a terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "text")
_HANDLER_TAG = "_edge_runtime_handler"


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # timestamps in UTC, like the results

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for k, v in fields.items():
                obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal; control characters escaped all the same."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():7s} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        msg = line.translate(_CONTROLS)
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg


def setup(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """Route the package's logs to `stream` (stdout by default) in `fmt`.

    Replaces a handler installed by an earlier call (SIGHUP reload) instead of stacking
    another one, and leaves handlers others installed (pytest's) alone.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    setattr(handler, _HANDLER_TAG, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler


def set_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
