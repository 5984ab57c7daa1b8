"""Keep the image of each noread for the integrator, as industrial readers do: the first
thing anyone asks after a no-read is "what did the camera see?".

Bounded by count and total size, oldest removed first, so a line that starts failing
every label cannot fill the disk that holds the outboxes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


class NoreadStore:
    def __init__(self, folder: str, keep: int = 200, max_mb: float = 50.0) -> None:
        self.folder = Path(folder)
        self.keep = int(keep)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.saved = 0
        self._warned = False

    @staticmethod
    def crop(image: np.ndarray, corners: list, margin: float = 0.5) -> np.ndarray:
        """The label's region with context around it (a copy: the frame buffer is reused)."""
        return _crop(image, corners, margin).copy()

    def save(self, rid: int, crop: np.ndarray) -> Path | None:
        """Write a label's image as `noread-<id>.png`."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"noread-{rid:012d}.png"
            ok, buf = cv2.imencode(".png", crop)
            if not ok:
                return None
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, path)
            self.saved += 1
            self._prune()
            return path
        except OSError as exc:
            if not self._warned:  # a full or read-only disk: say so once, keep reading codes
                log.warning("noread images: cannot write to %s (%s)", self.folder, exc.strerror or exc)
                self._warned = True
            return None

    def _prune(self) -> None:
        files = sorted(self.folder.glob("noread-*.png"))
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        while files and (len(files) > self.keep or total > self.max_bytes):
            total -= sizes.pop(0)
            files.pop(0).unlink(missing_ok=True)


def _crop(image: np.ndarray, corners: list, margin: float) -> np.ndarray:
    h, w = image.shape[:2]
    if not corners:
        return image
    pts = np.asarray(corners, np.float32)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    xa, ya = int(max(0, x0 - mx)), int(max(0, y0 - my))
    xb, yb = int(min(w, x1 + mx + 1)), int(min(h, y1 + my + 1))
    if xb <= xa or yb <= ya:
        return image
    return image[ya:yb, xa:xb]
