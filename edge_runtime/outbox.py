"""Durable store-and-forward queue: a result is here before any peer sees it, and leaves
only when the peer acknowledged it. sqlite in WAL mode survives SIGKILL and power cuts
(synchronous=FULL: a committed row is on disk when `put` returns).
"""

from __future__ import annotations

import os
import sqlite3
import threading

# drop_oldest keeps the newest results flowing (a PLC cares about now); drop_newest keeps
# history intact for audit. Either way every drop is counted and reported in status.
POLICIES = ("drop_oldest", "drop_newest")


class OutboxFull(RuntimeError):
    """The outbox reached its size limit and its policy refused the result."""


class Outbox:
    def __init__(self, path: str, max_mb: float = 64.0, policy: str = "drop_oldest") -> None:
        if policy not in POLICIES:
            raise ValueError(f"outbox policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.path = path
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.policy = policy
        self.dropped = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        self._bytes = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]

    def put(self, rid: int, payload: bytes) -> bool:
        """Store result `rid`. Returns False if the policy refused it (counted in `dropped`)."""
        with self._lock:
            while self.max_bytes and self._bytes + len(payload) > self.max_bytes:
                if self.policy == "drop_oldest":
                    row = self._db.execute("SELECT id, LENGTH(payload) FROM outbox ORDER BY id LIMIT 1").fetchone()
                    if row is None:
                        break
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (row[0],))
                    self._bytes -= row[1]
                    self.dropped += 1
                else:
                    self.dropped += 1
                    return False
            cur = self._db.execute("INSERT OR IGNORE INTO outbox (id, payload) VALUES (?, ?)", (rid, payload))
            if cur.rowcount:
                self._bytes += len(payload)
            return True

    def peek(self, limit: int = 100, after: int | None = None) -> list[tuple[int, bytes]]:
        """Oldest queued results first (delivery is in id order)."""
        with self._lock:
            if after is None:
                q = self._db.execute("SELECT id, payload FROM outbox ORDER BY id LIMIT ?", (limit,))
            else:
                q = self._db.execute("SELECT id, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
            return [(r[0], bytes(r[1])) for r in q.fetchall()]

    def ack(self, rid: int) -> None:
        with self._lock:
            row = self._db.execute("SELECT LENGTH(payload) FROM outbox WHERE id = ?", (rid,)).fetchone()
            if row:
                self._db.execute("DELETE FROM outbox WHERE id = ?", (rid,))
                self._bytes -= row[0]

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
