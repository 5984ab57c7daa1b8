"""The contract between a frame source and the service, plus the machinery live sources share.

A source is opened once and read until it says it is finished (`read()` returns None) or the
service closes it. Live sources (camera, rtsp, gstreamer) never finish: when their device goes
away they reopen it with backoff in a background thread, and `read()` keeps raising
SourceTimeout meanwhile, so the service loop stays alive (and keeps feeding the systemd
watchdog) instead of hanging inside a driver call.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Frame:
    image: np.ndarray  # BGR or gray uint8
    # 0,1,2,... per source since open, counting across reopens and loops. Live sources number
    # frames as captured, so a gap means frames dropped because the service fell behind.
    index: int
    ts: float  # time.time() at capture
    # Synthetic only: [{"payload": bytes, "corners": [[x, y]*4], "label_id": int}], the ground
    # truth that lets tests and benchmarks check every code was read.
    truths: list[dict] | None = None


class SourceError(Exception):
    """The source cannot start at all (missing file/device, bad option). One line, names it."""


class SourceTimeout(Exception):
    """No frame arrived within the timeout; the source may recover, the caller should retry."""


class Source(Protocol):
    kind: str

    def __init__(self, options: dict) -> None:
        """`options` is the [source] table minus "kind", with the module's DEFAULTS applied."""

    def open(self) -> None:
        """Start capturing; raises SourceError naming the device/file when that is impossible."""

    def read(self, timeout: float = 1.0) -> Frame | None:
        """Next frame; None when a finite source is finished; SourceTimeout when nothing came."""

    def state(self) -> dict:
        """{"state": "open"|"reopening"|"closed"|"finished", "frames", "reopens", "last_error"}."""

    def close(self) -> None:
        """Stop and release the device; never blocks for long, safe to call twice."""


def quiet_opencv() -> None:
    """OpenCV prints multi-line WARN blocks to stderr for every failed open (several per second
    while a camera is unplugged). We report failures ourselves in one line, so keep OpenCV to
    errors unless the operator asked for its logs with OPENCV_LOG_LEVEL."""
    # FFmpeg logs on its own (e.g. "Connection refused" on every reconnect attempt); OpenCV
    # reads this variable when its FFmpeg backend first starts, so set it before that.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old builds without cv2.utils.logging
        pass


def pace(due: float, timeout: float) -> None:
    """Sleep until `due` (time.monotonic()) for sources that replay at a given fps; if that is
    further away than `timeout`, sleep `timeout` and raise SourceTimeout so read() keeps its
    promise to return within the timeout (the caller simply calls again)."""
    wait = due - time.monotonic()
    if wait <= 0:
        return
    if wait > timeout:
        time.sleep(max(timeout, 0.0))
        raise SourceTimeout(f"next frame due in {wait:.2f} s, more than the {timeout:.2f} s timeout")
    time.sleep(wait)


class LiveCapture:
    """A cv2.VideoCapture read in a background thread and reopened with backoff when it fails.

    Why a thread: VideoCapture.read() on a stalled V4L2 device or a dead network stream can
    block for a long time, and it cannot be interrupted. The grab thread takes that risk; read()
    only waits on a queue with a timeout. Why reopen here rather than in the service: every live
    source needs the same policy (0.5 s doubling to 10 s, one log line per state change), and
    the service then only sees frames or SourceTimeout.

    Subclasses implement `_connect()` (return an opened VideoCapture or raise with a short
    reason) and set `kind` and `name` (what to call the device in log lines and errors).
    """

    kind = "live"
    BACKOFF_MIN = 0.5
    BACKOFF_MAX = 10.0
    QUEUE_SIZE = 2  # a live camera that outpaces the service drops its oldest frames, counted

    def __init__(self, options: dict) -> None:
        self.options = dict(options)
        self.name = "live source"
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=self.QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "closed"
        self._frames = 0  # frames captured (index of the next one)
        self._delivered = 0
        self._dropped = 0
        self._reopens = 0  # times the device was lost and we went to "reopening"
        self._attempts = 0  # failed connection attempts in the current outage
        self._last_error: str | None = None

    # -- to implement -------------------------------------------------------------------------
    def _connect(self) -> Any:
        """Return an opened cv2.VideoCapture, or raise (any exception; its text is the reason)."""
        raise NotImplementedError

    # -- the Source contract ------------------------------------------------------------------
    def open(self, first_cap: Any = None) -> None:
        """Start the grab thread. `first_cap` is an already-opened capture (the camera opens
        synchronously so a wrong device fails at start); without it the thread connects,
        and the source reports "reopening" until the first connection succeeds."""
        quiet_opencv()
        self._stop.clear()
        self._state = "open" if first_cap is not None else "reopening"
        self._thread = threading.Thread(
            target=self._run, args=(first_cap,), name=f"capture-{self.kind}", daemon=True
        )
        self._thread.start()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._state == "closed":
            return None
        try:
            frame = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise SourceTimeout(
                f"no frame from {self.name} within {timeout:.1f} s ({self._state}"
                + (f": {self._last_error})" if self._last_error else ")")
            ) from None
        self._delivered += 1
        return frame

    def state(self) -> dict:
        return {
            "state": self._state,
            "frames": self._delivered,
            "reopens": self._reopens,
            "last_error": self._last_error,
            "attempts": self._attempts,  # failed connection attempts in the current outage
            "captured": self._frames,
            "dropped": self._dropped,
        }

    def close(self) -> None:
        """Stop the thread; if it is stuck inside a driver call we do not wait for it (it is a
        daemon and releases the device when the call returns)."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2.0)
            if t.is_alive():
                log.warning("%s: capture thread still blocked in the driver; leaving it", self.name)
        self._state = "closed"

    # -- the grab thread ----------------------------------------------------------------------
    def _run(self, cap: Any) -> None:
        delay = self.BACKOFF_MIN
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._try_connect()
                    if cap is None:
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.BACKOFF_MAX)
                        continue
                    delay = self.BACKOFF_MIN
                ok, image = cap.read()
                ts = time.time()
                if self._stop.is_set():
                    break
                if not ok or image is None:
                    cap.release()
                    cap = None
                    self._lost("read failed (device gone or stream ended)")
                    continue
                self._push(Frame(image=image, index=self._frames, ts=ts))
                self._frames += 1
        finally:
            if cap is not None:
                cap.release()

    def _try_connect(self) -> Any:
        try:
            cap = self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure is "not yet", retried with backoff
            self._attempts += 1
            self._last_error = str(exc) or type(exc).__name__
            if self._attempts == 1 and self._frames == 0 and self._reopens == 0:
                # Never connected since open(): the one line that says why we are waiting.
                log.warning("%s: %s; retrying with backoff (%.1f..%.0f s)", self.name, self._last_error, self.BACKOFF_MIN, self.BACKOFF_MAX)
            return None
        if self._stop.is_set():  # close() came while we were connecting
            cap.release()
            return None
        if self._state != "open":
            log.warning("%s: open (after %d failed attempt(s))", self.name, self._attempts)
        self._attempts = 0
        self._state = "open"
        return cap

    def _lost(self, reason: str) -> None:
        self._reopens += 1
        self._last_error = reason
        self._state = "reopening"
        log.warning("%s: %s; reopening with backoff (%.1f..%.0f s)", self.name, reason, self.BACKOFF_MIN, self.BACKOFF_MAX)

    def _push(self, frame: Frame) -> None:
        while True:
            try:
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._dropped += 1
                except queue.Empty:
                    pass
