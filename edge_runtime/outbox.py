"""Durable store-and-forward queue: a result is here before any peer sees it, and leaves
only when the peer acknowledged it. sqlite in WAL mode survives SIGKILL and power cuts
(synchronous=FULL: a committed row is on disk when `put` returns).

A full or failing disk must not lose results either: rows the disk refuses are held in
memory, in id order, still visible to `peek` (delivery goes on), and written as soon as
the disk takes them again. Only a power cut during a disk-full spell can lose those, and
the `held` counter in `state` says how many are exposed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading

log = logging.getLogger(__name__)

# drop_oldest keeps the newest results flowing (a PLC cares about now); drop_newest keeps
# history intact for audit. Either way every drop is counted and reported in status.
POLICIES = ("drop_oldest", "drop_newest")

# Results held in memory while the disk refuses writes, at most this many bytes.
_HELD_MAX_BYTES = 32 * 1024 * 1024


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
        self.disk_errors = 0
        self._held: list[tuple[int, bytes]] = []  # refused by the disk, oldest first
        self._held_bytes = 0
        self._acked_unwritten: set[int] = set()  # acked, but the disk refused the delete
        self._disk_error: str | None = None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        self._bytes = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]

    @property
    def held(self) -> int:
        """Results only in memory because the disk refused them."""
        return len(self._held)

    def put(self, rid: int, payload: bytes) -> bool:
        """Store result `rid`. Returns False if the size policy refused it (counted in `dropped`)."""
        with self._lock:
            self._retry_disk()
            if self._held:  # keep id order: nothing jumps ahead of what is waiting for the disk
                return self._hold(rid, payload)
            try:
                return self._insert(rid, payload)
            except sqlite3.OperationalError as exc:
                self._disk_failed(exc)
                return self._hold(rid, payload)

    def _insert(self, rid: int, payload: bytes) -> bool:
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

    def _hold(self, rid: int, payload: bytes) -> bool:
        if self._held_bytes + len(payload) > _HELD_MAX_BYTES:
            self.dropped += 1
            return False
        self._held.append((rid, payload))
        self._held_bytes += len(payload)
        return True

    def _disk_failed(self, exc: Exception) -> None:
        self.disk_errors += 1
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if msg != self._disk_error:
            log.error("outbox %s: the disk refused a write (%s); holding results in memory until it recovers", self.path, msg)
            self._disk_error = msg

    def _retry_disk(self) -> None:
        """Write held rows and pending deletes once the disk takes them again."""
        if not self._held and not self._acked_unwritten:
            return
        try:
            for rid in sorted(self._acked_unwritten):
                self._delete(rid)
                self._acked_unwritten.discard(rid)
            while self._held:
                rid, payload = self._held[0]
                if rid not in self._acked_unwritten:
                    self._insert(rid, payload)
                self._held.pop(0)
                self._held_bytes -= len(payload)
        except sqlite3.OperationalError:
            return
        if self._disk_error is not None and not self._held:
            log.info("outbox %s: the disk takes writes again; nothing was lost", self.path)
            self._disk_error = None

    def peek(self, limit: int = 100, after: int | None = None) -> list[tuple[int, bytes]]:
        """Oldest queued results first (delivery is in id order), held ones included."""
        with self._lock:
            self._retry_disk()
            lo = -1 if after is None else after
            q = self._db.execute("SELECT id, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                 (lo, limit + len(self._acked_unwritten)))
            rows = [(r[0], bytes(r[1])) for r in q.fetchall() if r[0] not in self._acked_unwritten]
            rows += [(rid, p) for rid, p in self._held if rid > lo]
            rows.sort(key=lambda r: r[0])
            return rows[:limit]

    def ack(self, rid: int) -> None:
        with self._lock:
            for i, (hid, payload) in enumerate(self._held):
                if hid == rid:
                    self._held.pop(i)
                    self._held_bytes -= len(payload)
                    return
            try:
                self._delete(rid)
            except sqlite3.OperationalError as exc:
                # The peer has it; the row must not be sent again, and goes when the disk allows.
                self._disk_failed(exc)
                self._acked_unwritten.add(rid)

    def _delete(self, rid: int) -> None:
        row = self._db.execute("SELECT LENGTH(payload) FROM outbox WHERE id = ?", (rid,)).fetchone()
        if row:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (rid,))
            self._bytes -= row[0]

    def depth(self) -> int:
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            return n - len(self._acked_unwritten) + len(self._held)

    def close(self) -> None:
        with self._lock:
            self._retry_disk()
            if self._held:
                log.error("outbox %s: closing with %d result(s) the disk never took; they are lost", self.path, len(self._held))
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass
            finally:
                self._db.close()
