"""Build the result dict every sink receives (edge_runtime/data/result.schema.json).

The dict is plain JSON types only, so each sink serialises it as it likes (JSON line,
MQTT payload, serial frame) without knowing about Code or Track.
"""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

from edge_runtime.code import Code
from edge_runtime.track import Track


def rfc3339(ts: float) -> str:
    """UTC with milliseconds and "Z": what plant historians parse without configuration."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _latency_ms(since: float, now: float | None) -> float:
    now = time.time() if now is None else now
    return round(max(0.0, (now - since) * 1000.0), 2)


def read_result(
    rid: int,
    device_id: str,
    code: Code,
    track: Track,
    frame_index: int,
    frame_ts: float,
    now: float | None = None,
    match: bool | None = None,
) -> dict:
    """A read. `match`: the [match] verdict (edge_runtime.match); None (mode off) leaves
    the field out."""
    raw = bytes(code.raw)
    result = {
        "id": rid,
        "device_id": device_id,
        "ts": rfc3339(frame_ts),
        "kind": "read",
        "text": code.text,
    }
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # `text` is then only a best-effort rendering; the bytes are the truth.
        result["bytes_b64"] = base64.b64encode(raw).decode("ascii")
    result.update(
        {
            "format": code.format or "QRCode",
            "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in code.corners],
            "decoder": code.decoder,
            "stage": code.stage,
            "frame": int(frame_index),
            "latency_ms": _latency_ms(frame_ts, now),
            "first_seen": rfc3339(track.first_seen),
            "last_seen": rfc3339(track.last_seen),
            "frames": track.frames,
        }
    )
    if code.quality is not None:
        result["quality"] = code.quality  # print quality (edge_runtime.quality), when measured
    if match is not None:
        result["match"] = bool(match)
    return result


# Why a noread happened, for maintenance: camera/lighting (nothing_detected), reader
# (detected_not_decoded), or print (format_unreadable, too_damaged); see noread_reason.py.
NOREAD_REASONS = ("nothing_detected", "detected_not_decoded", "format_unreadable", "too_damaged")


def noread_result(
    rid: int,
    device_id: str,
    opened: float,
    closed: float,
    frames: int,
    frame_index: int,
    now: float | None = None,
    corners: list | None = None,
    stage: str = "",
    reason: str | None = None,
) -> dict:
    """A trigger window closed with nothing read, or a detected label left the view
    unread (then with its last `corners`): the PLC must still get an answer.

    `reason` (one of NOREAD_REASONS) defaults to what the corners say: none =
    nothing_detected, some = detected_not_decoded; `noread_reason.reason_for` tells the
    print-side reasons apart."""
    if reason is None:
        reason = "detected_not_decoded" if corners else "nothing_detected"
    if reason not in NOREAD_REASONS:
        raise ValueError(f"noread reason {reason!r} is not one of {', '.join(NOREAD_REASONS)}")
    return {
        "id": rid,
        "device_id": device_id,
        "ts": rfc3339(closed),
        "kind": "noread",
        "text": None,
        "format": "QRCode",
        "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in (corners or [])],
        "decoder": "",
        "stage": stage,
        "frame": int(frame_index),
        "latency_ms": _latency_ms(closed, now),
        "first_seen": rfc3339(opened),
        "last_seen": rfc3339(closed),
        "frames": int(frames),
        "reason": reason,
    }
