"""SQLite backend: the embedded default. WAL and synchronous=FULL: a commit the collector
acknowledges survives a power cut, not only a killed process."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from edge_runtime.fleet.db import RESULT_COLUMNS, STATUS_COLUMNS, DbError
from edge_runtime.fleet.rows import ResultRow, StatusRow, iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    device_id   TEXT    NOT NULL,
    id          INTEGER NOT NULL,
    ts          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    text        TEXT,
    bytes_b64   TEXT,
    format      TEXT,
    corners     TEXT,
    decoder     TEXT,
    stage       TEXT,
    frame       INTEGER,
    payload     TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    PRIMARY KEY (device_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_ts ON results (ts);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    state     TEXT NOT NULL,
    last_seen TEXT,
    status_at TEXT NOT NULL,
    model     TEXT,
    queued    INTEGER,
    status    TEXT NOT NULL
);
"""

INSERT = (f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(RESULT_COLUMNS))}) "
          "ON CONFLICT (device_id, id) DO NOTHING")
UPSERT = (f"INSERT INTO devices ({', '.join(STATUS_COLUMNS)}) VALUES ({', '.join('?' * len(STATUS_COLUMNS))}) "
          "ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
          "last_seen = coalesce(excluded.last_seen, devices.last_seen), status_at = excluded.status_at, "
          "model = coalesce(excluded.model, devices.model), queued = coalesce(excluded.queued, devices.queued), "
          "status = excluded.status WHERE excluded.status_at >= devices.status_at")


class SqliteDb:
    def __init__(self, path: str, url: str) -> None:
        self.url = url
        self.path = path
        try:
            self.conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise DbError(f"db {url}: cannot open: {e}", transient=False) from None

    def write(self, results: list[ResultRow], statuses: list[StatusRow]) -> int:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                before = self.conn.total_changes
                if results:
                    self.conn.executemany(INSERT, results)
                new = self.conn.total_changes - before
                if statuses:
                    self.conn.executemany(UPSERT, statuses)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise DbError(f"db {self.url}: write failed: {e}") from None
        return new

    def fleet_rows(self, since: datetime) -> tuple[list[dict], list[dict]]:
        s = iso(since)
        try:
            self.conn.row_factory = sqlite3.Row
            devices = [dict(r) for r in self.conn.execute("SELECT * FROM devices")]
            agg = [dict(r) for r in self.conn.execute(
                "SELECT device_id, count(*) AS results, max(received_at) AS last_result_at, max(id) AS last_id, "
                "sum(kind = 'read' AND ts >= ?) AS reads_1h, sum(kind = 'noread' AND ts >= ?) AS noreads_1h "
                "FROM results GROUP BY device_id", (s, s))]
        except sqlite3.Error as e:
            raise DbError(f"db {self.url}: cannot read: {e}") from None
        finally:
            self.conn.row_factory = None
        return devices, agg

    def kind_counts(self, since: dict[str, datetime]) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            for device, t in since.items():
                row = self.conn.execute("SELECT coalesce(sum(kind = 'read'), 0), coalesce(sum(kind = 'noread'), 0) "
                                        "FROM results WHERE device_id = ? AND ts >= ?", (device, iso(t))).fetchone()
                out[device] = (int(row[0]), int(row[1]))
        except sqlite3.Error as e:
            raise DbError(f"db {self.url}: cannot read: {e}") from None
        return out

    def results(self) -> list[dict]:
        return [{"device_id": d, "id": i, "payload": json.loads(p)}
                for d, i, p in self.conn.execute("SELECT device_id, id, payload FROM results ORDER BY device_id, id")]

    def close(self) -> None:
        self.conn.close()
