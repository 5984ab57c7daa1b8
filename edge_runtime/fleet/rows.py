"""From an MQTT message to table rows: validation of a result or status, and the two string
hazards of the databases.

A result is stored when it is JSON, an object, has the schema's required fields with the types
the table needs, and its device_id is the one in the topic (a device cannot write into another
device's rows). Fields the schema does not know are kept in `payload` (a newer device may add
fields; the collector need not be upgraded first). Anything else is malformed: it can never be
stored, so it is counted, logged (rate-limited) and acknowledged, or the broker would redeliver
it forever.

NUL characters and lone UTF-16 surrogates (a QR code can carry any bytes; the device escapes
them in JSON) cannot be stored by PostgreSQL (text, jsonb) or encoded by Python's sqlite3. They
become U+FFFD in `text` and `payload`; the exact text then is in `bytes_b64` (UTF-8, surrogates
passed through), as it already is for non-UTF-8 payloads.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone
from typing import Any, NamedTuple

REQUIRED = ("id", "device_id", "ts", "kind", "text", "format", "corners", "decoder", "stage",
            "frame", "latency_ms", "first_seen", "last_seen", "frames")
_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_HAZARD = re.compile(r"\\u(0000|d[89a-f][0-9a-f]{2})", re.IGNORECASE)
_BAD_CHARS = re.compile(r"[\x00\ud800-\udfff]")
BIGINT_MAX = 2**63 - 1


class Malformed(ValueError):
    """A message that can never be stored; the text says why (for the log)."""


class ResultRow(NamedTuple):
    device_id: str
    id: int
    ts: str
    kind: str
    text: str | None
    bytes_b64: str | None
    format: str
    corners: str  # JSON
    decoder: str
    stage: str
    frame: int
    payload: str  # JSON, the whole result
    received_at: str


class StatusRow(NamedTuple):
    device_id: str
    state: str
    last_seen: str | None  # when the device said it was online; None for offline
    status_at: str  # orders statuses: the device's ts, or when we got it (the Last Will has no ts)
    model: str | None
    queued: int | None
    status: str  # JSON


def now_iso() -> str:
    return iso(datetime.now(timezone.utc))


def iso(dt: datetime) -> str:
    """The one time format of the tables (and of the results): RFC 3339, ms, Z. Text in SQLite
    compares in time order in this form."""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ts_ok(v: Any) -> bool:
    if not isinstance(v, str) or not _TS.fullmatch(v):
        return False
    try:
        datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def _clean(s: str) -> str:
    return _BAD_CHARS.sub("\ufffd", s)


def _clean_deep(v: Any) -> Any:
    if isinstance(v, str):
        return _clean(v)
    if isinstance(v, dict):
        return {_clean(k): _clean_deep(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean_deep(x) for x in v]
    return v


def _load(payload: bytes) -> tuple[dict, str]:
    try:
        raw = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        d = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise Malformed(f"not JSON ({str(e)[:80]})") from None
    if not isinstance(d, dict):
        raise Malformed(f"not a JSON object but {type(d).__name__}")
    return d, raw


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def result_row(topic_device: str, payload: bytes, received_at: str) -> ResultRow:
    d, raw = _load(payload)
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise Malformed(f"missing {', '.join(missing)}")
    checks = (
        ("id", _int(d["id"]) and 1 <= d["id"] <= BIGINT_MAX, "an integer 1..2^63-1"),
        ("device_id", isinstance(d["device_id"], str), "a string"),
        ("ts", _ts_ok(d["ts"]), "RFC 3339 UTC with ms (2026-01-31T12:00:00.000Z)"),
        ("kind", d["kind"] in ("read", "noread"), '"read" or "noread"'),
        ("text", d["text"] is None or isinstance(d["text"], str), "a string or null"),
        ("bytes_b64", isinstance(d.get("bytes_b64", ""), str), "a string"),
        ("format", isinstance(d["format"], str), "a string"),
        ("corners", isinstance(d["corners"], list), "an array"),
        ("decoder", isinstance(d["decoder"], str), "a string"),
        ("stage", isinstance(d["stage"], str), "a string"),
        ("frame", _int(d["frame"]) and 0 <= d["frame"] <= BIGINT_MAX, "an integer >= 0"),
    )
    for key, ok, want in checks:
        if not ok:
            raise Malformed(f"{key} must be {want}, got {json.dumps(d[key])[:60]}")
    if d["device_id"] != topic_device:
        raise Malformed(f"device_id {d['device_id'][:60]!r} is not the topic's {topic_device!r}")
    text, b64 = d["text"], d.get("bytes_b64")
    if _HAZARD.search(raw):
        if isinstance(text, str) and _BAD_CHARS.search(text) and b64 is None:
            b64 = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")
        d = _clean_deep(d)
        text = d["text"]
        raw = json.dumps(d, ensure_ascii=False, separators=(",", ":"))
    return ResultRow(topic_device, d["id"], d["ts"], d["kind"], text, b64, d["format"],
                     json.dumps(d["corners"], separators=(",", ":")), d["decoder"], d["stage"], d["frame"],
                     raw, received_at)


def status_row(topic_device: str, payload: bytes, received_at: str) -> StatusRow:
    d, raw = _load(payload)
    state = d.get("state")
    if state not in ("online", "offline"):
        raise Malformed(f'state must be "online" or "offline", got {json.dumps(state)[:60]}')
    if d.get("device_id", topic_device) != topic_device:
        raise Malformed(f"device_id {str(d.get('device_id'))[:60]!r} is not the topic's {topic_device!r}")
    at = d["ts"] if _ts_ok(d.get("ts")) else received_at
    model = d.get("model")
    model = _clean(model) if isinstance(model, str) else (None if model is None else _clean(json.dumps(model)))
    queued = None
    sinks = d.get("sinks")
    if isinstance(sinks, dict):
        depths = [s.get("queued") for s in sinks.values() if isinstance(s, dict)]
        depths = [q for q in depths if _int(q) and 0 <= q <= BIGINT_MAX]
        queued = sum(depths) if depths else None
    if _HAZARD.search(raw):
        raw = json.dumps(_clean_deep(d), ensure_ascii=False, separators=(",", ":"))
    return StatusRow(topic_device, state, at if state == "online" else None, at, model, queued, raw)
