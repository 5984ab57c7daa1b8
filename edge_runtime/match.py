"""Match-code validation: is the label that was read the label that should be there?

`[match] mode` picks the rule; each read result then carries `"match": true | false`
(noreads, and every result while mode = "off", carry no `match` field):

- ``exact``: the payload equals `pattern`, character for character.
- ``regex``: `pattern` is a Python regular expression searched anywhere in the payload
  (``re.search``; anchor it with ``^...$`` to match the whole payload). Compiled when the
  config is checked, so a bad pattern is a config error naming ``match.pattern``.
- ``list``: the payload is one of the lines of the file `list` (line endings and trailing
  whitespace stripped, empty lines ignored). Read at start and on every reload.
- ``increment``: the payload carries a counter that must grow by `step` from one read to
  the next (part000, part001, ...). The counter is the *last run of ASCII digits* in the
  payload. The first read (no state yet) is a match and sets the counter, unless `start`
  says which value the first read must carry. After every read the expected value is the
  read value + `step`, match or not: one skipped or repeated label is one mismatch, not a
  mismatch for every label after it. A payload without digits is a mismatch and leaves the
  expected value alone. The expected value is kept in ``state_dir/match-counter`` (written
  in place and fdatasync'd after every read), so a restart continues the sequence.

Why the limits: Python's regular expressions backtrack, and a pattern like ``(a+)+$`` takes
exponential time on some inputs. A pattern is at most MAX_PATTERN characters and a payload
longer than MAX_PAYLOAD characters is not searched (it is a mismatch): the loop cannot be
stalled by one label. (Python 3.11's atomic groups ``(?>...)`` and possessive quantifiers
``a++`` are available to write patterns that cannot backtrack.)
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from typing import Any

log = logging.getLogger(__name__)

MODES = ("off", "exact", "regex", "list", "increment")
MAX_PATTERN = 512
MAX_PAYLOAD = 4096
MAX_LIST_LINES = 1_000_000
MAX_COUNTER = 10**18
COUNTER_FILE = "match-counter"
_DIGITS = re.compile(r"[0-9]+")
_RECORD = 64


def problems(section: dict) -> list[tuple[str, str]]:
    """(key, message) for every cross-field problem of a `[match]` table whose values already
    have the right types; empty when a Matcher can be built from it."""
    mode = section.get("mode", "off")
    pattern = section.get("pattern") or ""
    out: list[tuple[str, str]] = []
    if mode in ("exact", "regex"):
        if not pattern:
            out.append(("match.pattern", f'required with mode = "{mode}"'))
        elif len(pattern) > MAX_PATTERN:
            out.append(("match.pattern", f"must be at most {MAX_PATTERN} characters ({len(pattern)} given)"))
        elif mode == "regex":
            try:
                re.compile(pattern)
            except re.error as exc:
                out.append(("match.pattern", f"not a valid regular expression: {exc}"))
    if mode == "list":
        path = section.get("list")
        if not path:
            out.append(("match.list", 'required with mode = "list": a file of accepted payloads, one a line'))
        else:
            try:
                read_list(path)
            except OSError as exc:
                out.append(("match.list", f"cannot read {path}: {exc.strerror or exc}"))
            except ValueError as exc:
                out.append(("match.list", f"{path}: {exc}"))
    return out


def read_list(path: str) -> frozenset[str]:
    """The accepted payloads of a list file (OSError when unreadable, ValueError when not text)."""
    with open(os.path.expanduser(path), "rb") as f:
        blob = f.read()
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        raise ValueError(f"line {line}: not UTF-8 text") from None
    lines = [ln.rstrip() for ln in text.splitlines()]
    if len(lines) > MAX_LIST_LINES:
        raise ValueError(f"more than {MAX_LIST_LINES} lines")
    return frozenset(ln for ln in lines if ln)


class Matcher:
    """`check(text) -> bool` for one `[match]` table. Build with `Matcher.build` (None when off)."""

    def __init__(self, mode: str, pattern: str = "", list_path: str | None = None, step: int = 1,
                 start: int | None = None, state_dir: str | None = None) -> None:
        section = {"mode": mode, "pattern": pattern, "list": list_path, "step": step, "start": start}
        if mode not in MODES or mode == "off":
            raise ValueError(f"match.mode: expected one of {', '.join(MODES[1:])}, got {mode!r}")
        bad = problems(section)
        if bad:
            raise ValueError(f"{bad[0][0]}: {bad[0][1]}")
        if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= 10**9:
            raise ValueError(f"match.step: must be an integer in 1..1000000000, got {step!r}")
        self.section = section
        self.mode = mode
        self.pattern = pattern
        self.step = int(step)
        self.start = start
        self._regex = re.compile(pattern) if mode == "regex" else None
        self._accepted = read_list(list_path) if mode == "list" else frozenset()
        self._path = os.path.join(state_dir, COUNTER_FILE) if state_dir else None
        self._write_failed = False
        self.expected: int | None = self._load() if mode == "increment" else None

    @classmethod
    def build(cls, section: dict, state_dir: str | None) -> "Matcher | None":
        """The matcher for a validated `[match]` table; None for mode = "off"."""
        if section.get("mode", "off") == "off":
            return None
        return cls(section["mode"], section.get("pattern") or "", section.get("list"),
                   section.get("step", 1), section.get("start"), state_dir)

    @classmethod
    def reloaded(cls, current: "Matcher | None", section: dict, state_dir: str | None) -> "Matcher | None":
        """After a reload: a list is read again; an unchanged increment keeps its in-memory counter."""
        if current is not None and current.section == _normal(section) and current.mode != "list":
            return current
        return cls.build(section, state_dir)

    def check(self, text: Any) -> bool:
        if not isinstance(text, str) or len(text) > MAX_PAYLOAD:
            return False
        if self.mode == "exact":
            return text == self.pattern
        if self.mode == "regex":
            return self._regex.search(text) is not None
        if self.mode == "list":
            return text in self._accepted
        return self._increment(text)

    # -- increment ---------------------------------------------------------------------------

    def _increment(self, text: str) -> bool:
        runs = _DIGITS.findall(text)
        if not runs or len(runs[-1]) > 18:
            return False
        value = int(runs[-1])
        ok = self.expected is None or value == self.expected
        self.expected = min(value + self.step, MAX_COUNTER)
        self._save()
        return ok

    def _record(self) -> bytes:
        body = f"{self.expected} {self.start if self.start is not None else '-'}"
        line = f"{body} {zlib.crc32(body.encode('ascii')):08x}"
        return line.encode("ascii").ljust(_RECORD - 1, b" ") + b"\n"

    def _load(self) -> int | None:
        """The expected value kept by the last run; `start` when there is none, or when the
        file was written under another `start` (the operator changed it: a new sequence)."""
        if self._path is None:
            return self.start
        try:
            with open(self._path, "rb") as f:
                parts = f.read(_RECORD).split()
        except FileNotFoundError:
            return self.start
        except OSError as exc:
            log.warning("match: cannot read %s (%s); counting from start", self._path, exc.strerror or exc)
            return self.start
        if len(parts) != 3 or f"{zlib.crc32(parts[0] + b' ' + parts[1]):08x}".encode() != parts[2]:
            log.warning("match: %s is damaged; counting from start", self._path)
            return self.start
        saved_start = None if parts[1] == b"-" else int(parts[1])
        if saved_start != self.start:
            return self.start
        return int(parts[0]) if parts[0] != b"None" else None

    def _save(self) -> None:
        """Overwrite the small file in place and fdatasync it; a failure is logged once and
        the counter carries on in memory (a label must not wait for a disk)."""
        if self._path is None:
            return
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, self._record(), 0)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.error("match: cannot write %s (%s); the counter is kept in memory only",
                          self._path, exc.strerror or exc, extra={"fields": {"event": "match_counter_unsaved"}})
            return
        if self._write_failed:
            self._write_failed = False
            log.info("match: %s written again", self._path)


def _normal(section: dict) -> dict:
    return {"mode": section.get("mode", "off"), "pattern": section.get("pattern") or "",
            "list": section.get("list"), "step": section.get("step", 1), "start": section.get("start")}
