"""What the web view shows, kept by a read-only observer of the service loop.

The loop calls `frame()` for every frame and `results()` for every batch, so both return at
once: with nobody watching, `frame()` is one clock read and a comparison. Only while a viewer
has asked in the last WANT_S seconds, and at most SNAP_FPS times a second, does it take a
snapshot: a downscaled copy of the frame (<= MAX_WIDTH px wide) and small crops of the codes
read in it. JPEG encoding and the aiming aids are done later, in the web server's thread,
only when asked, and cached per snapshot (aids at most once a second).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.web import aids as aids_mod

SNAP_FPS = 5.0
WANT_S = 2.0  # a viewer that stopped asking stops the snapshots this long after
MAX_WIDTH = 960
KEEP_RESULTS = 50
HOUR_MIN = 60
NOREAD_SHOW_S = 1.5  # how long a noread's last quad stays drawn (red) after its result
AIDS_EVERY_S = 1.0
MAX_CROPS = 4
JPEG_QUALITY = 75
_NOREAD_FILE = re.compile(r"noread-(\d{1,12})\.png")


@dataclass
class Snapshot:
    index: int
    ts: float
    width: int
    height: int
    small: np.ndarray
    codes: list[dict]
    crops: list[tuple[list, np.ndarray, int]]
    jpeg: bytes | None = None
    extra: dict = field(default_factory=dict)


def _corners(c: Any) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in (c or [])]


def _crop(image: np.ndarray, corners: list, margin: float = 0.15) -> np.ndarray | None:
    """A copy of the code's bounding box with a small margin (the frame buffer is reused)."""
    if not corners:
        return None
    h, w = image.shape[:2]
    pts = np.asarray(corners, np.float32).reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    xa, ya = int(max(0, x0 - mx)), int(max(0, y0 - my))
    xb, yb = int(min(w, x1 + mx + 1)), int(min(h, y1 + my + 1))
    if xb - xa < 8 or yb - ya < 8 or (xb - xa) * (yb - ya) > 800 * 800:
        return None
    return image[ya:yb, xa:xb].copy()


class WebState:
    """The observer (Service.observers) and the store the web server reads from."""

    def __init__(self, *, direction: str | None = None, blur_angle: float | None = None,
                 noread_dir: str | None = None) -> None:
        self.direction = direction if direction not in (None, "any") else None
        self.blur_angle = blur_angle
        self.noread_dir = noread_dir
        self._lock = threading.Lock()
        self._wanted_until = 0.0  # monotonic
        self._last_snap = 0.0
        self._snaps: deque[Snapshot] = deque(maxlen=3)  # /frame.jpg?frame=N matches /api/frame's N
        self._results: deque[dict] = deque(maxlen=KEEP_RESULTS)
        self._recent_noreads: deque[tuple[float, list]] = deque(maxlen=16)
        # minute (unix time // 60) -> [reads, noreads, grade score sum, graded reads]
        self._minutes: dict[int, list[float]] = {}
        self._aids: tuple[float, dict] | None = None
        self.snapshots = 0  # taken since start (tests and the CPU figures use it)
        self.cpu_s = 0.0  # CPU the snapshots took on the loop thread: the view's cost there

    # -- the observer side (the loop thread) ------------------------------------------------

    def frame(self, frame: Any, codes: list, unread: list) -> None:
        now = time.monotonic()
        if now >= self._wanted_until or now - self._last_snap < 1.0 / SNAP_FPS:
            return
        self._last_snap = now
        t0 = time.thread_time()
        image = frame.image
        h, w = image.shape[:2]
        if w > MAX_WIDTH:
            small = cv2.resize(image, (MAX_WIDTH, max(1, round(h * MAX_WIDTH / w))), interpolation=cv2.INTER_LINEAR)
        else:
            small = image.copy()
        shown = [{"kind": "read", "text": c.text, "corners": _corners(c.corners)} for c in codes]
        shown += [{"kind": "detected", "text": "", "corners": _corners(c.corners)} for c in unread]
        crops = []
        for c in codes[:MAX_CROPS]:
            crop = _crop(image, c.corners)
            if crop is not None:
                crops.append((_corners(c.corners), crop, len(bytes(c.raw or b""))))
        snap = Snapshot(int(frame.index), float(frame.ts), w, h, small, shown, crops)
        with self._lock:
            self._snaps.append(snap)
            self.snapshots += 1
        self.cpu_s += time.thread_time() - t0

    def results(self, results: list[dict]) -> None:
        now = time.time()
        with self._lock:
            for r in results:
                kind = r.get("kind")
                q = r.get("quality") or {}
                self._results.append({
                    "id": r.get("id"), "ts": r.get("ts"), "kind": kind, "text": r.get("text"),
                    "format": r.get("format"), "decoder": r.get("decoder"), "stage": r.get("stage"),
                    "reason": r.get("reason"), "latency_ms": r.get("latency_ms"),
                    "grade": q.get("grade") if isinstance(q, dict) else None,
                })
                m = self._minutes.setdefault(int(now // 60), [0, 0, 0.0, 0])
                if kind == "read":
                    m[0] += 1
                    score = q.get("score") if isinstance(q, dict) else None
                    if isinstance(score, (int, float)):
                        m[2] += float(score)
                        m[3] += 1
                else:
                    m[1] += 1
                    if r.get("corners"):
                        self._recent_noreads.append((time.monotonic(), r["corners"]))
            floor = int(now // 60) - HOUR_MIN
            for k in [k for k in self._minutes if k <= floor]:
                del self._minutes[k]

    # -- the server side (the web thread) ----------------------------------------------------

    def want(self) -> None:
        """A viewer asked for the live image: keep snapshots coming for WANT_S."""
        self._wanted_until = time.monotonic() + WANT_S

    def _snapshot(self, index: int | None = None) -> Snapshot | None:
        with self._lock:
            if not self._snaps:
                return None
            if index is not None:
                for s in self._snaps:
                    if s.index == index:
                        return s
            return self._snaps[-1]

    def frame_json(self) -> dict:
        self.want()
        snap = self._snapshot()
        if snap is None:
            return {"frame": None, "width": 0, "height": 0, "codes": [], "direction": self.direction}
        codes = list(snap.codes)
        now = time.monotonic()
        with self._lock:
            recent = [c for t, c in self._recent_noreads if now - t <= NOREAD_SHOW_S]
        codes += [{"kind": "noread", "text": "", "corners": c} for c in recent]
        return {"frame": snap.index, "ts": snap.ts, "width": snap.width, "height": snap.height,
                "codes": codes, "direction": self.direction, "aids": self._aids_for(snap)}

    def jpeg(self, index: int | None = None) -> tuple[int, bytes] | None:
        self.want()
        snap = self._snapshot(index)
        if snap is None:
            return None
        if snap.jpeg is None:
            ok, buf = cv2.imencode(".jpg", snap.small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            snap.jpeg = buf.tobytes() if ok else b""
        return snap.index, snap.jpeg

    def _aids_for(self, snap: Snapshot) -> dict:
        now = time.monotonic()
        if self._aids is not None and now - self._aids[0] < AIDS_EVERY_S:
            return self._aids[1]
        value = aids_mod.aids(snap.small, snap.crops, self.blur_angle)
        value["frame"] = snap.index
        self._aids = (now, value)
        return value

    def results_after(self, after: int = 0) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._results if isinstance(r.get("id"), int) and r["id"] > after]

    def series(self) -> list[dict]:
        """Per minute over the last hour: reads, noreads, read rate and mean quality score."""
        with self._lock:
            items = sorted(self._minutes.items())
        out = []
        for minute, (reads, noreads, gsum, gn) in items:
            total = reads + noreads
            out.append({"t": minute * 60, "reads": int(reads), "noreads": int(noreads),
                        "rate": round(reads / total, 4) if total else None,
                        "grade": round(gsum / gn, 2) if gn else None})
        return out

    def read_rate(self, minutes: int = 10) -> float | None:
        floor = time.time() // 60 - minutes
        with self._lock:
            rows = [v for k, v in self._minutes.items() if k > floor]
        reads, total = sum(r[0] for r in rows), sum(r[0] + r[1] for r in rows)
        return round(reads / total, 4) if total else None

    def noread_ids(self, limit: int = 12) -> list[int]:
        """The newest noread images in noread_dir (ids), newest first."""
        if not self.noread_dir:
            return []
        try:
            names = os.listdir(self.noread_dir)
        except OSError:
            return []
        ids = sorted((int(m.group(1)) for m in map(_NOREAD_FILE.fullmatch, names) if m), reverse=True)
        return ids[:limit]

    def noread_png(self, rid: int, max_bytes: int = 8 << 20) -> bytes | None:
        if not self.noread_dir or rid < 0:
            return None
        path = Path(self.noread_dir) / f"noread-{rid:012d}.png"
        try:
            if path.stat().st_size > max_bytes:
                return None
            return path.read_bytes()
        except OSError:
            return None
