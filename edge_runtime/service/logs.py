"""Logging for a service nobody watches: one JSON object per line, journald-friendly.

A JSON line survives multi-line payloads and hostile code contents (a QR code can carry
newlines or ANSI escapes that would forge log lines in plain text); `json.dumps` with
ensure_ascii escapes all of them. Extra fields passed as `extra={"fields": {...}}` end up
as top-level keys, so `jq 'select(.sink == "mqtt0")'` works.

Two guards keep one noisy peer from hiding everything else (journald drops lines past its
rate limit, 10,000 per 30 s by default, whichever unit they come from):
- a message and every field value are clipped to MAX_CHARS, with a marker giving the full
  length ("…(60187 chars)"), so a 60 KB payload is not a 60 KB line;
- repeats of one message template (same logger and level) beyond REPEAT_BURST per
  REPEAT_WINDOW_S are dropped and counted; one "N similar messages suppressed" line follows
  when the window has passed (at the next log line, or at flush_suppressed()).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, Callable, TextIO

# C0/C1 controls and DEL shown as \xNN so a log line stays one safe line on a terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "text")
_HANDLER_TAG = "_edge_runtime_handler"

MAX_CHARS = 2000
REPEAT_BURST = 5
REPEAT_WINDOW_S = 10.0


def clip(value: Any, limit: int = MAX_CHARS) -> Any:
    """A string (or anything that is not a plain number) longer than `limit` is cut, with the
    original length appended so the reader knows something was left out."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(s) <= limit:
        return value
    return f"{s[:limit]}…({len(s)} chars)"


def _message_and_fields(record: logging.LogRecord) -> tuple[str, dict]:
    fields = getattr(record, "fields", None)
    fields = {k: clip(v) for k, v in fields.items()} if isinstance(fields, dict) else {}
    return clip(record.getMessage()), fields


class JsonFormatter(logging.Formatter):
    converter = time.gmtime  # timestamps in UTC, like the results

    def format(self, record: logging.LogRecord) -> str:
        msg, fields = _message_and_fields(record)
        obj = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": msg,
        }
        for k, v in fields.items():
            obj.setdefault(k, v)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=True, default=str)


class TextFormatter(logging.Formatter):
    """For a person at a terminal; control characters escaped all the same."""

    def format(self, record: logging.LogRecord) -> str:
        msg, fields = _message_and_fields(record)
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():7s} {record.name}: {msg}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        msg = line.translate(_CONTROLS)
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        return msg


class RepeatFilter(logging.Filter):
    """Lets the first `burst` records of each (logger, level, message template) through per
    `window_s` and counts the rest. The template, not the formatted text, is the key: 10,000
    refused triggers with 10,000 different payloads are one repeated warning.

    The summary of a finished window is written (through `handler`) before the next record
    that reaches the handler, so it needs no timer thread; flush() writes pending ones now."""

    def __init__(self, burst: int = REPEAT_BURST, window_s: float = REPEAT_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self.handler: logging.Handler | None = None
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}  # key -> [window start, records seen, last record]
        self._next_sweep = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_edge_runtime_summary", False):
            return True
        now = self.clock()
        key = (record.name, record.levelno, str(record.msg))
        with self._lock:
            summaries = []
            if now >= self._next_sweep:  # not on every record: a sweep walks every key
                self._next_sweep = now + min(1.0, self.window_s)
                summaries = self._expire(now)
            w = self._windows.get(key)
            if w is not None and now - w[0] >= self.window_s:
                summaries += self._close(key)
                w = None
            if w is None:
                w = self._windows[key] = [now, 0, None]
            w[1] += 1
            w[2] = record
            passed = w[1] <= self.burst
        self._emit(summaries)
        return passed

    def flush(self) -> None:
        """Write the counts of every window now, e.g. at shutdown or from a periodic task."""
        with self._lock:
            summaries = self._expire(float("inf"))
        self._emit(summaries)

    def _expire(self, now: float) -> list[logging.LogRecord]:
        out: list[logging.LogRecord] = []
        for key, w in list(self._windows.items()):
            if now - w[0] >= self.window_s:
                out += self._close(key)
        return out

    def _close(self, key: tuple) -> list[logging.LogRecord]:
        _, seen, last = self._windows.pop(key)
        return [self._summary(last, seen - self.burst)] if seen > self.burst else []

    def _summary(self, last: logging.LogRecord, n: int) -> logging.LogRecord:
        try:
            text = last.getMessage()
        except Exception:  # noqa: BLE001 - bad %-args: the handler reports those, not the filter
            text = str(last.msg)
        s = logging.LogRecord(last.name, last.levelno, last.pathname, last.lineno,
                              "%d similar messages suppressed within %g s; the last one: %s",
                              (n, self.window_s, text), None)
        s.fields = {"suppressed": n}
        s._edge_runtime_summary = True
        return s

    def _emit(self, summaries: list[logging.LogRecord]) -> None:
        if self.handler is not None:
            for s in summaries:
                self.handler.handle(s)


def setup(level: str = "info", fmt: str = "json", stream: TextIO | None = None, *,
          repeat_burst: int = REPEAT_BURST, repeat_window_s: float = REPEAT_WINDOW_S) -> logging.Handler:
    """Route the package's logs to `stream` (stdout by default) in `fmt`.

    Replaces a handler installed by an earlier call (SIGHUP reload) instead of stacking
    another one, and leaves handlers others installed (pytest's) alone.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            flush_suppressed(h)  # counts of the old handler's windows are not lost on reload
            root.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    setattr(handler, _HANDLER_TAG, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    repeats = RepeatFilter(repeat_burst, repeat_window_s)
    repeats.handler = handler
    handler.addFilter(repeats)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return handler


def flush_suppressed(handler: logging.Handler | None = None) -> None:
    """Write pending "N similar messages suppressed" lines now (of `handler`, or of the
    handler setup() installed)."""
    handlers = [handler] if handler is not None else \
        [h for h in logging.getLogger().handlers if getattr(h, _HANDLER_TAG, False)]
    for h in handlers:
        for f in h.filters:
            if isinstance(f, RepeatFilter):
                f.flush()


def set_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
