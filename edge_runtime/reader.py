"""The reader: enhance + detect + decode, usable without the service.

`Reader().read(frame)` returns every code it can find, trying the cheap thing first
(zxing-cpp on the whole frame, ~1 ms) and spending more only when that read nothing:
other binarizers, contrast and upscaling retries, then OpenCV and ZBar, each an
independent finder search that reads codes the others miss. Retries stop at the frame
deadline so one hard frame never makes the line late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import numpy as np

from edge_runtime import decode as decoders
from edge_runtime import detect as detectors
from edge_runtime.code import Code
from edge_runtime.enhance import ops

log = logging.getLogger(__name__)

# Above this many pixels upscaling the whole frame costs more than it finds: codes in
# such frames are already many pixels per module.
_UPSCALE_MAX_PIXELS = 1_400_000
# OpenCV and ZBar slow down sharply on phone-camera frames; a copy at this size
# keeps them near 30 ms and codes in such photos are large.
_FALLBACK_MAX_SIDE = 1600


class Reader:
    """Read QR codes from frames.

    Options (keywords, all optional):
      decoders     backends to use, in order (default zxing, opencv, zbar; missing ones skipped)
      detector     auto | tflite | ncnn | none: the INT8 model that finds codes (auto: if shipped)
      deadline_ms  stop retrying after this long per frame (None: try everything)
      retries      False to do one zxing-cpp pass only
    """

    def __init__(
        self,
        decoders_: Iterable[str] = ("zxing", "opencv", "zbar"),
        *,
        detector: str = "auto",
        deadline_ms: float | None = None,
        retries: bool = True,
        **detector_options,
    ) -> None:
        loaded = {n: decoders.load(n) for n in decoders_}
        self.decoders = {n: d for n, d in loaded.items() if d is not None}
        if not self.decoders:
            raise RuntimeError("no decoder backend could be loaded (install zxing-cpp, opencv or libzbar0)")
        self.detector = detectors.load(detector, **detector_options)
        self.deadline_ms = deadline_ms
        self.retries = retries

    @property
    def available(self) -> list[str]:
        return list(self.decoders)

    def read(self, frame: np.ndarray) -> list[Code]:
        t0 = time.perf_counter()
        gray = ops.to_gray(np.asarray(frame))
        if gray.dtype != np.uint8:
            raise ValueError(f"frame must be uint8, got {gray.dtype}")
        if gray.size == 0:
            return []
        found: list[Code] = []
        primary = next(iter(self.decoders))
        _merge(found, self._run(primary, gray), "direct")
        if not found and self.retries:
            for stage, attempt in self._attempts(gray):
                if self._late(t0):
                    break
                _merge(found, attempt(), stage)
                if found:
                    break
        elapsed = (time.perf_counter() - t0) * 1000.0
        for c in found:
            c.elapsed_ms = elapsed
        return found

    def _late(self, t0: float) -> bool:
        return self.deadline_ms is not None and (time.perf_counter() - t0) * 1000.0 >= self.deadline_ms

    def _run(self, name: str, gray: np.ndarray, scale: float = 1.0, **kw) -> list[Code]:
        dec = self.decoders.get(name)
        if dec is None:
            return []
        codes = dec.decode(gray, **kw)
        if scale != 1.0:
            for c in codes:
                c.corners = [(x / scale, y / scale) for x, y in c.corners]
        return codes

    def _attempts(self, gray: np.ndarray) -> Iterable[tuple[str, Callable[[], list[Code]]]]:
        """Retries in order of how often each one rescued a frame on the bench."""
        z = "zxing"
        if z in self.decoders:
            yield "enhanced", lambda: self._run(z, gray, binarizer="GlobalHistogram")
            if gray.size <= _UPSCALE_MAX_PIXELS:
                yield "enhanced", lambda: self._run(z, ops.upscale(gray, 2.0), 2.0, fast=True)
            yield "enhanced", lambda: self._run(z, ops.clahe(gray))
            yield "enhanced", lambda: self._run(z, ops.local_normalize(gray))
            yield "enhanced", lambda: self._run(z, ops.sharpen(gray))
        small, s = _shrink(gray, _FALLBACK_MAX_SIDE)
        for name in ("opencv", "zbar"):
            if name in self.decoders:
                yield "fallback", lambda name=name: self._run(name, small, s)
        if "zbar" in self.decoders and gray.size <= _UPSCALE_MAX_PIXELS:
            yield "fallback", lambda: self._run("zbar", ops.upscale(gray, 2.0), 2.0)
        if "zbar" in self.decoders and s != 1.0:
            yield "fallback", lambda: self._run("zbar", gray)


def _shrink(gray: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    side = max(gray.shape)
    if side <= max_side:
        return gray, 1.0
    s = max_side / side
    import cv2

    return cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), s


def _merge(found: list[Code], new: list[Code], stage: str) -> None:
    """Add codes not already found: the same payload at the same place is one code."""
    for c in new:
        if any(c.raw == f.raw and _near(c, f) for f in found):
            continue
        c.stage = stage
        found.append(c)


def _near(a: Code, b: Code) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    size = max(_span(a), _span(b), 1.0)
    return abs(ax - bx) < size and abs(ay - by) < size


def _span(c: Code) -> float:
    if not c.corners:
        return 0.0
    xs = [p[0] for p in c.corners]
    return max(xs) - min(xs)
