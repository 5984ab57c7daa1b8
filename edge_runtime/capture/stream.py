"""Network and pipeline sources: an RTSP (or any FFmpeg URL) stream, or a GStreamer pipeline.

Unlike the camera, an unreachable stream at start is not an error: an IP camera that boots
slower than the board (after a power cut the whole cell boots together) is a peer that is
merely down. open() returns, state() says "reopening" with the reason in last_error, read()
raises SourceTimeout, and the grab thread keeps trying with backoff 0.5 s .. 10 s.
Only what can never work raises SourceError at open: an empty URL/pipeline, or an OpenCV
build without GStreamer.
"""

from __future__ import annotations

import os
from typing import Any

from edge_runtime.capture.base import LiveCapture, SourceError

RTSP_DEFAULTS: dict = {
    "url": "",  # rtsp://user:pass@10.0.0.5:554/stream1 (any URL FFmpeg opens also works)
    "transport": "tcp",  # "tcp" (no smeared frames from lost UDP packets) or "udp"
    "timeout_s": 5.0,  # FFmpeg connect/read timeout; a dead peer is noticed after this long
}
RTSP_KEYS: set[str] = set(RTSP_DEFAULTS)
RTSP_REQUIRED: set[str] = {"url"}
RTSP_TYPES: dict[str, tuple[type, ...]] = {"url": (str,), "transport": (str,), "timeout_s": (int, float)}
RTSP_RANGES: dict[str, tuple[float, float]] = {"timeout_s": (0.1, 600)}

GST_DEFAULTS: dict = {
    # e.g. "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1920,height=1080 ! nvvidconv !
    #       video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"
    "pipeline": "",
}
GST_KEYS: set[str] = set(GST_DEFAULTS)
GST_REQUIRED: set[str] = {"pipeline"}
GST_TYPES: dict[str, tuple[type, ...]] = {"pipeline": (str,)}
GST_TEXT: dict[str, str] = {"pipeline": "lines"}  # may be written over several lines

# The registry and config layer look for DEFAULTS/KEYS/REQUIRED/TYPES on the class's module;
# this module serves two kinds, so each class also carries its own (see capture/__init__.py).
DEFAULTS, KEYS, REQUIRED, TYPES, RANGES = RTSP_DEFAULTS, RTSP_KEYS, RTSP_REQUIRED, RTSP_TYPES, RTSP_RANGES


def redact(url: str) -> str:
    """Log lines and state() must not carry the camera's password."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.split("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


class RtspSource(LiveCapture):
    kind = "rtsp"
    DEFAULTS, KEYS, REQUIRED, TYPES, RANGES = RTSP_DEFAULTS, RTSP_KEYS, RTSP_REQUIRED, RTSP_TYPES, RTSP_RANGES

    def __init__(self, options: dict) -> None:
        super().__init__({**RTSP_DEFAULTS, **options})
        self.url: str = (self.options["url"] or "").strip()
        self.name = f"stream {redact(self.url)}"
        if self.options["transport"] not in ("tcp", "udp"):
            raise SourceError(f"rtsp option transport={self.options['transport']!r}: use \"tcp\" or \"udp\"")

    def open(self) -> None:
        if not self.url:
            raise SourceError("rtsp source needs url = \"rtsp://host:554/path\"")
        # FFmpeg reads its options from this variable at open; respect one the operator set.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", f"rtsp_transport;{self.options['transport']}")
        super().open()

    def _connect(self) -> Any:
        import cv2

        ms = int(float(self.options["timeout_s"]) * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError("cannot connect (refused, unreachable, or not a stream)")
        return cap


def gstreamer_available() -> bool:
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().upper().startswith("YES")
    return False


class GStreamerSource(LiveCapture):
    kind = "gstreamer"
    DEFAULTS, KEYS, REQUIRED, TYPES, TEXT = GST_DEFAULTS, GST_KEYS, GST_REQUIRED, GST_TYPES, GST_TEXT

    def __init__(self, options: dict) -> None:
        super().__init__({**GST_DEFAULTS, **options})
        self.pipeline: str = (self.options["pipeline"] or "").strip()
        self.name = "gstreamer pipeline"

    def open(self) -> None:
        if not self.pipeline:
            raise SourceError("gstreamer source needs pipeline = \"... ! videoconvert ! appsink\"")
        if "appsink" not in self.pipeline:
            raise SourceError("gstreamer pipeline must end in appsink (e.g. '... ! videoconvert ! appsink drop=1')")
        if not gstreamer_available():
            raise SourceError(
                "this OpenCV build has no GStreamer support (cv2.getBuildInformation() says GStreamer: NO);"
                " install an OpenCV built with GStreamer (e.g. the distribution's python3-opencv) or use kind = \"rtsp\""
            )
        super().open()

    def _connect(self) -> Any:
        import cv2

        cap = cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise SourceError("gstreamer pipeline did not start (check it with gst-launch-1.0)")
        return cap
