"""`edge-runtime fleet`: one line per device from the collector's database.

state      online/offline from the retained status and the Last Will (the broker publishes
           "offline" when a device's connection dies); "stale" when online but not heard of
           for --stale-s (the broker itself went away, so no Last Will could be sent)
last seen  the later of its last online status and its last result's arrival
results    stored results; reads/noreads over the last hour (by the device's ts) and the read
           rate reads / (reads + noreads)
model      the detector model version in its status; channel: the rollout channel it follows
           (from the latest online status; the Last Will carries none); outbox: results queued
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from edge_runtime.fleet.db import Database


def fleet(db: Database, now: datetime | None = None, stale_s: float = 120.0) -> list[dict[str, Any]]:
    now = now or datetime.now(timezone.utc)
    devices, agg = db.fleet_rows(now - timedelta(hours=1))
    by_id: dict[str, dict[str, Any]] = {}
    for d in devices:
        by_id[d["device_id"]] = {"device_id": d["device_id"], "state": d["state"], "last_seen": d["last_seen"],
                                 "model": d["model"], "channel": _channel(d.get("status")), "outbox": d["queued"]}
    for a in agg:
        row = by_id.setdefault(a["device_id"], {"device_id": a["device_id"], "state": "unknown", "last_seen": None,
                                                "model": None, "channel": None, "outbox": None})
        seen = [t for t in (row["last_seen"], a["last_result_at"]) if t]
        row["last_seen"] = max(seen) if seen else None
        reads, noreads = int(a["reads_1h"] or 0), int(a["noreads_1h"] or 0)
        row.update(results=int(a["results"]), last_id=int(a["last_id"]), reads_1h=reads, noreads_1h=noreads,
                   read_rate=round(reads / (reads + noreads), 4) if reads + noreads else None)
    out = []
    for device_id in sorted(by_id):
        row = by_id[device_id]
        row.setdefault("results", 0)
        row.setdefault("last_id", None)
        row.setdefault("reads_1h", 0)
        row.setdefault("noreads_1h", 0)
        row.setdefault("read_rate", None)
        if row["state"] == "online" and row["last_seen"]:
            age = (now - datetime.strptime(row["last_seen"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc))
            if age.total_seconds() > stale_s:
                row["state"] = "stale"
        out.append(row)
    return out


COLUMNS = (("DEVICE", "device_id"), ("STATE", "state"), ("LAST SEEN", "last_seen"), ("RESULTS", "results"),
           ("READS/1H", "reads_1h"), ("NOREADS/1H", "noreads_1h"), ("READ RATE", "read_rate"),
           ("MODEL", "model"), ("CHANNEL", "channel"), ("OUTBOX", "outbox"))


def _channel(status: Any) -> str | None:
    """The model channel the device follows (its status's model_rollout), None when it follows none."""
    try:
        d = json.loads(status) if isinstance(status, str) else status
    except ValueError:
        return None
    ro = d.get("model_rollout") if isinstance(d, dict) else None
    return ro.get("channel") if isinstance(ro, dict) and isinstance(ro.get("channel"), str) else None


def _cell(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key == "read_rate":
        return f"{100 * v:.1f}%"
    return "".join(c if c.isprintable() else "?" for c in str(v))[:60]


def render(rows: list[dict[str, Any]]) -> str:
    table = [[h for h, _ in COLUMNS]] + [[_cell(k, r.get(k)) for _, k in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    online = sum(r["state"] == "online" for r in rows)
    lines.append(f"{len(rows)} devices, {online} online")
    return "\n".join(lines) + "\n"


def render_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
