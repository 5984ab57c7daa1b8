"""PostgreSQL backend (psycopg 3) for plants: several collectors write into one database.

A batch is one multi-row INSERT ... ON CONFLICT DO NOTHING (one round trip) per 1,000 rows, then
the status upserts, then COMMIT."""

from __future__ import annotations

from datetime import datetime

import psycopg
import psycopg.rows

from edge_runtime.fleet.db import RESULT_COLUMNS, STATUS_COLUMNS, DbError, redact
from edge_runtime.fleet.rows import ResultRow, StatusRow, iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    device_id   TEXT        NOT NULL,
    id          BIGINT      NOT NULL,
    ts          TIMESTAMPTZ NOT NULL,
    kind        TEXT        NOT NULL,
    text        TEXT,
    bytes_b64   TEXT,
    format      TEXT,
    corners     JSONB,
    decoder     TEXT,
    stage       TEXT,
    frame       BIGINT,
    payload     JSONB       NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (device_id, id)
);
CREATE INDEX IF NOT EXISTS results_ts ON results (ts);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    state     TEXT        NOT NULL,
    last_seen TIMESTAMPTZ,
    status_at TIMESTAMPTZ NOT NULL,
    model     TEXT,
    queued    BIGINT,
    status    JSONB       NOT NULL
);
"""
CHUNK = 1000
_ROW = "(" + ", ".join(["%s"] * len(RESULT_COLUMNS)) + ")"
UPSERT = (f"INSERT INTO devices ({', '.join(STATUS_COLUMNS)}) VALUES ({', '.join(['%s'] * len(STATUS_COLUMNS))}) "
          "ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
          "last_seen = coalesce(excluded.last_seen, devices.last_seen), status_at = excluded.status_at, "
          "model = coalesce(excluded.model, devices.model), queued = coalesce(excluded.queued, devices.queued), "
          "status = excluded.status WHERE excluded.status_at >= devices.status_at")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


class PostgresDb:
    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = redact(url)
        kw = {"password": password} if password is not None else {}
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="edge-runtime collect", **kw)
            with self.conn.transaction():
                # Two collectors starting at once: CREATE ... IF NOT EXISTS can still race.
                self.conn.execute("SELECT pg_advisory_xact_lock(2107202621)")
                self.conn.execute(SCHEMA)
        except psycopg.Error as e:
            raise DbError(f"db {self.url}: cannot connect: {_one_line(e)}", transient=isinstance(e, psycopg.OperationalError)) from None

    def write(self, results: list[ResultRow], statuses: list[StatusRow]) -> int:
        new = 0
        try:
            with self.conn.transaction():
                with self.conn.cursor() as cur:
                    for i in range(0, len(results), CHUNK):
                        chunk = results[i:i + CHUNK]
                        sql = (f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES "
                               + ", ".join([_ROW] * len(chunk)) + " ON CONFLICT (device_id, id) DO NOTHING")
                        cur.execute(sql, [v for row in chunk for v in row])
                        new += max(cur.rowcount, 0)
                    if statuses:
                        cur.executemany(UPSERT, statuses)
        except psycopg.Error as e:
            raise DbError(f"db {self.url}: write failed: {_one_line(e)}",
                          transient=isinstance(e, psycopg.OperationalError)) from None
        return new

    def fleet_rows(self, since: datetime) -> tuple[list[dict], list[dict]]:
        try:
            with self.conn.transaction(), self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
                devices = cur.execute("SELECT device_id, state, last_seen, status_at, model, queued, status::text AS status "
                                      "FROM devices").fetchall()
                agg = cur.execute(
                    "SELECT device_id, count(*) AS results, max(received_at) AS last_result_at, max(id) AS last_id, "
                    "count(*) FILTER (WHERE kind = 'read' AND ts >= %s) AS reads_1h, "
                    "count(*) FILTER (WHERE kind = 'noread' AND ts >= %s) AS noreads_1h "
                    "FROM results GROUP BY device_id", (since, since)).fetchall()
        except psycopg.Error as e:
            raise DbError(f"db {self.url}: cannot read: {_one_line(e)}") from None
        for row in [*devices, *agg]:
            for k, v in row.items():
                if isinstance(v, datetime):
                    row[k] = iso(v)
        return devices, agg

    def kind_counts(self, since: dict[str, datetime]) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                for device, t in since.items():
                    row = cur.execute("SELECT count(*) FILTER (WHERE kind = 'read'), count(*) FILTER (WHERE kind = 'noread') "
                                      "FROM results WHERE device_id = %s AND ts >= %s", (device, t)).fetchone()
                    out[device] = (int(row[0]), int(row[1]))
        except psycopg.Error as e:
            raise DbError(f"db {self.url}: cannot read: {_one_line(e)}") from None
        return out

    def results(self) -> list[dict]:
        with self.conn.transaction():
            rows = self.conn.execute("SELECT device_id, id, payload FROM results ORDER BY device_id, id").fetchall()
        return [{"device_id": d, "id": i, "payload": p} for d, i, p in rows]

    def close(self) -> None:
        self.conn.close()
