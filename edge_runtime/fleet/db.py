"""One small interface over the result database; `open_db(url)` picks the backend.

    sqlite:///var/lib/edge-runtime/results.db   (absolute path; sqlite://results.db is relative)
    postgresql://collector@db.plant:5432/edge   (postgres:// too; password from password_env
                                                 or libpq's PGPASSWORD / ~/.pgpass)

The schema (the same columns in both; times are TIMESTAMPTZ in PostgreSQL, RFC 3339 text in
SQLite, payload/corners/status are JSONB in PostgreSQL, JSON text in SQLite):

    results(device_id, id, ts, kind, text, bytes_b64, format, corners, decoder, stage, frame,
            payload, received_at)  PRIMARY KEY (device_id, id)
    devices(device_id PRIMARY KEY, state, last_seen, status_at, model, queued, status)

`write()` inserts results with conflict-ignore (a redelivered result is a no-op: at-least-once
delivery becomes exactly-once storage), upserts statuses unless the stored one is newer, and
commits; it returns only after the commit, which is what lets the collector acknowledge.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from edge_runtime.fleet.rows import ResultRow, StatusRow

RESULT_COLUMNS = ("device_id", "id", "ts", "kind", "text", "bytes_b64", "format", "corners", "decoder", "stage",
                  "frame", "payload", "received_at")
STATUS_COLUMNS = ("device_id", "state", "last_seen", "status_at", "model", "queued", "status")


class DbError(Exception):
    """The database cannot be reached or refused a write; one line, password never included.
    `transient` errors (connection lost, locked) are retried by the collector."""

    def __init__(self, msg: str, transient: bool = True) -> None:
        super().__init__(msg)
        self.transient = transient


class Database(Protocol):
    url: str  # redacted

    def write(self, results: list[ResultRow], statuses: list[StatusRow]) -> int:
        """Insert/upsert and commit; the number of results that were new."""

    def fleet_rows(self, since: datetime) -> tuple[list[dict], list[dict]]:
        """(devices rows, per-device result aggregates with reads/noreads since `since`)."""

    def kind_counts(self, since: dict[str, datetime]) -> dict[str, tuple[int, int]]:
        """device_id -> (reads, noreads) with ts >= its datetime (model promotion)."""

    def results(self) -> list[dict]:
        """Every stored result (device_id, id, payload as dict): for tests and exports."""

    def close(self) -> None: ...


def redact(url: str) -> str:
    """The url without its password, for messages and logs."""
    try:
        u = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if u.password is None:
        return url
    netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit(u._replace(netloc=netloc))


def url_problem(url: str) -> str | None:
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        return None if path else "sqlite:// needs a path (sqlite:///var/lib/edge-runtime/results.db)"
    if url.startswith(("postgresql://", "postgres://")):
        try:
            urlsplit(url).port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            return f"{redact(url)}: {e}"
        return None
    return f"{redact(url)!r}: expected sqlite:///path or postgresql://user@host:port/dbname"


def open_db(url: str, password: str | None = None) -> Database:
    """Connect, create the tables if missing. Raises DbError (one line naming the url)."""
    if problem := url_problem(url):
        raise DbError(f"db url {problem}", transient=False)
    if url.startswith("sqlite://"):
        from edge_runtime.fleet.db_sqlite import SqliteDb

        return SqliteDb(url[len("sqlite://"):], url)
    try:
        from edge_runtime.fleet.db_postgres import PostgresDb
    except ImportError:
        raise DbError("db url postgresql://...: psycopg is not installed (pip install 'edge-runtime[fleet]')",
                      transient=False) from None
    return PostgresDb(url, password)
