"""A folder of still images, in natural name order (img2 before img10): the way users replay
photos taken by a handheld or a test set, through the same service path as a camera.

Images are loaded by edge_runtime.imageio (the loader `edge-runtime decode` uses): Pillow
rather than cv2.imread because phones and PDAs store rotated pictures with an EXIF Orientation
tag, which cv2 honours only for some formats; a code the operator sees upright must reach the
reader upright. A bad file never stops the run: it is logged once (one line naming it) and
skipped. A file larger than `max_pixels`, or whose decoded size (pixels x channels x bytes per
sample, as its header declares) is above `max_image_mb`, is refused from its header before any
pixel is decoded, so one huge or hostile image cannot exhaust RAM on a 1 GB board.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path


from edge_runtime import imageio
from edge_runtime.imageio import natural_key
from edge_runtime.capture.base import Frame, SourceError, pace

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

DEFAULTS: dict = {
    "path": "",
    "loop": False,
    "fps": 0.0,  # 0 = as fast as the service takes them
    "pattern": "*",  # glob within the folder (not recursive), e.g. "line3_*"
    "max_pixels": 40_000_000,
    "max_image_mb": imageio.DEFAULT_MAX_IMAGE_MB,
}
KEYS: set[str] = set(DEFAULTS)
REQUIRED: set[str] = {"path"}
TYPES: dict[str, tuple[type, ...]] = {
    "path": (str,),
    "loop": (bool,),
    "fps": (int, float),
    "pattern": (str,),
    "max_pixels": (int,),
    "max_image_mb": (int, float),
}
RANGES: dict[str, tuple[float, float]] = {
    "fps": (0, 1000),  # 0 = as fast as the service takes them
    "max_pixels": (1, 500_000_000),  # 40 MP is a 1 GB board's comfortable limit
    "max_image_mb": (0.1, 16384),  # decoded size of one image; the board has 1-4 GB
}


def list_images(folder: Path, pattern: str = "*") -> list[Path]:
    files = [p for p in folder.glob(pattern) if p.suffix.lower() in EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


class FolderSource:
    kind = "folder"
    DEFAULTS, KEYS, REQUIRED, TYPES, RANGES = DEFAULTS, KEYS, REQUIRED, TYPES, RANGES

    def __init__(self, options: dict) -> None:
        o = {**DEFAULTS, **options}
        self._raw_path = str(o["path"])
        self.folder = Path(self._raw_path).expanduser()
        self.loop = bool(o["loop"])
        self.fps = float(o["fps"])
        self.pattern = str(o["pattern"]) or "*"
        self.max_pixels = int(o["max_pixels"])
        self.max_image_mb = float(o["max_image_mb"])
        self.files: list[Path] = []
        self._pos = 0  # next file in self.files
        self._index = 0
        self._state = "closed"
        self._skipped: set[Path] = set()  # logged once each, even when looping
        self._pass_frames = 0  # frames delivered in the current pass over the folder
        self._last_error: str | None = None
        self._t0 = 0.0

    def open(self) -> None:
        if not self._raw_path.strip():
            raise SourceError("folder source needs path = \"/path/to/images\"")
        if not self.folder.exists():
            raise SourceError(f"folder {self.folder} does not exist")
        if not self.folder.is_dir():
            raise SourceError(f"folder {self.folder} is not a directory")
        if not os.access(self.folder, os.R_OK | os.X_OK):
            raise SourceError(f"folder {self.folder} is not readable (permissions)")
        self.files = list_images(self.folder, self.pattern)
        if not self.files:
            exts = ", ".join(e.lstrip(".") for e in EXTENSIONS)
            matching = f" matching {self.pattern!r}" if self.pattern != "*" else ""
            raise SourceError(f"folder {self.folder} has no images{matching} ({exts})")
        self._state = "open"
        self._t0 = time.monotonic()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._state != "open":
            return None
        if self.fps > 0:
            pace(self._t0 + self._index / self.fps, timeout)
        while True:
            if self._pos >= len(self.files):
                if not self.loop or self._pass_frames == 0:
                    # A looping folder whose every file went bad would otherwise spin forever.
                    if self.loop:
                        self._last_error = f"folder {self.folder}: no readable image left"
                        log.error("%s; stopping", self._last_error)
                    self._state = "finished"
                    return None
                self._pos = 0
                self._pass_frames = 0
            path = self.files[self._pos]
            self._pos += 1
            try:
                image = imageio.load(path, self.max_pixels, colour=True, limit_name="max_pixels",
                                     max_image_mb=self.max_image_mb, mb_limit_name="max_image_mb")
            except imageio.ImageError as exc:
                self._last_error = f"{path}: {exc}"
                if path not in self._skipped:
                    self._skipped.add(path)
                    log.warning("skipping image %s: %s", path, exc)
                continue
            frame = Frame(image=image, index=self._index, ts=time.time())
            self._index += 1
            self._pass_frames += 1
            return frame

    def state(self) -> dict:
        return {
            "state": self._state,
            "frames": self._index,
            "reopens": 0,
            "last_error": self._last_error,
            "images": len(self.files),
            "skipped": len(self._skipped),
        }

    def close(self) -> None:
        if self._state != "finished":
            self._state = "closed"
