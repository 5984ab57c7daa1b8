"""The highest result id already out there, found in the service's own state.

The id file is the authority for the next id, but it can go missing (an operator clearing
`state_dir/ids`, a restore from an old backup) while the outboxes still hold results the
plant will receive. Restarting ids below those would make a plant that de-duplicates by
id drop real results, and the outbox's primary key would silently swallow new ones. So at
start the service continues above the highest id it can find in its outboxes and in the
tail of its jsonl files.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3

_TAIL_BYTES = 64 * 1024


def outbox_max(path: str) -> int:
    """Highest id queued in a sqlite outbox (0 when absent or unreadable)."""
    if not os.path.isfile(path):
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT MAX(id) FROM outbox").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def jsonl_max(path: str) -> int:
    """Highest id among the last records of a jsonl ledger (0 when absent)."""
    try:
        if not os.path.isfile(path):
            return 0  # /dev/null, a FIFO, /dev/full: nothing to learn, and reading may never end
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read(_TAIL_BYTES)
    except OSError:
        return 0
    best = 0
    for line in tail.splitlines()[-200:]:
        try:
            rid = json.loads(line).get("id")
        except (ValueError, AttributeError):
            continue  # the first line of the tail is usually cut
        if isinstance(rid, int) and not isinstance(rid, bool):
            best = max(best, rid)
    return best


def highest_id(state_dir: str, sinks: list[dict]) -> tuple[int, str]:
    """(highest id found, where) over the configured sinks' outboxes and jsonl files and
    any outbox left in state_dir by a sink no longer configured."""
    best, where = 0, ""
    outboxes = {s["outbox"] for s in sinks if isinstance(s.get("outbox"), str) and s.get("outbox")}
    outboxes.update(glob.glob(os.path.join(glob.escape(state_dir), "outbox-*.sqlite")))
    for path in sorted(outboxes):
        n = outbox_max(path)
        if n > best:
            best, where = n, path
    for s in sinks:
        if s.get("kind") == "jsonl" and isinstance(s.get("path"), str):
            path = os.path.expanduser(s["path"])
            n = jsonl_max(path)
            if n > best:
                best, where = n, path
    return best, where
