"""A V4L2 camera (USB or CSI through a V4L2 driver), read in a background thread.

Start-up vs. run time, on purpose different:
- at open(), a device that does not exist or cannot be opened raises SourceError naming it
  (and listing the /dev/video* nodes that do exist): that is a configuration error and the
  operator should see it at once, not a service that silently waits;
- once running, a camera that stops delivering (unplugged, driver reset) is reopened with
  backoff 0.5 s .. 10 s; state() says "reopening" and read() raises SourceTimeout meanwhile.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from edge_runtime.capture.base import LiveCapture, SourceError

DEFAULTS: dict = {
    "device": 0,  # index N (= /dev/videoN) or a path such as /dev/v4l/by-id/usb-...-video-index0
    "width": 0,  # 0 = the driver's default
    "height": 0,
    "fps": 0.0,  # 0 = the driver's default
    "fourcc": "",  # "MJPG" (most USB cameras need it for 1080p30), "YUYV", or "" = driver default
    "exposure": None,  # None = auto exposure; a number = manual, in the driver's units
}
KEYS: set[str] = set(DEFAULTS)
REQUIRED: set[str] = set()
# Allowed types per key (DEFAULTS' types, widened where a key takes two shapes).
TYPES: dict[str, tuple[type, ...]] = {
    "device": (int, str),
    "width": (int,),
    "height": (int,),
    "fps": (int, float),
    "fourcc": (str,),
    "exposure": (int, float, type(None)),
}
# Inclusive (lo, hi) per numeric key, enforced by the config layer and check_options.
RANGES: dict[str, tuple[float, float]] = {
    "device": (0, 1023),  # /dev/video0 .. /dev/video1023
    "width": (0, 8192),  # 0 = the driver's default
    "height": (0, 8192),
    "fps": (0, 1000),  # 0 = the driver's default
    "exposure": (0, 1_000_000),  # driver units (V4L2: 100 us steps)
}

# V4L2 exposure modes as OpenCV's V4L2 backend passes them through (V4L2_EXPOSURE_*).
_V4L2_EXPOSURE_MANUAL = 1
_V4L2_EXPOSURE_APERTURE_PRIORITY = 3


def device_path(device: int | str) -> str:
    return f"/dev/video{device}" if isinstance(device, int) else str(device)


class CameraSource(LiveCapture):
    kind = "camera"
    DEFAULTS, KEYS, REQUIRED, TYPES, RANGES = DEFAULTS, KEYS, REQUIRED, TYPES, RANGES

    def __init__(self, options: dict) -> None:
        super().__init__({**DEFAULTS, **options})
        o = self.options
        self.device: int | str = o["device"]
        self.path = device_path(self.device)
        self.name = f"camera {self.path}"
        fourcc = o["fourcc"] or ""
        if fourcc and len(fourcc) != 4:
            raise SourceError(f"camera option fourcc={fourcc!r}: must be 4 characters such as \"MJPG\" or \"YUYV\", or \"\"")
        self.fourcc = fourcc

    def open(self) -> None:
        if not os.path.exists(self.path):
            found = sorted(glob.glob("/dev/video*"))
            hint = f"found: {', '.join(found)}" if found else "no /dev/video* device on this machine"
            raise SourceError(f"camera {self.path} does not exist ({hint})")
        try:
            cap = self._connect()
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenCV raises cv2.error for odd drivers
            raise SourceError(f"cannot open camera {self.path}: {exc}") from None
        super().open(first_cap=cap)

    def _connect(self) -> Any:
        import cv2

        if not os.path.exists(self.path):
            raise SourceError(f"{self.path} is gone")
        cap = cv2.VideoCapture(self.device if isinstance(self.device, int) else self.path, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open camera {self.path} (busy in another process, or no permission:"
                " the service user must be in group 'video')"
            )
        self._configure(cap)
        return cap

    def _configure(self, cap: Any) -> None:
        """Ask for the configured format; drivers silently pick the nearest mode they support,
        so what we asked for is a request, and the frames say what we got."""
        import cv2

        o = self.options
        if self.fourcc:  # FOURCC must come before size: MJPG unlocks larger sizes at full fps
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        if o["width"]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(o["width"]))
        if o["height"]:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(o["height"]))
        if o["fps"]:
            cap.set(cv2.CAP_PROP_FPS, float(o["fps"]))
        if o["exposure"] is None:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, _V4L2_EXPOSURE_APERTURE_PRIORITY)
        else:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, _V4L2_EXPOSURE_MANUAL)
            cap.set(cv2.CAP_PROP_EXPOSURE, float(o["exposure"]))
