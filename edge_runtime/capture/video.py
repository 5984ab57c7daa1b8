"""A recorded video file: replay a line recording through the full service (tests, demos,
reproducing a customer's no-read). Finite unless `loop`; `realtime` paces at the file's fps so
tracking and dedup see the same timing as on the line, otherwise frames come as fast as the
service takes them (benchmarks, batch re-reads)."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from edge_runtime.capture.base import Frame, SourceError, pace, quiet_opencv

log = logging.getLogger(__name__)

DEFAULTS: dict = {"path": "", "loop": False, "realtime": False}
KEYS: set[str] = set(DEFAULTS)
REQUIRED: set[str] = {"path"}
TYPES: dict[str, tuple[type, ...]] = {"path": (str,), "loop": (bool,), "realtime": (bool,)}

_FALLBACK_FPS = 30.0  # containers without a frame rate (some MJPEG .avi) replay at 30 fps


class VideoSource:
    kind = "video"
    DEFAULTS, KEYS, REQUIRED, TYPES = DEFAULTS, KEYS, REQUIRED, TYPES

    def __init__(self, options: dict) -> None:
        o = {**DEFAULTS, **options}
        self.path = str(o["path"])
        self.loop = bool(o["loop"])
        self.realtime = bool(o["realtime"])
        self._cap: Any = None
        self._pending: Any = None  # first frame, read at open() to prove the file decodes
        self._index = 0
        self._state = "closed"
        self._loops = 0
        self._last_error: str | None = None
        self.fps = _FALLBACK_FPS
        self._t0 = 0.0

    def _open_cap(self) -> Any:
        import cv2

        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            cap = cv2.VideoCapture(self.path)  # let OpenCV pick another backend (e.g. MJPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video {self.path}: cannot open it (not a video file, or a codec this OpenCV lacks)")
        return cap

    def open(self) -> None:
        quiet_opencv()
        if not self.path:
            raise SourceError("video source needs path = \"/path/to/recording.mp4\"")
        if not os.path.isfile(self.path):
            raise SourceError(f"video {self.path} does not exist" if not os.path.exists(self.path) else f"video {self.path} is not a file")
        if not os.access(self.path, os.R_OK):
            raise SourceError(f"video {self.path} is not readable (permissions)")
        import cv2

        self._cap = self._open_cap()
        ok, image = self._cap.read()
        if not ok or image is None:
            self._cap.release()
            self._cap = None
            raise SourceError(f"video {self.path}: no frame could be decoded (empty or corrupt file)")
        self._pending = image
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps <= 1000 else _FALLBACK_FPS
        self._state = "open"
        self._t0 = time.monotonic()

    def _next_image(self) -> Any:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        ok, image = self._cap.read()
        if ok and image is not None:
            return image
        if not self.loop:
            return None
        # Reopening is more reliable than seeking to frame 0, which some codecs ignore.
        self._cap.release()
        self._cap = self._open_cap()
        self._loops += 1
        ok, image = self._cap.read()
        return image if ok else None

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._state != "open":
            return None
        if self.realtime:
            pace(self._t0 + self._index / self.fps, timeout)
        image = self._next_image()
        if image is None:
            self._state = "finished"
            self._release()
            log.info("video %s: finished after %d frames", self.path, self._index)
            return None
        frame = Frame(image=image, index=self._index, ts=time.time())
        self._index += 1
        return frame

    def state(self) -> dict:
        return {"state": self._state, "frames": self._index, "reopens": 0, "last_error": self._last_error, "loops": self._loops, "fps": self.fps}

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._release()
        self._pending = None
        if self._state != "finished":
            self._state = "closed"
