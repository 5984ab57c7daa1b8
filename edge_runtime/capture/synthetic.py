"""A simulated conveyor: labels with QR codes moving past a camera, with their ground truth.

It lets `edge-runtime run` work out of the box with no camera (the embedded demo), and lets
tests and benchmarks check end to end that every code that passed was delivered, because
each Frame carries `truths`. Deterministic for a given seed.

Fault injection: `stall_after = N` makes the source deliver N frames and then behave like a
camera whose driver hung: every read() blocks for its whole timeout and raises SourceTimeout,
forever. It exists for the systemd watchdog tests (a stalled pipeline must stop petting the
watchdog); never set it in production.
"""

from __future__ import annotations

import time

from edge_runtime.capture.base import Frame, SourceError, SourceTimeout, pace

DEFAULTS: dict = {
    "width": 1280,
    "height": 720,
    "fps": 30.0,
    "realtime": True,  # pace frames at fps like a camera; False = as fast as the service takes them
    "seed": 0,
    "frames": 0,  # 0 = forever; N = finished after N frames
    "speed_px_s": 600.0,  # belt speed
    "labels_per_s": 2.0,
    "degradations": True,  # blur, glare, noise... as a real line has
    "stall_after": 0,  # fault injection (tests only): after N frames, block and time out forever
}
KEYS: set[str] = set(DEFAULTS)
REQUIRED: set[str] = set()
TYPES: dict[str, tuple[type, ...]] = {
    "width": (int,),
    "height": (int,),
    "fps": (int, float),
    "realtime": (bool,),
    "seed": (int,),
    "frames": (int,),
    "speed_px_s": (int, float),
    "labels_per_s": (int, float),
    "degradations": (bool,),
    "stall_after": (int,),
}
# A 100000 px wide frame is 7 GB of pixels: refused at check-config, not by numpy at open().
RANGES: dict[str, tuple[float, float]] = {
    "width": (64, 8192),
    "height": (64, 8192),
    "fps": (0.1, 1000),
    "seed": (0, 2**63 - 1),
    "frames": (0, 10**12),
    "speed_px_s": (0, 100_000),
    "labels_per_s": (0, 1000),
    "stall_after": (0, 10**12),
}


class SyntheticSource:
    kind = "synthetic"
    DEFAULTS, KEYS, REQUIRED, TYPES, RANGES = DEFAULTS, KEYS, REQUIRED, TYPES, RANGES

    def __init__(self, options: dict) -> None:
        o = {**DEFAULTS, **options}
        self.options = o
        for key in ("width", "height"):
            if int(o[key]) < 64:
                raise SourceError(f"synthetic option {key}={o[key]}: must be at least 64")
        if float(o["fps"]) <= 0:
            raise SourceError(f"synthetic option fps={o['fps']}: must be above 0")
        for key in ("frames", "stall_after"):
            if int(o[key]) < 0:
                raise SourceError(f"synthetic option {key}={o[key]}: must be 0 or more")
        self.fps = float(o["fps"])
        self.realtime = bool(o["realtime"])
        self.frames = int(o["frames"])
        self.stall_after = int(o["stall_after"])
        self._conveyor = None
        self._index = 0
        self._state = "closed"
        self._last_error: str | None = None
        self._t0 = 0.0

    def open(self) -> None:
        try:
            from edge_runtime.synth.conveyor import SyntheticConveyor
        except ImportError as exc:
            raise SourceError(f"synthetic source unavailable: {exc}") from None
        o = self.options
        try:
            self._conveyor = SyntheticConveyor(
                width=int(o["width"]),
                height=int(o["height"]),
                fps=self.fps,
                seed=int(o["seed"]),
                speed_px_s=float(o["speed_px_s"]),
                labels_per_s=float(o["labels_per_s"]),
                degradations=bool(o["degradations"]),
            )
        except ValueError as exc:  # the conveyor's own range checks (e.g. a negative speed)
            raise SourceError(f"synthetic source: {exc}") from None
        self._index = 0
        self._state = "open"
        self._t0 = time.monotonic()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._state != "open" or self._conveyor is None:
            return None
        if self.frames and self._index >= self.frames:
            self._state = "finished"
            return None
        if self.stall_after and self._index >= self.stall_after:
            self._last_error = f"stalled after {self.stall_after} frames (stall_after fault injection)"
            time.sleep(max(timeout, 0.0))
            raise SourceTimeout(f"no frame from synthetic source within {timeout:.1f} s ({self._last_error})")
        if self.realtime:
            pace(self._t0 + self._index / self.fps, timeout)
        image, truths = self._conveyor.next_frame()
        frame = Frame(image=image, index=self._index, ts=time.time(), truths=[dict(t) for t in truths])
        self._index += 1
        return frame

    def state(self) -> dict:
        return {"state": self._state, "frames": self._index, "reopens": 0, "last_error": self._last_error}

    def close(self) -> None:
        self._conveyor = None
        if self._state != "finished":
            self._state = "closed"
